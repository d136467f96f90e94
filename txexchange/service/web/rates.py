"""Message rates per exchange for the web view, from the connections' own counters.

Sits beside the service at the end of the flow, like the metrics: nothing is
counted here.  :class:`RateMeter` is sampled on a timer with the running
message totals and answers "messages per second over the last few seconds";
no reactor, no I/O (time is passed in).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

__all__ = ["RateMeter"]


class RateMeter:
    """Rates of monotonically growing counters over a sliding ``window`` of seconds."""

    def __init__(self, window: float = 5.0) -> None:
        if window <= 0:
            raise ValueError("window must be > 0")
        self.window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, now: float, counts: Mapping[str, int]) -> None:
        """Record the counters' values at ``now`` (seconds, increasing)."""
        self._samples.append((now, dict(counts)))
        # keep one sample at or before the window's start, so the rate spans it fully
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def rate(self, key: str) -> float | None:
        """Per-second growth of ``key`` across the window (``None`` until two samples)."""
        if len(self._samples) < 2:
            return None
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        if t1 <= t0 or key not in last:
            return None
        # a counter that restarted (new connection objects) counts from zero
        grown = last[key] - first.get(key, 0)
        return max(grown, 0) / (t1 - t0)
