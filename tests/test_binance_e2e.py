"""Binance spot end to end: the real client over loopback against the fake Binance."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

import txexchange
from helpers import client_delayed_calls, sleep, wait_for
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate
from txexchange.errors import BadRequest, BadSymbol
from txexchange.testing.binance import FakeBinance
from txexchange.transport import Disconnected, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)
SYMBOLS_100 = [f"C{i:03d}/USDT" for i in range(99)] + ["BTC/USDT"]


def truth(fake, symbol, nonce, limit=None):
    bids, asks, uid = fake.true_book(symbol, nonce=nonce, limit=limit)
    assert uid == nonce
    return [tuple(level) for level in bids], [tuple(level) for level in asks]


def assert_book_true(fake, book):
    bids, asks = truth(fake, book.symbol, book.nonce, limit=None)
    assert list(book.bids) == bids, f"{book.symbol} bids differ at {book.nonce}"
    assert list(book.asks) == asks, f"{book.symbol} asks differ at {book.nonce}"


async def start_fake(symbols=("BTC/USDT", "ETH/USDT"), **kw):
    fake = FakeBinance(symbols, reactor=reactor, **kw)
    await fake.start()
    return fake


def client_for(fake, **kw):
    kw.setdefault("transport", FAST)
    return txexchange.exchange("binance", reactor=reactor, urls=fake.urls, **kw)


async def drive(fake, steps, batch=20, pause=0.002):
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


@pytest_twisted.async_yield_fixture
async def fake():
    f = await start_fake()
    yield f
    await f.stop()


@pytest_twisted.async_yield_fixture
async def client(fake):
    c = client_for(fake)
    yield c
    await c.close()


@pytest_twisted.ensureDeferred
async def test_hundred_books_through_gap_and_drop_equal_the_true_books():
    fake = await start_fake(SYMBOLS_100, seed=3)
    # 100 snapshots of weight 5 per (re)sync: a full resync fits the weight budget
    client = client_for(fake, snapshot_limit=100)
    try:
        fake.step(5)
        books = await client.fetch_order_books(SYMBOLS_100, limit=None)
        assert set(books) == set(SYMBOLS_100)
        for book in books.values():
            assert_book_true(fake, book)
        status = []
        client.subscribe("status", None, status.append)
        await drive(fake, 1500)
        fake.skip_next("BTC/USDT")  # sequence gap on one book
        fake.skip_next("C007/USDT", 3)
        await drive(fake, 1500)
        fake.server.sessions[0].drop()  # and a dropped connection midway
        await drive(fake, 1500)
        # every book handed out equals the truth at its nonce, level for level
        books = await client.fetch_order_books(SYMBOLS_100)
        for book in books.values():
            assert_book_true(fake, book)
        resyncing = {e.symbol for e in status if isinstance(e, BookResyncing)}
        assert {"BTC/USDT", "C007/USDT"} <= resyncing
        assert any(isinstance(e, Disconnected) for e in status)
        assert any(isinstance(e, BookSynced) and e.symbol == "BTC/USDT" for e in status)
        assert client.stats.book_resyncs >= 2 + 100
        # and the books have caught up with the market
        await wait_for(
            lambda: all(
                client.books[s].synced
                and client.books[s].nonce == fake.market.last_update_id(s)
                for s in SYMBOLS_100
            ),
            timeout=10,
            what="books caught up",
        )
        for s in SYMBOLS_100:
            assert_book_true(fake, client.books[s].snapshot())
        assert fake.rejected_429 == 0
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_second_fetch_fires_at_once_and_limit_trims(fake, client):
    fake.step(3)
    book = await client.fetch_order_book("BTC/USDT")
    assert_book_true(fake, book)
    d = client.fetch_order_book("BTC/USDT", limit=5)
    assert d.called
    top = d.result
    assert len(top.bids) == 5 and len(top.asks) == 5
    assert top.bids == book.bids[:5]
    assert top["bids"] == top.bids and top.symbol == "BTC/USDT"
    # a book handed out never changes afterwards
    before = (book.bids, book.asks, book.nonce)
    await drive(fake, 50)
    assert (book.bids, book.asks, book.nonce) == before
    later = await client.fetch_order_book("BTC/USDT")
    assert later.nonce > book.nonce


@pytest_twisted.ensureDeferred
async def test_observers_get_every_update_in_order(fake, client):
    updates: list[BookUpdate] = []
    checked = []

    def observer(update):
        updates.append(update)
        book = update.book()
        bids, asks = truth(fake, "ETH/USDT", book.nonce)
        checked.append(list(book.bids) == bids and list(book.asks) == asks)

    def broken(update):
        raise RuntimeError("observer bug")

    client.subscribe("book", "ETH/USDT", broken)
    handle = client.subscribe("book", "ETH/USDT", observer)
    fake.step(1)
    await wait_for(lambda: updates, what="first update")
    await drive(fake, 300)
    await wait_for(lambda: updates[-1].nonce == fake.market.last_update_id("ETH/USDT"))
    assert updates[0].snapshot
    nonces = [u.nonce for u in updates]
    assert nonces == sorted(nonces) and len(set(nonces)) == len(nonces)
    assert all(checked) and len(checked) == len(updates)
    assert client.hub.observer_errors == len(updates)
    handle.stop()
    n = len(updates)
    await drive(fake, 40)
    assert len(updates) == n


@pytest_twisted.ensureDeferred
async def test_watch_fires_on_the_next_update(fake, client):
    pending = client.watch_order_book("BTC/USDT", limit=3)
    fake.step(1)
    first = await pending
    assert len(first.bids) == 3 and first.symbol == "BTC/USDT"
    d = client.watch_order_book("BTC/USDT")
    await sleep(0.05)
    assert not d.called
    fake.step(1)
    nxt = await d
    assert nxt.nonce > first.nonce


@pytest_twisted.ensureDeferred
async def test_async_iteration(fake, client):
    seen = []

    async def consume():
        stream = client.stream("book", "BTC/USDT")
        async for book in stream:
            seen.append(book.nonce)
            if len(seen) == 3:
                stream.close()

    from twisted.internet.defer import ensureDeferred

    done = ensureDeferred(consume())
    for _ in range(50):
        if done.called:
            break
        fake.step(1)
        await sleep(0.01)
    await done
    assert len(seen) == 3 and seen == sorted(seen)


@pytest_twisted.ensureDeferred
async def test_unknown_symbol_and_bad_options(fake, client):
    with pytest.raises(BadSymbol, match="NOPE/USDT"):
        await client.fetch_order_book("NOPE/USDT")
    with pytest.raises(BadSymbol):
        client.subscribe("book", "NOPE/USDT", print)
    with pytest.raises(BadRequest, match="unknown channel"):
        client.subscribe("depth", "BTC/USDT", print)
    with pytest.raises(BadRequest, match="timeframe"):
        await client.fetch_ohlcv("BTC/USDT", "7m")
    with pytest.raises(BadRequest, match="valid keys"):
        txexchange.exchange("binance", urls={"websocket": "ws://127.0.0.1:1"})
    with pytest.raises(BadRequest, match="unknown option"):
        txexchange.exchange("binance", reactor=reactor, depht=5)
    with pytest.raises(BadRequest, match="unknown exchange"):
        txexchange.exchange("mtgox")


@pytest_twisted.ensureDeferred
async def test_429_on_snapshot_is_honoured(fake, client):
    fake.server.rest.fail_next(429, retry_after=1, path="/api/v3/depth")
    fake.step(1)
    book = await client.fetch_order_book("ETH/USDT")
    assert_book_true(fake, book)
    depth = [r for r in fake.rest_log if r.path == "/api/v3/depth"]
    assert len(depth) == 2
    assert depth[1].time - depth[0].time >= 0.95
    assert client.rest.stats.rate_limited == 1


@pytest_twisted.ensureDeferred
async def test_trades_ticker_and_candles(fake, client):
    fake.step(200)
    trades = await client.fetch_trades("BTC/USDT")
    assert trades and all(t["symbol"] == "BTC/USDT" for t in trades)
    ids = [t["id"] for t in trades]
    assert len(ids) == len(set(ids))
    watch = client.watch_trades("BTC/USDT")
    for _ in range(100):
        fake.step(1)
        await sleep(0.005)
        if watch.called:
            break
    new = await watch
    assert new[0]["price"] and new[0]["side"] in ("buy", "sell")
    candles = await client.fetch_ohlcv("BTC/USDT", "1m")
    assert candles and len(candles[-1]) == 6
    ticker = await client.fetch_ticker("BTC/USDT")
    assert ticker["symbol"] == "BTC/USDT" and ticker["last"] is not None
    latest = client.fetch_trades("BTC/USDT", limit=2)
    assert latest.called and len(latest.result) == 2


@pytest_twisted.ensureDeferred
async def test_unsubscribe_releases_the_stream(fake, client):
    fake.step(1)
    await client.fetch_order_book("BTC/USDT")
    session = fake.server.sessions[0]
    assert any(t.startswith("btcusdt@depth") for t in session.subscriptions)
    await client.unsubscribe("book", "BTC/USDT")
    await wait_for(lambda: not any(t.startswith("btcusdt@depth") for t in session.subscriptions))
    assert "BTC/USDT" not in client.books


@pytest_twisted.ensureDeferred
async def test_close_is_clean(fake):
    client = client_for(fake)
    fake.step(1)
    await client.fetch_order_book("BTC/USDT")
    await client.close()
    await wait_for(lambda: fake.server.close_codes == [1000])
    assert client_delayed_calls() == []
    d = client.fetch_order_book("BTC/USDT")
    with pytest.raises(Exception, match="closed"):
        await d
