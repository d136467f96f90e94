"""OKX's private WebSocket: login, the ``account`` and ``orders`` channels, and trading ``op``s.

Sits in the client layer: a :class:`~txexchange.transport.Connection` to
``urls["private"]`` carrying the one topic of
:class:`~txexchange.adapters.okx_account.OkxPrivateRules`, whose
subscription is a freshly signed ``login`` followed, once OKX accepted it, by
the channel subscriptions.  The transport does it again after every
reconnect, so the stream re-authenticates by itself; ``on_subscribed`` tells
the owner each time (events sent while the socket was down are lost).
Pushes and other data frames go to ``on_push`` unchanged, in order; answers
to :meth:`OkxPrivateStream.request` (``order``, ``cancel-order``,
``batch-cancel-orders``) are matched by their ``id``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters.okx_account import PRIVATE_TOPIC, OkxPrivateRules
from txexchange.adapters.okx_signing import OkxSigner
from txexchange.codec import dumps
from txexchange.errors import (
    AuthenticationError,
    ClientClosed,
    ExchangeError,
    ExchangeNotAvailable,
    RequestTimeout,
    SubscriptionError,
)
from txexchange.transport import (
    Connection,
    ControlFailed,
    Disconnected,
    StatusEvent,
    TransportOptions,
)

__all__ = ["OkxPrivateStream"]

log = Logger()

_PENDING = object()


class OkxPrivateStream:
    """The private WebSocket of one OKX API key, logged in and subscribed across reconnects.

    :param signer: the key, secret and passphrase (never shown).
    :param url: ``urls["private"]``.
    :param on_push: called with every data frame that is not an answer to
        :meth:`request` (channel pushes, notices), decoded, in order.
    :param on_subscribed: called with the number of completed (login +
        subscribe) rounds after each: 1 for the first, more after reconnects.
    :param on_refused: called with the typed error when OKX refuses a login
        after a reconnect (e.g. to measure the clock offset again); an
        :class:`~txexchange.errors.AuthenticationError` is not retried,
        anything else is, after :attr:`retry_delay` seconds.
    """

    #: seconds before a refused (non-authentication) re-login is tried again
    retry_delay: float = 5.0

    def __init__(
        self,
        *,
        signer: OkxSigner,
        url: str,
        reactor: Any,
        clock: Any = None,
        transport: TransportOptions | None = None,
        on_push: Callable[[Any], None],
        on_subscribed: Callable[[int], None] | None = None,
        on_refused: Callable[[ExchangeError], None] | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self.clock = clock if clock is not None else reactor
        self.url = url
        self.rules = OkxPrivateRules(signer, self.clock.seconds)
        self.rules.on_login = self._send_channels
        self.rules.on_subscribed = self._acknowledged
        self._signer = signer
        self._on_push = on_push
        self._on_subscribed = on_subscribed
        self._on_refused = on_refused
        self._request_timeout = request_timeout
        self._requests: dict[str, tuple[Deferred[Any], Any]] = {}
        self._request_seq = 0
        if transport is not None and transport.frame_tap is not None:
            transport = transport.replace(frame_tap=None)  # signed traffic is never recorded
        self.connection = Connection(
            url,
            self.rules,
            on_message=self._message,
            on_status=self._status,
            reactor=reactor,
            clock=self.clock,
            options=transport,
        )
        self._outcome: Any = _PENDING
        self._waiters: list[Deferred[None]] = []
        self._started = False
        self._subscribed = False
        self._closing = False
        self._retry_call: Any = None
        #: logged in and subscribed on the current socket
        self._live = False

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("subscribed" if self._subscribed else "idle")
        return f"<OkxPrivateStream {self.url} {self._signer!r} {state}>"

    @property
    def time_offset_ms(self) -> float:
        return self.rules.time_offset_ms

    @time_offset_ms.setter
    def time_offset_ms(self, value: float) -> None:
        self.rules.time_offset_ms = value

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Connect, log in and subscribe; fires once OKX acknowledged the channels.

        Fails with the typed error of a refused login (e.g.
        :class:`~txexchange.errors.AuthenticationError`, never showing the
        secret), after which the connection is closed and not retried; the
        same outcome is given to later calls.
        """
        if self._outcome is not _PENDING:
            if self._outcome is None:
                return fail(ClientClosed("the OKX private stream was closed")) if \
                    self._closing else succeed(None)  # fmt: skip
            return fail(self._outcome)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._closing:
            self._done(Failure(ClientClosed("the OKX private stream was closed")))
        elif not self._started:
            self._started = True
            self.connection.start()
            first = self.connection.subscribe([PRIVATE_TOPIC])
            first.addCallbacks(self._first_ack, self._first_refusal)
        return d

    def _done(self, outcome: Failure | None) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if outcome is None:
                w.callback(None)
            else:
                w.errback(outcome)

    def _first_ack(self, _: Any) -> None:
        self._subscribed = True
        log.info("OKX private stream logged in and subscribed ({key})", key=repr(self._signer))
        self._done(None)

    def _first_refusal(self, failure: Failure) -> None:
        err = failure.value
        if isinstance(err, SubscriptionError) and self.rules.last_error is not None:
            err = self.rules.last_error
        log.error("OKX private stream not started: {error}", error=str(err))
        outcome = Failure(err)
        if self._closing:
            self._done(outcome)
        else:
            self.close().addBoth(lambda _: self._done(outcome))

    def close(self) -> Deferred[None]:
        """Stop reconnecting and close the socket (code 1000); fires when it is gone."""
        self._closing = True
        self._subscribed = False
        self._fail_requests(ClientClosed("the OKX private stream was closed"))
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        return self.connection.close()

    # -- login and subscription ----------------------------------------------------

    def _send_channels(self, request_id: str) -> None:
        try:
            self.connection.send(self.rules.channels_message(request_id))
        except ExchangeError as e:  # the socket is going; the reconnect logs in again
            log.warn("OKX private stream: subscribe not sent: {e}", e=str(e))

    def _acknowledged(self) -> None:
        self._live = True
        if self._on_subscribed is None:
            return
        try:
            self._on_subscribed(self.rules.subscriptions_acknowledged)
        except Exception:  # noqa: BLE001 - a listener bug must not break the stream
            log.failure("OKX private stream: on_subscribed raised")

    def _status(self, event: StatusEvent) -> None:
        if isinstance(event, Disconnected):
            self._live = False
        if isinstance(event, Disconnected) and self._requests:
            self._fail_requests(ExchangeNotAvailable(
                "OKX private WebSocket lost before the answer (outcome unknown)"))  # fmt: skip
        if isinstance(event, ControlFailed) and self._subscribed and not self._closing:
            err = self.rules.last_error or SubscriptionError(event.error)
            if self._on_refused is not None:
                try:
                    self._on_refused(err)
                except Exception:  # noqa: BLE001
                    log.failure("OKX private stream: on_refused raised")
            if isinstance(err, AuthenticationError):
                log.error("OKX refused the private login again ({error}); not retrying",
                          error=str(err))  # fmt: skip
                return
            if self._retry_call is None or not self._retry_call.active():
                log.warn("OKX refused the private login ({error}); retrying in {delay}s",
                         error=str(err), delay=self.retry_delay)  # fmt: skip
                self._retry_call = self.clock.callLater(self.retry_delay, self._resubscribe)

    def _resubscribe(self) -> None:
        self._retry_call = None
        if not self._closing:
            self.connection.subscribe([PRIVATE_TOPIC]).addErrback(lambda f: None)

    # -- requests -----------------------------------------------------------------

    def request(self, op: str, args: list[dict[str, Any]]) -> Deferred[dict[str, Any]]:
        """Send ``{"id", "op", "args"}``; fires with OKX's whole answer (``code``, ``data``).

        Fails with :class:`~txexchange.errors.RequestTimeout` after
        ``request_timeout`` seconds, or :class:`~txexchange.errors.ExchangeNotAvailable`
        when the socket is not logged in or is lost before the answer (the
        outcome is then unknown; nothing is re-sent).
        """
        if self._closing:
            return fail(ClientClosed("the OKX private stream was closed"))
        if not self.connection.is_open or not self._live:
            return fail(ExchangeNotAvailable(f"OKX private WebSocket not logged in ({op})"))
        self._request_seq += 1
        rid = f"tx{self._request_seq}"
        frame = dumps({"id": rid, "op": op, "args": args})

        def cancelled(_: Deferred[Any]) -> None:
            entry = self._requests.pop(rid, None)
            if entry is not None and entry[1].active():
                entry[1].cancel()

        d: Deferred[Any] = Deferred(cancelled)
        timer = self.clock.callLater(self._request_timeout, self._timed_out, rid, op)
        self._requests[rid] = (d, timer)
        try:
            self.connection.send(frame)
        except ExchangeError as e:
            self._requests.pop(rid, None)
            timer.cancel()
            return fail(ExchangeNotAvailable(f"OKX private WebSocket: {e}"))
        return d

    def _timed_out(self, rid: str, op: str) -> None:
        entry = self._requests.pop(rid, None)
        if entry is not None:
            entry[0].errback(RequestTimeout(
                f"OKX WebSocket: no answer to {op} within {self._request_timeout:g}s "
                "(outcome unknown)"))  # fmt: skip

    def _fail_requests(self, error: ExchangeError) -> None:
        pending, self._requests = self._requests, {}
        for d, timer in pending.values():
            if timer.active():
                timer.cancel()
            d.errback(error)

    # -- incoming -----------------------------------------------------------------

    def _message(self, message: Any) -> None:
        if type(message) is dict and "op" in message and self._requests:
            entry = self._requests.pop(message.get("id"), None)  # type: ignore[arg-type]
            if entry is not None:
                d, timer = entry
                if timer.active():
                    timer.cancel()
                d.callback(message)
                return
        if type(message) is dict and "event" in message:
            event = message.get("event")
            if event == "error":
                log.warn("OKX private stream: error {code}: {msg}", code=message.get("code"),
                         msg=message.get("msg"))  # fmt: skip
            elif event == "notice":
                log.info("OKX private stream: notice {code}: {msg}", code=message.get("code"),
                         msg=message.get("msg"))  # fmt: skip
            return
        try:
            self._on_push(message)
        except Exception:  # noqa: BLE001 - a listener bug must not break the stream
            log.failure("OKX private stream: on_push raised")
