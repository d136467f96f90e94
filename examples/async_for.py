"""Async iteration: ``async for book in client.stream("book", symbol)`` in a coroutine.

Runs offline against the built-in fake Binance; --live uses Binance itself.

    python examples/async_for.py [--live]
"""

from __future__ import annotations

import sys

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

import txexchange
from txexchange.testing.binance import FakeBinance


async def main(reactor, live: bool) -> None:
    fake = None
    urls = None
    if not live:
        fake = FakeBinance(["BTC/USDT"], reactor=reactor)
        await fake.start()
        fake.run(rate=20)
        urls = fake.urls
    client = txexchange.exchange("binance", reactor=reactor, urls=urls)
    stream = client.stream("book", "BTC/USDT")
    count = 0
    async for book in stream:  # a slow consumer always gets the latest book
        count += 1
        print(f"#{count} nonce={book.nonce} spread {book.best_bid} / {book.best_ask}")
        if count == 20:
            stream.close()
    await client.close()
    if fake is not None:
        await fake.stop()


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(main(reactor, "--live" in sys.argv)))
