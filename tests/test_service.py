"""The exchangefeed service: plugin discovery, twistd runs, options, use from Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet import reactor

from helpers import wait_for
from txexchange.errors import BadRequest
from txexchange.service import FeedService, FeedSpec, JsonLinesSink

ROOT = Path(__file__).resolve().parent.parent


def twistd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = Path(sys.executable).parent / "twistd"
    cmd = [sys.executable, str(script), "-n", "--pidfile=", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False, cwd=ROOT)


def test_plugin_is_discoverable_with_getPlugins():
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "exchangefeed" in makers
    assert makers["exchangefeed"].module == "txexchange.service.tap"
    assert makers["exchangefeed"].options is not None


def test_twistd_demo_runs_writes_records_and_stops_cleanly(tmp_path):
    out = tmp_path / "feed.jsonl"
    result = twistd("exchangefeed", "--demo", "--duration", "3", "--out", str(out),
                    "--channels", "book,trades")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout
    assert "exchangefeed stopped cleanly" in log
    assert "client code 1000" in log
    records = [json.loads(line) for line in out.read_text().splitlines()]
    books = [r for r in records if r["type"] == "book"]
    assert books and {r["symbol"] for r in books} == {"BTC/USDT", "ETH/USDT"}
    for r in books:
        assert set(r) == {"type", "exchange", "symbol", "ts", "nonce", "bids", "asks"}
        assert 0 < len(r["bids"]) <= 10 and all(isinstance(p, str) for p, _ in r["bids"])
    assert any(r["type"] == "trade" for r in records)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exchange", "mtgox", "--symbols", "BTC/USDT"], "valid: binance"),
        (["--demo", "--channels", "book,depth"], "unknown channel 'depth'"),
        (["--exchange", "binance"], "--symbols is required"),
        (["--demo", "--symbols", "BTCUSDT"], "BASE/QUOTE"),
        (["--demo", "--depth", "-3"], "depth"),
    ],
)
def test_bad_options_fail_before_connecting(args, message):
    result = twistd("exchangefeed", *args, timeout=30)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_feed_spec_validates():
    with pytest.raises(BadRequest, match="unknown channel"):
        FeedSpec("binance", ["BTC/USDT"], ["orderbook"])
    with pytest.raises(BadRequest, match="at least one symbol"):
        FeedSpec("binance", [])


@pytest_twisted.ensureDeferred
async def test_feed_service_as_child_of_an_application_multiservice(tmp_path):
    sink = JsonLinesSink(tmp_path / "x.jsonl", depth=3)
    app = MultiService()
    feed = FeedService(FeedSpec("binance", ["BTC/USDT"], ["book", "ticker"]), [sink],
                       reactor=reactor, demo=True, demo_rate=50)
    feed.setServiceParent(app)
    app.startService()
    await feed.when_running()
    await wait_for(lambda: sink.records > 5, what="records")
    await app.stopService()
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert len(lines) == sink.records
    book = next(json.loads(line) for line in lines if '"book"' in line)
    assert len(book["bids"]) == 3
    assert feed.client._closed and feed.fake.server.close_codes == [1000]
