"""Tests for :class:`txexchange.testing.okx.FakeOkx`.

Real reactor, real loopback sockets: a bare Autobahn client (and the project's
:class:`~txexchange.transport.Connection` with a small OKX ``WireRules``
written here) on the WebSocket side, treq on the REST side.  The book
rebuilding and the CRC32 checksum on this side are written from the OKX
documentation and checked against the vectors in
``../shared/protocols/vectors.json``; nothing here uses the OKX adapter.
"""

from __future__ import annotations

import json
import zlib
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
from txexchange.testing.market import SimulatedMarket
from txexchange.testing.okx import FakeOkx, okx_checksum, okx_checksum_string
from txexchange.transport import Connection, ControlReply, Heartbeat, TransportOptions

TIMEOUT = 5.0
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def _fixture(name: str) -> Any:
    return next(f["message"] for f in _vectors()["fixtures"]["okx"] if f["name"] == name)


# -- test-side OKX book code, from the docs ---------------------------------------------------


def crc(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """The documented checksum: CRC32 of ``bidPx:bidSz:askPx:askSz:...`` over the
    best 25 levels of each side (shorter side's missing levels skipped), signed."""
    parts: list[str] = []
    for i in range(25):
        for side in (bids, asks):
            if i < len(side):
                parts += [side[i][0], side[i][1]]
    value = zlib.crc32(":".join(parts).encode())
    return value - 2**32 if value >= 2**31 else value


class Book:
    """A local OKX book: snapshot, then updates chained by ``prevSeqId``."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None

    def load(self, data: dict[str, Any]) -> None:
        self.bids = {lvl[0]: lvl[1] for lvl in data["bids"]}
        self.asks = {lvl[0]: lvl[1] for lvl in data["asks"]}
        self.seq = data["seqId"]

    def apply(self, data: dict[str, Any]) -> None:
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for price, size, *_ in levels:
                if size == "0":
                    side.pop(price, None)
                else:
                    side[price] = size
        self.seq = data["seqId"]

    def sides(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))
        return bids, asks

    def checksum(self) -> int:
        return crc(*self.sides())


# -- clients ------------------------------------------------------------------------------------


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

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if isinstance(m, dict) and "event" in m]

    def pushes(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if isinstance(m, dict)
            and "data" in m
            and (channel is None or m["arg"]["channel"] == channel)
        ]

    async def request(self, obj: Any, replies: int = 1) -> list[dict[str, Any]]:
        before = len(self.events())
        if isinstance(obj, str):
            self.sendMessage(obj.encode())
        else:
            self.send_json(obj)
        await wait_for(
            lambda: len(self.events()) >= before + replies, TIMEOUT, f"reply {obj!r:.60}"
        )
        return self.events()[before : before + replies]


_clients: list[Client] = []


async def connect(url: str) -> Client:
    port = int(url.split(":")[2].split("/")[0])
    factory = WebSocketClientFactory(url, reactor=reactor)
    factory.protocol = Client
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT).connect(factory)
    await client.opened.addTimeout(TIMEOUT, reactor)
    _clients.append(client)
    return client


async def get(fake: FakeOkx, path: str, **params: Any) -> tuple[int, Any]:
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = treq.client.HTTPClient(Agent(reactor, pool=pool))
    response = await client.get(fake.urls["rest"] + path, params=params)
    body = await response.content()
    return response.code, json.loads(body)


def step_until(fake: FakeOkx, symbol: str, predicate: Any = None, limit: int = 10_000) -> Any:
    for _ in range(limit):
        for update in fake.step():
            if update.symbol == symbol and (predicate is None or predicate(update)):
                return update
    raise AssertionError(f"no matching update for {symbol}")


def our_delayed_calls(fake: FakeOkx) -> list[Any]:
    """Active delayed calls that belong to ``fake`` (its LoopingCall or its timers)."""
    found = []
    for call in reactor.getDelayedCalls():
        if not call.active():
            continue
        owner = getattr(call.func, "__self__", None)
        module = getattr(call.func, "__module__", "") or ""
        ours = owner is fake or (owner is not None and owner is fake._loop)
        if ours or module == "txexchange.testing.okx":
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
async def fake() -> AsyncIterator[FakeOkx]:
    fo = await FakeOkx(reactor=reactor, seed=5).start()
    try:
        yield fo
    finally:
        await fo.stop()
        assert our_delayed_calls(fo) == []


SUB = {"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]}


# -- checksum ------------------------------------------------------------------------------------


def test_checksum_code_matches_the_published_vectors() -> None:
    for vector in _vectors()["checksums"]:
        if not vector["id"].startswith("okx."):
            continue
        bids, asks = vector["bids"], vector["asks"]
        assert okx_checksum_string(bids, asks) == vector["check_string"]
        assert crc(bids, asks) == vector["expected_signed"]
        assert okx_checksum(bids, asks) == vector["expected_signed"]
        if vector["verified"]:
            assert crc(bids, asks) == vector["published_expected"]
    # and it can fail: a changed size changes the value
    v = next(v for v in _vectors()["checksums"] if v["id"].endswith("example1_both_sides"))
    assert crc([["3366.1", "8"], *v["bids"][1:]], v["asks"]) != v["expected_signed"]


# -- REST ------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_urls_instruments_time_and_errors(fake: FakeOkx) -> None:
    port = fake.server.port
    assert fake.urls == {
        "public": f"ws://127.0.0.1:{port}/ws/v5/public",
        "business": f"ws://127.0.0.1:{port}/ws/v5/business",
        "private": f"ws://127.0.0.1:{port}/ws/v5/private",
        "rest": f"http://127.0.0.1:{port}",
    }
    code, body = await get(fake, "/api/v5/public/instruments", instType="SPOT")
    assert code == 200 and body["code"] == "0" and body["msg"] == ""
    rows = {r["instId"]: r for r in body["data"]}
    assert set(rows) == {"BTC-USDT", "ETH-USDT"}
    btc = rows["BTC-USDT"]
    assert (btc["instType"], btc["baseCcy"], btc["quoteCcy"], btc["state"]) == (
        "SPOT", "BTC", "USDT", "live",
    )  # fmt: skip
    assert (btc["tickSz"], btc["lotSz"]) == ("0.01", "0.00001")
    code, body = await get(fake, "/api/v5/public/time")
    assert code == 200 and body["data"][0]["ts"].isdigit()
    code, body = await get(fake, "/api/v5/market/books", instId="DOGE-USDT")
    assert code == 200 and body["code"] == "51001" and body["data"] == []
    code, body = await get(fake, "/api/v5/market/books")
    assert code == 400 and body["code"] == "50014"
    assert [r.path for r in fake.rest_log][:2] == [
        "/api/v5/public/instruments", "/api/v5/public/time",
    ]  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_rest_books_trades_ticker_candles(fake: FakeOkx) -> None:
    updates = fake.step(300)
    code, body = await get(fake, "/api/v5/market/books", instId="BTC-USDT", sz=400)
    assert code == 200 and body["code"] == "0"
    (snap,) = body["data"]
    assert set(snap) == set(_fixture("rest_books_snapshot")["data"][0])
    bids, asks, seq = fake.true_book("BTC/USDT")
    assert snap["seqId"] == seq and type(snap["seqId"]) is int
    assert [(lvl[0], lvl[1]) for lvl in snap["bids"]] == bids
    assert [(lvl[0], lvl[1]) for lvl in snap["asks"]] == asks
    assert all(len(lvl) == 4 and lvl[2] == "0" for lvl in snap["bids"] + snap["asks"])
    assert isinstance(snap["ts"], str)
    code, body = await get(fake, "/api/v5/market/books", instId="BTC-USDT")
    assert len(body["data"][0]["bids"]) == 1  # sz defaults to 1
    trades = [t for u in updates if u.symbol == "ETH/USDT" for t in u.trades]
    code, body = await get(fake, "/api/v5/market/trades", instId="ETH-USDT", limit=5)
    assert [r["tradeId"] for r in body["data"]] == [str(t.id) for t in trades[-5:][::-1]]
    assert set(body["data"][0]) == {"instId", "tradeId", "px", "sz", "side", "ts", "source"}
    code, body = await get(fake, "/api/v5/market/ticker", instId="ETH-USDT")
    (ticker,) = body["data"]
    assert set(ticker) == set(_fixture("tickers")["data"][0])
    assert ticker["last"] == str(Decimal(trades[-1].price).normalize())
    assert Decimal(ticker["vol24h"]) == sum(Decimal(t.amount) for t in trades)
    assert Decimal(ticker["high24h"]) == max(Decimal(t.price) for t in trades)
    assert Decimal(ticker["low24h"]) == min(Decimal(t.price) for t in trades)
    code, body = await get(fake, "/api/v5/market/candles", instId="ETH-USDT", bar="1m")
    assert body["code"] == "0" and body["data"]
    row = body["data"][0]
    assert len(row) == 9 and all(isinstance(x, str) for x in row) and row[8] == "0"
    code, body = await get(fake, "/api/v5/market/candles", instId="ETH-USDT", bar="7m")
    assert body["code"] == "51000"


@pytest_twisted.ensureDeferred
async def test_rest_rate_limit_is_429_with_50011(fake: FakeOkx) -> None:
    for _ in range(20):
        code, _body = await get(fake, "/api/v5/market/ticker", instId="BTC-USDT")
        assert code == 200
    code, body = await get(fake, "/api/v5/market/ticker", instId="BTC-USDT")
    assert code == 429 and body["code"] == "50011" and fake.rejected_429 == 1
    assert body["msg"].startswith("Rate limit reached")
    # other endpoints have their own budget
    code, _body = await get(fake, "/api/v5/market/books", instId="BTC-USDT")
    assert code == 200


def test_rest_rate_window_on_a_clock() -> None:
    clock = Clock()
    fo = FakeOkx(reactor=clock, clock=clock)
    assert all(fo._allow("/api/v5/public/time") for _ in range(10))
    assert not fo._allow("/api/v5/public/time")
    clock.advance(2.0)
    assert fo._allow("/api/v5/public/time")


# -- WebSocket: operations ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_replies_and_errors(fake: FakeOkx) -> None:
    client = await connect(fake.urls["public"])
    conn_id = fake.conn_id(fake.server.sessions[0])
    (ack,) = await client.request(_fixture("subscribe_request"))
    expected = dict(_fixture("subscribe_response"), connId=conn_id)
    assert ack == expected
    acks = await client.request(
        {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"},
                                     {"channel": "bbo-tbt", "instId": "ETH-USDT"}]},
        replies=2,
    )  # fmt: skip
    assert [a["event"] for a in acks] == ["subscribe", "subscribe"]
    assert [a["arg"]["channel"] for a in acks] == ["trades", "bbo-tbt"]
    assert all("id" not in a for a in acks)
    doge = {"channel": "books", "instId": "DOGE-USDT"}
    (err,) = await client.request({"id": "7", "op": "subscribe", "args": [doge]})
    assert err["event"] == "error" and err["code"] == "60018" and err["id"] == "7"
    assert "DOGE-USDT" in err["msg"] and err["connId"] == conn_id
    (err,) = await client.request(
        {"op": "subscribe", "args": [{"channel": "nope", "instId": "BTC-USDT"}]}
    )
    assert err["code"] == "60018"
    # candles live on /business; the public socket refuses them the way OKX does
    (err,) = await client.request(
        {"op": "subscribe", "args": [{"channel": "candle1m", "instId": "BTC-USDT"}]}
    )
    assert err["code"] == "60018" and err["msg"].startswith("Wrong URL or channel:candle1m")
    bad = {"op": "subscribe", "argss": [{"channel": "books", "instId": "BTC-USDT"}]}
    (err,) = await client.request(bad)
    assert set(err) == {"event", "code", "msg", "connId"}
    assert err["code"] == "60012" and err["msg"].startswith("Invalid request: ")
    (err,) = await client.request("not json")
    assert err["code"] == "60012"
    (err,) = await client.request({"op": "subscribe", "args": [{"channel": "books"}]})
    assert err["code"] == "60012"
    (ack,) = await client.request(_fixture("unsubscribe_request"))
    assert ack == {"event": "unsubscribe", "arg": {"channel": "tickers", "instId": "BTC-USDT"},
                   "connId": conn_id}  # fmt: skip
    assert fake.server.sessions[0].subscriptions == {"trades:BTC-USDT", "bbo-tbt:ETH-USDT"}
    assert fake.subscribe_rate_violations == 0


@pytest_twisted.ensureDeferred
async def test_candles_only_on_business(fake: FakeOkx) -> None:
    public = await connect(fake.urls["public"])
    business = await connect(fake.urls["business"])
    arg = {"channel": "candle1m", "instId": "BTC-USDT"}
    (err,) = await public.request({"op": "subscribe", "args": [arg]})
    assert err["code"] == "60018"
    (ack,) = await business.request({"op": "subscribe", "args": [arg]})
    assert ack["event"] == "subscribe" and ack["arg"] == arg
    (err,) = await business.request(SUB)  # books are public only
    assert err["code"] == "60018"
    update = step_until(fake, "BTC/USDT", lambda u: u.trades)
    await wait_for(lambda: business.pushes("candle1m"), what="candle")
    message = business.pushes("candle1m")[-1]
    assert set(message) == {"arg", "data"} and message["arg"] == arg
    (row,) = message["data"]
    assert len(row) == len(_fixture("candle1D")["data"][0]) == 9
    assert all(isinstance(x, str) for x in row) and row[8] == "0"
    assert row[4] == str(Decimal(update.trades[-1].price).normalize())  # close = last trade
    assert public.pushes() == []
    _code, body = await get(fake, "/api/v5/market/candles", instId="BTC-USDT")
    assert body["data"][0] == row


@pytest_twisted.ensureDeferred
async def test_ping_pong_and_idle_close() -> None:
    fo = await FakeOkx(reactor=reactor, idle_timeout=0.4).start()
    try:
        client = await connect(fo.urls["public"])
        for _ in range(4):  # pings keep it alive past the timeout
            client.sendMessage(b"ping")
            await sleep(0.2)
        assert client.messages == ["pong"] * 4
        assert client.raw == [b"pong"] * 4 and not client.ended.called
        _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
        assert code == 4004 and fo.idle_closes == 1
    finally:
        await fo.stop()
    assert our_delayed_calls(fo) == []


@pytest_twisted.ensureDeferred
async def test_subscribe_rate_limit_disconnects() -> None:
    fo = await FakeOkx(reactor=reactor, subscribe_limit=3).start()
    try:
        client = await connect(fo.urls["public"])
        for i in range(3):
            trades = {"channel": "trades", "instId": "BTC-USDT"}
            (ack,) = await client.request({"id": str(i), "op": "subscribe", "args": [trades]})
            assert ack["event"] == "subscribe"
        client.sendMessage(b"ping")  # pings do not count
        await wait_for(lambda: "pong" in client.messages)
        client.send_json(
            {"op": "unsubscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}
        )
        _clean, code = await client.ended.addTimeout(TIMEOUT, reactor)
        assert code == 1008 and fo.subscribe_rate_violations == 1
        assert len(client.events()) == 3
    finally:
        await fo.stop()


# -- WebSocket: books -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_books_snapshot_and_updates_rebuild_the_true_book(fake: FakeOkx) -> None:
    fake.step(30)
    client = await connect(fake.urls["public"])
    (ack,) = await client.request(SUB)
    assert ack["event"] == "subscribe"
    await wait_for(lambda: client.pushes("books"), what="snapshot")
    snapshot = client.pushes("books")[0]
    fixture = _fixture("books_snapshot")
    assert set(snapshot) == set(fixture) and snapshot["arg"] == fixture["arg"]
    assert snapshot["action"] == "snapshot"
    (data,) = snapshot["data"]
    assert set(data) == set(fixture["data"][0])
    assert data["prevSeqId"] == -1 and isinstance(data["ts"], str)
    book = Book()
    book.load(data)
    assert book.seq == fake.seq_id("BTC/USDT")
    assert data["checksum"] == book.checksum()
    fake.step(300)
    last = fake.seq_id("BTC/USDT")
    await wait_for(lambda: client.pushes("books")[-1]["data"][0]["seqId"] == last, what="updates")
    updates = [m["data"][0] for m in client.pushes("books")[1:]]
    assert all(m["action"] == "update" for m in client.pushes("books")[1:])
    assert set(updates[0]) == set(_fixture("books_update")["data"][0])
    for update in updates:
        assert update["prevSeqId"] == book.seq  # the chain holds
        assert update["seqId"] > update["prevSeqId"]
        book.apply(update)
        assert update["checksum"] == book.checksum()
        assert book.sides() == fake.true_book("BTC/USDT", nonce=book.seq)[:2]
    assert book.seq == last
    bids, asks, seq = fake.true_book("BTC/USDT")
    assert book.sides() == (bids, asks) and seq == last
    # numbers are OKX's shortest strings, levels have four fields
    level = updates[-1]["asks"][0] if updates[-1]["asks"] else updates[-1]["bids"][0]
    assert len(level) == 4 and level[2] == "0" and not level[1].endswith(".")
    assert all(not p.endswith("0") or "." not in p for p, _ in bids)


@pytest_twisted.ensureDeferred
async def test_checksum_disabled_sends_zero() -> None:
    fo = await FakeOkx(reactor=reactor, checksum=False).start()
    try:
        client = await connect(fo.urls["public"])
        await client.request(SUB)
        step_until(fo, "BTC/USDT")
        await wait_for(lambda: len(client.pushes("books")) >= 2)
        assert [m["data"][0]["checksum"] for m in client.pushes("books")] == [0, 0]
    finally:
        await fo.stop()


@pytest_twisted.ensureDeferred
async def test_gap_corrupt_checksum_keepalive_and_reset(fake: FakeOkx) -> None:
    client = await connect(fake.urls["public"])
    await client.request(SUB)
    await wait_for(lambda: client.pushes("books"))
    book = Book()
    book.load(client.pushes("books")[0]["data"][0])

    async def next_books(n: int = 1) -> list[dict[str, Any]]:
        before = len(client.pushes("books"))
        await wait_for(lambda: len(client.pushes("books")) >= before + n, what="books")
        return [m["data"][0] for m in client.pushes("books")[before:]]

    # a sequence gap: two updates withheld
    fake.skip_next("BTC/USDT", 2)
    step_until(fake, "BTC/USDT")
    step_until(fake, "BTC/USDT")
    third = step_until(fake, "BTC/USDT")
    (gap,) = await next_books()
    assert fake.skipped_updates == 2
    assert gap["seqId"] == third.last_id and gap["prevSeqId"] == third.first_id - 1
    assert gap["prevSeqId"] != book.seq
    # resync from a fresh snapshot (resubscribe)
    await client.request({"op": "unsubscribe", "args": [SUB["args"][0]]})
    await client.request(SUB)
    await wait_for(lambda: client.pushes("books")[-1]["action"] == "snapshot", what="snapshot")
    snap = client.pushes("books")[-1]["data"][0]
    book.load(snap)
    assert book.checksum() == snap["checksum"]
    # a corrupt checksum on exactly the next update
    fake.corrupt_checksum_next("BTC/USDT")
    step_until(fake, "BTC/USDT")
    step_until(fake, "BTC/USDT")
    bad, good = await next_books(2)
    book.apply(bad)
    assert bad["checksum"] != book.checksum()
    assert bad["prevSeqId"] == snap["seqId"]  # only the checksum is wrong
    book.apply(good)
    assert good["checksum"] == book.checksum()
    # keep-alive: empty levels, prevSeqId == seqId == the current one
    assert fake.send_keepalive("BTC/USDT") == 1
    (alive,) = await next_books()
    message = client.pushes("books")[-1]
    assert message["action"] == "update" and message["arg"] == SUB["args"][0]
    assert alive["asks"] == [] and alive["bids"] == []
    assert alive["prevSeqId"] == alive["seqId"] == book.seq
    assert alive["checksum"] == book.checksum()
    # the documented reset: seqId < prevSeqId, then the chain goes on from it
    fake.reset_sequence("BTC/USDT")
    step_until(fake, "BTC/USDT")
    step_until(fake, "BTC/USDT")
    reset, after = await next_books(2)
    assert reset["prevSeqId"] == book.seq and reset["seqId"] < reset["prevSeqId"]
    assert 1 <= reset["seqId"] <= 3
    book.apply(reset)
    assert reset["checksum"] == book.checksum()
    assert book.sides() == fake.true_book("BTC/USDT", nonce=reset["seqId"])[:2]
    assert after["prevSeqId"] == reset["seqId"] and after["seqId"] > after["prevSeqId"]
    book.apply(after)
    assert book.sides() == fake.true_book("BTC/USDT")[:2]
    assert fake.seq_id("BTC/USDT") == after["seqId"]
    # the shapes match the docs' sequence example
    seq_example = _fixture("books_seq_example_sequence")
    assert seq_example[2]["prevSeqId"] == seq_example[2]["seqId"]
    assert seq_example[3]["seqId"] < seq_example[3]["prevSeqId"]


@pytest_twisted.ensureDeferred
async def test_rest_snapshot_mode_buffer_and_rebuild() -> None:
    fo = await FakeOkx(reactor=reactor, snapshot_mode="rest", seed=3).start()
    try:
        client = await connect(fo.urls["public"])
        (ack,) = await client.request(SUB)
        assert ack["event"] == "subscribe"
        step_until(fo, "BTC/USDT")
        step_until(fo, "BTC/USDT")
        await wait_for(lambda: len(client.pushes("books")) >= 2)
        assert all(m["action"] == "update" for m in client.pushes("books"))  # no snapshot
        first_prev = client.pushes("books")[0]["data"][0]["prevSeqId"]
        _code, body = await get(fo, "/api/v5/market/books", instId="BTC-USDT", sz=400, source=0)
        (snap,) = body["data"]
        assert snap["seqId"] >= first_prev  # not too old
        fo.step(200)
        last = fo.seq_id("BTC/USDT")
        await wait_for(lambda: client.pushes("books")[-1]["data"][0]["seqId"] == last)
        buffered = [m["data"][0] for m in client.pushes("books")]
        kept = [u for u in buffered if u["seqId"] > snap["seqId"]]
        assert kept[0]["prevSeqId"] <= snap["seqId"] < kept[0]["seqId"]
        book = Book()
        book.load(snap)
        for update in kept:
            assert update["prevSeqId"] == book.seq
            book.apply(update)
        assert book.sides() == fo.true_book("BTC/USDT")[:2] and book.seq == last
    finally:
        await fo.stop()


@pytest_twisted.ensureDeferred
async def test_maintenance_notice_to_all_sessions(fake: FakeOkx) -> None:
    public = await connect(fake.urls["public"])
    business = await connect(fake.urls["business"])
    assert fake.maintenance_notice(disconnect_after=0.2) == 2
    await wait_for(lambda: public.events() and business.events())
    for client, session in zip((public, business), fake.server.sessions, strict=True):
        (notice,) = client.events()
        assert notice == dict(_fixture("notice_service_upgrade"), connId=fake.conn_id(session))
    await public.ended.addTimeout(TIMEOUT, reactor)
    await business.ended.addTimeout(TIMEOUT, reactor)
    assert our_delayed_calls(fake) == []


@pytest_twisted.ensureDeferred
async def test_books5_bbo_trades_tickers_shapes(fake: FakeOkx) -> None:
    client = await connect(fake.urls["public"])
    args = [
        {"channel": c, "instId": "ETH-USDT"} for c in ("books5", "bbo-tbt", "trades", "tickers")
    ]
    await client.request({"op": "subscribe", "args": args}, replies=4)
    await wait_for(
        lambda: client.pushes("books5") and client.pushes("bbo-tbt"), what="initial tops"
    )
    update = step_until(fake, "ETH/USDT", lambda u: u.trades)
    await wait_for(lambda: client.pushes("trades") and client.pushes("tickers"), what="trades")
    bids, asks, seq = fake.true_book("ETH/USDT", limit=5)
    b5 = client.pushes("books5")[-1]
    assert set(b5) == set(_fixture("books5")) and set(b5["data"][0]) == set(
        _fixture("books5")["data"][0]
    )
    assert [(x[0], x[1]) for x in b5["data"][0]["bids"]] == bids
    assert [(x[0], x[1]) for x in b5["data"][0]["asks"]] == asks
    assert b5["data"][0]["seqId"] == seq
    bbo = client.pushes("bbo-tbt")[-1]["data"][0]
    assert set(bbo) == set(_fixture("bbo_tbt")["data"][0])
    assert (bbo["bids"][0][0], bbo["asks"][0][0]) == (bids[0][0], asks[0][0])
    trades = [m["data"][0] for m in client.pushes("trades")]
    assert set(trades[0]) == set(_fixture("trades")["data"][0])
    assert [t["tradeId"] for t in trades[-len(update.trades) :]] == [
        str(t.id) for t in update.trades
    ]
    ticker = client.pushes("tickers")[-1]["data"][0]
    assert set(ticker) == set(_fixture("tickers")["data"][0])
    assert ticker["bidPx"] == bids[0][0] and ticker["askPx"] == asks[0][0]
    assert "action" not in client.pushes("books5")[-1]
    # keep-alive for snapshot-type channels: the latest snapshot again
    before = len(client.pushes("books5"))
    assert fake.send_keepalive("ETH/USDT") == 2  # books5 + bbo-tbt
    await wait_for(lambda: len(client.pushes("books5")) == before + 1)
    assert client.pushes("books5")[-1] == client.pushes("books5")[-2]


@pytest_twisted.ensureDeferred
async def test_event_encoded_once_for_all_sessions(fake: FakeOkx) -> None:
    a = await connect(fake.urls["public"])
    b = await connect(fake.urls["public"])
    for client in (a, b):
        await client.request(SUB)
    step_until(fake, "BTC/USDT")
    s1, s2 = fake.server.sessions
    assert s1.sent[-1] is s2.sent[-1]
    await wait_for(lambda: len(a.raw) >= 3 and len(b.raw) >= 3)
    assert a.raw[-1] == b.raw[-1]


# -- the transport with a small OKX WireRules -----------------------------------------------------


@attrs.define
class OkxRules:
    """Just enough OKX for :class:`Connection`: one arg per request, ack by id."""

    control_rate: float = 5.0
    max_topics_per_message: int = 1
    max_topics_per_connection: int | None = None
    replies_to_control: bool = True
    binary_compression: Any = None
    heartbeat: Heartbeat | None = attrs.field(factory=lambda: Heartbeat("ping", 0.1, pong="pong"))
    max_connection_age: float | None = None

    def _message(self, op: str, topics: Sequence[str], request_id: int) -> bytes:
        args = [dict(zip(("channel", "instId"), t.split(":"), strict=True)) for t in topics]
        return json.dumps({"id": str(request_id), "op": op, "args": args}).encode()

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        return self._message("unsubscribe", topics, request_id)

    def control_reply(self, message: Any) -> ControlReply | None:
        if not isinstance(message, dict) or "event" not in message or "id" not in message:
            return None
        if message["event"] == "error":
            return ControlReply(int(message["id"]), False, f"{message['code']} {message['msg']}")
        return ControlReply(int(message["id"]), True)

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw


@pytest_twisted.ensureDeferred
async def test_transport_connection_subscribes_and_pings(fake: FakeOkx) -> None:
    fake.idle_timeout = 0.3
    messages: list[Any] = []
    conn = Connection(
        fake.urls["public"], OkxRules(), on_message=messages.append, reactor=reactor
    ).start()
    try:
        await conn.subscribe(["books:BTC-USDT"]).addTimeout(TIMEOUT, reactor)
        with pytest.raises(SubscriptionError, match="60018"):
            await conn.subscribe(["candle1m:BTC-USDT"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: messages, what="snapshot")
        assert messages[0]["action"] == "snapshot"
        await sleep(0.8)  # idle: the client's pings keep the connection up
        pings = [m for s, m in fake.server.received if m == "ping"]
        assert pings and fake.idle_closes == 0 and conn.is_open
        assert all(m != "pong" for m in messages)
    finally:
        await conn.close()


@pytest_twisted.ensureDeferred
async def test_tls_public_socket_and_rest(test_ca: TestCA) -> None:
    fo = await FakeOkx(reactor=reactor, tls=test_ca.issue()).start()
    messages: list[Any] = []
    conn = Connection(
        fo.urls["public"],
        OkxRules(),
        on_message=messages.append,
        reactor=reactor,
        options=TransportOptions(trust_root=test_ca.trust_root()),
    ).start()
    try:
        assert fo.urls["public"].startswith("wss://127.0.0.1:")
        assert fo.urls["business"].endswith("/ws/v5/business")
        assert fo.urls["rest"].startswith("https://127.0.0.1:")
        await conn.subscribe(["books:ETH-USDT"]).addTimeout(TIMEOUT, reactor)
        await wait_for(lambda: messages, what="snapshot over TLS")
        assert messages[0]["data"][0]["seqId"] == fo.seq_id("ETH/USDT")
    finally:
        await conn.close()
        await fo.stop()


@pytest_twisted.ensureDeferred
async def test_reply_delay_holds_ack_and_snapshot_together(fake: FakeOkx) -> None:
    fake.server.reply_delay = 0.2
    client = await connect(fake.urls["public"])
    client.send_json(SUB)
    await sleep(0.05)
    step_until(fake, "BTC/USDT")  # before the ack: not sent to this client
    assert client.messages == []
    await wait_for(lambda: client.pushes("books"), what="snapshot")
    ack, snapshot = client.messages[:2]
    assert ack["event"] == "subscribe" and snapshot["action"] == "snapshot"
    assert snapshot["data"][0]["seqId"] == fake.seq_id("BTC/USDT")
    update = step_until(fake, "BTC/USDT")
    await wait_for(lambda: len(client.pushes("books")) == 2)
    assert client.pushes("books")[1]["data"][0]["prevSeqId"] == update.first_id - 1


@pytest_twisted.ensureDeferred
async def test_trades_all_on_business(fake: FakeOkx) -> None:
    business = await connect(fake.urls["business"])
    arg = {"channel": "trades-all", "instId": "BTC-USDT"}
    (ack,) = await business.request({"op": "subscribe", "args": [arg]})
    assert ack["arg"] == arg
    update = step_until(fake, "BTC/USDT", lambda u: u.trades)
    await wait_for(lambda: len(business.pushes()) >= len(update.trades))
    rows = [m["data"][0] for m in business.pushes("trades-all")]
    assert [(r["tradeId"], r["side"]) for r in rows] == [(str(t.id), t.side) for t in update.trades]
    assert set(rows[0]) == {"instId", "tradeId", "px", "sz", "side", "ts", "source"}


# -- determinism, bad arguments, stop --------------------------------------------------------------


def test_deterministic_for_a_seed() -> None:
    a = FakeOkx(seed=11, reactor=Clock())
    b = FakeOkx(seed=11, reactor=Clock())
    assert a.step(300) == b.step(300)
    assert a.true_book("ETH/USDT") == b.true_book("ETH/USDT")
    assert a._books_snapshot_data(a._state("BTC/USDT"), 400) == b._books_snapshot_data(
        b._state("BTC/USDT"), 400
    )
    c = FakeOkx(seed=12, reactor=Clock())
    assert c.step(300) != a.step(300)


def test_true_book_history_and_bad_arguments() -> None:
    fo = FakeOkx(("BTC/USDT",), reactor=Clock(), market=None)
    first = fo.true_book("BTC/USDT")
    fo.step(50)
    assert fo.true_book("BTC/USDT", nonce=first[2]) == first
    assert fo.true_book("BTC/USDT", limit=3)[0] == fo.true_book("BTC/USDT")[0][:3]
    with pytest.raises(KeyError):
        fo.skip_next("DOGE/USDT")
    with pytest.raises(ValueError):
        fo.skip_next("BTC/USDT", 0)
    with pytest.raises(ValueError):
        FakeOkx(snapshot_mode="both")  # type: ignore[arg-type]
    market = SimulatedMarket(("SOL/USDC",), seed=1)
    assert FakeOkx(market=market, reactor=Clock()).inst_id("SOL/USDC") == "SOL-USDC"


@pytest_twisted.ensureDeferred
async def test_run_and_stop_leave_no_delayed_calls() -> None:
    fo = await FakeOkx(reactor=reactor).start()
    client = await connect(fo.urls["public"])
    await client.request(SUB)
    await fo.run(200, count=10).addTimeout(TIMEOUT, reactor)
    assert fo._loop is None
    done = fo.run(100)
    fo.server.reply_delay = 5.0
    client.send_json({"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]})
    await wait_for(lambda: len(fo.server.received) == 2)
    fo.maintenance_notice(disconnect_after=60)
    assert our_delayed_calls(fo)  # idle timer, delayed ack, the drop, the loop
    await fo.stop()
    assert done.called
    assert our_delayed_calls(fo) == []
    assert [c for c in reactor.getDelayedCalls() if c.active() and "okx" in repr(c.func)] == []
