"""Binance user data stream (account, balance and order events) over the WebSocket API.

Sits in the client layer: a :class:`~txexchange.transport.Connection` to
``urls["ws_api"]`` carrying the one topic of
:class:`~txexchange.adapters.binance_user.BinanceUserStreamRules`, whose
data frames are unwrapped by the adapter and handed to ``on_event`` as
Binance's own event dicts, unchanged and in order.  The transport
re-subscribes after every reconnect (and on the replacement socket before the
24 h cut), with a freshly signed request each time.  ``BinanceSocketManager``
builds its ``start_user_socket`` on this object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import Unknown
from txexchange.adapters.binance import resolve_urls
from txexchange.adapters.binance_signing import Signer, check_recv_window, timestamp_ms
from txexchange.adapters.binance_user import (
    USER_DATA_TOPIC,
    BinanceUserStreamRules,
    UserEvent,
    parse_user_message,
    ws_api_error,
)
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
    ConnectionStats,
    ControlFailed,
    Disconnected,
    StatusEvent,
    TransportOptions,
)

__all__ = ["BinanceUserStream", "UserStreamStats"]

log = Logger()

_PENDING = object()


def _replay(outcome: Failure | None) -> Deferred[None]:
    return succeed(None) if outcome is None else fail(outcome)


class UserStreamStats:
    """Counters of a :class:`BinanceUserStream`; ``connection`` is the transport's."""

    __slots__ = ("_rules", "connection", "events", "refused", "resubscribes", "unknown")

    def __init__(self, connection: ConnectionStats, rules: BinanceUserStreamRules) -> None:
        self.connection = connection
        self._rules = rules
        #: events handed to ``on_event``
        self.events = 0
        #: frames that were not user data events (logged, dropped)
        self.unknown = 0
        #: subscription requests the exchange refused
        self.refused = 0
        #: re-subscriptions made after the exchange ended the stream
        self.resubscribes = 0

    @property
    def subscribed(self) -> int:
        """Subscriptions the exchange acknowledged (one per connection)."""
        return self._rules.subscriptions_acknowledged

    def as_dict(self) -> dict[str, Any]:
        own = {k: getattr(self, k) for k in ("events", "unknown", "refused", "resubscribes")}
        return {**own, "subscribed": self.subscribed, "connection": self.connection.as_dict()}

    def __repr__(self) -> str:
        return f"UserStreamStats({self.as_dict()!r})"


class BinanceUserStream:
    """The user data stream of one API key, kept subscribed across reconnects.

    :param api_key: the Binance API key.
    :param secret: its HMAC secret (kept out of every repr, log and error).
    :param reactor: used for sockets (and time, unless ``clock`` is given).
    :param clock: an ``IReactorTime`` for timers and request timestamps.
    :param urls: Binance ``urls=`` overrides; the stream uses ``ws_api``.
    :param transport: reconnect/keep-alive options of the connection.
    :param on_event: called with each event dict (``executionReport``,
        ``outboundAccountPosition``, ``balanceUpdate``, ``listStatus``,
        ``eventStreamTerminated``, ...) exactly as Binance sent it, in order.
        An exception raised by it is logged and the stream goes on.
    :param on_subscribed: called with the number of subscriptions acknowledged
        so far after each one: 1 for the first, more after each reconnect
        (events sent while the socket was down are lost: a caller keeping
        state reloads it from REST then).
    :param request_timeout: seconds :meth:`request` waits for an answer.
    :param on_status: called with each transport
        :class:`~txexchange.transport.StatusEvent` (connected, disconnected,
        reconnect scheduled, control failed, ...).

    ``time_offset_ms`` (server time minus local time) and ``recv_window``
    (ms) may be set before (or between) subscriptions; both are read when a
    subscribe request is built.
    """

    #: after the exchange refuses a re-subscription for a reason other than
    #: authentication (e.g. a clock step), try again after this many seconds
    resubscribe_delay: float = 5.0

    def __init__(
        self,
        *,
        api_key: str,
        secret: str,
        reactor: Any,
        clock: Any = None,
        urls: Mapping[str, str] | None = None,
        transport: TransportOptions | None = None,
        on_event: Callable[[dict[str, Any]], None],
        on_status: Callable[[StatusEvent], None] | None = None,
        on_subscribed: Callable[[int], None] | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self._signer = Signer(api_key, secret)
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.urls = resolve_urls(urls)
        self.rules = BinanceUserStreamRules(self._signer, self.clock.seconds)
        self.rules.on_subscribed = self._acknowledged
        self._on_subscribed = on_subscribed
        self._request_timeout = request_timeout
        self._requests: dict[str, tuple[Deferred[Any], Any]] = {}
        self._request_seq = 0
        self._on_event = on_event
        self._on_user_status = on_status
        if transport is not None and transport.frame_tap is not None:
            # signed WebSocket API traffic is never recorded
            transport = transport.replace(frame_tap=None)
        self.connection = Connection(
            self.urls["ws_api"],
            self.rules,
            on_message=self._message,
            on_status=self._status,
            reactor=reactor,
            clock=self.clock,
            options=transport,
        )
        self.stats = UserStreamStats(self.connection.stats, self.rules)
        self._start_waiters: list[Deferred[None]] = []
        self._start_outcome: Any = _PENDING
        self._start_requested = False
        self._subscribed = False
        self._closing = False
        self._retry_call: Any = None

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("subscribed" if self._subscribed else "idle")
        return f"<BinanceUserStream {self.urls['ws_api']} {self._signer!r} {state}>"

    # -- settings read at subscribe time ------------------------------------

    @property
    def api_key(self) -> str:
        return self._signer.api_key

    @property
    def time_offset_ms(self) -> float:
        """Added to local time for request timestamps (server time - local time, ms)."""
        return self.rules.time_offset_ms

    @time_offset_ms.setter
    def time_offset_ms(self, value: float) -> None:
        self.rules.time_offset_ms = value

    @property
    def recv_window(self) -> Any:
        """``recvWindow`` (ms) sent with the subscription, ``None``: the server's 5000."""
        return self.rules.recv_window

    @recv_window.setter
    def recv_window(self, value: Any) -> None:
        self.rules.recv_window = check_recv_window(value)

    @property
    def subscription_id(self) -> int | None:
        """The exchange's id of the current subscription (per session)."""
        return self.rules.subscription_id

    # -- life cycle -------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Connect and subscribe; fires once Binance acknowledged the subscription.

        Fails with :class:`~txexchange.errors.AuthenticationError` (bad key or
        signature), :class:`~txexchange.errors.InvalidNonce` (timestamp
        outside ``recvWindow``) or another typed error if Binance refuses it,
        carrying Binance's message (never the secret); the connection is then
        closed.  Also fails if reconnection gives up or :meth:`close` is
        called first.  Calling it again gives the same outcome (after
        :meth:`close`, a failure with :class:`~txexchange.errors.ClientClosed`).
        """
        if self._start_outcome is not _PENDING:
            if self._closing and self._start_outcome is None:
                return fail(ClientClosed("the user data stream was closed"))
            return _replay(self._start_outcome)
        d: Deferred[None] = Deferred()
        self._start_waiters.append(d)
        if self._closing:
            self._start_done(Failure(ClientClosed("the user data stream was closed")))
        elif not self._start_requested:
            self._start_requested = True
            self.connection.start()
            self.connection.subscribe([USER_DATA_TOPIC]).addCallbacks(
                self._first_ack, self._first_refusal
            )
        return d

    def _start_done(self, outcome: Failure | None) -> None:
        self._start_outcome = outcome
        waiters, self._start_waiters = self._start_waiters, []
        for w in waiters:
            if outcome is None:
                w.callback(None)
            else:
                w.errback(outcome)

    def _first_ack(self, _: Any) -> None:
        self._subscribed = True
        log.info(
            "Binance user data stream subscribed ({key}, subscription {sub})",
            key=repr(self._signer),
            sub=self.rules.subscription_id,
        )
        self._start_done(None)

    def _first_refusal(self, failure: Failure) -> None:
        err = failure.value
        if isinstance(err, SubscriptionError) and self.rules.last_error is not None:
            err = self.rules.last_error
        log.error("Binance user data stream not started: {error}", error=str(err))
        outcome = Failure(err)
        if self._closing:
            self._start_done(outcome)
        else:
            self.close().addBoth(lambda _: self._start_done(outcome))

    def close(self) -> Deferred[None]:
        """Stop reconnecting and close the session with code 1000; fires when it is gone."""
        self._closing = True
        self._subscribed = False
        self._fail_requests(ClientClosed("the WebSocket API session was closed"))
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        return self.connection.close()

    # -- WebSocket API requests ---------------------------------------------------

    def request(
        self, method: str, params: Mapping[str, Any] | None = None, *, signed: bool = True
    ) -> Deferred[Any]:
        """Send a WebSocket API request on this session; fires with its ``result``.

        ``signed`` requests get ``apiKey``, ``timestamp`` (with the time
        offset), ``recvWindow`` and ``signature``.  Fails with the typed
        error of Binance's answer, :class:`~txexchange.errors.RequestTimeout`
        after ``request_timeout`` seconds, or
        :class:`~txexchange.errors.ExchangeNotAvailable` if the session is
        not open or is lost before the answer (the outcome of the request is
        then unknown; nothing is re-sent).
        """
        if self._closing:
            return fail(ClientClosed("the WebSocket API session was closed"))
        if not self.connection.is_open:
            return fail(ExchangeNotAvailable(f"Binance WebSocket API not connected ({method})"))
        self._request_seq += 1
        rid = f"tx{self._request_seq}"
        body: dict[str, Any] = dict(params or {})
        try:
            if signed:
                ts = timestamp_ms(self.clock.seconds, self.rules.time_offset_ms)
                body = self._signer.ws_api_params(
                    body, timestamp=ts, recv_window=self.rules.recv_window
                )
            frame = dumps({"id": rid, "method": method, "params": body})
        except ExchangeError as e:
            return fail(e)

        def cancelled(_: Deferred[Any]) -> None:
            entry = self._requests.pop(rid, None)
            if entry is not None and entry[1].active():
                entry[1].cancel()

        d: Deferred[Any] = Deferred(cancelled)
        timer = self.clock.callLater(self._request_timeout, self._timed_out, rid, method)
        self._requests[rid] = (d, timer)
        try:
            self.connection.send(frame)
        except ExchangeError as e:
            self._requests.pop(rid, None)
            timer.cancel()
            return fail(ExchangeNotAvailable(f"Binance WebSocket API: {e}"))
        return d

    def _timed_out(self, rid: str, method: str) -> None:
        entry = self._requests.pop(rid, None)
        if entry is not None:
            entry[0].errback(
                RequestTimeout(f"Binance WebSocket API: no answer to {method} within "
                               f"{self._request_timeout:g}s (outcome unknown)")
            )  # fmt: skip

    def _answer(self, message: dict[str, Any]) -> bool:
        entry = self._requests.pop(message.get("id"), None)  # type: ignore[arg-type]
        if entry is None:
            return False
        d, timer = entry
        if timer.active():
            timer.cancel()
        if message.get("status") == 200 and "error" not in message:
            d.callback(message.get("result"))
        else:
            d.errback(ws_api_error(message))
        return True

    def _fail_requests(self, error: ExchangeError) -> None:
        pending, self._requests = self._requests, {}
        for d, timer in pending.values():
            if timer.active():
                timer.cancel()
            d.errback(error)

    def _acknowledged(self) -> None:
        if self._on_subscribed is None:
            return
        try:
            self._on_subscribed(self.rules.subscriptions_acknowledged)
        except Exception:  # noqa: BLE001 - a listener bug must not break the stream
            log.failure("Binance user data stream: on_subscribed raised")

    # -- incoming -------------------------------------------------------------------

    def _message(self, message: Any) -> None:
        if type(message) is dict and "id" in message and self._requests and self._answer(message):
            return
        parsed = parse_user_message(message)
        if isinstance(parsed, Unknown):
            self.stats.unknown += 1
            log.debug("Binance user data stream: ignoring {reason}", reason=parsed.reason)
            return
        self._deliver(parsed)

    def _deliver(self, parsed: UserEvent) -> None:
        self.stats.events += 1
        try:
            self._on_event(parsed.event)
        except Exception:  # noqa: BLE001 - a listener bug must not break the stream
            log.failure("Binance user data stream: on_event raised")
        if parsed.type == "eventStreamTerminated" and not self._closing:
            self._stream_ended()

    def _stream_ended(self) -> None:
        """Binance ended the subscription while we still want it: subscribe again."""
        if not self._subscribed:
            return
        log.warn("Binance ended the user data stream; subscribing again")
        self.stats.resubscribes += 1
        self.connection.unsubscribe([USER_DATA_TOPIC]).addBoth(lambda _: self._resubscribe())

    def _resubscribe(self) -> None:
        self._retry_call = None
        if self._closing:
            return
        self.connection.subscribe([USER_DATA_TOPIC]).addErrback(self._resubscribe_failed)

    def _resubscribe_failed(self, failure: Failure) -> None:
        # a refusal is handled where its ControlFailed status arrives; a
        # transport that gave up is reported through RetriesExhaustedEvent
        if self._closing or failure.check(ClientClosed, SubscriptionError):
            return
        log.warn("Binance user data stream not re-subscribed: {error}", error=str(failure.value))

    def _status(self, event: StatusEvent) -> None:
        if isinstance(event, Disconnected) and self._requests:
            self._fail_requests(
                ExchangeNotAvailable(
                    "Binance WebSocket API connection lost before the answer (outcome unknown)"
                )
            )
        if isinstance(event, ControlFailed):
            self.stats.refused += 1
            if self._subscribed and not self._closing and self.rules.last_error is not None:
                # a re-subscription after a reconnect was refused: the transport
                # drops the topic, so it is up to us to try again (later)
                self._refused_later(self.rules.last_error)
        if self._on_user_status is not None:
            try:
                self._on_user_status(event)
            except Exception:  # noqa: BLE001 - a listener bug must not break the stream
                log.failure("Binance user data stream: on_status raised on {event!r}", event=event)

    def _refused_later(self, err: ExchangeError) -> None:
        if isinstance(err, AuthenticationError):
            log.error(
                "Binance refused the user data stream again ({error}); not retrying",
                error=str(err),
            )
            return
        if self._retry_call is not None and self._retry_call.active():
            return
        log.warn(
            "Binance refused the user data stream ({error}); retrying in {delay}s",
            error=str(err),
            delay=self.resubscribe_delay,
        )
        self._retry_call = self.clock.callLater(self.resubscribe_delay, self._resubscribe)
