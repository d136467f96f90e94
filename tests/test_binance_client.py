"""Binance client end to end, part two: TLS, partial books, the stream pool, giving up,
resync timeouts, planned shutdowns, bad input, stalls, observers and REST fallbacks.

The real client runs over loopback sockets against the fake Binance
(:mod:`txexchange.testing.binance`); every book handed out is compared level
for level with the simulated market's true book at the book's update id.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.logger import formatEvent, globalLogPublisher

import txexchange
from helpers import sleep, wait_for
from txexchange.client.pool import StreamPool
from txexchange.delivery import BookResyncing, BookSynced, StreamFailed
from txexchange.errors import (
    MalformedMessage,
    ResyncTimeout,
    RetriesExhausted,
    TLSVerificationError,
)
from txexchange.testing import TestCA
from txexchange.testing.binance import FakeBinance
from txexchange.testing.market import SimulatedMarket
from txexchange.transport import (
    Connected,
    Disconnected,
    FrameRejected,
    ReconnectScheduled,
    RetriesExhaustedEvent,
    RolledOver,
    Stalled,
    TLSFailure,
    TransportOptions,
)

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)


# -- helpers ------------------------------------------------------------------


def truth(fake: FakeBinance, symbol: str, nonce: int, limit: int | None = None) -> Any:
    bids, asks, uid = fake.true_book(symbol, nonce=nonce, limit=limit)
    assert uid == nonce
    return [tuple(level) for level in bids], [tuple(level) for level in asks]


def assert_book_true(fake: FakeBinance, book: Any, limit: int | None = None) -> None:
    bids, asks = truth(fake, book.symbol, book.nonce, limit=limit)
    assert list(book.bids) == bids, f"{book.symbol} bids differ at {book.nonce}"
    assert list(book.asks) == asks, f"{book.symbol} asks differ at {book.nonce}"


async def start_fake(symbols=("BTC/USDT", "ETH/USDT"), **kw: Any) -> FakeBinance:
    return await FakeBinance(symbols, reactor=reactor, **kw).start()


def client_for(fake: FakeBinance, **kw: Any) -> Any:
    kw.setdefault("transport", FAST)
    return txexchange.exchange("binance", reactor=reactor, urls=fake.urls, **kw)


async def drive(fake: FakeBinance, steps: int, batch: int = 20, pause: float = 0.002) -> None:
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


async def drive_until(fake: FakeBinance, d: Deferred, what: str, timeout: float = 10.0) -> Any:
    """Step the market until ``d`` has fired (books need a diff or a partial to sync)."""
    deadline = time.monotonic() + timeout
    while not d.called:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        fake.step(1)
        await sleep(0.005)
    return await d


async def drive_while(fake: FakeBinance, predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        fake.step(1)
        await sleep(0.01)


async def caught_up(fake: FakeBinance, client: Any, symbol: str, timeout: float = 10.0) -> None:
    await wait_for(
        lambda: (
            symbol in client.books
            and client.books[symbol].synced
            and client.books[symbol].nonce == fake.market.last_update_id(symbol)
        ),
        timeout=timeout,
        what=f"{symbol} book caught up with the market",
    )


def depth_requests(fake: FakeBinance) -> list[Any]:
    return [r for r in fake.rest_log if r.path == "/api/v3/depth"]


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


class LogCapture:
    """Collects formatted log lines from the global log publisher."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self)


@pytest_twisted.async_yield_fixture
async def fake():
    f = await start_fake()
    yield f
    await f.stop()


# -- 1. TLS ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_markets_over_https_and_book_over_wss():
    ca = TestCA.generate()
    fake = await start_fake(tls=ca.issue())
    client = client_for(fake, transport=FAST.replace(trust_root=ca.trust_root()))
    try:
        assert fake.urls["ws"].startswith("wss://127.0.0.1:")
        assert fake.urls["rest"].startswith("https://127.0.0.1:")
        markets = await client.load_markets()
        assert {"BTC/USDT", "ETH/USDT"} <= set(markets)
        assert markets["BTC/USDT"].id == "BTCUSDT"
        fake.step(3)
        book = await drive_until(fake, client.fetch_order_book("BTC/USDT"), "book over wss")
        assert_book_true(fake, book)
        await drive(fake, 200)
        await caught_up(fake, client, "BTC/USDT")
        assert_book_true(fake, client.books["BTC/USDT"].snapshot())
        # markets and the snapshot came over https, the diffs over wss
        paths = [r.path for r in fake.rest_log]
        assert paths.count("/api/v3/exchangeInfo") == 1 and "/api/v3/depth" in paths
        session = fake.server.sessions[0]
        assert session.path == "/stream"
        assert "btcusdt@depth@100ms" in session.subscriptions
        assert fake.server.connections_accepted == 1
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_tls_untrusted_ca_fails_clearly_and_fast():
    ca = TestCA.generate()
    stranger = TestCA.generate("some other CA")
    fake = await start_fake(tls=ca.issue())
    wrong = FAST.replace(trust_root=stranger.trust_root(), max_retries=0)
    # REST: load_markets fails at once with a TLS error (not retried, not a timeout)
    client = client_for(fake, transport=wrong, resync_timeout=20)
    forever = None
    ws_only = None
    try:
        started = time.monotonic()
        with pytest.raises(TLSVerificationError, match="certificate"):
            await client.load_markets()
        with pytest.raises(TLSVerificationError, match="certificate"):
            await client.fetch_order_book("BTC/USDT")
        assert time.monotonic() - started < 5
        assert fake.rest_log == []  # no request got through the handshake
        assert client.markets == {}

        # WebSocket: markets given, so only the wss connection is tried
        trusted = client_for(fake, transport=FAST.replace(trust_root=ca.trust_root()))
        markets = await trusted.load_markets()
        await trusted.close()
        ws_only = client_for(fake, transport=wrong, markets=markets.values(), resync_timeout=20)
        status: list[Any] = []
        ws_only.subscribe("status", None, status.append)
        started = time.monotonic()
        with pytest.raises(TLSVerificationError, match="not trusted"):
            await ws_only.fetch_order_book("BTC/USDT")
        assert time.monotonic() - started < 5
        # the event is published right after the pending calls have failed
        await wait_for(lambda: of(status, RetriesExhaustedEvent), what="RetriesExhaustedEvent")
        assert len(of(status, TLSFailure)) == 1
        exhausted = of(status, RetriesExhaustedEvent)
        assert len(exhausted) == 1 and isinstance(exhausted[0].error, TLSVerificationError)
        failed = of(status, StreamFailed)
        assert [(e.channel, e.symbol) for e in failed] == [("book", "BTC/USDT")]
        assert fake.server.connections_accepted == 0  # no handshake ever completed
        assert "BTC/USDT" not in ws_only.books
        # a later call tries again on a new connection, and fails the same clear way
        with pytest.raises(TLSVerificationError, match="not trusted"):
            await ws_only.fetch_order_book("ETH/USDT")
        await wait_for(lambda: len(of(status, RetriesExhaustedEvent)) == 2)
        assert len(of(status, TLSFailure)) == 2

        # retrying forever against an untrusted server: the pull still ends, on time
        forever = client_for(
            fake,
            transport=wrong.replace(max_retries=None),
            markets=markets.values(),
            resync_timeout=0.5,
        )
        status2: list[Any] = []
        forever.subscribe("status", None, status2.append)
        with pytest.raises(ResyncTimeout, match="BTC/USDT"):
            await forever.fetch_order_book("BTC/USDT")
        assert len(of(status2, TLSFailure)) >= 2  # it kept trying, and kept failing
        assert of(status2, Connected) == []
    finally:
        await client.close()
        if ws_only is not None:
            await ws_only.close()
        if forever is not None:
            await forever.close()
        await fake.stop()


# -- 2. partial books -------------------------------------------------------------


@pytest.mark.parametrize("depth", [5, 10, 20])
@pytest_twisted.ensureDeferred
async def test_partial_books_come_from_the_partial_stream(depth):
    fake = await start_fake(seed=depth)
    client = client_for(fake, book_mode="partial", partial_depth=depth)
    try:
        fake.step(2)
        book = await drive_until(fake, client.fetch_order_book("ETH/USDT"), "partial book")
        assert book.symbol == "ETH/USDT"
        assert len(book.bids) == depth and len(book.asks) == depth
        assert_book_true(fake, book, limit=depth)
        session = fake.server.sessions[0]
        assert session.subscriptions == {f"ethusdt@depth{depth}@100ms"}
        # later books keep matching the true top N at their update id
        seen = []
        client.subscribe("book", "ETH/USDT", lambda u: seen.append(u.book()))
        await drive(fake, 100)
        await wait_for(
            lambda: seen and seen[-1].nonce == fake.market.last_update_id("ETH/USDT"),
            what="partial updates caught up",
        )
        assert len(seen) >= 2
        for b in seen:
            assert_book_true(fake, b, limit=depth)
        later = await client.fetch_order_book("ETH/USDT", limit=3)
        assert later.bids == seen[-1].bids[:3] and later.asks == seen[-1].asks[:3]
        # never a REST snapshot, and the stream itself carried the book
        assert depth_requests(fake) == []
        assert client.stats.snapshot_requests == 0
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_partial_book_recovers_from_a_drop_without_rest(fake):
    client = client_for(fake, book_mode="partial", partial_depth=10)
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        book = await drive_until(fake, client.fetch_order_book("BTC/USDT"), "partial book")
        assert_book_true(fake, book, limit=10)
        fake.server.sessions[0].drop()
        await wait_for(lambda: of(status, Disconnected), what="disconnect seen")
        pending = client.fetch_order_book("BTC/USDT")
        book = await drive_until(fake, pending, "partial book after reconnect")
        assert_book_true(fake, book, limit=10)
        assert fake.server.connections_accepted == 2
        assert [e.symbol for e in of(status, BookResyncing)] == ["BTC/USDT"]
        assert [e.symbol for e in of(status, BookSynced)] == ["BTC/USDT", "BTC/USDT"]
        assert depth_requests(fake) == []
    finally:
        await client.close()


# -- 3. the stream pool -------------------------------------------------------------


class StubConnection:
    """Stands in for a transport Connection: records topics, answers at once."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.topics: set[str] = set()
        self.started = 0
        self.closed = False
        self.sub_calls = 0

    def start(self) -> StubConnection:
        self.started += 1
        return self

    def subscribe(self, topics: list[str]) -> Deferred[None]:
        self.sub_calls += 1
        self.topics.update(topics)
        return succeed(None)

    def unsubscribe(self, topics: list[str]) -> Deferred[None]:
        self.topics.difference_update(topics)
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


def test_stream_pool_spreads_topics_over_connections_within_the_limit():
    made: list[StubConnection] = []

    def factory() -> StubConnection:
        conn = StubConnection(len(made))
        made.append(conn)
        return conn

    pool = StreamPool(factory, 1024)
    topics = [f"s{i:04d}usdt@depth@100ms" for i in range(2500)]
    results = [pool.add(t) for t in topics]
    assert all(d.called for d in results)
    assert len(made) == 3 and pool.connections == made
    assert [len(c.topics) for c in made] == [1024, 1024, 452]
    assert all(c.started == 1 for c in made)
    assert len(pool) == 2500
    assert pool.connection_of(topics[0]) is made[0]
    assert pool.connection_of(topics[1024]) is made[1]
    assert pool.connection_of(topics[2499]) is made[2]
    assert sorted(pool.topics_of(made[2])) == sorted(made[2].topics)
    # adding a topic again keeps it where it is
    pool.add(topics[5])
    assert len(made) == 3 and len(made[0].topics) == 1024 and len(pool) == 2500
    # removing frees room: the next topic goes to the first connection with room
    pool.remove(topics[10])
    assert topics[10] not in made[0].topics and pool.connection_of(topics[10]) is None
    pool.add("extra@trade")
    assert pool.connection_of("extra@trade") is made[0] and len(made[0].topics) == 1024
    assert len(made) == 3
    # fill the last connection exactly, then one more opens a fourth
    for i in range(1024 - 452):
        pool.add(f"fill{i}@trade")
    assert [len(c.topics) for c in made] == [1024, 1024, 1024]
    pool.add("overflow@trade")
    assert len(made) == 4 and made[3].topics == {"overflow@trade"} and made[3].started == 1
    assert max(len(c.topics) for c in made) <= 1024
    assert pool.remove("never-added").called
    d = pool.close()
    assert d.called and all(c.closed for c in made)


def test_stream_pool_without_a_limit_uses_one_connection():
    made: list[StubConnection] = []
    pool = StreamPool(lambda: made.append(StubConnection(len(made))) or made[-1], None)
    for i in range(3000):
        pool.add(f"t{i}")
    assert len(made) == 1 and len(made[0].topics) == 3000


# -- 4. retries exhausted -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_server_gone_pending_fetch_fails_with_retries_exhausted():
    fake = await start_fake()
    client = client_for(
        fake,
        transport=TransportOptions(max_retries=1, initial_delay=0.05, jitter=0),
        resync_timeout=20,
    )
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        book = await drive_until(fake, client.fetch_order_book("BTC/USDT"), "first book")
        assert_book_true(fake, book)
        # ETH's snapshot never comes, so its fetch is pending when the server goes
        fake.server.rest.hang_next(path="/api/v3/depth")
        pending = client.fetch_order_book("ETH/USDT")
        await wait_for(lambda: fake.server.rest.hung_requests, what="ETH snapshot hung")
        fake.step(3)
        await sleep(0.05)
        assert not pending.called
        started = time.monotonic()
        await fake.stop()
        with pytest.raises(RetriesExhausted) as info:
            await pending
        assert time.monotonic() - started < 5  # long before the 20 s resync timeout
        assert info.value.retries == 1 and "/stream" in info.value.url
        # status observers heard of it first: the cause, then the streams it failed
        exhausted = of(status, RetriesExhaustedEvent)
        assert len(exhausted) == 1 and isinstance(exhausted[0].error, RetriesExhausted)
        scheduled = of(status, ReconnectScheduled)
        assert [(e.delay, e.attempt) for e in scheduled] == [(0.05, 1)]
        failed = {(e.channel, e.symbol): e.error for e in of(status, StreamFailed)}
        assert set(failed) == {("book", "BTC/USDT"), ("book", "ETH/USDT")}
        assert all(isinstance(e, RetriesExhausted) for e in failed.values())
        # order: lost, retry scheduled, gave up
        kinds = [type(e) for e in status if isinstance(e, Disconnected | ReconnectScheduled)]
        assert kinds == [Disconnected, ReconnectScheduled]
        assert status.index(exhausted[0]) > status.index(scheduled[0])
        assert [e.symbol for e in of(status, BookResyncing)] == ["BTC/USDT"]
        assert all(status.index(e) > status.index(exhausted[0]) for e in of(status, StreamFailed))
        # a later call starts over on a new connection and gives up the same way, fast
        started = time.monotonic()
        with pytest.raises(RetriesExhausted):
            await client.fetch_order_book("BTC/USDT")
        assert time.monotonic() - started < 5
        await wait_for(lambda: len(of(status, RetriesExhaustedEvent)) == 2)
        assert len(client.pool.connections) == 2
    finally:
        await client.close()
        await fake.stop()


# -- 5. resync timeout ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hung_snapshot_fails_fetch_with_resync_timeout_naming_the_symbol(fake):
    client = client_for(fake, resync_timeout=0.5)
    try:
        fake.server.rest.hang_next(count=10, path="/api/v3/depth")
        started = time.monotonic()
        d = client.fetch_order_book("ETH/USDT")
        for _ in range(20):  # diffs arrive and are buffered, but no snapshot
            fake.step(1)
            await sleep(0.01)
        with pytest.raises(ResyncTimeout, match="ETH/USDT") as info:
            await d
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 3
        assert "0.5s" in str(info.value)
        assert len(depth_requests(fake)) == 1 and len(fake.server.rest.hung_requests) == 1
        assert not client.books["ETH/USDT"].synced
        # once the exchange answers again the book syncs and equals the truth
        fake.server.rest.clear_faults()
        fake.server.rest.cancel_pending()  # hung requests are cut off; the client retries
        await drive_while(fake, lambda: not client.books["ETH/USDT"].synced, "ETH resynced")
        book = await client.fetch_order_book("ETH/USDT")
        assert_book_true(fake, book)
        assert len(depth_requests(fake)) == 2
    finally:
        await client.close()


# -- 6. serverShutdown -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_server_shutdown_notice_rolls_the_connection_over_without_resync(fake):
    client = client_for(fake, transport=FAST.replace(rollover_overlap_timeout=3))
    running = None
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        books = await drive_until(
            fake, client.fetch_order_books(["BTC/USDT", "ETH/USDT"]), "both books"
        )
        for book in books.values():
            assert_book_true(fake, book)
        resyncs = client.stats.book_resyncs
        snapshots = client.stats.snapshot_requests
        first = fake.server.sessions[0]
        running = fake.run(200)
        first.send({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1}})
        await wait_for(lambda: of(status, RolledOver), timeout=10, what="rollover")
        assert of(status, RolledOver)[0].overlap is True
        assert await first.closed == 1000
        assert fake.server.connections_accepted == 2
        second = fake.server.sessions[0]
        assert second is fake.server.all_sessions[1] and second.is_open
        assert {"btcusdt@depth@100ms", "ethusdt@depth@100ms"} <= second.subscriptions
        fake.stop_running()
        await running
        for symbol in ("BTC/USDT", "ETH/USDT"):
            await caught_up(fake, client, symbol)
            assert_book_true(fake, client.books[symbol].snapshot())
        # no resync, no new snapshot, no disconnect seen by the books
        assert client.stats.book_resyncs == resyncs
        assert client.stats.snapshot_requests == snapshots == len(depth_requests(fake))
        assert of(status, BookResyncing) == [] and of(status, Disconnected) == []
        assert fake.server.close_codes == [1000]
        # and the replacement keeps the feed going
        await drive(fake, 60)
        await caught_up(fake, client, "BTC/USDT")
        assert_book_true(fake, (await client.fetch_order_book("BTC/USDT")))
    finally:
        fake.stop_running()
        await client.close()


# -- 7. malformed and unknown messages ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_malformed_and_unknown_messages_are_counted_logged_and_survived(fake):
    client = client_for(fake)
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        book = await drive_until(fake, client.fetch_order_book("BTC/USDT"), "book")
        assert_book_true(fake, book)
        session = fake.server.sessions[0]
        conn = client.pool.connections[0]
        rejected_before = conn.stats.rejected_frames
        with LogCapture() as logs:
            session.send_garbage()
            session.send({"stream": "btcusdt@depth@100ms", "data": {"junk": 1}})
            session.send({"stream": "btcusdt@depth@100ms", "data": "not an object"})
            session.send({"stream": "btcusdt@avgPrice", "data": {"e": "avgPrice", "w": "1"}})
            session.send({"stream": "dogeusdt@trade", "data": {"e": "trade"}})
            session.send({"stream": "nonsense", "data": {}})
            session.send({"no": "stream", "at": "all"})
            await wait_for(
                lambda: client.stats.malformed >= 2 and client.stats.unknown_messages >= 4,
                what="bad messages counted",
            )
            await wait_for(lambda: conn.stats.rejected_frames > rejected_before)
            await drive(fake, 200)
            await caught_up(fake, client, "BTC/USDT")
        assert client.stats.malformed == 2
        assert client.stats.unknown_messages == 4
        assert conn.stats.rejected_frames == rejected_before + 1
        rejected = of(status, FrameRejected)
        assert len(rejected) == 1 and isinstance(rejected[0].error, MalformedMessage)
        text = "\n".join(logs.lines)
        assert text.count("malformed message") == 2
        assert "frame rejected" in text and "undecodable" in text
        # the feed went on: same connection, no resync, book equals the truth
        assert fake.server.connections_accepted == 1
        assert client.stats.book_resyncs == 0 and of(status, BookResyncing) == []
        assert_book_true(fake, (await client.fetch_order_book("BTC/USDT")))
        assert client.stats.as_dict()["malformed"] == 2
    finally:
        await client.close()


# -- 8. stall -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stalled_connection_is_replaced_and_the_book_resyncs(fake):
    client = client_for(fake, transport=FAST.replace(stall_timeout=0.5))
    running = fake.run(200)  # keeps data flowing: only the stalled socket goes quiet
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        book = await client.fetch_order_book("BTC/USDT")
        assert_book_true(fake, book)
        first = fake.server.sessions[0]
        await sleep(0.6)  # longer than stall_timeout, with data: no stall yet
        assert of(status, Stalled) == []
        stalled_at = time.monotonic()
        first.stall()
        assert len(of(status, BookSynced)) == 1
        await wait_for(
            lambda: len(of(status, BookSynced)) == 2, timeout=10, what="resynced after the stall"
        )
        stalls = of(status, Stalled)
        assert len(stalls) == 1 and stalls[0].silence >= 0.5
        assert time.monotonic() - stalled_at >= 0.45
        order = [
            type(e)
            for e in status
            if isinstance(e, Stalled | Disconnected | BookResyncing | Connected | BookSynced)
        ]
        assert order == [
            Connected,
            BookSynced,
            Stalled,
            Disconnected,
            BookResyncing,
            Connected,
            BookSynced,
        ]
        assert of(status, BookResyncing)[0].symbol == "BTC/USDT"
        assert fake.server.connections_accepted == 2
        second = fake.server.all_sessions[1]
        assert "btcusdt@depth@100ms" in second.subscriptions
        assert client.pool.connections[0].stats.stalls == 1
        fake.stop_running()
        await running
        await caught_up(fake, client, "BTC/USDT")
        book = await client.fetch_order_book("BTC/USDT")
        assert_book_true(fake, book)
    finally:
        fake.stop_running()
        await client.close()


# -- 9. observers and unsubscribe -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_last_observer_leaving_unsubscribes_and_a_fetch_resubscribes(fake):
    client = client_for(fake)
    try:
        a: list[Any] = []
        b: list[Any] = []
        ha = client.subscribe("book", "BTC/USDT", lambda u: a.append(u.book()))
        hb = client.subscribe("book", "BTC/USDT", lambda u: b.append(u.book()))
        await drive(fake, 60)
        await wait_for(lambda: a and a[-1].nonce == fake.market.last_update_id("BTC/USDT"))
        assert [x.nonce for x in a] == [x.nonce for x in b]
        session = fake.server.sessions[0]
        topic = "btcusdt@depth@100ms"
        assert topic in session.subscriptions
        # one leaves: the stream stays, the other still gets every update
        ha.stop()
        n_a = len(a)
        await drive(fake, 60)
        await wait_for(lambda: b[-1].nonce == fake.market.last_update_id("BTC/USDT"))
        assert len(a) == n_a
        assert_book_true(fake, b[-1])
        assert topic in session.subscriptions and "BTC/USDT" in client.books
        # the last one leaves and nothing holds it: unsubscribed on the wire
        hb.stop()
        await wait_for(lambda: topic not in session.subscriptions, what="UNSUBSCRIBE")
        assert "BTC/USDT" not in client.books
        unsubs = [m for m in session.received if m.get("method") == "UNSUBSCRIBE"]
        assert [m["params"] for m in unsubs] == [[topic]]
        n_b = len(b)
        await drive(fake, 20)
        assert len(b) == n_b
        # a later fetch subscribes again (same connection) and syncs from scratch
        snapshots = len(depth_requests(fake))
        book = await drive_until(fake, client.fetch_order_book("BTC/USDT"), "re-subscribed book")
        assert_book_true(fake, book)
        assert topic in session.subscriptions and fake.server.connections_accepted == 1
        assert len(depth_requests(fake)) == snapshots + 1
        # now the pull holds it: an observer coming and going leaves it subscribed
        hc = client.subscribe("book", "BTC/USDT", lambda u: None)
        hc.stop()
        await drive(fake, 20)
        assert topic in session.subscriptions
        await caught_up(fake, client, "BTC/USDT")
        assert_book_true(fake, (await client.fetch_order_book("BTC/USDT")))
    finally:
        await client.close()


# -- 10. REST fallbacks: old candles, tickers of several symbols --------------------------------


@pytest_twisted.ensureDeferred
async def test_fetch_ohlcv_since_older_than_memory_goes_to_rest():
    market = SimulatedMarket(("BTC/USDT", "ETH/USDT"), seed=7, virtual_step_ms=1000)
    fake = await start_fake(market=market)
    # 30 minutes of market history before the client starts; it keeps only 5 candles
    fake.step(30 * 60 * 2)
    client = client_for(fake, candles_limit=5)
    try:
        rows = await client.fetch_ohlcv("BTC/USDT", "1m")
        assert 2 <= len(rows) <= 6
        oldest_in_memory = rows[0][0]
        seed = [r for r in fake.rest_log if r.path == "/api/v3/klines"]
        assert len(seed) == 1 and "startTime" not in seed[0].args
        # within memory: answered without REST
        recent = await client.fetch_ohlcv("BTC/USDT", "1m", since=oldest_in_memory)
        assert recent and recent[0][0] == oldest_in_memory
        assert len([r for r in fake.rest_log if r.path == "/api/v3/klines"]) == 1
        # older than memory: REST with startTime
        since = oldest_in_memory - 10 * 60_000
        old = await client.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=12)
        klines = [r for r in fake.rest_log if r.path == "/api/v3/klines"]
        assert len(klines) == 2
        args = klines[1].args
        assert args["startTime"] == [str(since)] and args["limit"] == ["12"]
        assert args["symbol"] == ["BTCUSDT"] and args["interval"] == ["1m"]
        assert len(old) == 12
        times = [r[0] for r in old]
        assert times[0] >= since and times == sorted(times)
        assert all(t % 60_000 == 0 for t in times)
        assert all(len(r) == 6 and all(isinstance(v, str) for v in r[1:]) for r in old)
        for _ts, o, h, lo, c, _v in old:
            assert float(lo) <= min(float(o), float(c)) <= max(float(o), float(c)) <= float(h)
        # the REST rows agree with the candles the client keeps, where they overlap
        by_time = {r[0]: r for r in recent[:-1]}  # closed ones
        overlap = [r for r in old if r[0] in by_time]
        assert overlap, "REST history should reach into what is kept in memory"
        for r in overlap:
            assert r == by_time[r[0]]
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_fetch_tickers_for_two_symbols(fake):
    client = client_for(fake)
    try:
        fake.step(300)
        tickers = await client.fetch_tickers(["BTC/USDT", "ETH/USDT"])
        assert set(tickers) == {"BTC/USDT", "ETH/USDT"}
        for symbol, t in tickers.items():
            assert t["symbol"] == symbol
            assert isinstance(t["last"], str) and float(t["last"]) > 0
            assert float(t["low"]) <= float(t["last"]) <= float(t["high"])
        session = fake.server.sessions[0]
        # served from the REST seed at first; the streams follow
        await wait_for(lambda: {"btcusdt@ticker", "ethusdt@ticker"} <= session.subscriptions)
        seeds = [r.args.get("symbol") for r in fake.rest_log if r.path == "/api/v3/ticker/24hr"]
        assert sorted(seeds) == [["BTCUSDT"], ["ETHUSDT"]]
        # after more updates the stream keeps them current: best bid/ask equal the truth
        await drive(fake, 100)

        def top(t: dict[str, Any]) -> tuple[Any, ...]:
            return (t["bid"], t["bidVolume"], t["ask"], t["askVolume"])

        def true_top(symbol: str) -> tuple[Any, ...]:
            bids, asks, _ = fake.true_book(symbol, limit=1)
            return (bids[0][0], bids[0][1], asks[0][0], asks[0][1])

        await wait_for(
            lambda: all(
                top(client.fetch_ticker(s).result) == true_top(s) for s in ("BTC/USDT", "ETH/USDT")
            ),
            what="tickers follow the market",
        )
        again = client.fetch_tickers(["BTC/USDT", "ETH/USDT"])
        assert again.called  # served from memory at once
        for symbol, t in again.result.items():
            assert t["symbol"] == symbol and top(t) == true_top(symbol)
            assert t["timestamp"] > tickers[symbol]["timestamp"]
    finally:
        await client.close()
