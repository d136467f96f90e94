"""Benchmark of L2 order book representations for ``txexchange.state.book``.

Compares the shipped :class:`txexchange.state.OrderBook` (per side, a list of
float sort keys kept sorted with :mod:`bisect` and a parallel list of
``(price, amount)`` tuples, best level last) with the alternatives it was
chosen over, all fed the same
pre-built :class:`~txexchange.events.BookDelta` events (10 changed levels each:
amount updates, deletes with ``"0.00000000"`` and inserts, biased towards the
top of the book, as on a Binance ``@depth@100ms`` stream) on a book of 1000
levels per side.

Run from the repository root::

    .venv/bin/python bench/bench_book.py            # full run (~1 min)
    .venv/bin/python bench/bench_book.py --quick    # smoke run

Columns: µs per delta; µs per delta followed by the top 25 levels of both
sides (what a checksumming adapter does after each delta); µs to build an
immutable top-20 snapshot (as after a change: no cache hit); µs for a full
(1000 + 1000 levels) snapshot; µs to load a 1000-level-per-side snapshot
event; KiB the book's own structures take (the price and amount strings are
shared with the events and not counted).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sortedcontainers import SortedDict

from txexchange.events import BookDelta, BookSnapshot
from txexchange.state.book import OrderBook, is_zero

SYMBOL = "BTC/USDT"
LEVELS = 1000
TICK = 0.01
MID = 30000.0


class Book(Protocol):
    def apply_snapshot(self, snapshot: BookSnapshot) -> None: ...
    def apply_delta(self, delta: BookDelta) -> None: ...
    def top(self, side: str, n: int) -> list[tuple[str, str]]: ...
    def snapshot(self, limit: int | None = None) -> Any: ...


# -- alternatives ---------------------------------------------------------------


class SortedDictBook:
    """sortedcontainers.SortedDict per side, keyed by ``key(price)``."""

    def __init__(self, key: Callable[[str], Any]) -> None:
        self.key = key
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def _load(self, levels: Sequence[Sequence[str]]) -> SortedDict:
        key = self.key
        return SortedDict(
            (key(level[0]), (level[0], level[1])) for level in levels if not is_zero(level[1])
        )

    def apply_snapshot(self, snapshot: BookSnapshot) -> None:
        self.bids = self._load(snapshot.bids)
        self.asks = self._load(snapshot.asks)

    def _apply(self, side: SortedDict, levels: Sequence[Sequence[str]]) -> None:
        key = self.key
        for level in levels:
            price = level[0]
            amount = level[1]
            k = key(price)
            if is_zero(amount):
                side.pop(k, None)
            else:
                side[k] = (price, amount)

    def apply_delta(self, delta: BookDelta) -> None:
        self._apply(self.bids, delta.bids)
        self._apply(self.asks, delta.asks)

    def top(self, side: str, n: int) -> list[tuple[str, str]]:
        if side == "bids":
            values = self.bids.values()
            return values[: -n - 1 : -1]
        return self.asks.values()[:n]

    def snapshot(self, limit: int | None = None) -> Any:
        n = limit if limit is not None else LEVELS * 4
        return (tuple(self.top("bids", n)), tuple(self.top("asks", n)))


class BisectBook:
    """dict key -> level plus a bisect-sorted list of keys, with any key function."""

    def __init__(self, key: Callable[[str], Any]) -> None:
        self.key = key
        self.bids: tuple[dict[Any, tuple[str, str]], list[Any]] = ({}, [])
        self.asks: tuple[dict[Any, tuple[str, str]], list[Any]] = ({}, [])

    def _load(self, levels: Sequence[Sequence[str]]) -> tuple[dict[Any, Any], list[Any]]:
        key = self.key
        table = {key(lv[0]): (lv[0], lv[1]) for lv in levels if not is_zero(lv[1])}
        return table, sorted(table)

    def apply_snapshot(self, snapshot: BookSnapshot) -> None:
        self.bids = self._load(snapshot.bids)
        self.asks = self._load(snapshot.asks)

    def _apply(self, side: tuple[dict[Any, Any], list[Any]], levels: Any) -> None:
        table, keys = side
        key = self.key
        for level in levels:
            price = level[0]
            amount = level[1]
            k = key(price)
            if is_zero(amount):
                if table.pop(k, None) is not None:
                    del keys[bisect_left(keys, k)]
            else:
                if k not in table:
                    insort(keys, k)
                table[k] = (price, amount)

    def apply_delta(self, delta: BookDelta) -> None:
        self._apply(self.bids, delta.bids)
        self._apply(self.asks, delta.asks)

    def top(self, side: str, n: int) -> list[tuple[str, str]]:
        if side == "bids":
            table, keys = self.bids
            return list(map(table.__getitem__, keys[: -n - 1 : -1]))
        table, keys = self.asks
        return list(map(table.__getitem__, keys[:n]))

    def snapshot(self, limit: int | None = None) -> Any:
        n = limit if limit is not None else LEVELS * 4
        return (tuple(self.top("bids", n)), tuple(self.top("asks", n)))


class LazySortBook:
    """dict float(price) -> level; keys sorted again on the first read after a change."""

    def __init__(self) -> None:
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        self.sorted_bids: list[float] | None = None
        self.sorted_asks: list[float] | None = None

    def apply_snapshot(self, snapshot: BookSnapshot) -> None:
        self.bids = {float(lv[0]): (lv[0], lv[1]) for lv in snapshot.bids if not is_zero(lv[1])}
        self.asks = {float(lv[0]): (lv[0], lv[1]) for lv in snapshot.asks if not is_zero(lv[1])}
        self.sorted_bids = self.sorted_asks = None

    def apply_delta(self, delta: BookDelta) -> None:
        for table, levels in ((self.bids, delta.bids), (self.asks, delta.asks)):
            for level in levels:
                price = level[0]
                amount = level[1]
                k = float(price)
                if is_zero(amount):
                    table.pop(k, None)
                else:
                    table[k] = (price, amount)
        self.sorted_bids = self.sorted_asks = None

    def top(self, side: str, n: int) -> list[tuple[str, str]]:
        if side == "bids":
            if self.sorted_bids is None:
                self.sorted_bids = sorted(self.bids, reverse=True)
            return list(map(self.bids.__getitem__, self.sorted_bids[:n]))
        if self.sorted_asks is None:
            self.sorted_asks = sorted(self.asks)
        return list(map(self.asks.__getitem__, self.sorted_asks[:n]))

    def snapshot(self, limit: int | None = None) -> Any:
        n = limit if limit is not None else LEVELS * 4
        return (tuple(self.top("bids", n)), tuple(self.top("asks", n)))


VARIANTS: list[tuple[str, Callable[[], Book]]] = [
    ("OrderBook: sorted key + level lists, float [shipped]", lambda: OrderBook(SYMBOL)),
    ("dict + sorted key list (bisect), float keys", lambda: BisectBook(float)),
    ("dict + sorted key list (bisect), Decimal keys", lambda: BisectBook(Decimal)),
    ("SortedDict, float keys", lambda: SortedDictBook(float)),
    ("SortedDict, Decimal keys", lambda: SortedDictBook(Decimal)),
    ("dict, float keys, sort on read", LazySortBook),
]


# -- data -----------------------------------------------------------------------


def _price(ticks: int) -> str:
    return f"{ticks * TICK:.8f}"


def _amount(rng: random.Random) -> str:
    return f"{rng.uniform(0.0001, 5):.8f}"


def make_data(n_deltas: int, seed: int = 7) -> tuple[BookSnapshot, list[BookDelta]]:
    """A 1000-level-per-side snapshot and ``n_deltas`` deltas of 10 levels each."""
    rng = random.Random(seed)
    mid = round(MID / TICK)
    # levels on 1 tick in 3, leaving room for inserts between them
    bid_ticks = [mid - 1 - 3 * i for i in range(LEVELS)]
    ask_ticks = [mid + 1 + 3 * i for i in range(LEVELS)]
    snapshot = BookSnapshot(
        SYMBOL,
        [[_price(t), _amount(rng)] for t in bid_ticks],
        [[_price(t), _amount(rng)] for t in ask_ticks],
        nonce=1,
        timestamp=1_700_000_000_000,
    )
    sides = {"bids": sorted(bid_ticks, reverse=True), "asks": sorted(ask_ticks)}
    held = {"bids": set(bid_ticks), "asks": set(ask_ticks)}
    deltas = []
    for number in range(n_deltas):
        changes: dict[str, list[list[str]]] = {"bids": [], "asks": []}
        for _ in range(10):
            name = "bids" if rng.random() < 0.5 else "asks"
            ticks, present = sides[name], held[name]
            # top-biased position in the current book
            index = min(int(rng.expovariate(1 / 40)), len(ticks) - 1)
            roll = rng.random()
            size = len(ticks)
            if roll < 0.4 or (roll < 0.7 and size <= LEVELS - 50):
                changes[name].append([_price(ticks[index]), _amount(rng)])
                continue
            if roll < 0.7 or size >= LEVELS + 50:
                tick = ticks.pop(index)
                present.discard(tick)
                changes[name].append([_price(tick), "0.00000000"])
                continue
            step = -1 if name == "bids" else 1
            tick = ticks[index] + step * rng.randint(1, 2)
            if (
                tick in present
                or (name == "bids" and tick >= mid)
                or (name == "asks" and tick <= mid)
            ):
                changes[name].append([_price(ticks[index]), _amount(rng)])
                continue
            present.add(tick)
            ticks.insert(index + 1, tick)
            changes[name].append([_price(tick), _amount(rng)])
        deltas.append(
            BookDelta(
                SYMBOL,
                changes["bids"],
                changes["asks"],
                nonce=2 + number,
                timestamp=1_700_000_000_000 + number,
            )
        )
    return snapshot, deltas


# -- measuring ------------------------------------------------------------------


def _best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def _fresh(factory: Callable[[], Book], snapshot: BookSnapshot) -> Book:
    book = factory()
    book.apply_snapshot(snapshot)
    return book


def measure(
    factory: Callable[[], Book], snapshot: BookSnapshot, deltas: list[BookDelta], repeat: int
) -> dict[str, float]:
    n = len(deltas)

    def deltas_only() -> float:
        book = _fresh(factory, snapshot)
        apply = book.apply_delta
        start = time.perf_counter()
        for delta in deltas:
            apply(delta)
        return (time.perf_counter() - start) / n * 1e6

    def deltas_checksum() -> float:
        book = _fresh(factory, snapshot)
        apply = book.apply_delta
        top = book.top
        start = time.perf_counter()
        for delta in deltas:
            apply(delta)
            top("bids", 25)
            top("asks", 25)
        return (time.perf_counter() - start) / n * 1e6

    def snapshot_top20() -> float:
        # After a change the shipped book has no cached snapshot: clear the
        # cache each round so every call builds one.
        book = _fresh(factory, snapshot)
        cache = getattr(book, "_cache", None)
        take = book.snapshot
        rounds = 20_000
        start = time.perf_counter()
        for _ in range(rounds):
            if cache is not None:
                cache.clear()
            take(20)
        return (time.perf_counter() - start) / rounds * 1e6

    def full_snapshot() -> float:
        book = _fresh(factory, snapshot)
        cache = getattr(book, "_cache", None)
        take = book.snapshot
        rounds = 200
        start = time.perf_counter()
        for _ in range(rounds):
            if cache is not None:
                cache.clear()
            take()
        return (time.perf_counter() - start) / rounds * 1e6

    def load() -> float:
        book = factory()
        rounds = 20
        start = time.perf_counter()
        for _ in range(rounds):
            book.apply_snapshot(snapshot)
        return (time.perf_counter() - start) / rounds * 1e6

    return {
        "delta": _best(repeat, deltas_only),
        "delta+top25": _best(repeat, deltas_checksum),
        "snap20": _best(repeat, snapshot_top20),
        "snap_full": _best(repeat, full_snapshot),
        "load": _best(repeat, load),
        "kib": memory_kib(factory, snapshot),
    }


def memory_kib(factory: Callable[[], Book], snapshot: BookSnapshot) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book = _fresh(factory, snapshot)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del book
    return (after - before) / 1024


def cached_snapshot_us(snapshot: BookSnapshot) -> float:
    book = OrderBook(SYMBOL)
    book.apply_snapshot(snapshot)
    book.snapshot(20)
    rounds = 100_000
    start = time.perf_counter()
    for _ in range(rounds):
        book.snapshot(20)
    return (time.perf_counter() - start) / rounds * 1e6


def check_agreement(snapshot: BookSnapshot, deltas: list[BookDelta]) -> None:
    """Every variant must end with the same book (the benchmark compares like with like)."""
    results = []
    for _, factory in VARIANTS:
        book = _fresh(factory, snapshot)
        for delta in deltas:
            book.apply_delta(delta)
        results.append((book.top("bids", 10**6), book.top("asks", 10**6)))
    for name, result in zip((name for name, _ in VARIANTS), results, strict=True):
        if result != results[0]:
            raise SystemExit(f"variant {name!r} disagrees with the shipped book")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deltas", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2000 deltas, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.deltas, args.repeat = 2000, 2
    snapshot, deltas = make_data(args.deltas)
    check_agreement(snapshot, deltas[:2000])
    print(
        f"Python {sys.version.split()[0]}; {LEVELS} levels per side; "
        f"{len(deltas)} deltas x 10 levels; best of {args.repeat}"
    )
    header = (
        f"{'representation':<54}{'delta':>8}{'+top25':>8}{'snap20':>8}"
        f"{'full':>8}{'load':>9}{'KiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, factory in VARIANTS:
        r = measure(factory, snapshot, deltas, args.repeat)
        print(
            f"{name:<54}{r['delta']:>8.2f}{r['delta+top25']:>8.2f}{r['snap20']:>8.2f}"
            f"{r['snap_full']:>8.1f}{r['load']:>9.1f}{r['kib']:>8.0f}"
        )
    print("(µs per operation except KiB; 'full' = snapshot of all 2000 levels)")
    print(f"OrderBook.snapshot(20) cache hit: {cached_snapshot_us(snapshot):.3f} µs")


if __name__ == "__main__":
    main()
