"""Regression tests for client bugs the fault matrix (tests/test_fault_matrix.py) found.

* A refused subscribe message failed every topic in it, not only the refused
  one (Binance, OKX, Bybit and Gemini refuse whole messages).
* After a reconnect, the resubscribe waited for the control-rate interval of
  the *previous* connection (OKX: 7.5 s), so books stayed stale that long and a
  stall watchdog shorter than that replaced the new connection again and again.
* Refusing TCP connections (and swapping the certificate meanwhile) is a
  general fault of the fake server used by the matrix.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from helpers import Recorder, sleep, wait_for
from txexchange.errors import SubscriptionError
from txexchange.testing import FakeExchangeServer
from txexchange.transport import (
    Connected,
    Connection,
    ControlFailed,
    ReconnectScheduled,
    SimpleWireRules,
    TLSFailure,
    TransportOptions,
)
from txexchange.transport.control import ControlQueue

FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.0, stall_timeout=None)


def connection(server: FakeExchangeServer, rec: Recorder, **rules: object) -> Connection:
    return Connection(
        server.ws_url(),
        SimpleWireRules(**rules),  # type: ignore[arg-type]
        on_message=rec.on_message,
        on_status=rec.on_status,
        reactor=reactor,
        options=FAST,
    ).start()


@pytest_twisted.ensureDeferred
async def test_one_refused_topic_does_not_fail_the_others_of_its_message() -> None:
    server = await FakeExchangeServer(reactor=reactor).start()
    server.refuse_topics = {"bad"}
    rec = Recorder()
    conn = connection(server, rec)
    try:
        await conn.when_ready()
        good = conn.subscribe(["a", "bad", "b"])  # one SUBSCRIBE message
        results: list[object] = []
        good.addBoth(results.append)
        single = {t: conn.subscribe([t]) for t in ("a", "b")}
        await wait_for(lambda: results, what="the subscribe answered")
        assert isinstance(results[0].value, SubscriptionError)  # type: ignore[attr-defined]
        assert "bad" in str(results[0].value)  # type: ignore[attr-defined]
        for d in single.values():
            await d  # acknowledged: asked for again on their own
        session = server.sessions[0]
        assert session.subscriptions == {"a", "b"}
        sent = [m["params"] for m in session.received]
        assert sent == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
        refused = rec.of(ControlFailed)
        assert [e.topics for e in refused] == [("a", "bad", "b"), ("bad",)]
        assert conn.topics == {"a", "b"}
    finally:
        await conn.close()
        await server.stop()


def test_a_new_connection_does_not_inherit_the_old_ones_control_rate() -> None:
    clock = Clock()
    sent: list[tuple[str, list[str]]] = []
    queue = ControlQueue(clock, 1 / 7.5, 100, lambda kind, topics: sent.append((kind, topics)))
    queue.start()
    queue.enqueue("sub", ["a"])
    clock.advance(0)
    assert sent == [("sub", ["a"])]
    queue.enqueue("sub", ["b"])
    clock.advance(1)
    assert len(sent) == 1  # the same connection keeps to its rate
    queue.stop()  # the connection is lost ...
    queue.start()  # ... and a new one is open: it may subscribe at once
    queue.enqueue("sub", ["a", "b"])
    clock.advance(0)
    assert sent[-1] == ("sub", ["a", "b"])


def test_alone_topics_go_one_per_message() -> None:
    clock = Clock()
    sent: list[list[str]] = []
    queue = ControlQueue(clock, 100.0, 100, lambda kind, topics: sent.append(topics))
    queue.start()
    queue.enqueue("sub", ["a", "b"], alone=True)
    queue.enqueue("sub", ["c", "d"])
    clock.pump([0.01] * 5)
    assert sent == [["a"], ["b"], ["c", "d"]]


@pytest_twisted.ensureDeferred
async def test_refused_connections_back_off_then_reconnect_on_the_same_port() -> None:
    server = await FakeExchangeServer(reactor=reactor).start()
    rec = Recorder()
    conn = connection(server, rec)
    try:
        await conn.when_ready()
        port = server.port
        await server.refuse_connections()
        server.sessions[0].drop()
        await wait_for(lambda: len(rec.of(ReconnectScheduled)) >= 3, what="refused attempts")
        assert server.connections_accepted == 1
        server.accept_connections()
        await wait_for(lambda: len(rec.of(Connected)) == 2, what="the reconnect")
        assert server.port == port and server.connections_accepted == 2
    finally:
        await conn.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_swapped_certificate_is_refused_until_swapped_back(test_ca) -> None:
    server = await FakeExchangeServer(reactor=reactor, tls=test_ca.issue()).start()
    rec = Recorder()
    conn = Connection(
        server.ws_url(),
        SimpleWireRules(),
        on_message=rec.on_message,
        on_status=rec.on_status,
        reactor=reactor,
        options=FAST.replace(trust_root=test_ca.trust_root()),
    ).start()
    try:
        await conn.when_ready()
        good = server.tls
        server.tls = type(test_ca).generate("rogue").issue()
        await server.refuse_connections()
        server.accept_connections()
        server.sessions[0].drop()
        await wait_for(lambda: len(rec.of(TLSFailure)) >= 2, what="TLS failures")
        assert "not trusted" in rec.of(TLSFailure)[0].detail
        server.tls = good
        await server.refuse_connections()
        server.accept_connections()
        await wait_for(lambda: len(rec.of(Connected)) == 2, what="the reconnect")
        with pytest.raises(ValueError, match="TLS and plain text"):
            server.tls = None
            await server.refuse_connections()
            server.accept_connections()
    finally:
        server.tls = good
        server.accept_connections()
        await conn.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_binance_resync_snapshot_that_failed_is_asked_for_again() -> None:
    """A resync's REST snapshot failing for good used to leave the book stale for ever:
    the retry only ran for books never synced."""
    import txexchange
    from txexchange.testing.binance import FakeBinance

    fake = await FakeBinance(("BTC/USDT",), reactor=reactor, seed=2).start()
    client = txexchange.exchange("binance", reactor=reactor, urls=fake.urls, transport=FAST)
    try:
        fake.step(5)
        await client.fetch_order_book("BTC/USDT")
        fake.server.rest.fail_next(400, path="/api/v3/depth")  # not retried by REST
        fake.skip_next("BTC/USDT")
        for _ in range(300):
            fake.step(1)
            await sleep(0.01)
            book = client.books["BTC/USDT"]
            if client.stats.snapshot_requests >= 3 and not book.stale:
                break
        assert client.rest.stats.errors >= 1
        assert not client.books["BTC/USDT"].stale
        book = await client.fetch_order_book("BTC/USDT")
        bids, asks, _ = fake.true_book("BTC/USDT", nonce=book.nonce)
        assert (list(book.bids), list(book.asks)) == (bids, asks)
    finally:
        await client.close()
        await fake.stop()
