"""The web view's push channel: Server-Sent Events that coalesce, never queue.

Sits beside the service at the end of the flow.  Each browser holding
``/api/events`` open is a :class:`Subscriber`, registered with its HTTP
request as a streaming producer, so the transport pauses it when its write
buffer is not drained and resumes it when it is.  The stream's connection is set to
pause as soon as anything of a message is left unsent in user space, and its
kernel send buffer is kept small (64 kB, instead of growing to megabytes), so
what can pile up for a browser that stops reading is bounded by that, not by
how long it stalls.  A single timer
(:class:`EventBroadcaster`, several ticks a second) writes the *current*
state to every subscriber that is not paused and whose view changed since
the last message it got (or once a heartbeat, so ages keep moving).  A slow
reader therefore gets fewer, newer messages instead of a growing backlog:
while it is paused nothing is built or written for it, and when it resumes
the next tick sends the latest state.  The stream only reads the service.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from txexchange.codec import dumps
from txexchange.service.web.rates import RateMeter
from txexchange.service.web.snapshot import change_marker, stream_message

__all__ = ["EventBroadcaster", "Subscriber", "encode_event"]

log = Logger()

#: tells EventSource how long to wait before reconnecting after the stream ends
RETRY_MS = 2000


def encode_event(message: Any) -> bytes:
    """One SSE message (``data:`` line; the JSON never holds a newline)."""
    return b"data: " + dumps(message) + b"\n\n"


@implementer(IPushProducer)
class Subscriber:
    """One browser on the push channel: its choice of book and its flow control.

    :ivar paused: the transport's write buffer is full; nothing is written.
    :ivar sent: messages written.
    :ivar coalesced: ticks when the state had changed but the subscriber was
        paused, so that state was skipped (the next message carries a newer one).
    """

    def __init__(self, request: Request, selected: tuple[str, str] | None, depth: int) -> None:
        self.request = request
        self.selected = selected
        self.depth = depth
        self.paused = False
        self.closed = False
        self.sent = 0
        self.bytes = 0
        self.coalesced = 0
        self.last_marker: Any = None
        self.last_sent_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"<Subscriber {self.selected} paused={self.paused} sent={self.sent} "
            f"coalesced={self.coalesced}>"
        )

    # IPushProducer, called by the HTTP channel as its transport fills and drains
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.closed = True

    def write(self, payload: bytes, marker: Any, now: float) -> None:
        self.request.write(payload)
        self.sent += 1
        self.bytes += len(payload)
        self.last_marker = marker
        self.last_sent_at = now


def _tighten(transport: Any, send_buffer: int | None) -> None:
    """Make a stream's TCP transport pause its producer while any data is unsent."""
    if transport is None:
        return
    # FileDescriptor pauses its producer once more than bufferSize bytes wait in user
    # space; 0 means "as soon as a write is not yet in the kernel"
    transport.bufferSize = 0
    handle = getattr(transport, "getHandle", None)
    sock = handle() if handle is not None else None
    if send_buffer is not None and isinstance(sock, socket.socket):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)


class EventBroadcaster:
    """Writes the latest state to every ready subscriber every ``interval`` seconds.

    :param heartbeat: seconds after which an unchanged state is sent again.
    :param send_buffer: kernel send buffer (``SO_SNDBUF``) of a stream's socket
        in bytes; ``None`` leaves the system's (auto-tuned, up to megabytes).
    """

    def __init__(
        self,
        service: Any,
        rates: RateMeter | None,
        clock: Any,
        *,
        interval: float = 0.2,
        heartbeat: float = 1.0,
        send_buffer: int | None = 65536,
    ) -> None:
        self.service = service
        self.rates = rates
        self.clock = clock
        self.interval = interval
        self.heartbeat = heartbeat
        self.send_buffer = send_buffer
        self.subscribers: set[Subscriber] = set()
        self.ticks = 0
        self._loop: LoopingCall | None = None

    def add(self, request: Request, selected: tuple[str, str] | None, depth: int) -> Subscriber:
        """Start streaming to ``request``: headers, the first message now, then on ticks."""
        sub = Subscriber(request, selected, depth)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        _tighten(request.transport, self.send_buffer)
        request.registerProducer(sub, True)
        self.subscribers.add(sub)
        request.notifyFinish().addBoth(lambda _: self._gone(sub))
        request.write(b"retry: %d\n\n" % RETRY_MS)
        now = self.clock.seconds()
        sub.write(self._payload(sub, {}), change_marker(self.service), now)
        if self._loop is None:
            self._loop = LoopingCall(self.tick)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False).addErrback(
                lambda f: log.failure("web view push channel failed", f)
            )
        return sub

    def _gone(self, sub: Subscriber) -> None:
        sub.closed = True
        self.subscribers.discard(sub)
        if not self.subscribers:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _payload(self, sub: Subscriber, cache: dict[Any, bytes]) -> bytes:
        key = (sub.selected, sub.depth)
        payload = cache.get(key)
        if payload is None:
            message = stream_message(self.service, self.rates, sub.selected, sub.depth)
            payload = cache[key] = encode_event(message)
        return payload

    def tick(self) -> None:
        """One round: every subscriber that is ready and behind gets the state as it is now."""
        self.ticks += 1
        now = self.clock.seconds()
        marker = change_marker(self.service)
        cache: dict[Any, bytes] = {}  # one encoding per distinct view per tick
        for sub in list(self.subscribers):
            if sub.closed:
                continue
            dirty = marker != sub.last_marker
            if sub.paused:
                if dirty:
                    sub.coalesced += 1
                continue
            due = sub.last_sent_at is None or now - sub.last_sent_at >= self.heartbeat
            if dirty or due:
                sub.write(self._payload(sub, cache), marker, now)

    def close(self) -> None:
        """End every stream (the service is stopping) and the timer."""
        self._stop_loop()
        for sub in list(self.subscribers):
            sub.closed = True
            request = sub.request
            request.unregisterProducer()
            if not request.finished:  # a lost connection already left the set
                request.finish()
        self.subscribers.clear()
