"""Gemini end to end: the real client over loopback against the fake Gemini.

Every book handed out is compared level for level with the simulated market's
true book at the book's update id (:meth:`FakeGemini.true_book`, ``style="ws"``:
the current API's strings).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

import txexchange
from helpers import client_delayed_calls, sleep, wait_for
from txexchange.client import GeminiClient
from txexchange.codec import dumps
from txexchange.delivery import BookResyncing, BookSynced
from txexchange.errors import BadRequest, BadSymbol
from txexchange.testing.gemini import FakeGemini
from txexchange.transport import Disconnected, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)
SYMBOLS_12 = [f"C{i:02d}/USD" for i in range(10)] + ["BTC/USD", "ETH/USD"]


# -- helpers ------------------------------------------------------------------


def assert_book_true(fake: FakeGemini, book: Any, limit: int | None = None) -> None:
    assert book.nonce is not None
    bids, asks, uid = fake.true_book(book.symbol, nonce=book.nonce, limit=limit)
    assert uid == book.nonce
    assert bids and asks
    assert list(book.bids) == [tuple(lv) for lv in bids], f"{book.symbol} bids at {book.nonce}"
    assert list(book.asks) == [tuple(lv) for lv in asks], f"{book.symbol} asks at {book.nonce}"


async def start_fake(symbols: Any = ("BTC/USD", "ETH/USD"), **kw: Any) -> FakeGemini:
    return await FakeGemini(symbols, reactor=reactor, **kw).start()


def client_for(fake: FakeGemini, **kw: Any) -> Any:
    kw.setdefault("transport", FAST)
    return txexchange.exchange("gemini", reactor=reactor, urls=fake.urls, **kw)


async def drive(fake: FakeGemini, steps: int, batch: int = 20, pause: float = 0.002) -> None:
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


async def drive_until(fake: FakeGemini, d: Deferred, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not d.called:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        fake.step(1)
        await sleep(0.005)
    return await d


async def caught_up(fake: FakeGemini, client: Any, symbols: list[str], timeout: float = 10) -> None:
    await wait_for(
        lambda: all(
            s in client.books
            and client.books[s].synced
            and not client.books[s].stale
            and client.books[s].nonce == fake.update_id(s)
            for s in symbols
        ),
        timeout=timeout,
        what="books caught up with the market",
    )


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def depth_requests(fake: FakeGemini) -> list[Any]:
    return [r for r in fake.rest_log if r.path.startswith("/v1/book")]


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


# -- books ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_many_books_through_every_fault_equal_the_true_books():
    fake = await start_fake(SYMBOLS_12, seed=5)
    client = client_for(fake)
    gap, stale, both, dropped = "BTC/USD", "ETH/USD", "C03/USD", "C04/USD"
    try:
        assert isinstance(client, GeminiClient)
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        fake.step(300)
        fake.stale_snapshot_next(stale, updates_behind=3)  # the subscribe snapshot is old
        books = await client.fetch_order_books(SYMBOLS_12)
        assert set(books) == set(SYMBOLS_12)
        for book in books.values():
            assert_book_true(fake, book)
        # one connection, every book from the subscribe snapshot (no REST book at all)
        assert len(client.pool.connections) == 1
        assert depth_requests(fake) == []
        assert fake.server.sessions[0].query.get("snapshot") == ["-1"]
        await drive(fake, 1500)
        await caught_up(fake, client, SYMBOLS_12)
        # the old snapshot was taken, and the first diff after it showed the gap
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {stale} and "gap" in resyncing[stale], resyncing
        assert client.stats.snapshot_requests == 1
        status.clear()
        fake.skip_next(gap)  # a U/u gap
        fake.skip_next(both, 3)  # a gap, and the depth answer is stale too
        fake.stale_snapshot_next(both, updates_behind=20)
        await drive(fake, 1500)
        await caught_up(fake, client, SYMBOLS_12)
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {gap, both}, resyncing
        assert "gap" in resyncing[gap] and "gap" in resyncing[both]
        assert {gap, both} <= {e.symbol for e in of(status, BookSynced)}
        # the gaps asked for the book over the socket; the stale answer was asked again
        assert client.stats.snapshot_requests == 1 + 3
        for book in (await client.fetch_order_books(SYMBOLS_12)).values():
            assert_book_true(fake, book)

        fake.server.sessions[0].drop()  # and a dropped connection midway
        fake.step(3)
        fake.stale_snapshot_next(dropped, updates_behind=4)  # stale after the reconnect
        await drive(fake, 1500)
        await caught_up(fake, client, SYMBOLS_12)
        books = await client.fetch_order_books(SYMBOLS_12)
        for book in books.values():
            assert_book_true(fake, book)
        assert of(status, Disconnected)
        lost = {e.symbol for e in of(status, BookResyncing) if "disconnected" in e.reason}
        assert lost == set(SYMBOLS_12)
        # the old snapshot after the reconnect was caught by the next diff too
        assert any(e.symbol == dropped and "gap" in e.reason for e in of(status, BookResyncing))
        assert client.stats.malformed == 0 and client.stats.exchange_errors == 0
        assert fake.rejected_429 == 0
        assert depth_requests(fake) == []
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_crossed_book_is_resynced_over_the_socket(fake, client):
    fake.step(3)
    await client.fetch_order_book("BTC/USD")
    status: list[Any] = []
    client.subscribe("status", None, status.append)
    await drive(fake, 100)
    await caught_up(fake, client, ["BTC/USD"])
    book = client.books["BTC/USD"]
    ask = Decimal(book.snapshot().asks[0][0])
    uid = fake.update_id("BTC/USD") + 1
    # a diff that crosses the book (a bid above the best ask): the book diverged
    fake.current_sessions()[0].send(
        dumps(
            {
                "e": "depthUpdate",
                "E": 1,
                "s": "btcusd",
                "U": uid,
                "u": uid,
                "b": [[str(ask + 1), "1.00000000"]],
                "a": [],
            }
        )
    )
    await wait_for(lambda: of(status, BookResyncing), what="the resync")
    assert "crossed" in of(status, BookResyncing)[0].reason
    await drive(fake, 100)
    await caught_up(fake, client, ["BTC/USD"])
    assert_book_true(fake, client.books["BTC/USD"].snapshot())
    assert client.stats.crossed_books == 1 and client.stats.snapshot_requests == 1


@pytest_twisted.ensureDeferred
async def test_partial_books_use_depth_n():
    fake = await start_fake(["BTC/USD", "ETH/USD", "SOL/USD"])
    client = client_for(fake, book_mode="partial", partial_depth=10)
    try:
        fake.step(2)
        d = client.fetch_order_books(["ETH/USD", "SOL/USD"])
        books = await drive_until(fake, d, "partial books")
        for book in books.values():
            assert len(book.bids) == 10 and len(book.asks) == 10
            assert_book_true(fake, book, limit=10)
        # one connection per partial book: its frames do not name the symbol
        assert len(client.partial_pool.connections) == 2
        subs = sorted(t for s in fake.current_sessions() for t in s.subscriptions)
        assert subs == ["ethusd@depth10@100ms", "solusd@depth10@100ms"]
        first = books["ETH/USD"].nonce
        await drive(fake, 200)
        # frames come when the top 10 changed: the book moves on, but not every update
        await wait_for(lambda: client.books["ETH/USD"].nonce > first + 50, what="depth10 pushes")
        assert_book_true(fake, client.books["ETH/USD"].snapshot(), limit=10)
        nxt = client.watch_order_book("ETH/USD")
        await drive_until(fake, nxt, "next depth10 push")
        assert client.stats.unknown_messages == 0
    finally:
        await client.close()
        await fake.stop()


# -- trades, tickers, candles ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trades_ticker_and_candles_fetch_and_watch(fake, client):
    client.candle_poll_interval = 0.1
    await drive(fake, 300)
    trades, ticker, candles = await gatherResults(
        [
            client.fetch_trades("BTC/USD"),
            client.fetch_ticker("BTC/USD"),
            client.fetch_ohlcv("BTC/USD", "1m"),
        ]
    )
    assert trades and all(t["symbol"] == "BTC/USD" for t in trades)
    ids = [t["id"] for t in trades]
    assert len(ids) == len(set(ids))
    watch = client.watch_trades("BTC/USD")
    new = await drive_until(fake, watch, "a new trade")
    assert new[0]["price"] and new[0]["side"] in ("buy", "sell")
    assert new[0]["id"] not in ids

    assert ticker["symbol"] == "BTC/USD" and ticker["last"] is not None
    assert ticker["bid"] and ticker["ask"] and ticker["baseVolume"] is not None
    # /v2/ticker adds open/high/low/close to /v1/pubticker's last and volumes
    await wait_for(lambda: client.tickers.get("BTC/USD").open is not None, what="v2 ticker")
    assert client.tickers.get("BTC/USD").high is not None
    watched = await drive_until(fake, client.watch_ticker("BTC/USD"), "ticker")
    assert watched["symbol"] == "BTC/USD"
    bids, _asks, _ = fake.true_book("BTC/USD", limit=1)
    await wait_for(lambda: client.tickers.get("BTC/USD").bid == bids[0][0])

    assert candles and all(len(c) == 6 for c in candles)
    stamps = [c[0] for c in candles]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # exact decoding: plain decimal strings, no float noise
    assert all(isinstance(v, str) and "e" not in v.lower() for c in candles for v in c[1:])
    watched = await drive_until(fake, client.watch_ohlcv("BTC/USD", "1m"), "candle")
    assert watched[0][0] >= stamps[-1]
    history = await client.fetch_ohlcv("BTC/USD", "1m", since=0, limit=5)
    assert len(history) <= 5
    latest = client.fetch_trades("BTC/USD", limit=2)
    assert latest.called and len(latest.result) == 2


@pytest_twisted.ensureDeferred
async def test_markets_load_one_details_request_per_symbol_decoded_exactly():
    fake = await start_fake(SYMBOLS_12)
    client = client_for(fake)
    try:
        markets = await client.load_markets()
        assert set(markets) == set(SYMBOLS_12)
        btc = markets["BTC/USD"]
        assert btc.id == "BTCUSD"
        assert btc.tick_size == "0.01" and btc.amount_step == "0.00001"
        paths = [r.path for r in fake.rest_log]
        assert paths[0] == "/v1/symbols"
        assert len([p for p in paths if p.startswith("/v1/symbols/details/")]) == 12
    finally:
        await client.close()
        await fake.stop()


# -- bad input, errors, close ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_symbol_bad_timeframe_and_bad_options(fake, client):
    with pytest.raises(BadSymbol, match="NOPE/USD"):
        await client.fetch_order_book("NOPE/USD")
    with pytest.raises(BadSymbol):
        client.subscribe("book", "NOPE/USD", print)
    with pytest.raises(BadRequest, match="timeframe"):
        await client.fetch_ohlcv("BTC/USD", "7m")
    with pytest.raises(BadRequest, match="valid keys"):
        txexchange.exchange("gemini", urls={"v2": "ws://127.0.0.1:1"})
    legacy = txexchange.exchange("gemini", urls={"marketdata_v1": "ws://127.0.0.1:1/v1"})
    assert legacy.urls["v1"] == "ws://127.0.0.1:1/v1"
    with pytest.raises(BadRequest, match="partial_depth"):
        txexchange.exchange("gemini", book_mode="partial", partial_depth=7)


@pytest_twisted.ensureDeferred
async def test_error_replies_and_garbage_are_counted_and_survived(fake, client):
    fake.step(1)
    await client.fetch_order_book("BTC/USD")
    session = fake.current_sessions()[0]
    session.send(dumps({"id": 999, "error": {"code": 400, "msg": "Invalid request"}}))
    session.send(dumps({"e": "somethingNew", "s": "btcusd"}))
    session.send(dumps({"e": "depthUpdate", "s": "btcusd", "U": "x"}))
    await wait_for(lambda: client.stats.exchange_errors == 1, what="the error counted")
    await wait_for(lambda: client.stats.unknown_messages == 1, what="the unknown counted")
    await wait_for(lambda: client.stats.malformed == 1, what="the bad diff counted")
    await drive(fake, 100)
    await caught_up(fake, client, ["BTC/USD"])
    assert_book_true(fake, client.books["BTC/USD"].snapshot())
    assert client.stats.book_resyncs == 0


@pytest_twisted.ensureDeferred
async def test_close_is_clean(fake):
    client = client_for(fake, book_mode="diff")
    client.candle_poll_interval = 0.05
    fake.step(1)
    await client.fetch_order_book("BTC/USD")
    await client.fetch_ohlcv("BTC/USD", "1m")
    await client.close()
    await wait_for(lambda: sorted(fake.server.close_codes) == [1000])
    assert client_delayed_calls() == []
    with pytest.raises(Exception, match="closed"):
        await client.fetch_order_book("BTC/USD")
