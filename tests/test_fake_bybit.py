"""Tests for :class:`txexchange.testing.bybit.FakeBybit`.

Real reactor, real loopback sockets: a bare Autobahn client (and the project's
:class:`~txexchange.transport.Connection` with a small Bybit ``WireRules``
written here) on the WebSocket side, treq on the REST side.  The book code on
this side is written from the Bybit v5 documentation (snapshot replaces, size
"0" deletes, a new snapshot or ``u == 1`` resets, ``u`` must increase) and
checked against the fixtures in ``../shared/protocols/vectors.json``; Bybit
books carry no checksum.  Nothing here uses the Bybit adapter.
"""

from __future__ import annotations

import itertools
import json
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
from txexchange.testing.bybit import FakeBybit
from txexchange.testing.market import SimulatedMarket
from txexchange.transport import Connection, ControlReply, Heartbeat, TransportOptions

TIMEOUT = 5.0
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def _fixture(name: str) -> Any:
    return next(f["message"] for f in _vectors()["fixtures"]["bybit_v5"] if f["name"] == name)


# -- test-side Bybit book code, from the docs ------------------------------------------------------


class BookOutOfSync(Exception):
    """``u`` did not increase: the book must be resynced."""


class Book:
    """A local Bybit book: ``snapshot`` (or ``u == 1``) replaces, ``delta`` merges."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.u: int | None = None

    def on_message(self, message: dict[str, Any]) -> None:
        data = message["data"]
        if message["type"] == "snapshot" or data["u"] == 1:
            self.bids = {p: s for p, s in data["b"]}
            self.asks = {p: s for p, s in data["a"]}
            self.u = data["u"]
            return
        if self.u is None or data["u"] <= self.u:
            raise BookOutOfSync(f"u {data['u']} after {self.u}")
        for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for price, size in levels:
                if size == "0":
                    side.pop(price, None)
                else:
                    side[price] = size
        self.u = data["u"]

    def sides(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return bids, asks


def merge_ticker(cached: dict[str, Any] | None, message: dict[str, Any]) -> dict[str, Any]:
    """Linear tickers: a snapshot replaces the cached ticker, a delta updates its fields."""
    if message["type"] == "snapshot" or cached is None:
        return dict(message["data"])
    return {**cached, **message["data"]}


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

    def replies(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and "op" in m]

    def pushes(self, prefix: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if isinstance(m, dict)
            and "topic" in m
            and (prefix is None or m["topic"].startswith(prefix))
        ]

    async def request(self, obj: Any) -> dict[str, Any]:
        before = len(self.replies())
        if isinstance(obj, str):
            self.sendMessage(obj.encode())
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


async def get(fake: FakeBybit, path: str, **params: Any) -> tuple[int, Any, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    response = await client.get(fake.urls["rest"] + path, params=params)
    body = await response.content()
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = body.decode()
    return response.code, decoded, response.headers


def step_until(fake: FakeBybit, symbol: str, predicate: Any = None, limit: int = 10_000) -> Any:
    for _ in range(limit):
        for update in fake.step():
            if update.symbol == symbol and (predicate is None or predicate(update)):
                return update
    raise AssertionError(f"no matching update for {symbol}")


def sent_u(fake: FakeBybit, category: str, topic: str) -> int:
    """The ``u`` of the last message the fake sent on an orderbook topic."""
    symbol = topic.rsplit(".", 1)[1]
    state = next(s for s in fake._symbols.values() if s.id == symbol)
    return state.topics[(category, topic)].last_u


async def next_delta(fake: FakeBybit, client: Client, category: str, topic: str) -> Any:
    """Step the market until ``topic`` sends a delta; that delta as received."""
    before = sent_u(fake, category, topic)
    symbol = fake._by_id[topic.rsplit(".", 1)[1]].symbol
    while sent_u(fake, category, topic) == before:
        step_until(fake, symbol)
    u = sent_u(fake, category, topic)
    await wait_for(lambda: client.pushes(topic)[-1]["data"]["u"] == u, what="delta")
    return client.pushes(topic)[-1]


def our_delayed_calls(fake: FakeBybit) -> list[Any]:
    """Active delayed calls that belong to ``fake`` (its LoopingCalls or its timers)."""
    found = []
    for call in reactor.getDelayedCalls():
        if not call.active():
            continue
        owner = getattr(call.func, "__self__", None)
        module = getattr(call.func, "__module__", "") or ""
        ours = owner is fake or (owner is not None and owner in (fake._loop, fake._level1_loop))
        if ours or module == "txexchange.testing.bybit":
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
async def fake() -> AsyncIterator[FakeBybit]:
    fb = await FakeBybit(reactor=reactor, seed=5).start()
    try:
        yield fb
    finally:
        await fb.stop()
        assert our_delayed_calls(fb) == []


def sub(*topics: str, req_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"op": "subscribe", "args": list(topics)}
    if req_id is not None:
        message["req_id"] = req_id
    return message


# -- fixtures and the book code --------------------------------------------------------------------


def test_book_code_against_the_documented_fixtures() -> None:
    snapshot = _fixture("orderbook_snapshot_excerpt")
    delta = _fixture("orderbook_delta")
    book = Book()
    book.on_message(snapshot)
    assert book.u == 18521288
    assert book.sides() == (
        [("16493.50", "0.006"), ("16493.00", "0.100")],
        [("16611.00", "0.029"), ("16612.00", "0.213")],
    )
    # the docs' delta is from another day, so rebase the book on its levels first
    book.bids = {"30240.00": "1", "30247.20": "2"}
    book.asks = {"30248.70": "3", "30249.60": "4", "30260.00": "5"}
    book.on_message(delta)
    bids, asks = book.sides()
    assert bids[0] == ("30247.20", "30.028") and ("30240.00", "1") not in bids
    assert [p for p, _ in asks] == [
        "30249.30",
        "30249.50",
        "30251.90",
        "30252.20",
        "30252.50",
        "30260.00",
    ]
    assert book.u == 177400507
    # and it can fail: a delta whose u does not increase
    with pytest.raises(BookOutOfSync):
        book.on_message(delta)
    # u == 1 resets even on a delta-typed message
    book.on_message({"type": "delta", "data": {"b": [["1.0", "2"]], "a": [], "u": 1}})
    assert book.sides() == ([("1.0", "2")], []) and book.u == 1
    # linear tickers merge
    ticker = merge_ticker(None, _fixture("tickers_linear_snapshot"))
    merged = merge_ticker(
        ticker, {"type": "delta", "data": {"symbol": "BTCUSDT", "bid1Price": "1"}}
    )
    assert merged["bid1Price"] == "1" and merged["ask1Price"] == ticker["ask1Price"]


# -- REST ------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_urls_instruments_time_and_errors(fake: FakeBybit) -> None:
    port = fake.server.port
    assert fake.urls == {
        "spot": f"ws://127.0.0.1:{port}/v5/public/spot",
        "linear": f"ws://127.0.0.1:{port}/v5/public/linear",
        "status": f"ws://127.0.0.1:{port}/v5/public/misc/status",
        "private": f"ws://127.0.0.1:{port}/v5/private",
        "rest": f"http://127.0.0.1:{port}",
    }
    code, body, _ = await get(fake, "/v5/market/instruments-info", category="spot")
    assert code == 200 and body["retCode"] == 0 and body["retMsg"] == "OK"
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    rows = {r["symbol"]: r for r in body["result"]["list"]}
    assert body["result"]["category"] == "spot" and set(rows) == {"BTCUSDT", "ETHUSDT"}
    btc = rows["BTCUSDT"]
    assert (btc["baseCoin"], btc["quoteCoin"], btc["status"]) == ("BTC", "USDT", "Trading")
    assert btc["priceFilter"]["tickSize"] == "0.01"
    assert btc["lotSizeFilter"]["basePrecision"] == "0.00001"
    code, body, _ = await get(
        fake, "/v5/market/instruments-info", category="linear", symbol="ETHUSDT"
    )
    (eth,) = body["result"]["list"]
    assert eth["contractType"] == "LinearPerpetual" and eth["settleCoin"] == "USDT"
    assert eth["lotSizeFilter"]["qtyStep"] == "0.00001" and eth["priceScale"] == "2"
    code, body, _ = await get(fake, "/v5/market/time")
    assert body["retCode"] == 0 and body["result"]["timeSecond"].isdigit()
    assert body["result"]["timeNano"].startswith(body["result"]["timeSecond"])
    code, body, _ = await get(fake, "/v5/market/orderbook", category="spot", symbol="DOGEUSDT")
    assert code == 200 and body["retCode"] == 10001 and body["result"] == {}
    code, body, _ = await get(fake, "/v5/market/orderbook", category="option", symbol="BTCUSDT")
    assert body["retCode"] == 10001
    code, body, _ = await get(fake, "/v5/market/tickers")
    assert body["retCode"] == 10001  # category is required
    assert [r.path for r in fake.rest_log][:2] == [
        "/v5/market/instruments-info",
        "/v5/market/instruments-info",
    ]


@pytest_twisted.ensureDeferred
async def test_rest_orderbook_trades_tickers_kline(fake: FakeBybit) -> None:
    updates = fake.step(300)
    _code, body, _ = await get(
        fake, "/v5/market/orderbook", category="linear", symbol="BTCUSDT", limit=200
    )
    snap = body["result"]
    assert set(snap) == {"s", "b", "a", "ts", "u", "seq", "cts"}
    bids, asks, u = fake.true_book("BTC/USDT")
    assert snap["u"] == u and snap["seq"] == fake.cross_seq("BTC/USDT")
    assert [tuple(x) for x in snap["b"]] == bids and [tuple(x) for x in snap["a"]] == asks
    assert snap["ts"] >= snap["cts"]
    _code, body, _ = await get(fake, "/v5/market/orderbook", category="spot", symbol="BTCUSDT")
    assert len(body["result"]["b"]) == 1  # spot default limit 1
    _code, body, _ = await get(fake, "/v5/market/orderbook", category="linear", symbol="BTCUSDT")
    assert len(body["result"]["b"]) == 25  # linear default limit 25
    trades = [t for u in updates if u.symbol == "ETH/USDT" for t in u.trades]
    _code, body, _ = await get(
        fake, "/v5/market/recent-trade", category="spot", symbol="ETHUSDT", limit=5
    )
    rows = body["result"]["list"]
    assert [r["execId"] for r in rows] == [str(t.id) for t in trades[-5:][::-1]]
    assert [r["side"] for r in rows] == [t.side.capitalize() for t in trades[-5:][::-1]]
    assert {"execId", "symbol", "price", "size", "side", "time", "isBlockTrade"} <= set(rows[0])
    _code, body, _ = await get(fake, "/v5/market/tickers", category="spot")
    tickers = {t["symbol"]: t for t in body["result"]["list"]}
    assert set(tickers) == {"BTCUSDT", "ETHUSDT"}
    eth = tickers["ETHUSDT"]
    assert Decimal(eth["lastPrice"]) == Decimal(trades[-1].price)
    assert Decimal(eth["volume24h"]) == sum(Decimal(t.amount) for t in trades)
    assert Decimal(eth["highPrice24h"]) == max(Decimal(t.price) for t in trades)
    e_bids, e_asks, _ = fake.true_book("ETH/USDT", limit=1)
    assert (eth["bid1Price"], eth["ask1Price"]) == (e_bids[0][0], e_asks[0][0])
    _code, body, _ = await get(fake, "/v5/market/tickers", category="linear", symbol="ETHUSDT")
    (lin,) = body["result"]["list"]
    assert {"markPrice", "indexPrice", "fundingRate", "nextFundingTime", "openInterest"} <= set(lin)
    _code, body, _ = await get(
        fake, "/v5/market/kline", category="spot", symbol="ETHUSDT", interval="1"
    )
    (row,) = body["result"]["list"]
    assert body["result"]["symbol"] == "ETHUSDT" and len(row) == 7
    assert row[4] == eth["lastPrice"] and Decimal(row[5]) == Decimal(eth["volume24h"])
    _code, body, _ = await get(fake, "/v5/market/kline", symbol="ETHUSDT", interval="7")
    assert body["retCode"] == 10001


@pytest_twisted.ensureDeferred
async def test_rest_rate_limit_faults(fake: FakeBybit) -> None:
    fake.rate_limit_next(style="429", retry_after=2)
    code, body, headers = await get(fake, "/v5/market/time")
    assert code == 429 and body["retCode"] == 10006 and body["retMsg"] == "Too many visits!"
    assert headers.getRawHeaders("Retry-After") == ["2"]
    fake.rate_limit_next(style="10006", path="/v5/market/tickers")
    code, body, _ = await get(fake, "/v5/market/time")
    assert code == 200 and body["retCode"] == 0  # only tickers is limited
    code, body, headers = await get(fake, "/v5/market/tickers", category="spot")
    assert code == 200 and body["retCode"] == 10006 and fake.rate_limited == 1
    assert headers.getRawHeaders("X-Bapi-Limit-Status") == ["0"]
    fake.rate_limit_next(style="403")
    code, body, _ = await get(fake, "/v5/market/time")
    assert code == 403 and body == "access too frequent"
    code, body, _ = await get(fake, "/v5/market/time")
    assert code == 200
    with pytest.raises(ValueError):
        fake.rate_limit_next(style="418")  # type: ignore[arg-type]


def test_rest_ip_window_on_a_clock() -> None:
    clock = Clock()
    fb = FakeBybit(reactor=clock, rest_ip_limit=3, rest_window=5.0)
    assert all(fb._allow() for _ in range(3))
    assert not fb._allow()
    clock.advance(5.0)
    assert fb._allow()


@pytest_twisted.ensureDeferred
async def test_rest_ip_limit_is_403() -> None:
    fb = await FakeBybit(reactor=reactor, rest_ip_limit=2).start()
    try:
        assert (await get(fb, "/v5/market/time"))[0] == 200
        assert (await get(fb, "/v5/market/time"))[0] == 200
        code, body, _ = await get(fb, "/v5/market/time")
        assert code == 403 and body == "access too frequent" and fb.rejected_403 == 1
    finally:
        await fb.stop()


# -- WebSocket: requests ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_replies_and_errors_linear(fake: FakeBybit) -> None:
    client = await connect(fake.urls["linear"])
    conn_id = fake.conn_id(fake.server.sessions[0])
    ack = await client.request(sub("publicTrade.BTCUSDT", "orderbook.1.ETHUSDT", req_id="test"))
    expected = dict(_fixture("subscribe_response_linear"), conn_id=conn_id, req_id="test")
    assert ack == expected and list(ack) == list(expected)
    ack = await client.request(sub("tickers.BTCUSDT"))
    assert ack["success"] is True and ack["req_id"] == "" and ack["ret_msg"] == ""
    err = await client.request(sub("orderbook.50.DOGEUSDT", req_id="7"))
    assert err["success"] is False and err["req_id"] == "7" and err["op"] == "subscribe"
    assert "orderbook.50.DOGEUSDT" in err["ret_msg"] and err["conn_id"] == conn_id
    err = await client.request(sub("orderbook.25.BTCUSDT"))  # 25 is an option depth
    assert err["success"] is False
    err = await client.request(sub("publicTrade.BTCUSDT"))
    assert err["success"] is False and "already subscribed" in err["ret_msg"]
    err = await client.request({"op": "subscribe", "args": "tickers.ETHUSDT"})
    assert err["success"] is False
    err = await client.request({"op": "dance", "req_id": "x"})
    assert err["success"] is False and err["op"] == "dance"
    err = await client.request("not json")
    assert err["success"] is False
    ack = await client.request({"op": "unsubscribe", "args": ["tickers.BTCUSDT"], "req_id": "u"})
    assert ack["success"] is True and ack["op"] == "unsubscribe" and ack["req_id"] == "u"
    assert fake.server.sessions[0].subscriptions == {"publicTrade.BTCUSDT", "orderbook.1.ETHUSDT"}


@pytest_twisted.ensureDeferred
async def test_subscribe_replies_spot(fake: FakeBybit) -> None:
    client = await connect(fake.urls["spot"])
    conn_id = fake.conn_id(fake.server.sessions[0])
    ack = await client.request(sub("publicTrade.BTCUSDT"))
    assert ack == {"success": True, "ret_msg": "subscribe", "conn_id": conn_id, "op": "subscribe"}
    ack = await client.request(sub("tickers.BTCUSDT", req_id="a1"))
    assert ack["ret_msg"] == "subscribe" and ack["req_id"] == "a1"
    eleven = [
        f"kline.{i}.BTCUSDT"
        for i in ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D")
    ]
    err = await client.request(sub(*eleven))
    assert err["success"] is False and "10" in err["ret_msg"]
    err = await client.request(sub("orderbook.50.NOPE"))
    assert err["success"] is False and "NOPE" in err["ret_msg"]
    ack = await client.request({"op": "unsubscribe", "args": ["tickers.BTCUSDT"]})
    assert ack["ret_msg"] == "unsubscribe" and ack["success"] is True


@pytest_twisted.ensureDeferred
async def test_ping_pong_shapes(fake: FakeBybit) -> None:
    spot = await connect(fake.urls["spot"])
    linear = await connect(fake.urls["linear"])
    s_spot, s_linear = fake.server.sessions
    pong = await spot.request(_fixture("ping"))
    fixture = _fixture("pong_spot")
    assert pong == dict(fixture, conn_id=fake.conn_id(s_spot))
    assert list(pong) == list(fixture)
    pong = await linear.request(_fixture("ping"))
    assert pong == {
        "success": True,
        "ret_msg": "pong",
        "conn_id": fake.conn_id(s_linear),
        "req_id": "100001",
        "op": "ping",
    }
    assert fake.pings == 2


@pytest_twisted.ensureDeferred
async def test_idle_close_unless_pinged() -> None:
    fb = await FakeBybit(reactor=reactor, idle_timeout=0.4).start()
    try:
        client = await connect(fb.urls["linear"])
        for _ in range(4):  # pings keep it alive past the timeout
            client.send_json({"op": "ping"})
            await sleep(0.2)
        assert len(client.replies()) == 4 and not client.ended.called
        _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
        assert code == 1000 and fb.idle_closes == 1
    finally:
        await fb.stop()
    assert our_delayed_calls(fb) == []


# -- WebSocket: books ------------------------------------------------------------------------------


async def _book_session(fake: FakeBybit, url: str, topic: str) -> tuple[Client, Book]:
    client = await connect(url)
    ack = await client.request(sub(topic))
    assert ack["success"] is True
    await wait_for(lambda: client.pushes(topic), what="snapshot")
    book = Book()
    book.on_message(client.pushes(topic)[0])
    return client, book


@pytest.mark.parametrize(("category", "depth"), [("spot", 50), ("linear", 200), ("linear", 50)])
@pytest_twisted.ensureDeferred
async def test_snapshot_and_deltas_rebuild_the_true_book(
    fake: FakeBybit, category: str, depth: int
) -> None:
    fake.step(30)
    topic = f"orderbook.{depth}.BTCUSDT"
    client, book = await _book_session(fake, fake.urls[category], topic)
    snapshot = client.pushes(topic)[0]
    fixture = _fixture("orderbook_snapshot_excerpt")
    assert list(snapshot) == list(fixture) and snapshot["type"] == "snapshot"
    assert set(snapshot["data"]) == set(fixture["data"]) and snapshot["data"]["s"] == "BTCUSDT"
    assert snapshot["ts"] > snapshot["cts"]
    assert book.u == fake.update_id("BTC/USDT")
    assert snapshot["data"]["seq"] == fake.cross_seq("BTC/USDT")
    assert book.sides() == fake.true_book("BTC/USDT", limit=depth)[:2]
    assert len(snapshot["data"]["b"]) == min(depth, len(fake.true_book("BTC/USDT")[0]))
    fake.step(400)
    last = sent_u(fake, category, topic)
    await wait_for(lambda: client.pushes(topic)[-1]["data"]["u"] == last, what="deltas")
    deltas = client.pushes(topic)[1:]
    assert deltas and all(m["type"] == "delta" for m in deltas)
    assert set(deltas[0]) == set(_fixture("orderbook_delta"))
    window_moves = 0
    for message in deltas:
        data = message["data"]
        assert [Decimal(p) for p, _ in data["b"]] == sorted(
            (Decimal(p) for p, _ in data["b"]), reverse=True
        )
        assert [Decimal(p) for p, _ in data["a"]] == sorted(Decimal(p) for p, _ in data["a"])
        book.on_message(message)
        assert book.sides() == fake.true_book("BTC/USDT", nonce=book.u, limit=depth)[:2]
        window_moves += sum(1 for _, s in data["b"] + data["a"] if s == "0")
    assert window_moves  # levels do leave the window (deleted or pushed out)
    assert book.u == last
    assert book.sides() == fake.true_book("BTC/USDT", limit=depth)[:2]  # nothing since changed
    # prices and sizes are the grid's fixed decimals; deletions are "0"
    price, size = book.sides()[0][0]
    assert len(price.partition(".")[2]) == 2 and len(size.partition(".")[2]) == 5


@pytest_twisted.ensureDeferred
async def test_level1_snapshots_only_and_resent() -> None:
    fb = await FakeBybit(reactor=reactor, seed=2, level1_interval=0.2).start()
    try:
        client = await connect(fb.urls["spot"])
        await client.request(sub("orderbook.1.ETHUSDT"))
        await wait_for(lambda: client.pushes("orderbook.1"), what="snapshot")
        fb.step(200)
        last = sent_u(fb, "spot", "orderbook.1.ETHUSDT")
        await wait_for(lambda: client.pushes()[-1]["data"]["u"] == last, what="top changes")
        pushes = client.pushes("orderbook.1")
        assert len(pushes) > 2 and all(m["type"] == "snapshot" for m in pushes)
        for message in pushes:
            data = message["data"]
            assert len(data["b"]) == 1 and len(data["a"]) == 1
            bids, asks, _u = fb.true_book("ETH/USDT", nonce=data["u"], limit=1)
            assert ([tuple(data["b"][0])], [tuple(data["a"][0])]) == (bids, asks)
        # only changes are pushed: consecutive snapshots differ
        tops = [(m["data"]["b"], m["data"]["a"]) for m in pushes]
        assert all(x != y for x, y in itertools.pairwise(tops))
        before = len(pushes)
        await wait_for(lambda: len(client.pushes()) > before, what="re-sent snapshot")
        again = client.pushes()[before]
        assert again["data"]["u"] == pushes[-1]["data"]["u"]  # unchanged u
        assert again["data"]["b"] == pushes[-1]["data"]["b"]
    finally:
        await fb.stop()
    assert our_delayed_calls(fb) == []


@pytest_twisted.ensureDeferred
async def test_gap_duplicate_resnapshot_restart_and_stale(fake: FakeBybit) -> None:
    topic = "orderbook.50.BTCUSDT"
    client, book = await _book_session(fake, fake.urls["linear"], topic)

    async def next_books(n: int = 1) -> list[dict[str, Any]]:
        before = len(client.pushes(topic))
        await wait_for(lambda: len(client.pushes(topic)) >= before + n, what="books")
        return client.pushes(topic)[before:]

    # a gap: two updates withheld; u jumps (still increasing) and the book goes wrong
    before = len(client.pushes(topic))
    fake.skip_next("BTC/USDT", 2)
    skipped = [step_until(fake, "BTC/USDT"), step_until(fake, "BTC/USDT")]
    for _ in range(3):
        await next_delta(fake, client, "linear", topic)
    after = client.pushes(topic)[before:]
    assert fake.skipped_updates == 2
    assert not {m["data"]["u"] for m in after} & {s.last_id for s in skipped}
    assert after[0]["data"]["u"] > skipped[-1].last_id
    for message in after:
        book.on_message(message)  # not caught by u alone: Bybit's u is not contiguous
    assert book.sides() != fake.true_book("BTC/USDT", limit=50)[:2]
    # a fresh snapshot at any time resets the book
    assert fake.send_snapshot("BTC/USDT") == 1
    (snap,) = await next_books()
    assert snap["type"] == "snapshot" and snap["data"]["u"] == fake.update_id("BTC/USDT")
    book.on_message(snap)
    assert book.sides() == fake.true_book("BTC/USDT", limit=50)[:2]
    # a duplicated delta: same bytes, same u -> out of sync
    book.on_message(await next_delta(fake, client, "linear", topic))
    assert book.sides() == fake.true_book("BTC/USDT", limit=50)[:2]
    raw_before = client.raw[-1]
    assert fake.resend_last_delta("BTC/USDT") == 1
    (dup,) = await next_books()
    assert client.raw[-1] == raw_before
    with pytest.raises(BookOutOfSync):
        book.on_message(dup)
    # the service restart: a snapshot with u == 1, then deltas from 2 on
    assert fake.restart_service("BTC/USDT") == 1
    (restart,) = await next_books()
    assert restart["type"] == "snapshot" and restart["data"]["u"] == 1
    book.on_message(restart)
    assert fake.update_id("BTC/USDT") == 1
    assert book.sides() == fake.true_book("BTC/USDT", nonce=1, limit=50)[:2]
    for _ in range(5):
        await next_delta(fake, client, "linear", topic)
    after = client.pushes(topic)[client.pushes(topic).index(restart) + 1 :]
    assert after and after[0]["data"]["u"] >= 2
    for message in after:
        book.on_message(message)
        assert book.sides() == fake.true_book("BTC/USDT", nonce=book.u, limit=50)[:2]
    # a stale snapshot: an older u than the one held
    held = book.u
    assert fake.send_stale_snapshot("BTC/USDT", back=3) == 1
    (stale,) = await next_books()
    assert stale["type"] == "snapshot" and stale["data"]["u"] < held
    assert held is not None
    stale_book = Book()
    stale_book.on_message(stale)
    assert stale_book.sides() == fake.true_book("BTC/USDT", nonce=stale["data"]["u"], limit=50)[:2]
    assert stale_book.sides() != fake.true_book("BTC/USDT", limit=50)[:2]


@pytest_twisted.ensureDeferred
async def test_stale_rest_snapshot(fake: FakeBybit) -> None:
    fake.step(100)
    fake.stale_rest_snapshot_next("BTC/USDT", back=4)
    _code, body, _ = await get(
        fake, "/v5/market/orderbook", category="spot", symbol="BTCUSDT", limit=50
    )
    stale = body["result"]
    assert stale["u"] < fake.update_id("BTC/USDT")
    bids, asks, _ = fake.true_book("BTC/USDT", nonce=stale["u"], limit=50)
    assert [tuple(x) for x in stale["b"]] == bids and [tuple(x) for x in stale["a"]] == asks
    _code, body, _ = await get(fake, "/v5/market/orderbook", category="spot", symbol="BTCUSDT")
    assert body["result"]["u"] == fake.update_id("BTC/USDT")  # only the next one
    with pytest.raises(ValueError):
        fake.stale_rest_snapshot_next("BTC/USDT", back=0)


# -- WebSocket: trades, tickers, klines ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_public_trades_spot_and_linear(fake: FakeBybit) -> None:
    spot = await connect(fake.urls["spot"])
    linear = await connect(fake.urls["linear"])
    await spot.request(sub("publicTrade.ETHUSDT"))
    await linear.request(sub("publicTrade.ETHUSDT"))
    update = step_until(fake, "ETH/USDT", lambda u: len(u.trades) >= 1)
    await wait_for(lambda: spot.pushes() and linear.pushes(), what="trades")
    (s_msg,) = spot.pushes()
    (l_msg,) = linear.pushes()
    fixture = _fixture("publicTrade")
    assert set(s_msg) == set(fixture) and s_msg["type"] == "snapshot"
    assert set(l_msg["data"][0]) == set(fixture["data"][0]) | {"RPI"}
    assert set(s_msg["data"][0]) == set(fixture["data"][0]) - {"L"} | {"RPI"}
    assert [t["i"] for t in s_msg["data"]] == [str(t.id) for t in update.trades]
    assert [t["S"] for t in l_msg["data"]] == [t.side.capitalize() for t in update.trades]
    assert [t["T"] for t in s_msg["data"]] == sorted(t["T"] for t in s_msg["data"])
    assert all(len(t["i"]) == 36 and t["i"].count("-") == 4 for t in l_msg["data"])
    assert l_msg["data"][0]["L"] in ("PlusTick", "ZeroPlusTick", "MinusTick", "ZeroMinusTick")
    assert s_msg["data"][0]["seq"] == fake.cross_seq("ETH/USDT")


@pytest_twisted.ensureDeferred
async def test_tickers_spot_snapshots_linear_deltas(fake: FakeBybit) -> None:
    spot = await connect(fake.urls["spot"])
    linear = await connect(fake.urls["linear"])
    await spot.request(sub("tickers.BTCUSDT"))
    await linear.request(sub("tickers.BTCUSDT"))
    await wait_for(lambda: spot.pushes() and linear.pushes(), what="initial tickers")
    first = linear.pushes()[0]
    fixture = _fixture("tickers_linear_snapshot")
    assert first["type"] == "snapshot" and set(first) == set(fixture)
    assert set(first["data"]) == set(fixture["data"])
    assert set(spot.pushes()[0]["data"]) == {
        "symbol",
        "lastPrice",
        "highPrice24h",
        "lowPrice24h",
        "prevPrice24h",
        "volume24h",
        "turnover24h",
        "price24hPcnt",
        "usdIndexPrice",
    }
    for _ in range(30):
        step_until(fake, "BTC/USDT", lambda u: u.trades)
    cs = fake.cross_seq("BTC/USDT")
    await wait_for(lambda: linear.pushes()[-1]["cs"] == cs and spot.pushes()[-1]["cs"] == cs)
    deltas = linear.pushes()[1:]
    assert deltas and all(m["type"] == "delta" for m in deltas)
    assert any(len(m["data"]) < len(first["data"]) for m in deltas)  # only changed fields
    assert all(m["data"]["symbol"] == "BTCUSDT" for m in deltas)
    cached = None
    for message in linear.pushes():
        cached = merge_ticker(cached, message)
    assert cached == fake._ticker(fake._state("BTC/USDT"), "linear")
    bids, asks, _ = fake.true_book("BTC/USDT", limit=1)
    assert cached is not None and (cached["bid1Price"], cached["ask1Size"]) == (
        bids[0][0],
        asks[0][1],
    )
    assert all(m["type"] == "snapshot" for m in spot.pushes())
    _code, body, _ = await get(fake, "/v5/market/tickers", category="spot", symbol="BTCUSDT")
    (rest,) = body["result"]["list"]
    assert {k: rest[k] for k in spot.pushes()[-1]["data"]} == spot.pushes()[-1]["data"]


@pytest_twisted.ensureDeferred
async def test_kline_push_and_rest(fake: FakeBybit) -> None:
    client = await connect(fake.urls["linear"])
    await client.request(sub("kline.5.BTCUSDT"))
    update = step_until(fake, "BTC/USDT", lambda u: u.trades)
    await wait_for(lambda: client.pushes("kline"), what="kline")
    message = client.pushes("kline")[-1]
    fixture = _fixture("kline")
    assert set(message) == set(fixture) and message["type"] == "snapshot"
    (item,) = message["data"]
    assert set(item) == set(fixture["data"][0]) and item["interval"] == "5"
    assert item["end"] - item["start"] == 300_000 - 1 and item["start"] % 300_000 == 0
    assert item["confirm"] is False
    assert Decimal(item["close"]) == Decimal(update.trades[-1].price)
    _code, body, _ = await get(
        fake, "/v5/market/kline", category="linear", symbol="BTCUSDT", interval="5"
    )
    row = body["result"]["list"][0]
    assert row == [
        str(item["start"]),
        item["open"],
        item["high"],
        item["low"],
        item["close"],
        item["volume"],
        item["turnover"],
    ]


def test_candles_close_and_confirm() -> None:
    clock = Clock()
    clock.advance(1_767_225_600)
    market = SimulatedMarket(("BTC/USDT",), seed=4, clock=clock.seconds, trade_probability=1.0)
    fb = FakeBybit(reactor=clock, market=market)
    state = fb._state("BTC/USDT")
    fb.step(5)
    clock.advance(61)
    fb.step(1)
    candles = state.candles["1"].all()
    assert candles[0].closed and not candles[-1].closed
    assert candles[0].kline("1")["confirm"] is True
    assert candles[-1].start == candles[0].start + 60_000


@pytest_twisted.ensureDeferred
async def test_maintenance_on_system_status(fake: FakeBybit) -> None:
    status = await connect(fake.urls["status"])
    market = await connect(fake.urls["spot"])
    err = await market.request(sub("system.status"))  # only on the status stream
    assert err["success"] is False
    err = await status.request(sub("orderbook.50.BTCUSDT"))
    assert err["success"] is False
    ack = await status.request(sub("system.status", req_id="s"))
    assert ack["success"] is True and ack["req_id"] == "s"
    assert status.pushes() == []  # nothing announced yet
    assert fake.maintenance_notice("scheduled", begin_in=10, duration=60) == 1
    await wait_for(lambda: status.pushes("system.status"), what="notice")
    message = status.pushes()[0]
    assert set(message) == {"topic", "ts", "data"}
    (record,) = message["data"]
    assert set(record) == {
        "id",
        "title",
        "state",
        "begin",
        "end",
        "href",
        "serviceTypes",
        "product",
        "uidSuffix",
        "maintainType",
        "env",
    }
    assert record["state"] == "scheduled" and int(record["end"]) - int(record["begin"]) == 60_000
    assert fake.maintenance_notice("ongoing", record_id=record["id"], disconnect_after=0.1) == 1
    await wait_for(lambda: len(status.pushes()) == 2, what="update")
    assert status.pushes()[1]["data"][0]["state"] == "ongoing"
    assert status.pushes()[1]["data"][0]["id"] == record["id"]
    _clean, code = await market.ended.addTimeout(TIMEOUT, reactor)
    assert code == 1006 and not status.ended.called  # market connections dropped
    _code, body, _ = await get(fake, "/v5/system/status")
    assert body["retCode"] == 0 and body["retMsg"] == ""
    assert [r["state"] for r in body["result"]["list"]] == ["ongoing"]
    _code, body, _ = await get(fake, "/v5/system/status", state="completed")
    assert body["result"]["list"] == []
    late = await connect(fake.urls["status"])
    await late.request(sub("system.status"))
    await wait_for(lambda: late.pushes(), what="records on subscribe")
    assert late.pushes()[0]["data"][0]["id"] == record["id"]


# -- one encoding per event, transport, TLS --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_event_encoded_once_for_all_sessions(fake: FakeBybit) -> None:
    a = await connect(fake.urls["linear"])
    b = await connect(fake.urls["linear"])
    for client in (a, b):
        await client.request(sub("orderbook.50.BTCUSDT"))
    step_until(fake, "BTC/USDT", lambda u: u.bids or u.asks)
    s1, s2 = fake.server.sessions
    assert s1.sent[-1] is s2.sent[-1]
    await wait_for(lambda: len(a.raw) >= 3 and len(b.raw) >= 3)
    assert a.raw[-1] == b.raw[-1]


@attrs.define
class BybitRules:
    """Just enough Bybit for :class:`Connection`: acks by ``req_id``, JSON ping."""

    control_rate: float = 5.0
    max_topics_per_message: int = 10
    max_topics_per_connection: int | None = None
    replies_to_control: bool = True
    binary_compression: Any = None
    heartbeat: Heartbeat | None = attrs.field(
        factory=lambda: Heartbeat('{"req_id":"hb","op":"ping"}', 0.1)
    )
    max_connection_age: float | None = None

    def _message(self, op: str, topics: Sequence[str], request_id: int) -> bytes:
        return json.dumps({"req_id": str(request_id), "op": op, "args": list(topics)}).encode()

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("unsubscribe", topics, request_id)

    def control_reply(self, message: Any) -> ControlReply | None:
        if not isinstance(message, dict) or message.get("op") not in ("subscribe", "unsubscribe"):
            return None
        if not str(message.get("req_id", "")).isdigit():
            return None
        if message["success"]:
            return ControlReply(int(message["req_id"]), True)
        return ControlReply(int(message["req_id"]), False, message["ret_msg"])

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw


@pytest_twisted.ensureDeferred
async def test_transport_connection_subscribes_and_pings(fake: FakeBybit) -> None:
    fake.idle_timeout = 0.3
    messages: list[Any] = []
    conn = Connection(
        fake.urls["linear"], BybitRules(), on_message=messages.append, reactor=reactor
    ).start()
    try:
        await conn.subscribe(["orderbook.50.BTCUSDT"]).addTimeout(TIMEOUT, reactor)
        with pytest.raises(SubscriptionError, match="handler not found"):
            await conn.subscribe(["orderbook.50.XRPUSDT"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: any("topic" in m for m in messages), what="snapshot")
        snapshot = next(m for m in messages if "topic" in m)
        assert snapshot["type"] == "snapshot"
        await sleep(0.8)  # idle: the client's JSON pings keep the connection up
        assert fake.pings >= 2 and fake.idle_closes == 0 and conn.is_open
        pongs = [m for m in messages if m.get("ret_msg") == "pong"]
        assert pongs and all(p["req_id"] == "hb" and p["op"] == "ping" for p in pongs)
    finally:
        await conn.close()


@pytest_twisted.ensureDeferred
async def test_tls_stream_and_rest(test_ca: TestCA) -> None:
    fb = await FakeBybit(reactor=reactor, tls=test_ca.issue()).start()
    messages: list[Any] = []
    conn = Connection(
        fb.urls["spot"],
        BybitRules(heartbeat=None),
        on_message=messages.append,
        reactor=reactor,
        options=TransportOptions(trust_root=test_ca.trust_root()),
    ).start()
    try:
        assert fb.urls["spot"].startswith("wss://127.0.0.1:")
        assert fb.urls["linear"].endswith("/v5/public/linear")
        assert fb.urls["rest"].startswith("https://127.0.0.1:")
        await conn.subscribe(["orderbook.50.ETHUSDT"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: any("topic" in m for m in messages), what="snapshot over TLS")
        snapshot = next(m for m in messages if "topic" in m)
        assert snapshot["data"]["u"] == fb.update_id("ETH/USDT")
    finally:
        await conn.close()
        await fb.stop()


@pytest_twisted.ensureDeferred
async def test_reply_delay_holds_ack_and_snapshot_together(fake: FakeBybit) -> None:
    fake.server.reply_delay = 0.2
    client = await connect(fake.urls["spot"])
    client.send_json(sub("orderbook.50.BTCUSDT"))
    await sleep(0.05)
    step_until(fake, "BTC/USDT")  # before the ack: not sent to this client
    assert client.messages == []
    await wait_for(lambda: client.pushes(), what="snapshot")
    ack, snapshot = client.messages[:2]
    assert ack["op"] == "subscribe" and snapshot["type"] == "snapshot"
    assert snapshot["data"]["u"] == fake.update_id("BTC/USDT")


@pytest_twisted.ensureDeferred
async def test_server_faults_drop_and_stall(fake: FakeBybit) -> None:
    client = await connect(fake.urls["spot"])
    await client.request(sub("orderbook.50.BTCUSDT"))
    session = fake.server.sessions[0]
    session.stall()
    count = len(client.messages)
    step_until(fake, "BTC/USDT", lambda u: u.bids or u.asks)
    await sleep(0.05)
    assert len(client.messages) == count
    session.resume()
    session.drop()
    _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
    assert code == 1006
    await wait_for(lambda: not fake._sessions, what="session forgotten")
    assert not fake._state("BTC/USDT").topics[("spot", "orderbook.50.BTCUSDT")].subscribers


# -- determinism, bad arguments, stop --------------------------------------------------------------


def test_deterministic_for_a_seed() -> None:
    a = FakeBybit(seed=11, reactor=Clock())
    b = FakeBybit(seed=11, reactor=Clock())
    assert a.step(300) == b.step(300)
    assert a.true_book("ETH/USDT") == b.true_book("ETH/USDT")
    assert a._rest_trades({"category": "linear", "symbol": "BTCUSDT"}) == b._rest_trades(
        {"category": "linear", "symbol": "BTCUSDT"}
    )
    assert a._ticker(a._state("ETH/USDT"), "linear") == b._ticker(b._state("ETH/USDT"), "linear")
    c = FakeBybit(seed=12, reactor=Clock())
    assert c.step(300) != a.step(300)


def test_true_book_history_and_bad_arguments() -> None:
    fb = FakeBybit(("BTC/USDT",), reactor=Clock())
    first = fb.true_book("BTC/USDT")
    fb.step(50)
    assert fb.true_book("BTC/USDT", nonce=first[2]) == first
    assert fb.true_book("BTC/USDT:USDT") == fb.true_book("BTC/USDT")
    assert fb.true_book("BTC/USDT", limit=3)[0] == fb.true_book("BTC/USDT")[0][:3]
    assert fb.market_id("BTC/USDT:USDT") == "BTCUSDT"
    with pytest.raises(KeyError):
        fb.skip_next("DOGE/USDT")
    with pytest.raises(ValueError):
        fb.skip_next("BTC/USDT", 0)
    with pytest.raises(ValueError):
        FakeBybit(idle_timeout=0)
    market = SimulatedMarket(("SOL/USDC",), seed=1, tick_size="0.001", amount_step="0.1")
    fs = FakeBybit(market=market, reactor=Clock())
    bids, _asks, _u = fs.true_book("SOL/USDC")
    assert fs.market_id("SOL/USDC") == "SOLUSDC"
    assert len(bids[0][0].partition(".")[2]) == 3 and len(bids[0][1].partition(".")[2]) == 1


@pytest_twisted.ensureDeferred
async def test_run_and_stop_leave_no_delayed_calls() -> None:
    fb = await FakeBybit(reactor=reactor, idle_timeout=30).start()
    client = await connect(fb.urls["linear"])
    await client.request(sub("orderbook.1.BTCUSDT", "orderbook.50.BTCUSDT"))
    await fb.run(200, count=10).addTimeout(TIMEOUT, reactor)
    assert fb._loop is None
    done = fb.run(100)
    fb.server.reply_delay = 5.0
    client.send_json(sub("publicTrade.BTCUSDT"))
    await wait_for(lambda: len(fb.server.received) == 2)
    assert our_delayed_calls(fb)  # idle timer, delayed ack, level-1 loop, the run loop
    await fb.stop()
    assert done.called
    assert our_delayed_calls(fb) == []
    assert [c for c in reactor.getDelayedCalls() if c.active() and "bybit" in repr(c.func)] == []
