"""Transport options: every knob of a WebSocket connection in one immutable value.

Sits at the top of the transport layer; adapters supply their own defaults
(rate limits, heartbeats) through :mod:`txexchange.transport.rules`, users
override these through ``txexchange.exchange(..., transport=TransportOptions(...))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from txexchange.errors import BadRequest

__all__ = ["TransportOptions"]


def _positive(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and value <= 0:
        raise BadRequest(f"TransportOptions.{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise BadRequest(f"TransportOptions.{attribute.name} must be >= 0, got {value!r}")


def _trust_root(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    # Anything Twisted cannot use as a trust root would fail only when a
    # connection is made (for REST, as a Deferred that never fires): refuse it here.
    if value is None:
        return
    from twisted.internet.ssl import optionsForClientTLS

    try:
        optionsForClientTLS("localhost", trustRoot=value)
    except TypeError:
        raise BadRequest(
            "TransportOptions.trust_root must be a trust root (e.g. a "
            f"twisted.internet.ssl.Certificate) or None, got {value!r:.60}"
        ) from None


@attrs.frozen(kw_only=True)
class TransportOptions:
    """How a connection reconnects, keeps alive and guards itself.

    All times are in seconds.  Use :meth:`replace` to derive a variant.
    """

    #: first reconnect delay after a connection is lost or refused
    initial_delay: float = attrs.field(default=1.0, validator=_positive)
    #: ceiling of the exponential backoff
    max_delay: float = attrs.field(default=60.0, validator=_positive)
    #: backoff multiplier per failed attempt
    factor: float = attrs.field(default=2.0, validator=_positive)
    #: each delay is multiplied by a uniform random factor in ``[1 - jitter, 1 + jitter]``
    jitter: float = attrs.field(default=0.2, validator=_non_negative)
    #: give up after this many consecutive failed attempts (``None``: retry forever)
    max_retries: int | None = attrs.field(default=None)
    #: TCP connect timeout
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: WebSocket opening handshake timeout
    open_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: how long ``close()`` waits for the closing handshake before dropping the socket
    close_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: drop and reconnect a connection that receives nothing for this long (``None``: never)
    stall_timeout: float | None = attrs.field(default=60.0, validator=_positive)
    #: send WebSocket pings this often (``None``: only answer the server's pings)
    auto_ping_interval: float | None = attrs.field(default=None, validator=_positive)
    #: drop the connection when a ping is not answered within this time
    auto_ping_timeout: float | None = attrs.field(default=None, validator=_positive)
    #: largest WebSocket message accepted (after permessage-deflate inflation), bytes
    max_message_size: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    #: largest payload a compressed binary frame may inflate to, bytes
    max_decompressed_size: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    #: offer and accept permessage-deflate
    compression: bool = True
    #: extra trust root for TLS (e.g. a test CA); ``None`` uses the platform's roots
    trust_root: Any = attrs.field(default=None, validator=_trust_root)
    #: open the replacement connection this long before the exchange's age limit
    rollover_margin: float = attrs.field(default=600.0, validator=_non_negative)
    #: after a rollover's replacement is subscribed, wait at most this long for overlap
    rollover_overlap_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: called with ``(url, received_at, payload, is_binary)`` for every frame received, the
    #: payload exactly as received (before inflating or decoding); ``received_at`` is the
    #: connection clock's ``seconds()``.  Used by the service's recorder (``--record``).  It
    #: runs on the per-frame hot path, so it must be cheap and must not raise.
    frame_tap: Callable[[str, float, bytes, bool], None] | None = attrs.field(
        default=None, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise BadRequest(f"TransportOptions.max_retries must be >= 0, got {self.max_retries!r}")
        if self.max_delay < self.initial_delay:
            raise BadRequest(
                f"TransportOptions.max_delay ({self.max_delay}) is below "
                f"initial_delay ({self.initial_delay})"
            )
        if self.jitter >= 1:
            raise BadRequest(f"TransportOptions.jitter must be < 1, got {self.jitter!r}")

    def replace(self, **changes: Any) -> TransportOptions:
        """A copy with ``changes`` applied (validated like the constructor)."""
        return attrs.evolve(self, **changes)
