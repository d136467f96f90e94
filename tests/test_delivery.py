"""The delivery hub: observers, watchers, readiness waiters and async iterators."""

from __future__ import annotations

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from txexchange.delivery import Hub
from txexchange.errors import BadRequest, ClientClosed, ResyncTimeout

KEY = ("book", "BTC/USDT")


def test_observers_called_in_order_and_a_raising_one_is_skipped():
    hub = Hub(Clock())
    calls = []
    hub.add_observer(KEY, lambda e: calls.append(("a", e)))
    hub.add_observer(KEY, lambda e: 1 / 0)
    handle = hub.add_observer(KEY, lambda e: calls.append(("c", e)))
    hub.publish(KEY, 1)
    hub.publish(KEY, 2)
    assert calls == [("a", 1), ("c", 1), ("a", 2), ("c", 2)]
    assert hub.observer_errors == 2
    handle.stop()
    handle.stop()
    hub.publish(KEY, 3)
    assert calls[-1] == ("a", 3) and len(calls) == 5
    with pytest.raises(BadRequest):
        hub.add_observer(KEY, "not callable")


def test_watch_fires_on_next_publish_only_once_and_can_be_cancelled():
    hub = Hub(Clock())
    d = hub.watch(KEY, lambda e: e * 10)
    cancelled = hub.watch(KEY, lambda e: e)
    cancelled.cancel()
    cancelled.addErrback(lambda f: None)
    assert not d.called
    hub.publish(KEY, 4)
    assert d.result == 40
    hub.publish(KEY, 5)
    assert d.result == 40


def test_when_ready_waits_then_times_out_with_a_clear_error():
    clock = Clock()
    hub = Hub(clock)
    ok = hub.when_ready(KEY, 5, "BTC/USDT order book")
    hub.set_ready(KEY)
    assert ok.called
    assert hub.when_ready(KEY, 5, "x").called
    hub.set_not_ready(KEY)
    late = hub.when_ready(KEY, 5, "BTC/USDT order book")
    errors = []
    late.addErrback(errors.append)
    clock.advance(4.9)
    assert not errors
    clock.advance(0.2)
    assert errors[0].check(ResyncTimeout)
    assert "BTC/USDT order book not available within 5s" in str(errors[0].value)
    assert clock.getDelayedCalls() == []


def test_async_iterator_latest_only_and_close():
    hub = Hub(Clock())
    from txexchange.delivery import UpdateStream

    stream = UpdateStream(hub, KEY, lambda e: e, latest_only=True, maxlen=10)
    for i in range(5):
        hub.publish(KEY, i)
    got = []

    async def consume():
        async for value in stream:
            got.append(value)
            if value == 7:
                stream.close()

    d = ensureDeferred(consume())
    assert got == [4]  # only the latest was kept
    hub.publish(KEY, 7)
    assert d.called and got == [4, 7]
    assert stream.dropped == 4


def test_close_fails_everything_pending():
    hub = Hub(Clock())
    w = hub.watch(KEY, lambda e: e)
    r = hub.when_ready(KEY, None, "x")
    errs = []
    w.addErrback(errs.append)
    r.addErrback(errs.append)
    hub.close()
    assert [e.type for e in errs] == [ClientClosed, ClientClosed]
