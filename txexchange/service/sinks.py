"""Sinks: where the service writes what the feeds deliver.

Sits at the end of the flow; a sink is an observer.  The JSON lines sink
writes one record per update: books as their top N levels
(``{"type": "book", "exchange", "symbol", "ts", "nonce", "bids": [[price, amount], ...],
"asks": [...]}``), trades, tickers and candles as their own record types.
Prices and amounts stay the exchange's decimal strings.  Writes go to a
buffered file (flushed every second and on close).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from txexchange.codec import dumps
from txexchange.delivery import BookUpdate
from txexchange.events import Candle, Ticker, Trade

__all__ = ["JsonLinesSink", "record_for"]


def record_for(exchange: str, event: Any, depth: int) -> dict[str, Any] | None:
    """The JSON record of one update (``None`` for events that are not data)."""
    if isinstance(event, BookUpdate):
        book = event.book(depth)
        return {
            "type": "book",
            "exchange": exchange,
            "symbol": book.symbol,
            "ts": book.timestamp,
            "nonce": book.nonce,
            "bids": [list(level) for level in book.bids],
            "asks": [list(level) for level in book.asks],
        }
    if isinstance(event, Trade):
        return {
            "type": "trade",
            "exchange": exchange,
            "symbol": event.symbol,
            "ts": event.timestamp,
            "id": event.id,
            "price": event.price,
            "amount": event.amount,
            "side": event.side,
        }
    if isinstance(event, Ticker):
        return {
            "type": "ticker",
            "exchange": exchange,
            "symbol": event.symbol,
            "ts": event.timestamp,
            "bid": event.bid,
            "ask": event.ask,
            "last": event.last,
            "base_volume": event.base_volume,
        }
    if isinstance(event, Candle):
        return {
            "type": "ohlcv",
            "exchange": exchange,
            "symbol": event.symbol,
            "timeframe": event.timeframe,
            "ts": event.timestamp,
            "ohlcv": [event.open, event.high, event.low, event.close, event.volume],
            "closed": event.closed,
        }
    return None


class JsonLinesSink:
    """Appends one JSON document per update to ``path``."""

    def __init__(self, path: str | Path, depth: int = 10) -> None:
        self.path = Path(path)
        self.depth = depth
        self.records = 0
        self._file: IO[bytes] | None = None

    def open(self) -> None:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab", buffering=1 << 16)

    def write(self, exchange: str, event: Any) -> None:
        record = record_for(exchange, event, self.depth)
        if record is None or self._file is None:
            return
        self._file.write(dumps(record) + b"\n")
        self.records += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        return f"<JsonLinesSink {self.path} records={self.records}>"
