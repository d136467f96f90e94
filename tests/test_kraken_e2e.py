"""Kraken Spot v2 end to end: the real client over loopback against the fake Kraken.

Kraken's book has no sequence number, so a book handed out is compared with the
simulated market's true book at the market update its ``timestamp`` names
(:meth:`FakeKraken.update_id`; every update of the fake has its own
millisecond), rendered as the client renders levels: padded to the pair's
precisions (``true_book(..., fixed=True)``), at the subscribed depth.
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
from txexchange.adapters import kraken as adapter
from txexchange.client import KrakenClient
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.errors import BadRequest, BadSymbol
from txexchange.markets import Market
from txexchange.testing.kraken import FakeKraken
from txexchange.transport import Disconnected, RolledOver, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)
SYMBOLS_12 = [f"C{i:02d}/USD" for i in range(10)] + ["BTC/USD", "ETH/USD"]


# -- helpers ------------------------------------------------------------------


def truth(fake: FakeKraken, book: Any, limit: int | None) -> tuple[list[Any], list[Any]]:
    """The true book at the market update the book's timestamp names."""
    nonce = fake.update_id(book.symbol, book.timestamp)
    bids, asks, uid = fake.true_book(book.symbol, nonce=nonce, limit=limit, fixed=True)
    assert uid == nonce
    return bids, asks


def assert_book_true(fake: FakeKraken, book: Any, limit: int | None) -> None:
    assert book.nonce is None  # Kraken's book carries no sequence number
    assert book.timestamp is not None
    bids, asks = truth(fake, book, limit)
    assert bids and asks
    assert list(book.bids) == bids, f"{book.symbol} bids differ at {book.timestamp}"
    assert list(book.asks) == asks, f"{book.symbol} asks differ at {book.timestamp}"


def is_current(fake: FakeKraken, client: Any, symbol: str, limit: int | None) -> bool:
    book = client.books.get(symbol)
    if book is None or not book.synced or book.stale:
        return False
    bids, asks, _ = fake.true_book(symbol, limit=limit, fixed=True)
    snap = book.snapshot()
    return list(snap.bids) == bids and list(snap.asks) == asks


async def caught_up(
    fake: FakeKraken, client: Any, symbols: list[str], limit: int | None, timeout: float = 10
) -> None:
    try:
        await wait_for(
            lambda: all(is_current(fake, client, s, limit) for s in symbols),
            timeout=timeout,
            what="books caught up with the market",
        )
    except AssertionError:
        behind = {
            s: (
                client.books.get(s),
                client._book_entries[s].sync,
                client.books[s].timestamp,
                fake._symbols[s].ts,
                client.books[s].snapshot(),
                fake.true_book(s, limit=limit, fixed=True),
                client.stats.as_dict(),
            )
            for s in symbols
            if not is_current(fake, client, s, limit)
        }
        raise AssertionError(f"books not caught up: {behind}") from None


async def settle(fake: FakeKraken, client: Any, timeout: float = 10.0) -> None:
    """Keep the market moving until no book is resyncing, then a little longer.

    Resubscriptions go through the rate-limited control queue, so a resync
    snapshot may come well after the fault; the market goes on meanwhile (a
    stale snapshot is only found out by a later update's checksum).
    """
    for _ in range(2):
        deadline = time.monotonic() + timeout
        while not all(
            e.sync.state == "synced" and not e.resubscribing and not e.book.stale
            for e in client._book_entries.values()
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"books still resyncing: {client._book_entries}")
            fake.step(2)
            await sleep(0.01)
        await drive(fake, 300)


async def start_fake(symbols=("BTC/USD", "ETH/USD"), **kw: Any) -> FakeKraken:
    return await FakeKraken(symbols, reactor=reactor, **kw).start()


def client_for(fake: FakeKraken, **kw: Any) -> Any:
    kw.setdefault("transport", FAST)
    return txexchange.exchange("kraken", reactor=reactor, urls=fake.urls, **kw)


async def drive(fake: FakeKraken, steps: int, batch: int = 20, pause: float = 0.002) -> None:
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


async def drive_until(fake: FakeKraken, d: Deferred, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not d.called:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        fake.step(1)
        await sleep(0.005)
    return await d


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def book_topics(fake: FakeKraken) -> set[str]:
    return {t for s in fake.server.sessions if s.is_open for t in s.subscriptions}


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
    # book.10: far shorter than the simulated book (50 levels), so truncation
    # matters; and the checksum covers all of it (only the top 10 at any depth)
    client = client_for(fake, book_depth=10)
    depth = 10
    gap, bad_sum, stale, dropped = "BTC/USD", "ETH/USD", "C03/USD", "C04/USD"
    try:
        assert isinstance(client, KrakenClient)
        assert client.transport_options.stall_timeout == adapter.STALL_TIMEOUT
        fake.step(80)  # every symbol moved: each book's timestamp names a market update
        books = await client.fetch_order_books(SYMBOLS_12)
        assert set(books) == set(SYMBOLS_12)
        for book in books.values():
            assert len(book.bids) == len(book.asks) == depth
            assert_book_true(fake, book, depth)
        # one connection carries all twelve; no REST besides the market list
        assert len(client.pool.connections) == 1
        assert {f"book:{s}" for s in SYMBOLS_12} <= book_topics(fake)
        assert [r.path for r in fake.rest_log] == ["/0/public/AssetPairs"]
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        # an observer checks every book the stream produces, update by update
        seen: dict[str, int] = {}
        wrong: list[str] = []

        def check(update: BookUpdate) -> None:
            book = update.book()
            seen[book.symbol] = seen.get(book.symbol, 0) + 1
            bids, asks = truth(fake, book, depth)
            if (list(book.bids), list(book.asks)) != (bids, asks):
                wrong.append((book.symbol, update.snapshot))

        for symbol in (gap, bad_sum, stale):
            client.subscribe("book", symbol, check)
        await drive(fake, 1500)
        fake.skip_next(gap, 2)  # updates lost: only the checksum can tell
        fake.corrupt_checksum_next(bad_sum)  # the levels are right, the checksum is not
        fake.stale_snapshot_next(stale, 8)  # the resync snapshot is 8 updates old ...
        fake.corrupt_checksum_next(stale)  # ... and comes after this checksum failure
        await drive(fake, 1500)
        await settle(fake, client)
        await caught_up(fake, client, SYMBOLS_12, depth)
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {gap, bad_sum, stale}, resyncing
        assert all("checksum" in reason for reason in resyncing.values())
        synced = [e.symbol for e in of(status, BookSynced)]
        assert {gap, bad_sum, stale} <= set(synced)
        # the stale snapshot (unless its top 10 happened to be right) failed the
        # next update's checksum and was resynced again
        assert synced.count(bad_sum) == 1
        assert synced.count(stale) == len(
            [e for e in of(status, BookResyncing) if e.symbol == stale]
        )
        assert fake.skipped_updates == 2
        assert client.stats.checksum_failures >= 3
        assert client.stats.resubscriptions == client.stats.checksum_failures
        for book in (await client.fetch_order_books(SYMBOLS_12)).values():
            assert_book_true(fake, book, depth)
        # a dropped connection: every book goes stale, is resubscribed and syncs again
        status.clear()
        fake.skip_next(dropped)  # lost on the way, and then the socket goes
        fake.step(1)
        fake.server.sessions[0].drop()
        await drive(fake, 1500)
        await settle(fake, client)
        await caught_up(fake, client, SYMBOLS_12, depth)
        for book in (await client.fetch_order_books(SYMBOLS_12)).values():
            assert_book_true(fake, book, depth)
        assert of(status, Disconnected)
        lost = {e.symbol for e in of(status, BookResyncing) if "disconnected" in e.reason}
        assert lost == set(SYMBOLS_12)
        assert {e.symbol for e in of(status, BookSynced)} == set(SYMBOLS_12)
        assert fake.server.connections_accepted == 2
        # The observers saw thousands of books, every one of them true but at
        # most one: the stale snapshot.  Kraken's snapshot carries its own
        # (matching) checksum and no sequence number, so nothing can tell it is
        # old until the next update's checksum fails -- which then resynced it.
        assert wrong in ([], [(stale, True)])
        assert (stale, True) not in wrong or synced.count(stale) >= 2
        assert sum(seen.values()) > 300
        assert client.stats.malformed == 0 and client.stats.exchange_errors == 0
        assert client.stats.unknown_messages == 0 and client.stats.bad_levels == 0
        assert fake.rejected_429 == 0
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_partial_book_is_the_top_n_stream():
    fake = await start_fake(seed=3)
    client = client_for(fake, book_mode="partial", partial_depth=10)
    try:
        fake.step(2)
        book = await client.fetch_order_book("ETH/USD")
        assert len(book.bids) == len(book.asks) == 10
        assert_book_true(fake, book, 10)
        assert "book:ETH/USD" in book_topics(fake)
        assert client.book_depth == 10
        await drive(fake, 400)
        await caught_up(fake, client, ["ETH/USD"], 10)
        assert_book_true(fake, client.books["ETH/USD"].snapshot(), 10)
        nxt = client.watch_order_book("ETH/USD", limit=3)
        book = await drive_until(fake, nxt, "the next book")
        assert len(book.bids) == 3
        assert client.stats.checksum_failures == 0
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_full_depth_book_and_prices_at_pair_precision(fake, client):
    fake.step(3)
    book = await client.fetch_order_book("BTC/USD")
    assert client.book_depth == 1000  # snapshot_limit's default, as deep as Kraken goes
    assert_book_true(fake, book, None)
    pp, qp = fake.precision("BTC/USD")
    price, amount = book.bids[0]
    assert len(price.split(".")[1]) == pp and len(amount.split(".")[1]) == qp
    # markets come from AssetPairs: XBT is BTC, precisions are Kraken's
    market = client.market("BTC/USD")
    assert market.id == "BTC/USD" and market.info["altname"] == "XBTUSD"
    assert adapter.precisions(market) == (pp, qp)


@pytest_twisted.ensureDeferred
async def test_maintenance_rolls_the_connection_over_without_loss():
    fake = await start_fake(seed=2)
    client = client_for(fake)
    try:
        fake.step(3)
        await client.fetch_order_book("BTC/USD")
        await drive_until(fake, client.fetch_trades("BTC/USD"), "trades")
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await drive(fake, 200)
        resyncs = client.stats.book_resyncs
        assert fake.send_status("maintenance", disconnect_after=1.0) == 1
        deadline = time.monotonic() + 10
        while not of(status, RolledOver):
            assert time.monotonic() < deadline, "no rollover"
            fake.step(2)
            await sleep(0.005)
        notice_at = time.monotonic()
        while time.monotonic() - notice_at < 1.3:  # past the fake's disconnect
            fake.step(2)
            await sleep(0.01)
        await caught_up(fake, client, ["BTC/USD"], None)
        systems = [e.system for e in of(status, adapter.SystemStatus)]
        assert systems[0] == "maintenance"
        assert client.stats.rollovers_requested == 1
        assert client.stats.book_resyncs == resyncs
        assert not of(status, BookResyncing) and not of(status, Disconnected)
        assert fake.server.close_codes == [1000]  # the old one, closed by the client
        # trades: every one the market made is held once, in order (the trade
        # snapshot the fresh connection brought was not taken in again)
        payload = await client.rest.request(adapter.trades_request("XBTUSD", count=200))
        recent = [t.id for t in adapter.parse_rest_trades("BTC/USD", payload)]
        buffer = client.trades["BTC/USD"]
        await wait_for(lambda: buffer.latest.id == recent[-1], what="the last trade")
        held = [t["id"] for t in await client.fetch_trades("BTC/USD")]
        assert held[-len(recent) :] == recent
    finally:
        await client.close()
        await fake.stop()


# -- trades, tickers, candles ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trades_ticker_and_candles_fetch_and_watch(fake, client):
    fake.step(1200)
    fake.rate_limit_next(1, path="/0/public/Trades", retry_after=0.05)  # a 429 on the way
    trades, ticker, candles = await gatherResults(
        [
            client.fetch_trades("BTC/USD"),
            client.fetch_ticker("BTC/USD"),
            client.fetch_ohlcv("BTC/USD", "1m"),
        ]
    )
    assert client.rest.stats.rate_limited == 1
    # seeded from REST (more than the 50 the stream's snapshot has), no duplicates
    assert len(trades) > 50 and all(t["symbol"] == "BTC/USD" for t in trades)
    ids = [int(t["id"]) for t in trades]
    assert ids == sorted(set(ids))
    pp, _qp = fake.precision("BTC/USD")
    assert len(trades[-1]["price"].split(".")[1]) == pp
    watch = client.watch_trades("BTC/USD")
    new = await drive_until(fake, watch, "a new trade")
    assert new[0]["side"] in ("buy", "sell") and int(new[0]["id"]) > ids[-1]

    assert ticker["symbol"] == "BTC/USD" and ticker["last"] is not None
    assert ticker["bid"] and ticker["ask"] and ticker["baseVolume"] is not None
    watched = await drive_until(fake, client.watch_ticker("BTC/USD"), "ticker")
    assert watched["symbol"] == "BTC/USD"

    assert candles and all(len(c) == 6 for c in candles)
    stamps = [c[0] for c in candles]
    assert stamps == sorted(set(stamps))
    watched = await drive_until(fake, client.watch_ohlcv("BTC/USD", "1m"), "candle")
    assert watched[0][0] >= stamps[-1]
    history = await client.fetch_ohlcv("BTC/USD", "1m", since=stamps[0] - 60_000, limit=5)
    assert 0 < len(history) <= 5 and history[0][0] >= stamps[0] - 60_000
    latest = client.fetch_trades("BTC/USD", limit=2)
    assert latest.called and len(latest.result) == 2
    paths = {r.path for r in fake.rest_log}
    assert {"/0/public/Trades", "/0/public/Ticker", "/0/public/OHLC"} <= paths


@pytest_twisted.ensureDeferred
async def test_streams_without_rest_seeding(fake):
    client = client_for(fake, seed_from_rest=False)
    try:
        fake.step(200)
        trades = await client.fetch_trades("ETH/USD")
        candles = await client.fetch_ohlcv("ETH/USD", "5m")
        assert 0 < len(trades) <= 50  # the stream's snapshot alone
        assert candles
        assert [r.path for r in fake.rest_log] == ["/0/public/AssetPairs"]
    finally:
        await client.close()


# -- bad input, close ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_symbol_bad_timeframe_and_bad_options(fake, client):
    with pytest.raises(BadSymbol, match="NOPE/USD"):
        await client.fetch_order_book("NOPE/USD")
    with pytest.raises(BadSymbol):
        client.subscribe("book", "NOPE/USD", print)
    with pytest.raises(BadRequest, match="timeframe"):
        await client.fetch_ohlcv("BTC/USD", "3m")
    with pytest.raises(BadRequest, match="valid keys"):
        txexchange.exchange("kraken", urls={"public": "ws://127.0.0.1:1"})
    with pytest.raises(BadRequest, match="partial_depth"):
        txexchange.exchange("kraken", book_mode="partial", partial_depth=5000)
    kept = TransportOptions(stall_timeout=30.0)
    assert txexchange.exchange("kraken", transport=kept).transport_options.stall_timeout == 30


@pytest_twisted.ensureDeferred
async def test_refused_subscription_fails_the_stream(fake):
    # a market the client was given but Kraken refuses on the wire
    info = {"pair_decimals": 1, "lot_decimals": 8}
    markets = [
        Market("BTC/USD", "BTC/USD", "BTC", "USD", info=info),
        Market("NOT/USD", "NOT/USD", "NOT", "USD", info=info),
    ]
    client = client_for(fake, markets=markets)
    status: list[Any] = []
    client.subscribe("status", None, status.append)
    try:
        with pytest.raises(BadSymbol, match="NOT/USD"):
            await client.fetch_order_book("NOT/USD")
        assert [type(e.error) for e in of(status, StreamFailed)] == [BadSymbol]
        assert ("book", "NOT/USD") not in client._open
        fake.step(2)
        assert_book_true(fake, await client.fetch_order_book("BTC/USD"), None)
        assert fake.rest_log == []  # markets given: nothing loaded
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_close_is_clean(fake):
    client = client_for(fake)
    fake.step(1)
    await client.fetch_order_book("BTC/USD")
    await client.fetch_ohlcv("BTC/USD", "1m")
    await client.close()
    await wait_for(lambda: fake.server.close_codes == [1000])
    assert client_delayed_calls() == []
    with pytest.raises(Exception, match="closed"):
        await client.fetch_order_book("BTC/USD")
