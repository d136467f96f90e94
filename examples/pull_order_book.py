"""Pull: fetch the merged order book with fetch_order_book and addCallback.

Runs offline against the built-in fake Binance (simulated market on
127.0.0.1).  Pass --live to use Binance itself.

    python examples/pull_order_book.py [--live]
"""

from __future__ import annotations

import sys

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

import txexchange
from txexchange.testing.binance import FakeBinance


def show(book):
    print(f"{book.symbol} nonce={book.nonce}")
    for (bp, ba), (ap, aa) in zip(book.bids, book.asks, strict=False):
        print(f"  {ba:>14} @ {bp:<16} | {ap:>16} x {aa}")
    return book


async def main(reactor, live: bool) -> None:
    fake = None
    urls = None
    if not live:
        fake = FakeBinance(["BTC/USDT"], reactor=reactor)
        await fake.start()
        fake.run(rate=20)
        urls = fake.urls
    client = txexchange.exchange("binance", reactor=reactor, urls=urls)
    try:
        d: Deferred = client.fetch_order_book("BTC/USDT", limit=5)
        d.addCallback(show)  # the first call subscribes and fires once the book is synced
        await d
        await task.deferLater(reactor, 1.0, lambda: None)
        again = client.fetch_order_book("BTC/USDT", limit=5)
        print("second call already fired:", again.called)  # later calls fire at once
        show(await again)
    finally:
        await client.close()
        if fake is not None:
            await fake.stop()


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(main(reactor, "--live" in sys.argv)))
