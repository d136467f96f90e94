"""Clean shutdown: ``reactor.stop()`` and SIGTERM while data flows, while reconnecting,
while a REST snapshot is in flight, and while a sink is behind.

``reactor.stop()`` runs in a child Python process (the test's own reactor cannot
stop): the client and a fake Binance share the child's reactor, and the child
reports what the fake saw after ``reactor.run()`` returns.  SIGTERM goes to a
real ``twistd -n exchangefeed`` child (see ``test_service_e2e.py``).  In every
case the process must exit by itself (a hang fails the test after a generous
limit; no speed is asserted), sockets must end with the WebSocket close
handshake where one is open, and every line a sink wrote must be a whole
record.

About the exit status: after a SIGTERM, twistd stops the reactor cleanly and
then re-raises the signal against itself (``twisted.scripts.twistd.runApp``
calls ``app._exitWithSignal``), so that supervisors see "terminated by
SIGTERM"; the status is therefore ``-SIGTERM`` (shell: 143) after a *clean*
stop.  That is Twisted's behaviour, not txexchange's: a clean stop is told
apart by the service's own "exchangefeed stopped cleanly" log line and the
flushed sinks, which these tests check.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import pytest_twisted
from test_service_e2e import CLEAN_EXIT, Twistd, wait_exit
from twisted.internet import reactor

from helpers import wait_for
from txexchange.testing.binance import FakeBinance

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 30.0  # a hang, not a slow stop: exits here take well under a second

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    import txexchange
    from txexchange.testing.binance import FakeBinance
    from txexchange.transport import TransportOptions

    scenario = sys.argv[1]
    report = {"scenario": scenario}

    async def main():
        fake = FakeBinance(["BTC/USDT", "ETH/USDT"], reactor=reactor, seed=3)
        await fake.start()
        report["fake"] = fake
        fake.run(rate=500)
        options = TransportOptions(initial_delay=0.05, max_delay=0.2, close_timeout=2.0)
        client = txexchange.exchange("binance", reactor=reactor, urls=fake.urls,
                                     transport=options)
        report["client"] = client
        updates = []
        client.subscribe("book", "ETH/USDT", updates.append)
        await client.fetch_order_book("BTC/USDT")
        while len(updates) < 20:
            await client.watch_order_book("ETH/USDT")
        if scenario == "reconnecting":
            status = []
            client.subscribe("status", None, status.append)
            fake.stop_running()
            await fake.server.stop()  # the client is refused and backs off, retrying
            while sum(type(e).__name__ == "ReconnectScheduled" for e in status) < 2:
                await sleep(0.01)
        elif scenario == "rest_in_flight":
            fake.server.rest.hang_next(path="/api/v3/depth")
            fake.skip_next("BTC/USDT")  # a gap: the book resyncs through the hung REST call
            while not fake.server.rest.hung_requests:
                await sleep(0.01)
            report["pending"] = client.fetch_order_book("BTC/USDT")  # waits for the resync
        report["stopping_at"] = time.monotonic()
        reactor.stop()

    def sleep(s):
        from twisted.internet.task import deferLater
        return deferLater(reactor, s, lambda: None)

    def failed(f):
        print("MAIN FAILED", f.getTraceback(), flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(main()).addErrback(failed))
    reactor.run()
    fake = report.pop("fake")
    client = report.pop("client")
    pending = report.pop("pending", None)
    out = {
        "scenario": scenario,
        "stop_seconds": time.monotonic() - report["stopping_at"],
        "close_codes": fake.server.close_codes,
        "client_closed": client._closed,
        "delayed_calls": [
            repr(c) for c in reactor.getDelayedCalls()
            if (getattr(c.func, "__module__", "") or "").startswith("txexchange")
            and not (getattr(c.func, "__module__", "") or "").startswith("txexchange.testing")
        ],
        "pending": None if pending is None else (
            type(pending.result.value).__name__ if pending.called else "waiting"),
    }
    if pending is not None:
        pending.addErrback(lambda f: None)  # consumed: its failure was reported above
    print("REPORT " + json.dumps(out), flush=True)
    """
)


def run_child(scenario: str) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, scenario],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=LIMIT,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, output[-3000:]
    return json.loads(lines[-1][len("REPORT ") :]), output


@pytest.mark.parametrize("scenario", ["flowing", "reconnecting", "rest_in_flight"])
def test_reactor_stop_closes_the_client_cleanly(scenario):
    report, output = run_child(scenario)
    assert "Unhandled error" not in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # reactor.stop() closed the client before the reactor went down ...
    assert report["client_closed"] is True
    # ... with the WebSocket closing handshake where a connection was open
    if scenario != "reconnecting":
        assert report["close_codes"] and set(report["close_codes"]) == {1000}, report
    # and nothing of the client is left scheduled (backoff, stall watchdog, retries)
    assert report["delayed_calls"] == [], report
    if scenario == "rest_in_flight":
        # the waiting fetch failed with ClientClosed instead of being left hanging
        assert report["pending"] == "ClientClosed", report


# -- SIGTERM on twistd -n exchangefeed ---------------------------------------------------


def _config(tmp_path: Path, fake: FakeBinance, sinks: list[str]) -> Path:
    urls = fake.urls
    config = tmp_path / "feed.toml"
    sink_list = ", ".join(f'"{s}"' for s in sinks)
    config.write_text(
        f"""sinks = [{sink_list}]

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
"""
    )
    return config


def _whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data, "nothing written"
    assert data.endswith(b"\n"), "a partial record at the end"
    return [json.loads(line) for line in data.splitlines()]


class BlockedRedis:
    """A Redis that answers the connection's PING, then never reads nor answers again."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            try:
                if b"PING" in conn.recv(64):
                    conn.sendall(b"+PONG\r\n")
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


async def _sigterm_when(proc: Twistd, out: Path, condition) -> tuple[int, str]:
    try:
        await wait_for(lambda: condition() or proc.exit_code is not None, timeout=20,
                       what="the situation to test")  # fmt: skip
        assert proc.exit_code is None, proc.log[-3000:]
        proc.popen.send_signal(signal.SIGTERM)
        code = await wait_exit(proc, LIMIT)
    finally:
        proc.kill()
    return code, proc.log


@pytest_twisted.ensureDeferred
async def test_sigterm_while_reconnecting(tmp_path):
    fake = FakeBinance(["BTC/USDT", "ETH/USDT"], reactor=reactor, seed=5)
    await fake.start()
    fake.run(rate=200)
    out = tmp_path / "feed.jsonl"
    proc = Twistd.spawn("--config", str(_config(tmp_path, fake, [f"jsonl:{out}"])))
    try:
        await wait_for(lambda: (out.exists() and out.stat().st_size > 5_000) or proc.exit_code,
                       timeout=20, what="records")  # fmt: skip
        await fake.stop()  # connection lost; reconnects are refused
        code, log = await _sigterm_when(proc, out, lambda: "reconnect" in proc.log.lower())
    finally:
        proc.kill()
        await fake.stop()
    assert code in CLEAN_EXIT, log[-3000:]
    assert "exchangefeed stopped cleanly" in log, log[-3000:]
    assert "Unhandled error" not in log, log[-3000:]
    records = _whole_lines(out)
    assert any(r["type"] == "book" for r in records)


@pytest_twisted.ensureDeferred
async def test_sigterm_while_a_rest_snapshot_hangs(tmp_path):
    fake = FakeBinance(["BTC/USDT", "ETH/USDT"], reactor=reactor, seed=6)
    await fake.start()
    fake.run(rate=200)
    fake.server.rest.hang_next(count=10, path="/api/v3/depth")
    out = tmp_path / "feed.jsonl"
    proc = Twistd.spawn("--config", str(_config(tmp_path, fake, [f"jsonl:{out}"])))
    try:
        code, log = await _sigterm_when(proc, out, lambda: fake.server.rest.hung_requests)
    finally:
        proc.kill()
        fake.server.rest.cancel_pending()
        await fake.stop()
    assert code in CLEAN_EXIT, log[-3000:]
    assert "exchangefeed stopped cleanly" in log, log[-3000:]
    assert "Unhandled error" not in log, log[-3000:]
    assert fake.server.close_codes == [1000]


@pytest_twisted.ensureDeferred
async def test_sigterm_while_a_sink_is_stuck_keeps_other_sinks_whole(tmp_path):
    fake = FakeBinance(["BTC/USDT", "ETH/USDT"], reactor=reactor, seed=7)
    await fake.start()
    fake.run(rate=300)
    redis = BlockedRedis()
    out = tmp_path / "feed.jsonl"
    sinks = [f"jsonl:{out}", f"redis://127.0.0.1:{redis.port}/0?prefix=stuck"]
    proc = Twistd.spawn("--config", str(_config(tmp_path, fake, sinks)))
    try:
        code, log = await _sigterm_when(
            proc, out, lambda: redis.accepted and out.exists() and out.stat().st_size > 5_000
        )
    finally:
        proc.kill()
        redis.close()
        await fake.stop()
    assert code in CLEAN_EXIT, log[-3000:]
    # the stuck sink is given up on after the service's close timeout, and says so
    assert "gave up on" in log, log[-3000:]
    assert "exchangefeed stopped cleanly" in log, log[-3000:]
    assert fake.server.close_codes == [1000]
    records = _whole_lines(out)
    assert {r["type"] for r in records} >= {"book", "trade"}
