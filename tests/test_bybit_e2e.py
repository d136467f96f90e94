"""Bybit v5 end to end: the real client over loopback against the fake Bybit.

Every book handed out is compared level for level with the simulated market's
true book at the book's ``u`` (:meth:`FakeBybit.true_book`, limited to the
subscribed depth).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

import txexchange
from helpers import client_delayed_calls, sleep, wait_for
from txexchange.adapters import bybit as adapter
from txexchange.client import BybitClient
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate
from txexchange.errors import BadRequest, BadSymbol
from txexchange.testing.bybit import FakeBybit
from txexchange.transport import Disconnected, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)
SPOT = [f"C{i:02d}/USDT" for i in range(8)] + ["BTC/USDT", "ETH/USDT"]
LINEAR = ["BTC/USDT:USDT", "ETH/USDT:USDT"]


# -- helpers ------------------------------------------------------------------


def assert_book_true(fake: FakeBybit, book: Any, limit: int) -> None:
    assert book.nonce is not None
    bids, asks, u = fake.true_book(book.symbol, nonce=book.nonce, limit=limit)
    assert u == book.nonce
    assert bids and asks
    assert list(book.bids) == bids, f"{book.symbol} bids differ at u={book.nonce}"
    assert list(book.asks) == asks, f"{book.symbol} asks differ at u={book.nonce}"


async def start_fake(symbols: Any = ("BTC/USDT", "ETH/USDT"), **kw: Any) -> FakeBybit:
    return await FakeBybit(symbols, reactor=reactor, **kw).start()


def client_for(fake: FakeBybit, **kw: Any) -> Any:
    kw.setdefault("transport", FAST)
    return txexchange.exchange("bybit", reactor=reactor, urls=fake.urls, **kw)


async def drive(fake: FakeBybit, steps: int, batch: int = 20, pause: float = 0.002) -> None:
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


async def drive_until(fake: FakeBybit, d: Deferred, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not d.called:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        fake.step(1)
        await sleep(0.005)
    return await d


async def settled(client: Any, symbols: list[str], timeout: float = 10) -> None:
    await wait_for(
        lambda: all(
            s in client.books and client.books[s].synced and not client.books[s].stale
            for s in symbols
        ),
        timeout=timeout,
        what="books synced",
    )


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def market_sessions(fake: FakeBybit) -> list[Any]:
    return [s for s in fake.server.sessions if s.is_open and "status" not in s.path]


# -- books ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_many_books_through_every_fault_equal_the_true_books():
    fake = await start_fake(SPOT, seed=5)
    client = client_for(fake)
    symbols = SPOT + LINEAR
    dup, stale, restart, gap, fresh = "BTC/USDT", "ETH/USDT", "C01/USDT", "C02/USDT", "C03/USDT"
    try:
        assert isinstance(client, BybitClient)
        fake.step(5)
        books = await client.fetch_order_books(symbols)
        assert set(books) == set(symbols)
        for book in books.values():
            assert_book_true(fake, book, 200)
        # one spot and one linear connection (plus system.status), no REST book
        assert len(client.pools["spot"].connections) == 1
        assert len(client.pools["linear"].connections) == 1
        assert not [r for r in fake.rest_log if r.path == "/v5/market/orderbook"]
        assert "orderbook.200.BTCUSDT" in client.pools["linear"].connections[0].topics
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await drive(fake, 1000)
        for book in (await client.fetch_order_books(symbols)).values():
            assert_book_true(fake, book, 200)

        assert fake.resend_last_delta(dup) == 2  # same bytes, same u (spot and linear)
        assert fake.send_stale_snapshot(stale, back=4) == 2  # ignored: older u and seq
        assert fake.restart_service(restart) == 1  # u == 1: a snapshot whatever it is
        assert fake.send_snapshot(fresh) == 1  # unsolicited: replaces the book
        await drive(fake, 1000)
        await settled(client, symbols)
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {dup, "BTC/USDT:USDT"}, resyncing
        assert all("duplicate" in reason for reason in resyncing.values())
        assert {dup, "BTC/USDT:USDT"} <= {e.symbol for e in of(status, BookSynced)}
        assert client.stats.resubscribes == 2
        assert fake.update_id(restart) < 1000  # the numbering did restart, and was followed
        for book in (await client.fetch_order_books(symbols)).values():
            assert_book_true(fake, book, 200)

        # a withheld update cannot be seen in Bybit's u (not contiguous); the book
        # is wrong until the exchange's next snapshot, which repairs it
        fake.skip_next(gap, 3)
        await drive(fake, 200)
        assert fake.skipped_updates == 3
        assert fake.send_snapshot(gap) == 1
        await drive(fake, 200)
        await settled(client, symbols)
        for book in (await client.fetch_order_books(symbols)).values():
            assert_book_true(fake, book, 200)

        # a maintenance notice, then every market connection dropped
        assert fake.maintenance_notice(disconnect_after=0.1) == 1
        await wait_for(lambda: of(status, adapter.Maintenance), what="the maintenance record")
        (record,) = of(status, adapter.Maintenance)
        assert record.state == "scheduled" and record.affects_market_data("spot")
        await sleep(0.2)
        await drive(fake, 1000)
        await settled(client, symbols)
        books = await client.fetch_order_books(symbols)
        for book in books.values():
            assert_book_true(fake, book, 200)
        assert len(of(status, Disconnected)) == 2
        lost = {e.symbol for e in of(status, BookResyncing) if "disconnected" in e.reason}
        assert lost == set(symbols)
        assert set(symbols) <= {e.symbol for e in of(status, BookSynced)}
        assert client.stats.malformed == 0 and client.stats.exchange_errors == 0
        assert client.stats.maintenance_notices == 1
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_partial_books_are_truncated_to_depth_50():
    fake = await start_fake(["BTC/USDT", "ETH/USDT"], seed=3, levels=80)
    client = client_for(fake, book_mode="partial")
    try:
        fake.step(3)
        updates: list[BookUpdate] = []
        client.subscribe("book", "ETH/USDT:USDT", updates.append)
        book = await client.fetch_order_book("BTC/USDT")
        assert len(book.bids) == 50 and len(book.asks) == 50
        assert len(fake.true_book("BTC/USDT")[0]) > 50
        assert_book_true(fake, book, 50)
        await drive(fake, 800)
        for symbol in ("BTC/USDT", "ETH/USDT:USDT"):
            held = client.books[symbol]
            assert held.level_count("bids") <= 50 and held.level_count("asks") <= 50
            assert_book_true(fake, await client.fetch_order_book(symbol), 50)
        assert updates and updates[0].snapshot and not updates[-1].snapshot
        topics = {t for s in fake.server.sessions for t in s.subscriptions}
        assert {"orderbook.50.BTCUSDT", "orderbook.50.ETHUSDT"} <= topics
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_level1_books_resync_after_silence():
    fake = await start_fake(seed=4, level1_interval=None)
    client = client_for(fake, book_mode="partial", partial_depth=1)
    try:
        fake.step(3)
        book = await client.fetch_order_book("BTC/USDT")
        assert_book_true(fake, book, 1)
        entry = client._book_entries["BTC/USDT"]
        entry.sync.silence_timeout = 0.3  # Bybit re-sends every 3 s; 10 s by default
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await wait_for(lambda: of(status, BookResyncing), timeout=5, what="silence noticed")
        (resync,) = of(status, BookResyncing)
        await wait_for(lambda: isinstance(status[-1], BookSynced), timeout=5, what="resubscribed")
        assert "no book message" in resync.reason
        assert client.stats.silence_resyncs >= 1
        entry.sync.silence_timeout = None
        assert_book_true(fake, await client.fetch_order_book("BTC/USDT"), 1)
    finally:
        await client.close()
        await fake.stop()


# -- trades, tickers, candles ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trades_tickers_and_candles_fetch_and_watch():
    fake = await start_fake(seed=7)
    client = client_for(fake)
    try:
        fake.step(300)
        for symbol in ("BTC/USDT", "BTC/USDT:USDT"):
            trades = await client.fetch_trades(symbol)
            assert trades, symbol  # seeded from REST
            category = "spot" if ":" not in symbol else "linear"
            rest = adapter.parse_rest_trades(
                symbol, await client.rest.request(adapter.trades_request(category, "BTCUSDT", 50))
            )
            assert [t["id"] for t in trades][-10:] == [t.id for t in rest][-10:]
        watched = await drive_until(fake, client.watch_trades("BTC/USDT:USDT"), "a trade")
        assert watched[0]["symbol"] == "BTC/USDT:USDT"
        await drive(fake, 100)
        held = [t["id"] for t in await client.fetch_trades("BTC/USDT")]
        assert len(held) == len(set(held))

        # tickers: spot snapshots, linear snapshot + merged deltas
        spot = await client.fetch_ticker("BTC/USDT")
        assert spot["symbol"] == "BTC/USDT" and spot["last"] is not None
        linear = await client.fetch_ticker("BTC/USDT:USDT")
        assert linear["symbol"] == "BTC/USDT:USDT"
        ticker = await drive_until(fake, client.watch_ticker("BTC/USDT:USDT"), "a ticker")
        assert ticker["bid"] is not None and ticker["ask"] is not None and ticker["last"]
        await drive(fake, 50)
        await sleep(0.05)
        merged = await client.fetch_ticker("BTC/USDT:USDT")
        payload = await client.rest.request(adapter.ticker_request("linear", "BTCUSDT"))
        (truth,) = adapter.parse_tickers(payload, client.indexes["linear"])
        for field in ("bid", "bidVolume", "ask", "askVolume", "last", "open", "high", "low"):
            assert merged[field] == getattr(truth, _ATTR.get(field, field)), field

        # candles: REST history plus the forming one from the stream
        candles = await client.fetch_ohlcv("BTC/USDT", "1m")
        assert candles and all(len(c) == 6 for c in candles)
        stamps = [c[0] for c in candles]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        candle = await drive_until(fake, client.watch_ohlcv("BTC/USDT", "1m"), "a candle")
        assert candle[0][0] >= stamps[-1]
        history = await client.fetch_ohlcv("BTC/USDT:USDT", "5m", since=0, limit=5)
        assert history and all(c[0] >= 0 for c in history)
        assert len(history) <= 5
    finally:
        await client.close()
        await fake.stop()


_ATTR = {"bidVolume": "bid_volume", "askVolume": "ask_volume"}


# -- errors and life cycle ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_symbols_timeframes_and_urls():
    fake = await start_fake()
    client = client_for(fake)
    try:
        await client.load_markets()
        assert client.markets["BTC/USDT"].id == "BTCUSDT"
        assert client.markets["BTC/USDT:USDT"].id == "BTCUSDT"
        assert client.category("BTC/USDT:USDT") == "linear"
        with pytest.raises(BadSymbol):
            await client.fetch_order_book("NOPE/USDT")
        with pytest.raises(BadSymbol):
            await client.fetch_ticker("NOPE/USDT:USDT")
        with pytest.raises(BadSymbol):
            client.subscribe("trades", "NOPE/USDT", print)
        with pytest.raises(BadRequest, match="timeframe"):
            await client.fetch_ohlcv("BTC/USDT", "7m")
        # bad input from the network is counted and logged; the feed goes on
        fake.step(2)
        book = await client.fetch_order_book("BTC/USDT")
        (session,) = market_sessions(fake)
        session.send({"topic": "orderbook.200.BTCUSDT", "type": "delta", "data": 5, "ts": 1})
        session.send({"success": False, "ret_msg": "error:boom", "op": "subscribe"})
        session.send({"topic": "liquidation.BTCUSDT", "data": {}})
        await wait_for(lambda: client.stats.unknown_messages == 1, what="the unknown topic")
        assert client.stats.malformed == 1 and client.stats.exchange_errors == 1
        await drive(fake, 100)
        book = await client.fetch_order_book("BTC/USDT")
        assert_book_true(fake, book, 200)
        with pytest.raises(BadRequest, match="valid keys"):
            txexchange.exchange("bybit", urls={"ws": "ws://127.0.0.1:1"})
        with pytest.raises(BadRequest, match="partial_depth"):
            txexchange.exchange("bybit", reactor=reactor, book_mode="partial", partial_depth=100)
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_linear_markets_are_followed_page_by_page():
    fake = await start_fake(["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    client = client_for(fake)
    real = client.rest.request
    cursors: list[Any] = []

    def paged(req: Any) -> Deferred:
        if req.path != "/v5/market/instruments-info" or req.params["category"] != "linear":
            return real(req)
        cursor = req.params.get("cursor")
        cursors.append(cursor)

        def split(payload: Any) -> Any:
            result = payload["result"]
            rows = result["list"]
            result["list"] = rows[:2] if cursor is None else rows[2:]
            result["nextPageCursor"] = "page2" if cursor is None else ""
            return payload

        return real(req).addCallback(split)

    client.rest.request = paged
    try:
        markets = await client.load_markets()
        assert cursors == [None, "page2"]
        linear = {"BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"}
        assert linear | {"BTC/USDT", "ETH/USDT", "SOL/USDT"} == set(markets)
        assert set(client.indexes["linear"].symbols) == linear
        assert client.indexes["spot"].by_id["SOLUSDT"].symbol == "SOL/USDT"
        fake.step(2)
        assert_book_true(fake, await client.fetch_order_book("SOL/USDT:USDT"), 200)
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_close_does_the_handshake_and_leaves_no_timers():
    fake = await start_fake()
    client = client_for(fake)
    try:
        fake.step(3)
        await client.fetch_order_book("BTC/USDT")
        await client.fetch_order_book("ETH/USDT:USDT")
        await drive_until(fake, client.fetch_trades("BTC/USDT"), "trades")
        await wait_for(lambda: len(fake.server.sessions) == 3, what="three connections")
        await client.close()
        await wait_for(lambda: len(fake.server.close_codes) == 3, what="closes")
        assert fake.server.close_codes == [1000, 1000, 1000]
        assert client_delayed_calls() == []
    finally:
        await client.close()
        await fake.stop()
