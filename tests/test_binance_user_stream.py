"""The Binance user data stream: pure rules and parsing, then the real client against FakeBinance.

Loopback tests run :class:`~txexchange.client.binance_user.BinanceUserStream`
over real sockets against :class:`~txexchange.testing.binance.FakeBinance`,
which checks every subscription's key, timestamp and HMAC signature on its
own (written from the documentation, not from the client's signing code).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher

from helpers import client_delayed_calls, wait_for
from txexchange.adapters import Unknown
from txexchange.adapters.binance_signing import Signer, ws_api_signature_payload
from txexchange.adapters.binance_user import (
    SUBSCRIBE_METHOD,
    USER_DATA_TOPIC,
    BinanceUserStreamRules,
    UserEvent,
    parse_user_message,
    ws_api_error,
)
from txexchange.client.binance_user import BinanceUserStream
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    ClientClosed,
    ExchangeError,
    InvalidNonce,
    PermissionDenied,
    RateLimitExceeded,
)
from txexchange.testing.binance import (
    FakeBinance,
    balance_update_event,
    execution_report_event,
    outbound_account_position_event,
)
from txexchange.transport import (
    Connected,
    ControlFailed,
    Disconnected,
    TransportOptions,
    WireRules,
)

TIMEOUT = 5.0
KEY = "uSeRkEy0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789"
SECRET = "s3cr3t-Zq8wX2vN7mK4pL9rT6yU1iO5aS0dF3gH8jK2lZ7xC4vB9nM6qW1eR5tY"
FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.0, close_timeout=1.0)
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _fixture_events() -> list[dict[str, Any]]:
    names = ("outboundAccountPosition_wsapi", "balanceUpdate_wsapi", "executionReport_wsapi")
    if not VECTORS.exists():  # pragma: no cover - the repo is checked out beside ../shared
        return []
    fixtures = json.loads(VECTORS.read_text(encoding="utf-8"))["fixtures"]["binance"]
    by_name = {f["name"]: f["message"] for f in fixtures}
    return [by_name[n] for n in names]


DOC_MESSAGES = _fixture_events()


class LogCapture:
    """Every log event published while active: formatted text and the raw fields."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")
        self.lines.append(repr(event))
        failure = event.get("log_failure")
        if failure is not None:
            self.lines.append(failure.getTraceback())

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self)

    def text(self) -> str:
        return "\n".join(self.lines)


class Sink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.status: list[Any] = []

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def on_status(self, event: Any) -> None:
        self.status.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.status if isinstance(e, kind)]


# -- the pure rules ---------------------------------------------------------------------


def make_rules(now: list[float]) -> BinanceUserStreamRules:
    return BinanceUserStreamRules(Signer(KEY, SECRET), lambda: now[0])


def test_rules_are_wire_rules_with_the_documented_limits() -> None:
    rules = make_rules([0.0])
    assert isinstance(rules, WireRules)
    assert rules.heartbeat is None
    assert rules.max_connection_age == 24 * 3600
    assert rules.control_rate < 5
    assert rules.max_topics_per_connection == 1
    assert rules.replies_to_control
    assert SECRET not in repr(rules)


def test_subscribe_message_is_signed_at_send_time() -> None:
    now = [1700000000.123]
    rules = make_rules(now)
    first = json.loads(rules.subscribe_message([USER_DATA_TOPIC], 1))
    assert first["id"] == 1 and first["method"] == SUBSCRIBE_METHOD
    params = first["params"]
    assert set(params) == {"apiKey", "timestamp", "signature"}
    assert params["apiKey"] == KEY and params["timestamp"] == 1700000000123
    payload = ws_api_signature_payload(params)
    assert payload == f"apiKey={KEY}&timestamp=1700000000123"
    assert params["signature"] == Signer(KEY, SECRET).sign(payload)
    now[0] += 2.5
    rules.time_offset_ms = -100
    rules.recv_window = 10000
    second = json.loads(rules.subscribe_message([USER_DATA_TOPIC], 2))["params"]
    assert second["timestamp"] == 1700000002523
    assert second["recvWindow"] == 10000
    assert second["signature"] != params["signature"]
    assert rules.last_timestamp == 1700000002523
    unsub = json.loads(rules.unsubscribe_message([USER_DATA_TOPIC], 3))
    assert unsub == {"id": 3, "method": "userDataStream.unsubscribe"}
    with pytest.raises(BadRequest):
        rules.subscribe_message(["btcusdt@trade"], 4)
    assert SECRET not in json.dumps([first, second, unsub])


def test_control_replies_and_typed_errors() -> None:
    rules = make_rules([1.0])
    rules.subscribe_message([USER_DATA_TOPIC], 7)
    assert rules.control_reply({"subscriptionId": 0, "event": {"e": "x"}}) is None
    assert rules.control_reply({"id": 99, "status": 200, "result": {}}) is None  # not ours
    ok = rules.control_reply({"id": 7, "status": 200, "result": {"subscriptionId": 3}})
    assert ok is not None and ok.ok and ok.request_id == 7
    assert rules.subscription_id == 3 and rules.subscriptions_acknowledged == 1
    rules.subscribe_message([USER_DATA_TOPIC], 8)
    bad = rules.control_reply(
        {
            "id": 8,
            "status": 401,
            "error": {"code": -1022, "msg": "Signature for this request is not valid."},
        }
    )
    assert bad is not None and not bad.ok
    assert "Signature for this request is not valid." in (bad.error or "")
    assert isinstance(rules.last_error, AuthenticationError)
    assert rules.last_error.code == -1022  # type: ignore[attr-defined]

    def err(code: int | None, status: int) -> ExchangeError:
        return ws_api_error({"id": 1, "status": status, "error": {"code": code, "msg": "m"}})

    assert isinstance(err(-2014, 401), AuthenticationError)
    assert isinstance(err(-2015, 401), AuthenticationError)
    assert isinstance(err(-1002, 401), PermissionDenied)
    assert isinstance(err(-1021, 400), InvalidNonce)
    assert isinstance(err(-1003, 429), RateLimitExceeded)
    assert isinstance(err(None, 403), PermissionDenied)
    assert isinstance(err(-9999, 400), BadRequest)
    assert type(ws_api_error({"status": 200})) is ExchangeError
    assert "code -1021" in str(err(-1021, 400))


@pytest.mark.skipif(not DOC_MESSAGES, reason=f"{VECTORS} not found")
def test_documented_events_pass_through_unchanged() -> None:
    for message in DOC_MESSAGES:
        parsed = parse_user_message(message)
        assert isinstance(parsed, UserEvent)
        assert parsed.event is message["event"]
        assert parsed.subscription_id == 0
        assert parsed.type == message["event"]["e"]


def test_other_frames_are_unknown_and_overlap_ignores_the_subscription_id() -> None:
    assert isinstance(parse_user_message({"id": 5, "status": 200, "result": {}}), Unknown)
    assert isinstance(parse_user_message([1, 2]), Unknown)
    assert isinstance(parse_user_message({"subscriptionId": 1, "event": "x"}), Unknown)
    rules = make_rules([0.0])
    a = rules.overlap_key(b'{"subscriptionId":0,"event":{"e":"balanceUpdate","E":1}}')
    b = rules.overlap_key(b'{"subscriptionId":4,"event":{"e":"balanceUpdate","E":1}}')
    c = rules.overlap_key(b'{"subscriptionId":4,"event":{"e":"balanceUpdate","E":2}}')
    assert a == b != c
    assert rules.overlap_key(b"not json") == b"not json"


def test_event_builders_have_the_documented_fields() -> None:
    report = execution_report_event(
        "ETHBTC",
        execution_type="TRADE",
        last_quantity="1.00000000",
        last_price="0.10000000",
        quantity="1.00000000",
        event_time=5,
    )
    documented = set("eEscSofqpPFgCxXrilzLnNTtvIwmMOZYQWV")
    assert documented <= set(report)
    assert report["X"] == "FILLED" and report["Y"] == "0.10000000" and report["E"] == 5
    position = outbound_account_position_event({"BTC": ("1.0", "0.5")}, event_time=9)
    assert position == {
        "e": "outboundAccountPosition",
        "E": 9,
        "u": 9,
        "B": [{"a": "BTC", "f": "1.0", "l": "0.5"}],
    }
    balance = balance_update_event("USDT", "-5.00", event_time=3, clear_time=2)
    assert balance == {"e": "balanceUpdate", "E": 3, "a": "USDT", "d": "-5.00", "T": 2}


# -- against the fake, over loopback ------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def fake() -> AsyncIterator[FakeBinance]:
    fb = await FakeBinance(reactor=reactor, api_keys={KEY: SECRET}).start()
    try:
        yield fb
    finally:
        await fb.stop()


_streams: list[BinanceUserStream] = []


@pytest.fixture(autouse=True)
def _close_streams() -> Any:
    yield
    for stream in _streams:
        stream.close()
    _streams.clear()


def make_stream(fake: FakeBinance, sink: Sink, *, secret: str = SECRET, key: str = KEY) -> Any:
    stream = BinanceUserStream(
        api_key=key,
        secret=secret,
        reactor=reactor,
        urls=fake.urls,
        transport=FAST,
        on_event=sink.on_event,
        on_status=sink.on_status,
    )
    _streams.append(stream)
    return stream


@pytest_twisted.ensureDeferred
async def test_subscribe_and_events_in_order_unchanged(fake: FakeBinance) -> None:
    sink = Sink()
    stream = make_stream(fake, sink)
    assert SECRET not in repr(stream)
    await stream.start().addTimeout(TIMEOUT, reactor)
    assert stream.subscription_id == 0
    assert len(fake.user_sessions(KEY)) == 1
    ((session, request),) = fake.user_subscribe_requests
    assert session.path == "/ws-api/v3"
    assert request["params"]["apiKey"] == KEY
    events = [m["event"] for m in DOC_MESSAGES] + [
        execution_report_event("BTCUSDT", order_id=n, event_time=n) for n in range(20)
    ]
    events += [outbound_account_position_event(), balance_update_event()]
    for event in events:
        assert fake.push_user_event(event) == 1
    await wait_for(lambda: len(sink.events) == len(events), TIMEOUT, "every event")
    assert sink.events == events
    assert [e["i"] for e in sink.events if e["e"] == "executionReport"][-20:] == list(range(20))
    assert stream.stats.events == len(events)
    assert stream.stats.subscribed == 1
    assert stream.stats.as_dict()["connection"]["connects"] == 1
    assert len(sink.of(Connected)) == 1
    # a second start() is the same outcome, no second subscription
    await stream.start()
    assert len(fake.user_subscribe_requests) == 1


@pytest_twisted.ensureDeferred
async def test_wrong_secret_fails_start_without_leaking_it(fake: FakeBinance) -> None:
    sink = Sink()
    wrong = "WRONG-" + SECRET[6:]
    with LogCapture() as logs:
        stream = make_stream(fake, sink, secret=wrong)
        with pytest.raises(AuthenticationError) as info:
            await stream.start().addTimeout(TIMEOUT, reactor)
        session = await fake.server.when_session(1)
        code = await session.closed.addTimeout(TIMEOUT, reactor)
    err = info.value
    assert err.code == -1022  # type: ignore[attr-defined]
    assert "Signature for this request is not valid." in str(err)
    text = logs.text()
    assert "Signature for this request is not valid." in text  # the logs were captured
    for secret in (wrong, SECRET):
        assert secret not in str(err) and secret not in repr(err)
        assert secret not in text
        assert secret not in repr(stream)
    assert code == 1000  # the refused session is closed cleanly
    assert fake.user_sessions() == []
    assert len(sink.of(ControlFailed)) == 1
    with pytest.raises(AuthenticationError):
        await stream.start()
    assert client_delayed_calls() == []


@pytest_twisted.ensureDeferred
async def test_unknown_key_and_clock_skew_are_typed(fake: FakeBinance) -> None:
    stream = make_stream(fake, Sink(), key="nope")
    with pytest.raises(AuthenticationError) as info:
        await stream.start().addTimeout(TIMEOUT, reactor)
    assert info.value.code == -2015  # type: ignore[attr-defined]
    skewed = make_stream(fake, Sink())
    skewed.time_offset_ms = -6000  # older than the default 5000 ms recvWindow
    with pytest.raises(InvalidNonce) as nonce:
        await skewed.start().addTimeout(TIMEOUT, reactor)
    assert "recvWindow" in str(nonce.value)
    # the same offset passes with a wider recvWindow
    widened = make_stream(fake, Sink())
    widened.time_offset_ms = -6000
    widened.recv_window = 10000
    await widened.start().addTimeout(TIMEOUT, reactor)
    ahead = make_stream(fake, Sink())
    ahead.time_offset_ms = 1500
    with pytest.raises(InvalidNonce):
        await ahead.start().addTimeout(TIMEOUT, reactor)


@pytest_twisted.ensureDeferred
async def test_reconnect_resubscribes_freshly_signed(fake: FakeBinance) -> None:
    sink = Sink()
    stream = make_stream(fake, sink)
    await stream.start().addTimeout(TIMEOUT, reactor)
    fake.push_user_event(balance_update_event(event_time=1))
    await wait_for(lambda: len(sink.events) == 1, TIMEOUT, "first event")
    first = await fake.server.when_session(1)
    first.drop()
    second = await fake.server.when_session(2).addTimeout(TIMEOUT, reactor)
    await wait_for(lambda: fake.user_sessions() == [second], TIMEOUT, "re-subscription")
    requests = fake.user_subscribe_requests
    assert [s for s, _ in requests] == [first, second]
    old, new = (r["params"] for _, r in requests)
    assert new["timestamp"] > old["timestamp"]
    assert new["signature"] != old["signature"]
    assert new["apiKey"] == old["apiKey"] == KEY
    assert len(sink.of(Disconnected)) == 1 and len(sink.of(Connected)) == 2
    fake.push_user_event(balance_update_event(event_time=2))
    await wait_for(lambda: len(sink.events) == 2, TIMEOUT, "event after the reconnect")
    assert [e["E"] for e in sink.events] == [1, 2]
    assert stream.stats.subscribed == 2
    assert stream.stats.connection.reconnects == 1


@pytest_twisted.ensureDeferred
async def test_stream_ended_by_the_exchange_is_subscribed_again(fake: FakeBinance) -> None:
    sink = Sink()
    stream = make_stream(fake, sink)
    await stream.start().addTimeout(TIMEOUT, reactor)
    assert fake.end_user_streams() == 1
    await wait_for(lambda: len(fake.user_subscribe_requests) == 2, TIMEOUT, "re-subscription")
    await wait_for(lambda: fake.user_sessions() != [], TIMEOUT, "subscribed again")
    assert sink.events[0]["e"] == "eventStreamTerminated"
    assert stream.stats.resubscribes == 1
    fake.push_user_event(balance_update_event(event_time=3))
    await wait_for(lambda: sink.events[-1].get("E") == 3, TIMEOUT, "event after it")
    assert fake.server.connections_accepted == 1  # same session throughout


@pytest_twisted.ensureDeferred
async def test_close_is_a_clean_1000_and_leaves_nothing_behind(fake: FakeBinance) -> None:
    sink = Sink()
    stream = make_stream(fake, sink)
    await stream.start().addTimeout(TIMEOUT, reactor)
    session = await fake.server.when_session(1)
    await stream.close().addTimeout(TIMEOUT, reactor)
    code = await session.closed.addTimeout(TIMEOUT, reactor)
    assert code == 1000
    assert fake.server.close_codes == [1000]
    assert client_delayed_calls() == []
    with pytest.raises(ClientClosed):
        await stream.start()
    await stream.close()  # idempotent


@pytest_twisted.ensureDeferred
async def test_close_before_the_ack_fails_start(fake: FakeBinance) -> None:
    fake.server.reply_delay = 0.5
    stream = make_stream(fake, Sink())
    started = stream.start()
    await fake.server.when_received(1).addTimeout(TIMEOUT, reactor)
    await stream.close().addTimeout(TIMEOUT, reactor)
    with pytest.raises(ClientClosed):
        await started


@pytest_twisted.ensureDeferred
async def test_a_raising_listener_does_not_stop_the_stream(fake: FakeBinance) -> None:
    seen: list[dict[str, Any]] = []

    def boom(event: dict[str, Any]) -> None:
        seen.append(event)
        raise RuntimeError("listener bug")

    stream = BinanceUserStream(
        api_key=KEY, secret=SECRET, reactor=reactor, urls=fake.urls, on_event=boom
    )
    _streams.append(stream)
    await stream.start().addTimeout(TIMEOUT, reactor)
    with LogCapture():
        fake.push_user_event(balance_update_event(event_time=1))
        fake.push_user_event(balance_update_event(event_time=2))
        await wait_for(lambda: len(seen) == 2, TIMEOUT, "both events")
    assert stream.stats.events == 2


@pytest_twisted.ensureDeferred
async def test_refused_resubscription_is_retried_later(fake: FakeBinance) -> None:
    sink = Sink()
    stream = make_stream(fake, sink)
    stream.resubscribe_delay = 0.3
    await stream.start().addTimeout(TIMEOUT, reactor)
    # the exchange ends the stream while the local clock is 10 s behind
    stream.time_offset_ms = -10_000
    fake.end_user_streams()
    await wait_for(lambda: sink.of(ControlFailed), TIMEOUT, "refused re-subscription")
    assert fake.user_sessions() == []
    assert isinstance(stream.rules.last_error, InvalidNonce)
    stream.time_offset_ms = 0
    await wait_for(lambda: fake.user_sessions(), TIMEOUT, "subscribed after the retry")
    assert len(fake.user_subscribe_requests) == 3
    fake.push_user_event(balance_update_event(event_time=4))
    await wait_for(lambda: sink.events[-1].get("E") == 4, TIMEOUT, "event after it")


@pytest_twisted.ensureDeferred
async def test_revoked_key_is_not_retried(fake: FakeBinance) -> None:
    sink = Sink()
    stream = make_stream(fake, sink)
    stream.resubscribe_delay = 0.05
    await stream.start().addTimeout(TIMEOUT, reactor)
    del fake.api_keys[KEY]
    (await fake.server.when_session(1)).drop()
    await wait_for(lambda: sink.of(ControlFailed), TIMEOUT, "refused re-subscription")
    await wait_for(lambda: len(sink.of(Connected)) == 2, TIMEOUT, "reconnected")
    assert isinstance(stream.rules.last_error, AuthenticationError)
    from helpers import sleep

    await sleep(0.3)
    assert len(fake.user_subscribe_requests) == 2
    assert stream.stats.refused == 1


@pytest_twisted.ensureDeferred
async def test_rollover_switches_sessions_without_repeating_an_event(fake: FakeBinance) -> None:
    sink = Sink()
    stream = make_stream(fake, sink)
    await stream.start().addTimeout(TIMEOUT, reactor)
    first = await fake.server.when_session(1)
    # make the ids differ, as they may: the old session's subscription is now 1
    fake.end_user_streams()
    await wait_for(lambda: stream.subscription_id == 1, TIMEOUT, "second subscription")
    sink.events.clear()
    rolled = stream.connection.rollover()
    second = await fake.server.when_session(2).addTimeout(TIMEOUT, reactor)
    await wait_for(lambda: len(fake.user_sessions()) == 2, TIMEOUT, "replacement subscribed")
    # the same event on both sessions, under different subscription ids
    assert fake.push_user_event(balance_update_event(event_time=10)) == 2
    await rolled.addTimeout(TIMEOUT, reactor)
    assert await first.closed.addTimeout(TIMEOUT, reactor) == 1000
    fake.push_user_event(balance_update_event(event_time=11))
    await wait_for(lambda: len(sink.events) >= 2, TIMEOUT, "event after the rollover")
    assert [e["E"] for e in sink.events] == [10, 11]
    assert fake.user_sessions() == [second]
    assert stream.stats.connection.rollovers == 1
    old, new = (r["params"] for _, r in fake.user_subscribe_requests[-2:])
    assert new["signature"] != old["signature"]
    assert stream.subscription_id == 0
