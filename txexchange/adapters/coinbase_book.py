"""Coinbase Exchange integrity (level2 books, trade ids of matches): pure state machines.

Sits in the adapter layer, between the Coinbase message parser (which yields
:class:`~txexchange.events.BookSnapshot` / :class:`~txexchange.events.BookDelta`
for ``level2_batch`` and :class:`CoinbaseMatch` / :class:`CoinbaseHeartbeat`
for ``matches`` and ``heartbeat``) and the state layer (which holds levels and
trades).  Neither machine holds levels or trades: for every input they return
one *action* telling the caller what to do.  No I/O, no reactor.

Level2 books (PROTOCOLS.md section 4.3): the ``level2``/``level2_batch``
channel sends one ``snapshot`` (the whole book) after subscribing, then
``l2update`` messages with absolute sizes (``"0"`` removes the level).  The
channel carries **no sequence number** and Coinbase has no REST snapshot that
can be joined to it, so a book is (re)built only from a fresh channel
snapshot: *resync* means unsubscribe and subscribe the book's topic again (or
reconnect).  What :class:`CoinbaseBookSync` can still judge:

* an ``l2update`` before any snapshot (the snapshot was lost, or the caller
  reset the machine on a live subscription) -> :class:`Resync`;
* once a resync was asked for, updates are ignored until the new snapshot
  (those still in flight belong to the old subscription);
* every snapshot replaces the book, whenever it comes;
* engine ``time`` going backwards between updates -> :class:`Resync`;
  an update older than the snapshot's ``time`` (when the snapshot has one)
  is stale and ignored;
* after applying, :meth:`CoinbaseBookSync.verify` looks at the book actually
  held (``OrderBook.top``): a book that deltas left crossed or locked (best
  bid >= best ask) for ``crossed_limit`` consecutive messages -> :class:`Resync`.
  A *snapshot* that is crossed is accepted as the exchange's own state (an
  auction, where the book shows an indicative crossed quote) and the check
  waits until the book uncrosses, so an auction never loops resubscribing.

Deletes of price levels the book does not hold are harmless (the state layer
ignores them) and are not judged here.

Trades (PROTOCOLS.md sections 4.3-4.4): ``matches`` may drop messages; every
``match`` carries a per-product ``trade_id`` (consecutive integers) and the
product's ``sequence``, and the ``heartbeat`` channel says every second which
``last_trade_id`` the product is at.  :class:`CoinbaseTradeSync` emits each new
trade, ignores duplicates and late arrivals, and reports the ids it knows were
missed (:class:`MissedTrades`) so the caller can fetch them with
``GET /products/{id}/trades``.  ``sequence`` itself cannot reveal gaps on the
public channels: it counts every ``full``-channel message of the product, so it
jumps between consecutive matches by design; it only orders a heartbeat
against the last match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

import attrs

from txexchange.errors import BadRequest
from txexchange.events import BookDelta, BookSnapshot, Level, Trade

__all__ = [
    "ApplyDelta",
    "ApplySnapshot",
    "BookAction",
    "CoinbaseBookSync",
    "CoinbaseHeartbeat",
    "CoinbaseMatch",
    "CoinbaseTradeSync",
    "EmitTrade",
    "Ignore",
    "MissedTrades",
    "Resync",
    "TopLevels",
    "TradeAction",
    "is_crossed",
]

#: ``top(side, n)``: the best ``n`` levels of ``side`` (``"bids"``/``"asks"``),
#: best first, as ``(price, amount)`` strings -- e.g. ``OrderBook.top``.
TopLevels = Callable[[Literal["bids", "asks"], int], Sequence[Level]]


# ---------------------------------------------------------------------------
# Events only this exchange has
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class CoinbaseMatch:
    """One ``match`` (or the ``last_match`` sent first after subscribing to ``matches``).

    ``trade`` is the unified trade (``side`` is the *taker's* side: Coinbase
    sends the maker's).  ``trade_id`` and ``sequence`` are Coinbase's integers,
    kept for :class:`CoinbaseTradeSync`.
    """

    trade: Trade
    trade_id: int
    sequence: int | None
    last: bool = False

    @property
    def symbol(self) -> str:
        return self.trade.symbol


@attrs.frozen(slots=True)
class CoinbaseHeartbeat:
    """A ``heartbeat`` message: the product's ``sequence`` and ``last_trade_id`` now."""

    symbol: str
    sequence: int
    last_trade_id: int
    timestamp: int | None = None


# ---------------------------------------------------------------------------
# Book actions
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ApplySnapshot:
    """Replace the book with ``snapshot``, then call :meth:`CoinbaseBookSync.verify`."""

    snapshot: BookSnapshot


@attrs.frozen(slots=True)
class ApplyDelta:
    """Apply ``delta`` to the book, then call :meth:`CoinbaseBookSync.verify`."""

    delta: BookDelta


@attrs.frozen(slots=True)
class Ignore:
    """Nothing to do (stale update, update of an old subscription, duplicate trade)."""

    reason: str


@attrs.frozen(slots=True)
class Resync:
    """The book is inconsistent: mark it stale, then unsubscribe and subscribe its topic again.

    Updates are ignored until the new subscription's snapshot arrives.
    """

    reason: str


BookAction = ApplySnapshot | ApplyDelta | Ignore | Resync

_WAITING_RESYNC = Ignore("resync asked for: waiting for the new subscription's snapshot")
_STALE_UPDATE = Ignore("l2update older than the snapshot")


def _price(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return value if value.is_finite() else None


def is_crossed(top: TopLevels) -> bool:
    """Whether the best bid is at or above the best ask (a locked or crossed book).

    Prices are compared exactly (as :class:`~decimal.Decimal`); an empty side
    is never crossed.
    """
    bids = top("bids", 1)
    asks = top("asks", 1)
    if not bids or not asks:
        return False
    bid = _price(bids[0][0])
    ask = _price(asks[0][0])
    if bid is None or ask is None:
        return False
    return bid >= ask


class CoinbaseBookSync:
    """Integrity bookkeeping for one Coinbase level2 book (one product).

    Feed it every ``snapshot`` and ``l2update`` of the product with
    :meth:`on_event`; apply what it says; after :class:`ApplySnapshot` and
    :class:`ApplyDelta` call :meth:`verify` with the book's ``top``.  On
    :class:`Resync` mark the book stale and resubscribe the topic; call
    :meth:`reset` after a reconnect (the new connection's subscribe brings a
    snapshot).

    :param crossed_limit: consecutive applied updates after which a crossed or
        locked book (best bid >= best ask) is a resync; ``None`` turns the
        check off.
    :param check_time: resync when ``l2update`` ``time`` goes backwards, and
        ignore updates older than a timestamped snapshot.
    """

    __slots__ = (
        "_crossed",
        "_crossed_ok",
        "_last_time",
        "_snapshot_time",
        "_state",
        "_verify",
        "check_time",
        "crossed_limit",
        "symbol",
    )

    def __init__(
        self, symbol: str, *, crossed_limit: int | None = 2, check_time: bool = True
    ) -> None:
        if crossed_limit is not None and (type(crossed_limit) is not int or crossed_limit < 1):
            raise BadRequest(f"crossed_limit must be a positive int or None, not {crossed_limit!r}")
        self.symbol = symbol
        self.crossed_limit = crossed_limit
        self.check_time = check_time
        self._state: Literal["waiting", "synced", "resyncing"] = "waiting"
        self._snapshot_time: int | None = None
        self._last_time: int | None = None
        #: consecutive verified messages that left the book crossed
        self._crossed = 0
        #: the book came crossed in a snapshot: tolerated until it uncrosses
        self._crossed_ok = False
        #: what the next :meth:`verify` judges: None, "snapshot" or "delta"
        self._verify: Literal["snapshot", "delta"] | None = None

    # -- introspection ---------------------------------------------------------

    @property
    def state(self) -> Literal["waiting", "synced", "resyncing"]:
        """``"waiting"`` for the first snapshot, ``"synced"``, or ``"resyncing"``
        (a resubscribe was asked for and its snapshot has not come yet)."""
        return self._state

    @property
    def synced(self) -> bool:
        return self._state == "synced"

    def reset(self) -> None:
        """Forget everything (a reconnect, or a subscribe that will bring a snapshot)."""
        self._state = "waiting"
        self._snapshot_time = None
        self._last_time = None
        self._crossed = 0
        self._crossed_ok = False
        self._verify = None

    # -- inputs ------------------------------------------------------------------

    def on_event(self, event: BookSnapshot | BookDelta) -> BookAction:
        """Judge one ``snapshot`` (:class:`BookSnapshot`) or ``l2update`` (:class:`BookDelta`)."""
        if event.symbol != self.symbol:
            raise BadRequest(f"event for {event.symbol!r} fed to the {self.symbol!r} book")
        self._verify = None
        if type(event) is BookSnapshot:
            self._state = "synced"
            self._snapshot_time = event.timestamp
            self._last_time = event.timestamp
            self._crossed = 0
            self._crossed_ok = False
            self._verify = "snapshot"
            return ApplySnapshot(event)
        if type(event) is not BookDelta:
            raise BadRequest(f"not a Coinbase book event: {event!r}")
        state = self._state
        if state == "resyncing":
            return _WAITING_RESYNC
        if state == "waiting":
            return self._resync("l2update before any snapshot")
        ts = event.timestamp
        if self.check_time and ts is not None:
            snap = self._snapshot_time
            if snap is not None and ts < snap:
                return _STALE_UPDATE
            last = self._last_time
            if last is not None and ts < last:
                return self._resync(f"l2update time went backwards ({ts} < {last} ms)")
            self._last_time = ts
        self._verify = "delta"
        return ApplyDelta(event)

    def verify(self, top: TopLevels) -> Resync | None:
        """Check the book after :class:`ApplySnapshot` / :class:`ApplyDelta` was applied.

        ``top`` is the book's ``top(side, n)`` (:meth:`OrderBook.top`).
        Returns ``None`` when the book is acceptable, else a :class:`Resync`.
        """
        what = self._verify
        self._verify = None
        if what is None or self.crossed_limit is None:
            return None
        crossed = is_crossed(top)
        if not crossed:
            self._crossed = 0
            self._crossed_ok = False
            return None
        if what == "snapshot":
            self._crossed_ok = True  # the exchange's own state (auction): tolerate
            return None
        if self._crossed_ok:
            return None
        self._crossed += 1
        if self._crossed < self.crossed_limit:
            return None
        return self._resync(f"book crossed (best bid >= best ask) after {self._crossed} updates")

    def _resync(self, reason: str) -> Resync:
        self._state = "resyncing"
        self._snapshot_time = None
        self._last_time = None
        self._crossed = 0
        self._crossed_ok = False
        self._verify = None
        return Resync(reason)

    def __repr__(self) -> str:
        return f"<CoinbaseBookSync {self.symbol} {self._state}>"


# ---------------------------------------------------------------------------
# Trades
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class MissedTrades:
    """Trades ``first_id`` .. ``last_id`` (inclusive) never arrived: fetch them by REST.

    ``GET /products/{id}/trades?after=<last_id + 1>`` (see
    ``coinbase.missed_trades_request``), keeping those inside the range.
    """

    symbol: str
    first_id: int
    last_id: int
    reason: str = ""

    @property
    def count(self) -> int:
        return self.last_id - self.first_id + 1

    def __contains__(self, trade_id: object) -> bool:
        return type(trade_id) is int and self.first_id <= trade_id <= self.last_id


@attrs.frozen(slots=True)
class EmitTrade:
    """Hand ``trade`` on; ``missed`` (if not ``None``) names trades skipped before it."""

    trade: Trade
    missed: MissedTrades | None = None


TradeAction = EmitTrade | MissedTrades | Ignore

_DUPLICATE_TRADE = Ignore("duplicate or late match: trade_id <= last trade_id")
_NO_TRADES_YET = Ignore("heartbeat before the first match")
_HEARTBEAT_OK = Ignore("heartbeat: no trades missed")
_OLD_HEARTBEAT = Ignore("heartbeat older than the last match")


class CoinbaseTradeSync:
    """Trade-id bookkeeping for one product's ``matches`` subscription.

    Feed it every :class:`CoinbaseMatch` with :meth:`on_match` and every
    :class:`CoinbaseHeartbeat` of the product with :meth:`on_heartbeat`.

    :param contiguous_ids: treat a ``trade_id`` jump of more than one between
        two matches as missed trades (Coinbase numbers each product's trades
        consecutively); with ``False`` only heartbeats reveal misses.
    """

    __slots__ = ("_last_id", "_last_seq", "contiguous_ids", "symbol")

    def __init__(self, symbol: str, *, contiguous_ids: bool = True) -> None:
        self.symbol = symbol
        self.contiguous_ids = contiguous_ids
        self._last_id: int | None = None
        self._last_seq: int | None = None

    @property
    def last_trade_id(self) -> int | None:
        """The highest trade id handed on or reported missed (``None`` before any match)."""
        return self._last_id

    def reset(self) -> None:
        """Forget everything (a reconnect or resubscribe: ``last_match`` comes again)."""
        self._last_id = None
        self._last_seq = None

    def on_match(self, match: CoinbaseMatch) -> TradeAction:
        """Judge one ``match`` / ``last_match``."""
        if match.symbol != self.symbol:
            raise BadRequest(f"match for {match.symbol!r} fed to the {self.symbol!r} trades")
        tid = match.trade_id
        last = self._last_id
        if last is not None and tid <= last:
            return _DUPLICATE_TRADE
        if match.sequence is not None and (
            self._last_seq is None or match.sequence > self._last_seq
        ):
            self._last_seq = match.sequence
        self._last_id = tid
        if last is not None and tid > last + 1 and self.contiguous_ids:
            missed = MissedTrades(
                self.symbol, last + 1, tid - 1, f"trade_id jumped {last} -> {tid}"
            )
            return EmitTrade(match.trade, missed)
        return EmitTrade(match.trade)

    def on_heartbeat(self, heartbeat: CoinbaseHeartbeat) -> MissedTrades | Ignore:
        """Judge one heartbeat: :class:`MissedTrades` if it is past the last match seen."""
        if heartbeat.symbol != self.symbol:
            raise BadRequest(
                f"heartbeat for {heartbeat.symbol!r} fed to the {self.symbol!r} trades"
            )
        last = self._last_id
        if last is None:
            return _NO_TRADES_YET
        hb_id = heartbeat.last_trade_id
        if hb_id <= last:
            return _HEARTBEAT_OK
        seq = self._last_seq
        if seq is not None and heartbeat.sequence <= seq:
            return _OLD_HEARTBEAT
        self._last_id = hb_id
        self._last_seq = heartbeat.sequence
        return MissedTrades(
            self.symbol, last + 1, hb_id, f"heartbeat last_trade_id {hb_id} > last match {last}"
        )

    def __repr__(self) -> str:
        return f"<CoinbaseTradeSync {self.symbol} last_trade_id={self._last_id}>"
