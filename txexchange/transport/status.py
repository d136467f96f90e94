"""Connection status events: what a connection tells its listener besides data.

Sits in the transport layer; the delivery layer re-publishes these to users
(``subscribe("status", ...)``) and the service counts them.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = [
    "Connected",
    "ControlFailed",
    "Disconnected",
    "FrameRejected",
    "ReconnectScheduled",
    "RetriesExhaustedEvent",
    "RolledOver",
    "Stalled",
    "StatusEvent",
    "TLSFailure",
]


@attrs.frozen
class StatusEvent:
    """Base class: ``url`` names the connection."""

    url: str


@attrs.frozen
class Connected(StatusEvent):
    """The WebSocket handshake completed; ``attempt`` counts retries before it."""

    attempt: int = 0


@attrs.frozen
class Disconnected(StatusEvent):
    """The connection went away (``clean``: with a close handshake)."""

    reason: str = ""
    code: int | None = None
    clean: bool = False


@attrs.frozen
class ReconnectScheduled(StatusEvent):
    """The next attempt is due in ``delay`` seconds."""

    delay: float = 0.0
    attempt: int = 0


@attrs.frozen
class RetriesExhaustedEvent(StatusEvent):
    """Reconnection gave up; every pending Deferred has failed with ``error``."""

    error: Exception | None = None


@attrs.frozen
class ControlFailed(StatusEvent):
    """The exchange refused a subscribe/unsubscribe for ``topics``."""

    topics: Sequence[str] = ()
    error: str = ""


@attrs.frozen
class FrameRejected(StatusEvent):
    """A frame was dropped (undecodable, oversized, bomb); ``error`` says why."""

    error: Exception | None = None


@attrs.frozen
class Stalled(StatusEvent):
    """Nothing arrived for ``silence`` seconds; the connection is being replaced."""

    silence: float = 0.0


@attrs.frozen
class RolledOver(StatusEvent):
    """A planned replacement connection took over (``overlap``: matched messages)."""

    overlap: bool = True


@attrs.frozen
class TLSFailure(StatusEvent):
    """Certificate or host-name verification failed."""

    detail: str = ""
