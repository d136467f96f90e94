"""exchangefeed --record / --replay: a recording and its replay write identical sinks."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from helpers import wait_for
from txexchange.adapters import binance as binance_adapter
from txexchange.adapters.rest import RestRequest
from txexchange.client.binance_user import BinanceUserStream
from txexchange.client.rest import RestClient
from txexchange.service import FeedService, FeedSpec, JsonLinesSink
from txexchange.service.recording import RecordingError, read_header
from txexchange.service.replay import ReplayFeedService, ReplayHTTP
from txexchange.testing.binance import FakeBinance
from txexchange.transport import TransportOptions

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
CHANNELS = ("book", "trades", "ticker", "ohlcv:1m")


def twistd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = Path(sys.executable).parent / "twistd"
    cmd = [sys.executable, str(script), "-n", "--pidfile=", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False, cwd=ROOT
    )


def records_of(path: Path) -> list[dict]:
    with gzip.open(path, "rb") as f:
        return [json.loads(line) for line in f]


def write_recording(path: Path, records: list[dict]) -> None:
    with gzip.open(path, "wb") as f:
        for r in records:
            f.write(json.dumps(r).encode() + b"\n")


async def record_run(tmp_path: Path, *, seconds: float = 2.0, gap: bool = True) -> tuple:
    """Record a FeedService run against FakeBinance (with a sequence gap mid-way)."""
    fake = FakeBinance(["BTC/USDT", "ETH/USDT"], reactor=reactor, seed=7)
    await fake.start()
    out = tmp_path / "recorded.jsonl"
    recording = tmp_path / "feed.rec.gz"
    sink = JsonLinesSink(out, depth=5)
    feed = FeedService(
        FeedSpec("binance", ["BTC/USDT", "ETH/USDT"], CHANNELS),
        [sink],
        reactor=reactor,
        urls=fake.urls,
        record=str(recording),
        api_key=API_KEY,  # configured credentials must never reach the recording
        secret=SECRET,
    )
    try:
        feed.startService()
        await feed.when_running()
        fake.run(rate=60)
        await wait_for(lambda: feed.books_synced() == (2, 2), timeout=10, what="books synced")
        if gap:
            await deferLater(reactor, seconds / 2, lambda: None)
            fake.skip_next("BTC/USDT")  # a sequence gap: the book resyncs from a new snapshot
            await wait_for(lambda: feed.client.stats.book_resyncs >= 1, timeout=10, what="resync")
            await wait_for(lambda: feed.books_synced() == (2, 2), timeout=10, what="resynced")
        await deferLater(reactor, seconds / 2 if gap else seconds, lambda: None)
        await feed.stopService()
    finally:
        await fake.stop()
    return out, recording, feed


async def replay_run(tmp_path: Path, recording: Path, name: str, speed: str = "max") -> tuple:
    out = tmp_path / name
    replay = ReplayFeedService(
        recording, [JsonLinesSink(out, depth=5)], reactor=reactor, speed=speed
    )
    began = time.monotonic()
    replay.startService()
    await replay.when_replayed()
    took = time.monotonic() - began
    await replay.stopService()
    return out, replay, took


@pytest_twisted.ensureDeferred
async def test_recording_and_its_replay_write_byte_identical_sinks_with_no_secrets(tmp_path):
    out, recording, feed = await record_run(tmp_path)
    recorded = out.read_bytes()
    lines = [json.loads(line) for line in recorded.splitlines()]
    assert {r["type"] for r in lines} == {"book", "trade", "ticker", "ohlcv"}
    assert feed.client.stats.book_resyncs >= 1 and feed.client.stats.snapshot_requests >= 3

    records = records_of(recording)
    head = records[0]
    assert head["k"] == "header" and head["version"] == 1
    assert records[-1]["k"] == "end"
    kinds = {r["k"] for r in records}
    assert {"ws", "rest", "status"} <= kinds
    assert sum(r["k"] == "ws" for r in records) == feed.recorder.frames > 100
    assert any(r["k"] == "rest" and r["p"].startswith("/api/v3/depth") for r in records)
    raw = gzip.decompress(recording.read_bytes())
    assert API_KEY.encode() not in raw and SECRET.encode() not in raw
    assert b'"api_key"' not in raw and b'"secret"' not in raw

    replayed_out, replay, _ = await replay_run(tmp_path, recording, "replayed.jsonl")
    assert replay.finished and replay.out_of_step == 0 and replay.unrouted == 0
    assert replay.frames == feed.recorder.frames
    assert replay.client.stats.book_resyncs == feed.client.stats.book_resyncs
    replayed = replayed_out.read_bytes()
    assert len(replayed.splitlines()) == len(recorded.splitlines())
    assert replayed == recorded


@pytest_twisted.ensureDeferred
async def test_a_tampered_recording_replays_differently(tmp_path):
    """The comparison above can fail: one depth diff less and the output differs."""
    out, recording, _ = await record_run(tmp_path, seconds=1.0, gap=False)
    records = records_of(recording)
    depth = [
        i
        for i, r in enumerate(records)
        if r["k"] == "ws" and "@depth" in r.get("text", "") and "depthUpdate" in r["text"]
    ]
    del records[depth[len(depth) // 2]]
    tampered = tmp_path / "tampered.rec.gz"
    write_recording(tampered, records)
    replayed_out, replay, _ = await replay_run(tmp_path, tampered, "tampered.jsonl")
    assert replay.client.stats.book_resyncs >= 1  # the missing diff is a gap
    assert replayed_out.read_bytes() != out.read_bytes()


@pytest_twisted.ensureDeferred
async def test_replay_at_recorded_speed_takes_about_as_long_as_the_recording(tmp_path):
    out, recording, _ = await record_run(tmp_path, seconds=2.0, gap=False)
    records = records_of(recording)
    span = records[-1]["t"] - records[0]["t"]
    assert span > 2.0
    fast_out, _, fast = await replay_run(tmp_path, recording, "fast.jsonl", "max")
    slow_out, _, slow = await replay_run(tmp_path, recording, "slow.jsonl", "recorded")
    assert slow_out.read_bytes() == fast_out.read_bytes() == out.read_bytes()
    assert span * 0.85 <= slow <= span + 3.0, (span, slow)
    assert fast < span / 2, (span, fast)


def test_twistd_record_then_replay_give_identical_output(tmp_path):
    recording = tmp_path / "demo.rec.gz"
    live, again = tmp_path / "live.jsonl", tmp_path / "again.jsonl"
    result = twistd("exchangefeed", "--demo", "--rate", "40", "--duration", "3", "--channels",
                    "book,trades", "--out", str(live), "--record", str(recording))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "exchangefeed stopped cleanly" in result.stdout
    assert read_header(recording)["feeds"][0]["channels"] == ["book", "trades"]
    result = twistd("exchangefeed", "--replay", str(recording), "--out", str(again))
    log = result.stdout
    assert result.returncode == 0, log[-3000:] + result.stderr[-3000:]
    assert "replay of" in log and "finished" in log and "exchangefeed stopped cleanly" in log
    assert live.stat().st_size > 1000
    assert again.read_bytes() == live.read_bytes()


@pytest_twisted.ensureDeferred
async def test_a_recording_cut_short_replays_up_to_its_last_whole_line(tmp_path):
    out, recording, feed = await record_run(tmp_path, seconds=1.0, gap=False)
    data = recording.read_bytes()
    cut = tmp_path / "cut.rec.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])  # a recorder killed mid-write
    replayed_out, replay, _ = await replay_run(tmp_path, cut, "cut.jsonl")
    assert replay.finished and 0 < replay.frames < feed.recorder.frames
    replayed = replayed_out.read_bytes()
    assert replayed and out.read_bytes().startswith(replayed)


def _header(**changes) -> dict:
    head = {
        "k": "header",
        "format": "txexchange-recording",
        "version": 1,
        "t": 1.0,
        "feeds": [{"exchange": "binance", "symbols": ["BTC/USDT"], "channels": ["book"]}],
        "exchanges": {"binance": {"urls": None, "options": {}}},
    }
    head.update(changes)
    return head


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not gzip at all", "not a gzip file"),
        (gzip.compress(b"{not json\n"), "the header is not JSON"),
        (gzip.compress(b'{"hello": 1}\n'), "not a txexchange recording"),
        (gzip.compress(json.dumps(_header(version=99)).encode() + b"\n"), "version 99"),
        (gzip.compress(json.dumps(_header()).encode() + b"\n")[:25], "corrupt or truncated"),
        (
            gzip.compress(json.dumps(_header(feeds=[{"exchange": "mtgox"}])).encode() + b"\n"),
            "bad header",
        ),
    ],
)
def test_bad_recordings_are_refused_with_a_clear_message(tmp_path, content, message):
    from twisted.python import usage

    from txexchange.service.tap import Options

    path = tmp_path / "bad.rec.gz"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=message):
        read_header(path)
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--replay", str(path)])


def test_twistd_refuses_an_unknown_version_before_anything_starts(tmp_path):
    path = tmp_path / "future.rec.gz"
    path.write_bytes(gzip.compress(json.dumps(_header(version=2)).encode() + b"\n"))
    out = tmp_path / "never.jsonl"
    result = twistd("exchangefeed", "--replay", str(path), "--out", str(out), timeout=30)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "format version 2 is not supported" in text
    assert not out.exists()  # no sink was opened


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay-speed", "max", "--demo"], "--replay-speed needs --replay"),
        (["--replay", "{rec}", "--demo"], "--demo cannot be combined with --replay"),
        (["--replay", "{rec}", "--record", "x.gz"], "--record cannot be combined"),
        (["--replay", "{rec}", "--symbols", "BTC/USDT"], "--symbols cannot be combined"),
        (["--replay", "{rec}", "--replay-speed", "fast"], "max, recorded"),
        (["--demo", "--record", "/nonexistent/dir/x.gz"], "does not exist or is not writable"),
    ],
)
def test_record_and_replay_options_are_checked(tmp_path, args, message):
    from twisted.python import usage

    from txexchange.service.tap import Options

    rec = tmp_path / "ok.rec.gz"
    rec.write_bytes(gzip.compress(json.dumps(_header()).encode() + b"\n"))
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions([a.format(rec=rec) for a in args])


def test_options_make_a_replay_config_from_the_recording(tmp_path):
    from txexchange.service.tap import Options

    rec = tmp_path / "ok.rec.gz"
    rec.write_bytes(gzip.compress(json.dumps(_header()).encode() + b"\n"))
    options = Options()
    options.parseOptions(["--replay", str(rec), "--replay-speed", "recorded", "--depth", "3"])
    config = options["service_config"]
    assert config.replay == str(rec) and config.replay_speed == "recorded"
    assert config.depth == 3 and config.feeds == (FeedSpec("binance", ("BTC/USDT",), ("book",)),)


def test_rest_tap_sees_unsigned_answers_only():
    clock = Clock()
    http = ReplayHTTP()
    seen = []
    rest = RestClient(
        "http://127.0.0.1:9",
        reactor=clock,
        http_client=http,
        parse_error=binance_adapter.parse_rest_error,
        tap=lambda req, status, body, t: seen.append((req.path, status, body, t)),
        sign=lambda req, base: (f"{base}{req.path}?signature=s", {}, None),
    )
    plain = rest.request(RestRequest("GET", "/api/v3/time"))
    signed = rest.request(RestRequest("GET", "/api/v3/account", signed=True))
    clock.advance(5)
    assert http.answer("GET", "/api/v3/time", 200, b'{"serverTime": 1}')
    assert http.answer("GET", "/api/v3/account?signature=s", 200, b'{"balances": []}')
    assert plain.result == {"serverTime": 1} and signed.result == {"balances": []}
    assert seen == [("/api/v3/time", 200, b'{"serverTime": 1}', 5.0)]


def test_the_websocket_api_connection_is_never_tapped():
    tapped = []
    stream = BinanceUserStream(
        api_key=API_KEY,
        secret=SECRET,
        reactor=Clock(),
        urls={"ws_api": "ws://127.0.0.1:9/ws-api/v3"},
        transport=TransportOptions(frame_tap=lambda *a: tapped.append(a)),
        on_event=lambda e: None,
    )
    assert stream.connection.options.frame_tap is None


def test_frame_tap_gets_each_frame_as_received_before_inflating_or_decoding():
    import zlib

    from txexchange.service.replay import ReplayReactor
    from txexchange.transport import Connection, SimpleWireRules

    clock = ReplayReactor(100.0, Clock())
    tapped, messages = [], []
    conn = Connection(
        "ws://127.0.0.1:9/stream",
        SimpleWireRules(binary_compression="gzip"),
        on_message=messages.append,
        reactor=clock,
        options=TransportOptions(frame_tap=lambda *a: tapped.append(a)),
    ).start()
    clock.advance_to(100.5)  # the link opens in place, with no socket
    sock = clock.socket_for("ws://127.0.0.1:9/stream")
    assert conn.is_open and sock is not None
    packed = zlib.compress(b'{"p": "1.5"}', wbits=31)
    sock.link.frame(packed, True)
    sock.link.frame(b'{"p": "2.5"}', False)
    assert tapped == [
        ("ws://127.0.0.1:9/stream", 100.5, packed, True),
        ("ws://127.0.0.1:9/stream", 100.5, b'{"p": "2.5"}', False),
    ]
    assert messages == [{"p": "1.5"}, {"p": "2.5"}]
