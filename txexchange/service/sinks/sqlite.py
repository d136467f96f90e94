"""The SQLite sink: one table per record type, WAL, one transaction per batch.

Sits at the end of the flow.  The database is embedded (the standard
library's :mod:`sqlite3`), opened in WAL mode so readers never block the
writer, and written through :class:`twisted.enterprise.adbapi.ConnectionPool`
(Twisted's thread pool, one connection): the reactor thread never waits on
the disk.  While one transaction commits, records queue (coalesced and
bounded by :class:`~txexchange.service.sinks.base.Sink`) and go into the next
one, so a batch is written whole or not at all: never a partial row.

Tables (prices and amounts are the exchange's decimal strings, as TEXT)::

    books(exchange, symbol, ts, nonce, bids, asks)       -- bids/asks: JSON [[price, amount], ...]
    trades(exchange, symbol, ts, id, price, amount, side)
    tickers(exchange, symbol, ts, bid, ask, last, base_volume)
    candles(exchange, symbol, timeframe, ts, open, high, low, close, volume, closed)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from txexchange.codec import dumps
from txexchange.service.sinks.base import Sink

__all__ = ["SCHEMA", "SqliteSink"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS books (
    exchange TEXT NOT NULL, symbol TEXT NOT NULL, ts INTEGER, nonce INTEGER,
    bids TEXT NOT NULL, asks TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trades (
    exchange TEXT NOT NULL, symbol TEXT NOT NULL, ts INTEGER, id TEXT,
    price TEXT NOT NULL, amount TEXT NOT NULL, side TEXT);
CREATE TABLE IF NOT EXISTS tickers (
    exchange TEXT NOT NULL, symbol TEXT NOT NULL, ts INTEGER,
    bid TEXT, ask TEXT, last TEXT, base_volume TEXT);
CREATE TABLE IF NOT EXISTS candles (
    exchange TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER,
    open TEXT, high TEXT, low TEXT, close TEXT, volume TEXT, closed INTEGER);
CREATE INDEX IF NOT EXISTS books_symbol_ts ON books (exchange, symbol, ts);
CREATE INDEX IF NOT EXISTS trades_symbol_ts ON trades (exchange, symbol, ts);
"""

_INSERT = {
    "book": "INSERT INTO books VALUES (?, ?, ?, ?, ?, ?)",
    "trade": "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?)",
    "ticker": "INSERT INTO tickers VALUES (?, ?, ?, ?, ?, ?, ?)",
    "ohlcv": "INSERT INTO candles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}


def _row(r: dict[str, Any]) -> tuple[Any, ...]:
    kind = r["type"]
    if kind == "book":
        return (
            r["exchange"],
            r["symbol"],
            r["ts"],
            r["nonce"],
            dumps(r["bids"]).decode(),
            dumps(r["asks"]).decode(),
        )
    if kind == "trade":
        return (r["exchange"], r["symbol"], r["ts"], r["id"], r["price"], r["amount"], r["side"])
    if kind == "ticker":
        return (
            r["exchange"],
            r["symbol"],
            r["ts"],
            r["bid"],
            r["ask"],
            r["last"],
            r["base_volume"],
        )
    return (r["exchange"], r["symbol"], r["timeframe"], r["ts"], *r["ohlcv"], int(r["closed"]))


def _prepare(conn: Any) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


class SqliteSink(Sink):
    """Writes records into the SQLite database at ``path`` (created if missing)."""

    kind = "sqlite"

    def __init__(
        self,
        path: str | Path,
        depth: int = 10,
        *,
        batch: int = 1000,
        queue: int = 10_000,
        reactor: Any = None,
    ) -> None:
        super().__init__(depth=depth, queue=queue, batch=batch)
        self.path = Path(path)
        self._reactor = reactor
        self._pool: Any = None

    @property
    def name(self) -> str:
        return f"sqlite:{self.path}"

    def _open(self) -> Any:
        from twisted.enterprise import adbapi

        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {}
        if self._reactor is not None:
            kwargs["cp_reactor"] = self._reactor
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            str(self.path),
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_prepare,
            **kwargs,
        )
        return self._pool.runInteraction(lambda cursor: cursor.executescript(SCHEMA))

    def _write_batch(self, batch: list[dict[str, Any]]) -> Any:
        by_type: dict[str, list[tuple[Any, ...]]] = {}
        for record in batch:
            by_type.setdefault(record["type"], []).append(_row(record))

        def transaction(cursor: Any) -> None:
            for kind, rows in by_type.items():
                cursor.executemany(_INSERT[kind], rows)

        return self._pool.runInteraction(transaction)

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
