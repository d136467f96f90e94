"""OHLCV candles per symbol and timeframe: closed history plus the forming candle.

Sits in the state layer: adapters produce :class:`~txexchange.events.Candle`
events (each kline/candle push, forming or final); :class:`CandleSeries`
keeps them in order and answers ``fetch_ohlcv(symbol, timeframe, since,
limit)`` in ccxt's ``[timestamp, open, high, low, close, volume]`` shape.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any

import attrs

from txexchange.events import Candle

__all__ = ["CandleSeries", "ohlcv"]


def ohlcv(candle: Candle) -> list[Any]:
    """``[timestamp, open, high, low, close, volume]`` (ccxt OHLCV row; strings kept)."""
    return [candle.timestamp, candle.open, candle.high, candle.low, candle.close, candle.volume]


class CandleSeries:
    """Candles of one symbol and timeframe, oldest first.

    Rules of :meth:`update`:

    * a candle with the open ``timestamp`` of the latest one replaces it;
    * a newer candle closes the latest (stored with ``closed=True``) and
      becomes the new latest (usually forming: ``closed`` as the event says);
    * an older candle replaces the closed candle with the same timestamp
      (kept ``closed``), and is ignored if there is none.

    At most ``maxlen`` closed candles are kept, plus the latest one.
    """

    __slots__ = ("_closed", "_last", "maxlen", "symbol", "timeframe")

    def __init__(self, symbol: str, timeframe: str, maxlen: int = 1000) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be positive, not {maxlen!r}")
        self.symbol = symbol
        self.timeframe = timeframe
        self.maxlen = maxlen
        self._closed: deque[Candle] = deque(maxlen=maxlen)
        self._last: Candle | None = None

    def __repr__(self) -> str:
        return f"<CandleSeries {self.symbol} {self.timeframe} {len(self)} candles>"

    def __len__(self) -> int:
        return len(self._closed) + (self._last is not None)

    @property
    def forming(self) -> Candle | None:
        """The latest candle (still forming unless the exchange marked it closed), or ``None``."""
        return self._last

    def update(self, candle: Candle) -> bool:
        """Apply ``candle`` by the rules above; return ``False`` if it was ignored.

        :raises ValueError: for a candle of another symbol or timeframe.
        """
        if candle.symbol != self.symbol or candle.timeframe != self.timeframe:
            raise ValueError(
                f"candle for {candle.symbol!r} {candle.timeframe!r} applied to the series "
                f"of {self.symbol!r} {self.timeframe!r}"
            )
        last = self._last
        if last is None or candle.timestamp == last.timestamp:
            self._last = candle
            return True
        if candle.timestamp > last.timestamp:
            if not last.closed:
                last = attrs.evolve(last, closed=True)
            self._closed.append(last)
            self._last = candle
            return True
        closed = self._closed
        for index in range(len(closed) - 1, -1, -1):
            stamp = closed[index].timestamp
            if stamp == candle.timestamp:
                closed[index] = candle if candle.closed else attrs.evolve(candle, closed=True)
                return True
            if stamp < candle.timestamp:
                break
        return False

    def clear(self) -> None:
        """Forget every candle."""
        self._closed.clear()
        self._last = None

    def candles(self, since: int | None = None, limit: int | None = None) -> list[Candle]:
        """Candles oldest first, the latest (forming) one last, filtered like ccxt.

        ``since`` (ms, inclusive) keeps candles opening at or after it; then
        ``limit`` keeps the *last* ``limit`` when ``since`` is ``None`` and
        the *first* ``limit`` when it is given (ccxt ``filter_by_since_limit``).
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit!r}")
        everything = list(self._closed)
        if self._last is not None:
            everything.append(self._last)
        if since is None:
            if limit is None or limit >= len(everything):
                return everything
            return everything[len(everything) - limit :]
        chosen = (candle for candle in everything if candle.timestamp >= since)
        if limit is None:
            return list(chosen)
        return list(islice(chosen, limit))

    def select(self, since: int | None = None, limit: int | None = None) -> list[list[Any]]:
        """:meth:`candles` as ccxt OHLCV rows ``[timestamp, open, high, low, close, volume]``."""
        return [ohlcv(candle) for candle in self.candles(since, limit)]
