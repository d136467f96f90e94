"""A deterministic simulated market: seeded random-walk L2 books and trades.

Sits outside the client's data flow, behind the fake exchange servers in
:mod:`txexchange.testing`: a fake server turns each :class:`MarketUpdate` into
its exchange's wire messages (depth diffs, trades, snapshots), and tests ask
the market for the *true* book at any recent update id to compare with what
the client built.  Exchange-agnostic, no reactor, no I/O.

Prices live on a tick grid and amounts on a step grid as integers; they are
handed out as fixed-decimal strings the way Binance prints them
(``"27000.01000000"``).  The same seed always gives the same sequence.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

import attrs

__all__ = ["MarketUpdate", "SimSymbol", "SimTrade", "SimulatedMarket"]

#: A level as handed out: ``(price, amount)`` fixed-decimal strings.
SimLevel = tuple[str, str]

#: 2026-01-01T00:00:00Z in ms: where the built-in virtual clock starts.
VIRTUAL_EPOCH_MS = 1_767_225_600_000


@attrs.frozen(slots=True)
class SimTrade:
    """One trade; ``side`` is the aggressor's (a ``"sell"`` hit the bid)."""

    id: int
    price: str
    amount: str
    side: Literal["buy", "sell"]
    timestamp: int

    @property
    def buyer_is_maker(self) -> bool:
        """Binance's ``m`` flag: true when the aggressor sold."""
        return self.side == "sell"


@attrs.frozen(slots=True)
class MarketUpdate:
    """What changed in one symbol's book in one step.

    The update covers ids ``first_id..last_id`` (several engine updates may be
    folded into one event, as Binance's ``U``/``u`` do).  ``bids`` (best first)
    and ``asks`` (best first) hold the new absolute amount of every level
    that changed; a deleted level has amount ``"0.00000000"``.  ``trades``
    happened in this update, and their fills are already in the levels.  A
    level that changed and changed back within the update is not listed.
    """

    symbol: str
    first_id: int
    last_id: int
    bids: tuple[SimLevel, ...]
    asks: tuple[SimLevel, ...]
    trades: tuple[SimTrade, ...]
    timestamp: int


@attrs.frozen(slots=True)
class SimSymbol:
    """Static facts about one simulated market (what an exchange's market list says)."""

    symbol: str
    id: str
    base: str
    quote: str
    tick_size: str
    amount_step: str


def _grid(step: str, display: int, what: str) -> tuple[int, int]:
    """``(multiplier, decimals)`` with ``step == multiplier * 10**-decimals``."""
    try:
        value = Decimal(step)
    except InvalidOperation:
        raise ValueError(f"{what} {step!r} is not a decimal") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{what} {step!r} must be positive")
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    decimals = max(0, -exponent)
    multiplier = int(value.scaleb(decimals))
    if decimals > display:
        raise ValueError(f"{what} {step!r} has more than {display} decimals")
    return multiplier, decimals


class _Formatter:
    """Integer grid units -> fixed-decimal strings, cached."""

    __slots__ = ("_cache", "_decimals", "_mult", "_pad", "_scale")

    def __init__(self, step: str, display: int, what: str) -> None:
        self._mult, self._decimals = _grid(step, display, what)
        self._scale = 10**self._decimals
        self._pad = "0" * (display - self._decimals)
        self._cache: dict[int, str] = {}

    def __call__(self, units: int) -> str:
        text = self._cache.get(units)
        if text is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            value = units * self._mult
            if self._decimals:
                whole, frac = divmod(value, self._scale)
                text = f"{whole}.{frac:0{self._decimals}d}{self._pad}"
            else:
                text = f"{value}.{self._pad}" if self._pad else str(value)
            self._cache[units] = text
        return text

    def units(self, text: str) -> int:
        """The grid units of a decimal string on this grid."""
        value = Decimal(text).scaleb(self._decimals)
        units, rest = divmod(int(value), self._mult)
        if rest or value != int(value):
            raise ValueError(f"{text!r} is not on the grid")
        return units


class _Book:
    """One symbol's true book: ``tick -> units`` per side plus sorted tick lists."""

    __slots__ = (
        "ask_ticks",
        "asks",
        "bid_ticks",
        "bids",
        "history",
        "info",
        "last_id",
        "trade_id",
    )

    def __init__(self, info: SimSymbol, last_id: int, trade_id: int, history: int) -> None:
        self.info = info
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_ticks: list[int] = []  # ascending: best bid last
        self.ask_ticks: list[int] = []  # ascending: best ask first
        self.last_id = last_id
        self.trade_id = trade_id
        #: (first_id, last_id, undo) per update; undo = flat (is_bid, tick, old units)*
        self.history: deque[tuple[int, int, tuple[int, ...]]] = deque(maxlen=history)


class SimulatedMarket:
    """Seeded random-walk order books and trades for one or more symbols.

    :meth:`step` changes one or more symbols and returns what changed;
    :meth:`book` is the true book now and :meth:`book_at` the true book at a
    recent update id (the last ``history`` updates per symbol are kept as an
    undo log).  Every side keeps about ``levels`` levels, and the book is
    never crossed (best bid < best ask).

    ``clock`` returns seconds (``reactor.seconds`` or a
    :class:`~twisted.internet.task.Clock`); without one a virtual clock
    starts at 2026-01-01 and advances ``virtual_step_ms`` per step, so output
    is fully determined by ``seed``.
    """

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC/USDT",),
        *,
        seed: int = 0,
        levels: int = 50,
        clock: Callable[[], float] | None = None,
        tick_size: str = "0.01",
        amount_step: str = "0.00001",
        decimals: int = 8,
        start_prices: Mapping[str, str] | None = None,
        max_amount: str = "5",
        changes_per_update: int = 4,
        trade_probability: float = 0.25,
        ids_per_update: int = 3,
        symbols_per_step: int = 1,
        history: int = 10_000,
        virtual_step_ms: int = 1,
    ) -> None:
        if isinstance(symbols, str):
            symbols = (symbols,)
        if not symbols:
            raise ValueError("SimulatedMarket needs at least one symbol")
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols")
        if levels < 2:
            raise ValueError("levels must be at least 2")
        if changes_per_update < 1 or ids_per_update < 1 or symbols_per_step < 1:
            raise ValueError("changes_per_update, ids_per_update, symbols_per_step must be >= 1")
        if history < 1:
            raise ValueError("history must be at least 1")
        self._rng = random.Random(seed)
        self.levels = levels
        self.changes_per_update = changes_per_update
        self.trade_probability = trade_probability
        self.ids_per_update = ids_per_update
        self.symbols_per_step = symbols_per_step
        self._clock = clock
        self._virtual_ms = VIRTUAL_EPOCH_MS
        self._virtual_step = virtual_step_ms
        self._price = _Formatter(tick_size, decimals, "tick_size")
        self._amount = _Formatter(amount_step, decimals, "amount_step")
        self.zero_amount: str = self._amount(0)
        self._max_units = max(2, self._amount.units(max_amount))
        self.symbols: tuple[str, ...] = tuple(symbols)
        self._books: dict[str, _Book] = {}
        self._order: list[_Book] = []
        start_prices = start_prices or {}
        rng = self._rng
        for symbol in self.symbols:
            base, slash, quote = symbol.partition("/")
            if not slash or not base or not quote or "/" in quote:
                raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE")
            info = SimSymbol(symbol, base + quote, base, quote, tick_size, amount_step)
            book = _Book(
                info,
                last_id=rng.randrange(1_000_000, 10_000_000_000),
                trade_id=rng.randrange(1_000, 100_000_000),
                history=history,
            )
            if symbol in start_prices:
                mid = self._price.units(start_prices[symbol])
            else:
                mid = int(rng.uniform(100, 50_000) / float(tick_size))
            self._seed_book(book, max(mid, 4 * levels + 10))
            self._books[symbol] = book
            self._order.append(book)

    # -- public API ----------------------------------------------------------

    def info(self, symbol: str) -> SimSymbol:
        """Static facts (exchange id, tick size, ...) about ``symbol``."""
        return self._book(symbol).info

    def last_update_id(self, symbol: str) -> int:
        """The update id of ``symbol``'s book now."""
        return self._book(symbol).last_id

    def step(self) -> list[MarketUpdate]:
        """Advance the market once: ``symbols_per_step`` symbols change (chosen at random)."""
        ts = self._now()
        order = self._order
        k = self.symbols_per_step
        if k >= len(order):
            chosen: Sequence[_Book] = order
        elif k == 1:
            chosen = (order[int(self._rng.random() * len(order))],)
        else:
            chosen = self._rng.sample(order, k)
        return [self._update(book, ts) for book in chosen]

    def step_symbol(self, symbol: str) -> MarketUpdate:
        """Advance only ``symbol`` once."""
        return self._update(self._book(symbol), self._now())

    def run(self, steps: int) -> list[MarketUpdate]:
        """:meth:`step` ``steps`` times; all updates in order."""
        out: list[MarketUpdate] = []
        for _ in range(steps):
            out.extend(self.step())
        return out

    def book(
        self, symbol: str, limit: int | None = None
    ) -> tuple[list[SimLevel], list[SimLevel], int]:
        """The true book now: ``(bids, asks, update_id)``, best first, at most ``limit`` a side."""
        book = self._book(symbol)
        bids, asks = self._levels(book.bids, book.asks, limit)
        return bids, asks, book.last_id

    def book_at(
        self, symbol: str, update_id: int, limit: int | None = None
    ) -> tuple[list[SimLevel], list[SimLevel]]:
        """The true book as of ``update_id``: ``(bids, asks)``, best first.

        ``update_id`` may be any id from the state before the oldest kept
        update up to now; an id inside an update's ``first_id..last_id - 1``
        range gives the book before that update.  Older or future ids raise
        :class:`LookupError`.
        """
        book = self._book(symbol)
        if update_id > book.last_id:
            raise LookupError(f"{symbol}: update id {update_id} is in the future ({book.last_id})")
        bids = dict(book.bids)
        asks = dict(book.asks)
        history = book.history
        oldest = history[0][0] - 1 if history else book.last_id
        if update_id < oldest:
            raise LookupError(
                f"{symbol}: update id {update_id} is older than the kept history (from {oldest})"
            )
        for _first, last, undo in reversed(history):
            if last <= update_id:
                break
            for i in range(len(undo) - 3, -1, -3):
                side = bids if undo[i] else asks
                tick = undo[i + 1]
                old = undo[i + 2]
                if old:
                    side[tick] = old
                else:
                    side.pop(tick, None)
        return self._levels(bids, asks, limit)

    # -- internals -------------------------------------------------------------

    def _book(self, symbol: str) -> _Book:
        try:
            return self._books[symbol]
        except KeyError:
            raise KeyError(
                f"symbol {symbol!r} is not simulated ({', '.join(self.symbols)})"
            ) from None

    def _now(self) -> int:
        if self._clock is not None:
            return int(self._clock() * 1000)
        self._virtual_ms += self._virtual_step
        return self._virtual_ms

    def _levels(
        self, bids: Mapping[int, int], asks: Mapping[int, int], limit: int | None
    ) -> tuple[list[SimLevel], list[SimLevel]]:
        price = self._price
        amount = self._amount
        bid_ticks = sorted(bids, reverse=True)[:limit]
        ask_ticks = sorted(asks)[:limit]
        return (
            [(price(t), amount(bids[t])) for t in bid_ticks],
            [(price(t), amount(asks[t])) for t in ask_ticks],
        )

    def _seed_book(self, book: _Book, mid: int) -> None:
        rng = self._rng
        best_bid = mid
        best_ask = mid + rng.randint(1, 3)
        tick = best_bid
        for _ in range(self.levels):
            book.bids[tick] = rng.randint(1, self._max_units)
            tick -= rng.randint(1, 3)
        tick = best_ask
        for _ in range(self.levels):
            book.asks[tick] = rng.randint(1, self._max_units)
            tick += rng.randint(1, 3)
        book.bid_ticks = sorted(book.bids)
        book.ask_ticks = sorted(book.asks)

    def _update(self, book: _Book, ts: int) -> MarketUpdate:
        rng = self._rng
        random_ = rng.random
        bids = book.bids
        asks = book.asks
        bid_ticks = book.bid_ticks
        ask_ticks = book.ask_ticks
        max_units = self._max_units
        levels = self.levels
        undo: list[int] = []
        bid_changes: dict[int, int] = {}
        ask_changes: dict[int, int] = {}
        bid_before: dict[int, int] = {}
        ask_before: dict[int, int] = {}

        def put(is_bid: bool, tick: int, units: int) -> None:
            side = bids if is_bid else asks
            ticks = bid_ticks if is_bid else ask_ticks
            old = side.get(tick, 0)
            undo.append(1 if is_bid else 0)
            undo.append(tick)
            undo.append(old)
            if units:
                side[tick] = units
                if not old:
                    bisect.insort(ticks, tick)
            else:
                del side[tick]
                del ticks[bisect.bisect_left(ticks, tick)]
            changes = bid_changes if is_bid else ask_changes
            if tick not in changes:
                (bid_before if is_bid else ask_before)[tick] = old
            changes[tick] = units

        for _ in range(1 + int(random_() * self.changes_per_update)):
            is_bid = random_() < 0.5
            ticks = bid_ticks if is_bid else ask_ticks
            n = len(ticks)
            r = random_()
            if r < 0.5:
                # amend an existing level, mostly near the top of the book
                depth = int(random_() * random_() * n)
                tick = ticks[n - 1 - depth] if is_bid else ticks[depth]
                put(is_bid, tick, 1 + int(random_() * max_units))
            elif r < 0.7:
                # cancel a level (never the last one on a side)
                if n > 1:
                    depth = int(random_() * n)
                    tick = ticks[n - 1 - depth] if is_bid else ticks[depth]
                    put(is_bid, tick, 0)
            else:
                # new level: inside the spread when there is room, else behind the best
                best_bid = bid_ticks[-1]
                best_ask = ask_ticks[0]
                if best_ask - best_bid > 1 and random_() < 0.5:
                    tick = best_bid + 1 + int(random_() * (best_ask - best_bid - 1))
                elif is_bid:
                    tick = best_bid - 1 - int(random_() * 2 * levels)
                else:
                    tick = best_ask + 1 + int(random_() * 2 * levels)
                if tick > 0:
                    put(is_bid, tick, 1 + int(random_() * max_units))

        trades: tuple[SimTrade, ...] = ()
        if random_() < self.trade_probability:
            trades = self._trade(book, put, ts)

        # keep each side near `levels` deep
        while len(bid_ticks) < levels:
            tick = bid_ticks[0] - 1 - int(random_() * 3)
            if tick <= 0:
                break
            put(True, tick, 1 + int(random_() * max_units))
        while len(ask_ticks) < levels:
            put(False, ask_ticks[-1] + 1 + int(random_() * 3), 1 + int(random_() * max_units))
        while len(bid_ticks) > levels + levels // 2:
            put(True, bid_ticks[0], 0)
        while len(ask_ticks) > levels + levels // 2:
            put(False, ask_ticks[-1], 0)

        first = book.last_id + 1
        last = first + int(random_() * self.ids_per_update)
        book.last_id = last
        book.history.append((first, last, tuple(undo)))
        price = self._price
        amount = self._amount
        # a level changed and changed back within the update is not reported
        bid_ticks_changed = [t for t, u in bid_changes.items() if u != bid_before[t]]
        ask_ticks_changed = [t for t, u in ask_changes.items() if u != ask_before[t]]
        bid_ticks_changed.sort(reverse=True)
        ask_ticks_changed.sort()
        return MarketUpdate(
            book.info.symbol,
            first,
            last,
            tuple((price(t), amount(bid_changes[t])) for t in bid_ticks_changed),
            tuple((price(t), amount(ask_changes[t])) for t in ask_ticks_changed),
            trades,
            ts,
        )

    def _trade(
        self, book: _Book, put: Callable[[bool, int, int], None], ts: int
    ) -> tuple[SimTrade, ...]:
        """A taker order against the best levels of one side."""
        random_ = self._rng.random
        buy = random_() < 0.5  # the aggressor buys: it takes asks
        ticks = book.ask_ticks if buy else book.bid_ticks
        side = book.asks if buy else book.bids
        # sometimes sweep more than one level, never the whole side
        sweep = 1 + (random_() < 0.2) + (random_() < 0.05)
        sweep = min(sweep, len(ticks) - 1)
        trades: list[SimTrade] = []
        for i in range(sweep):
            tick = ticks[0] if buy else ticks[-1]
            available = side[tick]
            last_level = i == sweep - 1
            take = 1 + int(random_() * available) if last_level else available
            take = min(take, available)
            put(not buy, tick, available - take)
            book.trade_id += 1
            trades.append(
                SimTrade(
                    book.trade_id,
                    self._price(tick),
                    self._amount(take),
                    "buy" if buy else "sell",
                    ts,
                )
            )
        return tuple(trades)
