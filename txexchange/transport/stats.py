"""Per-connection counters read by the service and its metrics.

Sits in the transport layer.  Plain mutable attributes: incremented on the
hot path, so no locking, no properties.
"""

from __future__ import annotations

__all__ = ["ConnectionStats"]


class ConnectionStats:
    """Counters of one logical connection (across reconnects and rollovers)."""

    __slots__ = (
        "_clock",
        "bytes",
        "connects",
        "control_sent",
        "errors",
        "last_message_at",
        "messages",
        "reconnects",
        "rejected_frames",
        "rollovers",
        "stalls",
    )

    def __init__(self, clock: object) -> None:
        self._clock = clock
        self.messages = 0
        self.bytes = 0
        self.connects = 0
        self.reconnects = 0
        self.errors = 0
        self.rejected_frames = 0
        self.stalls = 0
        self.rollovers = 0
        self.control_sent = 0
        self.last_message_at: float | None = None

    def last_message_age(self) -> float | None:
        """Seconds since the last message (``None`` before the first)."""
        if self.last_message_at is None:
            return None
        return self._clock.seconds() - self.last_message_at  # type: ignore[attr-defined]

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "rejected_frames": self.rejected_frames,
            "stalls": self.stalls,
            "rollovers": self.rollovers,
            "control_sent": self.control_sent,
            "last_message_age": self.last_message_age(),
        }

    def __repr__(self) -> str:
        return f"ConnectionStats({self.as_dict()!r})"
