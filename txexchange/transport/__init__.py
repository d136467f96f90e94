"""The transport layer: WebSocket connections that stay up.

Bottom of the flow (socket bytes -> decoded messages).  Public surface:
:class:`Connection`, :class:`TransportOptions`, :class:`WireRules` and the
status events.
"""

from __future__ import annotations

from txexchange.transport.connection import Connection, State
from txexchange.transport.options import TransportOptions
from txexchange.transport.rules import ControlReply, Heartbeat, SimpleWireRules, WireRules
from txexchange.transport.stats import ConnectionStats
from txexchange.transport.status import (
    Connected,
    ControlFailed,
    Disconnected,
    FrameRejected,
    ReconnectScheduled,
    RetriesExhaustedEvent,
    RolledOver,
    Stalled,
    StatusEvent,
    TLSFailure,
)

__all__ = [
    "Connected",
    "Connection",
    "ConnectionStats",
    "ControlFailed",
    "ControlReply",
    "Disconnected",
    "FrameRejected",
    "Heartbeat",
    "ReconnectScheduled",
    "RetriesExhaustedEvent",
    "RolledOver",
    "SimpleWireRules",
    "Stalled",
    "State",
    "StatusEvent",
    "TLSFailure",
    "TransportOptions",
    "WireRules",
]
