"""How fast the simulated market and the fake Binance produce data.

The fakes must never be the bottleneck of a test or a benchmark.  Prints
updates per second of :class:`~txexchange.testing.market.SimulatedMarket` for
100 symbols, and the time :class:`~txexchange.testing.binance.FakeBinance`
takes to encode and send 3000 steps of 100 symbols' depth and trade streams
to three subscribed sessions.

    .venv/bin/python bench/bench_fakes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task

from txexchange.adapters.binance import BinanceWireRules
from txexchange.testing.binance import FakeBinance
from txexchange.testing.market import SimulatedMarket
from txexchange.transport import Connection


def market_rate() -> float:
    market = SimulatedMarket([f"C{i}/USDT" for i in range(100)], seed=9)
    market.run(2000)  # warm the formatting caches
    start = time.perf_counter()
    count = len(market.run(20_000))
    return count / (time.perf_counter() - start)


async def fake_binance(reactor) -> float:
    symbols = [f"C{i}/USDT" for i in range(100)]
    fake = await FakeBinance(symbols, reactor=reactor, seed=2).start()
    streams = [f"c{i}usdt@depth@100ms" for i in range(100)]
    streams += [f"c{i}usdt@trade" for i in range(100)]
    conns = []
    for _ in range(3):
        conn = Connection(fake.urls["ws"] + "/stream", BinanceWireRules(),
                          on_message=lambda m: None, reactor=reactor).start()
        await conn.subscribe(streams)
        conns.append(conn)
    start = time.perf_counter()
    fake.step(3000)
    elapsed = time.perf_counter() - start
    for conn in conns:
        await conn.close()
    await fake.stop()
    return elapsed


def main() -> None:
    print(f"SimulatedMarket, 100 symbols: {market_rate():,.0f} updates/s")

    async def run(reactor):
        elapsed = await fake_binance(reactor)
        print(f"FakeBinance, 3000 steps x 100 symbols to 3 sessions: {elapsed:.2f} s")

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
