"""Tests for :class:`txexchange.testing.coinbase.FakeCoinbase`.

Real reactor, real loopback sockets: a bare Autobahn client (and the project's
:class:`~txexchange.transport.Connection` with a small Coinbase ``WireRules``
written here) on the WebSocket side, treq on the REST side.  The level-2 book
rebuilding on this side is written from the Coinbase Exchange documentation
and the message shapes are checked against the fixtures in
``../shared/protocols/vectors.json``; nothing here uses the Coinbase adapter.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Hashable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.web.client import Agent, HTTPConnectionPool

from helpers import sleep, wait_for
from txexchange.errors import SubscriptionError
from txexchange.testing import TestCA
from txexchange.testing.coinbase import FakeCoinbase, coinbase_time
from txexchange.testing.market import SimulatedMarket
from txexchange.transport import Connection, ControlReply, Heartbeat, TransportOptions

TIMEOUT = 5.0
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def _fixture(name: str) -> Any:
    fixtures = _vectors()["fixtures"]["coinbase_exchange"]
    return next(f["message"] for f in fixtures if f["name"] == name)


# -- test-side level-2 book, from the docs -----------------------------------------------------


class Book:
    """A local level-2 book: ``snapshot`` replaces it, each ``l2update`` change
    ``[side, price, size]`` sets the new absolute size (zero removes the level)."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}

    def load(self, snapshot: dict[str, Any]) -> None:
        assert snapshot["type"] == "snapshot"
        self.bids = {p: s for p, s in snapshot["bids"]}
        self.asks = {p: s for p, s in snapshot["asks"]}

    def apply(self, update: dict[str, Any]) -> None:
        assert update["type"] == "l2update"
        for side, price, size in update["changes"]:
            levels = self.bids if side == "buy" else self.asks
            if Decimal(size) == 0:
                levels.pop(price, None)
            else:
                levels[price] = size

    def sides(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return bids, asks


def test_book_code_follows_the_documented_fixtures() -> None:
    book = Book()
    book.load(_fixture("level2_snapshot"))
    book.apply(_fixture("l2update_single"))
    assert book.sides() == (
        [("10101.80000000", "0.162567"), ("10101.10", "0.45054140")],
        [("10102.55", "0.57753524")],
    )
    book.apply({"type": "l2update", "changes": [["buy", "10101.80000000", "0.00000000"]]})
    assert book.sides()[0] == [("10101.10", "0.45054140")]
    # and it can fail: a sell change lands on the asks, not the bids
    book.apply({"type": "l2update", "changes": [["sell", "10101.10", "1"]]})
    assert book.sides()[0] == [("10101.10", "0.45054140")] != book.sides()[1]


def test_there_is_no_coinbase_checksum_to_verify() -> None:
    """Coinbase level 2 has no checksum (PROTOCOLS.md 4.3): no vector, no field."""
    assert not [v for v in _vectors()["checksums"] if "coinbase" in v["id"]]
    for name in ("level2_snapshot", "l2update_single", "l2update_multi"):
        assert "checksum" not in _fixture(name)
        assert "sequence" not in _fixture(name)


# -- clients ---------------------------------------------------------------------------------------


class Client(WebSocketClientProtocol):
    """A bare WebSocket client keeping every message (JSON decoded, else text)."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[Client] = Deferred()
        self.ended: Deferred[tuple[bool, int | None]] = Deferred()
        self.messages: list[Any] = []
        self.raw: list[bytes] = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.raw.append(payload)
        try:
            self.messages.append(json.loads(payload))
        except ValueError:
            self.messages.append(payload.decode())

    def onClose(self, wasClean: bool, code: int | None, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.ended.called:
            self.ended.callback((wasClean, code))

    def send_json(self, obj: Any) -> None:
        self.sendMessage(json.dumps(obj).encode())

    def of(self, *types: str, product: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if isinstance(m, dict)
            and m.get("type") in types
            and (product is None or m.get("product_id") == product)
        ]

    def replies(self) -> list[dict[str, Any]]:
        return self.of("subscriptions", "error")

    async def request(self, obj: Any) -> dict[str, Any]:
        before = len(self.replies())
        if isinstance(obj, str | bytes):
            self.sendMessage(obj.encode() if isinstance(obj, str) else obj)
        else:
            self.send_json(obj)
        await wait_for(lambda: len(self.replies()) > before, TIMEOUT, f"reply {obj!r:.60}")
        return self.replies()[before]


_clients: list[Client] = []


async def connect(url: str) -> Client:
    port = int(url.split(":")[2].split("/")[0])
    factory = WebSocketClientFactory(url, reactor=reactor)
    factory.protocol = Client
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT).connect(factory)
    await client.opened.addTimeout(TIMEOUT, reactor)
    _clients.append(client)
    return client


async def get(fake: FakeCoinbase, path: str, **params: Any) -> tuple[int, Any, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    response = await client.get(fake.urls["rest"] + path, params=params)
    body = await response.content()
    return response.code, json.loads(body), response.headers


def step_until(fake: FakeCoinbase, symbol: str, predicate: Any = None, limit: int = 10_000) -> Any:
    for _ in range(limit):
        for update in fake.step():
            if update.symbol == symbol and (predicate is None or predicate(update)):
                return update
    raise AssertionError(f"no matching update for {symbol}")


def changes(update: Any) -> bool:
    return bool(update.bids or update.asks)


def our_delayed_calls(fake: FakeCoinbase) -> list[Any]:
    """Active delayed calls that belong to ``fake`` (its loops or its timers)."""
    found = []
    loops = [fake._loop, *fake._loops]
    for call in reactor.getDelayedCalls():
        if not call.active():
            continue
        owner = getattr(call.func, "__self__", None)
        module = getattr(call.func, "__module__", "") or ""
        ours = owner is fake or (owner is not None and any(owner is lp for lp in loops if lp))
        if ours or module == "txexchange.testing.coinbase":
            found.append(call)
    return found


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    for client in _clients:
        if client.transport is not None:
            client.transport.abortConnection()
    _clients.clear()


@pytest_twisted.async_yield_fixture
async def fake() -> AsyncIterator[FakeCoinbase]:
    fc = await FakeCoinbase(
        ("BTC/USD", "ETH/USD", "ETH/EUR"),
        reactor=reactor,
        seed=5,
        heartbeat_interval=None,
        ticker_batch_interval=None,
    ).start()
    try:
        yield fc
    finally:
        await fc.stop()
        assert our_delayed_calls(fc) == []


L2 = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch"]}


# -- REST ------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_urls_products_time_and_not_found(fake: FakeCoinbase) -> None:
    port = fake.server.port
    assert fake.urls == {
        "ws": f"ws://127.0.0.1:{port}/ws-feed",
        "ws_direct": f"ws://127.0.0.1:{port}/ws-direct",
        "rest": f"http://127.0.0.1:{port}",
    }
    code, body, _h = await get(fake, "/products")
    assert code == 200 and [p["id"] for p in body] == ["BTC-USD", "ETH-USD", "ETH-EUR"]
    btc = body[0]
    assert (btc["base_currency"], btc["quote_currency"], btc["status"]) == ("BTC", "USD", "online")
    assert (btc["quote_increment"], btc["base_increment"]) == ("0.01", "0.00000001")
    assert btc["trading_disabled"] is False
    code, one, _h = await get(fake, "/products/ETH-EUR")
    assert code == 200 and one == body[2]
    for path in ("/products/DOGE-USD", "/products/DOGE-USD/book", "/nothing"):
        code, err, _h = await get(fake, path)
        assert (code, err) == (404, {"message": "NotFound"})
    code, now, _h = await get(fake, "/time")
    assert code == 200 and set(now) == {"iso", "epoch"} and now["iso"].endswith("Z")
    assert abs(now["epoch"] - reactor.seconds()) < 5
    assert [r.path for r in fake.rest_log][:2] == ["/products", "/products/ETH-EUR"]


@pytest_twisted.ensureDeferred
async def test_rest_book_levels_and_sequence(fake: FakeCoinbase) -> None:
    fake.step(100)
    bids, asks, seq = fake.true_book("BTC/USD")
    code, book, _h = await get(fake, "/products/BTC-USD/book", level=2)
    assert code == 200
    assert set(book) == {"bids", "asks", "sequence", "auction_mode", "auction", "time"}
    assert book["sequence"] == seq == fake.sequence("BTC/USD") and type(seq) is int
    assert [(p, s) for p, s, _n in book["bids"]] == bids
    assert [(p, s) for p, s, _n in book["asks"]] == asks
    assert all(isinstance(n, int) and n >= 1 for _p, _s, n in book["bids"] + book["asks"])
    _code, top, _h = await get(fake, "/products/BTC-USD/book")  # level 1 by default
    assert [(p, s) for p, s, _n in top["bids"]] == bids[:1]
    assert [(p, s) for p, s, _n in top["asks"]] == asks[:1]
    _code, l3, _h = await get(fake, "/products/BTC-USD/book", level=3)
    assert len(l3["bids"]) == len(bids) and len(l3["bids"][0][2]) == 36  # an order id
    code, err, _h = await get(fake, "/products/BTC-USD/book", level=4)
    assert (code, err) == (400, {"message": "Invalid level"})


@pytest_twisted.ensureDeferred
async def test_rest_trades_ticker_stats_candles(fake: FakeCoinbase) -> None:
    updates = fake.step(400)
    trades = [t for u in updates if u.symbol == "ETH/USD" for t in u.trades]
    assert len(trades) > 12
    code, rows, headers = await get(fake, "/products/ETH-USD/trades", limit=5)
    assert code == 200 and [r["trade_id"] for r in rows] == [t.id for t in trades[-5:][::-1]]
    assert set(rows[0]) == {"time", "trade_id", "price", "size", "side"}
    # side is the maker's: a buyer who aggressed shows as "sell"
    assert rows[0]["side"] == ("sell" if trades[-1].side == "buy" else "buy")
    assert headers.getRawHeaders("cb-before") == [str(trades[-1].id)]
    assert headers.getRawHeaders("cb-after") == [str(trades[-5].id)]
    _code, older, _h = await get(fake, "/products/ETH-USD/trades", limit=3, after=trades[-5].id)
    assert [r["trade_id"] for r in older] == [t.id for t in trades[-8:-5][::-1]]
    _code, newer, _h = await get(fake, "/products/ETH-USD/trades", limit=2, before=trades[-5].id)
    assert [r["trade_id"] for r in newer] == [trades[-3].id, trades[-4].id]
    code, ticker, _h = await get(fake, "/products/ETH-USD/ticker")
    assert set(ticker) == {"ask", "bid", "volume", "trade_id", "price", "size", "time",
                           "rfq_volume"}  # fmt: skip
    bids, asks, _seq = fake.true_book("ETH/USD", limit=1)
    assert (ticker["bid"], ticker["ask"]) == (bids[0][0], asks[0][0])
    assert ticker["trade_id"] == trades[-1].id
    assert Decimal(ticker["volume"]) == sum(Decimal(t.amount) for t in trades)
    _code, stats, _h = await get(fake, "/products/ETH-USD/stats")
    assert Decimal(stats["high"]) == max(Decimal(t.price) for t in trades)
    assert Decimal(stats["low"]) == min(Decimal(t.price) for t in trades)
    assert Decimal(stats["last"]) == Decimal(trades[-1].price)
    code, candles, _h = await get(fake, "/products/ETH-USD/candles", granularity=60)
    assert code == 200 and len(candles) == 1  # 400 virtual ms: one minute
    time, low, high, opening, close, volume = candles[0]
    assert time == trades[0].timestamp // 60_000 * 60
    assert (opening, close) == (float(trades[0].price), float(trades[-1].price))
    assert (low, high) == (float(stats["low"]), float(stats["high"]))
    assert volume == pytest.approx(float(sum(Decimal(t.amount) for t in trades)))
    code, err, _h = await get(fake, "/products/ETH-USD/candles", granularity=61)
    assert (code, err) == (400, {"message": "Unsupported granularity"})
    code, err, _h = await get(
        fake, "/products/ETH-USD/candles", granularity=60, start="2026-01-01T00:00:00Z",
        end="2026-01-02T00:00:00Z",
    )  # fmt: skip
    assert code == 400 and "exceeds 300" in err["message"]


@pytest_twisted.ensureDeferred
async def test_rest_rate_limit_is_429(fake: FakeCoinbase) -> None:
    fake.rest_rate = 0.001  # no refill during the test: the burst is all there is
    for _ in range(15):
        code, _body, _h = await get(fake, "/products/BTC-USD/ticker")
        assert code == 200
    code, body, _h = await get(fake, "/products/BTC-USD/book")
    assert (code, body) == (429, {"message": "Public rate limit exceeded"})
    assert fake.rejected_429 == 1
    # an injected fault has the same shape, on any path
    fake.fail_rest_next(429, path="/time")
    code, body, _h = await get(fake, "/time")
    assert (code, body) == (429, {"message": "Public rate limit exceeded"})


def test_rest_rate_refills_on_the_clock() -> None:
    clock = Clock()
    fc = FakeCoinbase(reactor=clock, clock=clock)
    assert all(fc._allow() for _ in range(15))
    assert not fc._allow()
    clock.advance(0.1)  # 10 a second: one more
    assert fc._allow() and not fc._allow()
    clock.advance(60)
    assert sum(fc._allow() for _ in range(20)) == 15


# -- WebSocket: subscribe --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_replies_and_errors(fake: FakeCoinbase) -> None:
    client = await connect(fake.urls["ws"])
    reply = await client.request(_fixture("subscribe_level2_batch"))
    assert reply == {
        "type": "subscriptions",
        "channels": [{"name": "level2_batch", "product_ids": ["ETH-USD", "BTC-USD"]}],
    }
    reply = await client.request(_fixture("subscribe_heartbeat_object_form"))
    assert reply["channels"] == [
        {"name": "level2_batch", "product_ids": ["ETH-USD", "BTC-USD"]},
        {"name": "heartbeat", "product_ids": ["ETH-EUR"]},
    ]
    # form A with a per-channel override, and a product subscribed twice
    reply = await client.request({
        "type": "subscribe", "product_ids": ["BTC-USD"],
        "channels": ["ticker", {"name": "matches", "product_ids": ["ETH-USD", "ETH-USD"]}],
    })  # fmt: skip
    assert reply["channels"][2:] == [
        {"name": "ticker", "product_ids": ["BTC-USD"]},
        {"name": "matches", "product_ids": ["ETH-USD"]},
    ]
    failed = {"type": "error", "message": "Failed to subscribe"}
    for request, reason in (
        ({"type": "subscribe", "product_ids": ["BTC-USD"]}, "No channels provided"),
        ({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": []},
         "No channels provided"),
        ({"type": "subscribe", "product_ids": ["BTC-XYZ"], "channels": ["ticker"]},
         "BTC-XYZ is not a valid product"),
        ({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["candles"]},
         "candles is not a valid channel"),
        ({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "level2"]},
         "level2, level3, and full channels now require authentication. "
         "https://docs.cloud.coinbase.com/exchange/docs/websocket-auth"),
        ({"type": "subscribe", "channels": ["ticker"]}, "No product ids provided"),
    ):  # fmt: skip
        assert await client.request(request) == dict(failed, reason=reason)
    err = await client.request("not json")
    assert err["type"] == "error" and err["message"] == "Malformed JSON"
    err = await client.request({"type": "subscribed"})
    assert err["type"] == "error" and set(err) == {"type", "message", "reason"}
    # nothing above changed anything (the ticker+level2 request was refused whole)
    session = fake.server.sessions[0]
    assert session.subscriptions == {
        "level2_batch:ETH-USD", "level2_batch:BTC-USD", "heartbeat:ETH-EUR",
        "ticker:BTC-USD", "matches:ETH-USD",
    }  # fmt: skip
    # unsubscribe mirrors subscribe; a channel without products goes entirely
    reply = await client.request(
        {"type": "unsubscribe", "product_ids": ["ETH-USD"], "channels": ["level2_batch"]}
    )
    assert reply["channels"][0] == {"name": "level2_batch", "product_ids": ["BTC-USD"]}
    reply = await client.request({"type": "unsubscribe", "channels": ["heartbeat", "matches"]})
    assert reply == {
        "type": "subscriptions",
        "channels": [
            {"name": "level2_batch", "product_ids": ["BTC-USD"]},
            {"name": "ticker", "product_ids": ["BTC-USD"]},
        ],
    }
    assert session.subscriptions == {"level2_batch:BTC-USD", "ticker:BTC-USD"}
    assert fake.subscribe_timeouts == 0


@pytest_twisted.ensureDeferred
async def test_a_connection_that_does_not_subscribe_is_closed() -> None:
    fc = await FakeCoinbase(reactor=reactor, subscribe_timeout=0.3).start()
    try:
        idle = await connect(fc.urls["ws"])
        failing = await connect(fc.urls["ws"])
        good = await connect(fc.urls["ws"])
        # a refused subscribe does not count
        await failing.request({"type": "subscribe", "channels": ["nope"], "product_ids": []})
        await good.request({"type": "subscribe", "product_ids": ["BTC-USD"],
                            "channels": ["heartbeat"]})  # fmt: skip
        for client in (idle, failing):
            _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
            assert code == 1000
        assert fc.subscribe_timeouts == 2
        await sleep(0.2)
        assert not good.ended.called and len(fc.server.sessions) == 1
    finally:
        await fc.stop()
    assert our_delayed_calls(fc) == []


@pytest_twisted.ensureDeferred
async def test_too_many_messages_get_err_slow_read() -> None:
    fc = await FakeCoinbase(reactor=reactor, message_rate=3).start()
    try:
        client = await connect(fc.urls["ws"])
        for _ in range(4):
            client.send_json({"type": "subscribe", "product_ids": ["BTC-USD"],
                              "channels": ["heartbeat"]})  # fmt: skip
        _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
        assert code == 1008 and fc.message_rate_violations == 1
        assert client.of("error") == [{"type": "error", "message": "ErrSlowRead"}]
        assert len(client.of("subscriptions")) == 3
    finally:
        await fc.stop()


# -- WebSocket: level2_batch -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_snapshot_and_l2updates_rebuild_the_true_book(fake: FakeCoinbase) -> None:
    fake.step(30)
    client = await connect(fake.urls["ws"])
    await client.request(
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2_batch", "heartbeat"]}
    )
    await wait_for(lambda: client.of("snapshot"), what="snapshot")
    assert client.messages[0]["type"] == "subscriptions"  # the reply comes first
    snapshot = client.of("snapshot")[0]
    assert list(snapshot) == list(_fixture("level2_snapshot"))
    book = Book()
    book.load(snapshot)
    assert book.sides() == fake.true_book("BTC/USD")[:2]
    seen: list[tuple[int, Any]] = []
    for i in range(150):
        step_until(fake, "BTC/USD", changes)
        assert fake.send_heartbeats() == 1
        await wait_for(lambda: len(client.of("heartbeat")) > len(seen), what="heartbeat")
        assert len(client.of("l2update")) == i + 1  # one per market update
        book.apply(client.of("l2update")[-1])
        heartbeat = client.of("heartbeat")[-1]
        assert heartbeat["sequence"] == fake.sequence("BTC/USD")
        assert book.sides() == fake.true_book("BTC/USD", nonce=heartbeat["sequence"])[:2]
        seen.append((heartbeat["sequence"], book.sides()))
    updates = client.of("l2update")
    assert len(updates) == 150
    assert list(updates[0]) == list(_fixture("l2update_multi"))
    assert all(u["product_id"] == "BTC-USD" and u["time"].endswith("Z") for u in updates)
    assert {c[0] for u in updates for c in u["changes"]} == {"buy", "sell"}
    assert any(Decimal(c[2]) == 0 for u in updates for c in u["changes"])  # removals
    # the fake's history answers for every sequence seen
    for seq, sides in seen[::10]:
        assert fake.true_book("BTC/USD", nonce=seq)[:2] == sides
    with pytest.raises(LookupError):
        fake.true_book("BTC/USD", nonce=fake.sequence("BTC/USD") + 1)
    # prices in quote_increment places, sizes in 8 places (as the fixture's snapshot)
    price, size = snapshot["bids"][0]
    assert len(price.split(".")[1]) == 2 and len(size.split(".")[1]) == 8


@pytest_twisted.ensureDeferred
async def test_two_sessions_get_the_same_encoded_bytes(fake: FakeCoinbase) -> None:
    a = await connect(fake.urls["ws"])
    b = await connect(fake.urls["ws_direct"])
    for client in (a, b):
        await client.request(L2)
    step_until(fake, "BTC/USD", changes)
    s1, s2 = fake.server.sessions
    assert s1.sent[-1] is s2.sent[-1]
    await wait_for(lambda: a.of("l2update") and b.of("l2update"))
    assert a.raw[-1] == b.raw[-1]


# -- WebSocket: matches, ticker, heartbeat ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_matches_ticker_heartbeat_shapes(fake: FakeCoinbase) -> None:
    first = step_until(fake, "ETH/USD", lambda u: u.trades)
    client = await connect(fake.urls["ws"])
    await client.request(
        {"type": "subscribe", "product_ids": ["ETH-USD"],
         "channels": ["matches", "ticker", "heartbeat"]}
    )  # fmt: skip
    await wait_for(lambda: client.of("last_match") and client.of("ticker"), what="initial")
    (last_match,) = client.of("last_match")
    assert last_match["trade_id"] == first.trades[-1].id
    assert list(last_match) == list(_fixture("match"))
    fake.send_heartbeats()
    await wait_for(lambda: client.of("heartbeat"))
    fake.step(300)
    fake.send_heartbeats()
    await wait_for(lambda: len(client.of("heartbeat")) == 2)
    matches = client.of("match")
    assert len(matches) > 10
    assert list(matches[0]) == list(_fixture("match"))
    ids = [m["trade_id"] for m in matches]
    assert ids == list(range(last_match["trade_id"] + 1, ids[-1] + 1))  # consecutive
    seqs = [m["sequence"] for m in matches]
    assert seqs == sorted(set(seqs)) and seqs[0] > last_match["sequence"]
    hb = client.of("heartbeat")
    assert list(hb[0]) == list(_fixture("heartbeat"))
    assert hb[1]["last_trade_id"] == ids[-1] == fake.last_trade_id("ETH/USD")
    assert hb[1]["sequence"] == fake.sequence("ETH/USD") >= seqs[-1]
    assert hb[0]["last_trade_id"] == last_match["trade_id"]
    tickers = client.of("ticker")
    assert list(tickers[-1]) == list(_fixture("ticker"))
    ticker = tickers[-1]
    assert (ticker["trade_id"], ticker["sequence"]) == (ids[-1], seqs[-1])
    assert (ticker["price"], ticker["last_size"]) == (matches[-1]["price"], matches[-1]["size"])
    # ticker side is the taker's, match side the maker's
    assert ticker["side"] != matches[-1]["side"]
    # best bid/ask as of the ticker's own sequence
    bids, asks, _seq = fake.true_book("ETH/USD", nonce=ticker["sequence"], limit=1)
    assert (ticker["best_bid"], ticker["best_bid_size"]) == bids[0]
    assert (ticker["best_ask"], ticker["best_ask_size"]) == asks[0]
    assert Decimal(ticker["low_24h"]) <= Decimal(ticker["price"]) <= Decimal(ticker["high_24h"])
    assert all(isinstance(m["trade_id"], int) and isinstance(m["sequence"], int) for m in matches)
    assert client.of("match", product="BTC-USD") == []


@pytest_twisted.ensureDeferred
async def test_heartbeat_and_ticker_batch_timers() -> None:
    fc = await FakeCoinbase(
        reactor=reactor, heartbeat_interval=0.05, ticker_batch_interval=0.1
    ).start()
    try:
        client = await connect(fc.urls["ws"])
        await client.request({"type": "subscribe", "product_ids": ["BTC-USD"],
                              "channels": ["heartbeat", "ticker_batch"]})  # fmt: skip
        await wait_for(lambda: len(client.of("heartbeat")) >= 3, what="heartbeats")
        hb = client.of("heartbeat")
        assert {h["sequence"] for h in hb} == {fc.sequence("BTC/USD")}
        assert hb[0]["last_trade_id"] == 0  # no trade yet
        assert client.of("ticker") == []  # ticker_batch: nothing traded, nothing sent
        step_until(fc, "BTC/USD", lambda u: u.trades)
        await wait_for(lambda: client.of("ticker"), what="batched ticker")
        await sleep(0.3)
        assert len(client.of("ticker")) == 1  # only when changed
        assert client.of("ticker")[0]["trade_id"] == fc.last_trade_id("BTC/USD")
    finally:
        await fc.stop()
    assert our_delayed_calls(fc) == []


# -- faults ----------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_dropped_matches_show_as_a_gap_and_in_heartbeat(fake: FakeCoinbase) -> None:
    client = await connect(fake.urls["ws"])
    await client.request(
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["matches", "heartbeat"]}
    )
    step_until(fake, "BTC/USD", lambda u: u.trades)
    await wait_for(lambda: client.of("match"))
    last = client.of("match")[-1]
    fake.skip_matches("BTC/USD", 2)
    while fake.dropped_matches < 2:
        step_until(fake, "BTC/USD", lambda u: u.trades)
    fake.send_heartbeats()
    await wait_for(lambda: client.of("heartbeat"))
    # the heartbeat says trades happened that the client never saw
    seen = client.of("match")[-1]["trade_id"]
    assert client.of("heartbeat")[-1]["last_trade_id"] > seen
    step_until(fake, "BTC/USD", lambda u: u.trades)
    await wait_for(lambda: client.of("match")[-1]["trade_id"] > seen)
    after = [m for m in client.of("match") if m["trade_id"] > last["trade_id"]]
    assert after[0]["trade_id"] > last["trade_id"] + 1  # a trade id gap
    assert after[0]["sequence"] > last["sequence"] + 1
    # a late message: the last match again, its sequence not above the last seen
    count = len(client.of("match"))
    assert fake.resend_last_match("BTC/USD") == 1
    await wait_for(lambda: len(client.of("match")) > count)
    late, previous = client.of("match")[-1], client.of("match")[-2]
    assert late == previous and late["sequence"] <= previous["sequence"]


@pytest_twisted.ensureDeferred
async def test_dropped_l2update_diverges_until_resubscribe(fake: FakeCoinbase) -> None:
    client = await connect(fake.urls["ws"])
    await client.request(L2)
    await wait_for(lambda: client.of("snapshot"))
    book = Book()
    book.load(client.of("snapshot")[-1])
    fake.skip_l2updates("BTC/USD")
    step_until(fake, "BTC/USD", changes)
    step_until(fake, "BTC/USD", changes)
    await wait_for(lambda: client.of("l2update"))
    assert fake.dropped_l2updates == 1 and len(client.of("l2update")) == 1
    book.apply(client.of("l2update")[0])
    assert book.sides() != fake.true_book("BTC/USD")[:2]
    # resubscribing gives a fresh snapshot that matches
    await client.request({"type": "unsubscribe", "channels": ["level2_batch"]})
    await client.request(L2)
    await wait_for(lambda: len(client.of("snapshot")) == 2)
    book.load(client.of("snapshot")[-1])
    assert book.sides() == fake.true_book("BTC/USD")[:2]


@pytest_twisted.ensureDeferred
async def test_stale_snapshots_on_the_feed_and_rest(fake: FakeCoinbase) -> None:
    fake.step(50)
    seq_before = fake.sequence("BTC/USD")
    old = fake.true_book("BTC/USD")
    for _ in range(3):
        step_until(fake, "BTC/USD", changes)
    fake.stale_snapshot_next("BTC/USD", updates_behind=3)
    client = await connect(fake.urls["ws"])
    await client.request(L2)
    await wait_for(lambda: client.of("snapshot"))
    book = Book()
    book.load(client.of("snapshot")[0])
    assert book.sides() == old[:2] != fake.true_book("BTC/USD")[:2]
    # the next snapshot is live again
    await client.request({"type": "unsubscribe", "channels": ["level2_batch"]})
    await client.request(L2)
    await wait_for(lambda: len(client.of("snapshot")) == 2)
    book.load(client.of("snapshot")[1])
    assert book.sides() == fake.true_book("BTC/USD")[:2]
    # REST: an old sequence with the book that goes with it
    fake.stale_book_next("BTC/USD", updates_behind=3)
    _code, stale, _h = await get(fake, "/products/BTC-USD/book", level=2)
    assert stale["sequence"] == seq_before < fake.sequence("BTC/USD")
    assert [(p, s) for p, s, _n in stale["bids"]] == old[0]
    assert fake.true_book("BTC/USD", nonce=stale["sequence"]) == old
    _code, fresh, _h = await get(fake, "/products/BTC-USD/book", level=2)
    assert fresh["sequence"] == fake.sequence("BTC/USD")


@pytest_twisted.ensureDeferred
async def test_errors_status_drop_and_stall(fake: FakeCoinbase) -> None:
    client = await connect(fake.urls["ws"])
    await client.request({"type": "subscribe", "channels": ["status"]})
    await wait_for(lambda: client.of("status"))
    status = client.of("status")[0]
    assert [p["id"] for p in status["products"]] == ["BTC-USD", "ETH-USD", "ETH-EUR"]
    assert {c["id"] for c in status["currencies"]} == {"BTC", "ETH", "USD", "EUR"}
    assert fake.set_status("ETH/EUR", "delisted") == 1
    await wait_for(lambda: len(client.of("status")) == 2)
    assert client.of("status")[1]["products"][2]["status"] == "delisted"
    _code, row, _h = await get(fake, "/products/ETH-EUR")
    assert row["status"] == "delisted" and row["trading_disabled"] is True
    assert fake.send_error("ErrSlowConsume") == 1
    await wait_for(lambda: client.of("error"))
    assert client.of("error") == [{"type": "error", "message": "ErrSlowConsume"}]
    # stall and drop come from the toolkit
    await client.request(L2)
    session = fake.server.sessions[0]
    session.stall()
    count = len(client.messages)
    step_until(fake, "BTC/USD", changes)
    await sleep(0.1)
    assert len(client.messages) == count
    session.drop()
    _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
    assert code == 1006 and fake._subs.get("level2_batch:BTC-USD") == {}


# -- the transport with a small Coinbase WireRules -------------------------------------------------


@attrs.define
class CoinbaseRules:
    """Just enough Coinbase for :class:`Connection`: replies carry no id, they answer
    requests in order (``subscriptions`` = done, ``error`` = refused)."""

    control_rate: float = 5.0
    max_topics_per_message: int = 10
    max_topics_per_connection: int | None = None
    replies_to_control: bool = True
    binary_compression: Any = None
    heartbeat: Heartbeat | None = None
    max_connection_age: float | None = None
    _waiting: deque[int] = attrs.field(factory=deque)

    def _message(self, kind: str, topics: Sequence[str], request_id: int) -> bytes:
        self._waiting.append(request_id)
        channels = [
            {"name": name, "product_ids": [pid]} for name, pid in (t.split(":") for t in topics)
        ]
        return json.dumps({"type": kind, "channels": channels}).encode()

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("unsubscribe", topics, request_id)

    def control_reply(self, message: Any) -> ControlReply | None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind not in ("subscriptions", "error") or not self._waiting:
            return None
        request_id = self._waiting.popleft()
        if kind == "error":
            return ControlReply(request_id, False, f"{message['message']}: {message.get('reason')}")
        return ControlReply(request_id, True)

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw


@pytest_twisted.ensureDeferred
async def test_transport_connection_subscribes(fake: FakeCoinbase) -> None:
    messages: list[Any] = []
    conn = Connection(
        fake.urls["ws"], CoinbaseRules(), on_message=messages.append, reactor=reactor
    ).start()
    try:
        await conn.subscribe(["level2_batch:ETH-USD"]).addTimeout(TIMEOUT, reactor)
        with pytest.raises(SubscriptionError, match="is not a valid product"):
            await conn.subscribe(["ticker:XRP-USD"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: messages, what="snapshot")
        book = Book()
        book.load(messages[0])
        updates = fake.step(100)
        expected = sum(1 for u in updates if u.symbol == "ETH/USD" and changes(u))
        await wait_for(lambda: len(messages) == 1 + expected, what="l2updates")
        for message in messages[1:]:
            book.apply(message)
        assert book.sides() == fake.true_book("ETH/USD")[:2]
    finally:
        await conn.close()


@pytest_twisted.ensureDeferred
async def test_tls_feed_and_rest(test_ca: TestCA) -> None:
    fc = await FakeCoinbase(reactor=reactor, tls=test_ca.issue(), heartbeat_interval=None).start()
    messages: list[Any] = []
    conn = Connection(
        fc.urls["ws"],
        CoinbaseRules(),
        on_message=messages.append,
        reactor=reactor,
        options=TransportOptions(trust_root=test_ca.trust_root()),
    ).start()
    try:
        assert fc.urls["ws"].startswith("wss://127.0.0.1:")
        assert fc.urls["rest"].startswith("https://127.0.0.1:")
        await conn.subscribe(["level2_batch:BTC-USD"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: messages, what="snapshot over TLS")
        book = Book()
        book.load(messages[0])
        assert book.sides() == fc.true_book("BTC/USD")[:2]
    finally:
        await conn.close()
        await fc.stop()


@pytest_twisted.ensureDeferred
async def test_reply_delay_holds_reply_and_snapshot_together(fake: FakeCoinbase) -> None:
    fake.server.reply_delay = 0.2
    client = await connect(fake.urls["ws"])
    client.send_json(L2)
    await sleep(0.05)
    step_until(fake, "BTC/USD", changes)  # before the reply: not sent to this client
    assert client.messages == []
    await wait_for(lambda: client.of("snapshot"), what="snapshot")
    reply, snapshot = client.messages[:2]
    assert reply["type"] == "subscriptions" and snapshot["type"] == "snapshot"
    book = Book()
    book.load(snapshot)
    assert book.sides() == fake.true_book("BTC/USD")[:2]


# -- determinism, bad arguments, stop --------------------------------------------------------------


def test_deterministic_for_a_seed() -> None:
    a = FakeCoinbase(seed=11, reactor=Clock())
    b = FakeCoinbase(seed=11, reactor=Clock())
    assert a.step(300) == b.step(300)
    for symbol in ("BTC/USD", "ETH/USD"):
        assert a.true_book(symbol) == b.true_book(symbol)
        assert a._products[symbol].last_match == b._products[symbol].last_match
        assert a._products[symbol].last_ticker == b._products[symbol].last_ticker
    c = FakeCoinbase(seed=12, reactor=Clock())
    assert c.step(300) != a.step(300)


def test_true_book_history_and_bad_arguments() -> None:
    fc = FakeCoinbase(("BTC/USD",), reactor=Clock())
    first = fc.true_book("BTC/USD")
    fc.step(50)
    assert fc.true_book("BTC/USD", nonce=first[2]) == first
    assert fc.true_book("BTC/USD", limit=3)[0] == fc.true_book("BTC/USD")[0][:3]
    with pytest.raises(LookupError):
        fc.true_book("BTC/USD", nonce=first[2] - 1)
    with pytest.raises(KeyError):
        fc.skip_matches("DOGE/USD")
    with pytest.raises(ValueError):
        fc.skip_matches("BTC/USD", 0)
    with pytest.raises(ValueError):
        fc.stale_book_next("BTC/USD", updates_behind=0)
    with pytest.raises(ValueError):
        FakeCoinbase(subscribe_timeout=0)
    market = SimulatedMarket(("SOL/USDC",), seed=1)
    assert FakeCoinbase(market=market, reactor=Clock()).product_id("SOL/USDC") == "SOL-USDC"
    assert coinbase_time(1_415_348_367_028) == "2014-11-07T08:19:27.028000Z"


@pytest_twisted.ensureDeferred
async def test_run_and_stop_leave_no_delayed_calls() -> None:
    fc = await FakeCoinbase(reactor=reactor).start()
    client = await connect(fc.urls["ws"])
    await client.request(L2)
    await fc.run(200, count=10).addTimeout(TIMEOUT, reactor)
    assert fc._loop is None
    done = fc.run(100)
    fc.server.reply_delay = 5.0
    client.send_json({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["ticker"]})
    await wait_for(lambda: len(fc.server.received) == 2)
    await connect(fc.urls["ws"])  # its subscribe timer is pending
    assert our_delayed_calls(fc)  # heartbeat + ticker_batch loops, delayed reply, run, timer
    await fc.stop()
    assert done.called
    assert our_delayed_calls(fc) == []
    assert [c for c in reactor.getDelayedCalls() if c.active() and "coinbase" in repr(c.func)] == []
