"""Tests for the fake-exchange toolkit, driven by a plain Autobahn client and treq.

Everything runs on the real reactor over 127.0.0.1 sockets.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.server import Request

from txexchange.testing import (
    FakeExchangeServer,
    FakeSession,
    RecordedRequest,
    Response,
    ServerStopped,
    TestCA,
)

TIMEOUT = 5.0


# -- helpers -------------------------------------------------------------------------


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def within(d: Deferred[Any], seconds: float = TIMEOUT) -> Any:
    return await d.addTimeout(seconds, reactor)


class Client(WebSocketClientProtocol):
    """A bare WebSocket client recording what it sees, byte for byte."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[Client] = Deferred()
        self.ended: Deferred[tuple[bool, int | None]] = Deferred()
        self.messages: list[tuple[bytes, bool]] = []
        self.pongs: list[bytes] = []
        self.raw = b""
        self._unread: list[bytes] = []
        self._waiting: list[Deferred[bytes]] = []

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        super().dataReceived(data)

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        if self._waiting:
            self._waiting.pop(0).callback(payload)
        else:
            self._unread.append(payload)

    def onPong(self, payload: bytes) -> None:
        self.pongs.append(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: Any) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        self.ended.callback((wasClean, code))

    def next_message(self) -> Deferred[bytes]:
        """The oldest message not yet taken (waiting for one if need be)."""
        if self._unread:
            return succeed(self._unread.pop(0))
        d: Deferred[bytes] = Deferred()
        self._waiting.append(d)
        return d

    async def next_json(self) -> Any:
        return json.loads(await within(self.next_message()))

    def send_json(self, obj: Any) -> None:
        self.sendMessage(json.dumps(obj).encode())


async def connect(url: str, port: int, tls: Any = None) -> Client:
    factory = WebSocketClientFactory(url, reactor=reactor)
    factory.protocol = Client
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    client = await endpoint.connect(factory)
    # under TLS, connect() fires before the handshake; wait for the WebSocket open
    return await within(client.opened)


async def close_client(client: Client) -> None:
    if not client.ended.called:
        client.sendClose(1000)
    await within(client.ended)


def http_client(trust_root: Any = None) -> treq.client.HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=False)
    if trust_root is None:
        agent = Agent(reactor, pool=pool)
    else:
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust_root), pool=pool)
    return treq.client.HTTPClient(agent)


def active_delayed_calls() -> list[Any]:
    return [call for call in reactor.getDelayedCalls() if call.active()]


async def started(**kwargs: Any) -> FakeExchangeServer:
    server = FakeExchangeServer(reactor=reactor, **kwargs)
    return await server.start()


# -- WebSocket control protocol ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscribe_ack_and_subscriptions_recorded() -> None:
    server = await started()
    try:
        client = await connect(server.ws_url(), server.port)
        session = await within(server.when_session(1))
        assert session.path == "/ws"
        assert server.connections_accepted == 1

        client.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "x@depth"], "id": 7})
        assert await client.next_json() == {"result": None, "id": 7}
        assert session.subscriptions == {"btcusdt@trade", "x@depth"}
        assert server.received[0][0] is session
        assert server.received[0][1]["params"] == ["btcusdt@trade", "x@depth"]

        client.send_json({"method": "UNSUBSCRIBE", "params": ["x@depth"], "id": 8})
        assert await client.next_json() == {"result": None, "id": 8}
        client.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 9})
        assert await client.next_json() == {"result": ["btcusdt@trade"], "id": 9}
        assert [m["id"] for m in session.received] == [7, 8, 9]
        await close_client(client)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_refused_topic_gets_error_and_subscribes_nothing() -> None:
    server = await started()
    server.refuse_topics = {"bad@topic"}
    try:
        client = await connect(server.ws_url(), server.port)
        session = await within(server.when_session())
        client.send_json({"method": "SUBSCRIBE", "params": ["ok@trade", "bad@topic"], "id": 1})
        assert await client.next_json() == {"error": {"code": 2, "msg": "Invalid request"}, "id": 1}
        assert session.subscriptions == set()
        await close_client(client)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_reply_delay_holds_replies_back() -> None:
    server = await started()
    server.reply_delay = 0.3
    try:
        client = await connect(server.ws_url(), server.port)
        start = time.monotonic()
        client.send_json({"method": "SUBSCRIBE", "params": ["a"], "id": 1})
        assert await client.next_json() == {"result": None, "id": 1}
        assert time.monotonic() - start >= 0.25
        await close_client(client)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_custom_text_hook_and_non_json() -> None:
    server = await started()
    seen: list[Any] = []

    def on_text(session: FakeSession, message: Any) -> None:
        seen.append(message)
        if not server.handle_control(session, message):
            session.send({"echo": message})

    server.on_text = on_text
    try:
        client = await connect(server.ws_url("/ws?x=1&x=2"), server.port)
        session = await within(server.when_session())
        assert session.query == {"x": ["1", "2"]}
        client.sendMessage(b"hello, not json")
        assert await client.next_json() == {"echo": "hello, not json"}
        client.send_json({"method": "SUBSCRIBE", "params": ["t"], "id": 3})
        assert await client.next_json() == {"result": None, "id": 3}
        assert seen == ["hello, not json", {"method": "SUBSCRIBE", "params": ["t"], "id": 3}]
        await close_client(client)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_broadcast_reaches_subscribed_sessions_only() -> None:
    server = await started(ws_paths=("/ws", "/stream"))
    try:
        a = await connect(server.ws_url(), server.port)
        b = await connect(server.ws_url("/stream?streams=b"), server.port)
        first, second = await within(server.when_session(1)), await within(server.when_session(2))
        assert [first.path, second.path] == ["/ws", "/stream"]
        assert second.query == {"streams": ["b"]}
        assert server.sessions == [first, second]

        a.send_json({"method": "SUBSCRIBE", "params": ["topic-a"], "id": 1})
        await a.next_json()
        b.send_json({"method": "SUBSCRIBE", "params": ["topic-b"], "id": 1})
        await b.next_json()

        assert server.broadcast({"only": "a"}, topic="topic-a") == 1
        assert await a.next_json() == {"only": "a"}
        # b's next message is the untargeted one: it never got {"only": "a"}
        got_b = b.next_message()
        assert server.broadcast({"all": True}) == 2
        assert json.loads(await within(got_b)) == {"all": True}
        assert await a.next_json() == {"all": True}
        assert server.broadcast({"x": 1}, topic="nobody") == 0
        await close_client(a)
        await close_client(b)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_send_variants() -> None:
    server = await started()
    try:
        client = await connect(server.ws_url(), server.port)
        session = await within(server.when_session())
        got = client.next_message()
        session.send("plain text")
        assert await within(got) == b"plain text"
        got = client.next_message()
        session.send(b"\x01\x02", binary=True)
        await within(got)
        assert client.messages[-1] == (b"\x01\x02", True)
        got = client.next_message()
        session.send([1, "2"])
        assert await within(got) == b'[1,"2"]'
        assert client.messages[-1][1] is False
        got = client.next_message()
        session.send_garbage()
        payload = await within(got)
        assert payload == b"\x00not json{"
        with pytest.raises(ValueError):
            json.loads(payload)
        await close_client(client)
    finally:
        await server.stop()


# -- faults and close codes --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_close_code_recorded() -> None:
    server = await started()
    try:
        client = await connect(server.ws_url(), server.port)
        session = await within(server.when_session())
        client.sendClose(1000)
        assert await within(session.closed) == 1000
        assert await within(client.ended) == (True, 1000)
        assert server.close_codes == [1000]
        assert server.sessions == []
        assert session.is_open is False
        assert server.connections_accepted == 1
    finally:
        await server.stop()


@pytest.fixture(params=[False, True], ids=["ws", "wss"])
def tls(request: pytest.FixtureRequest, test_ca: TestCA) -> dict[str, Any]:
    """Server and client TLS settings: none, or the test CA's."""
    if not request.param:
        return {"server": None, "client": None}
    return {"server": test_ca.issue(), "client": test_ca.client_options()}


@pytest_twisted.ensureDeferred
async def test_drop_is_abnormal_closure_for_client(tls: dict[str, Any]) -> None:
    server = await started(tls=tls["server"])
    try:
        client = await connect(server.ws_url(), server.port, tls=tls["client"])
        session = await within(server.when_session())
        session.drop()
        was_clean, code = await within(client.ended)
        assert (was_clean, code) == (False, 1006)
        assert await within(session.closed) is None
        assert server.close_codes == [None]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_server_close_1001_seen_by_client(tls: dict[str, Any]) -> None:
    server = await started(tls=tls["server"])
    try:
        client = await connect(server.ws_url(), server.port, tls=tls["client"])
        session = await within(server.when_session())
        session.close(1001, "going away")
        assert await within(client.ended) == (True, 1001)
        assert client.remoteCloseReason == "going away"
        # the client answered the close with its own frame (Autobahn says 1000)
        assert await within(session.closed) == 1000
        with pytest.raises(ValueError):
            session.close(1006)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_stall_means_silence_until_stop(tls: dict[str, Any]) -> None:
    server = await started(tls=tls["server"])
    try:
        client = await connect(server.ws_url(), server.port, tls=tls["client"])
        session = await within(server.when_session())
        client.sendPing(b"before")
        await sleep(0.1)
        assert client.pongs == [b"before"]

        session.stall()
        client.sendPing(b"during")
        client.send_json({"method": "SUBSCRIBE", "params": ["a"], "id": 1})
        assert server.broadcast({"x": 1}) == 0
        await sleep(0.3)
        assert client.pongs == [b"before"]
        assert client.messages == []
        assert server.received == []
        assert session.is_open and not client.ended.called
    finally:
        await server.stop()
    assert await within(client.ended) == (False, 1006)
    assert server.close_codes == [None]


@pytest_twisted.ensureDeferred
async def test_truncated_frame_is_on_the_wire_but_never_completes() -> None:
    server = await started()
    try:
        client = await connect(server.ws_url(), server.port)
        session = await within(server.when_session())
        handshake_bytes = len(client.raw)
        session.send_truncated_frame(announced=300, actual=10)
        await sleep(0.2)
        wire = client.raw[handshake_bytes:]
        assert wire[:4] == b"\x81\x7e\x01\x2c"  # FIN+text, 16-bit length 300
        assert len(wire) == 4 + 10
        assert client.messages == []
        assert not client.ended.called
        assert session.stalled
    finally:
        await server.stop()
    assert (await within(client.ended))[1] == 1006


@pytest_twisted.ensureDeferred
async def test_send_raw_and_ping() -> None:
    server = await started()
    try:
        client = await connect(server.ws_url(), server.port)
        session = await within(server.when_session())
        got = client.next_message()
        session.send_raw(b"\x81\x02hi")  # a complete unmasked text frame, by hand
        assert await within(got) == b"hi"
        session.ping(b"p1")
        for _ in range(100):
            if session.pongs:
                break
            await sleep(0.01)
        assert session.pongs == [b"p1"]
        await close_client(client)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_max_message_size_closes_with_1009() -> None:
    server = await started(max_message_size=64)
    try:
        client = await connect(server.ws_url(), server.port)
        client.sendMessage(b"x" * 65)
        assert await within(client.ended) == (True, 1009)
        assert server.received == []
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_when_session_counts_every_session_and_stop_fails_waiters() -> None:
    server = await started()
    later = server.when_session(2)
    try:
        first = await connect(server.ws_url(), server.port)
        await close_client(first)
        assert not later.called
        second = await connect(server.ws_url(), server.port)
        session = await within(later)
        assert session.number == 2 and session.is_open
        assert (await within(server.when_session(1))).is_open is False
        await close_client(second)
        never = server.when_session(3)
    finally:
        await server.stop()
    with pytest.raises(ServerStopped):
        await never
    with pytest.raises(ServerStopped):
        await server.when_session(3)


@pytest_twisted.ensureDeferred
async def test_ws_url_rejects_paths_not_served() -> None:
    server = await started(ws_paths=("/ws",))
    try:
        assert server.ws_url("/ws/btcusdt@trade").endswith(f":{server.port}/ws/btcusdt@trade")
        with pytest.raises(ValueError):
            server.ws_url("/other")
    finally:
        await server.stop()
    await server.stop()  # a second stop is harmless


@pytest_twisted.ensureDeferred
async def test_global_reactor_by_default_and_port_before_start() -> None:
    server = FakeExchangeServer()
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    try:
        assert server.reactor is reactor
        client = await connect(server.ws_url(), server.port)
        await close_client(client)
    finally:
        await server.stop()
    with pytest.raises(RuntimeError):
        server.start()


@pytest_twisted.ensureDeferred
async def test_stop_leaves_nothing_pending() -> None:
    before = set(active_delayed_calls())  # whatever earlier tests left is not ours
    server = await started()
    server.reply_delay = 30.0
    server.rest.route("GET", "/slow", lambda request: {})
    server.rest.delay_next(30.0)
    http = http_client()
    client = await connect(server.ws_url(), server.port)
    session = await within(server.when_session())
    client.send_json({"method": "SUBSCRIBE", "params": ["a"], "id": 1})
    await within(server.when_received(1))
    session.send_later(30.0, {"late": True})
    slow = http.get(server.rest_url + "/slow")
    for _ in range(100):
        if server.rest.requests:
            break
        await sleep(0.01)
    session.close(1001)  # close handshake timer pending on the server side too
    await server.stop()
    await within(client.ended)
    with pytest.raises(Exception):  # noqa: B017 - any connection failure will do
        await within(slow)
    await sleep(0)
    assert [call for call in active_delayed_calls() if call not in before] == []
    assert server.sessions == []


# -- REST ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rest_route_records_requests_and_404() -> None:
    server = await started()
    server.rest.route("GET", "/api/v3/time", lambda request: {"serverTime": 123})

    def custom(request: Request) -> Response:
        return Response(201, "made", {"X-Thing": "yes"})

    server.rest.route("POST", "/api/v3/order", custom)
    server.rest.route("GET", "/deferred", lambda request: succeed(Response(202, {"ok": 1})))
    http = http_client()
    try:
        response = await http.get(
            server.rest_url + "/api/v3/time",
            params={"a": ["1", "2"]},
            headers={"X-MBX-APIKEY": "k"},
        )
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type") == ["application/json"]
        assert await response.json() == {"serverTime": 123}

        response = await http.post(server.rest_url + "/api/v3/order", data=b"symbol=X")
        assert response.code == 201
        assert response.headers.getRawHeaders("x-thing") == ["yes"]
        assert await response.content() == b"made"

        response = await http.get(server.rest_url + "/deferred")
        assert (response.code, await response.json()) == (202, {"ok": 1})

        response = await http.get(server.rest_url + "/nope")
        assert response.code == 404
        assert await response.json() == {"code": -1, "msg": "not found"}

        first = server.rest.requests[0]
        assert isinstance(first, RecordedRequest)
        assert (first.method, first.path, first.args) == ("GET", "/api/v3/time", {"a": ["1", "2"]})
        assert first.headers["x-mbx-apikey"] == "k"
        assert server.rest.requests[1].body == b"symbol=X"
        assert [r.path for r in server.rest.requests] == [
            "/api/v3/time",
            "/api/v3/order",
            "/deferred",
            "/nope",
        ]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_rest_fail_next_429_with_retry_after() -> None:
    server = await started()
    server.rest.route("GET", "/api/v3/depth", lambda request: {"lastUpdateId": 1})
    server.rest.fail_next(429, retry_after=2)
    server.rest.fail_next(418, path="/elsewhere")
    http = http_client()
    try:
        response = await http.get(server.rest_url + "/api/v3/depth")
        assert response.code == 429
        assert response.headers.getRawHeaders("retry-after") == ["2"]
        assert (await response.json())["code"] == -1
        response = await http.get(server.rest_url + "/api/v3/depth")
        assert response.code == 200
        assert await response.json() == {"lastUpdateId": 1}
        response = await http.get(server.rest_url + "/elsewhere")
        assert response.code == 418
        assert len(server.rest.requests) == 3
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_rest_fail_count_and_body() -> None:
    server = await started()
    server.rest.route("GET", "/x", lambda request: {"ok": True})
    server.rest.fail_next(503, count=2, body={"code": -1001, "msg": "busy"})
    http = http_client()
    try:
        codes = []
        for _ in range(3):
            response = await http.get(server.rest_url + "/x")
            codes.append((response.code, await response.json()))
        assert codes == [
            (503, {"code": -1001, "msg": "busy"}),
            (503, {"code": -1001, "msg": "busy"}),
            (200, {"ok": True}),
        ]
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_rest_delay_next() -> None:
    server = await started()
    server.rest.route("GET", "/x", lambda request: {"ok": True})
    server.rest.delay_next(0.3)
    http = http_client()
    try:
        start = time.monotonic()
        response = await http.get(server.rest_url + "/x")
        assert await response.json() == {"ok": True}
        assert time.monotonic() - start >= 0.25
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_rest_hang_next_never_answers_until_stop() -> None:
    server = await started()
    server.rest.route("GET", "/x", lambda request: {"ok": True})
    server.rest.hang_next()
    http = http_client()
    outcome: list[Any] = []
    http.get(server.rest_url + "/x").addBoth(outcome.append)
    try:
        await sleep(0.3)
        assert outcome == []
        assert len(server.rest.requests) == 1
        assert len(server.rest.hung_requests) == 1
        response = await http.get(server.rest_url + "/x")  # the fault was used up
        assert response.code == 200
        await response.content()
    finally:
        await server.stop()
    for _ in range(100):
        if outcome:
            break
        await sleep(0.01)
    assert isinstance(outcome[0], Failure)  # the connection was cut


@pytest_twisted.ensureDeferred
async def test_rest_handler_error_is_500() -> None:
    server = await started()

    def broken(request: Request) -> Any:
        raise RuntimeError("boom")

    server.rest.route("GET", "/x", broken)
    http = http_client()
    try:
        response = await http.get(server.rest_url + "/x")
        assert response.code == 500
        await response.content()
        response = await http.post(server.rest_url + "/x")
        assert response.code == 405
        await response.content()
    finally:
        await server.stop()


# -- TLS ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_with_the_right_ca(test_ca: TestCA) -> None:
    server = await started(tls=test_ca.issue())
    server.rest.route("GET", "/ping", lambda request: {})
    try:
        assert server.ws_url().startswith("wss://127.0.0.1:")
        assert server.rest_url.startswith("https://127.0.0.1:")
        options = optionsForClientTLS("127.0.0.1", trustRoot=test_ca.trust_root())
        client = await connect(server.ws_url(), server.port, tls=options)
        client.send_json({"method": "SUBSCRIBE", "params": ["a"], "id": 1})
        assert await client.next_json() == {"result": None, "id": 1}
        session = await within(server.when_session())
        session.close(1001)
        assert await within(client.ended) == (True, 1001)

        # the DNS name in the certificate verifies too
        localhost = test_ca.client_options("localhost")
        client = await connect(server.ws_url(), server.port, tls=localhost)
        await close_client(client)

        response = await http_client(test_ca.trust_root()).get(server.rest_url + "/ping")
        assert response.code == 200
        assert await response.json() == {}
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_tls_with_another_ca_fails(test_ca: TestCA) -> None:
    server = await started(tls=test_ca.issue())
    other = TestCA.generate("some other CA")
    try:
        options = optionsForClientTLS("127.0.0.1", trustRoot=other.trust_root())
        with pytest.raises(ConnectionError):
            await connect(server.ws_url(), server.port, tls=options)
        assert server.connections_accepted == 0
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_tls_wrong_name_and_expired_fail(test_ca: TestCA) -> None:
    server = await started(tls=test_ca.issue(["exchange.test"]))
    try:
        with pytest.raises(ConnectionError):
            await connect(server.ws_url(), server.port, tls=test_ca.client_options("127.0.0.1"))
    finally:
        await server.stop()
    server = await started(tls=test_ca.issue(expired=True))
    try:
        with pytest.raises(ConnectionError):
            await connect(server.ws_url(), server.port, tls=test_ca.client_options("127.0.0.1"))
        assert server.connections_accepted == 0
    finally:
        await server.stop()


def test_certificate_contents(test_ca: TestCA) -> None:
    from cryptography import x509

    issued = test_ca.issue(("127.0.0.1", "localhost"))
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert cert.issuer == x509.load_pem_x509_certificate(test_ca.ca_pem).subject
    assert b"PRIVATE KEY" in issued.key_pem
    assert isinstance(test_ca.trust_root(), Certificate)


def test_importing_the_toolkit_does_not_import_a_reactor() -> None:
    import subprocess
    import sys

    code = "import sys, txexchange.testing; sys.exit('twisted.internet.reactor' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest_twisted.ensureDeferred
async def test_conftest_fixture_hooks_and_binary(fake_exchange: FakeExchangeServer) -> None:
    server = fake_exchange
    opened: list[FakeSession] = []
    binary: list[bytes] = []
    server.on_session = opened.append
    server.on_binary = lambda session, payload: binary.append(payload)
    client = await connect(server.ws_url("/ws/btcusdt@trade"), server.port)
    session = await within(server.when_session())
    assert opened == [session]
    assert session.path == "/ws/btcusdt@trade"
    client.sendMessage(b"\x00\x01", isBinary=True)
    assert await within(server.when_received(1)) == (session, b"\x00\x01")
    assert binary == [b"\x00\x01"]
    await close_client(client)


@pytest_twisted.ensureDeferred
async def test_permessage_deflate_is_negotiated_when_enabled() -> None:
    from autobahn.websocket.compress import (
        PerMessageDeflateOffer,
        PerMessageDeflateResponse,
        PerMessageDeflateResponseAccept,
    )

    def accept(response: Any) -> Any:
        assert isinstance(response, PerMessageDeflateResponse)
        return PerMessageDeflateResponseAccept(response)

    for enabled in (False, True):
        server = await started(permessage_deflate=enabled)
        try:
            factory = WebSocketClientFactory(server.ws_url(), reactor=reactor)
            factory.protocol = Client
            factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=accept,
            )
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port)
            client = await within((await endpoint.connect(factory)).opened)
            assert bool(client.websocket_extensions_in_use) is enabled
            session = await within(server.when_session())
            session.send({"big": "x" * 2000})
            assert await client.next_json() == {"big": "x" * 2000}
            await close_client(client)
        finally:
            await server.stop()


@pytest_twisted.ensureDeferred
async def test_play_a_script_to_a_session_and_to_subscribers() -> None:
    server = await started()
    try:
        client = await connect(server.ws_url(), server.port)
        session = await within(server.when_session(1))
        started_at = reactor.seconds()
        sent = session.play([(0, {"n": 1}), (0.1, {"n": 2}), (0, '{"n": 3}')])
        assert await client.next_json() == {"n": 1}
        assert await client.next_json() == {"n": 2}
        assert await client.next_json() == {"n": 3}
        assert reactor.seconds() - started_at >= 0.09
        assert await within(sent) == 3
        client.send_json({"method": "SUBSCRIBE", "params": ["t"], "id": 1})
        await client.next_json()
        broadcast = server.play([(0.02, {"m": i}) for i in range(3)], topic="t")
        assert [await client.next_json() for _ in range(3)] == [{"m": 0}, {"m": 1}, {"m": 2}]
        assert await within(broadcast) == 3
        # a script still running when the server stops leaves no timer behind
        server.play([(30, {"late": True})])
        await close_client(client)
    finally:
        await server.stop()
    assert [c for c in active_delayed_calls() if "fire" in repr(c.func)] == []
