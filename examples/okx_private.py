"""The OKX private API: balance, an order, its fill by push, cancel-all.

Runs offline against the built-in fake OKX (127.0.0.1), which checks the
signatures with a test key, secret and passphrase.  With ``--live`` it reads
``OKX_API_KEY``, ``OKX_SECRET`` and ``OKX_PASSWORD`` from the environment and
only reads the account (no order is placed on a real account by this script).

    python examples/okx_private.py [--live]
"""

from __future__ import annotations

import sys
from decimal import Decimal

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

import txexchange
from txexchange import Credentials
from txexchange.testing.okx import FakeOkx

KEY, SECRET, PASSPHRASE = "example-key", "example-secret", "example-passphrase"


def show_balance(balance: dict) -> None:
    for currency in ("BTC", "USDT"):
        if currency in balance:
            row = balance[currency]
            print(f"  {currency}: free {row['free']} used {row['used']} total {row['total']}")


async def main(reactor, live: bool) -> None:
    if live:
        client = txexchange.exchange(
            "okx", reactor=reactor, credentials=Credentials.from_env("okx")
        )
        try:
            print("balance:")
            show_balance(await client.fetch_balance())
            print("open orders:", len(await client.fetch_open_orders()))
        finally:
            await client.close()
        return

    fake = FakeOkx(["BTC/USDT"], reactor=reactor, api_keys={KEY: (SECRET, PASSPHRASE)})
    await fake.start()
    fake.ledger.fund(KEY, "USDT", "50000")
    client = txexchange.exchange(
        "okx", reactor=reactor, urls=fake.urls, api_key=KEY, secret=SECRET, password=PASSPHRASE
    )
    try:
        # loaded once over signed REST; the private WebSocket (login + account/orders)
        # keeps it current from then on
        print("balance:")
        show_balance(await client.fetch_balance())

        bids, _, _ = fake.market.book("BTC/USDT", 1)
        price = str(Decimal(bids[0][0]) - 100)
        order = await client.create_order("BTC/USDT", "limit", "buy", "0.25", price)
        print(f"placed {order['id']} ({order['clientOrderId']}): {order['status']}")
        print("open orders:", [o["id"] for o in await client.fetch_open_orders("BTC/USDT")])

        fill = client.watch_my_trades("BTC/USDT")
        fake.ledger.fill(order["id"])  # the fake exchange fills it
        (trade,) = await fill
        print(f"filled by push: {trade['amount']} @ {trade['price']}, fee {trade['fee']}")
        await task.deferLater(reactor, 0.1, lambda: None)
        print("balance after the fill (no REST call):")
        show_balance(await client.fetch_balance())

        for i in range(3):
            await client.create_order("BTC/USDT", "limit", "buy", "0.1", str(Decimal(price) - i))
        canceled = await client.cancel_all_orders("BTC/USDT")
        print(f"cancel_all_orders: {len(canceled)} canceled")
    finally:
        await client.close()
        await fake.stop()


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(main(reactor, "--live" in sys.argv)))
