"""Records and the bounded queue every sink shares.

Sits at the end of the flow: a sink is an observer of the client's streams.
:func:`record_for` turns an update into the JSON-ready record written
everywhere (books as their top N levels at the moment of the update).
:class:`Sink` queues records for its backend and never lets a slow backend
grow memory without bound: a book record waiting to be written is replaced by
the next one of the same symbol (coalesced: only the latest book matters), and
other records are held up to ``queue`` entries; beyond that they are dropped,
counted and logged.  While a backend write is in flight the queue fills, so
writes batch themselves under load.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.delivery import BookUpdate
from txexchange.errors import BookIntegrityError
from txexchange.events import Candle, Ticker, Trade

__all__ = ["RECORD_TYPES", "Sink", "record_for"]

log = Logger()

RECORD_TYPES = ("book", "trade", "ticker", "ohlcv")


def record_for(exchange: str, event: Any, depth: int) -> dict[str, Any] | None:
    """The record of one update (``None`` for events that are not data).

    Books read the merged book *now*, so call this inside the observer.
    """
    if isinstance(event, BookUpdate):
        try:
            book = event.book(depth)
        except BookIntegrityError:
            return None
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


class Sink:
    """Base class: a bounded, coalescing queue in front of a backend.

    Subclasses implement :meth:`_open`, :meth:`_write_batch` (a list of
    records; may return a Deferred, during which new records queue up) and
    :meth:`_close`.  ``queue`` bounds the non-book records held; ``batch`` the
    records handed to one :meth:`_write_batch`.
    """

    kind = "sink"

    def __init__(self, *, depth: int = 10, queue: int = 10_000, batch: int = 1000) -> None:
        self.depth = depth
        self.max_queue = queue
        self.max_batch = batch
        #: records written by the backend
        self.records = 0
        #: non-book records dropped because the queue was full
        self.dropped = 0
        #: book records replaced by a newer one before being written
        self.coalesced = 0
        #: backend writes that failed (their records are counted as dropped)
        self.errors = 0
        self._pending: deque[list[Any]] = deque()  # [record] cells, arrival order
        self._book_cells: dict[tuple[str, str], list[Any]] = {}
        self._others = 0
        self._busy = False
        self._opened = False
        self._closing = False
        self._idle: list[Deferred[None]] = []
        self._drop_logged_at = 0
        self._errors_logged_at = 0

    @property
    def name(self) -> str:
        return self.kind

    @property
    def queue_depth(self) -> int:
        """Records waiting for the backend."""
        return len(self._pending)

    # -- the observer side -------------------------------------------------------

    def write(self, exchange: str, event: Any) -> None:
        """Queue the record of ``event`` (the observer entry point)."""
        record = record_for(exchange, event, self.depth)
        if record is not None:
            self.put(record)

    def put(self, record: dict[str, Any]) -> None:
        """Queue one record (books coalesce per symbol; others drop beyond ``queue``)."""
        if self._closing and not self._opened:
            return
        if record["type"] == "book":
            key = (record["exchange"], record["symbol"])
            cell = self._book_cells.get(key)
            if cell is not None:
                cell[0] = record
                self.coalesced += 1
                return
            cell = [record]
            self._book_cells[key] = cell
        else:
            if self._others >= self.max_queue:
                self.dropped += 1
                if self.dropped >= self._drop_logged_at * 2 or self.dropped == 1:
                    self._drop_logged_at = self.dropped
                    log.warn(
                        "{sink}: queue full ({n} records); {d} records dropped so far",
                        sink=self.name,
                        n=self.max_queue,
                        d=self.dropped,
                    )
                return
            self._others += 1
            cell = [record]
        self._pending.append(cell)
        if not self._busy and self._opened:
            self._drain()

    # -- draining ----------------------------------------------------------------

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        pending = self._pending
        cells = self._book_cells
        while pending and len(batch) < self.max_batch:
            record = pending.popleft()[0]
            if record["type"] == "book":
                del cells[(record["exchange"], record["symbol"])]
            else:
                self._others -= 1
            batch.append(record)
        return batch

    def _drain(self) -> None:
        while self._pending:
            batch = self._take()
            self._busy = True
            d = maybeDeferred(self._write_batch, batch)
            if d.called:
                # synchronous backend: finish inline and go on
                d.addBoth(self._written, batch, False)
                continue
            d.addBoth(self._written, batch, True)
            return
        self._busy = False
        idle, self._idle = self._idle, []
        for w in idle:
            w.callback(None)

    def _written(self, result: Any, batch: list[dict[str, Any]], resume: bool) -> None:
        if isinstance(result, Failure):
            self.errors += 1
            self.dropped += len(batch)
            if self.errors >= self._errors_logged_at * 2:  # 1, 2, 4, 8, ...: no log flood
                self._errors_logged_at = self.errors
                log.warn(
                    "{sink}: writing {n} records failed ({errors} failed writes, "
                    "{d} records dropped so far): {why}",
                    sink=self.name,
                    n=len(batch),
                    errors=self.errors,
                    d=self.dropped,
                    why=result.getErrorMessage(),
                )
        else:
            self.records += len(batch)
        self._busy = False
        if resume:
            self._drain()

    def when_idle(self) -> Deferred[None]:
        """Fires once every queued record has been handed to the backend and written."""
        if not self._pending and not self._busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    # -- life cycle ----------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Open the backend; records queued before are written once it is open."""

        def opened(_: Any) -> None:
            self._opened = True
            if self._pending and not self._busy:
                self._drain()

        return maybeDeferred(self._open).addCallback(opened)

    def flush(self) -> Deferred[None]:
        """Write what is queued and flush the backend's buffers."""
        return self.when_idle().addCallback(lambda _: self._flush())

    def close(self) -> Deferred[None]:
        """Write everything queued, then close the backend (no partial record is left)."""
        self._closing = True
        if not self._opened:
            return succeed(None)

        def close(_: Any) -> Deferred[None]:
            self._opened = False
            return maybeDeferred(self._close)

        def done(_: Any) -> None:
            log.info(
                "{sink}: closed; {n} records written, {d} dropped, {c} books coalesced",
                sink=self.name,
                n=self.records,
                d=self.dropped,
                c=self.coalesced,
            )

        return self.when_idle().addCallback(close).addCallback(done)

    def abandon(self) -> int:
        """Give up on what is still queued (shutdown timed out); returns how many."""
        n = len(self._pending)
        self._pending.clear()
        self._book_cells.clear()
        self._others = 0
        self.dropped += n
        return n

    def force_close(self) -> Deferred[None]:
        """Close the backend now, whatever is in flight (after :meth:`abandon`)."""
        self._opened = False
        return maybeDeferred(self._close)

    def stats(self) -> dict[str, int]:
        return {
            "records": self.records,
            "dropped": self.dropped,
            "coalesced": self.coalesced,
            "errors": self.errors,
            "queue_depth": self.queue_depth,
        }

    # -- for subclasses ----------------------------------------------------------

    def _open(self) -> Any:
        return None

    def _write_batch(self, batch: list[dict[str, Any]]) -> Any:
        raise NotImplementedError

    def _flush(self) -> Any:
        return None

    def _close(self) -> Any:
        return None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} records={self.records} queued={self.queue_depth}>"
        )
