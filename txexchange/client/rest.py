"""REST over treq with request-weight budgeting, rate-limit handling and retries.

Sits beside the transport: the client asks for a
:class:`~txexchange.adapters.rest.RestRequest` (built by an adapter) and gets
a Deferred of the decoded JSON answer.  Requests are queued and sent only
while the exchange's weight budget for the current window allows (many
symbols starting at once must not trip a 429); a 429/418 pauses the whole
queue for ``Retry-After``; 5xx answers and timeouts are retried with backoff;
other errors fail with the adapter's typed error.  The HTTP client is
injectable (a ``treq.client.HTTPClient``); TLS is always verified, against a
given trust root if one is passed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters.rest import RestRequest
from txexchange.codec import DecodeError, loads
from txexchange.errors import (
    AuthenticationError,
    ClientClosed,
    ExchangeError,
    ExchangeNotAvailable,
    MalformedMessage,
    NetworkError,
    RateLimitExceeded,
    RequestTimeout,
    TLSVerificationError,
)

__all__ = ["RestClient", "RestStats"]

log = Logger()


class RestStats:
    """Counters read by the service's metrics."""

    __slots__ = ("errors", "rate_limited", "requests", "retries", "weight_sent")

    def __init__(self) -> None:
        self.requests = 0
        self.weight_sent = 0
        self.rate_limited = 0
        self.retries = 0
        self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _Pending:
    __slots__ = ("attempts", "deferred", "request")

    def __init__(self, request: RestRequest, deferred: Deferred[Any]) -> None:
        self.request = request
        self.deferred = deferred
        self.attempts = 0


class RestClient:
    """Sends an exchange's REST requests within its weight budget.

    :param base_url: the exchange's REST base (``urls["rest"]``).
    :param parse_error: ``(status, headers, body) -> ExchangeError`` from the adapter.
    :param used_weight: ``headers -> int | None``: the server's count of used weight.
    :param weight_limit: budget per ``weight_window`` seconds (Binance: 6000 a minute).
    :param safety: fraction of the budget this client allows itself.
    :param sign: ``(request, base_url) -> (url, headers, body)`` for requests
        marked ``signed`` (the exchange's signer, holding the secret); called
        again for every attempt, so each carries a fresh timestamp.  A signed
        request without a signer fails with :class:`AuthenticationError`.
    :param tap: called with ``(request, status, body, received_at)`` for every
        answer of an unsigned request (signed ones never), before it is
        handled; the service's recorder (``--record``) uses it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        reactor: Any,
        clock: Any = None,
        http_client: Any = None,
        trust_root: Any = None,
        parse_error: Callable[[int, Any, bytes], ExchangeError],
        used_weight: Callable[[Any], int | None] = lambda headers: None,
        weight_limit: int = 6000,
        weight_window: float = 60.0,
        safety: float = 0.9,
        timeout: float = 10.0,
        max_in_flight: int = 8,
        max_attempts: int = 5,
        retry_delay: float = 0.5,
        headers: dict[str, str] | None = None,
        tap: Callable[[RestRequest, int, bytes, float], None] | None = None,
        sign: Callable[[RestRequest, str], tuple[str, dict[str, str], bytes | None]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._parse_error = parse_error
        self._used_weight = used_weight
        self._budget = int(weight_limit * safety)
        self._window = weight_window
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._tap = tap
        self._sign = sign
        self._headers = {k.encode(): [v.encode()] for k, v in (headers or {}).items()}
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._window_id: int | None = None
        self._window_used = 0
        self._paused_until = 0.0
        self._pump_call: Any = None
        self._retry_calls: set[Any] = set()
        self._closed = False
        self._pool: Any = None
        self.stats = RestStats()
        #: clock time at which the answer being (or last) delivered arrived: what an
        #: answer that carries no time of its own is stamped with (one clock reading,
        #: the one the tap sees, so a replay stamps it identically)
        self.answered_at = 0.0
        self._http = http_client if http_client is not None else self._make_client(trust_root)

    def _make_client(self, trust_root: Any) -> Any:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

        self._pool = HTTPConnectionPool(self._reactor, persistent=True)
        self._pool.maxPersistentPerHost = self._max_in_flight
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
        agent = Agent(self._reactor, contextFactory=policy, pool=self._pool)
        return HTTPClient(agent)

    # -- public ---------------------------------------------------------------

    def set_signer(
        self, sign: Callable[[RestRequest, str], tuple[str, dict[str, str], bytes | None]]
    ) -> None:
        """Install the signer of ``signed`` requests (see the ``sign`` parameter)."""
        self._sign = sign

    @property
    def used_weight(self) -> int:
        """Weight used in the current window, as far as this client knows."""
        self._roll_window()
        return self._window_used

    def request(self, request: RestRequest) -> Deferred[Any]:
        """Queue ``request``; fires with the decoded JSON answer or a typed error."""
        if self._closed:
            from twisted.internet.defer import fail

            return fail(ClientClosed("the REST client was closed"))
        d: Deferred[Any] = Deferred()
        self._queue.append(_Pending(request, d))
        self._schedule(0)
        return d

    def close(self) -> Deferred[None]:
        """Fail queued requests, cancel timers and close pooled HTTP connections."""
        self._closed = True
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        for call in list(self._retry_calls):
            if call.active():
                call.cancel()
        self._retry_calls.clear()
        queue, self._queue = self._queue, deque()
        for p in queue:
            p.deferred.errback(ClientClosed("the REST client was closed"))
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        from twisted.internet.defer import succeed

        return succeed(None)

    # -- budget -----------------------------------------------------------------

    def _roll_window(self) -> None:
        window_id = math.floor(self._clock.seconds() / self._window)
        if window_id != self._window_id:
            self._window_id = window_id
            self._window_used = 0

    def _schedule(self, delay: float) -> None:
        if self._closed:
            return
        if self._pump_call is not None and self._pump_call.active():
            if self._pump_call.getTime() <= self._clock.seconds() + delay:
                return
            self._pump_call.cancel()
        self._pump_call = self._clock.callLater(delay, self._pump)

    def _pump(self) -> None:
        self._pump_call = None
        while self._queue and self._in_flight < self._max_in_flight and not self._closed:
            now = self._clock.seconds()
            if now < self._paused_until:
                self._schedule(self._paused_until - now)
                return
            self._roll_window()
            pending = self._queue[0]
            weight = pending.request.weight
            if self._window_used + weight > self._budget and self._window_used > 0:
                next_window = (math.floor(now / self._window) + 1) * self._window
                log.debug(
                    "REST weight budget used ({used}/{budget}); waiting {s:.1f}s",
                    used=self._window_used,
                    budget=self._budget,
                    s=next_window - now,
                )
                self._schedule(next_window - now + 0.001)
                return
            self._queue.popleft()
            self._window_used += weight
            self._send(pending)

    # -- sending ------------------------------------------------------------------

    def _send(self, pending: _Pending) -> None:
        req = pending.request
        pending.attempts += 1
        self._in_flight += 1
        self.stats.requests += 1
        self.stats.weight_sent += req.weight
        headers = self._headers
        body: bytes | None = None
        if req.signed:
            try:
                if self._sign is None:
                    raise AuthenticationError(f"{req.path}: a signed request needs API credentials")
                url, extra, body = self._sign(req, self.base_url)
            except ExchangeError as e:
                self._in_flight -= 1
                self.stats.errors += 1
                pending.deferred.errback(e)
                self._schedule(0)
                return
            headers = {**headers, **{k.encode(): [v.encode()] for k, v in extra.items()}}
        else:
            url = req.url(self.base_url)
        d = self._http.request(
            req.method,
            url,
            headers=headers or None,
            data=body,
            timeout=self._timeout,
            reactor=self._reactor,
        )
        d.addCallback(self._read, pending)
        d.addCallbacks(
            self._answered, self._failed, callbackArgs=(pending,), errbackArgs=(pending,)
        )
        d.addBoth(self._finished)

    def _read(self, response: Any, pending: _Pending) -> Deferred[Any]:
        from treq import content

        return content(response).addCallback(lambda body: (response, body))

    def _finished(self, _: Any) -> None:
        self._in_flight -= 1
        self._schedule(0)

    def _answered(self, result: tuple[Any, bytes], pending: _Pending) -> None:
        response, body = result
        now = self._clock.seconds()
        if self._tap is not None and not pending.request.signed:
            self._tap(pending.request, response.code, body, now)
        headers = response.headers
        used = self._used_weight(headers)
        if used is not None:
            self._roll_window()
            self._window_used = max(self._window_used, used)
        status = response.code
        if 200 <= status < 300:
            try:
                value = loads(body) if body else None
            except DecodeError as e:
                self.stats.errors += 1
                pending.deferred.errback(MalformedMessage(f"{pending.request.path}: bad JSON: {e}"))
                return
            self.answered_at = now
            pending.deferred.callback(value)
            return
        error = self._parse_error(status, headers, body)
        if isinstance(error, RateLimitExceeded) and status in (429, 418):
            self.stats.rate_limited += 1
            wait = error.retry_after if error.retry_after is not None else 60.0
            self._paused_until = max(self._paused_until, self._clock.seconds() + wait)
            log.warn(
                "{path}: HTTP {status}, pausing REST requests for {wait:g}s",
                path=pending.request.path,
                status=status,
                wait=wait,
            )
            self._retry(pending, error, 0.0)
            return
        if isinstance(error, ExchangeNotAvailable) and pending.request.idempotent:
            self._retry(pending, error, self._backoff(pending))
            return
        self.stats.errors += 1
        pending.deferred.errback(error)

    def _failed(self, failure: Failure, pending: _Pending) -> None:
        tls = _tls_failure(failure)
        if tls is not None:
            # a certificate that does not verify will not verify on retry either
            self.stats.errors += 1
            log.error("{path}: {tls}", path=pending.request.path, tls=tls)
            pending.deferred.errback(
                TLSVerificationError(f"{self.base_url}{pending.request.path}: {tls}")
            )
            return
        if failure.check(TimeoutError, CancelledError):
            error: ExchangeError = RequestTimeout(
                f"{pending.request.path}: no answer within {self._timeout:g}s"
            )
        else:
            error = NetworkError(f"{pending.request.path}: {failure.getErrorMessage()}")
        if not pending.request.idempotent:
            # it may have been executed: the caller decides (e.g. looks the order up)
            self.stats.errors += 1
            pending.deferred.errback(error)
            return
        self._retry(pending, error, self._backoff(pending))

    def _backoff(self, pending: _Pending) -> float:
        return self._retry_delay * (2 ** (pending.attempts - 1))

    def _retry(self, pending: _Pending, error: ExchangeError, delay: float) -> None:
        if self._closed:
            pending.deferred.errback(ClientClosed("the REST client was closed"))
            return
        if pending.attempts >= self._max_attempts:
            self.stats.errors += 1
            log.warn(
                "{path}: giving up after {n} attempts: {error}",
                path=pending.request.path,
                n=pending.attempts,
                error=error,
            )
            pending.deferred.errback(error)
            return
        self.stats.retries += 1
        if delay <= 0:
            self._queue.appendleft(pending)
            return

        def again() -> None:
            self._retry_calls.discard(call)
            self._queue.appendleft(pending)
            self._schedule(0)

        call = self._clock.callLater(delay, again)
        self._retry_calls.add(call)


def _tls_failure(failure: Failure) -> str | None:
    """What failed if ``failure`` (or a reason wrapped in it by the Agent) is a TLS
    verification failure, else ``None``."""
    from txexchange.transport.websocket import describe_tls_failure

    found = describe_tls_failure(failure)
    if found is not None:
        return found
    for inner in getattr(failure.value, "reasons", None) or ():
        if isinstance(inner, Failure):
            found = describe_tls_failure(inner)
            if found is not None:
                return found
    return None
