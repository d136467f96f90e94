"""The per-message hot path without sockets: decode -> adapter -> book -> observers.

Feeds pre-encoded Binance combined-stream depth diffs (from the seeded
simulated market, as the fake Binance would send them) through exactly what a
received frame goes through in the client — ``Link.frame`` (count, JSON
decode), the connection's delivery, ``BinanceClient._on_message`` (parse,
book-sync verdict, book update, observer publish) — and reports µs per
message and messages per second, with and without an observer.

Run from the repository root::

    .venv/bin/python bench/bench_hot_path.py [--messages 200000] [--symbols 10]

Profile it with ``python -m cProfile -s cumtime bench/bench_hot_path.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.testing import MemoryReactorClock

import txexchange
from txexchange.adapters import binance as adapter
from txexchange.codec import dumps
from txexchange.events import BookSnapshot
from txexchange.markets import Market
from txexchange.testing.market import SimulatedMarket


def frames(market: SimulatedMarket, index: Any, n: int) -> list[bytes]:
    out = []
    while len(out) < n:
        for u in market.step():
            market_id = index.id_of(u.symbol)
            event = {
                "e": "depthUpdate", "E": u.timestamp, "s": market_id,
                "U": u.first_id, "u": u.last_id,
                "b": [list(level) for level in u.bids], "a": [list(level) for level in u.asks],
            }  # fmt: skip
            out.append(dumps({"stream": adapter.depth_topic(market_id), "data": event}))
    return out[:n]


def run(n: int, symbols: int, observe: bool) -> tuple[float, int]:
    names = [f"S{i:03d}/USDT" for i in range(symbols)]
    market = SimulatedMarket(names, seed=1, levels=100)
    markets = [Market(symbol=s, id=s.replace("/", ""), base=s[:4], quote="USDT") for s in names]
    clock = MemoryReactorClock()
    client = txexchange.exchange(
        "binance", reactor=clock, urls={"ws": "ws://127.0.0.1:9", "rest": "http://127.0.0.1:9"},
        markets=markets,
    )
    client.load_markets()
    index = client._index
    seen = [0]
    for s in names:
        client._ensure_open(("book", s))
        if observe:
            client.subscribe("book", s, lambda ev: seen.__setitem__(0, seen[0] + 1))
    conn = client.pool.connections[0]
    # sync every book from the market's true state (what the REST snapshot would give)
    for s in names:
        bids, asks, uid = market.book(s)
        entry = client._book_entries[s]
        entry.sync.on_snapshot(BookSnapshot(s, bids, asks, uid))
        entry.book.apply_snapshot(BookSnapshot(s, bids, asks, uid))
        client.hub.set_ready(("book", s))
    data = frames(market, index, n)
    link = conn._active
    link.is_open = True
    frame = link.frame
    cpu = time.process_time()
    for raw in data:
        frame(raw, False)
    elapsed = time.process_time() - cpu  # CPU time: steadier than wall on a shared machine
    for s in names:
        bids, asks, uid = market.book(s)
        book = client.books[s].snapshot()
        assert book.nonce == uid and list(book.bids) == [tuple(b) for b in bids], s
    return elapsed, seen[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--symbols", type=int, default=10)
    args = p.parse_args()
    print(f"{args.messages} depth diffs over {args.symbols} symbols, 100-level books")
    print("  (CPU time of this process)")
    for observe in (False, True):
        elapsed, seen = run(args.messages, args.symbols, observe)
        label = "with an observer" if observe else "no observer     "
        print(f"  {label}: {elapsed * 1e6 / args.messages:6.2f} µs/message, "
              f"{args.messages / elapsed:9.0f} messages/s (observer calls: {seen})")


if __name__ == "__main__":
    main()
