"""BinanceSocketManager (python-binance style) against the fake Binance over loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from helpers import client_delayed_calls, sleep, wait_for
from txexchange.binance import BinanceSocketManager, RetiredStreamError
from txexchange.codec import loads
from txexchange.errors import BadRequest
from txexchange.testing import TestCA
from txexchange.testing.binance import FakeBinance
from txexchange.transport import TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.1)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest_twisted.async_yield_fixture
async def fake():
    f = FakeBinance(["BNB/BTC", "ETH/USDT"], reactor=reactor)
    await f.start()
    yield f
    await f.stop()


@pytest_twisted.async_yield_fixture
async def bm(fake):
    manager = BinanceSocketManager(reactor=reactor, urls=fake.urls, transport=FAST)
    yield manager
    await manager.close()


def sent_by_stream(fake) -> dict[str, list]:
    """Everything the fake sent on its stream sessions, as ``stream -> [data, ...]``."""
    out: dict[str, list] = {}
    for session in fake.server.all_sessions:
        for payload in session.sent:
            msg = loads(payload) if isinstance(payload, bytes | str) else payload
            if isinstance(msg, dict) and "stream" in msg:
                out.setdefault(msg["stream"], []).append(msg["data"])
    return out


async def subscribed(fake, streams, n_session=1):
    session = await fake.server.when_session(n_session)
    await wait_for(lambda: set(streams) <= session.subscriptions, what=f"{streams} subscribed")
    return session


async def drive(fake, steps, batch=20):
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(0.002)


@pytest_twisted.ensureDeferred
async def test_every_start_method_delivers_binance_raw_messages_over_one_connection(fake, bm):
    got: dict[str, list] = {}

    def sink(name):
        return got.setdefault(name, []).append

    keys = {
        "depth": bm.start_depth_socket("BNBBTC", sink("depth")),
        "depth5": bm.start_depth_socket("bnbbtc", sink("depth5"), depth=5, interval=100),
        "depth20": bm.start_depth_socket("ETHUSDT", sink("depth20"), depth="20"),
        "kline": bm.start_kline_socket("BNBBTC", sink("kline"), interval="1m"),
        "mini": bm.start_miniticker_socket(sink("mini")),
        "trade": bm.start_trade_socket("BNBBTC", sink("trade")),
        "agg": bm.start_aggtrade_socket("BNBBTC", sink("agg")),
        "ticker": bm.start_symbol_ticker_socket("BNBBTC", sink("ticker")),
        "book": bm.start_symbol_book_ticker_socket("BNBBTC", sink("book")),
        "multi": bm.start_multiplex_socket(["ethusdt@trade", "BNBBTC@depth"], sink("multi")),
    }
    streams = {
        "depth": "bnbbtc@depth",
        "depth5": "bnbbtc@depth5@100ms",
        "depth20": "ethusdt@depth20",
        "kline": "bnbbtc@kline_1m",
        "mini": "!miniTicker@arr",
        "trade": "bnbbtc@trade",
        "agg": "bnbbtc@aggTrade",
        "ticker": "bnbbtc@ticker",
        "book": "bnbbtc@bookTicker",
    }
    # python-binance's conn_keys: the stream path, "streams=a/b" for multiplex
    assert {k: keys[k] for k in streams} == streams
    assert keys["multi"] == "streams=ethusdt@trade/bnbbtc@depth"
    await subscribed(fake, [*streams.values(), "ethusdt@trade"])
    await drive(fake, 200)
    sent = sent_by_stream(fake)
    multi_sent = [
        {"stream": s, "data": d} for s in ("ethusdt@trade", "bnbbtc@depth") for d in sent.get(s, [])
    ]

    def complete():
        return all(len(got.get(n, [])) == len(sent.get(s, [])) for n, s in streams.items()) and (
            len(got.get("multi", [])) == len(multi_sent)
        )

    await wait_for(complete, what="every message delivered")
    for name, stream in streams.items():
        assert sent[stream], f"the fake sent nothing on {stream}"
        assert got[name] == sent[stream], name  # the raw `data`, exactly, in order
    # multiplex: the {"stream", "data"} envelope, in arrival order per stream
    for s in ("ethusdt@trade", "bnbbtc@depth"):
        assert [m for m in got["multi"] if m["stream"] == s] == [
            m for m in multi_sent if m["stream"] == s
        ]
    assert got["trade"][0]["e"] == "trade" and got["book"][0].keys() >= {"u", "b", "a"}
    assert set(got["depth5"][0]) == {"lastUpdateId", "bids", "asks"}
    # every stream shares one connection (combined stream + SUBSCRIBE)
    assert fake.server.connections_accepted == 1
    assert fake.server.sessions[0].path == "/stream"


@pytest_twisted.ensureDeferred
async def test_shared_streams_and_stop_socket_stops_exactly_one(fake, bm):
    a, b, c, d = [], [], [], []
    key_a = bm.start_trade_socket("BNBBTC", a.append)
    assert bm.start_trade_socket("bnbbtc", a.append) == key_a  # already open: same key
    key_b = bm.start_trade_socket("BNBBTC", b.append)  # another callback: own key
    key_c = bm.start_multiplex_socket(["bnbbtc@trade", "bnbbtc@aggTrade"], c.append)
    key_d = bm.start_aggtrade_socket("BNBBTC", d.append)
    assert len({key_a, key_b, key_c, key_d}) == 4
    session = await subscribed(fake, ["bnbbtc@trade", "bnbbtc@aggTrade"])
    subscribes = [m for m in session.received if m.get("method") == "SUBSCRIBE"]
    assert sorted(p for m in subscribes for p in m["params"]) == [
        "bnbbtc@aggTrade",
        "bnbbtc@trade",
    ]  # each stream subscribed once, however many keys use it
    await drive(fake, 100)
    await wait_for(lambda: a and len(a) == len(b) and d, what="trades")
    assert a == b == [m["data"] for m in c if m["stream"] == "bnbbtc@trade"]

    # stopping one of two keys on a stream keeps the stream for the other
    await bm.stop_socket(key_a)
    assert "bnbbtc@trade" in session.subscriptions
    # stopping the aggTrade socket leaves the multiplex socket's aggTrade alone
    await bm.stop_socket(key_d)
    assert "bnbbtc@aggTrade" in session.subscriptions
    n_a, n_d = len(a), len(d)
    await drive(fake, 100)
    await wait_for(lambda: len(b) > n_a, what="more trades")
    assert len(a) == n_a and len(d) == n_d

    # the last key of a stream unsubscribes exactly that stream
    await bm.stop_socket(key_c)
    await wait_for(lambda: session.subscriptions == {"bnbbtc@trade"}, what="aggTrade gone")
    await bm.stop_socket(key_b)
    await wait_for(lambda: not session.subscriptions, what="trade gone")
    assert fake.server.connections_accepted == 1
    assert await bm.stop_socket("no-such-key") is None


@pytest_twisted.ensureDeferred
async def test_reconnect_resubscribes_and_refused_stream_gets_error_dict(fake, bm):
    trades, bad = [], []
    bm.start_trade_socket("BNBBTC", trades.append)
    bm.start_kline_socket("ETHUSDT", trades.append, interval="5m")
    bad_key = bm.start_trade_socket("NOSUCHPAIR", bad.append)  # the fake has no such market
    first = await subscribed(fake, ["bnbbtc@trade", "ethusdt@kline_5m"])
    await wait_for(lambda: bad, what="refusal")
    assert bad[0]["e"] == "error" and "nosuchpair@trade" in bad[0]["m"]
    assert bad_key not in bm._sockets
    first.drop()
    second = await subscribed(fake, ["bnbbtc@trade", "ethusdt@kline_5m"], n_session=2)
    assert second.subscriptions == {"bnbbtc@trade", "ethusdt@kline_5m"}
    await drive(fake, 100)
    await wait_for(lambda: any(m.get("e") == "trade" for m in trades), what="trades again")
    assert all(m.get("e") in ("trade", "kline") for m in trades)
    assert len(bad) == 1


@pytest_twisted.ensureDeferred
async def test_more_than_1024_streams_spread_over_connections_within_the_limit():
    fake = FakeBinance([f"C{i:03d}/USDT" for i in range(260)], reactor=reactor, levels=5)
    await fake.start()
    bm = BinanceSocketManager(reactor=reactor, urls=fake.urls, transport=FAST)
    kinds = ("trade", "aggTrade", "bookTicker", "depth")
    streams = [f"c{i:03d}usdt@{k}" for i in range(260) for k in kinds]  # 1040
    got = []
    try:
        bm.start_multiplex_socket(streams, got.append)
        await wait_for(
            lambda: sum(len(s.subscriptions) for s in fake.server.sessions) == len(streams),
            timeout=15,
            what="1040 streams subscribed",
        )
        assert sorted(len(s.subscriptions) for s in fake.server.sessions) == [16, 1024]
        fake.step(5)
        sent = sent_by_stream(fake)
        n = sum(len(v) for v in sent.values())
        await wait_for(lambda: len(got) == n, what="messages from both connections")
        for stream, data in sent.items():
            assert [m["data"] for m in got if m["stream"] == stream] == data
    finally:
        await bm.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_tls_is_verified_a_test_ca_is_passed_explicitly(test_ca):
    fake = FakeBinance(["BNB/BTC"], reactor=reactor, tls=test_ca.issue())
    await fake.start()
    stranger = TestCA.generate("some other CA")
    trusted = BinanceSocketManager(
        reactor=reactor, urls=fake.urls, transport=FAST.replace(trust_root=test_ca.trust_root())
    )
    untrusted = BinanceSocketManager(
        reactor=reactor, urls=fake.urls, transport=FAST.replace(trust_root=stranger.trust_root())
    )
    good, bad = [], []
    try:
        assert fake.urls["ws"].startswith("wss://")
        trusted.start_trade_socket("BNBBTC", good.append)
        untrusted.start_trade_socket("BNBBTC", bad.append)
        await subscribed(fake, ["bnbbtc@trade"])
        await drive(fake, 60)
        await wait_for(lambda: good and bad, what="trades and the TLS error")
        assert bad == [{"e": "error", "m": bad[0]["m"]}]
        assert bad[0]["m"].startswith("TLS verification failed")
        assert all(m["e"] == "trade" for m in good)
        assert fake.server.connections_accepted == 1  # the untrusted one never got through
    finally:
        await trusted.close()
        await untrusted.close()
        await fake.stop()


def test_retired_streams_fail_clearly_and_bad_arguments_are_refused():
    bm = BinanceSocketManager(reactor=reactor, urls={"ws": "ws://127.0.0.1:1"})
    with pytest.raises(RetiredStreamError, match=r"@ticker.*!miniTicker@arr"):
        bm.start_ticker_socket(print)
    with pytest.raises(RetiredStreamError, match=r"<symbol>@bookTicker"):
        bm.start_book_ticker_socket(print)
    with pytest.raises(RetiredStreamError, match="2026-03-26"):
        bm.start_multiplex_socket(["bnbbtc@trade", "!ticker@arr"], print)
    for call in (
        lambda: bm.start_depth_socket("BNBBTC", print, depth=7),
        lambda: bm.start_depth_socket("BNBBTC", print, interval=250),
        lambda: bm.start_kline_socket("BNBBTC", print, interval="7m"),
        lambda: bm.start_miniticker_socket(print, update_time=3000),
        lambda: bm.start_multiplex_socket([], print),
        lambda: bm.start_multiplex_socket("bnbbtc@trade", print),
        lambda: bm.start_user_socket(print),  # no API key
    ):
        with pytest.raises(BadRequest):
            call()
    assert not bm._pool.connections  # nothing was opened


@pytest_twisted.ensureDeferred
async def test_error_dict_after_max_retries_then_close_is_clean():
    fake = FakeBinance(["BNB/BTC"], reactor=reactor)
    await fake.start()
    bm = BinanceSocketManager(reactor=reactor, urls=fake.urls, max_retries=2, transport=FAST)
    messages = []
    other = []
    key = bm.start_trade_socket("BNBBTC", messages.append)
    bm.start_multiplex_socket(["bnbbtc@trade", "bnbbtc@depth"], other.append)
    try:
        await subscribed(fake, ["bnbbtc@trade", "bnbbtc@depth"])
        fake.step(20)
        await wait_for(lambda: messages, what="a trade")
        await fake.stop()  # every reconnect is refused from now on
        await wait_for(lambda: messages[-1].get("e") == "error", timeout=10, what="error dict")
        assert messages[-1] == {"e": "error", "m": "Max reconnect retries reached"}
        assert other[-1] == {"e": "error", "m": "Max reconnect retries reached"}
        assert sum(m.get("e") == "error" for m in messages) == 1
        assert key not in bm._sockets
    finally:
        await bm.close()
    assert not client_delayed_calls()


@pytest_twisted.ensureDeferred
async def test_close_fires_after_clean_close_and_manager_is_reusable(fake):
    bm = BinanceSocketManager(reactor=reactor, urls=fake.urls, transport=FAST)
    got = []
    bm.start()  # compatibility no-op, with the reactor running
    bm.start_trade_socket("BNBBTC", got.append)
    await subscribed(fake, ["bnbbtc@trade"])
    d = bm.close()
    assert await d is None
    assert fake.server.close_codes == [1000]
    assert not client_delayed_calls()
    n = len(got)
    fake.step(50)
    await sleep(0.05)
    assert len(got) == n  # nothing after close()
    # start again after close(): a fresh connection
    bm.start_trade_socket("BNBBTC", got.append)
    await subscribed(fake, ["bnbbtc@trade"], n_session=2)
    await drive(fake, 60)
    await wait_for(lambda: len(got) > n, what="trades after restart")
    await bm.close()
    assert fake.server.close_codes == [1000, 1000]


def test_classic_script_exits_cleanly_with_no_thread_left():
    """start sockets, receive, close(), reactor.stop(): exit 0, only MainThread."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "socket_manager.py"), "--messages", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "received 4 messages" in result.stdout
    assert result.stdout.count("message type: trade") == 4
    assert "threads at exit: ['MainThread']" in result.stdout
    assert "Traceback" not in result.stderr


KEY = "k" * 64
SECRET = "s" * 64


class PythonBinanceClient:
    """Stands in for python-binance's ``Client``: the manager reads these two."""

    API_KEY = KEY
    API_SECRET = SECRET


@pytest_twisted.ensureDeferred
async def test_user_socket_delivers_account_events_and_resubscribes_after_reconnect():
    from txexchange.testing.binance import (
        balance_update_event,
        execution_report_event,
        outbound_account_position_event,
    )

    fake = FakeBinance(["BNB/BTC"], reactor=reactor, api_keys={KEY: SECRET})
    await fake.start()
    bm = BinanceSocketManager(
        PythonBinanceClient(), reactor=reactor, urls=fake.urls, transport=FAST
    )
    got, other = [], []
    try:
        key = bm.start_user_socket(got.append)
        assert bm.start_user_socket(got.append) == key
        key2 = bm.start_user_socket(other.append)  # shares the one subscription
        await wait_for(lambda: fake.user_sessions(KEY), what="user subscription")
        events = [
            outbound_account_position_event({"BNB": ("1.00000000", "0.50000000")}),
            balance_update_event("BTC", "0.01000000"),
            execution_report_event("BNBBTC", execution_type="TRADE", last_quantity="1.0"),
        ]
        for event in events:
            assert fake.push_user_event(event, KEY) == 1
        await wait_for(lambda: len(got) == 3 and len(other) == 3, what="user events")
        assert got == other == events  # exactly as Binance sent them
        # a dropped session is re-subscribed with a freshly signed request
        fake.user_sessions(KEY)[0].drop()
        await wait_for(lambda: len(fake.user_subscribe_requests) == 2, what="resubscribe")
        await wait_for(lambda: fake.user_sessions(KEY), what="user subscription again")
        await bm.stop_socket(key)
        fake.push_user_event(balance_update_event("BNB", "-0.5"), KEY)
        await wait_for(lambda: len(other) == 4, what="event after reconnect")
        assert other[-1]["e"] == "balanceUpdate" and len(got) == 3
        await bm.stop_socket(key2)  # the last user key closes the session
        await wait_for(lambda: not fake.user_sessions(KEY), what="user session closed")
    finally:
        await bm.close()
        await fake.stop()
    assert not client_delayed_calls()


@pytest_twisted.ensureDeferred
async def test_user_socket_with_a_wrong_key_gets_an_error_dict_without_the_secret():
    fake = FakeBinance(["BNB/BTC"], reactor=reactor, api_keys={KEY: SECRET})
    await fake.start()
    bm = BinanceSocketManager(
        reactor=reactor, urls=fake.urls, transport=FAST, api_key=KEY, secret="x" * 64
    )
    got = []
    try:
        bm.start_user_socket(got.append)
        await wait_for(lambda: got, what="error dict")
        assert got[0]["e"] == "error" and "x" * 64 not in got[0]["m"]
        assert "-1022" in got[0]["m"]  # Binance's own reason (invalid signature)
        assert "x" * 64 not in repr(bm)
        await sleep(0.1)
        assert len(got) == 1
    finally:
        await bm.close()
        await fake.stop()
