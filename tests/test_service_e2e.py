"""``twistd -n exchangefeed`` end to end: a real twistd subprocess, real sockets, SIGTERM.

The fake exchange runs in this process (its URLs passed through the config
file) or inside twistd (``--demo``); the subprocess is spawned with the
reactor so the fake keeps serving while it runs.  The files, SQLite rows and
Redis stream entries are checked against the fake's own ground truth.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest_twisted
import treq
from test_service_sinks import free_port, redis_connect, redis_server, xrange_all
from twisted.internet import reactor

from helpers import sleep, wait_for
from txexchange.testing.binance import FakeBinance

__all__ = ["redis_server"]  # the fixture, imported for use here

ROOT = Path(__file__).resolve().parent.parent
#: twistd re-raises the signal that stopped it after a clean shutdown (systemd counts
#: "killed by SIGTERM" as a clean stop)
CLEAN_EXIT = (0, -signal.SIGTERM)
TWISTD = str(Path(sys.executable).parent / "twistd")


class Twistd:
    """A ``twistd -n exchangefeed`` child; output goes to a file, polled without blocking.

    (``subprocess`` rather than ``spawnProcess``: the test reactor runs without
    signal handlers, so it would not notice the child's exit reliably.)
    """

    _n = 0

    def __init__(self, popen: subprocess.Popen, out: Path) -> None:
        self.popen = popen
        self.out = out

    @classmethod
    def spawn(cls, *args: str) -> Twistd:
        cls._n += 1
        out = Path(tempfile.gettempdir()) / f"exchangefeed-test-{os.getpid()}-{cls._n}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, TWISTD, "-n", "--pidfile=", "exchangefeed", *args]
        with out.open("wb") as f:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                     stderr=subprocess.STDOUT, env=env, cwd=ROOT)  # fmt: skip
        return cls(popen, out)

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll()

    @property
    def log(self) -> str:
        return self.out.read_text("utf-8", "replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    async def terminate(self, within: float = 8.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        began = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        code = await wait_exit(self, within)
        return code, time.monotonic() - began


async def wait_exit(proc: Twistd, timeout: float) -> int:
    try:
        await wait_for(lambda: proc.exit_code is not None, timeout=timeout, what="twistd exit")
    except AssertionError:
        proc.kill()
        raise AssertionError("twistd did not exit:\n" + proc.log[-3000:]) from None
    return proc.exit_code  # type: ignore[return-value]


def jsonl_records(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), "partial last line"
    return [json.loads(line) for line in data.splitlines()]


def assert_books_true(fake: FakeBinance, records: list[dict], depth: int) -> None:
    books = [r for r in records if r["type"] == "book"]
    assert books, "no book records"
    for r in books:
        bids, asks, uid = fake.true_book(r["symbol"], nonce=r["nonce"], limit=depth)
        assert uid == r["nonce"]
        assert r["bids"] == [list(x) for x in bids], f"{r['symbol']} bids wrong at {r['nonce']}"
        assert r["asks"] == [list(x) for x in asks], f"{r['symbol']} asks wrong at {r['nonce']}"


async def rest_trades(fake: FakeBinance, market_id: str) -> dict[str, dict]:
    url = fake.urls["rest"] + f"/api/v3/trades?symbol={market_id}&limit=1000"
    rows = await (await treq.get(url)).json()
    return {str(t["id"]): t for t in rows}


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest_twisted.ensureDeferred
async def test_config_feeds_into_jsonl_sqlite_redis_with_metrics_then_sigterm(
    tmp_path, redis_server
):
    host, port = redis_server
    fake = FakeBinance(["BTC/USDT", "ETH/USDT", "SOL/USDT"], reactor=reactor)
    await fake.start()
    fake.run(rate=100)
    metrics_port = free_port()
    prefix = f"e2e{time.monotonic_ns()}"
    urls = fake.urls
    config = tmp_path / "feed.toml"
    config.write_text(
        f"""
[service]
depth = 5
status_interval = 0.5

[exchanges.binance]
urls = {{ ws = "{urls["ws"]}", rest = "{urls["rest"]}" }}
options = {{ snapshot_limit = 100 }}

[[feeds]]
exchange = "binance"
symbols = ["BTC/USDT", "ETH/USDT"]
channels = ["book", "trades"]

[[feeds]]
exchange = "binance"
symbols = ["SOL/USDT"]
channels = ["ticker", "ohlcv:1m"]

sinks_note = "sinks are top-level"
""".replace('sinks_note = "sinks are top-level"\n', "")
        + f"""
[metrics]
listen = "tcp:{metrics_port}"
"""
    )
    # sinks are a top-level key: it must come before the first table
    text = config.read_text()
    config.write_text(
        f'sinks = ["jsonl:{tmp_path}/feed.jsonl", "sqlite:{tmp_path}/feed.sqlite", '
        f'"redis://{host}:{port}/0?prefix={prefix}&maxlen=100000"]\n' + text
    )
    proc = Twistd.spawn("--config", str(config))
    base = f"http://127.0.0.1:{metrics_port}"
    try:

        async def scrape() -> str | None:
            try:
                response = await treq.get(base + "/metrics")
                return (await response.text()) if response.code == 200 else None
            except Exception:
                return None

        first = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.exit_code is None:
            first = await scrape()
            if first and metric(first, "txexchange_sink_records_total") > 30:
                break
            await sleep(0.1)
        assert first, "metrics never answered:\n" + proc.log[-3000:]
        await sleep(0.5)
        second = await scrape()
        assert second is not None
        for name in ("txexchange_messages_total", "txexchange_bytes_total",
                     "txexchange_sink_records_total", "txexchange_book_updates_total"):  # fmt: skip
            assert metric(second, name) > metric(first, name), f"{name} did not move"
        assert 'txexchange_book_synced{exchange="binance",symbol="BTC/USDT"} 1' in second
        assert "txexchange_sink_queue_depth{" in second and "txexchange_reconnects_total{" in second
        assert (
            "txexchange_book_age_seconds{" in second and "txexchange_sink_dropped_total{" in second
        )
        health = await treq.get(base + "/health")
        body = await health.json()
        assert health.code == 200 and body["status"] == "ok" and body["books"] == 2
        code, took = await proc.terminate()
        truths = {m: await rest_trades(fake, m) for m in ("BTCUSDT", "ETHUSDT")}
    finally:
        proc.kill()
        await fake.stop()
    log = proc.log
    assert code in CLEAN_EXIT, log[-3000:]
    assert took < 5, f"shutdown took {took:.1f}s"
    assert "exchangefeed stopped cleanly" in log
    assert fake.server.close_codes == [1000], fake.server.close_codes
    assert re.search(r"status: .* msg/s", log), "no periodic status line"

    records = jsonl_records(tmp_path / "feed.jsonl")
    assert {r["type"] for r in records} == {"book", "trade", "ticker", "ohlcv"}
    assert {r["symbol"] for r in records if r["type"] == "book"} == {"BTC/USDT", "ETH/USDT"}
    assert {r["symbol"] for r in records if r["type"] in ("ticker", "ohlcv")} == {"SOL/USDT"}
    assert_books_true(fake, records, 5)
    for symbol, market_id in (("BTC/USDT", "BTCUSDT"), ("ETH/USDT", "ETHUSDT")):
        truth = truths[market_id]
        trades = [r for r in records if r["type"] == "trade" and r["symbol"] == symbol]
        ids = [int(t["id"]) for t in trades]
        assert trades and ids == list(range(ids[0], ids[0] + len(ids))), "trades lost/repeated"
        for t in trades:
            assert (t["price"], t["amount"]) == (truth[t["id"]]["price"], truth[t["id"]]["qty"])
    written = {int(m) for m in re.findall(r"jsonl:\S+: closed; (\d+) records written", log)}
    assert written == {len(records)}

    conn = sqlite3.connect(tmp_path / "feed.sqlite")
    try:
        db_books = conn.execute("SELECT symbol, nonce, bids, asks FROM books").fetchall()
        db_trades = conn.execute("SELECT symbol, id, price, amount FROM trades").fetchall()
        n_other = conn.execute("SELECT (SELECT count(*) FROM tickers)"
                               " + (SELECT count(*) FROM candles)").fetchone()[0]  # fmt: skip
    finally:
        conn.close()
    assert db_trades == [(r["symbol"], r["id"], r["price"], r["amount"])
                         for r in records if r["type"] == "trade"]  # fmt: skip
    assert n_other > 0
    assert_books_true(fake, [{"type": "book", "symbol": s, "nonce": n, "bids": json.loads(b),
                              "asks": json.loads(a)} for s, n, b, a in db_books], 5)  # fmt: skip

    proto = await redis_connect(host, port)
    try:
        r_trades = await xrange_all(proto, f"{prefix}:binance:trade:BTC/USDT")
        r_books = await xrange_all(proto, f"{prefix}:binance:book:ETH/USDT")
        r_ohlcv = await xrange_all(proto, f"{prefix}:binance:ohlcv:SOL/USDT")
    finally:
        proto.transport.loseConnection()
    assert r_trades == [r for r in records if r["type"] == "trade" and r["symbol"] == "BTC/USDT"]
    assert r_ohlcv and r_ohlcv[-1]["timeframe"] == "1m"
    assert_books_true(fake, r_books, 5)


@pytest_twisted.ensureDeferred
async def test_demo_sigterm_mid_stream_leaves_complete_records_and_closes_1000(tmp_path):
    out = tmp_path / "demo.jsonl"
    db = tmp_path / "demo.sqlite"
    symbols = "BTC/USDT,ETH/USDT,SOL/USDT,XRP/USDT,ADA/USDT"
    proc = Twistd.spawn("--demo", "--rate", "200", "--symbols", symbols, "--channels",
                        "book,trades", "--shard", "1/2", "--sink", f"jsonl:{out}",
                        "--sink", f"sqlite:{db}?batch=20", "--status-interval", "0.5")  # fmt: skip
    try:
        await wait_for(lambda: (out.exists() and out.stat().st_size > 20_000) or proc.exit_code,
                       timeout=15, what="records on disk")  # fmt: skip
        assert proc.exit_code is None, proc.log[-3000:]
        code, took = await proc.terminate()
    finally:
        proc.kill()
    log = proc.log
    assert code in CLEAN_EXIT, log[-3000:]
    assert took < 5, f"shutdown took {took:.1f}s"
    assert "client code 1000" in log and "exchangefeed stopped cleanly" in log
    assert "Received SIGTERM" in log
    records = jsonl_records(out)  # every line whole
    from txexchange.service.config import Shard

    mine = {s for s in symbols.split(",") if Shard(1, 2).owns("binance", s)}
    assert mine and mine != set(symbols.split(","))
    assert {r["symbol"] for r in records} == mine
    assert f"shard 1/2: {len(mine)} of 5 symbols" in log
    (n_jsonl,) = (int(m) for m in re.findall(r"jsonl:\S+: closed; (\d+) records", log))
    (n_sqlite,) = (int(m) for m in re.findall(r"sqlite:\S+: closed; (\d+) records", log))
    assert n_jsonl == len(records)
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT (SELECT count(*) FROM books) + (SELECT count(*) FROM trades)")
        assert rows.fetchone()[0] == n_sqlite > 0
        trades = conn.execute("SELECT id FROM trades").fetchall()
    finally:
        conn.close()
    assert [t[0] for t in trades] == [r["id"] for r in records if r["type"] == "trade"]


@pytest_twisted.ensureDeferred
async def test_bad_config_fails_fast_before_any_connection(tmp_path):
    fake = FakeBinance(["BTC/USDT"], reactor=reactor)
    await fake.start()
    try:
        config = tmp_path / "bad.toml"
        config.write_text(f"""
sinks = ["jsonl:{tmp_path}/x.jsonl"]
[exchanges.binance]
urls = {{ ws = "{fake.urls["ws"]}", rest = "{fake.urls["rest"]}" }}
[[feeds]]
exchange = "binance"
symbols = ["BTC/USDT"]
chanels = ["book"]
""")
        proc = Twistd.spawn("--config", str(config))
        code = await wait_exit(proc, 20)
        assert code != 0
        assert "unknown key 'chanels'; valid keys: exchange, symbols, channels" in proc.log
        proc = Twistd.spawn("--config", str(config).replace("bad", "missing"))
        assert await wait_exit(proc, 20) != 0
        assert "cannot read" in proc.log
        assert fake.rest_log == [] and fake.server.close_codes == []
        assert not (tmp_path / "x.jsonl").exists()
    finally:
        await fake.stop()
