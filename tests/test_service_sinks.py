"""Service sinks: bounded coalescing queue, JSON lines rotation, SQLite, Redis Streams.

SQLite and Redis are real: the standard library's sqlite3 and a ``redis-server``
this module starts on 127.0.0.1 (a free port).  Without ``redis-server`` the
Redis tests are skipped locally and *fail* in CI (``CI`` set), where
``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock

from helpers import wait_for
from txexchange.service import FeedService, FeedSpec, JsonLinesSink, SqliteSink
from txexchange.service.sinks import RedisStreamSink, Sink, stream_key
from txexchange.service.sinks.resp import RedisError, RedisProtocol, encode_command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, workdir) -> subprocess.Popen:
    """``redis-server`` on 127.0.0.1:``port``, answering when this returns."""
    exe = shutil.which("redis-server")
    if exe is None:
        message = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.02)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """A throw-away ``redis-server`` on 127.0.0.1: ``(host, port)``.

    Skipped locally without ``redis-server``; a failure in CI (``CI`` set).
    """
    port = free_port()
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    try:
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(10)


async def redis_connect(host: str, port: int) -> RedisProtocol:
    return await connectProtocol(TCP4ClientEndpoint(reactor, host, port), RedisProtocol())


async def xrange_all(proto: RedisProtocol, key: str) -> list[dict]:
    entries = await proto.execute("XRANGE", key, "-", "+")
    out = []
    for _id, fields in entries:
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append(json.loads(pairs[b"data"]))
    return out


def book(symbol: str, nonce: int) -> dict:
    return {"type": "book", "exchange": "x", "symbol": symbol, "ts": nonce, "nonce": nonce,
            "bids": [["1", "1"]], "asks": [["2", "1"]]}  # fmt: skip


def trade(n: int) -> dict:
    return {"type": "trade", "exchange": "x", "symbol": "A/B", "ts": n, "id": str(n),
            "price": "1", "amount": "1", "side": "buy"}  # fmt: skip


class SlowSink(Sink):
    """A backend whose writes complete only when the test says so."""

    kind = "slow"

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.batches: list[list[dict]] = []
        self.inflight: Deferred | None = None

    def _write_batch(self, batch):
        self.batches.append(batch)
        self.inflight = Deferred()
        return self.inflight

    def release(self) -> None:
        d, self.inflight = self.inflight, None
        d.callback(None)


# -- the bounded, coalescing queue ------------------------------------------------------


def test_slow_sink_coalesces_books_and_bounds_other_records():
    sink = SlowSink(queue=5)
    sink.open()
    sink.put(book("A/B", 1))  # goes straight to the backend
    assert [r["nonce"] for r in sink.batches[0]] == [1]
    for n in range(2, 1002):
        sink.put(book("A/B", n))
        sink.put(book("C/D", n))
    for n in range(20):
        sink.put(trade(n))
    # two symbols -> two book slots, however many updates; trades capped at 5
    assert sink.queue_depth == 2 + 5
    assert sink.coalesced == 2 * 1000 - 2
    assert sink.dropped == 15
    sink.release()
    second = sink.batches[1]
    assert [(r["type"], r.get("nonce"), r.get("id")) for r in second] == [
        ("book", 1001, None),
        ("book", 1001, None),
        *[("trade", None, str(n)) for n in range(5)],
    ]
    sink.release()
    assert sink.queue_depth == 0 and sink.records == 1 + 7
    closed = sink.close()
    assert closed.called


def test_close_waits_for_the_write_in_flight():
    sink = SlowSink()
    sink.open()
    sink.put(trade(1))
    sink.put(trade(2))
    closed = sink.close()
    assert not closed.called
    sink.release()
    assert not closed.called  # trade 2 is being written now
    sink.release()
    assert closed.called and sink.records == 2


# -- JSON lines --------------------------------------------------------------------------


def test_jsonl_rotates_by_size_and_time_between_whole_records(tmp_path):
    clock = Clock()
    path = tmp_path / "feed.jsonl"
    sink = JsonLinesSink(path, rotate_mb=0.001, rotate_s=60, clock=clock)  # 1000 bytes
    sink.open()
    for n in range(40):
        sink.put(trade(n))
    clock.advance(61)
    sink.put(trade(40))
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert len(sink.rotated) >= 3 and len(files) == len(sink.rotated) + 1
    ids = []
    for f in [*sink.rotated, path]:
        lines = f.read_bytes().split(b"\n")
        assert lines[-1] == b""  # ends with a newline: no partial record
        ids += [json.loads(line)["id"] for line in lines[:-1]]
    assert ids == [str(n) for n in range(41)]
    assert path.stat().st_size < 200  # trade 40 alone: rotated by time
    for f in sink.rotated[:-1]:
        assert 1000 <= f.stat().st_size < 1200


# -- SQLite and Redis against a live feed -----------------------------------------------


def assert_book_record_true(fake, record, depth):
    bids, asks, uid = fake.true_book(record["symbol"], nonce=record["nonce"], limit=depth)
    assert uid == record["nonce"]
    assert record["bids"] == [list(x) for x in bids], f"bids differ at {record['nonce']}"
    assert record["asks"] == [list(x) for x in asks], f"asks differ at {record['nonce']}"


@pytest_twisted.ensureDeferred
async def test_sqlite_sink_rows_hold_exactly_the_books_and_trades(tmp_path):
    db = tmp_path / "feed.sqlite"
    sink = SqliteSink(db, depth=5, batch=50, reactor=reactor)
    feed = FeedService(FeedSpec("binance", ["BTC/USDT", "ETH/USDT"], ["book", "trades"]),
                       [sink], reactor=reactor, demo=True, demo_rate=200)  # fmt: skip
    feed.startService()
    await feed.when_running()
    await wait_for(lambda: sink.records > 150, timeout=10, what="sqlite rows")
    await feed.stopService()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        books = conn.execute("SELECT exchange, symbol, ts, nonce, bids, asks FROM books").fetchall()
        trades = conn.execute("SELECT symbol, id, price, amount FROM trades").fetchall()
    finally:
        conn.close()
    assert len(books) + len(trades) == sink.records
    assert {b[1] for b in books} == {"BTC/USDT", "ETH/USDT"} and trades
    for ex, symbol, ts, nonce, bids, asks in books:
        assert ex == "binance" and isinstance(ts, int)
        record = {"symbol": symbol, "nonce": nonce, "bids": json.loads(bids),
                  "asks": json.loads(asks)}  # fmt: skip
        assert len(record["bids"]) == 5
        assert_book_record_true(feed.fake, record, 5)
    for symbol in ("BTC/USDT", "ETH/USDT"):
        ids = [int(t[1]) for t in trades if t[0] == symbol]
        assert ids == list(range(ids[0], ids[0] + len(ids))), "trade rows missing or repeated"
    # nonces of one symbol only grow
    for symbol in ("BTC/USDT", "ETH/USDT"):
        nonces = [b[3] for b in books if b[1] == symbol]
        assert nonces == sorted(nonces) and len(set(nonces)) == len(nonces)


@pytest_twisted.ensureDeferred
async def test_redis_sink_xadds_exactly_what_the_feed_delivered(redis_server):
    host, port = redis_server
    prefix = f"t{time.monotonic_ns()}"
    sink = RedisStreamSink(host, port, 0, depth=3, maxlen=100_000, prefix=prefix, reactor=reactor)
    seen: list[dict] = []
    feed = FeedService(FeedSpec("binance", ["BTC/USDT"], ["book", "trades", "ticker"]),
                       [sink], reactor=reactor, demo=True, demo_rate=200)  # fmt: skip
    feed.startService()
    await feed.when_running()
    from txexchange.service.sinks import record_for

    feed.client.subscribe(
        "trades", "BTC/USDT", lambda ev: seen.append(record_for("binance", ev, 3))
    )
    await wait_for(lambda: sink.records > 100 and len(seen) > 5, timeout=10, what="xadds")
    await feed.stopService()
    proto = await redis_connect(host, port)
    try:
        books = await xrange_all(proto, f"{prefix}:binance:book:BTC/USDT")
        trades = await xrange_all(proto, f"{prefix}:binance:trade:BTC/USDT")
        tickers = await xrange_all(proto, f"{prefix}:binance:ticker:BTC/USDT")
        keys = await proto.execute("KEYS", f"{prefix}:*")
    finally:
        proto.transport.loseConnection()
    assert len(keys) == 3
    assert len(books) + len(trades) + len(tickers) == sink.records
    assert books and tickers
    for record in books:
        assert set(record) == {"type", "exchange", "symbol", "ts", "nonce", "bids", "asks"}
        assert_book_record_true(feed.fake, record, 3)
    # every trade the client delivered after our observer joined is in the stream, in order
    assert trades[-len(seen) :] == seen
    assert stream_key(prefix, trades[0]) == f"{prefix}:binance:trade:BTC/USDT"


@pytest_twisted.ensureDeferred
async def test_redis_maxlen_trims_and_resp_reports_errors(redis_server):
    host, port = redis_server
    key = f"m{time.monotonic_ns()}"
    sink = RedisStreamSink(host, port, 0, maxlen=10, prefix=key, reactor=reactor)
    await sink.open()
    for n in range(2000):
        sink.put(trade(n))
    await sink.close()
    assert sink.records == 2000 and sink.dropped == 0
    proto = await redis_connect(host, port)
    try:
        length = await proto.execute("XLEN", f"{key}:x:trade:A/B")
        last = await xrange_all(proto, f"{key}:x:trade:A/B")
        with pytest.raises(RedisError, match="unknown command"):
            await proto.execute("NOSUCHCOMMAND")
        assert await proto.execute("PING") == b"PONG"
    finally:
        proto.transport.loseConnection()
    assert 10 <= length < 2000  # MAXLEN ~ trims whole nodes, never below maxlen
    assert last[-1]["id"] == "1999"


@pytest_twisted.ensureDeferred
async def test_redis_sink_unreachable_fails_open_clearly():
    sink = RedisStreamSink("127.0.0.1", free_port(), reactor=reactor)
    with pytest.raises(ConnectionError, match="cannot connect"):
        await sink.open()


def test_resp_parser_handles_split_replies():
    proto = RedisProtocol()
    sent = []

    class T:
        def write(self, data):
            sent.append(data)

        def loseConnection(self):
            pass

    proto.makeConnection(T())
    ds = proto.pipeline([("GET", "a"), ("XRANGE", "k", "-", "+"), ("BAD",)])
    assert sent == [encode_command(("GET", "a")) + encode_command(("XRANGE", "k", "-", "+"))
                    + encode_command(("BAD",))]  # fmt: skip
    wire = b"$3\r\nabc\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$-1\r\n-ERR nope\r\n"
    results: list = []
    for d in ds:
        d.addBoth(results.append)
    for i in range(len(wire)):
        proto.dataReceived(wire[i : i + 1])
    assert results[0] == b"abc"
    assert results[1] == [[b"1-0", [b"f", None]]]
    assert isinstance(results[2].value, RedisError)


@pytest_twisted.ensureDeferred
async def test_redis_consumer_example_reads_the_streams(redis_server):
    import sys
    from pathlib import Path

    host, port = redis_server
    prefix = f"c{time.monotonic_ns()}"
    sink = RedisStreamSink(host, port, 0, prefix=prefix, reactor=reactor)
    await sink.open()
    for n in range(3):
        sink.put(book("A/B", n + 1))
        sink.put(trade(n))
        await sink.when_idle()  # else books 2 and 3 coalesce while 1 is written
    await sink.close()
    example = Path(__file__).resolve().parent.parent / "examples" / "redis_consumer.py"
    result = subprocess.run(
        [sys.executable, str(example), "--redis", f"redis://{host}:{port}/0", "--prefix", prefix,
         "--exchange", "x", "--symbols", "A/B", "--from-start", "--count", "6"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"book   A/B #{n} 1 x 1 / 2 x 1" for n in (1, 2, 3)]
    assert lines[3:] == ["trade  A/B buy 1 @ 1"] * 3


@pytest_twisted.ensureDeferred
async def test_redis_outage_drops_counted_then_writes_resume(tmp_path):
    port = free_port()
    proc = start_redis(port, tmp_path)
    sink = RedisStreamSink("127.0.0.1", port, 0, prefix="o", queue=100, reactor=reactor)
    try:
        await sink.open()
        sink.put(trade(0))
        await sink.when_idle()
        assert sink.records == 1
        proc.terminate()
        proc.wait(10)
        await wait_for(lambda: sink._proto is None, what="connection lost")
        for n in range(1, 501):
            sink.put(trade(n))
        await sink.when_idle()
        # nothing held for the absent server: failed writes counted as dropped
        assert sink.records == 1 and sink.dropped == 500 and sink.errors >= 1
        assert sink.queue_depth == 0
        proc = start_redis(port, tmp_path)
        await wait_for(lambda: sink._proto is not None, timeout=10, what="reconnected")
        sink.put(trade(501))
        await sink.close()
        assert sink.records == 2
        client = await redis_connect("127.0.0.1", port)
        try:
            assert [r["id"] for r in await xrange_all(client, "o:x:trade:A/B")] == ["501"]
        finally:
            client.transport.loseConnection()
    finally:
        await sink.force_close()
        proc.terminate()
        proc.wait(10)
