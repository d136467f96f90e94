"""Binance user data stream over the WebSocket API: wire rules, replies, events, errors.

Sits in the adapter layer between the transport (a
:class:`~txexchange.transport.Connection` to ``urls["ws_api"]``) and the
client's :class:`~txexchange.client.binance_user.BinanceUserStream`.  The
listenKey mechanism is gone (removed 2026-02-20); the stream is now one
subscription on a WebSocket API session:

* subscribe with ``{"id", "method": "userDataStream.subscribe.signature",
  "params": {"apiKey", "timestamp", "signature"}}`` (signed by the WebSocket
  API rule, see :mod:`txexchange.adapters.binance_signing`);
* the answer is ``{"id", "status": 200, "result": {"subscriptionId": k}}`` or
  ``{"id", "status": 4xx, "error": {"code", "msg"}}``;
* events arrive as ``{"subscriptionId": k, "event": {...}}``;
* ``userDataStream.unsubscribe`` ends it, ``eventStreamTerminated`` marks the end.

The transport carries one opaque topic, :data:`USER_DATA_TOPIC`; the
subscribe frame is built when the transport sends it (after every
reconnect), so each carries a fresh timestamp and signature.  Everything
here is pure: the clock is a function passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from txexchange.adapters import Unknown
from txexchange.adapters.binance import error_class
from txexchange.adapters.binance_signing import Signer, check_recv_window, timestamp_ms
from txexchange.codec import DecodeError, dumps, loads
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    ExchangeError,
    ExchangeNotAvailable,
    InvalidNonce,
    PermissionDenied,
    RateLimitExceeded,
)
from txexchange.transport.rules import Compression, ControlReply, Heartbeat

__all__ = [
    "EVENT_TYPES",
    "SUBSCRIBE_METHOD",
    "UNSUBSCRIBE_METHOD",
    "USER_DATA_TOPIC",
    "USER_STREAM_ERROR_CODES",
    "BinanceUserStreamRules",
    "UserEvent",
    "parse_user_message",
    "ws_api_error",
]

#: the one topic the transport holds for the user data stream
USER_DATA_TOPIC = "userDataStream"
SUBSCRIBE_METHOD = "userDataStream.subscribe.signature"
UNSUBSCRIBE_METHOD = "userDataStream.unsubscribe"
#: event types Binance documents for the spot user data stream
EVENT_TYPES = frozenset(
    {
        "outboundAccountPosition",
        "balanceUpdate",
        "executionReport",
        "listStatus",
        "listenKeyExpired",
        "externalLockUpdate",
        "eventStreamTerminated",
    }
)

#: Binance error codes whose meaning matters for a signed subscription
USER_STREAM_ERROR_CODES: Mapping[int, type[ExchangeError]] = {
    -1002: PermissionDenied,  # UNAUTHORIZED
    -1021: InvalidNonce,  # INVALID_TIMESTAMP: outside recvWindow / ahead of server time
    -1022: AuthenticationError,  # INVALID_SIGNATURE
    -2014: AuthenticationError,  # BAD_API_KEY_FMT
    -2015: AuthenticationError,  # REJECTED_MBX_KEY: invalid key, IP or permissions
}


def ws_api_error(reply: Any) -> ExchangeError:
    """The typed error for a failed WebSocket API reply (``{"status", "error": {code, msg}}``).

    The text is the exchange's message and code only.  ``code`` and
    ``status`` are set as attributes.
    """
    status = reply.get("status") if isinstance(reply, dict) else None
    error = reply.get("error") if isinstance(reply, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    msg = error.get("msg") if isinstance(error, dict) else None
    code = code if type(code) is int else None
    status = status if type(status) is int else None
    text = "Binance WebSocket API"
    if status is not None:
        text += f" status {status}"
    if code is not None:
        text += f" code {code}"
    if isinstance(msg, str) and msg:
        text += f": {msg[:200]}"
    elif not isinstance(error, dict):
        text += ": malformed error reply"
    cls: type[ExchangeError] | None = None
    if code is not None:
        cls = USER_STREAM_ERROR_CODES.get(code) or error_class(code, msg)
    if cls is None:
        if status == 429 or status == 418:
            cls = RateLimitExceeded
        elif status == 401:
            cls = AuthenticationError
        elif status == 403:
            cls = PermissionDenied
        elif status is not None and status >= 500:
            cls = ExchangeNotAvailable
        elif status is not None and 400 <= status < 500:
            cls = BadRequest
        else:
            cls = ExchangeError
    err = cls(text)
    err.code = code  # type: ignore[attr-defined]
    err.status = status  # type: ignore[attr-defined]
    return err


@attrs.frozen(slots=True)
class UserEvent:
    """One user data event: ``event`` is Binance's dict, unchanged."""

    subscription_id: int | None
    event: dict[str, Any]

    @property
    def type(self) -> str | None:
        """The event's ``e`` field (``executionReport``, ...)."""
        e = self.event.get("e")
        return e if isinstance(e, str) else None


def parse_user_message(message: Any) -> UserEvent | Unknown:
    """A data frame of the WebSocket API session as a :class:`UserEvent`, or :class:`Unknown`."""
    if type(message) is dict:
        event = message.get("event")
        if "subscriptionId" in message and type(event) is dict:
            sub = message["subscriptionId"]
            return UserEvent(sub if type(sub) is int else None, event)
        if "id" in message and ("result" in message or "error" in message):
            return Unknown("unmatched WebSocket API reply", message)
    return Unknown("not a user data event", message)


@attrs.define(eq=False, repr=False)
class BinanceUserStreamRules:
    """:class:`~txexchange.transport.rules.WireRules` of a WebSocket API user data session.

    ``now`` returns local seconds (a reactor's ``seconds``); ``time_offset_ms``
    is added to it for the ``timestamp`` (set it from the server's ``time``
    when the local clock is off); ``recv_window`` (ms) is sent when set.
    The subscribe frame is built at send time, so every (re)subscription is
    freshly signed.

    Binance counts every incoming message on a connection (5 per second on
    the stream endpoints; the same margin is kept here) and allows 1000
    subscriptions per session; this stream only ever needs one.  The server
    pings every 20 s and Autobahn answers, so there is no application
    heartbeat; sessions are cut at 24 h, so the transport rolls over before.
    """

    signer: Signer
    now: Callable[[], float]
    time_offset_ms: float = 0
    recv_window: float | int | Decimal | None = attrs.field(default=None)

    control_rate: float = 4.5
    max_topics_per_message: int = 1
    max_topics_per_connection: int | None = 1
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = None
    max_connection_age: float | None = 24 * 60 * 60.0

    #: subscriptionId of the last acknowledged subscription
    subscription_id: int | None = attrs.field(default=None, init=False)
    #: typed error of the last refused request (``None`` after a success)
    last_error: ExchangeError | None = attrs.field(default=None, init=False)
    #: subscriptions acknowledged (one per connect)
    subscriptions_acknowledged: int = attrs.field(default=0, init=False)
    #: the ``timestamp`` of the last subscribe frame built
    last_timestamp: int | None = attrs.field(default=None, init=False)
    _sent: dict[Any, str] = attrs.field(factory=dict, init=False)
    #: called after every acknowledged subscription (the first and each one
    #: made again after a reconnect); set by the client layer
    on_subscribed: Callable[[], None] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        check_recv_window(self.recv_window)

    def __repr__(self) -> str:
        return f"<BinanceUserStreamRules {self.signer!r} subscription={self.subscription_id}>"

    def _check(self, topics: Sequence[str]) -> None:
        if list(topics) != [USER_DATA_TOPIC]:
            raise BadRequest(f"the user data connection carries only {USER_DATA_TOPIC!r}")

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """A freshly signed ``userDataStream.subscribe.signature`` request."""
        self._check(topics)
        ts = timestamp_ms(self.now, self.time_offset_ms)
        self.last_timestamp = ts
        params = self.signer.ws_api_params(timestamp=ts, recv_window=self.recv_window)
        self._remember(request_id, SUBSCRIBE_METHOD)
        return dumps({"id": request_id, "method": SUBSCRIBE_METHOD, "params": params})

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``userDataStream.unsubscribe`` of every subscription of the session."""
        self._check(topics)
        self._remember(request_id, UNSUBSCRIBE_METHOD)
        return dumps({"id": request_id, "method": UNSUBSCRIBE_METHOD})

    def _remember(self, request_id: Any, method: str) -> None:
        self._sent[request_id] = method
        while len(self._sent) > 64:  # replies lost with a dropped socket are never claimed
            del self._sent[next(iter(self._sent))]

    def control_reply(self, message: Any) -> ControlReply | None:
        """A :class:`ControlReply` for ``{"id", "status", "result"|"error"}`` of our requests."""
        if type(message) is not dict or "id" not in message or "status" not in message:
            return None
        request_id = message["id"]
        method = self._sent.pop(request_id, None)
        if method is None:
            return None
        status = message.get("status")
        if status == 200 and "error" not in message:
            self.last_error = None
            if method == SUBSCRIBE_METHOD:
                result = message.get("result")
                sub = result.get("subscriptionId") if isinstance(result, dict) else None
                self.subscription_id = sub if type(sub) is int else None
                self.subscriptions_acknowledged += 1
                if self.on_subscribed is not None:
                    self.on_subscribed()
            else:
                self.subscription_id = None
            return ControlReply(request_id, True)
        err = ws_api_error(message)
        self.last_error = err
        return ControlReply(request_id, False, str(err))

    def overlap_key(self, raw: bytes) -> Hashable:
        """The event itself: the same event has a different ``subscriptionId`` per session."""
        try:
            message = loads(raw)
        except DecodeError:
            return raw
        if type(message) is dict and type(message.get("event")) is dict:
            return dumps(message["event"])
        return raw
