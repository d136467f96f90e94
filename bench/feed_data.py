"""Seeded Binance depth data for the peer benchmarks, and the book hash every client reports.

Used by the fake Binance process (``bench/fake_binance_proc.py``), which
sends what this module generates, and by every benchmark client, which hashes
its final book with :func:`book_hash` so the runner can check it against the
server's true book.  Pure Python, no I/O apart from the cache of generated
frames.

Each symbol starts with ``levels`` bids and ``levels`` asks on a 0.01 price
grid (every other tick, so inserts have room).  Each message is one
``depthUpdate`` for one symbol (round robin) with ``changes`` changed levels:
half amount updates, the rest deletes and inserts keeping the book within a
few levels of its starting size, biased towards the top of the book as real
diffs are.  Message ``j`` of a symbol covers update ids ``U = 1001 + 3j`` to
``u = U + 2``; the REST snapshot is at ``lastUpdateId = 1000``.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import tempfile
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path

import orjson

__all__ = [
    "E_OFFSET",
    "E_PLACEHOLDER",
    "FIRST_ID",
    "Market",
    "book_hash",
    "flood_data",
    "market_ids",
]

#: ``lastUpdateId`` of every REST snapshot; the first diff of a symbol starts at FIRST_ID + 1.
FIRST_ID = 1000
#: The ``E`` field is a 16-digit µs timestamp at this offset of every event.
E_PLACEHOLDER = 1_700_000_000_000_000
E_OFFSET = len(b'{"e":"depthUpdate","E":')
_ZERO = "0.00000000"


def market_ids(symbols: int) -> list[str]:
    """Exchange ids of the benchmark markets: ``X000USDT``, ``X001USDT``..."""
    return [f"X{i:03d}USDT" if symbols <= 1000 else f"X{i:04d}USDT" for i in range(symbols)]


def _amount(rng: random.Random) -> str:
    return f"{rng.randrange(1, 500_000_000) / 1e8:.8f}"


class Market:
    """The true state of every symbol's book, stepping through the seeded diff sequence."""

    def __init__(self, symbols: int, levels: int, changes: int, seed: int) -> None:
        self.ids = market_ids(symbols)
        self.levels = levels
        self.changes = changes
        self.rng = random.Random(seed)
        self.index = 0
        #: per symbol and side: ticks sorted best first, and tick -> amount string
        self.ticks: list[tuple[list[int], list[int]]] = []
        self.amounts: list[tuple[dict[int, str], dict[int, str]]] = []
        self.last_u = [FIRST_ID] * symbols
        for s in range(symbols):
            mid = 100_000 + 37_000 * s
            bids = [mid - 1 - 2 * i for i in range(levels)]  # best (highest) first
            asks = [mid + 1 + 2 * i for i in range(levels)]
            self.ticks.append((bids, asks))
            self.amounts.append(
                ({t: _amount(self.rng) for t in bids}, {t: _amount(self.rng) for t in asks})
            )

    def snapshot(self, s: int, limit: int) -> dict[str, object]:
        """The REST ``/api/v3/depth`` answer for symbol ``s`` (best ``limit`` levels a side)."""
        bids, asks = self.ticks[s]
        bid_amounts, ask_amounts = self.amounts[s]
        return {
            "lastUpdateId": self.last_u[s],
            "bids": [[_price(t), bid_amounts[t]] for t in bids[:limit]],
            "asks": [[_price(t), ask_amounts[t]] for t in asks[:limit]],
        }

    def step(self) -> tuple[int, bytes]:
        """The next diff: ``(symbol index, event JSON)`` with ``E`` = :data:`E_PLACEHOLDER`."""
        s = self.index % len(self.ids)
        self.index += 1
        rng = self.rng
        changed: tuple[dict[int, str], dict[int, str]] = ({}, {})
        levels = self.levels
        for _ in range(self.changes):
            side = 0 if rng.random() < 0.5 else 1
            ticks = self.ticks[s][side]
            amounts = self.amounts[s][side]
            size = len(ticks)
            pos = min(int(rng.expovariate(1 / 8)), size - 1)
            roll = rng.random()
            if roll < 0.5 or (roll < 0.75 and size <= levels - 4) or (
                roll >= 0.75 and size >= levels + 4
            ):
                tick = ticks[pos]
                amount = _amount(rng)
                amounts[tick] = amount
                changed[side][tick] = amount
            elif roll < 0.75:
                tick = ticks.pop(pos)
                del amounts[tick]
                changed[side][tick] = _ZERO
            else:
                # insert just behind level ``pos`` (one tick worse), unless taken
                tick = ticks[pos] - 1 if side == 0 else ticks[pos] + 1
                if tick in amounts:
                    tick = ticks[pos]
                else:
                    ticks.insert(pos + 1, tick)
                amount = _amount(rng)
                amounts[tick] = amount
                changed[side][tick] = amount
        first = self.last_u[s] + 1
        last = first + 2
        self.last_u[s] = last
        event = {
            "e": "depthUpdate",
            "E": E_PLACEHOLDER,
            "s": self.ids[s],
            "U": first,
            "u": last,
            "b": [[_price(t), a] for t, a in changed[0].items()],
            "a": [[_price(t), a] for t, a in changed[1].items()],
        }
        return s, orjson.dumps(event)

    def true_books(self) -> Iterator[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]]:
        for s, market_id in enumerate(self.ids):
            bids, asks = self.ticks[s]
            bid_amounts, ask_amounts = self.amounts[s]
            yield (
                market_id,
                [(_price(t), bid_amounts[t]) for t in bids],
                [(_price(t), ask_amounts[t]) for t in asks],
            )

    def final_hash(self) -> str:
        return book_hash(self.true_books())


def _price(tick: int) -> str:
    return f"{tick // 100}.{tick % 100:02d}"


def _norm(text: object) -> str:
    return format(Decimal(str(text)).normalize(), "f")


def book_hash(
    books: Iterable[tuple[str, Iterable[tuple[object, object]], Iterable[tuple[object, object]]]],
) -> str:
    """SHA-256 over every book's levels, prices and amounts normalised as Decimal strings.

    ``books`` yields ``(market id, bids, asks)``; levels may be strings,
    Decimals or floats (ccxt), in any order (they are sorted here), and zero
    amounts are dropped.  Floats are rendered with ``repr``, which round-trips
    the exchange's decimal strings for the prices and amounts used here.
    """
    h = hashlib.sha256()
    for market_id, bids, asks in sorted(books, key=lambda b: b[0]):
        h.update(market_id.encode())
        for side, reverse in ((bids, True), (asks, False)):
            levels = [(Decimal(str(p)), Decimal(str(a))) for p, a in side]
            levels = sorted((p, a) for p, a in levels if a != 0)
            if reverse:
                levels.reverse()
            h.update(b"|")
            for p, a in levels:
                h.update(f"{_norm(p)}:{_norm(a)};".encode())
    return h.hexdigest()


def flood_data(
    symbols: int, levels: int, changes: int, messages: int, seed: int
) -> tuple[list[dict[str, object]], list[int], list[bytes], str]:
    """Snapshots, symbol index and event JSON of every message, and the final book hash.

    Cached on disk under the temp directory (the same parameters always give
    the same data).
    """
    cache = Path(tempfile.gettempdir()) / "txexchange-bench"
    cache.mkdir(exist_ok=True)
    path = cache / f"flood-{symbols}-{levels}-{changes}-{messages}-{seed}.pickle"
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    market = Market(symbols, levels, changes, seed)
    snapshots = [market.snapshot(s, 5000) for s in range(symbols)]
    owners: list[int] = []
    events: list[bytes] = []
    for _ in range(messages):
        s, event = market.step()
        owners.append(s)
        events.append(event)
    result = (snapshots, owners, events, market.final_hash())
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return result
