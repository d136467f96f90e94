"""The REST client's weight budget, 429 pauses and retries, on a Clock with treq's stub."""

from __future__ import annotations

import json

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from txexchange.adapters import binance
from txexchange.adapters.rest import RestRequest
from txexchange.client.rest import RestClient
from txexchange.errors import BadSymbol, ClientClosed, ExchangeNotAvailable


class Script(Resource):
    """Answers each request with the next scripted (status, headers, body); records times."""

    isLeaf = True

    def __init__(self, clock: Clock, answers=None) -> None:
        super().__init__()
        self.clock = clock
        self.answers = list(answers or [])
        self.seen: list[tuple[float, str]] = []

    def render(self, request):
        self.seen.append((self.clock.seconds(), request.uri.decode()))
        status, headers, body = self.answers.pop(0) if self.answers else (200, {}, {"ok": True})
        request.setResponseCode(status)
        for k, v in headers.items():
            request.setHeader(k, v)
        return json.dumps(body).encode()


def make(resource, clock, **kw):
    stub = StubTreq(resource)
    client = RestClient(
        "http://127.0.0.1:1",
        reactor=clock,
        clock=clock,
        http_client=stub,
        parse_error=binance.parse_rest_error,
        used_weight=binance.used_weight,
        **kw,
    )
    return client, stub


def fired(d):
    results = []
    d.addBoth(results.append)
    return results


def test_requests_wait_for_the_next_weight_window():
    clock = Clock()
    res = Script(clock)
    client, stub = make(res, clock, weight_limit=100, safety=1.0)
    outcomes = [fired(client.request(RestRequest("GET", f"/r{i}", {}, 30))) for i in range(5)]
    clock.advance(0)
    stub.flush()
    assert len(res.seen) == 3 and all(len(o) == 1 for o in outcomes[:3])
    assert client.used_weight == 90
    clock.advance(59.9)
    stub.flush()
    assert len(res.seen) == 3
    clock.advance(0.2)
    stub.flush()
    assert len(res.seen) == 5 and all(o == [{"ok": True}] for o in outcomes)
    assert [round(t) for t, _ in res.seen] == [0, 0, 0, 60, 60]


def test_server_reported_weight_is_respected():
    clock = Clock()
    res = Script(clock, [(200, {"X-MBX-USED-WEIGHT-1M": "95"}, {})])
    client, stub = make(res, clock, weight_limit=100, safety=1.0)
    fired(client.request(RestRequest("GET", "/a", {}, 1)))
    clock.advance(0)
    stub.flush()
    second = fired(client.request(RestRequest("GET", "/b", {}, 10)))
    clock.advance(1)
    stub.flush()
    assert second == [] and len(res.seen) == 1
    clock.advance(60)
    stub.flush()
    assert len(res.seen) == 2 and second == [{"ok": True}]


def test_429_pauses_every_request_for_retry_after():
    clock = Clock()
    too_many = (429, {"Retry-After": "5"}, {"code": -1003, "msg": "Too many requests"})
    res = Script(clock, [too_many])
    client, stub = make(res, clock)
    first = fired(client.request(RestRequest("GET", "/depth", {}, 5)))
    clock.advance(0)
    stub.flush()
    other = fired(client.request(RestRequest("GET", "/other", {}, 5)))
    clock.advance(4.9)
    stub.flush()
    assert len(res.seen) == 1 and first == [] and other == []
    clock.advance(0.2)
    stub.flush()
    assert first == [{"ok": True}] and other == [{"ok": True}]
    assert [u for _, u in res.seen] == ["/depth", "/depth", "/other"]
    assert client.stats.rate_limited == 1


def test_5xx_retried_with_backoff_then_gives_up_with_typed_error():
    clock = Clock()
    res = Script(clock, [(503, {}, {"msg": "busy"})] * 3)
    client, stub = make(res, clock, max_attempts=3, retry_delay=1.0)
    out = fired(client.request(RestRequest("GET", "/x", {}, 1)))
    clock.advance(0)
    stub.flush()
    for _ in range(10):
        clock.advance(0.5)
        stub.flush()
    assert [t for t, _ in res.seen] == [0.0, 1.0, 3.0]
    assert len(out) == 1 and out[0].check(ExchangeNotAvailable)


def test_client_errors_fail_at_once_with_the_mapped_type():
    clock = Clock()
    res = Script(clock, [(400, {}, {"code": -1121, "msg": "Invalid symbol."})])
    client, stub = make(res, clock)
    out = fired(client.request(RestRequest("GET", "/api/v3/depth", {"symbol": "NOPE"}, 5)))
    clock.advance(0)
    stub.flush()
    assert len(res.seen) == 1
    assert out[0].check(BadSymbol)
    with pytest.raises(BadSymbol, match="Invalid symbol"):
        out[0].raiseException()


def test_close_fails_queued_requests():
    clock = Clock()
    res = Script(clock, [(429, {"Retry-After": "30"}, {})])
    client, stub = make(res, clock)
    out = fired(client.request(RestRequest("GET", "/x", {}, 1)))
    clock.advance(0)
    stub.flush()
    client.close()
    assert out and out[0].check(ClientClosed)
    assert [c for c in clock.getDelayedCalls() if c.active()] == []
