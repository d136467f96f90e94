"""OKX v5 end to end: the real client over loopback against the fake OKX.

Every book handed out is compared level for level with the simulated market's
true book at the book's ``seqId`` (:meth:`FakeOkx.true_book`).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

import txexchange
from helpers import client_delayed_calls, sleep, wait_for
from txexchange.adapters import okx as adapter
from txexchange.client import OkxClient
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate
from txexchange.errors import BadRequest, BadSymbol
from txexchange.testing.okx import FakeOkx
from txexchange.transport import Disconnected, FrameRejected, RolledOver, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)
SYMBOLS_24 = [f"C{i:02d}/USDT" for i in range(22)] + ["BTC/USDT", "ETH/USDT"]


# -- helpers ------------------------------------------------------------------


def truth(fake: FakeOkx, symbol: str, nonce: int, limit: int | None = None) -> Any:
    bids, asks, seq = fake.true_book(symbol, nonce=nonce, limit=limit)
    assert seq == nonce
    return [tuple(level) for level in bids], [tuple(level) for level in asks]


def assert_book_true(fake: FakeOkx, book: Any, limit: int | None = None) -> None:
    assert book.nonce is not None
    bids, asks = truth(fake, book.symbol, book.nonce, limit=limit)
    assert bids and asks
    assert list(book.bids) == bids, f"{book.symbol} bids differ at {book.nonce}"
    assert list(book.asks) == asks, f"{book.symbol} asks differ at {book.nonce}"


async def start_fake(symbols=("BTC/USDT", "ETH/USDT"), **kw: Any) -> FakeOkx:
    return await FakeOkx(symbols, reactor=reactor, **kw).start()


def client_for(fake: FakeOkx, **kw: Any) -> Any:
    kw.setdefault("transport", FAST)
    return txexchange.exchange("okx", reactor=reactor, urls=fake.urls, **kw)


async def drive(fake: FakeOkx, steps: int, batch: int = 20, pause: float = 0.002) -> None:
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


async def drive_until(fake: FakeOkx, d: Deferred, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not d.called:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        fake.step(1)
        await sleep(0.005)
    return await d


async def caught_up(fake: FakeOkx, client: Any, symbols: list[str], timeout: float = 10) -> None:
    await wait_for(
        lambda: all(
            s in client.books
            and client.books[s].synced
            and not client.books[s].stale
            and client.books[s].nonce == fake.seq_id(s)
            for s in symbols
        ),
        timeout=timeout,
        what="books caught up with the market",
    )


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def book_requests(fake: FakeOkx) -> list[Any]:
    return [r for r in fake.rest_log if r.path == "/api/v5/market/books"]


def business_topics(fake: FakeOkx) -> set[str]:
    return {t for s in fake.server.sessions if "business" in s.path for t in s.subscriptions}


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
    fake = await start_fake(SYMBOLS_24, seed=5)
    client = client_for(fake)
    gap, bad_sum, quiet, reset = "BTC/USDT", "ETH/USDT", "C03/USDT", "C04/USDT"
    try:
        assert isinstance(client, OkxClient)
        fake.step(5)
        books = await client.fetch_order_books(SYMBOLS_24)
        assert set(books) == set(SYMBOLS_24)
        for book in books.values():
            assert_book_true(fake, book)
        # 24 books on one public connection (OKX: under 30), snapshots pushed, no REST
        assert len(client.public_pool.connections) == 1
        assert client.business_pool.connections == []
        assert book_requests(fake) == []
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await drive(fake, 1500)
        fake.skip_next(gap)  # a seqId gap
        fake.corrupt_checksum_next(bad_sum)  # a checksum that does not match
        assert fake.send_keepalive(quiet) == 1  # prevSeqId == seqId, no levels
        fake.reset_sequence(reset)  # seqId < prevSeqId, chaining
        await drive(fake, 1500)
        await caught_up(fake, client, SYMBOLS_24)
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {gap, bad_sum}, resyncing
        assert "gap" in resyncing[gap] and "checksum" in resyncing[bad_sum]
        synced = {e.symbol for e in of(status, BookSynced)}
        assert {gap, bad_sum} <= synced
        assert client.stats.checksum_failures == 1
        assert fake.seq_id(reset) < 2000  # the numbering did restart, and was followed
        assert len(book_requests(fake)) == 2  # the two resyncs went through REST
        for book in (await client.fetch_order_books(SYMBOLS_24)).values():
            assert_book_true(fake, book)

        fake.server.sessions[0].drop()  # and a dropped connection midway
        await drive(fake, 1500)
        await caught_up(fake, client, SYMBOLS_24)
        books = await client.fetch_order_books(SYMBOLS_24)
        for book in books.values():
            assert_book_true(fake, book)
        assert of(status, Disconnected)
        lost = {e.symbol for e in of(status, BookResyncing) if "disconnected" in e.reason}
        assert lost == set(SYMBOLS_24)
        assert client.stats.malformed == 0 and client.stats.exchange_errors == 0
        assert fake.rejected_429 == 0
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_rest_snapshot_mode_quiet_book_gap_and_drop():
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    fake = await start_fake(symbols, seed=9, snapshot_mode="rest")
    client = client_for(fake)
    try:
        # a quiet market: no update at all, no snapshot push, the books still sync
        books = await client.fetch_order_books(symbols)
        for book in books.values():
            assert_book_true(fake, book)
        assert len(book_requests(fake)) == 3
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await drive(fake, 600)
        fake.skip_next("ETH/USDT", 2)
        await drive(fake, 600)
        fake.server.sessions[0].drop()
        await drive(fake, 600)
        await caught_up(fake, client, symbols)
        for book in (await client.fetch_order_books(symbols)).values():
            assert_book_true(fake, book)
        assert any(e.symbol == "ETH/USDT" and "gap" in e.reason for e in of(status, BookResyncing))
        assert {e.symbol for e in of(status, BookSynced)} == set(symbols)
        # every start, the gap and the reconnect took a REST snapshot of 400 levels
        requests = book_requests(fake)
        assert len(requests) >= 3 + 1 + 3
        assert all(r.args["sz"] == ["400"] for r in requests)
        assert fake.rejected_429 == 0
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_maintenance_notice_rolls_connections_over_without_loss():
    fake = await start_fake(seed=2)
    client = client_for(fake)
    try:
        fake.step(3)
        await client.fetch_order_book("BTC/USDT")
        await drive_until(fake, client.fetch_trades("BTC/USDT"), "trades")
        assert len(client.pool.connections) == 2  # public (books) and business (trades-all)
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        updates: list[BookUpdate] = []
        client.subscribe("book", "BTC/USDT", updates.append)
        await drive(fake, 200)
        resyncs = client.stats.book_resyncs
        assert fake.maintenance_notice(disconnect_after=1.0) == 2
        deadline = time.monotonic() + 10
        while len(of(status, RolledOver)) < 2:
            assert time.monotonic() < deadline, "no rollover"
            fake.step(2)
            await sleep(0.005)
        notice_at = time.monotonic()
        while time.monotonic() - notice_at < 1.3:  # past the fake's disconnect
            fake.step(2)
            await sleep(0.01)
        await caught_up(fake, client, ["BTC/USDT"])
        assert client.stats.rollovers_requested == 2
        assert client.stats.book_resyncs == resyncs
        assert not of(status, BookResyncing) and not of(status, Disconnected)
        # the book went on update by update, none missed, none twice
        deltas = [u for u in updates if not u.snapshot]
        nonces = [u.nonce for u in deltas]
        assert nonces == sorted(nonces) and len(set(nonces)) == len(nonces)
        assert updates[-1].nonce == fake.seq_id("BTC/USDT")
        assert_book_true(fake, client.books["BTC/USDT"].snapshot())
        # every trade the exchange made is held once, in order
        payload = await client.rest.request(adapter.trades_request("BTC-USDT", 100))
        recent = [t.id for t in adapter.parse_rest_trades("BTC/USDT", payload)]
        buffer = client.trades["BTC/USDT"]
        await wait_for(lambda: buffer.latest.id == recent[-1], what="the last trade")
        held = [t["id"] for t in (await client.fetch_trades("BTC/USDT"))]
        assert held[-len(recent) :] == recent
        assert fake.server.connections_accepted == 4
        assert fake.server.close_codes == [1000, 1000]  # the old ones, closed by the client
        assert len([s for s in fake.server.sessions if s.is_open]) == 2
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_partial_books_use_books5():
    fake = await start_fake()
    client = client_for(fake, book_mode="partial")
    try:
        fake.step(2)
        book = await client.fetch_order_book("ETH/USDT")
        assert len(book.bids) == 5 and len(book.asks) == 5
        assert_book_true(fake, book, limit=5)
        assert "books5:ETH-USDT" in fake.server.sessions[0].subscriptions
        await drive(fake, 200)
        await wait_for(lambda: client.books["ETH/USDT"].nonce == fake.seq_id("ETH/USDT"))
        assert_book_true(fake, client.books["ETH/USDT"].snapshot(), limit=5)
        nxt = client.watch_order_book("ETH/USDT")
        await drive_until(fake, nxt, "next books5 push")
        assert book_requests(fake) == []
    finally:
        await client.close()
        await fake.stop()


# -- trades, tickers, candles ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trades_ticker_and_candles_fetch_and_watch(fake, client):
    fake.step(300)
    # asked for together: one subscribe request per connection (OKX: 480 an hour)
    trades, ticker, candles = await gatherResults(
        [
            client.fetch_trades("BTC/USDT"),
            client.fetch_ticker("BTC/USDT"),
            client.fetch_ohlcv("BTC/USDT", "1m"),
        ]
    )
    assert trades and all(t["symbol"] == "BTC/USDT" for t in trades)
    ids = [t["id"] for t in trades]
    assert len(ids) == len(set(ids))
    await wait_for(lambda: "trades-all:BTC-USDT" in business_topics(fake), what="trades-all")
    watch = client.watch_trades("BTC/USDT")
    new = await drive_until(fake, watch, "a new trade")
    assert new[0]["price"] and new[0]["side"] in ("buy", "sell")
    assert new[0]["id"] not in ids

    assert ticker["symbol"] == "BTC/USDT" and ticker["last"] is not None
    assert ticker["bid"] and ticker["ask"] and ticker["baseVolume"] is not None
    watched = await drive_until(fake, client.watch_ticker("BTC/USDT"), "ticker")
    assert watched["symbol"] == "BTC/USDT"

    assert candles and all(len(c) == 6 for c in candles)
    stamps = [c[0] for c in candles]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    watched = await drive_until(fake, client.watch_ohlcv("BTC/USDT", "1m"), "candle")
    assert watched[0][0] >= stamps[-1]
    history = await client.fetch_ohlcv("BTC/USDT", "1m", since=0, limit=5)
    assert len(history) <= 5
    latest = client.fetch_trades("BTC/USDT", limit=2)
    assert latest.called and len(latest.result) == 2


@pytest_twisted.ensureDeferred
async def test_okx_429_pauses_rest_for_its_2s_window():
    fake = await start_fake(snapshot_mode="rest")
    client = client_for(fake)
    try:
        fake.server.rest.fail_next(
            429, path="/api/v5/market/books", body={"code": "50011", "msg": "Rate limit reached."}
        )
        book = await drive_until(fake, client.fetch_order_book("ETH/USDT"), "book after a 429")
        assert_book_true(fake, book)
        requests = book_requests(fake)
        assert len(requests) == 2
        # no Retry-After from OKX: the queue waits OKX's 2 s window, not Binance's minute
        assert 1.9 <= requests[1].time - requests[0].time < 5
        assert client.rest.stats.rate_limited == 1
    finally:
        await client.close()
        await fake.stop()


# -- bad input, heartbeat, errors, close ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_symbol_bad_timeframe_and_bad_urls(fake, client):
    with pytest.raises(BadSymbol, match="NOPE/USDT"):
        await client.fetch_order_book("NOPE/USDT")
    with pytest.raises(BadSymbol):
        client.subscribe("book", "NOPE/USDT", print)
    with pytest.raises(BadRequest, match="timeframe"):
        await client.fetch_ohlcv("BTC/USDT", "7m")
    with pytest.raises(BadRequest, match="valid keys"):
        txexchange.exchange("okx", urls={"ws": "ws://127.0.0.1:1"})
    with pytest.raises(BadRequest, match="unknown exchange 'mtgox'; supported: binance"):
        txexchange.exchange("mtgox")
    assert client.markets["BTC/USDT"].id == "BTC-USDT"


@pytest_twisted.ensureDeferred
async def test_text_pong_is_swallowed_by_the_transport(fake, client):
    fake.step(1)
    await client.fetch_order_book("BTC/USDT")
    status: list[Any] = []
    client.subscribe("status", None, status.append)
    conn = client.public_pool.connections[0]
    before = conn.stats.messages
    conn.send("ping")  # what the heartbeat sends after 25 s of silence
    await wait_for(lambda: conn.stats.messages > before, what="the pong")
    await sleep(0.05)
    assert not of(status, FrameRejected)
    assert client.stats.malformed == 0 and client.stats.unknown_messages == 0
    assert conn.rules.heartbeat.payload == "ping" and conn.rules.heartbeat.pong == "pong"


@pytest_twisted.ensureDeferred
async def test_error_events_notices_and_garbage_are_counted_and_survived(fake, client):
    fake.step(1)
    await client.fetch_order_book("BTC/USDT")
    status: list[Any] = []
    client.subscribe("status", None, status.append)
    session = fake.server.sessions[0]
    session.send({"event": "error", "code": "60012", "msg": "Invalid request", "connId": "x"})
    session.send({"event": "notice", "code": "64099", "msg": "something new", "connId": "x"})
    session.send({"arg": {"channel": "books", "instId": "BTC-USDT"}, "data": "x"})
    session.send("{not json")
    await wait_for(lambda: client.stats.exchange_errors == 1, what="the error counted")
    await wait_for(lambda: client.stats.unknown_messages == 1, what="the notice counted")
    await wait_for(lambda: client.stats.malformed == 1, what="the bad push counted")
    await wait_for(lambda: of(status, FrameRejected), what="garbage rejected")
    await drive(fake, 100)
    await caught_up(fake, client, ["BTC/USDT"])
    assert_book_true(fake, client.books["BTC/USDT"].snapshot())
    assert not of(status, BookResyncing)


@pytest_twisted.ensureDeferred
async def test_close_is_clean(fake):
    client = client_for(fake)
    fake.step(1)
    await client.fetch_order_book("BTC/USDT")
    await client.fetch_ohlcv("BTC/USDT", "1m")
    await wait_for(lambda: "candle1m:BTC-USDT" in business_topics(fake), what="candles")
    await client.close()
    await wait_for(lambda: sorted(fake.server.close_codes) == [1000, 1000])
    assert client_delayed_calls() == []
    with pytest.raises(Exception, match="closed"):
        await client.fetch_order_book("BTC/USDT")
