"""Balances, orders and fills of a Binance account, live: pull, push and trading.

Runs offline against the built-in fake Binance, with a test key it accepts
(the fake checks every signature and keeps its own ledger).  With real keys,
drop the fake and pass ``credentials=Credentials.from_env("BINANCE")`` (reads
BINANCE_API_KEY and BINANCE_SECRET) or ``Credentials.from_file("keys.toml",
section="binance")``; never write secrets into code.

    python examples/binance_private.py
"""

from __future__ import annotations

from twisted.internet import defer, task

import txexchange
from txexchange import Credentials
from txexchange.testing.binance import FakeBinance

KEY = "example-key-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
SECRET = "example-secret-only-the-fake-knows-0123456789abcdefghijklmnopq"


async def main(reactor) -> None:
    fake = FakeBinance(["BTC/USDT"], reactor=reactor, api_keys={KEY: SECRET})
    await fake.start()
    fake.ledger.fund(KEY, "USDT", "10000")
    creds = Credentials.from_env("EXAMPLE", {"EXAMPLE_API_KEY": KEY, "EXAMPLE_SECRET": SECRET})
    client = txexchange.exchange("binance", reactor=reactor, urls=fake.urls, credentials=creds)
    try:
        balance = await client.fetch_balance()  # REST once; the user data stream keeps it
        print("USDT free:", balance["USDT"]["free"])

        book = await client.fetch_order_book("BTC/USDT", 1)
        price = str(book.bids[0][0])
        order = await client.create_order(
            "BTC/USDT", "limit", "buy", "0.01", price, {"clientOrderId": "example-1"}
        )
        print("placed:", order["id"], order["status"], order["clientOrderId"])
        print("open orders:", [o["id"] for o in await client.fetch_open_orders("BTC/USDT")])

        fill = client.watch_my_trades("BTC/USDT")  # push: the next fill
        fake.ledger.fill(order["id"])  # the fake exchange fills the order
        (trade,) = await fill
        print("filled:", trade["amount"], "at", trade["price"], "fee", trade["fee"]["cost"])

        while client.private.account.balance("BTC")[0] == "0":
            await task.deferLater(reactor, 0.01, lambda: None)
        balance = await client.fetch_balance()  # answered from live state, no REST call
        print("BTC free:", balance["BTC"]["free"], "USDT used:", balance["USDT"]["used"])
    finally:
        await client.close()
        await fake.stop()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
