"""Tests for :class:`txexchange.testing.kraken.FakeKraken`.

Real reactor, real loopback sockets: a bare Autobahn client (and the project's
:class:`~txexchange.transport.Connection` with a small Kraken ``WireRules``
written here) on the WebSocket side, treq on the REST side.  Messages are
decoded with ``parse_float=Decimal`` as a Kraken client must.  The book
rebuilding (with truncation to the subscribed depth) and the CRC32 checksum
on this side are written from the Kraken documentation and checked against
the vectors in ``../shared/protocols/vectors.json``; nothing here uses the
Kraken adapter.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncIterator, Hashable, Sequence
from decimal import Decimal
from itertools import pairwise
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
from txexchange.testing.kraken import (
    FakeKraken,
    kraken_checksum,
    kraken_checksum_string,
    wire_number,
)
from txexchange.testing.market import SimulatedMarket
from txexchange.transport import Connection, ControlReply, Heartbeat, TransportOptions

TIMEOUT = 5.0
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"
BTC = "BTC/USD"


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def _fixture(name: str) -> Any:
    return next(f["message"] for f in _vectors()["fixtures"]["kraken_v2"] if f["name"] == name)


def _kraken_vectors() -> list[dict[str, Any]]:
    return [v for v in _vectors()["checksums"] if v["id"].startswith("kraken.")]


def loads(raw: bytes | str) -> Any:
    return json.loads(raw, parse_float=Decimal)


# -- test-side Kraken book code, from the docs --------------------------------------------------


def _text(value: Any, precision: int) -> str:
    """One value for the check string: fixed ``precision`` decimals, no '.', no leading 0s."""
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return format(number, f".{precision}f").replace(".", "").lstrip("0")


def crc(bids: Sequence[Sequence[Any]], asks: Sequence[Sequence[Any]], pp: int, qp: int) -> int:
    """The documented checksum: top 10 asks ascending then top 10 bids descending,
    ``price qty`` each rendered at the pair's precision, CRC32 unsigned."""
    check = "".join(_text(p, pp) + _text(q, qp) for p, q in [*asks[:10], *bids[:10]])
    return zlib.crc32(check.encode())


class Book:
    """A local Kraken v2 book: snapshot, updates applied in order, truncated to depth."""

    def __init__(self, depth: int, pp: int, qp: int) -> None:
        self.depth = depth
        self.pp = pp
        self.qp = qp
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.timestamp = ""

    def load(self, data: dict[str, Any]) -> None:
        self.bids = {lvl["price"]: lvl["qty"] for lvl in data["bids"]}
        self.asks = {lvl["price"]: lvl["qty"] for lvl in data["asks"]}
        self.timestamp = data["timestamp"]

    def apply(self, data: dict[str, Any]) -> None:
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for lvl in levels:
                if lvl["qty"] == 0:
                    side.pop(lvl["price"], None)
                else:
                    side[lvl["price"]] = lvl["qty"]
        bids, asks = self.sides()
        self.bids, self.asks = dict(bids[: self.depth]), dict(asks[: self.depth])
        self.timestamp = data["timestamp"]

    def sides(self) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        return (
            sorted(self.bids.items(), reverse=True),
            sorted(self.asks.items()),
        )

    def checksum(self) -> int:
        return crc(*self.sides(), self.pp, self.qp)


def decimal_levels(
    book: tuple[list[tuple[str, str]], list[tuple[str, str]], int],
) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    bids, asks, _ = book
    return (
        [(Decimal(p), Decimal(q)) for p, q in bids],
        [(Decimal(p), Decimal(q)) for p, q in asks],
    )


# -- clients ------------------------------------------------------------------------------------


class Client(WebSocketClientProtocol):
    """A bare WebSocket client keeping every message (exact JSON numbers, else text)."""

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
            self.messages.append(loads(payload))
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
        return [m for m in self.messages if isinstance(m, dict) and "method" in m]

    def pushes(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if isinstance(m, dict)
            and "channel" in m
            and (channel is None or m["channel"] == channel)
        ]

    async def request(self, obj: Any, replies: int = 1) -> list[dict[str, Any]]:
        before = len(self.replies())
        if isinstance(obj, str):
            self.sendMessage(obj.encode())
        else:
            self.send_json(obj)
        await wait_for(
            lambda: len(self.replies()) >= before + replies, TIMEOUT, f"reply {obj!r:.60}"
        )
        return self.replies()[before : before + replies]


_clients: list[Client] = []


async def connect(url: str) -> Client:
    port = int(url.split(":")[2].split("/")[0])
    factory = WebSocketClientFactory(url, reactor=reactor)
    factory.protocol = Client
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT).connect(factory)
    await client.opened.addTimeout(TIMEOUT, reactor)
    _clients.append(client)
    return client


async def get(fake: FakeKraken, path: str, **params: Any) -> tuple[int, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    response = await client.get(fake.urls["rest"] + path, params=params)
    body = await response.content()
    return response.code, loads(body)


def step_until(fake: FakeKraken, symbol: str, predicate: Any = None, limit: int = 10_000) -> Any:
    for _ in range(limit):
        for update in fake.step():
            if update.symbol == symbol and (predicate is None or predicate(update)):
                return update
    raise AssertionError(f"no matching update for {symbol}")


def sent(session: Any, channel: str) -> int:
    """How many ``channel`` messages the fake has sent to ``session`` so far."""
    head = b'{"channel":"' + channel.encode() + b'"'
    return sum(1 for p in session.sent if isinstance(p, bytes) and p.startswith(head))


def step_book(fake: FakeKraken, session: Any, limit: int = 10_000) -> None:
    """Step until one more ``book`` message went to ``session``."""
    before = sent(session, "book")
    for _ in range(limit):
        fake.step()
        if sent(session, "book") > before:
            return
    raise AssertionError("no book message")


def our_delayed_calls(fake: FakeKraken) -> list[Any]:
    """Active delayed calls that belong to ``fake`` (its LoopingCalls or its timers)."""
    loops = {fake._loop, fake._heartbeat_loop} - {None}
    found = []
    for call in reactor.getDelayedCalls():
        if not call.active():
            continue
        owner = getattr(call.func, "__self__", None)
        module = getattr(call.func, "__module__", "") or ""
        if owner is fake or owner in loops or module == "txexchange.testing.kraken":
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
async def fake() -> AsyncIterator[FakeKraken]:
    fk = await FakeKraken(reactor=reactor, seed=5).start()
    try:
        yield fk
    finally:
        await fk.stop()
        assert our_delayed_calls(fk) == []


def book_sub(*symbols: str, depth: int | None = None, req_id: int | None = None) -> Any:
    params: dict[str, Any] = {"channel": "book", "symbol": list(symbols or (BTC,))}
    if depth is not None:
        params["depth"] = depth
    message: dict[str, Any] = {"method": "subscribe", "params": params}
    if req_id is not None:
        message["req_id"] = req_id
    return message


# -- checksum and numbers ------------------------------------------------------------------------


def test_checksum_code_matches_the_published_vectors() -> None:
    vectors = _kraken_vectors()
    assert len(vectors) == 3
    for vector in vectors:
        pp, qp = vector.get("price_precision"), vector.get("qty_precision")
        bids, asks = vector.get("bids"), vector.get("asks")
        if "update" in vector:  # the MATIC update applies to the snapshot vector
            snap = next(v for v in vectors if v["id"].endswith("MATICUSD_snapshot"))
            book = {float(p): q for p, q in snap["bids"]}
            for p, q in vector["update"]["bids"]:
                book[p] = q
            bids = sorted(book.items(), reverse=True)[:10]
            asks = snap["asks"]
            pp, qp = snap["price_precision"], snap["qty_precision"]
        if pp is None:  # the guide example is printed at its precision already
            pp = len(bids[0][0].split(".")[1])
            qp = len(bids[0][1].split(".")[1])
        assert kraken_checksum_string(bids, asks, pp, qp) == vector["check_string"]
        assert crc(bids, asks, pp, qp) == vector["expected"] == vector["published_expected"]
        assert kraken_checksum(bids, asks, pp, qp) == vector["expected"]
    # the fixture messages carry the same values
    snap = _fixture("book_snapshot")["data"][0]
    levels = [[(lvl["price"], lvl["qty"]) for lvl in snap[s]] for s in ("bids", "asks")]
    assert kraken_checksum(*levels, 4, 8) == snap["checksum"] == 2439117997
    # the precision pitfall: shortest reprs give another value; a changed qty does too
    shortest = [[(str(p), str(q)) for p, q in side] for side in levels]
    assert (
        zlib.crc32(
            "".join(
                (p + q).replace(".", "").lstrip("0") for p, q in [*shortest[1], *shortest[0]]
            ).encode()
        )
        != snap["checksum"]
    )
    assert kraken_checksum([(0.5666, 1.0), *levels[0][1:]], levels[1], 4, 8) != snap["checksum"]


def test_wire_numbers_are_exact() -> None:
    assert wire_number("27000.10000000") == "27000.1"
    assert wire_number("40.00000000") == "40.0"
    assert wire_number("0.00001000") == "0.00001"
    assert wire_number("7") == "7.0"
    fk = FakeKraken(reactor=Clock(), seed=2)
    fk.step(100)
    bids, _asks, _ = fk.true_book(BTC)
    fixed_bids, _fixed_asks, _ = fk.true_book(BTC, fixed=True)
    for (p, q), (fp, fq) in zip(bids, fixed_bids, strict=True):
        assert Decimal(p) == Decimal(fp) and Decimal(q) == Decimal(fq)
        assert len(fp.split(".")[1]) == 1 and len(fq.split(".")[1]) == 8
    raw = dumps_snapshot(fk._book_snapshot(fk._state(BTC), _stream(10)))
    assert re.search(rb'"price":\d', raw) and re.search(rb'"qty":\d', raw)  # numbers
    data = loads(raw)["data"][0]
    assert [(str(x["price"]), str(x["qty"])) for x in data["bids"]] == bids[:10]
    assert all(isinstance(x["qty"], Decimal) for x in data["asks"])


def _stream(depth: int) -> Any:
    from txexchange.testing.kraken import _Stream

    return _Stream("book", BTC, depth)


def dumps_snapshot(message: Any) -> bytes:
    from txexchange.codec import dumps

    return dumps(message)


# -- REST ---------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_urls_and_rest_endpoints(fake: FakeKraken) -> None:
    port = fake.server.port
    assert fake.urls == {
        "ws": f"ws://127.0.0.1:{port}/v2",
        "ws_auth": f"ws://127.0.0.1:{port}/auth/v2",
        "rest": f"http://127.0.0.1:{port}",
    }
    updates = fake.step(400)
    code, body = await get(fake, "/0/public/AssetPairs")
    assert code == 200 and body["error"] == []
    assert set(body["result"]) == {"XXBTZUSD", "XETHZUSD"}
    pair = body["result"]["XXBTZUSD"]
    assert (pair["altname"], pair["wsname"], pair["base"], pair["quote"]) == (
        "XBTUSD", "XBT/USD", "XXBT", "ZUSD",
    )  # fmt: skip
    assert (pair["pair_decimals"], pair["lot_decimals"], pair["tick_size"]) == (1, 8, "0.1")
    code, body = await get(fake, "/0/public/Depth", pair="XBTUSD", count=20)
    assert code == 200 and body["error"] == []
    depth = body["result"]["XXBTZUSD"]
    bids, asks, _ = fake.true_book(BTC, limit=20, fixed=True)
    assert [tuple(lvl[:2]) for lvl in depth["bids"]] == bids
    assert [tuple(lvl[:2]) for lvl in depth["asks"]] == asks
    assert all(type(lvl[2]) is int for lvl in depth["bids"])
    code, body = await get(fake, "/0/public/Depth", pair="DOGEUSD")
    assert code == 200 and body == {"error": ["EQuery:Unknown asset pair"]}
    code, body = await get(fake, "/0/public/Depth")
    assert body["error"] == ["EGeneral:Invalid arguments"]
    trades = [t for u in updates if u.symbol == BTC for t in u.trades]
    code, body = await get(fake, "/0/public/Trades", pair="BTC/USD")
    rows = body["result"]["XXBTZUSD"]
    assert [r[6] for r in rows] == [t.id for t in trades]
    assert rows[-1][3] == ("b" if trades[-1].side == "buy" else "s") and rows[-1][4] in "ml"
    assert isinstance(rows[-1][2], Decimal) and body["result"]["last"].isdigit()
    code, body = await get(fake, "/0/public/Trades", pair="XXBTZUSD", since=rows[-3][2])
    assert len(body["result"]["XXBTZUSD"]) <= 3
    code, body = await get(fake, "/0/public/OHLC", pair="XBTUSD", interval=1)
    (candle,) = body["result"]["XXBTZUSD"]  # 400 steps of 1 ms: one minute
    assert candle[7] == len(trades) and Decimal(candle[6]) == sum(Decimal(t.amount) for t in trades)
    assert candle[4] == f"{Decimal(trades[-1].price):.1f}"
    code, body = await get(fake, "/0/public/OHLC", pair="XBTUSD", interval=7)
    assert body["error"] == ["EGeneral:Invalid arguments"]
    code, body = await get(fake, "/0/public/Ticker", pair="XBTUSD")
    ticker = body["result"]["XXBTZUSD"]
    assert set(ticker) == {"a", "b", "c", "v", "p", "t", "l", "h", "o"}
    assert ticker["b"][0] == bids[0][0] and ticker["a"][0] == asks[0][0]
    assert ticker["t"][1] == len(trades)
    code, body = await get(fake, "/0/public/Time")
    assert body["result"]["unixtime"] > 0
    code, body = await get(fake, "/0/public/SystemStatus")
    assert body["result"]["status"] == "online"


@pytest_twisted.ensureDeferred
async def test_rest_rate_limit_is_429() -> None:
    fk = await FakeKraken(reactor=reactor, rest_limit=3, rest_window=30).start()
    try:
        for _ in range(3):
            code, _body = await get(fk, "/0/public/Time")
            assert code == 200
        code, body = await get(fk, "/0/public/Ticker")
        assert code == 429 and body == {"error": ["EGeneral:Too many requests"]}
        assert fk.rejected_429 == 1
    finally:
        await fk.stop()


@pytest_twisted.ensureDeferred
async def test_rate_limit_next_fault(fake: FakeKraken) -> None:
    fake.rate_limit_next(path="/0/public/Depth", retry_after=2)
    code, body = await get(fake, "/0/public/Depth", pair="XBTUSD")
    assert code == 429 and body == {"error": ["EGeneral:Too many requests"]}
    code, body = await get(fake, "/0/public/Depth", pair="XBTUSD")
    assert code == 200


def test_rest_rate_window_on_a_clock() -> None:
    clock = Clock()
    fk = FakeKraken(reactor=clock, clock=clock, rest_limit=2)
    assert fk._allow() and fk._allow() and not fk._allow()
    clock.advance(1.0)
    assert fk._allow()


# -- WebSocket: requests ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_on_connect_and_subscribe_replies(fake: FakeKraken) -> None:
    client = await connect(fake.urls["ws"])
    await wait_for(lambda: client.pushes("status"), what="status")
    (status,) = client.pushes("status")
    assert status["type"] == "update"
    conn_id = fake.connection_id(fake.server.sessions[0])
    assert status["data"] == [{"api_version": "v2", "system": "online", "version": "2.0.0",
                               "connection_id": conn_id}]  # fmt: skip
    eth = "ETH/USD"
    acks = await client.request(book_sub(BTC, eth, req_id=7), replies=2)
    fixture = _fixture("book_subscribe_ack")
    for ack, symbol in zip(acks, (BTC, eth), strict=True):
        assert set(ack) == set(fixture) | {"req_id"}
        assert ack["result"] == dict(fixture["result"], symbol=symbol)
        assert ack["success"] is True and ack["req_id"] == 7
        assert ack["time_in"].endswith("Z") and ack["time_out"] >= ack["time_in"]
    (ack,) = await client.request(
        {"method": "subscribe", "params": {"channel": "trade", "symbol": [BTC]}}
    )
    assert ack["result"] == {"channel": "trade", "snapshot": False, "symbol": BTC}
    assert "req_id" not in ack
    (ack,) = await client.request(
        {"method": "subscribe", "params": {"channel": "ohlc", "symbol": [BTC], "interval": 5}}
    )
    assert ack["result"]["interval"] == 5 and ack["result"]["warnings"]
    (ack,) = await client.request(
        {"method": "subscribe", "params": {"channel": "ticker", "symbol": [eth]}}
    )
    assert ack["result"] == {"channel": "ticker", "event_trigger": "trades", "snapshot": True,
                             "symbol": eth}  # fmt: skip
    # errors: one per symbol for unknown pairs, the documented shape
    ok, err = await client.request(
        {"method": "subscribe", "params": {"channel": "trade", "symbol": [eth, "BTC/USDX"]},
         "req_id": 9}, replies=2,
    )  # fmt: skip
    assert ok["success"] is True
    assert err == {"error": "Currency pair not supported BTC/USDX", "method": "subscribe",
                   "success": False, "symbol": "BTC/USDX", "req_id": 9,
                   "time_in": err["time_in"], "time_out": err["time_out"]}  # fmt: skip
    (err,) = await client.request(book_sub(BTC))
    assert err["success"] is False and err["error"] == "Already subscribed"
    (err,) = await client.request(book_sub("SOL/USD", depth=7))
    assert err["success"] is False and "depth" in err["error"]
    (err,) = await client.request({"method": "subscribe", "params": {"channel": "nope"}})
    assert err["success"] is False and "symbol" not in err
    (err,) = await client.request({"method": "subscribe", "params": {"channel": "book"}})
    assert err["success"] is False and err["error"].startswith("EGeneral:Invalid arguments")
    (err,) = await client.request("not json")
    assert err["method"] == "error" and err["error"] == "Malformed request"
    (err,) = await client.request({"method": "dance", "req_id": 3})
    assert err["success"] is False and err["method"] == "dance" and err["req_id"] == 3
    # unsubscribe
    (ack,) = await client.request(
        {"method": "unsubscribe", "params": {"channel": "book", "symbol": [eth]}, "req_id": 11}
    )
    assert ack["method"] == "unsubscribe" and ack["success"] is True and ack["req_id"] == 11
    assert ack["result"] == {"channel": "book", "depth": 10, "symbol": eth}
    (err,) = await client.request(
        {"method": "unsubscribe", "params": {"channel": "book", "symbol": [eth]}}
    )
    assert err["success"] is False and err["symbol"] == eth
    assert fake.server.sessions[0].subscriptions == {
        "book:BTC/USD", "trade:BTC/USD", "trade:ETH/USD", "ohlc:BTC/USD", "ticker:ETH/USD",
    }  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_ping_pong_and_heartbeats() -> None:
    fk = await FakeKraken(reactor=reactor, heartbeat_interval=0.1).start()
    try:
        client = await connect(fk.urls["ws"])
        (pong,) = await client.request(_fixture("ping"))
        fixture = _fixture("pong")
        assert set(pong) == set(fixture) and pong["req_id"] == 101 and pong["method"] == "pong"
        (pong,) = await client.request({"method": "ping"})
        assert set(pong) == {"method", "time_in", "time_out"}
        await sleep(0.35)
        assert client.pushes("heartbeat") == [] and fk.heartbeats_sent == 0  # none before
        (ack,) = await client.request(
            {"method": "subscribe", "params": {"channel": "trade", "symbol": [BTC]}}
        )
        assert ack["success"]
        await wait_for(lambda: len(client.pushes("heartbeat")) >= 3, what="heartbeats")
        assert client.pushes("heartbeat")[0] == _fixture("heartbeat")
        assert b'{"channel":"heartbeat"}' in client.raw
        # traffic suppresses heartbeats; a stall silences the session entirely
        session = fk.server.sessions[0]
        session.stall()
        before = len(client.messages)
        await sleep(0.35)
        assert len(client.messages) == before
        session.resume()
        await wait_for(lambda: len(client.messages) > before, what="heartbeats again")
    finally:
        await fk.stop()
    assert our_delayed_calls(fk) == []


@pytest_twisted.ensureDeferred
async def test_heartbeat_channel_status_and_instrument(fake: FakeKraken) -> None:
    client = await connect(fake.urls["ws"])
    (ack,) = await client.request({"method": "subscribe", "params": {"channel": "heartbeat"}})
    assert ack["result"] == {"channel": "heartbeat"} and ack["success"]
    (ack,) = await client.request({"method": "subscribe", "params": {"channel": "instrument"}})
    assert ack["result"] == {"channel": "instrument", "snapshot": True}
    await wait_for(lambda: client.pushes("instrument"), what="instrument snapshot")
    (message,) = client.pushes("instrument")
    assert message["type"] == "snapshot"
    pairs = {p["symbol"]: p for p in message["data"]["pairs"]}
    assert set(pairs) == {BTC, "ETH/USD"}
    assert (pairs[BTC]["price_precision"], pairs[BTC]["qty_precision"]) == fake.precision(BTC)
    assert pairs[BTC]["price_increment"] == Decimal("0.1")
    assert {a["id"] for a in message["data"]["assets"]} == {"BTC", "ETH", "USD"}
    # maintenance: a status update to everyone, then the drop
    other = await connect(fake.urls["ws"])
    assert fake.send_status("maintenance", disconnect_after=0.2) == 2
    for c in (client, other):
        await wait_for(lambda c=c: len(c.pushes("status")) == 2, what="status update")
        assert c.pushes("status")[-1]["data"][0]["system"] == "maintenance"
        await c.ended.addTimeout(TIMEOUT, reactor)
    with pytest.raises(ValueError):
        fake.send_status("sleeping")


@pytest_twisted.ensureDeferred
async def test_private_path_refuses_market_data(fake: FakeKraken) -> None:
    client = await connect(fake.urls["ws_auth"])
    (err,) = await client.request(book_sub(BTC))
    assert err["success"] is False and err["method"] == "subscribe"
    assert fake.server.sessions[0].subscriptions == set()
    (pong,) = await client.request({"method": "ping", "req_id": 1})
    assert pong["method"] == "pong"


# -- WebSocket: book ----------------------------------------------------------------------------


async def _rebuild(fake: FakeKraken, depth: int, steps: int) -> None:
    fake.step(30)
    client = await connect(fake.urls["ws"])
    pp, qp = fake.precision(BTC)
    (ack,) = await client.request(book_sub(BTC, depth=depth))
    assert ack["result"]["depth"] == depth
    await wait_for(lambda: client.pushes("book"), what="snapshot")
    snapshot = client.pushes("book")[0]
    fixture = _fixture("book_snapshot")
    assert set(snapshot) == set(fixture) and snapshot["type"] == "snapshot"
    (data,) = snapshot["data"]
    assert set(data) == set(fixture["data"][0])
    assert len(data["bids"]) == len(data["asks"]) == depth
    assert all(set(lvl) == {"price", "qty"} for lvl in data["bids"] + data["asks"])
    assert all(isinstance(lvl["price"], Decimal) for lvl in data["bids"])
    book = Book(depth, pp, qp)
    book.load(data)
    assert data["checksum"] == book.checksum()
    assert book.sides() == decimal_levels(fake.true_book(BTC, limit=depth))
    fake.step(steps)
    session = fake.server.sessions[-1]
    total = sent(session, "book")
    await wait_for(lambda: len(client.pushes("book")) == total, what="updates")
    updates = client.pushes("book")[1:]
    assert updates and all(m["type"] == "update" for m in updates)
    assert set(updates[0]["data"][0]) == set(_fixture("book_update")["data"][0])
    deletes = 0
    for message in updates:
        (update,) = message["data"]
        deletes += sum(lvl["qty"] == 0 for lvl in update["bids"] + update["asks"])
        book.apply(update)
        assert update["checksum"] == book.checksum()
        nonce = fake.update_id(BTC, update["timestamp"])
        assert book.sides() == decimal_levels(fake.true_book(BTC, nonce=nonce, limit=depth))
    assert deletes > 0
    assert book.sides() == decimal_levels(fake.true_book(BTC, limit=depth))


@pytest_twisted.ensureDeferred
async def test_book_depth_10_rebuilds_the_true_book(fake: FakeKraken) -> None:
    await _rebuild(fake, 10, 400)


@pytest_twisted.ensureDeferred
async def test_book_depth_25_truncates_and_rebuilds(fake: FakeKraken) -> None:
    await _rebuild(fake, 25, 400)


@pytest_twisted.ensureDeferred
async def test_truncation_needs_no_deletes_for_levels_pushed_out() -> None:
    """Without truncation on the client side the book grows beyond its depth."""
    fk = await FakeKraken(("BTC/USD",), reactor=reactor, seed=9).start()
    try:
        client = await connect(fk.urls["ws"])
        await client.request(book_sub(BTC, depth=10))
        await wait_for(lambda: client.pushes("book"))
        untruncated = Book(10**6, *fk.precision(BTC))
        untruncated.load(client.pushes("book")[0]["data"][0])
        fk.step(300)
        await wait_for(lambda: len(client.pushes("book")) > 50)
        await sleep(0.05)
        for message in client.pushes("book")[1:]:
            untruncated.apply(message["data"][0])
        bids, asks = untruncated.sides()
        assert len(bids) > 10 or len(asks) > 10  # levels pushed out got no delete
        # so levels deleted out of range stay behind, and come back into the top wrongly
        true_bids, true_asks = decimal_levels(fk.true_book(BTC))
        stale = set(bids) - set(true_bids) | set(asks) - set(true_asks)
        assert stale
        truncated = Book(10, *fk.precision(BTC))
        truncated.load(client.pushes("book")[0]["data"][0])
        for message in client.pushes("book")[1:]:
            truncated.apply(message["data"][0])
            assert message["data"][0]["checksum"] == truncated.checksum()
        assert truncated.sides() == (true_bids[:10], true_asks[:10])
    finally:
        await fk.stop()


@pytest_twisted.ensureDeferred
async def test_book_without_snapshot_and_in_several_depths(fake: FakeKraken) -> None:
    a = await connect(fake.urls["ws"])
    b = await connect(fake.urls["ws"])
    await a.request(book_sub(BTC, depth=10))
    sub = book_sub(BTC, depth=100)
    sub["params"]["snapshot"] = False
    (ack,) = await b.request(sub)
    assert ack["result"]["snapshot"] is False and ack["result"]["depth"] == 100
    step_until(fake, BTC)
    await wait_for(lambda: b.pushes("book"), what="an update")
    assert [m["type"] for m in b.pushes("book")] == ["update"]
    # both depths share the checksum (top 10) and the timestamp
    await wait_for(lambda: len(a.pushes("book")) == 2)
    assert a.pushes("book")[1]["data"][0]["checksum"] == b.pushes("book")[0]["data"][0]["checksum"]


@pytest_twisted.ensureDeferred
async def test_faults_gap_corrupt_checksum_stale_snapshot(fake: FakeKraken) -> None:
    pp, qp = fake.precision(BTC)
    client = await connect(fake.urls["ws"])
    await client.request(book_sub(BTC))
    await wait_for(lambda: client.pushes("book"))
    book = Book(10, pp, qp)
    book.load(client.pushes("book")[0]["data"][0])

    async def next_books(n: int = 1) -> list[dict[str, Any]]:
        before = len(client.pushes("book"))
        await wait_for(lambda: len(client.pushes("book")) >= before + n, what="book")
        return [m["data"][0] for m in client.pushes("book")[before:]]

    session = fake.server.sessions[0]
    # a corrupt checksum on exactly the next update; the one after is right again
    fake.corrupt_checksum_next(BTC)
    step_book(fake, session)
    (bad,) = await next_books()
    book.apply(bad)
    assert bad["checksum"] == (book.checksum() + 1) % 2**32
    step_book(fake, session)
    (good,) = await next_books()
    book.apply(good)
    assert good["checksum"] == book.checksum()
    assert book.sides() == decimal_levels(fake.true_book(BTC, limit=10))
    # a gap: the next update that changes the top 10 is withheld; the next checksum fails
    fake.skip_next(BTC)
    while fake.skipped_updates == 0:
        fake.step()
    assert sent(session, "book") == len(client.pushes("book"))  # nothing went out
    step_book(fake, session)
    (after_gap,) = await next_books()
    book.apply(after_gap)
    assert after_gap["checksum"] != book.checksum()
    assert book.sides() != decimal_levels(fake.true_book(BTC, limit=10))
    # resubscribe; then a stale snapshot: consistent with itself, not with the book
    await client.request({"method": "unsubscribe", "params": {"channel": "book", "symbol": [BTC]}})
    fake.step(50)
    fake.stale_snapshot_next(BTC, updates_behind=20)
    before = len(client.pushes("book"))
    await client.request(book_sub(BTC))
    await wait_for(lambda: len(client.pushes("book")) > before, what="stale snapshot")
    snap = client.pushes("book")[-1]["data"][0]
    assert client.pushes("book")[-1]["type"] == "snapshot"
    stale = Book(10, pp, qp)
    stale.load(snap)
    assert snap["checksum"] == stale.checksum()  # looks fine on its own
    assert stale.sides() != decimal_levels(fake.true_book(BTC, limit=10))
    mismatch = False
    for _ in range(50):
        step_until(fake, BTC)
        (update,) = await next_books()
        stale.apply(update)
        if update["checksum"] != stale.checksum():
            mismatch = True
            break
    assert mismatch
    # a fresh snapshot is right again
    await client.request({"method": "unsubscribe", "params": {"channel": "book", "symbol": [BTC]}})
    before = len(client.pushes("book"))
    await client.request(book_sub(BTC))
    await wait_for(lambda: len(client.pushes("book")) > before, what="fresh snapshot")
    snap = client.pushes("book")[-1]["data"][0]
    fresh = Book(10, pp, qp)
    fresh.load(snap)
    assert fresh.sides() == decimal_levels(fake.true_book(BTC, limit=10))


# -- WebSocket: trade, ticker, ohlc -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_trade_snapshot_updates_and_trade_id_gap(fake: FakeKraken) -> None:
    updates = fake.step(400)
    done = [t for u in updates if u.symbol == BTC for t in u.trades]
    client = await connect(fake.urls["ws"])
    (ack,) = await client.request(
        {"method": "subscribe", "params": {"channel": "trade", "symbol": [BTC], "snapshot": True}}
    )
    assert ack["result"]["snapshot"] is True
    await wait_for(lambda: client.pushes("trade"), what="trade snapshot")
    snapshot = client.pushes("trade")[0]
    assert snapshot["type"] == "snapshot"
    assert [t["trade_id"] for t in snapshot["data"]] == [t.id for t in done[-50:]]
    fixture = _fixture("trade_update")
    assert set(snapshot["data"][0]) == set(fixture["data"][0])
    update = step_until(fake, BTC, lambda u: u.trades)
    await wait_for(lambda: len(client.pushes("trade")) == 2)
    message = client.pushes("trade")[1]
    assert message["type"] == "update" and set(message) == set(fixture)
    assert [(t["trade_id"], t["side"], t["price"], t["qty"]) for t in message["data"]] == [
        (t.id, t.side, Decimal(t.price), Decimal(t.amount)) for t in update.trades
    ]
    assert all(t["ord_type"] in ("limit", "market") for t in message["data"])
    last_id = message["data"][-1]["trade_id"]
    # a gap: the next trade is withheld, the trade ids jump over it
    fake.skip_trades_next(BTC)
    happened: list[Any] = []
    while fake.skipped_trades == 0:
        happened += [t for u in fake.step() if u.symbol == BTC for t in u.trades]
    happened += step_until(fake, BTC, lambda u: u.trades).trades
    await wait_for(lambda: client.pushes("trade")[-1]["data"][-1]["trade_id"] == happened[-1].id)
    ids = [t["trade_id"] for m in client.pushes("trade")[2:] for t in m["data"]]
    assert ids == sorted(ids) and ids[-1] == happened[-1].id
    assert [t.id for t in happened] == list(range(last_id + 1, last_id + 1 + len(happened)))
    assert set(range(last_id + 1, ids[-1] + 1)) - set(ids) == {last_id + 1}


@pytest_twisted.ensureDeferred
async def test_ticker_and_ohlc(fake: FakeKraken) -> None:
    client = await connect(fake.urls["ws"])
    await client.request({"method": "subscribe", "params": {"channel": "ticker", "symbol": [BTC]}})
    await client.request(
        {"method": "subscribe",
         "params": {"channel": "ticker", "symbol": ["ETH/USD"], "event_trigger": "bbo"}}
    )  # fmt: skip
    await client.request(
        {"method": "subscribe", "params": {"channel": "ohlc", "symbol": [BTC], "interval": 1}}
    )
    await wait_for(lambda: len(client.pushes("ticker")) == 2 and client.pushes("ohlc"))
    fixture = _fixture("ticker_snapshot")
    snap = next(m for m in client.pushes("ticker") if m["data"][0]["symbol"] == BTC)
    assert snap["type"] == "snapshot" and set(snap["data"][0]) == set(fixture["data"][0])
    ohlc = client.pushes("ohlc")[0]
    assert ohlc["type"] == "snapshot" and ohlc["data"] == []  # no trades yet
    update = step_until(fake, BTC, lambda u: u.trades)
    await wait_for(lambda: len(client.pushes("ohlc")) == 2, what="ohlc update")
    candle_msg = client.pushes("ohlc")[1]
    fixture = _fixture("ohlc_update")
    assert set(candle_msg) == set(fixture) and candle_msg["type"] == "update"
    (candle,) = candle_msg["data"]
    assert set(candle) == set(fixture["data"][0])
    assert candle["close"] == Decimal(update.trades[-1].price)
    assert candle["trades"] == len(update.trades) and candle["interval"] == 1
    assert candle["interval_begin"] == "2026-01-01T00:00:00.000000000Z"
    assert candle["timestamp"] == "2026-01-01T00:01:00.000000Z"
    await wait_for(
        lambda: [m for m in client.pushes("ticker") if m["data"][0]["symbol"] == BTC][1:]
    )
    ticker = [m for m in client.pushes("ticker") if m["data"][0]["symbol"] == BTC][-1]["data"][0]
    bids, asks, _ = fake.true_book(BTC, limit=1)
    assert ticker["bid"] == Decimal(bids[0][0]) and ticker["ask_qty"] == Decimal(asks[0][1])
    assert ticker["last"] == Decimal(update.trades[-1].price)
    assert ticker["volume"] == sum(Decimal(t.amount) for t in update.trades)
    # bbo trigger: only when ETH/USD's best bid or ask changed
    eth = [m for m in client.pushes("ticker") if m["data"][0]["symbol"] == "ETH/USD"]
    before = len(eth)
    fake.step(200)
    await sleep(0.1)
    eth = [m for m in client.pushes("ticker") if m["data"][0]["symbol"] == "ETH/USD"]
    tops = [(m["data"][0]["bid"], m["data"][0]["ask"], m["data"][0]["bid_qty"],
             m["data"][0]["ask_qty"]) for m in eth]  # fmt: skip
    assert len(eth) > before and all(a != b for a, b in pairwise(tops))
    # a late subscriber's ohlc snapshot holds the forming candle
    late = await connect(fake.urls["ws"])
    await late.request(
        {"method": "subscribe", "params": {"channel": "ohlc", "symbol": [BTC], "interval": 5}}
    )
    await wait_for(lambda: late.pushes("ohlc"))
    assert late.pushes("ohlc")[0]["data"][-1]["interval"] == 5


# -- encode once, transport, TLS, determinism, stop ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_event_encoded_once_for_all_sessions(fake: FakeKraken) -> None:
    a = await connect(fake.urls["ws"])
    b = await connect(fake.urls["ws"])
    for client in (a, b):
        await client.request(book_sub(BTC))
    await wait_for(lambda: len(a.pushes("book")) == len(b.pushes("book")) == 1)
    step_until(fake, BTC)
    s1, s2 = fake.server.sessions
    assert s1.sent[-1] is s2.sent[-1]
    await wait_for(lambda: len(a.pushes("book")) == len(b.pushes("book")) == 2)
    assert a.raw[-1] == b.raw[-1]


@attrs.define
class KrakenRules:
    """Just enough Kraken v2 for :class:`Connection`: one symbol per request, ack by req_id."""

    control_rate: float = 5.0
    max_topics_per_message: int = 1
    max_topics_per_connection: int | None = None
    replies_to_control: bool = True
    binary_compression: Any = None
    heartbeat: Heartbeat | None = attrs.field(factory=lambda: Heartbeat('{"method":"ping"}', 0.1))
    max_connection_age: float | None = None

    def _message(self, method: str, topics: Sequence[str], request_id: int) -> bytes:
        ((channel, symbol),) = [t.split(":", 1) for t in topics]
        params = {"channel": channel, "symbol": [symbol]}
        return json.dumps({"method": method, "params": params, "req_id": request_id}).encode()

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("unsubscribe", topics, request_id)

    def control_reply(self, message: Any) -> ControlReply | None:
        if not isinstance(message, dict) or "req_id" not in message or "success" not in message:
            return None
        if not message["success"]:
            return ControlReply(message["req_id"], False, message.get("error"))
        return ControlReply(message["req_id"], True)

    def decode(self, raw: bytes) -> Any:
        return loads(raw)

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw


@pytest_twisted.ensureDeferred
async def test_transport_connection_subscribes_and_pings(fake: FakeKraken) -> None:
    messages: list[Any] = []
    conn = Connection(
        fake.urls["ws"], KrakenRules(), on_message=messages.append, reactor=reactor
    ).start()
    try:
        await conn.subscribe(["book:BTC/USD"]).addTimeout(TIMEOUT, reactor)
        with pytest.raises(SubscriptionError, match="Currency pair not supported"):
            await conn.subscribe(["book:DOGE/USD"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: [m for m in messages if m.get("channel") == "book"])
        snap = next(m for m in messages if m.get("channel") == "book")
        assert snap["type"] == "snapshot"
        assert isinstance(snap["data"][0]["bids"][0]["price"], Decimal)
        await sleep(0.4)
        pings = [m for _s, m in fake.server.received if m == {"method": "ping"}]
        assert pings and any(m.get("method") == "pong" for m in messages)
    finally:
        await conn.close()


@pytest_twisted.ensureDeferred
async def test_tls_socket_and_rest(test_ca: TestCA) -> None:
    fk = await FakeKraken(reactor=reactor, tls=test_ca.issue()).start()
    messages: list[Any] = []
    conn = Connection(
        fk.urls["ws"],
        KrakenRules(),
        on_message=messages.append,
        reactor=reactor,
        options=TransportOptions(trust_root=test_ca.trust_root()),
    ).start()
    try:
        assert fk.urls["ws"].startswith("wss://127.0.0.1:")
        assert fk.urls["ws_auth"].startswith("wss://") and fk.urls["rest"].startswith("https://")
        await conn.subscribe(["book:ETH/USD"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: [m for m in messages if m.get("channel") == "book"])
    finally:
        await conn.close()
        await fk.stop()


@pytest_twisted.ensureDeferred
async def test_reply_delay_holds_ack_and_snapshot_together(fake: FakeKraken) -> None:
    fake.server.reply_delay = 0.2
    client = await connect(fake.urls["ws"])
    await wait_for(lambda: client.pushes("status"))
    client.send_json(book_sub(BTC))
    await sleep(0.05)
    step_until(fake, BTC)
    assert client.replies() == [] and client.pushes("book") == []
    await wait_for(lambda: client.pushes("book"), what="snapshot")
    ack_index = client.messages.index(client.replies()[0])
    assert client.messages[ack_index + 1]["type"] == "snapshot"


def test_deterministic_for_a_seed() -> None:
    a = FakeKraken(seed=11, reactor=Clock())
    b = FakeKraken(seed=11, reactor=Clock())
    assert a.step(300) == b.step(300)
    assert a.true_book("ETH/USD") == b.true_book("ETH/USD")
    assert dumps_snapshot(a._book_snapshot(a._state(BTC), _stream(25))) == dumps_snapshot(
        b._book_snapshot(b._state(BTC), _stream(25))
    )
    c = FakeKraken(seed=12, reactor=Clock())
    assert c.step(300) != a.step(300)


def test_true_book_history_update_ids_and_bad_arguments() -> None:
    fk = FakeKraken((BTC,), reactor=Clock())
    first = fk.true_book(BTC)
    updates = fk.step(50)
    assert fk.true_book(BTC, nonce=first[2]) == first
    assert fk.true_book(BTC, limit=3)[0] == fk.true_book(BTC)[0][:3]
    from txexchange.testing.kraken import rfc3339

    assert fk.update_id(BTC, rfc3339(updates[10].timestamp)) == updates[10].last_id
    assert fk.update_id(BTC, updates[10].timestamp) == updates[10].last_id
    with pytest.raises(KeyError):
        fk.skip_next("DOGE/USD")
    with pytest.raises(ValueError):
        fk.corrupt_checksum_next(BTC, 0)
    with pytest.raises(ValueError):
        FakeKraken(heartbeat_interval=0)
    market = SimulatedMarket(("SOL/EUR",), seed=1, tick_size="0.001")
    other = FakeKraken(market=market, reactor=Clock())
    assert other.precision("SOL/EUR") == (3, 8)
    assert other.rest_pair("SOL/EUR") == ("SOLEUR", "SOLEUR", "SOL/EUR")


@pytest_twisted.ensureDeferred
async def test_run_and_stop_leave_no_delayed_calls() -> None:
    fk = await FakeKraken(reactor=reactor).start()
    client = await connect(fk.urls["ws"])
    await client.request(book_sub(BTC))
    await fk.run(200, count=10).addTimeout(TIMEOUT, reactor)
    assert fk._loop is None
    done = fk.run(100)
    fk.server.reply_delay = 5.0
    client.send_json({"method": "subscribe", "params": {"channel": "trade", "symbol": [BTC]}})
    await wait_for(lambda: len(fk.server.received) == 2)
    fk.send_status("maintenance", disconnect_after=60)
    assert our_delayed_calls(fk)  # heartbeats, delayed ack, the drop, the loop
    await fk.stop()
    assert done.called
    assert our_delayed_calls(fk) == []
    assert [c for c in reactor.getDelayedCalls() if c.active() and "kraken" in repr(c.func)] == []
