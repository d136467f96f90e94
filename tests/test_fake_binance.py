"""Tests for :class:`txexchange.testing.binance.FakeBinance`.

Real reactor, real loopback sockets: a bare Autobahn client or the project's
:class:`~txexchange.transport.Connection` on the WebSocket side, treq on the
REST side; what arrives is parsed with the Binance adapter.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from itertools import pairwise
from typing import Any

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
from txexchange.adapters.binance import (
    ApplyDelta,
    ApplySnapshot,
    BinanceBookSync,
    BinanceWireRules,
    NeedSnapshot,
    Resync,
    combined_stream_url,
    market_index,
    parse_depth_snapshot,
    parse_klines,
    parse_markets,
    parse_message,
    parse_rest_error,
    parse_rest_trades,
    parse_ticker_24hr,
)
from txexchange.errors import BadSymbol, DDoSProtection, RateLimitExceeded
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.state.book import OrderBook
from txexchange.testing.binance import FakeBinance
from txexchange.testing.market import SimulatedMarket
from txexchange.transport import Connection

TIMEOUT = 5.0

# -- helpers -------------------------------------------------------------------------


class Client(WebSocketClientProtocol):
    """A bare WebSocket client keeping every decoded message."""

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
        self.messages.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.ended.called:
            self.ended.callback((wasClean, code))

    def send_json(self, obj: Any) -> None:
        self.sendMessage(json.dumps(obj).encode())

    def replies(self) -> list[Any]:
        return [m for m in self.messages if isinstance(m, dict) and "id" in m]

    async def request(self, obj: Any) -> Any:
        before = len(self.replies())
        self.send_json(obj)
        await wait_for(lambda: len(self.replies()) > before, TIMEOUT, f"reply to {obj!r:.80}")
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


def http() -> treq.client.HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=False)
    return treq.client.HTTPClient(Agent(reactor, pool=pool))


async def get(fake: FakeBinance, path: str, **params: Any) -> tuple[int, Any, Any]:
    response = await http().get(fake.urls["rest"] + path, params=params)
    body = await response.content()
    return response.code, response.headers, json.loads(body) if body else None


def header(headers: Any, name: str) -> str | None:
    values = headers.getRawHeaders(name)
    return values[0].decode() if values and isinstance(values[0], bytes) else (
        values[0] if values else None
    )


def our_delayed_calls(fake: FakeBinance) -> list[Any]:
    """Active delayed calls that belong to ``fake`` (its LoopingCall or its methods)."""
    found = []
    for call in reactor.getDelayedCalls():
        if not call.active():
            continue
        owner = getattr(call.func, "__self__", None)
        if owner is not None and (owner is fake or owner is fake._loop):
            found.append(call)
        module = getattr(call.func, "__module__", "") or ""
        if module == "txexchange.testing.binance":
            found.append(call)
    return found


def step_until(fake: FakeBinance, symbol: str, predicate: Any = None, limit: int = 10_000) -> Any:
    """Step until an update of ``symbol`` (matching ``predicate``) happens; return it."""
    for _ in range(limit):
        for update in fake.step():
            if update.symbol == symbol and (predicate is None or predicate(update)):
                return update
    raise AssertionError(f"no matching update for {symbol} in {limit} steps")


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    for client in _clients:
        if client.transport is not None:
            client.transport.abortConnection()
    _clients.clear()


@pytest_twisted.async_yield_fixture
async def fake() -> AsyncIterator[FakeBinance]:
    fb = await FakeBinance(reactor=reactor, seed=7).start()
    try:
        yield fb
    finally:
        await fb.stop()
        assert our_delayed_calls(fb) == []


def index(fake: FakeBinance) -> Any:
    return market_index(fake.exchange_info)


# -- REST ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_urls_and_exchange_info(fake: FakeBinance) -> None:
    port = fake.server.port
    assert fake.urls == {
        "ws": f"ws://127.0.0.1:{port}",
        "rest": f"http://127.0.0.1:{port}",
        "ws_api": f"ws://127.0.0.1:{port}/ws-api/v3",
    }
    code, headers, body = await get(fake, "/api/v3/exchangeInfo")
    assert code == 200
    assert header(headers, "X-MBX-USED-WEIGHT-1M") == "20"
    markets = parse_markets(body)
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    btc = markets["BTC/USDT"]
    assert (btc.id, btc.base, btc.quote, btc.active) == ("BTCUSDT", "BTC", "USDT", True)
    assert btc.tick_size == "0.01000000" and btc.amount_step == "0.00001000"
    assert body["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000,
    }  # fmt: skip
    assert fake.used_weight == 20
    assert [r.path for r in fake.rest_log] == ["/api/v3/exchangeInfo"]


@pytest_twisted.ensureDeferred
async def test_depth_snapshot_weights_and_unknown_symbol(fake: FakeBinance) -> None:
    fake.step(20)
    code, headers, body = await get(fake, "/api/v3/depth", symbol="ETHUSDT", limit=5)
    assert code == 200 and header(headers, "X-MBX-USED-WEIGHT-1M") == "5"
    snapshot = parse_depth_snapshot("ETH/USDT", body)
    bids, asks, uid = fake.true_book("ETH/USDT", limit=5)
    assert snapshot.nonce == uid
    assert [tuple(level) for level in snapshot.bids] == bids
    assert [tuple(level) for level in snapshot.asks] == asks
    for limit, weight in ((100, 5), (101, 25), (500, 25), (1000, 50), (5000, 250)):
        before = fake.used_weight
        code, headers, _ = await get(fake, "/api/v3/depth", symbol="BTCUSDT", limit=limit)
        assert code == 200
        assert fake.used_weight - before == weight
        assert header(headers, "X-MBX-USED-WEIGHT-1M") == str(fake.used_weight)
    code, headers, body = await get(fake, "/api/v3/depth", symbol="NOPEUSDT")
    assert code == 400 and body == {"code": -1121, "msg": "Invalid symbol."}
    assert header(headers, "X-MBX-USED-WEIGHT-1M") is not None
    assert isinstance(parse_rest_error(code, headers, body), BadSymbol)


@pytest_twisted.ensureDeferred
async def test_rest_trades_klines_tickers_parse() -> None:
    market = SimulatedMarket(("BTC/USDT",), seed=3, virtual_step_ms=1000, trade_probability=0.8)
    fb = await FakeBinance(reactor=reactor, market=market).start()
    try:
        updates = fb.step(200)
        trades = [t for u in updates for t in u.trades]
        code, _, rows = await get(fb, "/api/v3/trades", symbol="BTCUSDT", limit=10)
        assert code == 200
        parsed = parse_rest_trades("BTC/USDT", rows)
        assert [(t.id, t.price, t.amount, t.side) for t in parsed] == [
            (str(t.id), t.price, t.amount, t.side) for t in trades[-10:]
        ]
        code, _, rows = await get(fb, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
        candles = parse_klines("BTC/USDT", "1m", rows)
        assert len(candles) == 4  # 200 s of market time
        first_minute = [t for t in trades if t.timestamp < candles[1].timestamp]
        assert candles[0].open == first_minute[0].price
        assert candles[0].close == first_minute[-1].price
        assert rows[0][8] == len(first_minute)
        code, _, rows5 = await get(fb, "/api/v3/klines", symbol="BTCUSDT", interval="5m")
        assert code == 200 and len(rows5) == 1 and rows5[0][8] == len(trades)
        code, _, body = await get(fb, "/api/v3/klines", symbol="BTCUSDT", interval="7m")
        assert code == 400 and body["code"] == -1120
        code, _, row = await get(fb, "/api/v3/ticker/24hr", symbol="BTCUSDT")
        (ticker,) = parse_ticker_24hr(row, index(fb))
        assert ticker.last == trades[-1].price and row["count"] == len(trades)
        bids, asks, _ = fb.true_book("BTC/USDT", limit=1)
        assert (ticker.bid, ticker.ask) == (bids[0][0], asks[0][0])
        code, _, rows = await get(fb, "/api/v3/ticker/24hr", symbols='["BTCUSDT"]')
        assert code == 200 and isinstance(rows, list) and rows[0]["symbol"] == "BTCUSDT"
        code, _, body = await get(fb, "/api/v3/ticker/24hr", symbols='["BTCUSDT","XUSDT"]')
        assert code == 400 and body["code"] == -1121
    finally:
        await fb.stop()


@pytest_twisted.ensureDeferred
async def test_weight_limit_429_then_418_on_a_clock() -> None:
    clock = Clock()
    clock.advance(1000.0)  # window [960, 1020)
    fb = await FakeBinance(reactor=reactor, weight_limit=30, clock=clock).start()
    try:
        for n in range(1, 7):
            code, headers, _ = await get(fb, "/api/v3/depth", symbol="BTCUSDT")
            assert code == 200 and header(headers, "X-MBX-USED-WEIGHT-1M") == str(5 * n)
        code, headers, body = await get(fb, "/api/v3/depth", symbol="BTCUSDT")
        assert code == 429 and body["code"] == -1003
        assert header(headers, "Retry-After") == "20"
        assert header(headers, "X-MBX-USED-WEIGHT-1M") == "30"
        error = parse_rest_error(code, headers, body)
        assert isinstance(error, RateLimitExceeded) and error.retry_after == 20.0
        assert fb.rejected_429 == 1 and fb.banned_418 == 0
        clock.advance(5)  # still inside Retry-After: banned
        code, headers, body = await get(fb, "/api/v3/exchangeInfo")
        assert code == 418 and isinstance(parse_rest_error(code, headers, body), DDoSProtection)
        assert header(headers, "Retry-After") == str(int(fb.ban_seconds))
        clock.advance(60)  # the window reset, but the ban holds
        code, _, _ = await get(fb, "/api/v3/ping")
        assert code == 418 and fb.banned_418 == 2
        clock.advance(fb.ban_seconds)
        code, headers, _ = await get(fb, "/api/v3/ping")
        assert code == 200 and header(headers, "X-MBX-USED-WEIGHT-1M") == "1"
        assert fb.used_weight == 1
        assert [r.path for r in fb.rest_log][-1] == "/api/v3/ping"
    finally:
        await fb.stop()


@pytest_twisted.ensureDeferred
async def test_weight_limit_on_the_reactor_and_toolkit_faults(fake: FakeBinance) -> None:
    fake.weight_limit = 20
    code, _, _ = await get(fake, "/api/v3/exchangeInfo")
    assert code == 200
    code, headers, _ = await get(fake, "/api/v3/time")
    assert code == 429 and 1 <= int(header(headers, "Retry-After") or 0) <= 60
    code, _, _ = await get(fake, "/api/v3/time")
    assert code == 418
    assert (fake.rejected_429, fake.banned_418) == (1, 1)
    # toolkit faults come first
    fake.server.rest.fail_next(503, path="/api/v3/time")
    code, _, _ = await get(fake, "/api/v3/time")
    assert code == 503 and fake.banned_418 == 1


# -- WebSocket: control protocol ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_list_unsubscribe_and_errors(fake: FakeBinance) -> None:
    client = await connect(fake.urls["ws"] + "/ws")
    reply = await client.request(
        {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 1}
    )
    assert reply == {"result": None, "id": 1}
    reply = await client.request({"method": "LIST_SUBSCRIPTIONS", "id": 3})
    assert reply == {"result": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 3}
    reply = await client.request({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 312})
    assert reply == {"result": None, "id": 312}
    reply = await client.request({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 4})
    assert reply["id"] == 4 and reply["error"]["code"] == 2
    assert reply["error"]["msg"].startswith("Invalid request")
    await sleep(1.05)
    reply = await client.request({"method": "SUBSCRIBE", "params": ["!ticker@arr"], "id": 5})
    assert reply["error"]["code"] == 2 and "retired" in reply["error"]["msg"]
    reply = await client.request({"method": "SUBSCRIBE", "params": ["btcusdt@depth7"], "id": 6})
    assert reply["error"]["code"] == 2
    reply = await client.request({"method": "SET_PROPERTY", "params": ["combined", 1], "id": 7})
    assert reply["error"]["code"] == 1
    reply = await client.request({"method": "LIST_SUBSCRIPTIONS", "id": "abc"})
    assert reply == {"result": ["btcusdt@aggTrade"], "id": "abc"}
    assert fake.server.sessions[0].subscriptions == {"btcusdt@aggTrade"}
    assert fake.control_rate_violations == 0


@pytest_twisted.ensureDeferred
async def test_more_than_1024_streams_is_refused() -> None:
    symbols = [f"S{i}/USDT" for i in range(25)]
    fb = await FakeBinance(symbols, reactor=reactor).start()
    try:
        kinds = ["depth", "depth@100ms", "trade", "aggTrade", "bookTicker", "ticker",
                 "miniTicker"] + [f"depth{n}{s}" for n in (5, 10, 20) for s in ("", "@100ms")]
        kinds += [f"kline_{i}" for i in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h",
                                          "8h", "12h", "1d", "3d", "1w", "1M", "1s")]  # fmt: skip
        kinds += [k + "@+08:00" for k in kinds if k.startswith("kline_")]
        names = [f"s{i}usdt@{k}" for i in range(25) for k in kinds]
        assert len(names) >= 1025
        client = await connect(fb.urls["ws"] + "/stream")
        reply = await client.request({"method": "SUBSCRIBE", "params": names[:1025], "id": 1})
        assert reply["error"]["code"] == 2 and "1024" in reply["error"]["msg"]
        reply = await client.request({"method": "SUBSCRIBE", "params": names[:1024], "id": 2})
        assert reply == {"result": None, "id": 2}
        reply = await client.request({"method": "SUBSCRIBE", "params": [names[1024]], "id": 3})
        assert reply["error"]["code"] == 2
        reply = await client.request({"method": "LIST_SUBSCRIPTIONS", "id": 4})
        assert len(reply["result"]) == 1024
    finally:
        await fb.stop()


@pytest_twisted.ensureDeferred
async def test_flooding_client_is_disconnected(fake: FakeBinance) -> None:
    client = await connect(fake.urls["ws"] + "/ws/btcusdt@trade")
    for i in range(6):
        client.send_json({"method": "LIST_SUBSCRIPTIONS", "id": i})
    _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
    assert code == 1008
    assert fake.control_rate_violations == 1
    assert len(client.replies()) == 5  # the sixth was not answered
    await wait_for(lambda: not fake.server.sessions, what="session gone")
    assert fake._subs == {}


@pytest_twisted.ensureDeferred
async def test_client_rate_limiting_stays_under_the_limit(fake: FakeBinance) -> None:
    """The transport's paced SUBSCRIBEs (BinanceWireRules) never trip the 5/s limit."""
    conn = Connection(
        combined_stream_url(fake.urls["ws"]), BinanceWireRules(), on_message=lambda m: None,
        reactor=reactor,
    ).start()  # fmt: skip
    try:
        topics = ["btcusdt@trade", "btcusdt@depth", "btcusdt@depth5", "btcusdt@ticker",
                  "ethusdt@trade", "ethusdt@depth", "ethusdt@bookTicker"]  # fmt: skip
        # one at a time, so that each is its own message
        for topic in topics:
            await conn.subscribe([topic]).addTimeout(TIMEOUT, reactor)
        assert len(fake.server.received) == len(topics)
        assert fake.control_rate_violations == 0
        assert fake.server.sessions[0].subscriptions == set(topics)
    finally:
        await conn.close()


# -- WebSocket: streams --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_raw_stream_bare_events_and_combined_wrapping(fake: FakeBinance) -> None:
    raw = await connect(fake.urls["ws"] + "/ws/btcusdt@trade")
    combined = await connect(fake.urls["ws"] + "/stream?streams=btcusdt@trade/ethusdt@depth")
    assert fake.server.sessions[1].subscriptions == {"btcusdt@trade", "ethusdt@depth"}
    updates = []
    while not any(u.symbol == "BTC/USDT" and u.trades for u in updates) or not any(
        u.symbol == "ETH/USDT" for u in updates
    ):
        updates.extend(fake.step())
    btc = next(u for u in updates if u.symbol == "BTC/USDT" and u.trades)
    eth = next(u for u in updates if u.symbol == "ETH/USDT")
    await wait_for(lambda: len(combined.messages) >= len(btc.trades) + 1, what="combined")
    await wait_for(lambda: len(raw.messages) >= len(btc.trades), what="raw trades")
    idx = index(fake)
    first = raw.messages[0]
    assert first["e"] == "trade" and first["s"] == "BTCUSDT" and "stream" not in first
    assert set(first) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
    (trade,) = parse_message(first, idx)
    assert isinstance(trade, Trade)
    assert (trade.id, trade.price, trade.amount, trade.side) == (
        str(btc.trades[0].id), btc.trades[0].price, btc.trades[0].amount, btc.trades[0].side
    )
    streams = [m["stream"] for m in combined.messages]
    assert set(streams) <= {"btcusdt@trade", "ethusdt@depth"} and "ethusdt@depth" in streams
    depth = next(m for m in combined.messages if m["stream"] == "ethusdt@depth")
    assert set(depth) == {"stream", "data"}
    assert depth["data"]["e"] == "depthUpdate" and depth["data"]["s"] == "ETHUSDT"
    assert (depth["data"]["U"], depth["data"]["u"]) == (eth.first_id, eth.last_id)
    (delta,) = parse_message(depth, idx)
    assert isinstance(delta, BookDelta) and delta.symbol == "ETH/USDT"
    # the raw session got no depth; the wrapped bytes are the raw bytes inside the wrapper
    assert all(m["e"] == "trade" for m in raw.messages)
    wrapped = next(r for r in combined.raw if r.startswith(b'{"stream":"btcusdt@trade"'))
    assert wrapped == b'{"stream":"btcusdt@trade","data":' + raw.raw[0] + b"}"


@pytest_twisted.ensureDeferred
async def test_payload_encoded_once_for_all_sessions(fake: FakeBinance) -> None:
    a = await connect(fake.urls["ws"] + "/stream?streams=btcusdt@depth")
    b = await connect(fake.urls["ws"] + "/stream?streams=btcusdt@depth")
    c = await connect(fake.urls["ws"] + "/ws/ethusdt@depth")
    step_until(fake, "BTC/USDT")
    s1, s2, s3 = fake.server.sessions
    assert s1.sent and s1.sent[-1] is s2.sent[-1]
    assert list(s3.sent) == []  # ETH only
    await wait_for(lambda: a.messages and b.messages)
    assert a.raw == b.raw and c.messages == []


def _sync_book(
    fake: FakeBinance, symbol: str, messages: list[Any], snapshot: BookSnapshot | None,
    sync: BinanceBookSync, book: OrderBook,
) -> list[Any]:  # fmt: skip
    """Feed ``messages`` (and ``snapshot``) through the adapter's sync into ``book``."""
    actions = []
    idx = index(fake)
    for message in messages:
        result = parse_message(message, idx)
        for event in result if isinstance(result, list) else []:
            if isinstance(event, BookDelta) and event.symbol == symbol:
                action = sync.on_delta(event)
                actions.append(action)
                if isinstance(action, ApplyDelta):
                    book.apply_delta(action.delta)
    if snapshot is not None:
        action = sync.on_snapshot(snapshot)
        actions.append(action)
        if isinstance(action, ApplySnapshot):
            book.apply_snapshot(action.snapshot)
            for delta in action.deltas:
                book.apply_delta(delta)
    return actions


def _assert_book_true(fake: FakeBinance, book: OrderBook, symbol: str) -> None:
    assert book.nonce is not None
    bids, asks, uid = fake.true_book(symbol, nonce=book.nonce)
    snap = book.snapshot()
    assert uid == book.nonce
    assert list(snap.bids) == bids and list(snap.asks) == asks


@pytest_twisted.ensureDeferred
async def test_depth_snapshot_plus_diffs_equal_the_true_book_and_gap_detected(
    fake: FakeBinance,
) -> None:
    messages: list[Any] = []
    conn = Connection(
        combined_stream_url(fake.urls["ws"]), BinanceWireRules(), on_message=messages.append,
        reactor=reactor,
    ).start()  # fmt: skip
    try:
        await conn.subscribe(["btcusdt@depth@100ms"])
        fake.step(40)
        code, _, body = await get(fake, "/api/v3/depth", symbol="BTCUSDT", limit=5000)
        assert code == 200
        snapshot = parse_depth_snapshot("BTC/USDT", body)
        fake.step(200)
        last = fake.market.last_update_id("BTC/USDT")
        await wait_for(lambda: messages and messages[-1]["data"]["u"] == last, what="diffs")
        sync = BinanceBookSync("BTC/USDT")
        book = OrderBook("BTC/USDT")
        actions = _sync_book(fake, "BTC/USDT", messages, snapshot, sync, book)
        assert isinstance(actions[0], NeedSnapshot)
        assert isinstance(actions[-1], ApplySnapshot) and actions[-1].book_id == last
        _assert_book_true(fake, book, "BTC/USDT")
        assert book.nonce == last
        # continuity on the wire: U == previous u + 1
        us = [(m["data"]["U"], m["data"]["u"]) for m in messages]
        assert all(b[0] == a[1] + 1 for a, b in pairwise(us))
        # a gap: the next 2 diffs of BTC are withheld
        seen = len(messages)
        fake.skip_next("BTC/USDT", 2)
        step_until(fake, "BTC/USDT")
        step_until(fake, "BTC/USDT")
        after = step_until(fake, "BTC/USDT")
        await wait_for(lambda: messages[-1]["data"]["u"] == after.last_id, what="post-gap diff")
        assert len(messages) == seen + 1 and fake.skipped_diffs == 2
        gap = messages[-1]["data"]
        assert gap["U"] > us[-1][1] + 1
        (action,) = _sync_book(fake, "BTC/USDT", messages[seen:], None, sync, book)
        assert isinstance(action, Resync)
        # a mid-stream partial check: the book at its nonce is the true book then
        _assert_book_true(fake, book, "BTC/USDT")
    finally:
        await conn.close()


@pytest_twisted.ensureDeferred
async def test_partial_depth_and_book_ticker(fake: FakeBinance) -> None:
    client = await connect(
        fake.urls["ws"] + "/stream?streams=btcusdt@depth5/btcusdt@depth20@100ms/btcusdt@bookTicker"
    )
    update = step_until(fake, "BTC/USDT")
    await wait_for(lambda: len(client.messages) >= 2, what="partial depth")
    by_stream = {m["stream"]: m["data"] for m in client.messages}
    five = by_stream["btcusdt@depth5"]
    assert set(five) == {"lastUpdateId", "bids", "asks"} and five["lastUpdateId"] == update.last_id
    bids, asks, uid = fake.true_book("BTC/USDT", limit=5)
    assert [tuple(x) for x in five["bids"]] == bids and [tuple(x) for x in five["asks"]] == asks
    (snap,) = parse_message({"stream": "btcusdt@depth20@100ms",
                             "data": by_stream["btcusdt@depth20@100ms"]}, index(fake))
    assert isinstance(snap, BookSnapshot) and len(snap.bids) == 20 and snap.nonce == uid
    ticker = by_stream["btcusdt@bookTicker"]
    assert ticker == {"u": uid, "s": "BTCUSDT", "b": bids[0][0], "B": bids[0][1],
                      "a": asks[0][0], "A": asks[0][1]}  # fmt: skip
    (event,) = parse_message({"stream": "btcusdt@bookTicker", "data": ticker}, index(fake))
    assert isinstance(event, Ticker) and event.bid == bids[0][0]


@pytest_twisted.ensureDeferred
async def test_trades_klines_tickers_parse_with_the_adapter() -> None:
    market = SimulatedMarket(("BTC/USDT", "ETH/USDT"), seed=5, virtual_step_ms=1000,
                             trade_probability=0.7, symbols_per_step=2)  # fmt: skip
    fb = await FakeBinance(reactor=reactor, market=market, ticker_interval=10).start()
    try:
        streams = ["btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@kline_5m", "btcusdt@ticker",
                   "btcusdt@miniTicker", "!miniTicker@arr"]  # fmt: skip
        client = await connect(fb.urls["ws"] + "/stream?streams=" + "/".join(streams))
        updates = fb.step(130)
        trades = [t for u in updates if u.symbol == "BTC/USDT" for t in u.trades]
        await wait_for(
            lambda: any(m["stream"] == "btcusdt@aggTrade" and m["data"]["l"] == trades[-1].id
                        for m in client.messages), what="last aggTrade",
        )  # fmt: skip
        idx = index(fb)
        by: dict[str, list[Any]] = {}
        for m in client.messages:
            by.setdefault(m["stream"], []).append(m)
        agg = [parse_message(m, idx)[0] for m in by["btcusdt@aggTrade"]]
        assert [t.id for t in agg] == [str(t.id) for t in trades] or [
            m["data"]["f"] for m in by["btcusdt@aggTrade"]
        ] == [t.id for t in trades]
        agg_ids = [m["data"]["a"] for m in by["btcusdt@aggTrade"]]
        assert agg_ids == list(range(agg_ids[0], agg_ids[0] + len(agg_ids)))
        klines = [parse_message(m, idx)[0] for m in by["btcusdt@kline_1m"]]
        assert all(isinstance(k, Candle) and k.timeframe == "1m" for k in klines)
        closed = [k for k in klines if k.closed]
        assert len(closed) == 2  # 130 s of market time: two minutes rolled over
        raw_k = [m["data"]["k"] for m in by["btcusdt@kline_1m"] if m["data"]["k"]["x"]]
        assert set(raw_k[0]) == set("tTsifLochlvnxqVQB")
        assert raw_k[0]["T"] - raw_k[0]["t"] == 59_999
        first_minute = [t for t in trades if t.timestamp <= raw_k[0]["T"]]
        assert raw_k[0]["n"] == len(first_minute) and raw_k[0]["c"] == first_minute[-1].price
        taker_buys = sum(Decimal(t.amount) for t in first_minute if t.side == "buy")
        assert Decimal(raw_k[0]["V"]) == taker_buys
        assert Decimal(raw_k[0]["v"]) == sum(Decimal(t.amount) for t in first_minute)
        code, _, rows = await get(fb, "/api/v3/klines", symbol="BTCUSDT", interval="1m")
        assert code == 200
        assert [r[0] for r in rows[:2]] == [k.timestamp for k in closed]
        assert [r[4] for r in rows[:2]] == [k.close for k in closed]
        five = [parse_message(m, idx)[0] for m in by["btcusdt@kline_5m"]]
        assert five and five[-1].timeframe == "5m" and not five[-1].closed
        tickers = [parse_message(m, idx)[0] for m in by["btcusdt@ticker"]]
        assert 10 <= len(tickers) <= 14  # one every 10 s of market time
        seen = [t for t in trades if t.timestamp <= tickers[-1].timestamp]
        assert tickers[-1].last == seen[-1].price and tickers[-1].vwap is not None
        assert by["btcusdt@ticker"][-1]["data"]["L"] == seen[-1].id
        minis = [parse_message(m, idx)[0] for m in by["btcusdt@miniTicker"]]
        assert len(minis) == len(tickers) and minis[-1].last == seen[-1].price
        arr = parse_message(by["!miniTicker@arr"][-1], idx)
        assert {t.symbol for t in arr} == {"BTC/USDT", "ETH/USDT"}
    finally:
        await fb.stop()


@pytest_twisted.ensureDeferred
async def test_bad_url_streams_close_the_session(fake: FakeBinance) -> None:
    client = await connect(fake.urls["ws"] + "/ws/nopeusdt@trade")
    _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
    assert code == 1008


@pytest_twisted.ensureDeferred
async def test_ws_api_ping_and_depth(fake: FakeBinance) -> None:
    client = await connect(fake.urls["ws_api"])
    reply = await client.request({"id": "a1", "method": "ping"})
    assert reply["status"] == 200 and reply["result"] == {}
    reply = await client.request({"id": 2, "method": "depth", "params": {"symbol": "BTCUSDT"}})
    assert reply["result"]["lastUpdateId"] == fake.market.last_update_id("BTC/USDT")
    reply = await client.request({"id": 3, "method": "order.place", "params": {}})
    assert reply["status"] == 400 and "error" in reply


# -- stepping --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_run_count_and_stop_leave_nothing_behind(fake: FakeBinance) -> None:
    before = fake.market.last_update_id("BTC/USDT") + fake.market.last_update_id("ETH/USDT")
    await fake.run(200, count=10).addTimeout(TIMEOUT, reactor)
    after = fake.market.last_update_id("BTC/USDT") + fake.market.last_update_id("ETH/USDT")
    assert after > before
    assert fake._loop is None and our_delayed_calls(fake) == []
    done = fake.run(100)
    loop = fake._loop
    await sleep(0.05)
    assert loop is not None and loop.running
    with pytest.raises(RuntimeError):
        fake.run(10)
    await fake.stop()
    assert done.called and not loop.running
    assert our_delayed_calls(fake) == []
    assert [c for c in reactor.getDelayedCalls() if c.active() and c.func == loop] == []


def test_deterministic_for_a_seed() -> None:
    a = FakeBinance(seed=11, reactor=Clock())
    b = FakeBinance(seed=11, reactor=Clock())
    assert a.step(300) == b.step(300)
    assert a.true_book("ETH/USDT") == b.true_book("ETH/USDT")
    assert a.exchange_info == b.exchange_info
    c = FakeBinance(seed=12, reactor=Clock())
    assert c.step(300) != a.step(300)


def test_true_book_history() -> None:
    fb = FakeBinance(("BTC/USDT",), reactor=Clock())
    first = fb.true_book("BTC/USDT")
    fb.step(50)
    assert fb.true_book("BTC/USDT", nonce=first[2]) == first
    assert fb.true_book("BTC/USDT", limit=3)[0] == fb.true_book("BTC/USDT")[0][:3]


@pytest_twisted.ensureDeferred
async def test_hundred_symbols_thousands_of_steps_reach_every_session() -> None:
    # (how fast: bench/bench_fakes.py; speed targets are not unit tests)
    symbols = [f"C{i}/USDT" for i in range(100)]
    fb = await FakeBinance(symbols, reactor=reactor, seed=2).start()
    try:
        streams = [f"c{i}usdt@depth@100ms" for i in range(100)] + [
            f"c{i}usdt@trade" for i in range(100)
        ]
        clients = [await connect(fb.urls["ws"] + "/stream") for _ in range(3)]
        for client in clients:
            reply = await client.request({"method": "SUBSCRIBE", "params": streams, "id": 1})
            assert reply == {"result": None, "id": 1}
        fb.step(3000)
        await wait_for(lambda: all(len(c.messages) >= 3001 for c in clients), 10, "delivery")
    finally:
        await fb.stop()


def test_unknown_symbol_and_bad_arguments() -> None:
    fb = FakeBinance(reactor=Clock())
    with pytest.raises(KeyError):
        fb.skip_next("DOGE/USDT")
    with pytest.raises(ValueError):
        fb.skip_next("BTC/USDT", 0)
    with pytest.raises(ValueError):
        FakeBinance(ticker_interval=0)


@pytest_twisted.ensureDeferred
async def test_late_kline_subscriber_sees_the_whole_candle() -> None:
    market = SimulatedMarket(("BTC/USDT",), seed=9, virtual_step_ms=1000, trade_probability=0.8)
    fb = await FakeBinance(reactor=reactor, market=market).start()
    try:
        before = [t for u in fb.step(100) for t in u.trades]  # 100 s: inside the first 5 minutes
        client = await connect(fb.urls["ws"] + "/ws/btcusdt@kline_5m")
        update = step_until(fb, "BTC/USDT", lambda u: u.trades)
        await wait_for(lambda: client.messages, what="kline")
        k = client.messages[-1]["k"]
        assert (k["i"], k["x"], k["s"]) == ("5m", False, "BTCUSDT")
        assert k["n"] == len(before) + len(update.trades)
        assert k["o"] == before[0].price and k["c"] == update.trades[-1].price
        _code, _, rows = await get(fb, "/api/v3/klines", symbol="BTCUSDT", interval="5m")
        assert rows[-1][8] == k["n"] and rows[-1][5] == k["v"] and rows[-1][7] == k["q"]
    finally:
        await fb.stop()
