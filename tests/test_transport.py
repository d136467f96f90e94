"""The transport over real loopback sockets against the fake-exchange toolkit."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import zlib

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import globalLogPublisher

from helpers import Recorder, client_delayed_calls, sleep, wait_for
from txexchange.errors import (
    DecompressionBomb,
    FrameTooLarge,
    MalformedMessage,
    RetriesExhausted,
    SubscriptionError,
    TLSVerificationError,
)
from txexchange.testing import FakeExchangeServer, TestCA
from txexchange.transport import (
    Connected,
    Connection,
    ControlFailed,
    Disconnected,
    FrameRejected,
    Heartbeat,
    ReconnectScheduled,
    RetriesExhaustedEvent,
    RolledOver,
    SimpleWireRules,
    Stalled,
    State,
    TLSFailure,
    TransportOptions,
)

FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.0, stall_timeout=None)


@pytest_twisted.async_yield_fixture
async def server():
    srv = FakeExchangeServer(reactor=reactor)
    await srv.start()
    yield srv
    await srv.stop()


_open: list[Connection] = []


@pytest_twisted.async_yield_fixture(autouse=True)
async def _close_connections():
    yield
    while _open:
        await _open.pop().close()


def make(url, rec, rules=None, **kw):
    opts = kw.pop("options", FAST)
    conn = Connection(
        url,
        rules or SimpleWireRules(),
        on_message=rec.on_message,
        on_status=rec.on_status,
        reactor=reactor,
        options=opts,
        **kw,
    )
    _open.append(conn)
    return conn


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest_twisted.ensureDeferred
async def test_subscribe_receive_and_clean_close(server):
    rec = Recorder()
    conn = make(server.ws_url(), rec).start()
    await conn.when_ready()
    await conn.subscribe(["a", "b"])
    session = server.sessions[0]
    assert session.subscriptions == {"a", "b"}
    assert server.broadcast({"n": 1}, topic="a") == 1
    assert server.broadcast({"n": 2}, topic="zzz") == 0
    await wait_for(lambda: rec.messages, what="message")
    assert rec.messages == [{"n": 1}]
    assert conn.stats.messages >= 1 and conn.stats.control_sent == 1
    assert isinstance(rec.events[0], Connected)
    await conn.close()
    assert conn.state is State.STOPPED
    code = await session.closed
    assert code == 1000
    assert server.close_codes == [1000]
    # nothing of ours is left in the reactor
    assert client_delayed_calls() == []


@pytest_twisted.ensureDeferred
async def test_subscriptions_restored_after_drop(server):
    rec = Recorder()
    conn = make(server.ws_url(), rec).start()
    await conn.subscribe(["x", "y", "z"])
    server.sessions[0].drop()
    second = await server.when_session(2)
    await wait_for(lambda: second.subscriptions == {"x", "y", "z"}, what="resubscribe")
    await wait_for(lambda: conn.is_open)
    server.broadcast({"after": True}, topic="y")
    await wait_for(lambda: rec.messages == [{"after": True}], what="message after drop")
    assert len(rec.of(Disconnected)) == 1
    assert len(rec.of(ReconnectScheduled)) == 1
    assert len(rec.of(Connected)) == 2
    assert conn.stats.reconnects == 1
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_backoff_timing_on_clock_then_retries_exhausted():
    """Refused connections back off 1, 2, 4, 5(cap) s on the clock, then give up."""
    port = free_port()
    clock = Clock()
    rec = Recorder()
    opts = TransportOptions(
        initial_delay=1.0, max_delay=5.0, factor=2.0, jitter=0.0, max_retries=4, stall_timeout=None
    )
    conn = make(f"ws://127.0.0.1:{port}/ws", rec, options=opts, clock=clock)
    ready = conn.when_ready()
    sub = conn.subscribe(["t"])
    conn.start()
    delays = []
    for expected in [1.0, 2.0, 4.0, 5.0]:
        await wait_for(lambda: len(rec.of(ReconnectScheduled)) > len(delays), what="retry")
        ev = rec.of(ReconnectScheduled)[-1]
        delays.append(ev.delay)
        assert conn.state is State.BACKOFF
        calls = clock.getDelayedCalls()
        assert len(calls) == 1 and calls[0].getTime() == pytest.approx(clock.seconds() + expected)
        clock.advance(expected - 0.01)
        assert conn.state is State.BACKOFF  # not yet
        clock.advance(0.01)
    assert delays == [1.0, 2.0, 4.0, 5.0]
    await wait_for(lambda: rec.of(RetriesExhaustedEvent), what="give up")
    assert conn.state is State.EXHAUSTED
    with pytest.raises(RetriesExhausted, match="after 4 retries"):
        await ready
    with pytest.raises(RetriesExhausted):
        await sub
    with pytest.raises(RetriesExhausted):
        await conn.when_ready()
    assert clock.getDelayedCalls() == []
    await conn.close()
    assert conn.state is State.STOPPED


@pytest_twisted.ensureDeferred
async def test_jitter_spreads_delays_within_bounds():
    port = free_port()
    clock = Clock()
    rec = Recorder()
    opts = TransportOptions(
        initial_delay=1.0, max_delay=1.0, jitter=0.5, max_retries=6, stall_timeout=None
    )
    conn = make(
        f"ws://127.0.0.1:{port}/ws", rec, options=opts, clock=clock, rng=random.Random(7)
    ).start()
    for i in range(6):
        await wait_for(lambda i=i: len(rec.of(ReconnectScheduled)) > i)
        clock.advance(2.0)
    delays = [e.delay for e in rec.of(ReconnectScheduled)]
    assert all(0.5 <= d <= 1.5 for d in delays), delays
    assert len(set(delays)) == len(delays)
    await wait_for(lambda: conn.state is State.EXHAUSTED)
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_backoff_resets_only_after_websocket_handshake(server):
    """A TCP connect that never completes the handshake keeps backing off."""
    rec = Recorder()
    clock = Clock()
    opts = FAST.replace(initial_delay=1.0, max_delay=8.0)
    server.reject_handshakes = True
    conn = make(server.ws_url(), rec, options=opts, clock=clock).start()
    for expected in [1.0, 2.0, 4.0, 8.0]:
        n = len(rec.of(ReconnectScheduled))
        await wait_for(lambda n=n: len(rec.of(ReconnectScheduled)) > n, what="retry")
        assert rec.of(ReconnectScheduled)[-1].delay == expected
        if expected < 8.0:
            clock.advance(expected)
    server.reject_handshakes = False
    clock.advance(8.0)
    await wait_for(lambda: conn.is_open, what="open")
    server.sessions[-1].drop()
    n = len(rec.of(ReconnectScheduled))
    await wait_for(lambda: len(rec.of(ReconnectScheduled)) > n)
    assert rec.of(ReconnectScheduled)[-1].delay == 1.0
    clock.advance(1.0)
    await wait_for(lambda: conn.is_open)
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_stalled_connection_is_detected_and_replaced(server):
    rec = Recorder()
    conn = make(server.ws_url(), rec, options=FAST.replace(stall_timeout=0.3)).start()
    await conn.subscribe(["s"])
    server.sessions[0].stall()
    second = await server.when_session(2)
    await wait_for(lambda: second.subscriptions == {"s"})
    stalls = rec.of(Stalled)
    assert len(stalls) == 1 and stalls[0].silence >= 0.3
    assert conn.stats.stalls == 1
    server.broadcast({"alive": 1}, topic="s")
    await wait_for(lambda: {"alive": 1} in rec.messages)
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_refused_subscription_fails_its_deferred(server):
    rec = Recorder()
    server.refuse_topics = {"bad"}
    conn = make(server.ws_url(), rec).start()
    with pytest.raises(SubscriptionError, match="bad"):
        await conn.subscribe(["bad"])
    assert rec.of(ControlFailed)[0].topics == ("bad",)
    assert "bad" not in conn.topics
    await conn.subscribe(["good"])
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_control_messages_rate_limited_and_batched(server):
    """At most `control_rate` control frames a second, `max_topics_per_message` topics each."""
    rec = Recorder()
    clock = Clock()
    rules = SimpleWireRules(control_rate=5.0, max_topics_per_message=3)
    conn = make(server.ws_url(), rec, rules=rules, clock=clock).start()
    await conn.when_ready()
    done = conn.subscribe([f"t{i}" for i in range(10)])
    clock.advance(0)
    await wait_for(lambda: len(server.received) == 1)
    await sleep(0.05)
    assert len(server.received) == 1  # the next one waits for the clock
    for n in (2, 3, 4):
        clock.advance(0.19)
        await sleep(0.03)
        assert len(server.received) == n - 1
        clock.advance(0.01)
        await wait_for(lambda n=n: len(server.received) == n)
    await done
    params = [m["params"] for _, m in server.received]
    assert params == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6", "t7", "t8"], ["t9"]]
    # a subscribe cancelled by an unsubscribe before it left is never sent
    later = conn.subscribe(["gone"])
    await conn.unsubscribe(["gone"])
    with pytest.raises(SubscriptionError):
        await later
    clock.advance(1)
    await sleep(0.05)
    assert len(server.received) == 4
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_planned_rollover_loses_and_repeats_nothing(server):
    rec = Recorder()
    conn = make(server.ws_url(), rec).start()
    await conn.subscribe(["seq", "other"])
    counter = iter(range(10**9))

    def tick():
        server.broadcast({"seq": next(counter)}, topic="seq")

    loop = LoopingCall(tick)
    loop.clock = reactor
    loop.start(0.002)
    await sleep(0.1)
    await conn.rollover()
    await sleep(0.1)
    loop.stop()
    await sleep(0.05)
    seqs = [m["seq"] for m in rec.messages]
    assert len(seqs) > 20
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or duplicate"
    assert seqs[-1] == next(counter) - 1
    rolled = rec.of(RolledOver)
    assert len(rolled) == 1 and rolled[0].overlap is True
    await wait_for(lambda: server.close_codes == [1000], what="old socket closed with 1000")
    assert len(server.sessions) == 1 and server.sessions[0].subscriptions == {"seq", "other"}
    assert conn.stats.rollovers == 1
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_rollover_scheduled_before_connection_age_limit(server):
    rec = Recorder()
    rules = SimpleWireRules(max_connection_age=0.4)
    conn = make(
        server.ws_url(),
        rec,
        rules=rules,
        options=FAST.replace(rollover_margin=0.2, rollover_overlap_timeout=0.2),
    ).start()
    await conn.subscribe(["a"])
    await wait_for(lambda: rec.of(RolledOver), timeout=3, what="rollover")
    assert server.connections_accepted == 2
    await wait_for(lambda: server.close_codes == [1000])
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_garbage_and_oversized_frames_are_rejected_without_crash(server):
    rec = Recorder()
    conn = make(server.ws_url(), rec, options=FAST.replace(max_message_size=1000)).start()
    await conn.subscribe(["a"])
    session = server.sessions[0]
    session.send_garbage()
    session.send({"ok": 1})
    await wait_for(lambda: rec.messages == [{"ok": 1}])
    rejected = rec.of(FrameRejected)
    assert len(rejected) == 1 and isinstance(rejected[0].error, MalformedMessage)
    # oversized: the connection is recycled, counted, and comes back subscribed
    session.send({"big": "x" * 5000})
    second = await server.when_session(2)
    await wait_for(lambda: second.subscriptions == {"a"})
    assert any(isinstance(e.error, FrameTooLarge) for e in rec.of(FrameRejected))
    assert conn.stats.rejected_frames == 2
    second.send({"ok": 2})
    await wait_for(lambda: {"ok": 2} in rec.messages)
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_compression_bomb_rejected_connection_keeps_working(server):
    rec = Recorder()
    rules = SimpleWireRules(binary_compression="deflate")
    opts = FAST.replace(max_decompressed_size=64 * 1024)
    conn = make(server.ws_url(), rec, rules=rules, options=opts).start()
    await conn.when_ready()
    session = server.sessions[0]

    def deflate(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()

    bomb = deflate(b"0" * (50 * 1024 * 1024))
    assert len(bomb) < 100 * 1024
    session.send(bomb, binary=True)
    session.send(deflate(json.dumps({"small": True}).encode()), binary=True)
    await wait_for(lambda: rec.messages == [{"small": True}])
    errs = rec.of(FrameRejected)
    assert len(errs) == 1 and isinstance(errs[0].error, DecompressionBomb)
    assert server.connections_accepted == 1
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_permessage_deflate_bomb_is_capped():
    """A permessage-deflate message inflating past max_message_size recycles the socket."""
    server = FakeExchangeServer(reactor=reactor, permessage_deflate=True)
    await server.start()
    rec = Recorder()
    conn = make(server.ws_url(), rec, options=FAST.replace(max_message_size=64 * 1024)).start()
    await conn.when_ready()
    session = server.sessions[0]
    assert session.compression_in_use
    session.send("[" + "0," * (4 * 1024 * 1024) + "0]")
    await server.when_session(2)
    assert any(isinstance(e.error, FrameTooLarge) for e in rec.of(FrameRejected))
    assert rec.messages == []
    session2 = server.sessions[-1]
    session2.send({"small": 1})
    await wait_for(lambda: rec.messages == [{"small": 1}])
    await conn.close()
    await server.stop()


@pytest_twisted.ensureDeferred
async def test_application_heartbeat_sent_when_idle_and_pong_swallowed(server):
    rec = Recorder()
    rules = SimpleWireRules(heartbeat=Heartbeat("ping", idle_interval=0.1, pong="pong"))

    def on_text(session, msg):
        if msg == "ping":
            session.send("pong")

    server.on_text = on_text
    conn = make(server.ws_url(), rec, rules=rules).start()
    await conn.when_ready()
    await wait_for(lambda: len([m for _, m in server.received if m == "ping"]) >= 2)
    assert rec.messages == [] and rec.of(FrameRejected) == []
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_listener_exception_does_not_break_the_feed(server):
    seen = []

    def on_message(obj):
        seen.append(obj)
        if obj["n"] == 1:
            raise RuntimeError("observer bug")

    conn = Connection(
        server.ws_url(), SimpleWireRules(), on_message=on_message, reactor=reactor, options=FAST
    ).start()
    await conn.when_ready()
    server.sessions[0].send({"n": 1})
    server.sessions[0].send({"n": 2})
    await wait_for(lambda: len(seen) == 2)
    assert conn.stats.errors == 1
    await conn.close()


@pytest_twisted.ensureDeferred
async def test_close_while_backing_off_and_when_idle():
    port = free_port()
    rec = Recorder()
    conn = make(
        f"ws://127.0.0.1:{port}/ws", rec, options=FAST.replace(initial_delay=30, max_delay=30)
    ).start()
    await wait_for(lambda: conn.state is State.BACKOFF)
    ready = conn.when_ready()
    await conn.close()
    assert conn.state is State.STOPPED
    with pytest.raises(Exception, match="closed"):
        await ready
    assert client_delayed_calls() == []
    idle = make(f"ws://127.0.0.1:{port}/ws", rec)
    await idle.close()
    assert idle.state is State.STOPPED


# -- TLS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return TestCA.generate()


async def _tls_server(cert):
    srv = FakeExchangeServer(reactor=reactor, tls=cert)
    await srv.start()
    return srv


@pytest_twisted.ensureDeferred
async def test_tls_with_trusted_test_ca(ca):
    srv = await _tls_server(ca.issue())
    try:
        rec = Recorder()
        assert srv.ws_url().startswith("wss://127.0.0.1:")
        conn = make(srv.ws_url(), rec, options=FAST.replace(trust_root=ca.trust_root())).start()
        await conn.subscribe(["a"])
        srv.broadcast({"tls": 1}, topic="a")
        await wait_for(lambda: rec.messages == [{"tls": 1}])
        await conn.close()
        await wait_for(lambda: srv.close_codes == [1000], what="1000 over TLS")
    finally:
        await srv.stop()


def _capture_log():
    lines = []

    def observer(event):
        from twisted.logger import formatEvent

        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    return lines, lambda: globalLogPublisher.removeObserver(observer)


@pytest.mark.parametrize("case", ["untrusted", "wrong-host"])
@pytest_twisted.ensureDeferred
async def test_tls_refuses_untrusted_certificate_and_wrong_host(ca, case):
    if case == "untrusted":
        cert, trust = TestCA.generate("another CA").issue(), ca.trust_root()
        expect = "not trusted"
    else:
        cert, trust = ca.issue(names=("exchange.example",)), ca.trust_root()
        expect = "host name"
    srv = await _tls_server(cert)
    lines, stop_capture = _capture_log()
    try:
        rec = Recorder()
        conn = make(srv.ws_url(), rec, options=FAST.replace(trust_root=trust, max_retries=0))
        conn.start()
        with pytest.raises(TLSVerificationError, match=expect):
            await conn.when_ready()
        assert rec.of(TLSFailure) and expect in rec.of(TLSFailure)[0].detail
        assert any("TLS failure" in line and expect in line for line in lines), lines
        assert rec.messages == [] and srv.connections_accepted == 0
        await conn.close()
    finally:
        stop_capture()
        await srv.stop()


def test_importing_txexchange_does_not_install_a_reactor():
    code = (
        "import sys, txexchange, txexchange.transport, txexchange.testing;"
        "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported';"
        "print('clean')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_bad_options_and_urls_fail_clearly():
    from txexchange.errors import BadRequest

    with pytest.raises(BadRequest, match="initial_delay"):
        TransportOptions(initial_delay=0)
    with pytest.raises(BadRequest, match="max_delay"):
        TransportOptions(initial_delay=10, max_delay=1)
    with pytest.raises(BadRequest, match="ws://"):
        Connection("http://127.0.0.1/", SimpleWireRules(), on_message=print, reactor=reactor)


@pytest_twisted.ensureDeferred
async def test_calls_after_close_fail_with_client_closed(server):
    from txexchange.errors import ClientClosed

    conn = make(server.ws_url(), Recorder()).start()
    await conn.when_ready()
    await conn.close()
    with pytest.raises(ClientClosed):
        await conn.subscribe(["late"])
    with pytest.raises(ClientClosed):
        await conn.when_ready()


@pytest_twisted.ensureDeferred
async def test_resubscribe_while_unsubscribe_still_queued(server):
    """A subscribe cancelling a queued unsubscribe fires at once: the topic never left."""
    clock = Clock()
    conn = make(server.ws_url(), Recorder(), clock=clock).start()
    await conn.when_ready()
    first = conn.subscribe(["a"])
    clock.advance(0)
    await first
    gone = conn.unsubscribe(["a"])  # queued: the rate limit holds it back
    again = conn.subscribe(["a"])
    assert again.called and gone.called
    clock.advance(5)
    await sleep(0.05)
    assert [m["method"] for _, m in server.received] == ["SUBSCRIBE"]
    assert server.sessions[0].subscriptions == {"a"} and "a" in conn.topics


class _ExactRules(SimpleWireRules):
    """Rules whose adapter decodes JSON numbers exactly (as Kraken needs)."""

    @staticmethod
    def decode(raw):
        from txexchange.codec import loads_exact

        return loads_exact(raw)


@pytest_twisted.ensureDeferred
async def test_adapter_decoder_keeps_json_numbers_exact(server):
    from decimal import Decimal

    rec = Recorder()
    conn = make(server.ws_url(), rec, rules=_ExactRules()).start()
    await conn.when_ready()
    server.sessions[0].send('{"price": 27000.10, "qty": 0.00010000}')
    await wait_for(lambda: rec.messages)
    assert rec.messages[0]["price"] == Decimal("27000.10")
    assert str(rec.messages[0]["qty"]) == "0.00010000"
