"""Coinbase Exchange end to end: the real client over loopback against the fake Coinbase.

Coinbase's level2 carries no sequence, so the client's books have no nonce
(``book.nonce is None``).  Every book is compared level for level with the
fake's true book *now*, once the fake has stopped stepping and a heartbeat
sent after its last update has reached the client (so every ``l2update``
before it has been applied: one connection, in order).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

import txexchange
from helpers import client_delayed_calls, sleep, wait_for
from txexchange.adapters import coinbase as adapter
from txexchange.client import CoinbaseClient
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.errors import BadRequest, BadSymbol
from txexchange.markets import Market
from txexchange.testing.coinbase import FakeCoinbase, coinbase_time
from txexchange.testing.market import SimulatedMarket
from txexchange.transport import Connected, Disconnected, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)
SYMBOLS_12 = [f"C{i:02d}/USD" for i in range(10)] + ["BTC/USD", "ETH/USD"]


# -- helpers ------------------------------------------------------------------


async def start_fake(symbols=("BTC/USD", "ETH/USD"), **kw: Any) -> FakeCoinbase:
    kw.setdefault("heartbeat_interval", None)  # heartbeats on demand: flush()
    kw.setdefault("ticker_batch_interval", None)
    return await FakeCoinbase(symbols, reactor=reactor, **kw).start()


def client_for(fake: FakeCoinbase, **kw: Any) -> Any:
    kw.setdefault("transport", FAST)
    client = txexchange.exchange("coinbase", reactor=reactor, urls=fake.urls, **kw)
    # record the sequence of every heartbeat the client handles (see flush)
    client.heard = {}
    handle = client._on_heartbeat

    def on_heartbeat(hb: Any) -> None:
        client.heard[hb.symbol] = hb.sequence
        handle(hb)

    client._on_heartbeat = on_heartbeat
    return client


async def flush(fake: FakeCoinbase, client: Any, symbols: list[str], timeout: float = 5) -> None:
    """Wait until a heartbeat sent after the last update has reached the client for
    every symbol (sent again every 20 ms, for subscriptions still being made)."""
    deadline = time.monotonic() + timeout
    while not all(client.heard.get(s) == fake.sequence(s) for s in symbols):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for heartbeats")
        fake.send_heartbeats()
        await sleep(0.02)


async def drive(fake: FakeCoinbase, steps: int, batch: int = 20, pause: float = 0.002) -> None:
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


def truth(fake: FakeCoinbase, symbol: str, limit: int | None = None) -> tuple[list, list]:
    bids, asks, _seq = fake.true_book(symbol, limit=limit)
    return [tuple(x) for x in bids], [tuple(x) for x in asks]


def assert_book_true(fake: FakeCoinbase, book: Any, limit: int | None = None) -> None:
    bids, asks = truth(fake, book.symbol, limit)
    assert bids and asks
    assert book.nonce is None  # level2 has no sequence
    assert list(book.bids) == bids, f"{book.symbol} bids differ"
    assert list(book.asks) == asks, f"{book.symbol} asks differ"


async def settled_books(fake: FakeCoinbase, client: Any, symbols: list[str]) -> None:
    """Every book synced, fresh and equal to the true book (after a flush)."""
    await wait_for(
        lambda: all(
            s in client.books and client.books[s].synced and not client.books[s].stale
            for s in symbols
        ),
        timeout=10,
        what="books synced",
    )
    await flush(fake, client, symbols)
    books = await client.fetch_order_books(symbols)
    for book in books.values():
        assert_book_true(fake, book)
    top = await client.fetch_order_books(symbols, limit=10)
    for book in top.values():
        assert_book_true(fake, book, limit=10)


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def controls(fake: FakeCoinbase) -> list[tuple[str, list[str]]]:
    """Every (un)subscribe the client sent, in order, as (type, topics)."""
    out = []
    for session in fake.server._history:
        for message in session.received:
            out.append(adapter.parse_subscribe(message))
    return out


def l2update(fake: FakeCoinbase, symbol: str, changes: list[list[str]], ms: int) -> int:
    pid = fake.product_id(symbol)
    message = {
        "type": "l2update",
        "product_id": pid,
        "changes": changes,
        "time": coinbase_time(ms),
    }
    return fake.server.broadcast(message, topic=f"level2_batch:{pid}")


def fake_trades(fake: FakeCoinbase, symbol: str) -> list[tuple[str, str, str, str]]:
    """The fake's trades, oldest first, as (id, price, amount, taker side)."""
    return [(str(t.id), px, sz, t.side) for t, _maker, px, sz in fake._product(symbol).trades]


# -- books ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_many_books_through_every_fault_equal_the_true_books():
    fake = await start_fake(SYMBOLS_12, seed=7)
    client = client_for(fake)
    stale, back, crossed, skipped = "C01/USD", "C02/USD", "C03/USD", "C04/USD"
    try:
        assert isinstance(client, CoinbaseClient)
        fake.step(300)
        # the first snapshot of one book is 200 updates old: the live updates
        # that follow leave it crossed, which the client detects
        fake.stale_snapshot_next(stale, updates_behind=200)
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        books = await client.fetch_order_books(SYMBOLS_12)
        assert set(books) == set(SYMBOLS_12)
        # one connection, first subscribe at once, every book with its heartbeat
        assert len(client.pool.connections) == 1
        first = controls(fake)[0]
        assert first[0] == "subscribe"
        pid = fake.product_id("BTC/USD")
        assert f"level2_batch:{pid}" in first[1] and f"heartbeat:{pid}" in first[1]

        await drive(fake, 1000)
        await settled_books(fake, client, SYMBOLS_12)
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {stale}, resyncing
        assert "crossed" in resyncing[stale]

        # l2update time going backwards, and a book left crossed by updates
        now = client.books[back].timestamp
        assert l2update(fake, back, [], now - 60_000) == 1
        best_ask = client.books[crossed].top("asks", 1)[0][0]
        high = str(Decimal(best_ask) + 1)
        ms = client.books[crossed].timestamp
        for _ in range(2):
            assert l2update(fake, crossed, [["buy", high, "1.00000000"]], ms) == 1
        # an l2update withheld: invisible on level2 until a resubscribe
        fake.skip_l2updates(skipped, 3)
        await drive(fake, 1000)
        await settled_books(fake, client, [s for s in SYMBOLS_12 if s != skipped])
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {stale, back, crossed}, resyncing
        assert "backwards" in resyncing[back] and "crossed" in resyncing[crossed]
        synced = [e.symbol for e in of(status, BookSynced)]
        assert {stale, back, crossed} <= set(synced)
        assert synced.count(back) == 2 and synced.count(crossed) == 2
        # the resync: unsubscribe, then subscribe again (not cancelled in the queue)
        topic = f"level2_batch:{fake.product_id(back)}"
        ops = [op for op, topics in controls(fake) if topic in topics]
        assert ops == ["subscribe", "unsubscribe", "subscribe"], ops

        # a dropped connection: every book resyncs from the new connection's snapshots
        fake.server.sessions[0].drop()
        await drive(fake, 1000)
        await settled_books(fake, client, SYMBOLS_12)
        assert of(status, Disconnected)
        lost = {e.symbol for e in of(status, BookResyncing) if "disconnected" in e.reason}
        assert lost == set(SYMBOLS_12)
        assert fake.dropped_l2updates == 3
        assert client.stats.malformed == 0 and client.stats.exchange_errors == 0
        assert fake.rejected_429 == 0 and fake.subscribe_timeouts == 0
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_book_observer_and_watch():
    fake = await start_fake(seed=3)
    client = client_for(fake)
    try:
        updates: list[BookUpdate] = []
        client.subscribe("book", "BTC/USD", updates.append)
        await wait_for(lambda: updates, what="first book update")
        assert updates[0].snapshot
        d = client.watch_order_book("BTC/USD", limit=5)
        while not d.called:
            fake.step(1)
            await sleep(0.005)
        book = await d
        assert len(book.bids) <= 5
        await drive(fake, 200)
        await flush(fake, client, ["BTC/USD"])
        assert_book_true(fake, updates[-1].book())
        assert sum(1 for u in updates if not u.snapshot) > 50
    finally:
        await client.close()
        await fake.stop()


def test_partial_book_mode_and_unknown_url_keys_are_refused():
    with pytest.raises(BadRequest, match="partial"):
        txexchange.exchange("coinbase", reactor=reactor, book_mode="partial")
    with pytest.raises(BadRequest, match="valid keys"):
        txexchange.exchange("coinbase", reactor=reactor, urls={"websocket": "ws://127.0.0.1:1"})


# -- trades, tickers, candles -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trades_seeded_gaps_filled_in_order():
    symbol = "BTC/USD"
    fake = await start_fake(seed=11)
    client = client_for(fake)
    try:
        fake.step(200)
        trades = await client.fetch_trades(symbol)
        assert trades, "seeded from REST"
        d = client.watch_trades(symbol)
        while not d.called:
            fake.step(1)
            await sleep(0.005)
        assert (await d)[0]["symbol"] == symbol
        delivered: list[Any] = []
        client.subscribe("trades", symbol, delivered.append)
        await drive(fake, 200)
        fake.skip_matches(symbol, 3)  # seen by the next match's trade_id jump
        await drive(fake, 200)
        assert fake.resend_last_match(symbol) == 1  # a late duplicate: ignored
        await drive(fake, 100)
        fake.skip_matches(symbol, 2)  # the last ones: only the heartbeat tells
        while fake.dropped_matches < 5:
            fake.step(1)
        await flush(fake, client, [symbol])
        want = fake_trades(fake, symbol)
        await wait_for(
            lambda: client.trades[symbol].latest.id == want[-1][0], what="missed trades fetched"
        )
        got = await client.fetch_trades(symbol)
        ids = [int(t["id"]) for t in got]
        assert ids == list(range(ids[0], ids[0] + len(ids))), "contiguous, in order"
        assert [(t["id"], t["price"], t["amount"], t["side"]) for t in got] == want[-len(got) :]
        # observers saw each trade once, in order, the missed ones included
        seen = [int(t.id) for t in delivered]
        assert seen == list(range(seen[0], seen[0] + len(seen)))
        assert client.stats.missed_trades == 5 and client.stats.missed_trade_fetches == 2
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_ticker_fetch_and_watch():
    fake = await start_fake(seed=2)
    client = client_for(fake)
    try:
        fake.step(100)
        ticker = await client.fetch_ticker("ETH/USD")
        last = fake._product("ETH/USD").last_ticker
        assert ticker["last"] == last["price"] and ticker["open"] == last["open_24h"]
        d = client.watch_ticker("ETH/USD")
        while not d.called:
            fake.step(1)
            await sleep(0.005)
        assert (await d)["symbol"] == "ETH/USD"
        await drive(fake, 100)
        await flush(fake, client, ["ETH/USD"])
        ticker = await client.fetch_ticker("ETH/USD")
        last = fake._product("ETH/USD").last_ticker
        assert ticker["last"] == last["price"] and ticker["high"] == last["high_24h"]
        assert ticker["bid"] == last["best_bid"] and ticker["ask"] == last["best_ask"]
        assert ticker["baseVolume"] == last["volume_24h"]
        tickers = await client.fetch_tickers(["ETH/USD", "BTC/USD"])
        assert set(tickers) == {"ETH/USD", "BTC/USD"}
    finally:
        await client.close()
        await fake.stop()


def expected_candles(fake: FakeCoinbase, symbol: str) -> dict[int, list[Decimal]]:
    buckets: dict[int, list[Decimal]] = {}
    for trade, _maker, px, sz in fake._product(symbol).trades:
        t = trade.timestamp // 60_000 * 60_000
        p, s = Decimal(px), Decimal(sz)
        row = buckets.get(t)
        if row is None:
            buckets[t] = [p, p, p, p, s]  # open high low close volume
        else:
            row[1], row[2], row[3] = max(row[1], p), min(row[2], p), p
            row[4] += s
    return buckets


@pytest_twisted.ensureDeferred
async def test_candles_from_rest_exact_fetch_and_watch():
    symbol = "BTC/USD"
    market = SimulatedMarket(
        ("BTC/USD", "ETH/USD"), seed=4, amount_step="0.00000001", virtual_step_ms=100
    )
    fake = await start_fake(market=market)
    client = client_for(fake, candles_limit=2)
    client.candle_poll_interval = 0.1
    try:
        fake.step(3000)  # five minutes of market time
        want = expected_candles(fake, symbol)
        assert len(want) >= 5
        rows = await client.fetch_ohlcv(symbol, "1m")
        assert len(rows) == 3  # two closed kept, the forming one last
        for ts, o, h, low, c, v in rows:
            assert [Decimal(x) for x in (o, h, low, c, v)] == want[ts]
            assert all(isinstance(x, str) and "E" not in x for x in (o, h, low, c, v))
        d = client.watch_ohlcv(symbol, "1m")
        while not d.called:
            fake.step(20)
            await sleep(0.02)
        ((ts, o, h, low, c, v),) = await d
        assert ts in expected_candles(fake, symbol)
        # older than what is kept: from REST
        first = min(want)
        history = await client.fetch_ohlcv(symbol, "1m", since=first, limit=3)
        assert [r[0] for r in history] == sorted(want)[:3]
        for ts, o, h, low, c, v in history:
            assert [Decimal(x) for x in (o, h, low, c, v)] == want[ts]
        with pytest.raises(BadRequest, match="timeframe"):
            await client.fetch_ohlcv(symbol, "2m")
    finally:
        await client.close()
        await fake.stop()


# -- errors, refusals, close ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_symbol_is_bad_symbol():
    fake = await start_fake()
    client = client_for(fake)
    try:
        with pytest.raises(BadSymbol, match="BTC/USD"):
            await client.fetch_order_book("BTC-USD")
        with pytest.raises(BadSymbol):
            await client.fetch_trades("NOPE/USD")
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_refused_subscribe_fails_only_its_stream():
    fake = await start_fake()
    # a market the client believes in but Coinbase does not serve
    extra = Market(symbol="ZZZ/USD", id="ZZZ-USD", base="ZZZ", quote="USD")
    markets = [
        Market(symbol=s, id=fake.product_id(s), base=s[:3], quote="USD")
        for s in ("BTC/USD", "ETH/USD")
    ] + [extra]
    client = client_for(fake, markets=markets, resync_timeout=3)
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        good = client.fetch_order_book("BTC/USD")
        bad = client.fetch_order_book("ZZZ/USD")
        with pytest.raises(BadSymbol, match="ZZZ-USD is not a valid product"):
            await bad
        book = await good  # refused with it in one message, then subscribed again
        assert_book_true(fake, book)
        failed = of(status, StreamFailed)
        assert [(e.channel, e.symbol) for e in failed] == [("book", "ZZZ/USD")]
        assert client.stats.refused_topics >= 1
        assert "ZZZ/USD" not in client.books
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_connection_lost_while_a_resubscribe_waits_in_the_queue():
    a, b = "BTC/USD", "ETH/USD"
    fake = await start_fake(seed=8)
    client = client_for(fake, resync_timeout=5)
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await client.fetch_order_books([a, b])
        await drive(fake, 100)
        await flush(fake, client, [a, b])
        await sleep(0.2)
        # a's resync: its unsubscribe leaves now, its subscribe 0.2 s later (5/s) ...
        assert l2update(fake, a, [], client.books[a].timestamp - 1000) == 1
        await wait_for(lambda: client.stats.resubscribes == 1, what="a resyncing")
        await sleep(0.05)
        # ... and b's unsubscribe waits behind it when the connection drops
        assert l2update(fake, b, [], client.books[b].timestamp - 1000) == 1
        await wait_for(lambda: client.stats.resubscribes == 2, what="b resyncing")
        fake.server.sessions[0].drop()
        await drive(fake, 200)
        await settled_books(fake, client, [a, b])
        synced = [e.symbol for e in of(status, BookSynced)]
        assert synced.count(a) >= 2 and synced.count(b) >= 2
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_bad_input_is_counted_and_the_feed_goes_on():
    fake = await start_fake(seed=6)
    client = client_for(fake)
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await client.fetch_order_book("BTC/USD")
        pid = fake.product_id("BTC/USD")
        fake.server.broadcast({"type": "received", "product_id": pid, "sequence": 1})
        fake.server.broadcast({"type": "brand_new_type"})
        fake.server.broadcast({"type": "l2update", "changes": []})  # no product_id
        fake.server.broadcast({"type": "match", "product_id": pid})  # no trade_id
        fake.server.sessions[0].send_garbage()
        assert fake.send_error("ErrSlowConsume") == 1  # not about a subscribe: no stream fails
        await drive(fake, 200)
        await flush(fake, client, ["BTC/USD"])
        assert client.stats.unknown_messages == 2
        assert client.stats.malformed == 2
        assert client.stats.exchange_errors == 1
        assert not of(status, StreamFailed) and not of(status, BookResyncing)
        assert_book_true(fake, await client.fetch_order_book("BTC/USD"))
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_subscribes_within_the_deadline_and_resubscribes_on_reconnect():
    fake = await start_fake(subscribe_timeout=0.3)
    client = client_for(fake)
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        await client.fetch_order_book("BTC/USD")
        fake.server.sessions[0].drop()
        await wait_for(lambda: len(of(status, Connected)) == 2, what="reconnect")
        await sleep(0.5)  # past the fake's subscribe deadline
        assert fake.subscribe_timeouts == 0
        assert len(fake.server.sessions) == 1
        book = await client.fetch_order_book("BTC/USD")
        assert_book_true(fake, book)
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_close_is_clean():
    fake = await start_fake()
    client = client_for(fake)
    client.candle_poll_interval = 0.05
    await client.fetch_order_book("BTC/USD")
    await client.fetch_trades("ETH/USD")
    await client.fetch_ohlcv("ETH/USD")
    pending = client.watch_ticker("BTC/USD")
    pending.addErrback(lambda f: f)
    await client.close()
    await wait_for(lambda: fake.server.close_codes == [1000], what="close code 1000")
    assert client_delayed_calls() == []
    with pytest.raises(Exception, match="closed"):
        await client.fetch_order_book("BTC/USD")
    await fake.stop()


@pytest_twisted.ensureDeferred
async def test_unsubscribe_releases_topics_and_shared_heartbeat():
    fake = await start_fake()
    client = client_for(fake)
    try:
        await client.fetch_order_book("BTC/USD")
        await client.fetch_trades("BTC/USD")
        pid = fake.product_id("BTC/USD")
        session = fake.server.sessions[0]
        wanted = {f"level2_batch:{pid}", f"matches:{pid}", f"heartbeat:{pid}"}
        await wait_for(lambda: wanted <= session.subscriptions, what="subscribed")
        await client.unsubscribe("book", "BTC/USD")
        await wait_for(lambda: f"level2_batch:{pid}" not in session.subscriptions)
        assert f"heartbeat:{pid}" in session.subscriptions  # trades still use it
        await client.unsubscribe("trades", "BTC/USD")
        await wait_for(lambda: not session.subscriptions, what="everything released")
    finally:
        await client.close()
        await fake.stop()
