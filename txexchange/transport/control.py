"""Rate-limited, batched queue of subscribe/unsubscribe control messages.

Sits in the transport, per physical connection.  Exchanges disconnect (or
ban) clients that send control messages too fast (Binance: 5 per second per
connection, pings included), so messages leave at most ``rate`` per second;
consecutive operations of one kind are merged into one message of up to
``max_batch`` topics, and a subscribe cancelled by an unsubscribe before it
left is never sent at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["ControlQueue", "Kind"]

Kind = Literal["sub", "unsub"]


class ControlQueue:
    """Pending control operations for one connection, sent at a bounded rate."""

    def __init__(
        self,
        clock: Any,
        rate: float,
        max_batch: int,
        send: Callable[[Kind, list[str]], None],
    ) -> None:
        if rate <= 0 or max_batch <= 0:
            raise ValueError("rate and max_batch must be positive")
        self._clock = clock
        self._interval = 1.0 / rate
        self._max_batch = max_batch
        self._send = send
        self._ops: dict[str, Kind] = {}  # topic -> op, in insertion order
        self._alone: set[str] = set()  # topics that go in a message of their own
        self._last_sent: float | None = None
        self._call: Any = None
        self._running = False

    def __len__(self) -> int:
        return len(self._ops)

    def start(self) -> None:
        """Begin sending (the connection is open)."""
        self._running = True
        self._schedule()

    def stop(self) -> None:
        """Stop sending and forget every pending operation (the connection is gone).

        The rate budget goes with the connection: the exchanges count control
        messages per connection, so the next connection may send at once.
        """
        self._running = False
        self._ops.clear()
        self._alone.clear()
        self._last_sent = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def enqueue(self, kind: Kind, topics: list[str], *, alone: bool = False) -> list[str]:
        """Queue ``kind`` for ``topics``; an opposite pending op for a topic cancels out.

        ``alone``: each of ``topics`` goes in a message of its own (used to find
        out which topic of a refused batch the exchange objects to).  Returns
        the topics whose opposite operation was cancelled (for them the
        exchange's state already is what ``kind`` asks for).
        """
        cancelled = []
        for topic in topics:
            pending = self._ops.get(topic)
            if pending is None:
                self._ops[topic] = kind
                if alone:
                    self._alone.add(topic)
            elif pending != kind:
                del self._ops[topic]
                self._alone.discard(topic)
                cancelled.append(topic)
        self._schedule()
        return cancelled

    def _schedule(self) -> None:
        if not self._running or not self._ops or self._call is not None:
            return
        now = self._clock.seconds()
        due = now if self._last_sent is None else max(now, self._last_sent + self._interval)
        self._call = self._clock.callLater(due - now, self._pump)

    def _pump(self) -> None:
        self._call = None
        if not self._running or not self._ops:
            return
        first_kind: Kind | None = None
        batch: list[str] = []
        for topic, kind in self._ops.items():
            if first_kind is None:
                first_kind = kind
            elif kind != first_kind or topic in self._alone or batch[0] in self._alone:
                break
            batch.append(topic)
            if len(batch) >= self._max_batch:
                break
        for topic in batch:
            del self._ops[topic]
            self._alone.discard(topic)
        self._last_sent = self._clock.seconds()
        assert first_kind is not None
        self._send(first_kind, batch)
        self._schedule()
