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
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False, cwd=ROOT
    )


def test_plugin_is_discoverable_with_getPlugins():
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "exchangefeed" in makers
    assert makers["exchangefeed"].module == "txexchange.service.tap"
    assert makers["exchangefeed"].options is not None


def test_twistd_demo_runs_writes_records_and_stops_cleanly(tmp_path):
    out = tmp_path / "feed.jsonl"
    result = twistd(
        "exchangefeed", "--demo", "--duration", "3", "--out", str(out), "--channels", "book,trades"
    )
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
    feed = FeedService(
        FeedSpec("binance", ["BTC/USDT"], ["book", "ticker"]),
        [sink],
        reactor=reactor,
        demo=True,
        demo_rate=50,
    )
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


# -- options and the TOML config (in-process: the same postOptions twistd runs) ----------


def parse(*args: str):
    from txexchange.service.tap import Options

    options = Options()
    options.parseOptions(list(args))
    return options["service_config"]


def write_config(tmp_path, text: str) -> str:
    path = tmp_path / "feed.toml"
    path.write_text(text)
    return str(path)


GOOD_CONFIG = """
sinks = ["jsonl:out/feed.jsonl?rotate_mb=50&rotate_s=3600", "sqlite:feed.db?batch=200",
         "redis://:s3cret@127.0.0.1:6380/2?maxlen=5000&prefix=md&queue=100"]

[service]
depth = 5
shard = "1/3"
status_interval = 30

[exchanges.binance]
urls = { ws = "ws://127.0.0.1:9999", rest = "http://127.0.0.1:9999" }
options = { book_mode = "partial", partial_depth = 10 }

[[feeds]]
exchange = "binance"
symbols = ["BTC/USDT", "ETH/USDT"]
channels = ["book", "trades"]

[[feeds]]
exchange = "binance"
symbols = ["SOL/USDT"]
channels = ["ohlcv:1m"]

[metrics]
listen = "tcp:9100"
"""


def test_config_file_and_command_line_make_one_service_config(tmp_path):
    path = write_config(tmp_path, GOOD_CONFIG)
    config = parse("--config", path, "--sink", "jsonl:extra.jsonl", "--depth", "7")
    assert [(f.exchange, tuple(f.symbols), tuple(f.channels)) for f in config.feeds] == [
        ("binance", ("BTC/USDT", "ETH/USDT"), ("book", "trades")),
        ("binance", ("SOL/USDT",), ("ohlcv:1m",)),
    ]
    assert config.depth == 7 and str(config.shard) == "1/3" and config.status_interval == 30
    assert config.metrics == "tcp:9100:interface=127.0.0.1"  # loopback unless told otherwise
    kinds = [(s.kind, dict(s.params)) for s in config.sinks]
    assert kinds == [
        ("jsonl", {"rotate_mb": 50.0, "rotate_s": 3600.0}),
        ("sqlite", {"batch": 200}),
        ("redis", {"maxlen": 5000, "prefix": "md", "queue": 100}),
        ("jsonl", {}),
    ]
    assert config.sinks[2].target == ("127.0.0.1", 6380, 2, "s3cret")
    assert "s3cret" not in repr(config.sinks[2]) and "s3cret" not in str(config)
    assert config.exchanges["binance"].options == {"book_mode": "partial", "partial_depth": 10}
    # without a sink, the JSON lines default; --out is a jsonl sink
    assert [str(s) for s in parse("--demo").sinks] == ["jsonl:exchangefeed.jsonl"]
    assert [str(s) for s in parse("--demo", "--out", "a.jsonl").sinks] == ["jsonl:a.jsonl"]


FEED = "[[feeds]]\nexchange='binance'\nsymbols=['BTC/USDT']\n"
BAD = [
    (["--sink", "kafka://x"], None, "unknown sink kind 'kafka'; valid: jsonl, sqlite, redis"),
    (["--sink", "jsonl:x?rotate=5"], None,
     "unknown parameter 'rotate'; valid: depth, queue, rotate_mb, rotate_s"),
    (["--sink", "redis://h:port/0"], None, "port and database must be numbers"),
    (["--sink", "sqlite:x?batch=0"], None, "'batch' must be > 0"),
    (["--shard", "3/3"], None, "--shard must be i/n with 0 <= i < n"),
    (["--metrics", "unix:/tmp/x"], None, "--metrics must look like tcp:9100"),
    (["--metrics", "tcp:9100:iface=lo"], None, "valid keys: port, interface, backlog"),
    (["--symbols", "BTC/USDT"], FEED, "cannot be combined with --config"),
    ([], FEED + "[servce]\n",
     "unknown key 'servce'; valid keys: service, feeds, exchanges, sinks, metrics"),
    ([], "[service]\nshard='1/2'\n", "at least one [[feeds]] table"),
    ([], FEED.replace("binance", "mtgox"), "'mtgox'"),
    ([], FEED.replace("BTC/USDT", "BTCUSDT"), "feeds[0].symbols must be unified BASE/QUOTE"),
    ([], FEED + "channels=['depth']\n",
     "unknown channel 'depth'; valid: book, trades, ticker, ohlcv:<timeframe>"),
    ([], FEED + "[exchanges.binance]\noptions={bookmode='x'}\n",
     "unknown option 'bookmode'; valid: resync_timeout"),
    ([], FEED + "[exchanges.binance]\nurls={wss='ws://x'}\n", "unknown Binance URL key 'wss'"),
    ([], FEED + "[service]\ndepth=0\n", "service.depth must be > 0"),
    ([], FEED + "[metrics]\nport=9\n", "[metrics]: unknown key 'port'; valid keys: listen"),
    ([], "[[feeds]\n", "not valid TOML"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "config", "message"), BAD)
def test_bad_options_and_config_name_the_key_and_the_valid_choices(tmp_path, args, config, message):
    from twisted.python.usage import UsageError

    args = ["--config", write_config(tmp_path, config), *args] if config else ["--demo", *args]
    with pytest.raises(UsageError) as e:
        parse(*args)
    assert message in str(e.value)


def test_shard_splits_symbols_stably_and_completely(tmp_path):
    from txexchange.service.config import Shard

    symbols = [f"C{i:02d}/USDT" for i in range(12)] + ["BTC/USDT", "ETH/USDT"]
    path = write_config(tmp_path, f"[[feeds]]\nexchange='binance'\nsymbols={symbols!r}\n")
    shares = []
    for i in range(3):
        feeds = parse("--config", path, "--shard", f"{i}/3").sharded()
        shares.append({s for f in feeds for s in f.symbols})
    assert set().union(*shares) == set(symbols)
    assert sum(len(s) for s in shares) == len(symbols)  # disjoint
    assert all(shares)
    # SHA-1 of "exchange:symbol", so every machine and Python process agrees
    assert shares[1] == {"C00/USDT", "C03/USDT", "C05/USDT", "BTC/USDT"}
    code = (
        "from txexchange.service.config import Shard;"
        f"print(sorted(s for s in {symbols!r} if Shard(2, 3).owns('binance', s)))"
    )
    seen = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout  # fmt: skip
        seen.add(out)
    assert seen == {str(sorted(shares[2])) + "\n"}
    assert Shard(0, 1).owns("binance", "ANY/THING")
