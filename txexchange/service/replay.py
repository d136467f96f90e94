"""Replaying a recording through the same client, state and sinks, with no network.

Sits where the network would be: :class:`ReplayFeedService` is a
:class:`~txexchange.service.feed.FeedService` whose clients are built exactly
as for a live run (same adapter, book sync, state, delivery and sinks) except
for three seams, all of which exist for tests too:

* the clients' reactor and clock is a :class:`ReplayReactor`, a
  ``MemoryReactorClock`` whose ``connectTCP``/``connectSSL`` open no socket:
  the connection's link is opened in place (the same ``Link.opened`` the
  WebSocket handshake calls) with a :class:`ReplaySocket` that swallows what
  the client sends and answers a close at once;
* the REST client's ``http_client`` is a :class:`ReplayHTTP`: the k-th request
  for a path and query gets the k-th recorded answer to it;
* a driver reads the recording in order, moves the virtual clock to each
  record's receive time (running every timer due on the way at its own time),
  and hands each frame to ``Link.frame`` and each REST answer to the request
  waiting for it.

So the client sees the same bytes at the same (virtual) times, in the same
order, and the books sync at the same point: a recording and its replay give
identical sink output.  ``speed="max"`` runs as fast as the sinks take it
(waiting for a sink's backend before its queue would coalesce or drop);
``speed="recorded"`` keeps the recording's pace in real time.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from txexchange.errors import ExchangeError
from txexchange.service.config import ExchangeSettings
from txexchange.service.feed import FeedService
from txexchange.service.recording import (
    RecordingError,
    RecordingReader,
    header_feeds,
    payload_of,
    read_header,
)
from txexchange.service.sinks import Sink

__all__ = [
    "SPEEDS",
    "ReplayError",
    "ReplayFeedService",
    "ReplayHTTP",
    "ReplayReactor",
    "ReplaySocket",
]

log = Logger()

SPEEDS = ("max", "recorded")

_PENDING: Any = object()

#: connection events after which a replay is no longer exact (the recording
#: does not hold reconnects or rollovers in a form that can be replayed)
_INEXACT_EVENTS = ("Disconnected", "RolledOver", "Stalled", "ReconnectScheduled")


class ReplayError(ExchangeError):
    """A recording cannot be replayed faithfully from this point."""


# -- sockets ------------------------------------------------------------------------


class ReplaySocket:
    """Stands in for the WebSocket protocol of an open link during a replay.

    Keeps what the client sends (``sent``) and answers a close frame with the
    end of the connection, on the next turn of ``later``'s reactor.
    """

    transport = None

    def __init__(self, link: Any, later: Any) -> None:
        self.link = link
        self._later = later
        self.sent: deque[bytes] = deque(maxlen=100)
        self.closed = False

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append(payload)

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.closed:
            self.closed = True
            self._later.callLater(0, self._gone, code)

    def _gone(self, code: int | None) -> None:
        self.link.closed(self, True, code, None)
        self.link.lost(Failure(ConnectionDone()), connected=True)


class _ReplayConnector:
    """The ``IConnector`` of a replayed connection attempt."""

    def __init__(self, reactor: ReplayReactor, factory: Any, url: str) -> None:
        self.reactor = reactor
        self.factory = factory
        self.url = url
        self.socket: ReplaySocket | None = None
        self.cancelled = False

    def connect(self) -> None:
        self.cancelled = False
        self.reactor._attempt(self)

    def stopConnecting(self) -> None:
        self.cancelled = True

    def disconnect(self) -> None:
        self.cancelled = True
        sock = self.socket
        if sock is not None:
            sock.sendClose(None)
        else:
            self.reactor.later.callLater(
                0,
                self.factory.link.lost,
                Failure(ConnectionDone("replay: connection dropped")),
                connected=False,
            )

    def getDestination(self) -> str:
        return self.url


class ReplayReactor(MemoryReactorClock):
    """A virtual clock whose outgoing connections open at once, without sockets.

    :param start: the virtual time to start at (the recording's start).
    :param later: the real reactor, which finishes close handshakes (so a
        replay can stop after its clock stopped moving).
    """

    def __init__(self, start: float, later: Any) -> None:
        super().__init__()
        self.rightNow = start
        self.later = later
        #: open sockets by URL (the link's URL)
        self.sockets: dict[str, list[ReplaySocket]] = {}

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> _ReplayConnector:
        connector = _ReplayConnector(self, factory, factory.link.url)
        self._attempt(connector)
        return connector

    def connectSSL(
        self,
        host: str,
        port: int,
        factory: Any,
        contextFactory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> _ReplayConnector:
        return self.connectTCP(host, port, factory, timeout, bindAddress)

    def _attempt(self, connector: _ReplayConnector) -> None:
        connector.factory.startedConnecting(connector)
        self.callLater(0, self._open, connector)

    def _open(self, connector: _ReplayConnector) -> None:
        if connector.cancelled:
            return
        link = connector.factory.link
        sock = ReplaySocket(link, self.later)
        connector.socket = sock
        self.sockets.setdefault(link.url, []).append(sock)
        link.opened(sock)

    def socket_for(self, url: str) -> ReplaySocket | None:
        """The one open socket of ``url`` (``None`` if there is none)."""
        socks = self.sockets.get(url)
        if not socks:
            return None
        live = [s for s in socks if not s.closed]
        if len(live) != len(socks):
            self.sockets[url] = socks = live
        if len(socks) > 1:
            raise ReplayError(
                f"{url} has {len(socks)} connections open; a replay can feed only one "
                "connection per URL (more than one connection's streams, or a rollover)"
            )
        return socks[0] if socks else None

    def advance_to(self, t: float) -> None:
        """Move to time ``t``, running every call due on the way at its own time."""
        while True:
            calls = self.getDelayedCalls()
            if not calls:
                break
            first = min(c.getTime() for c in calls)
            if first > t:
                break
            if first > self.rightNow:
                self.rightNow = first
            self.advance(0)
        if t > self.rightNow:
            self.rightNow = t
        self.advance(0)


# -- REST ----------------------------------------------------------------------------


class _ReplayResponse:
    """What ``treq.content`` needs of an ``IResponse``."""

    version = (b"HTTP", 1, 1)
    phrase = b""
    previousResponse = None
    request = None

    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.body = body
        self.length = len(body)
        self.headers = Headers()

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class ReplayHTTP:
    """A treq-compatible HTTP client answering from a recording.

    ``request()`` returns a Deferred that the replay driver fires with the
    recorded answer (:meth:`answer`) when it reaches it in the recording.
    Answers the recording reaches before the client asked for them are kept
    and handed out at once (the replay has gone out of step: counted).
    """

    def __init__(self) -> None:
        self._waiting: dict[str, deque[Deferred[Any]]] = {}
        self._early: dict[str, deque[_ReplayResponse]] = {}
        #: requests made; answers handed out of step
        self.requests = 0
        self.out_of_step = 0

    @staticmethod
    def key(method: str, path_and_query: str) -> str:
        return f"{method.upper()} {path_and_query}"

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        self.requests += 1
        parts = urlsplit(url)
        key = self.key(method, parts.path + (f"?{parts.query}" if parts.query else ""))
        early = self._early.get(key)
        if early:
            return succeed(early.popleft())
        d: Deferred[Any] = Deferred()
        self._waiting.setdefault(key, deque()).append(d)
        return d

    def answer(self, method: str, path_and_query: str, status: int, body: bytes) -> bool:
        """Hand a recorded answer to the request waiting for it; False if none waits."""
        key = self.key(method, path_and_query)
        response = _ReplayResponse(status, body)
        waiting = self._waiting.get(key)
        if waiting:
            waiting.popleft().callback(response)
            return True
        self.out_of_step += 1
        self._early.setdefault(key, deque()).append(response)
        return False


# -- the service ---------------------------------------------------------------------


class ReplayFeedService(FeedService):
    """Runs a recording's feeds from the recording instead of the network.

    The feeds and each exchange's URLs and client options come from the
    recording's header; ``sinks`` (and their depth) are this run's.
    :meth:`when_replayed` fires when the recording has been fed through.

    :param speed: ``"max"`` (as fast as possible) or ``"recorded"`` (the
        recording's pace).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sinks: Sequence[Sink],
        *,
        reactor: Any = None,
        speed: str = "max",
        header: Mapping[str, Any] | None = None,
        status_interval: float = 10.0,
        flush_interval: float = 1.0,
        close_timeout: float = 5.0,
        yield_every: int = 500,
    ) -> None:
        if speed not in SPEEDS:
            raise RecordingError(f"replay speed must be one of {', '.join(SPEEDS)}, not {speed!r}")
        self.path = path
        self.header = dict(header) if header is not None else read_header(path)
        exchanges = {
            name: ExchangeSettings(s.get("urls"), dict(s.get("options") or {}))
            for name, s in self.header["exchanges"].items()
        }
        super().__init__(
            header_feeds(self.header),
            sinks,
            reactor=reactor,
            exchanges=exchanges,
            status_interval=status_interval,
            flush_interval=flush_interval,
            close_timeout=close_timeout,
        )
        self.speed = speed
        self.yield_every = yield_every
        self.clock: ReplayReactor | None = None
        self._http: dict[str, ReplayHTTP] = {}
        self._driver: Deferred[None] | None = None
        self._outcome: Any = _PENDING
        self._replay_waiters: list[Deferred[None]] = []
        self._halt = False
        self._sleep: Deferred[None] | None = None
        self._warned_inexact = False
        #: what the replay fed through
        self.frames = 0
        self.answers = 0
        self.unrouted = 0
        self.finished = False

    def when_replayed(self) -> Deferred[None]:
        """Fires once the whole recording has been fed through (fails if it could not be)."""
        d: Deferred[None] = Deferred()
        if self._outcome is _PENDING:
            self._replay_waiters.append(d)
        else:
            self._hand(d)
        return d

    def _hand(self, d: Deferred[None]) -> None:
        if isinstance(self._outcome, Failure):
            d.errback(self._outcome)
        else:
            d.callback(None)

    @property
    def out_of_step(self) -> int:
        """REST answers the recording held before the replayed client asked for them."""
        return sum(h.out_of_step for h in self._http.values())

    # -- FeedService hooks ---------------------------------------------------------

    def _make_client(
        self, name: str, urls: Any, options: dict[str, Any], reactor: Any = None
    ) -> Any:
        """The live run's client, with the replay's clock, sockets and HTTP client."""
        from txexchange.transport import TransportOptions

        if self.clock is None:
            self.clock = ReplayReactor(self.header["t"], self.reactor)
        http = self._http[name] = ReplayHTTP()
        transport = options.pop("transport", None) or TransportOptions()
        # nothing can stall without a network; the recording's frames decide
        transport = transport.replace(stall_timeout=None, frame_tap=None)
        options.pop("rest_tap", None)
        return super()._make_client(
            name,
            urls,
            {**options, "http_client": http, "transport": transport, "clock": self.clock},
            reactor=self.clock,
        )

    async def _start_clients(self, by_exchange: Mapping[str, Any]) -> None:
        from twisted.internet.defer import ensureDeferred

        started = ensureDeferred(super()._start_clients(by_exchange))
        self._driver = ensureDeferred(self._drive())
        self._driver.addBoth(self._drove)
        await started

    async def _stop(self) -> None:
        self._halt = True
        if self._sleep is not None:
            self._sleep.cancel()
        await super()._stop()

    # -- the driver ------------------------------------------------------------------

    def _drove(self, result: Any) -> None:
        if isinstance(result, Failure):
            log.failure("replay of {path} failed", result, path=str(self.path))
        self._outcome = result
        waiters, self._replay_waiters = self._replay_waiters, []
        for d in waiters:
            self._hand(d)

    async def _drive(self) -> None:
        clock = self.clock
        assert clock is not None
        reader = RecordingReader(self.path)
        real = self.reactor
        reader.open()
        began = time.monotonic()
        t0 = float(self.header["t"])
        recorded = self.speed == "recorded"
        n = 0
        ended = False
        sinks = self.sinks
        try:
            while not self._halt and not ended:
                batch = await self._read(reader)
                if not batch:
                    break
                for record in batch:
                    if self._halt:
                        break
                    t = record.get("t")
                    kind = record.get("k")
                    if kind == "gap":
                        log.warn(
                            "replay: the recording lost {n} records at t={t} (its writer fell "
                            "behind); the replay stops here",
                            n=record.get("dropped"),
                            t=t,
                        )
                        ended = True
                        break
                    if not isinstance(t, int | float):
                        raise ReplayError(f"{self.path}: a {kind!r} record has no time")
                    if recorded:
                        wait = (t - t0) - (time.monotonic() - began)
                        if wait > 0.002:
                            self._sleep = deferLater(real, wait, lambda: None)
                            try:
                                await self._sleep
                            except CancelledError:
                                break
                            finally:
                                self._sleep = None
                    clock.advance_to(t)
                    if kind == "ws":
                        self._frame(record)
                    elif kind == "rest":
                        self._answer(record)
                    elif kind == "status":
                        self._status_record(record)
                    elif kind == "end":
                        ended = True
                        break
                    clock.advance_to(t)
                    for sink in sinks:
                        if sink.queue_depth:
                            await sink.when_idle()
                    n += 1
                    if not recorded and n % self.yield_every == 0:
                        await deferLater(real, 0, lambda: None)
        finally:
            reader.close()
        if not ended and not self._halt:
            log.warn(
                "replay: {path} ends without an end record ({why}); replayed what it holds",
                path=str(self.path),
                why=reader.truncated or "the recording service did not stop cleanly",
            )
        self.finished = True
        log.info(
            "replay of {path} finished: {f} frames and {r} REST answers in {s:.2f}s "
            "({o} answers out of step, {u} frames without a connection)",
            path=str(self.path),
            f=self.frames,
            r=self.answers,
            s=time.monotonic() - began,
            o=self.out_of_step,
            u=self.unrouted,
        )

    async def _read(self, reader: RecordingReader) -> list[dict[str, Any]]:
        get_pool = getattr(self.reactor, "getThreadPool", None)
        if get_pool is None:
            return reader.read_batch()
        from twisted.internet.threads import deferToThreadPool

        return await deferToThreadPool(self.reactor, get_pool(), reader.read_batch)

    def _frame(self, record: Mapping[str, Any]) -> None:
        assert self.clock is not None
        sock = self.clock.socket_for(record["u"])
        if sock is None:
            self.unrouted += 1
            if self.unrouted == 1:
                log.warn(
                    "replay: a frame for {url} arrived with no connection open to it; "
                    "the replay is out of step with the recording",
                    url=record["u"],
                )
            return
        self.frames += 1
        sock.link.frame(payload_of(record), bool(record.get("bin")))

    def _answer(self, record: Mapping[str, Any]) -> None:
        http = self._http.get(record.get("ex", ""))
        if http is None:
            return
        self.answers += 1
        answered = http.answer(record["m"], record["p"], int(record["s"]), payload_of(record))
        if not answered and http.out_of_step == 1:
            log.warn(
                "replay: the recording answers {m} {p} before the client asked for it; "
                "the replay is out of step with the recording",
                m=record["m"],
                p=record["p"],
            )

    def _status_record(self, record: Mapping[str, Any]) -> None:
        if record.get("event") in _INEXACT_EVENTS and not self._warned_inexact:
            self._warned_inexact = True
            log.warn(
                "replay: the recording has a {event} of {url} at t={t}; connection changes are "
                "not replayed, so the replay is exact only up to this point",
                event=record.get("event"),
                url=record.get("u"),
                t=record.get("t"),
            )
