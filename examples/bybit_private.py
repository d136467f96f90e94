"""Bybit private API: balance, a spot order, its fill by push, the balance after it.

Runs offline against the built-in fake Bybit, with a made-up key the fake
knows.  With --live it uses Bybit itself and your keys from the environment
(BYBIT_API_KEY, BYBIT_SECRET) -- and then only reads (no order is placed).

    python examples/bybit_private.py [--live]
"""

from __future__ import annotations

import sys
from decimal import Decimal

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

import txexchange
from txexchange import Credentials
from txexchange.testing.bybit import FakeBybit

DEMO_KEY, DEMO_SECRET = "demo-key", "demo-secret"


async def main(reactor, live: bool) -> None:
    if live:
        client = txexchange.exchange("bybit", reactor=reactor,
                                     credentials=Credentials.from_env("BYBIT"))  # fmt: skip
        try:
            balance = await client.fetch_balance()
            print("balance:", {c: balance[c]["total"] for c in balance["total"]})
            print("open orders:", len(await client.fetch_open_orders()))
        finally:
            await client.close()
        return
    fake = FakeBybit(["BTC/USDT"], reactor=reactor, api_keys={DEMO_KEY: DEMO_SECRET})
    await fake.start()
    fake.ledger.fund(DEMO_KEY, "USDT", "10000")
    client = txexchange.exchange("bybit", reactor=reactor, urls=fake.urls,
                                 api_key=DEMO_KEY, secret=DEMO_SECRET)  # fmt: skip
    try:
        balance = await client.fetch_balance()  # REST once, then the private stream
        print("USDT free before:", balance["USDT"]["free"])
        bids, _, _ = fake.market.book("BTC/USDT", 1)
        price = str(Decimal(bids[0][0]) - 10)
        order = await client.create_order("BTC/USDT", "limit", "buy", "0.01", price)
        print("placed:", order["id"], order["status"], order["clientOrderId"])
        print("open orders:", [o["id"] for o in await client.fetch_open_orders("BTC/USDT")])
        fill = client.watch_my_trades("BTC/USDT")
        fake.ledger.fill(order["id"])  # the fake's market fills the resting order
        (trade,) = await fill
        print("filled by push:", trade["amount"], "@", trade["price"], trade["takerOrMaker"])
        await client.watch_balance()
        balance = await client.fetch_balance()
        print("BTC after:", balance["BTC"]["free"], "USDT free after:", balance["USDT"]["free"])
    finally:
        await client.close()
        await fake.stop()


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(main(reactor, "--live" in sys.argv)))
