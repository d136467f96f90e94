"""Regression: a book level the book cannot take (not a number, not a pair) forces a resync.

Before, the Binance client let the book's ``ValueError`` escape to the
transport: the book stayed stale with no snapshot asked for, and a level of
the wrong *type* (a JSON number) left a half-applied book that was not even
marked stale.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

import txexchange
from helpers import sleep, wait_for
from txexchange.codec import dumps
from txexchange.delivery import BookResyncing
from txexchange.testing.binance import FakeBinance
from txexchange.transport import TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)


@pytest.mark.parametrize(
    "bad_level",
    [["not-a-price", "1"], [101.5, "1"], ["101.5"], "12", ["101.5", None]],
    ids=["text", "number", "short", "string", "null"],
)
@pytest_twisted.ensureDeferred
async def test_bad_level_in_a_delta_resyncs_to_the_true_book(bad_level):
    fake = FakeBinance(["BTC/USDT"], reactor=reactor, seed=11)
    await fake.start()
    client = txexchange.exchange("binance", reactor=reactor, urls=fake.urls, transport=FAST)
    try:
        fake.step(3)
        book = await client.fetch_order_book("BTC/USDT", limit=None)
        status = []
        client.subscribe("status", None, status.append)
        (session,) = fake.server.sessions
        (topic,) = [t for t in session.subscriptions if "@depth" in t]
        nonce = book.nonce
        good = [book.bids[0][0], "7.77"]  # applied before the bad level is reached
        data = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": nonce + 1, "u": nonce + 1,
                "b": [good, bad_level], "a": []}  # fmt: skip
        session.send(dumps({"stream": topic, "data": data}))
        await wait_for(lambda: any(isinstance(e, BookResyncing) for e in status))
        assert client.stats.malformed >= 1
        for _ in range(20):
            fake.step(1)
            await sleep(0.01)
        want_nonce = fake.market.last_update_id("BTC/USDT")
        live = client.books["BTC/USDT"]
        await wait_for(lambda: live.synced and live.nonce == want_nonce, what="book resynced")
        shown = await client.fetch_order_book("BTC/USDT", limit=None)
        bids, asks, _ = fake.true_book("BTC/USDT", nonce=shown.nonce)
        assert (list(shown.bids), list(shown.asks)) == (
            [tuple(x) for x in bids],
            [tuple(x) for x in asks],
        )
    finally:
        await client.close()
        await fake.stop()
