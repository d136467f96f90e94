"""Tests for :class:`txexchange.testing.gemini.FakeGemini`.

Real reactor, real loopback sockets: a bare Autobahn client on the WebSocket
side (current API and legacy market data v1), treq on the REST side.  The
book rebuilding here is written from the Gemini documentation
(``PROTOCOLS.md`` section 3) and the message shapes are checked against the
Gemini fixtures in ``../shared/protocols/vectors.json``; nothing here uses
the Gemini adapter.  Gemini publishes no book checksum, so there is none to
verify; its integrity fields are ``U``/``u`` (current API) and
``socket_sequence`` (v1).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Hashable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool

from helpers import sleep, wait_for
from txexchange.errors import SubscriptionError
from txexchange.testing import TestCA
from txexchange.testing.gemini import FakeGemini
from txexchange.transport import Connection, ControlReply, Heartbeat, TransportOptions

TIMEOUT = 5.0
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _fixture(name: str) -> Any:
    fixtures = json.loads(VECTORS.read_text())["fixtures"]["gemini"]
    return next(f["message"] for f in fixtures if f["name"] == name)


# -- test-side book code, from the docs ------------------------------------------------------


class Book:
    """A local book of the current API: snapshot, then ``depthUpdate`` diffs whose
    ``U`` must be the previous ``u`` + 1 (quantity 0 deletes the level)."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.last: int | None = None
        self.gaps: list[tuple[int, int]] = []

    def load(self, snapshot: dict[str, Any]) -> None:
        self.bids = dict(map(tuple, snapshot["bids"]))
        self.asks = dict(map(tuple, snapshot["asks"]))
        self.last = snapshot["lastUpdateId"]

    def apply(self, diff: dict[str, Any]) -> None:
        assert self.last is not None
        if diff["u"] <= self.last:
            return
        if diff["U"] != self.last + 1:
            self.gaps.append((self.last, diff["U"]))
        for side, levels in ((self.bids, diff["b"]), (self.asks, diff["a"])):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last = diff["u"]

    def sides(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return bids, asks


class V1Book:
    """A local v1 book: ``change`` events set ``remaining`` at ``price`` (0 removes);
    ``socket_sequence`` must go up by exactly one per message."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None
        self.gaps: list[tuple[int, int]] = []
        self.trades: list[dict[str, Any]] = []
        self.heartbeats = 0
        #: change events whose ``delta`` does not match the local book
        self.bad_deltas = 0

    def feed(self, message: dict[str, Any]) -> None:
        seq = message["socket_sequence"]
        expected = 0 if self.seq is None else self.seq + 1
        if seq != expected:
            self.gaps.append((expected, seq))
        self.seq = seq
        if message["type"] == "heartbeat":
            self.heartbeats += 1
            return
        assert message["type"] == "update"
        for event in message["events"]:
            if event["type"] == "trade":
                self.trades.append(event)
                continue
            assert event["type"] == "change"
            if seq == 0:
                assert event["reason"] == "initial"
            side = self.bids if event["side"] == "bid" else self.asks
            old = Decimal(side.get(event["price"], "0"))
            remaining = Decimal(event["remaining"])
            if Decimal(event["delta"]) != remaining - old:
                self.bad_deltas += 1
            if remaining == 0:
                side.pop(event["price"], None)
            else:
                side[event["price"]] = event["remaining"]

    def sides(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return bids, asks


# -- clients ------------------------------------------------------------------------------------


class Client(WebSocketClientProtocol):
    """A bare WebSocket client keeping every message (decoded with orjson) and raw bytes."""

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
            self.messages.append(orjson.loads(payload))
        except ValueError:
            self.messages.append(payload.decode())

    def onClose(self, wasClean: bool, code: int | None, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        if not self.ended.called:
            self.ended.callback((wasClean, code))

    def replies(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and "id" in m]

    def of(self, key: str, value: Any = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if isinstance(m, dict) and key in m and (value is None or m[key] == value)
        ]

    async def request(self, obj: Any) -> dict[str, Any]:
        before = len(self.replies())
        self.sendMessage(obj.encode() if isinstance(obj, str) else json.dumps(obj).encode())
        await wait_for(lambda: len(self.replies()) > before, TIMEOUT, f"reply to {obj!r:.60}")
        return self.replies()[before]


_clients: list[Client] = []


async def connect(url: str) -> Client:
    port = int(url.split(":")[2].split("/")[0].split("?")[0])
    factory = WebSocketClientFactory(url, reactor=reactor)
    factory.protocol = Client
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT).connect(factory)
    await client.opened.addTimeout(TIMEOUT, reactor)
    _clients.append(client)
    return client


async def get(fake: FakeGemini, path: str, **params: Any) -> tuple[int, Any, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    response = await client.get(fake.urls["rest"] + path, params=params)
    body = await response.content()
    return response.code, json.loads(body), response.headers


def our_delayed_calls(fake: FakeGemini) -> list[Any]:
    found = []
    for call in reactor.getDelayedCalls():
        if not call.active():
            continue
        owner = getattr(call.func, "__self__", None)
        module = getattr(call.func, "__module__", "") or ""
        mine = owner is fake or (owner is not None and owner is fake._loop)
        if mine or module == "txexchange.testing.gemini":
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
async def fake() -> AsyncIterator[FakeGemini]:
    fg = await FakeGemini(reactor=reactor, seed=7).start()
    try:
        yield fg
    finally:
        await fg.stop()
        assert our_delayed_calls(fg) == []


def sub(*streams: str, request_id: str = "1") -> dict[str, Any]:
    return {"id": request_id, "method": "subscribe", "params": list(streams)}


# -- shapes and big integers ----------------------------------------------------------------------


def test_large_update_ids_parse_as_exact_ints() -> None:
    fixture = _fixture("new_depth_update_large_ids")
    raw = json.dumps(fixture).encode()
    decoded = orjson.loads(raw)
    assert decoded["U"] == 9007199254740993 and isinstance(decoded["U"], int)
    assert decoded["u"] == 2**53 + 2
    # a float would have lost the last bit: the test can fail
    assert float(decoded["U"]) != decoded["U"]
    book = Book()
    book.load({"lastUpdateId": 2**53, "bids": [], "asks": []})
    book.apply(decoded)
    assert book.gaps == [] and book.last == 2**53 + 2


@pytest_twisted.ensureDeferred
async def test_messages_have_the_documented_shapes(fake: FakeGemini) -> None:
    client = await connect(fake.ws_url())
    streams = ["btcusd@depth", "btcusd@bookTicker", "btcusd@trade", "btcusd@depth5"]
    assert await client.request(sub(*streams)) == {"id": "1", "result": None}
    v1 = await connect(fake.v1_url("BTC/USD", heartbeat=True))
    for _ in range(400):
        fake.step()
        if client.of("e", "trade") or len(client.of("e", "trade")) > 0:
            break
    await wait_for(lambda: client.of("e", "trade") and v1.of("events"), TIMEOUT, "trades")
    fake.send_v1_heartbeats()
    await wait_for(lambda: v1.of("type", "heartbeat"), TIMEOUT, "heartbeat")

    def keys(m: Any) -> list[str]:
        return list(m)

    assert keys(client.of("e", "depthUpdate")[0]) == keys(_fixture("new_depth_update"))
    assert keys(client.of("e", "trade")[0]) == keys(_fixture("new_trade_conformance_frame"))
    ticker = client.of("B")[0]
    assert keys(ticker) == keys(_fixture("new_bookTicker"))
    assert keys(client.of("lastUpdateId")[0]) == keys(_fixture("new_partial_depth"))
    update = next(m for m in v1.of("type", "update") if m["socket_sequence"] > 0)
    assert keys(update) == keys(_fixture("v1_update_change"))
    change = next(e for m in v1.of("events") for e in m["events"] if e["type"] == "change")
    assert keys(change) == keys(_fixture("v1_update_change")["events"][0])
    assert keys(v1.of("type", "heartbeat")[0]) == keys(_fixture("v1_heartbeat"))
    # E is nanoseconds, prices on the tick grid, quantities with 8 decimals
    diff = next(d for d in client.of("e", "depthUpdate") if d["b"] or d["a"])
    assert diff["E"] > 10**18 and diff["s"] == "btcusd"
    price, qty = (diff["b"] or diff["a"])[0]
    assert len(price.split(".")[1]) == 2 and len(qty.split(".")[1]) == 8
    trade = client.of("e", "trade")[0]
    assert isinstance(trade["t"], int) and isinstance(trade["m"], bool)


@pytest_twisted.ensureDeferred
async def test_update_ids_above_2_53_on_the_wire() -> None:
    fg = await FakeGemini(reactor=reactor, seed=9, update_id_offset=2**53).start()
    try:
        client = await connect(fg.ws_url(snapshot=-1))
        await client.request(sub("btcusd@depth", "btcusd@bookTicker"))
        await wait_for(lambda: client.of("lastUpdateId"), TIMEOUT, "snapshot")
        book = Book()
        book.load(client.of("lastUpdateId")[0])
        assert book.last == fg.update_id("BTC/USD") and book.last > 2**53
        fg.step(100)
        await wait_for(
            lambda: client.of("u") and client.of("u")[-1]["u"] == fg.update_id("BTC/USD"),
            TIMEOUT,
            "diffs",
        )
        for diff in client.of("e", "depthUpdate"):
            book.apply(diff)
            assert isinstance(diff["U"], int) and diff["U"] > 2**53
        assert book.gaps == []
        assert book.sides() == fg.true_book("BTC/USD", nonce=book.last)[:2]
        ticker = client.of("B")[-1]
        bids, asks, _ = fg.true_book("BTC/USD", nonce=ticker["u"], limit=1)
        assert (ticker["b"], ticker["a"]) == (bids[0][0], asks[0][0])
        # the raw frame carries the exact digits (no float rendering)
        raw = next(r for r in client.raw if b"depthUpdate" in r)
        assert str(orjson.loads(raw)["u"]).encode() in raw
    finally:
        await fg.stop()


# -- current API: requests -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_requests_replies_and_errors(fake: FakeGemini) -> None:
    client = await connect(fake.ws_url())
    assert await client.request(sub("btcusd@trade", "ethusd@bookTicker")) == {
        "id": "1",
        "result": None,
    }
    reply = await client.request({"id": "2", "method": "list_subscriptions"})
    assert reply == {"id": "2", "result": ["btcusd@trade", "ethusd@bookTicker"]}
    # the conformance suite's upper-case method works too
    reply = await client.request({"id": "3", "method": "SUBSCRIBE", "params": ["btcusd@depth"]})
    assert reply == {"id": "3", "result": None}
    assert await client.request({"id": "4", "method": "ping"}) == {"id": "4", "result": {}}
    reply = await client.request({"id": "5", "method": "time"})
    assert isinstance(reply["result"]["serverTime"], int)
    reply = await client.request({"id": "6", "method": "conninfo"})
    assert reply["result"]["subscriptions"] == 3 and reply["result"]["snapshot"] == 0
    # errors: unknown stream, unknown symbol, bad params, unknown method, not JSON
    for request in (
        sub("btcusd@nope", request_id="7"),
        sub("dogeusd@depth", request_id="7"),
        {"id": "7", "method": "subscribe", "params": "btcusd@depth"},
        {"id": "7", "method": "frobnicate"},
    ):
        reply = await client.request(request)
        assert reply["id"] == "7" and set(reply) == {"id", "error"}
        assert reply["error"]["code"] == 400 and reply["error"]["msg"]
    reply = await client.request("not json{")
    assert reply["id"] is None and "error" in reply
    # a refused subscribe changed nothing
    reply = await client.request({"id": "8", "method": "list_subscriptions"})
    assert reply["result"] == ["btcusd@trade", "ethusd@bookTicker", "btcusd@depth"]
    # unsubscribe stops the data
    reply = await client.request({"id": "9", "method": "unsubscribe", "params": ["btcusd@depth"]})
    assert reply == {"id": "9", "result": None}
    before = len(client.of("e", "depthUpdate"))
    fake.step(20)
    await client.request({"id": "10", "method": "ping"})
    assert len(client.of("e", "depthUpdate")) == before


@pytest_twisted.ensureDeferred
async def test_reply_delay_holds_the_reply_and_the_data(fake: FakeGemini) -> None:
    fake.server.reply_delay = 0.1
    client = await connect(fake.ws_url(snapshot=-1))
    client.sendMessage(json.dumps(sub("btcusd@depth")).encode())
    await sleep(0.03)
    fake.step(5)
    assert client.messages == []
    await wait_for(lambda: client.of("lastUpdateId"), TIMEOUT, "snapshot")
    assert client.messages[0] == {"id": "1", "result": None}


# -- current API: book --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_snapshot_and_diffs_rebuild_the_true_book(fake: FakeGemini) -> None:
    client = await connect(fake.ws_url(snapshot=-1))
    await client.request(sub("btcusd@depth", "ethusd@depth@100ms"))
    await wait_for(lambda: len(client.of("lastUpdateId")) == 2, TIMEOUT, "snapshots")
    books = {}
    for snapshot in client.of("lastUpdateId"):
        symbol = {"btcusd": "BTC/USD", "ethusd": "ETH/USD"}[snapshot["s"]]
        bids, asks, uid = fake.true_book(symbol)
        assert snapshot["lastUpdateId"] == uid
        assert (snapshot["bids"], snapshot["asks"]) == (
            [list(b) for b in bids],
            [list(a) for a in asks],
        )
        books[snapshot["s"]] = Book()
        books[snapshot["s"]].load(snapshot)
    checked = 0
    for _ in range(300):
        fake.step()
    await wait_for(
        lambda: (
            client.of("u")
            and client.of("u")[-1]["u"]
            >= fake.market.last_update_id(
                {"btcusd": "BTC/USD", "ethusd": "ETH/USD"}[client.of("u")[-1]["s"]]
            )
        ),
        TIMEOUT,
        "diffs",
    )
    await sleep(0.05)
    for diff in client.of("e", "depthUpdate"):
        book = books[diff["s"]]
        book.apply(diff)
        symbol = {"btcusd": "BTC/USD", "ethusd": "ETH/USD"}[diff["s"]]
        if checked < 40 or diff is client.of("e", "depthUpdate")[-1]:
            bids, asks, _ = fake.true_book(symbol, nonce=diff["u"])
            assert book.sides() == (bids, asks)
            checked += 1
    for symbol, book in books.items():
        assert book.gaps == []
        name = {"btcusd": "BTC/USD", "ethusd": "ETH/USD"}[symbol]
        assert book.last == fake.market.last_update_id(name)
        assert book.sides() == fake.true_book(name)[:2]
    # and the comparison can fail: one wrong level makes the books differ
    book = books["btcusd"]
    price = next(iter(book.bids))
    book.bids[price] = "999.00000000"
    assert book.sides() != fake.true_book("BTC/USD")[:2]


@pytest_twisted.ensureDeferred
async def test_snapshot_parameter_top_n_and_none(fake: FakeGemini) -> None:
    top = await connect(fake.ws_url(snapshot=3))
    none = await connect(fake.ws_url())
    await top.request(sub("btcusd@depth"))
    await none.request(sub("btcusd@depth"))
    await wait_for(lambda: top.of("lastUpdateId"), TIMEOUT, "snapshot")
    snapshot = top.of("lastUpdateId")[0]
    bids, asks, uid = fake.true_book("BTC/USD", limit=3)
    assert snapshot["lastUpdateId"] == uid and len(snapshot["bids"]) == 3
    assert snapshot["bids"] == [list(b) for b in bids] and snapshot["asks"] == [
        list(a) for a in asks
    ]
    fake.step(3)
    await wait_for(lambda: none.of("e", "depthUpdate"), TIMEOUT, "diff")
    assert none.of("lastUpdateId") == []


@pytest_twisted.ensureDeferred
async def test_depth_method_partial_depth_book_ticker_and_trades(fake: FakeGemini) -> None:
    client = await connect(fake.ws_url())
    reply = await client.request({"id": "d", "method": "depth", "params": {"symbol": "btcusd",
                                                                          "limit": 5}})  # fmt: skip
    bids, asks, uid = fake.true_book("BTC/USD", limit=5)
    assert reply == {
        "id": "d",
        "result": {"lastUpdateId": uid, "bids": [list(b) for b in bids],
                   "asks": [list(a) for a in asks]},
    }  # fmt: skip
    reply = await client.request({"id": "e", "method": "depth", "params": ["nope"]})
    assert "error" in reply
    await client.request(sub("btcusd@depth10", "btcusd@bookTicker", "btcusd@trade"))
    updates = fake.step(300)
    btc_trades = [t for u in updates if u.symbol == "BTC/USD" for t in u.trades]
    assert btc_trades
    await wait_for(lambda: len(client.of("e", "trade")) == len(btc_trades), TIMEOUT, "all trades")
    await client.request({"id": "p", "method": "ping"})
    got = client.of("e", "trade")
    assert [(t["t"], t["q"], t["m"]) for t in got] == [
        (t.id, t.amount, t.side == "sell") for t in btc_trades
    ]
    for partial in client.of("lastUpdateId"):
        bids, asks, _ = fake.true_book("BTC/USD", nonce=partial["lastUpdateId"], limit=10)
        assert partial["bids"] == [list(b) for b in bids]
        assert partial["asks"] == [list(a) for a in asks]
    tickers = client.of("B")
    assert tickers
    for ticker in tickers:
        bids, asks, _ = fake.true_book("BTC/USD", nonce=ticker["u"], limit=1)
        assert (ticker["b"], ticker["B"], ticker["a"], ticker["A"]) == (*bids[0], *asks[0])
    # partial depth is sent only when the top 10 changed
    parts = [(p["bids"], p["asks"]) for p in client.of("lastUpdateId")]
    assert parts and all(x != y for x, y in itertools.pairwise(parts))
    # bookTicker is sent only when the top changed
    tops = [(t["b"], t["B"], t["a"], t["A"]) for t in tickers]
    assert all(a != b for a, b in itertools.pairwise(tops))


# -- current API: faults ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sequence_gap_fault(fake: FakeGemini) -> None:
    client = await connect(fake.ws_url(snapshot=-1))
    await client.request(sub("btcusd@depth"))
    await wait_for(lambda: client.of("lastUpdateId"), TIMEOUT, "snapshot")
    book = Book()
    book.load(client.of("lastUpdateId")[0])
    fake.step(30)
    fake.skip_next("BTC/USD", 2)
    fake.step(200)
    await wait_for(
        lambda: client.of("u") and client.of("u")[-1]["u"] == fake.market.last_update_id("BTC/USD"),
        TIMEOUT,
        "diffs",
    )
    for diff in client.of("e", "depthUpdate"):
        book.apply(diff)
    assert fake.skipped_updates == 2
    assert len(book.gaps) == 1
    last, first = book.gaps[0]
    assert first > last + 1
    # the book built through the gap is wrong (that is why clients must resync)
    assert book.sides() != fake.true_book("BTC/USD")[:2]


@pytest_twisted.ensureDeferred
async def test_stale_snapshot_fault(fake: FakeGemini) -> None:
    fake.step(50)
    fake.stale_snapshot_next("BTC/USD", updates_behind=5, count=2)
    client = await connect(fake.ws_url(snapshot=-1))
    await client.request(sub("btcusd@depth"))
    await wait_for(lambda: client.of("lastUpdateId"), TIMEOUT, "snapshot")
    snapshot = client.of("lastUpdateId")[0]
    now = fake.market.last_update_id("BTC/USD")
    assert snapshot["lastUpdateId"] < now
    bids, asks, _ = fake.true_book("BTC/USD", nonce=snapshot["lastUpdateId"])
    assert snapshot["bids"] == [list(b) for b in bids]
    assert snapshot["asks"] == [list(a) for a in asks]
    fake.step(20)
    await wait_for(lambda: client.of("e", "depthUpdate"), TIMEOUT, "diff")
    first = client.of("e", "depthUpdate")[0]
    assert first["U"] > snapshot["lastUpdateId"] + 1  # detectable: the snapshot is too old
    reply = await client.request({"id": "s", "method": "depth", "params": {"symbol": "btcusd"}})
    assert reply["result"]["lastUpdateId"] < fake.market.last_update_id("BTC/USD")
    reply = await client.request({"id": "t", "method": "depth", "params": {"symbol": "btcusd"}})
    assert reply["result"]["lastUpdateId"] == fake.market.last_update_id("BTC/USD")


@pytest_twisted.ensureDeferred
async def test_each_event_is_encoded_once(fake: FakeGemini) -> None:
    a = await connect(fake.ws_url())
    b = await connect(fake.ws_url())
    await a.request(sub("btcusd@depth", "btcusd@trade"))
    await b.request(sub("btcusd@depth", "btcusd@trade"))
    fake.step(100)
    await wait_for(lambda: len(b.of("e")) >= len(a.of("e")) > 0, TIMEOUT, "data")
    await sleep(0.05)
    data_a = [r for r in a.raw if b'"e":' in r]
    data_b = [r for r in b.raw if b'"e":' in r]
    assert data_a == data_b
    sessions = fake.current_sessions()
    assert len(sessions) == 2
    sent_a = [p for p in sessions[0].sent if isinstance(p, bytes) and b'"e":' in p]
    sent_b = [p for p in sessions[1].sent if isinstance(p, bytes) and b'"e":' in p]
    assert sent_a and all(x is y for x, y in zip(sent_a, sent_b, strict=True))


@pytest_twisted.ensureDeferred
async def test_drop_stall_and_refused_handshakes(fake: FakeGemini) -> None:
    client = await connect(fake.ws_url())
    await client.request(sub("btcusd@depth"))
    session = fake.current_sessions()[0]
    session.stall()
    fake.step(20)
    await sleep(0.05)
    assert client.of("e") == []
    session.drop()
    was_clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
    assert not was_clean and code == 1006
    fake.server.reject_handshakes = True
    with pytest.raises(ConnectionError):
        await connect(fake.ws_url())
    fake.server.reject_handshakes = False
    with pytest.raises(ConnectionError):
        await connect(fake.server.rest_url.replace("http", "ws") + "/v1/marketdata/dogeusd")


# -- legacy v1 ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_v1_initial_and_changes_rebuild_the_true_book(fake: FakeGemini) -> None:
    fake.step(10)
    client = await connect(fake.v1_url("BTC/USD"))
    upper = await connect(fake.urls["marketdata_v1"] + "/BTCUSD")
    await wait_for(lambda: client.messages and upper.messages, TIMEOUT, "initial")
    initial = client.messages[0]
    assert initial["type"] == "update" and initial["socket_sequence"] == 0
    assert {e["reason"] for e in initial["events"]} == {"initial"}
    book = V1Book()
    book.feed(initial)
    bids, asks, _ = fake.true_book("BTC/USD", style="v1")
    assert book.sides() == (bids, asks)
    updates = fake.step(300)
    n = sum(1 for u in updates if u.symbol == "BTC/USD")
    await wait_for(lambda: len(client.messages) == n + 1, TIMEOUT, "updates")
    for message in client.messages[1:]:
        book.feed(message)
        assert message["timestampms"] // 1000 == message["timestamp"]
    assert book.gaps == [] and book.seq == n and book.bad_deltas == 0
    assert book.sides() == fake.true_book("BTC/USD", style="v1")[:2]
    sim_trades = [t for u in updates if u.symbol == "BTC/USD" for t in u.trades]
    assert [(t["tid"], t["makerSide"]) for t in book.trades] == [
        (t.id, "bid" if t.side == "sell" else "ask") for t in sim_trades
    ]
    event_ids = [m["eventId"] for m in client.messages]
    assert event_ids == sorted(set(event_ids))
    # the two sockets got the same events, numbered alike
    await wait_for(lambda: len(upper.messages) == n + 1, TIMEOUT, "updates 2")
    assert upper.raw[1:] == client.raw[1:]


@pytest_twisted.ensureDeferred
async def test_v1_socket_sequence_gap_fault(fake: FakeGemini) -> None:
    client = await connect(fake.v1_url("ETH/USD"))
    await wait_for(lambda: client.messages, TIMEOUT, "initial")
    book = V1Book()

    def eth_steps(k: int) -> int:
        done = 0
        while done < k:
            done += sum(1 for u in fake.step() if u.symbol == "ETH/USD")
        return done

    eth_steps(5)
    fake.skip_next_v1("ETH/USD", 3)
    eth_steps(10)
    await wait_for(lambda: len(client.messages) == 1 + 5 + 7, TIMEOUT, "updates")
    for message in client.messages:
        book.feed(message)
    assert book.gaps == [(6, 9)]
    assert book.seq == 15 == fake.socket_sequence(fake.v1_sessions("ETH/USD")[0]) - 1
    assert book.sides() != fake.true_book("ETH/USD", style="v1")[:2]


@pytest_twisted.ensureDeferred
async def test_v1_heartbeats_count_in_the_sequence() -> None:
    fg = await FakeGemini(reactor=reactor, seed=3, heartbeat_interval=0.05).start()
    try:
        client = await connect(fg.v1_url("BTC/USD", heartbeat=True))
        quiet = await connect(fg.v1_url("BTC/USD"))
        await wait_for(lambda: len(client.of("type", "heartbeat")) >= 3, TIMEOUT, "heartbeats")
        fg.step(5)
        await wait_for(lambda: len(client.of("type", "heartbeat")) >= 4, TIMEOUT, "heartbeats")
        book = V1Book()
        for message in list(client.messages):
            book.feed(message)
        assert book.gaps == [] and book.heartbeats >= 4
        assert quiet.of("type", "heartbeat") == []
    finally:
        await fg.stop()
    assert our_delayed_calls(fg) == []


@pytest_twisted.ensureDeferred
async def test_v1_filters(fake: FakeGemini) -> None:
    trades_only = await connect(fake.v1_url("BTC/USD", trades=True))
    bids_only = await connect(fake.v1_url("BTC/USD", bids=True))
    top = await connect(fake.v1_url("BTC/USD", top_of_book=True))
    await wait_for(
        lambda: trades_only.messages and bids_only.messages and top.messages, TIMEOUT, "initial"
    )
    assert trades_only.messages[0]["events"] == []
    assert {e["side"] for e in bids_only.messages[0]["events"]} == {"bid"}
    assert len(top.messages[0]["events"]) == 2
    fake.step(300)
    await sleep(0.1)
    for message in trades_only.messages[1:]:
        assert {e["type"] for e in message["events"]} == {"trade"}
    for message in bids_only.messages[1:]:
        assert {(e["type"], e["side"]) for e in message["events"]} == {("change", "bid")}
    book = V1Book()
    for message in top.messages:
        for event in message["events"]:
            if event["type"] == "trade":
                continue
            if message["socket_sequence"] > 0:
                assert event["reason"] == "top-of-book"
            side = book.bids if event["side"] == "bid" else book.asks
            side.clear()
            side[event["price"]] = event["remaining"]
    bids, asks, _ = fake.true_book("BTC/USD", limit=1, style="v1")
    assert book.sides() == (bids, asks)
    for client in (trades_only, bids_only, top):
        seqs = [m["socket_sequence"] for m in client.messages]
        assert seqs == list(range(len(seqs)))


# -- REST -----------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_urls_and_rest_endpoints(fake: FakeGemini) -> None:
    port = fake.server.port
    assert fake.urls == {
        "ws": f"ws://127.0.0.1:{port}/ws",
        "marketdata_v1": f"ws://127.0.0.1:{port}/v1/marketdata",
        "rest": f"http://127.0.0.1:{port}",
    }
    updates = fake.step(400)
    code, body, _ = await get(fake, "/v1/symbols")
    assert code == 200 and body == ["btcusd", "ethusd"]
    code, body, _ = await get(fake, "/v1/symbols/details/BTCUSD")
    assert code == 200 and body["symbol"] == "BTCUSD" and body["quote_increment"] == 0.01
    assert (body["base_currency"], body["quote_currency"]) == ("BTC", "USD")
    code, body, _ = await get(fake, "/v1/book/btcusd", limit_bids=3, limit_asks=2)
    bids, asks, _ = fake.true_book("BTC/USD", style="v1")
    assert [(r["price"], r["amount"]) for r in body["bids"]] == bids[:3]
    assert [(r["price"], r["amount"]) for r in body["asks"]] == asks[:2]
    code, body, _ = await get(fake, "/v1/book/BTCUSD", limit_bids=0, limit_asks=0)
    assert len(body["bids"]) == len(bids)
    code, body, _ = await get(fake, "/v1/trades/btcusd", limit_trades=5)
    sim = [t for u in updates if u.symbol == "BTC/USD" for t in u.trades]
    assert [r["tid"] for r in body] == [t.id for t in reversed(sim)][:5]
    assert body[0]["type"] in ("buy", "sell") and body[0]["exchange"] == "gemini"
    code, body, _ = await get(fake, "/v1/trades/btcusd", since_tid=sim[-3].id)
    assert [r["tid"] for r in body] == [sim[-1].id, sim[-2].id]
    code, body, _ = await get(fake, "/v1/pubticker/btcusd")
    assert body["bid"] == bids[0][0] and body["ask"] == asks[0][0]
    assert set(body["volume"]) == {"BTC", "USD", "timestamp"}
    code, body, _ = await get(fake, "/v2/ticker/btcusd")
    assert body["symbol"] == "BTCUSD" and len(body["changes"]) == 24
    assert body["close"] == sim[-1].price[: len(body["close"])]
    code, body, _ = await get(fake, "/v2/candles/btcusd/1m")
    assert code == 200 and body and len(body[0]) == 6
    assert [row[0] for row in body] == sorted((row[0] for row in body), reverse=True)
    assert sum(Decimal(str(row[5])) for row in body) == sum(Decimal(t.amount) for t in sim)
    code, body, _ = await get(fake, "/v1/book/btcusd", limit_bids="x")
    assert code == 400 and body["result"] == "error"
    code, _, _ = await get(fake, "/v1/book/dogeusd")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_rest_rate_limit_429() -> None:
    fg = await FakeGemini(reactor=reactor, seed=1, rest_limit=3, rest_window=60).start()
    try:
        for _ in range(3):
            code, _, _ = await get(fg, "/v1/symbols")
            assert code == 200
        code, body, headers = await get(fg, "/v1/symbols")
        assert code == 429
        assert body == {"result": "error", "reason": "RateLimit", "message": "Rate limit exceeded"}
        assert headers.getRawHeaders("retry-after") == ["60"]
        assert fg.rejected_429 == 1
    finally:
        await fg.stop()
    fg = await FakeGemini(reactor=reactor, seed=1).start()
    try:
        fg.rate_limit_next(retry_after=3)
        code, body, headers = await get(fg, "/v1/pubticker/btcusd")
        assert (code, body["reason"], headers.getRawHeaders("retry-after")) == (
            429,
            "RateLimit",
            ["3"],
        )
        code, _, _ = await get(fg, "/v1/pubticker/btcusd")
        assert code == 200
    finally:
        await fg.stop()


# -- the transport with a small Gemini WireRules -------------------------------------------------


@attrs.define
class GeminiRules:
    """Just enough of the current API for :class:`Connection`: string ids, JSON ping."""

    control_rate: float = 5.0
    max_topics_per_message: int = 50
    max_topics_per_connection: int | None = None
    replies_to_control: bool = True
    binary_compression: Any = None
    heartbeat: Heartbeat | None = attrs.field(
        factory=lambda: Heartbeat('{"id":"hb","method":"ping"}', 0.1)
    )
    max_connection_age: float | None = None

    def _message(self, method: str, topics: Sequence[str], request_id: int) -> bytes:
        return json.dumps(
            {"id": str(request_id), "method": method, "params": list(topics)}
        ).encode()

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("unsubscribe", topics, request_id)

    def control_reply(self, message: Any) -> ControlReply | None:
        if not isinstance(message, dict) or not str(message.get("id", "")).isdigit():
            return None
        if "error" in message:
            return ControlReply(int(message["id"]), False, message["error"]["msg"])
        return ControlReply(int(message["id"]), True)

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw


@pytest_twisted.ensureDeferred
async def test_transport_connection_over_tls(test_ca: TestCA) -> None:
    fg = await FakeGemini(reactor=reactor, seed=4, tls=test_ca.issue()).start()
    messages: list[Any] = []
    conn = Connection(
        fg.ws_url(snapshot=-1),
        GeminiRules(),
        on_message=messages.append,
        reactor=reactor,
        options=TransportOptions(trust_root=test_ca.trust_root()),
    ).start()
    try:
        assert fg.urls["ws"].startswith("wss://127.0.0.1:")
        assert fg.urls["rest"].startswith("https://127.0.0.1:")
        await conn.subscribe(["btcusd@depth"]).addTimeout(TIMEOUT, reactor)
        with pytest.raises(SubscriptionError, match="Invalid stream"):
            await conn.subscribe(["btcusd@kline_1m"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: [m for m in messages if "lastUpdateId" in m], what="snapshot")
        book = Book()
        book.load(next(m for m in messages if "lastUpdateId" in m))
        fg.step(100)
        uid = fg.market.last_update_id("BTC/USD")
        await wait_for(lambda: any(m.get("u") == uid for m in messages), what="diffs")
        for m in messages:
            if m.get("e") == "depthUpdate":
                book.apply(m)
        assert book.gaps == [] and book.sides() == fg.true_book("BTC/USD")[:2]
        await sleep(0.3)  # idle: the client's JSON pings are answered
        pings = [m for _s, m in fg.server.received if isinstance(m, dict) and m.get("id") == "hb"]
        assert pings and conn.is_open
    finally:
        await conn.close()
        await fg.stop()


# -- determinism and life cycle -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_deterministic_per_seed() -> None:
    async def record(seed: int) -> list[bytes]:
        fg = await FakeGemini(reactor=reactor, seed=seed).start()
        try:
            client = await connect(fg.ws_url(snapshot=-1))
            await client.request(sub("btcusd@depth", "ethusd@trade"))
            fg.step(100)
            await client.request({"id": "x", "method": "ping"})
            return list(client.raw)
        finally:
            await fg.stop()

    first, again, other = await record(11), await record(11), await record(12)
    assert first == again
    assert first != other


@pytest_twisted.ensureDeferred
async def test_run_and_stop_leave_nothing_behind() -> None:
    fg = await FakeGemini(reactor=reactor, seed=2, heartbeat_interval=0.02).start()
    client = await connect(fg.ws_url())
    await client.request(sub("btcusd@depth"))
    await connect(fg.v1_url("BTC/USD", heartbeat=True))
    done = fg.run(200, count=10)
    await done.addTimeout(TIMEOUT, reactor)
    assert len(client.of("e", "depthUpdate")) > 0
    fg.run(200)
    fg.server.reply_delay = 5
    client.sendMessage(json.dumps(sub("ethusd@depth", request_id="late")).encode())
    await sleep(0.05)
    assert our_delayed_calls(fg) != []
    await fg.stop()
    assert our_delayed_calls(fg) == []
