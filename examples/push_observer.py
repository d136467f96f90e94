"""Push: an observer called for every book update, plus connection/integrity status.

Runs offline against the built-in fake Binance; --live uses Binance itself.

    python examples/push_observer.py [--live]
"""

from __future__ import annotations

import sys

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

import txexchange
from txexchange.testing.binance import FakeBinance


def on_book(update) -> None:
    book = update.book(limit=1)  # the merged book as of this update
    kind = "snapshot" if update.snapshot else f"{len(update.bids) + len(update.asks)} levels"
    print(f"{update.symbol} #{update.nonce} ({kind}) best {book.best_bid} / {book.best_ask}")


def on_status(event) -> None:
    print("status:", event)


async def main(reactor, live: bool) -> None:
    fake = None
    urls = None
    if not live:
        fake = FakeBinance(["BTC/USDT", "ETH/USDT"], reactor=reactor)
        await fake.start()
        fake.run(rate=10)
        urls = fake.urls
    client = txexchange.exchange("binance", reactor=reactor, urls=urls)
    client.subscribe("status", None, on_status)
    handles = [client.subscribe("book", s, on_book) for s in ("BTC/USDT", "ETH/USDT")]
    await task.deferLater(reactor, 3.0, lambda: None)
    for handle in handles:
        handle.stop()
    await client.close()
    if fake is not None:
        await fake.stop()


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(main(reactor, "--live" in sys.argv)))
