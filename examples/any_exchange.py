"""The same program against any exchange: only the exchange's name changes.

Runs offline against the built-in fake of the exchange (simulated market on
127.0.0.1); --live connects to the exchange itself.

    python examples/any_exchange.py binance|okx|bybit|kraken|coinbase|gemini [--live]
"""

from __future__ import annotations

import sys

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

import txexchange
from txexchange.testing import DEMO_SYMBOLS, fake_exchange


async def main(reactor, name: str, live: bool) -> None:
    symbol = DEMO_SYMBOLS[name][0]
    fake = None
    urls = None
    if not live:
        fake = fake_exchange(name, reactor=reactor)
        await fake.start()
        fake.run(rate=20)
        urls = fake.urls
    client = txexchange.exchange(name, reactor=reactor, urls=urls)
    try:
        book = await client.fetch_order_book(symbol, limit=3)  # pull
        print(f"{name} {symbol} book: bid {book.bids[0]} ask {book.asks[0]}")
        book = await client.watch_order_book(symbol, limit=3)  # push: the next update
        print(f"{name} {symbol} next book: bid {book.bids[0]} ask {book.asks[0]}")
        trades = await client.fetch_trades(symbol, limit=3)
        print(f"{name} {symbol} last trades: {[(t['price'], t['amount']) for t in trades]}")
        ticker = await client.fetch_ticker(symbol)
        print(f"{name} {symbol} ticker: last {ticker['last']}")
    finally:
        await client.close()
        if fake is not None:
            await fake.stop()


if __name__ == "__main__":
    exchange_name = sys.argv[1] if len(sys.argv) > 1 else "binance"
    task.react(
        lambda reactor: ensureDeferred(main(reactor, exchange_name, "--live" in sys.argv))
    )
