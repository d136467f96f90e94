"""What an exchange adapter tells the transport about its wire protocol.

Sits at the seam between transport and adapter.  The transport knows nothing
of books or symbols: it carries opaque *topics* (strings chosen by the
adapter, e.g. ``"btcusdt@depth@100ms"``) and asks the adapter's
:class:`WireRules` how to subscribe to them, how to recognise the replies,
how to keep the connection alive and how to decompress binary frames.
Everything here is pure: no reactor, no sockets.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

__all__ = [
    "Compression",
    "ControlReply",
    "Heartbeat",
    "SimpleWireRules",
    "WireRules",
]

Compression = Literal["deflate", "zlib", "gzip"] | None


@attrs.frozen
class ControlReply:
    """The exchange's answer to a control (subscribe/unsubscribe) request."""

    request_id: Any
    ok: bool
    error: str | None = None


@attrs.frozen
class Heartbeat:
    """An application-level keep-alive.

    ``payload`` is sent when nothing has been *sent or received* for
    ``idle_interval`` seconds.  ``pong`` is the exact text frame the exchange
    answers with (e.g. OKX's ``"pong"``), so the transport can swallow it
    without handing a non-JSON frame to the decoder; ``None`` when the answer
    is ordinary JSON that the adapter handles.
    """

    payload: str | bytes
    idle_interval: float
    pong: str | None = None


@runtime_checkable
class WireRules(Protocol):
    """Per-exchange rules for one kind of connection."""

    #: control messages per second the exchange accepts on one connection
    control_rate: float
    #: most topics one subscribe/unsubscribe message may carry
    max_topics_per_message: int
    #: most topics one connection may hold (``None`` = no documented limit)
    max_topics_per_connection: int | None
    #: does the exchange answer control requests with a reply naming the id?
    replies_to_control: bool
    #: how binary frames are compressed (``None``: binary frames are JSON bytes)
    binary_compression: Compression
    #: application-level ping, if the exchange wants one
    heartbeat: Heartbeat | None
    #: age (s) after which the exchange cuts a connection; rolled over before
    max_connection_age: float | None

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> str | bytes:
        """The frame that subscribes to ``topics``."""

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> str | bytes:
        """The frame that unsubscribes from ``topics``."""

    def control_reply(self, message: Any) -> ControlReply | None:
        """If ``message`` answers a control request, say which and how."""

    # Optionally, ``decode(raw: bytes) -> Any``: the adapter's own JSON decoder
    # (e.g. :func:`txexchange.codec.loads_exact` where prices arrive as JSON
    # numbers); without it frames are decoded with orjson.

    def overlap_key(self, raw: bytes) -> Hashable:
        """Identity of a data message, equal for the same event on two connections.

        Used to stitch a replacement connection onto the old one during a
        planned rollover without losing or repeating a message.
        """


@attrs.define
class SimpleWireRules:
    """A ready-made :class:`WireRules` for JSON ``{"method", "params", "id"}`` protocols.

    Binance's market streams speak exactly this; tests use it with the fake
    exchange.  Replies look like ``{"result": ..., "id": n}`` or
    ``{"error": {...}, "id": n}``.
    """

    control_rate: float = 5.0
    max_topics_per_message: int = 200
    max_topics_per_connection: int | None = 1024
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = None
    max_connection_age: float | None = None

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        from txexchange.codec import dumps

        return dumps({"method": "SUBSCRIBE", "params": list(topics), "id": request_id})

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        from txexchange.codec import dumps

        return dumps({"method": "UNSUBSCRIBE", "params": list(topics), "id": request_id})

    def control_reply(self, message: Any) -> ControlReply | None:
        if not isinstance(message, dict) or "id" not in message:
            return None
        if "error" in message:
            err = message["error"]
            text = err.get("msg") if isinstance(err, dict) else str(err)
            return ControlReply(message["id"], False, str(text))
        if "result" in message:
            return ControlReply(message["id"], True)
        return None

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw
