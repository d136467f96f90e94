"""A fake exchange on 127.0.0.1: WebSocket sessions, REST routes and faults.

Part of the test toolkit (:mod:`txexchange.testing`); it stands where the
exchange stands in the flow, on the far side of real loopback sockets, so
the client under test runs its real transport (Autobahn, TLS, reconnects)
against it.  One :class:`twisted.web.server.Site` on one ephemeral port
serves both the WebSocket paths (Autobahn through
:class:`~autobahn.twisted.resource.WebSocketResource`) and a
:class:`~txexchange.testing.rest.FakeRest` for everything else.

Out of the box the server speaks the ``{"method", "params", "id"}`` control
protocol (Binance's market streams; :class:`~txexchange.transport.rules.SimpleWireRules`
on the client side).  Exchange-specific fakes subclass
:class:`FakeExchangeServer` or set :attr:`FakeExchangeServer.on_text`.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from txexchange.codec import DecodeError, dumps, loads
from txexchange.testing.rest import FakeRest
from txexchange.testing.tls import ServerCertificate

__all__ = ["FakeExchangeServer", "FakeSession", "ServerStopped"]

log = Logger()

#: close codes a server may not put in a close frame (RFC 6455, 7.4.1)
_RESERVED_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})
_STATE_OPEN = WebSocketServerProtocol.STATE_OPEN


class ServerStopped(Exception):
    """The fake server stopped while something was waiting on it."""


def _encode(payload: Any, binary: bool) -> tuple[bytes, bool]:
    """Frame payload and whether it goes out as a binary frame."""
    if isinstance(payload, bytes):
        return payload, binary
    if isinstance(payload, str):
        return payload.encode("utf-8"), binary
    return dumps(payload), binary


def _decode_message(payload: bytes) -> Any:
    try:
        return loads(payload)
    except DecodeError:
        return payload.decode("utf-8", "replace")


class _TimerCall:
    """One pending call of :class:`_ReactorTimer`; cancelling twice is harmless."""

    __slots__ = ("_call", "_owner")

    def __init__(self, owner: _ReactorTimer, call: Any) -> None:
        self._owner = owner
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()
        self._owner.calls.discard(self)

    def active(self) -> bool:
        return bool(self._call.active())


class _ReactorTimer:
    """Runs Autobahn's protocol timeouts on the server's own reactor.

    Autobahn schedules its handshake timeouts through ``factory._batched_timer``,
    which otherwise uses txaio's global loop; this stand-in uses the reactor
    the server was given and remembers every call so :meth:`cancel_all` can
    leave nothing pending when the server stops.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.calls: set[_TimerCall] = set()

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        def fire() -> None:
            self.calls.discard(timer_call)
            func(*args, **kw)

        timer_call = _TimerCall(self, self._reactor.callLater(delay, fire))
        self.calls.add(timer_call)
        return timer_call

    def cancel_all(self) -> None:
        for call in list(self.calls):
            call.cancel()


class _TrackedWrapper(ProtocolWrapper):
    """Wraps every accepted connection so the server can abort and await it."""

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.factory.connection_gone(self)


class _ConnectionTracker(WrappingFactory):
    protocol = _TrackedWrapper
    noisy = False

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)
        self._waiting: dict[ProtocolWrapper, list[Deferred[None]]] = {}

    def connection_gone(self, wrapper: ProtocolWrapper) -> None:
        for d in self._waiting.pop(wrapper, []):
            d.callback(None)

    def abort_all(self) -> Deferred[None]:
        waiting: list[Deferred[None]] = []
        for wrapper in list(self.protocols):
            d: Deferred[None] = Deferred()
            self._waiting.setdefault(wrapper, []).append(d)
            waiting.append(d)
            wrapper.transport.abortConnection()
        return gatherResults(waiting).addCallback(lambda _: None)


class _QuietSite(Site):
    """A Site that logs requests through :mod:`twisted.logger` at debug level."""

    noisy = False

    def log(self, request: Request) -> None:
        log.debug(
            "fake exchange HTTP {method} {uri} -> {code}",
            method=request.method,
            uri=request.uri,
            code=request.code,
        )


def _ws_prefix(prefixes: Iterable[str], path: str) -> str | None:
    """The WebSocket path ``path`` falls under (longest first), if any."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        base = prefix.rstrip("/")
        if path in (prefix, base) or path.startswith(base + "/"):
            return prefix
    return None


class _Root(Resource):
    """Sends WebSocket paths (and paths below them) to Autobahn, the rest to REST."""

    def __init__(self, rest: FakeRest, ws: dict[str, WebSocketResource]) -> None:
        super().__init__()
        self._rest = rest
        self._ws = ws

    def getChildWithDefault(self, name: bytes, request: Request) -> Any:
        prefix = _ws_prefix(self._ws, request.path.decode("utf-8", "replace"))
        return self._rest if prefix is None else self._ws[prefix]

    def render(self, request: Request) -> Any:
        return self._rest.render(request)


class _ServerProtocol(WebSocketServerProtocol):
    """Autobahn's server protocol, reporting to the :class:`FakeExchangeServer`."""

    session: FakeSession | None = None
    _path = "/"
    _query: dict[str, list[str]] = {}
    _close_frame_code: int | None = None
    _close_frame_seen = False

    def onConnect(self, request: Any) -> None:
        if self.factory.fake.reject_handshakes:
            from autobahn.websocket.types import ConnectionDeny

            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "handshakes refused (fault)")
        self._path = request.path
        self._query = {k: list(v) for k, v in request.params.items()}

    def onOpen(self) -> None:
        self.session = self.factory.fake._session_opened(self, self._path, self._query)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is not None:
            self.factory.fake._message(self.session, payload, isBinary)

    def onPong(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.pongs.append(payload)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> Any:
        self._close_frame_seen = True
        self._close_frame_code = 1005 if code is None else code
        return super().onCloseFrame(code, reasonRaw)

    def onClose(self, wasClean: bool, code: int | None, reason: Any) -> None:
        # Autobahn does not cancel its close-handshake timeout when the peer
        # drops the TCP connection instead of answering; do it here.
        if self.closeHandshakeTimeoutCall is not None:
            self.closeHandshakeTimeoutCall.cancel()
            self.closeHandshakeTimeoutCall = None
        if self.session is not None:
            client_code = self._close_frame_code if self._close_frame_seen else None
            self.factory.fake._session_closed(self.session, client_code)


class _ServerFactory(WebSocketServerFactory):
    protocol = _ServerProtocol
    noisy = False

    def __init__(self, fake: FakeExchangeServer, reactor: Any) -> None:
        super().__init__(reactor=reactor)
        self.fake = fake
        self._batched_timer = _ReactorTimer(reactor)


def _accept_deflate(offers: list[Any]) -> Any:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


SENT_KEPT = 10_000


class FakeSession:
    """One open WebSocket connection to a :class:`FakeExchangeServer`.

    Created by the server when the opening handshake completes; tests get it
    from :meth:`FakeExchangeServer.when_session` or
    :attr:`FakeExchangeServer.sessions` and use it to push data and inject
    faults on that one connection.
    """

    def __init__(
        self,
        server: FakeExchangeServer,
        protocol: _ServerProtocol,
        path: str,
        query: dict[str, list[str]],
        number: int,
    ) -> None:
        self.server = server
        #: the Autobahn server protocol behind this session
        self.protocol = protocol
        #: path of the upgrade request, e.g. ``"/stream"``
        self.path = path
        #: query of the upgrade request, e.g. ``{"streams": ["a/b"]}``
        self.query = query
        #: 1-based position among all sessions the server accepted
        self.number = number
        #: topics this session is subscribed to
        self.subscriptions: set[str] = set()
        #: every message the client sent on this session (decoded JSON, or
        #: ``str`` when not JSON, or ``bytes`` for binary frames)
        self.received: list[Any] = []
        #: every payload sent to the client through :meth:`send` or a broadcast
        #: the last ``SENT_KEPT`` payloads sent (bounded, so long runs stay flat)
        self.sent: deque[Any] = deque(maxlen=SENT_KEPT)
        #: payloads of the pongs the client answered our pings with
        self.pongs: list[bytes] = []
        #: fires with the client's close code when the session ends
        #: (``None`` if the TCP connection went without a close frame from it)
        self.closed: Deferred[int | None] = Deferred()
        #: the client's close code once closed (see :attr:`closed`)
        self.close_code: int | None = None
        self.is_open = True
        #: True after :meth:`stall` (or :meth:`send_truncated_frame`)
        self.stalled = False
        self._later: set[Any] = set()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<FakeSession #{self.number} {self.path} {state}>"

    @property
    def compression_in_use(self) -> bool:
        """Whether permessage-deflate was negotiated on this session."""
        return bool(getattr(self.protocol, "websocket_extensions_in_use", None))

    @property
    def transport(self) -> Any:
        return self.protocol.transport

    # -- sending ---------------------------------------------------------------

    def send(
        self, payload: str | bytes | dict[str, Any] | list[Any], *, binary: bool = False
    ) -> None:
        """Send one message.

        ``dict`` and ``list`` go out as a JSON text frame, ``str`` as a text
        frame, ``bytes`` as a text frame (its bytes unchanged) unless
        ``binary=True``.  Nothing is sent once the session is closed or
        stalled.
        """
        data, is_binary = _encode(payload, binary)
        self._send_encoded(payload, data, is_binary)

    def _send_encoded(self, payload: Any, data: bytes, is_binary: bool) -> bool:
        if not self.is_open or self.stalled or self.protocol.state != _STATE_OPEN:
            log.debug("fake exchange: not sending to {session}", session=self)
            return False
        self.protocol.sendMessage(data, isBinary=is_binary)
        self.sent.append(payload)
        return True

    def send_later(self, delay: float, payload: Any, *, binary: bool = False) -> None:
        """:meth:`send` after ``delay`` seconds (cancelled if the session ends first)."""

        def fire() -> None:
            self._later.discard(call)
            self.send(payload, binary=binary)

        call = self.server.reactor.callLater(delay, fire)
        self._later.add(call)

    def play(self, script: Iterable[tuple[float, Any]]) -> Deferred[int]:
        """Send a script of ``(delay, payload)`` pairs, each ``delay`` seconds after the
        previous one (0: in the same reactor turn); fires with how many were sent.

        Payloads are encoded as by :meth:`send`; a recording replays as
        ``session.play((gap, frame) for gap, frame in recorded)``.
        """
        return self.server._play(
            script, lambda payload: self._send_encoded(payload, *_encode(payload, False))
        )

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` to the TCP (or TLS) transport as is, bypassing framing."""
        if self.is_open:
            self.transport.write(data)

    def send_truncated_frame(self, *, announced: int = 1024, actual: int = 16) -> None:
        """Write a text frame header announcing ``announced`` payload bytes, send
        only ``actual`` of them, then :meth:`stall`."""
        if actual >= announced:
            raise ValueError("a truncated frame sends fewer bytes than it announces")
        if announced < 126:
            header = struct.pack("!BB", 0x81, announced)
        elif announced < 65536:
            header = struct.pack("!BBH", 0x81, 126, announced)
        else:
            header = struct.pack("!BBQ", 0x81, 127, announced)
        self.send_raw(header + (b'{"e":"partial",' + b"x" * actual)[:actual])
        self.stall()

    def send_garbage(self, data: bytes = b"\x00not json{") -> None:
        """Send a well-formed text frame whose payload is not JSON."""
        self.send(data)

    def ping(self, payload: bytes = b"") -> None:
        """Send a WebSocket ping; the client's pong lands in :attr:`pongs`."""
        if self.is_open and not self.stalled:
            self.protocol.sendPing(payload or None)

    # -- faults ----------------------------------------------------------------

    def drop(self) -> None:
        """Abort the TCP connection: no close frame, the client sees 1006."""
        if self.is_open:
            log.debug("fake exchange: dropping {session}", session=self)
            self.transport.abortConnection()

    def stall(self) -> None:
        """Go silent: stop reading from the socket and stop sending.

        The client's messages, pings and close frame are not read (so it
        gets no pongs and no close reply), and nothing is sent to it.  The
        connection stays open until :meth:`resume`, :meth:`drop` or the
        server stops.
        """
        if self.is_open and not self.stalled:
            log.debug("fake exchange: stalling {session}", session=self)
            self.stalled = True
            self.transport.pauseProducing()

    def resume(self) -> None:
        """Undo :meth:`stall` (a truncated frame already written stays broken)."""
        if self.is_open and self.stalled:
            self.stalled = False
            self.transport.resumeProducing()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the WebSocket closing handshake with ``code`` and ``reason``.

        Any code from 1000 to 4999 except the ones RFC 6455 reserves for
        "no close frame" (1005, 1006, 1015) and 1004; for an abnormal 1006
        closure use :meth:`drop`.
        """
        if not 1000 <= code <= 4999 or code in _RESERVED_CLOSE_CODES:
            raise ValueError(f"close code {code} cannot be sent (use drop() for 1006)")
        if not self.is_open:
            return
        reason_bytes = reason.encode("utf-8")[:123] if reason else None
        self.protocol.sendCloseFrame(code=code, reasonUtf8=reason_bytes, isReply=False)

    def _ended(self, client_code: int | None) -> None:
        self.is_open = False
        self.close_code = client_code
        for call in list(self._later):
            if call.active():
                call.cancel()
        self._later.clear()
        self.closed.callback(client_code)


TextHandler = Callable[[FakeSession, Any], None]


class FakeExchangeServer:
    """A fake exchange listening on 127.0.0.1 (WebSocket + REST on one port).

    ``reactor`` defaults to the global reactor, imported by :meth:`start`.
    ``tls`` (a :class:`~txexchange.testing.tls.ServerCertificate`) serves
    ``wss://`` and ``https://`` instead of ``ws://`` and ``http://``.
    ``ws_paths`` are the paths that accept WebSocket upgrades (each also
    covers the paths below it: ``"/ws"`` takes ``/ws/btcusdt@trade``); every
    other path goes to :attr:`rest`.  ``max_message_size`` caps the client's
    messages (bigger ones get close code 1009).  ``permessage_deflate``
    accepts the client's permessage-deflate offer.
    """

    def __init__(
        self,
        *,
        reactor: Any = None,
        tls: ServerCertificate | None = None,
        ws_paths: Sequence[str] = ("/ws",),
        max_message_size: int | None = None,
        permessage_deflate: bool = False,
    ) -> None:
        if isinstance(ws_paths, str):
            raise TypeError("ws_paths is a sequence of paths, not one string")
        for path in ws_paths:
            if not path.startswith("/"):
                raise ValueError(f"WebSocket paths start with '/': {path!r}")
        self._reactor = reactor
        self.tls = tls
        self.ws_paths: tuple[str, ...] = tuple(ws_paths)
        self.max_message_size = max_message_size
        self.permessage_deflate = permessage_deflate
        #: fault: accept TCP but refuse every WebSocket opening handshake (HTTP 503)
        self.reject_handshakes = False
        #: the REST half; register routes and faults on it
        self.rest = FakeRest(reactor=reactor)
        #: currently open WebSocket sessions, in connect order
        self.sessions: list[FakeSession] = []
        #: the client's close code for every session that ended, in order
        self.close_codes: list[int | None] = []
        #: every client message as ``(session, message)``, in arrival order
        self.received: list[tuple[FakeSession, Any]] = []
        #: called with ``(session, message)`` for each client text message
        #: instead of :meth:`handle_control`
        self.on_text: TextHandler | None = None
        #: called with ``(session, payload_bytes)`` for each binary message
        self.on_binary: Callable[[FakeSession, bytes], None] | None = None
        #: called with each new session as soon as it is open
        self.on_session: Callable[[FakeSession], None] | None = None
        #: topics whose SUBSCRIBE is refused by :meth:`handle_control`
        self.refuse_topics: set[str] = set()
        #: seconds by which control replies (:meth:`reply`) are held back
        self.reply_delay: float = 0.0
        self._history: list[FakeSession] = []
        self._script_calls: set[Any] = set()
        self._session_waiters: dict[int, list[Deferred[FakeSession]]] = {}
        self._received_waiters: dict[int, list[Deferred[tuple[FakeSession, Any]]]] = {}
        self._port: Any = None
        self._port_number: int | None = None
        self._tracker: _ConnectionTracker | None = None
        self._timer: _ReactorTimer | None = None
        self._state = "new"  # new -> listening -> stopping -> stopped
        self._stop_waiters: list[Deferred[None]] = []
        self._root: _Root | None = None
        self._site: Site | None = None

    def __repr__(self) -> str:
        where = f" {self.rest_url}" if self._port_number is not None else ""
        return f"<{type(self).__name__} {self._state}{where}>"

    # -- life cycle --------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        """The reactor the server runs on (the global one unless one was given)."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def start(self) -> Deferred[FakeExchangeServer]:
        """Listen on 127.0.0.1, on an ephemeral port; fires with the server."""
        if self._state != "new":
            raise RuntimeError(f"{self!r} cannot be started again")
        reactor = self.reactor
        self.rest.reactor = reactor
        factory = _ServerFactory(self, reactor)
        options: dict[str, Any] = {"failByDrop": False}
        if self.max_message_size is not None:
            options["maxFramePayloadSize"] = self.max_message_size
            options["maxMessagePayloadSize"] = self.max_message_size
        if self.permessage_deflate:
            options["perMessageCompressionAccept"] = _accept_deflate
        factory.setProtocolOptions(**options)
        self._timer = factory._batched_timer
        ws = WebSocketResource(factory)
        self._root = _Root(self.rest, {path: ws for path in self.ws_paths})
        self._site = _QuietSite(self._root, reactor=reactor)
        self._tracker = _ConnectionTracker(self._inner_factory())
        self._port = reactor.listenTCP(0, self._tracker, interface="127.0.0.1")
        self._port_number = int(self._port.getHost().port)
        self._state = "listening"
        log.debug("fake exchange listening on {url}", url=self.rest_url)
        return succeed(self)

    def _inner_factory(self) -> Any:
        # TLS sits inside the connection tracker, so that Autobahn sees the real
        # TLS transport (it asks it for the channel id and peer certificate).
        if self.tls is None:
            return self._site
        return TLSMemoryBIOFactory(self.tls.server_options(), False, self._site)

    def refuse_connections(self) -> Deferred[None]:
        """Fault: stop listening, so that new TCP connections are refused.

        Open sessions stay open.  :meth:`accept_connections` listens again on
        the same port.  Fires once the port is closed.
        """
        if self._state != "listening":
            raise RuntimeError(f"{self!r} is not listening")
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)

    def accept_connections(self) -> None:
        """Listen again on the same port after :meth:`refuse_connections`.

        New connections get the current :attr:`tls` certificate, so a test can
        swap it meanwhile (e.g. for one the client does not trust); it cannot
        switch between TLS and plain text, as the URLs would change.
        """
        if self._state != "listening" or self._port is not None:
            return
        assert self._tracker is not None
        if isinstance(self._tracker.wrappedFactory, TLSMemoryBIOFactory) != (self.tls is not None):
            raise ValueError("accept_connections() cannot switch between TLS and plain text")
        self._tracker.wrappedFactory = self._inner_factory()
        self._port = self.reactor.listenTCP(self.port, self._tracker, interface="127.0.0.1")

    def stop(self) -> Deferred[None]:
        """Drop every connection, stop listening and cancel every timer.

        Sessions end without a close frame (the client sees 1006), requests
        held by faults are cut off.  Fires once all that is done; calling it
        again (or before :meth:`start`) is harmless.
        """
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        if self._state == "listening":
            self._state = "stopping"
            Deferred.fromCoroutine(self._stop()).addBoth(self._stopped)
        return d

    async def _stop(self) -> None:
        assert self._tracker is not None and self._timer is not None
        self.rest.cancel_pending()
        for call in self._script_calls:
            if call.active():
                call.cancel()
        self._script_calls.clear()
        port, self._port = self._port, None
        listening = succeed(None) if port is None else maybeDeferred(port.stopListening)
        await self._tracker.abort_all()
        await listening
        self._timer.cancel_all()
        for waiters in [*self._session_waiters.values(), *self._received_waiters.values()]:
            for d in waiters:
                d.errback(ServerStopped("the fake exchange server stopped"))
        self._session_waiters.clear()
        self._received_waiters.clear()

    def _stopped(self, result: Any) -> None:
        self._state = "stopped"
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)
        log.debug("fake exchange stopped")

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port_number is None:
            raise RuntimeError("the fake exchange server has not been started")
        return self._port_number

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with TLS), without a trailing slash."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/ws") -> str:
        """The WebSocket URL for ``path`` (which may carry a query string)."""
        bare = path.split("?", 1)[0]
        if _ws_prefix(self.ws_paths, bare) is None:
            raise ValueError(f"{path!r} is not under any WebSocket path {self.ws_paths}")
        scheme = "wss" if self.tls is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    # -- sessions ------------------------------------------------------------------

    @property
    def connections_accepted(self) -> int:
        """How many WebSocket handshakes completed since the server started."""
        return len(self._history)

    @property
    def all_sessions(self) -> list[FakeSession]:
        """Every session ever accepted, open or not, in connect order."""
        return list(self._history)

    def when_session(self, n: int = 1) -> Deferred[FakeSession]:
        """Fire with the ``n``-th session (1-based, counting every session ever
        accepted) once it is open; at once if it already was."""
        if n < 1:
            raise ValueError("sessions are counted from 1")
        if n <= len(self._history):
            return succeed(self._history[n - 1])
        return self._wait(self._session_waiters, n)

    def when_received(self, count: int = 1) -> Deferred[tuple[FakeSession, Any]]:
        """Fire with ``(session, message)`` once :attr:`received` holds ``count``
        messages (the ``count``-th one); at once if it already does."""
        if count < 1:
            raise ValueError("messages are counted from 1")
        if count <= len(self.received):
            return succeed(self.received[count - 1])
        return self._wait(self._received_waiters, count)

    def _wait(self, table: dict[int, list[Deferred[Any]]], n: int) -> Deferred[Any]:
        if self._state in ("stopping", "stopped"):
            return fail(ServerStopped("the fake exchange server is not running"))

        def cancel(d: Deferred[Any]) -> None:
            waiters = table.get(n, [])
            if d in waiters:
                waiters.remove(d)

        d: Deferred[Any] = Deferred(cancel)
        table.setdefault(n, []).append(d)
        return d

    def play(self, script: Iterable[tuple[float, Any]], topic: str | None = None) -> Deferred[int]:
        """:meth:`broadcast` a script of ``(delay, payload)`` pairs (to ``topic``'s
        subscribers, if given), each ``delay`` seconds after the previous one;
        fires with how many payloads were sent to at least one session."""
        return self._play(script, lambda payload: self.broadcast(payload, topic) > 0)

    def _play(
        self, script: Iterable[tuple[float, Any]], send: Callable[[Any], Any]
    ) -> Deferred[int]:
        steps = iter(script)
        done: Deferred[int] = Deferred()
        sent = 0

        def next_step() -> None:
            nonlocal sent
            for delay, payload in steps:
                if delay > 0:
                    call = self.reactor.callLater(delay, fire, payload)
                    self._script_calls.add(call)
                    return
                sent += bool(send(payload))
            done.callback(sent)

        def fire(payload: Any) -> None:
            nonlocal sent
            self._script_calls.difference_update(
                c for c in list(self._script_calls) if not c.active()
            )
            sent += bool(send(payload))
            next_step()

        next_step()
        return done

    def broadcast(self, payload: Any, topic: str | None = None, *, binary: bool = False) -> int:
        """Send ``payload`` to every open session (subscribed to ``topic``, if
        given); returns how many sessions got it.  Stalled sessions do not."""
        data, is_binary = _encode(payload, binary)
        sent = 0
        for session in list(self.sessions):
            if topic is not None and topic not in session.subscriptions:
                continue
            if session._send_encoded(payload, data, is_binary):
                sent += 1
        return sent

    def _session_opened(
        self, protocol: _ServerProtocol, path: str, query: dict[str, list[str]]
    ) -> FakeSession:
        session = FakeSession(self, protocol, path, query, len(self._history) + 1)
        self._history.append(session)
        self.sessions.append(session)
        log.debug("fake exchange: {session} open", session=session)
        if self.on_session is not None:
            maybeDeferred(self.on_session, session).addErrback(
                lambda f: log.failure("fake exchange on_session hook failed", f)
            )
        for d in self._session_waiters.pop(session.number, []):
            d.callback(session)
        return session

    def _session_closed(self, session: FakeSession, client_code: int | None) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        self.close_codes.append(client_code)
        log.debug(
            "fake exchange: {session} closed, client code {code}", session=session, code=client_code
        )
        session._ended(client_code)

    def _message(self, session: FakeSession, payload: bytes, is_binary: bool) -> None:
        if session.stalled:
            return
        message: Any = payload if is_binary else _decode_message(payload)
        session.received.append(message)
        self.received.append((session, message))
        handler: Callable[..., Any] | None
        if is_binary:
            handler, argument = self.on_binary, payload
        else:
            handler, argument = self.on_text or self.handle_control, message
        if handler is not None:
            maybeDeferred(handler, session, argument).addErrback(
                lambda f: log.failure(
                    "fake exchange message handler failed on {message!r}", f, message=message
                )
            )
        for d in self._received_waiters.pop(len(self.received), []):
            d.callback((session, message))

    # -- the default control protocol --------------------------------------------

    def reply(self, session: FakeSession, message: Any) -> None:
        """Answer a client request, :attr:`reply_delay` seconds late if set."""
        if self.reply_delay > 0:
            session.send_later(self.reply_delay, message)
        else:
            session.send(message)

    def handle_control(self, session: FakeSession, message: Any) -> bool:
        """The default text handler: SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS.

        Requests look like ``{"method": "SUBSCRIBE", "params": [...], "id": n}``
        and get ``{"result": null, "id": n}`` (LIST_SUBSCRIPTIONS: the sorted
        topic list as ``result``).  A SUBSCRIBE naming a topic in
        :attr:`refuse_topics`, or any malformed or unknown request, gets
        ``{"error": {"code": 2, "msg": "Invalid request"}, "id": n}`` and
        changes nothing.  Returns whether ``message`` was a control request;
        a custom :attr:`on_text` can call this to keep the default behaviour.
        """
        if not isinstance(message, dict) or "method" not in message:
            return False
        method = message.get("method")
        request_id = message.get("id")
        params = message.get("params", [])
        topics = [str(t) for t in params] if isinstance(params, list) else None
        invalid = {"error": {"code": 2, "msg": "Invalid request"}, "id": request_id}
        if method == "SUBSCRIBE" and topics is not None:
            if self.refuse_topics.intersection(topics):
                self.reply(session, invalid)
            else:
                session.subscriptions.update(topics)
                self.reply(session, {"result": None, "id": request_id})
        elif method == "UNSUBSCRIBE" and topics is not None:
            session.subscriptions.difference_update(topics)
            self.reply(session, {"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            self.reply(session, {"result": sorted(session.subscriptions), "id": request_id})
        else:
            self.reply(session, invalid)
        return True
