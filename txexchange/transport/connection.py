"""A logical exchange connection: topics, life cycle, keep-alive, rollover, shutdown.

Sits at the top of the transport layer; adapters and the client use it.  One
``Connection`` carries many opaque topics to one URL and stays connected
through drops, stalls and the exchange's planned cuts:

* its life cycle is an explicit state machine (:class:`State`, with the legal
  transitions in ``_TRANSITIONS``), observable as ``state`` and through status
  events, with a readiness Deferred (:meth:`when_ready`);
* after every reconnect it subscribes to all its topics again through the
  link's rate-limited control queue;
* a stall watchdog replaces a connection that has gone silent, and the
  adapter's application-level heartbeat is sent when idle;
* before the exchange's connection-age limit (and on demand, e.g. a
  maintenance notice) it opens a replacement, subscribes on it, and switches
  over at the first message both carry, so consumers see every message once;
* :meth:`close` stops reconnecting, sends a 1000 close frame and fires once
  the socket is gone, with every timer cancelled.
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.errors import (
    ClientClosed,
    ConnectionClosed,
    ExchangeError,
    RetriesExhausted,
    SubscriptionError,
    TLSVerificationError,
)
from txexchange.transport.control import Kind
from txexchange.transport.link import Link
from txexchange.transport.options import TransportOptions
from txexchange.transport.rules import WireRules
from txexchange.transport.stats import ConnectionStats
from txexchange.transport.status import (
    Connected,
    ControlFailed,
    Disconnected,
    FrameRejected,
    ReconnectScheduled,
    RetriesExhaustedEvent,
    RolledOver,
    Stalled,
    StatusEvent,
    TLSFailure,
)
from txexchange.transport.websocket import describe_tls_failure, parse_ws_url

__all__ = ["Connection", "State"]

log = Logger()


class State(enum.Enum):
    """Life-cycle states of a :class:`Connection`."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXHAUSTED = "exhausted"


_S = State
#: (state, input) -> next state.  Anything else is a bug and raises.
_TRANSITIONS: dict[tuple[State, str], State] = {
    (_S.IDLE, "start"): _S.CONNECTING,
    (_S.CONNECTING, "opened"): _S.OPEN,
    (_S.CONNECTING, "lost"): _S.BACKOFF,
    (_S.OPEN, "lost"): _S.BACKOFF,
    (_S.BACKOFF, "attempt"): _S.CONNECTING,
    (_S.CONNECTING, "attempt"): _S.CONNECTING,
    (_S.CONNECTING, "give_up"): _S.EXHAUSTED,
    (_S.OPEN, "give_up"): _S.EXHAUSTED,
    (_S.IDLE, "stop"): _S.STOPPED,
    (_S.CONNECTING, "stop"): _S.STOPPING,
    (_S.OPEN, "stop"): _S.STOPPING,
    (_S.BACKOFF, "stop"): _S.STOPPING,
    (_S.EXHAUSTED, "stop"): _S.STOPPED,
    (_S.STOPPING, "stop"): _S.STOPPING,
    (_S.STOPPED, "stop"): _S.STOPPED,
    (_S.STOPPING, "closed"): _S.STOPPED,
}


class _Rollover:
    """Book-keeping of one make-before-break switch to a replacement link."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.ready = False  # replacement subscribed to every topic
        self.buffer: list[tuple[Hashable, Any]] = []
        self.keys_after_ready: set[Hashable] = set()
        self.delivered: set[Hashable] = set()
        self.waiters: list[Deferred[None]] = []
        self.timeout: Any = None


class Connection:
    """Many topics over one WebSocket URL, kept connected.

    :param url: ``ws://`` or ``wss://`` URL (wss is always verified).
    :param rules: the adapter's :class:`~txexchange.transport.rules.WireRules`.
    :param on_message: called with each decoded data message, in order.
    :param on_status: called with each :class:`~txexchange.transport.status.StatusEvent`.
    :param reactor: used for sockets (and time, unless ``clock`` is given).
    :param clock: an ``IReactorTime`` for every timer (tests pass a ``Clock``).
    :param rng: random source of the backoff jitter.
    """

    def __init__(
        self,
        url: str,
        rules: WireRules,
        *,
        on_message: Callable[[Any], None],
        on_status: Callable[[StatusEvent], None] | None = None,
        reactor: Any,
        clock: Any = None,
        options: TransportOptions | None = None,
        rng: random.Random | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        parse_ws_url(url)  # validate early, with a clear error
        self.url = url
        self.rules = rules
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.options = options or TransportOptions()
        self.stats = ConnectionStats(self.clock)
        self._on_message = on_message
        self._on_status = on_status
        self._rng = rng or random.Random()
        self._headers = headers
        self._state = State.IDLE
        self._topics: dict[str, list[Deferred[None]]] = {}  # topic -> waiters for its ack
        self._acked: set[str] = set()
        self._unsub_waiters: dict[str, list[Deferred[None]]] = {}
        self._ready_waiters: list[Deferred[Connection]] = []
        self._stop_waiters: list[Deferred[None]] = []
        self._request_id = 0
        self._active: Link | None = None
        self._rollover: _Rollover | None = None
        self._links: list[Link] = []
        self._watchdog: Any = None
        self._age_timer: Any = None
        self._stop_timer: Any = None
        self._last_failure: str | None = None
        self._failure: ExchangeError | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.url} {self._state.value} topics={len(self._topics)}>"

    # -- public surface --------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def topics(self) -> frozenset[str]:
        """Every topic this connection holds (acknowledged or not)."""
        return frozenset(self._topics)

    @property
    def is_open(self) -> bool:
        return self._state is State.OPEN

    def start(self) -> Connection:
        """Begin connecting (idempotent)."""
        if self._state is State.IDLE:
            self._fire("start")
            self._connect_new("primary")
        return self

    def when_ready(self) -> Deferred[Connection]:
        """Fires when the connection is open; fails if it gives up or is closed."""
        if self._state is State.OPEN:
            return succeed(self)
        if self._failure is not None:
            return fail(self._failure)
        if self._state in (State.STOPPING, State.STOPPED):
            return fail(ClientClosed(f"connection to {self.url} is closed"))
        d: Deferred[Connection] = Deferred()
        self._ready_waiters.append(d)
        return d

    def subscribe(self, topics: Iterable[str]) -> Deferred[None]:
        """Hold ``topics``; fires once the exchange acknowledged all of them.

        Topics already held are not sent again.  After a reconnect every held
        topic is subscribed again automatically.
        """
        topics = list(dict.fromkeys(topics))
        if self._failure is not None:
            return fail(self._failure)
        if self._state in (State.STOPPING, State.STOPPED):
            return fail(ClientClosed(f"connection to {self.url} is closed"))
        waits: list[Deferred[None]] = []
        new: list[str] = []
        for t in topics:
            if t in self._acked:
                continue
            d: Deferred[None] = Deferred()
            waits.append(d)
            if t not in self._topics:
                self._topics[t] = []
                new.append(t)
            self._topics[t].append(d)
        if new:
            self._enqueue_all("sub", new)
        if not waits:
            return succeed(None)
        return gatherResults(waits, consumeErrors=True).addCallbacks(
            lambda _: None,
            lambda f: f.value.subFailure,  # type: ignore[attr-defined]
        )

    def unsubscribe(self, topics: Iterable[str]) -> Deferred[None]:
        """Release ``topics``; fires once the exchange acknowledged (or at once if unsent)."""
        waits: list[Deferred[None]] = []
        gone: list[str] = []
        for t in dict.fromkeys(topics):
            waiters = self._topics.pop(t, None)
            if waiters is None:
                continue
            for w in waiters:
                w.errback(SubscriptionError(f"{t} was unsubscribed before it was acknowledged"))
            if t in self._acked:
                self._acked.discard(t)
                d: Deferred[None] = Deferred()
                self._unsub_waiters.setdefault(t, []).append(d)
                waits.append(d)
            gone.append(t)
        if gone:
            self._enqueue_all("unsub", gone)
        if not waits or self._state is not State.OPEN:
            for t in gone:
                for w in self._unsub_waiters.pop(t, []):
                    w.callback(None)
            return succeed(None)
        return gatherResults(waits).addCallback(lambda _: None)

    def send(self, payload: str | bytes) -> None:
        """Send a raw frame (adapter requests) on the active link."""
        if self._active is None or not self._active.is_open:
            raise ConnectionClosed(f"connection to {self.url} is not open ({self._state.value})")
        self._active.send(payload)

    def rollover(self) -> Deferred[None]:
        """Replace the socket without a gap: connect, subscribe, switch, close the old one.

        Fires when the replacement has taken over.  Used before the
        exchange's connection-age limit and on maintenance notices.
        """
        if self._rollover is not None:
            d: Deferred[None] = Deferred()
            self._rollover.waiters.append(d)
            return d
        if self._state is not State.OPEN:
            return succeed(None)
        link = self._new_link("replacement")
        ro = _Rollover(link)
        self._rollover = ro
        d = Deferred()
        ro.waiters.append(d)
        log.info("rolling over {url} to a fresh connection", url=self.url)
        link.connect()
        return d

    def close(self) -> Deferred[None]:
        """Stop reconnecting, close every socket with code 1000, cancel every timer.

        Fires once every socket is gone (after the closing handshake, or
        after ``close_timeout`` if the server does not answer).
        """
        if self._state is State.STOPPED:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stop_waiters.append(d)
        if self._state is State.STOPPING:
            return d
        self._fire("stop")
        self._cancel_timers()
        self._fail_waiters(ClientClosed(f"connection to {self.url} was closed"))
        if self._rollover is not None:
            for w in self._rollover.waiters:
                w.errback(ClientClosed("closed during rollover"))
            self._rollover = None
        pending = [link for link in self._links if not link.shutdown(1000)]
        self._links = pending
        if pending:
            self._stop_timer = self.clock.callLater(
                self.options.close_timeout * 2, self._force_close
            )
        else:
            self._finish_stop()
        return d

    # -- state machine ---------------------------------------------------

    def _fire(self, event: str) -> State:
        try:
            new = _TRANSITIONS[(self._state, event)]
        except KeyError:
            raise AssertionError(f"no transition from {self._state} on {event!r}") from None
        self._state = new
        return new

    def _status(self, event: StatusEvent) -> None:
        if self._on_status is None:
            return
        try:
            self._on_status(event)
        except Exception:  # noqa: BLE001 - a listener bug must not break the feed
            log.failure("status listener raised on {event!r}", event=event)

    # -- links -----------------------------------------------------------

    def _new_link(self, role: str) -> Link:
        link = Link(self, self.url, role=role, rng=self._rng, headers=self._headers)
        self._links.append(link)
        return link

    def _connect_new(self, role: str) -> None:
        link = self._new_link(role)
        self._active = link
        link.connect()

    def _next_request_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def _link_attempting(self, link: Link) -> None:
        if link is self._active and self._state is State.BACKOFF:
            self._fire("attempt")

    def _link_opened(self, link: Link) -> None:
        if self._state in (State.STOPPING, State.STOPPED):
            link.shutdown(1000)
            return
        topics = list(self._topics)
        if link is self._active:
            self.stats.connects += 1
            attempt = link.factory.retries
            self._fire("opened")
            self._acked.clear()
            if topics:
                link.queue.enqueue("sub", topics)
            log.info("connected to {url} ({n} topics)", url=self.url, n=len(topics))
            self._status(Connected(self.url, attempt))
            self._start_timers(link)
            waiters, self._ready_waiters = self._ready_waiters, []
            for w in waiters:
                w.callback(self)
        elif self._rollover is not None and link is self._rollover.link:
            if topics:
                link.queue.enqueue("sub", topics)
            else:
                self._rollover_ready()

    def _link_lost(self, link: Link, reason: Failure, was_open: bool) -> None:
        tls = describe_tls_failure(reason)
        code = link.close_code
        text = tls or (link.close_reason or reason.getErrorMessage())
        self._last_failure = text
        if tls:
            log.error("TLS failure connecting to {url}: {detail}", url=self.url, detail=tls)
            self.stats.errors += 1
            self._status(TLSFailure(self.url, tls))
        if self._state is State.STOPPING:
            if link in self._links:
                self._links.remove(link)
            if not self._links:
                self._finish_stop()
            return
        ro = self._rollover
        if ro is not None and link is ro.link:
            log.warn(
                "rollover connection to {url} failed: {why}; keeping the old one",
                url=self.url,
                why=text,
            )
            self._abandon_rollover(link)
            return
        if link is not self._active:
            # an old link after a rollover, closing as planned
            if link in self._links and link.shutting_down:
                self._links.remove(link)
            return
        if was_open:
            self._stop_watchdog()
            self._cancel_age_timer()
            clean = code == 1000
            log.info("disconnected from {url}: {why}", url=self.url, why=text)
            self._status(Disconnected(self.url, text, code, clean))
            ro = self._rollover
            if ro is not None:
                if ro.ready:
                    # the replacement is subscribed: it takes over at once
                    self._cutover(matched=False)
                    return
                self._abandon_rollover(ro.link)
        else:
            self.stats.errors += 1
        self._acked.clear()
        # unsubscribes in flight are done: the next connection does not subscribe them
        unsubs, self._unsub_waiters = self._unsub_waiters, {}
        for waiters in unsubs.values():
            for w in waiters:
                w.callback(None)
        delay = link.retry()
        if delay is None:
            self._give_up(link, tls)
            return
        self.stats.reconnects += 1
        if self._state is not State.BACKOFF:
            self._fire("lost")
        log.info(
            "reconnecting to {url} in {delay:.2f}s (attempt {n})",
            url=self.url,
            delay=delay,
            n=link.factory.retries,
        )
        self._status(ReconnectScheduled(self.url, delay, link.factory.retries))

    def _give_up(self, link: Link, tls: str | None) -> None:
        retries = link.factory.retries - 1
        if tls:
            err: ExchangeError = TLSVerificationError(f"{self.url}: {tls}")
        else:
            err = RetriesExhausted(self.url, retries, self._last_failure)
        self._failure = err
        self._fire("give_up")
        self._cancel_timers()
        log.error("{err}", err=err)
        # the event first, then what it causes (failed Deferreds)
        self._status(RetriesExhaustedEvent(self.url, err))
        self._fail_waiters(err)

    def _fail_waiters(self, err: Exception) -> None:
        waiters, self._ready_waiters = self._ready_waiters, []
        for w in waiters:
            w.errback(err)
        for t, ws in list(self._topics.items()):
            self._topics[t] = []
            for d in ws:
                d.errback(err)
        unsubs, self._unsub_waiters = self._unsub_waiters, {}
        for ws in unsubs.values():
            for d in ws:
                d.callback(None)

    def _enqueue_all(self, kind: Kind, topics: list[str]) -> None:
        active = self._active
        if active is not None and active.is_open:
            cancelled = active.queue.enqueue(kind, topics)
            if cancelled and kind == "sub":
                # an unsubscribe that never left: the topic is still subscribed,
                # and the superseded unsubscribe is done too
                for t in cancelled:
                    for w in self._unsub_waiters.pop(t, []):
                        w.callback(None)
                self._control_done(active, "sub", cancelled, None)
        ro = self._rollover
        if ro is not None and ro.link.is_open:
            ro.link.queue.enqueue(kind, topics)

    def _control_done(self, link: Link, kind: Kind, topics: list[str], error: str | None) -> None:
        if error is not None:
            self.stats.errors += 1
            log.warn(
                "{url}: {kind} {topics} refused: {error}",
                url=self.url,
                kind=kind,
                topics=topics,
                error=error,
            )
            self._status(ControlFailed(self.url, tuple(topics), error))
            if kind == "sub" and len(topics) > 1:
                # One refused topic must not fail the others of its batch: ask
                # again one topic per message; only the refused ones then fail.
                again = [t for t in topics if t in self._topics]
                if again and link.is_open:
                    link.queue.enqueue("sub", again, alone=True)
                    error = None
                    topics = []
        if link is self._active:
            for t in topics:
                if kind == "sub":
                    waiters = self._topics.get(t)
                    if waiters is None:
                        continue
                    if error is None:
                        self._acked.add(t)
                        self._topics[t] = []
                        for w in waiters:
                            w.callback(None)
                    else:
                        del self._topics[t]
                        for w in waiters:
                            w.errback(SubscriptionError(f"{t}: {error}"))
                else:
                    for w in self._unsub_waiters.pop(t, []):
                        w.callback(None)
        ro = self._rollover
        if (
            ro is not None
            and link is ro.link
            and not ro.ready
            and not link.pending
            and not len(link.queue)
        ):
            self._rollover_ready()

    def _reject(self, link: Link, error: ExchangeError) -> None:
        self.stats.rejected_frames += 1
        self.stats.errors += 1
        log.warn("{url}: frame rejected: {error}", url=self.url, error=error)
        self._status(FrameRejected(self.url, error))

    # -- data ------------------------------------------------------------

    def _data(self, link: Link, obj: Any, raw: bytes) -> None:
        ro = self._rollover
        if ro is None:
            if link is self._active:
                self._deliver(obj)
            return
        key = self.rules.overlap_key(raw)
        if link is ro.link:
            ro.buffer.append((key, obj))
            if ro.ready:
                if key in ro.delivered:
                    # the old socket is ahead: it already delivered this one
                    self._cutover(matched=True)
                    return
                ro.keys_after_ready.add(key)
            return
        if link is self._active:
            ro.delivered.add(key)
            self._deliver(obj)
            if key in ro.keys_after_ready:
                self._cutover(matched=True)

    def _deliver(self, obj: Any) -> None:
        try:
            self._on_message(obj)
        except Exception:  # noqa: BLE001 - a listener bug must not break the feed
            self.stats.errors += 1
            log.failure("{url}: message listener raised", url=self.url)

    # -- rollover --------------------------------------------------------

    def _rollover_ready(self) -> None:
        ro = self._rollover
        assert ro is not None
        ro.ready = True
        if not self._topics:
            self._cutover(matched=False)
            return
        ro.timeout = self.clock.callLater(
            self.options.rollover_overlap_timeout, self._cutover, False
        )

    def _cutover(self, matched: bool) -> None:
        ro = self._rollover
        assert ro is not None
        self._rollover = None
        if ro.timeout is not None and ro.timeout.active():
            ro.timeout.cancel()
        old = self._active
        self._active = ro.link
        new = ro.link
        if not matched:
            log.warn(
                "{url}: rollover without overlap; messages in flight may be missed", url=self.url
            )
        for key, obj in ro.buffer:
            if key not in ro.delivered:
                self._deliver(obj)
        self.stats.rollovers += 1
        if old is not None:
            self._stop_watchdog()
            self._cancel_age_timer()
            old.shutdown(1000)
        self._acked = set(self._topics)
        self._start_timers(new)
        self._status(RolledOver(self.url, matched))
        for w in ro.waiters:
            w.callback(None)

    def _abandon_rollover(self, link: Link) -> None:
        ro = self._rollover
        self._rollover = None
        link.shutdown(1000)
        if link in self._links:
            self._links.remove(link)
        if ro is not None:
            if ro.timeout is not None and ro.timeout.active():
                ro.timeout.cancel()
            for w in ro.waiters:
                w.errback(ConnectionClosed(f"rollover of {self.url} failed"))

    # -- timers ----------------------------------------------------------

    def _start_timers(self, link: Link) -> None:
        self._stop_watchdog()
        period = self._watchdog_period()
        if period is not None:
            self._watchdog = self.clock.callLater(period, self._watch, link)
        age = self.rules.max_connection_age
        if age is not None:
            self._cancel_age_timer()
            when = max(age - self.options.rollover_margin, age * 0.5)
            when *= 1.0 - 0.05 * self._rng.random()
            self._age_timer = self.clock.callLater(when, self._age_reached)

    def _watchdog_period(self) -> float | None:
        periods = []
        if self.options.stall_timeout is not None:
            periods.append(self.options.stall_timeout / 4)
        hb = self.rules.heartbeat
        if hb is not None:
            periods.append(hb.idle_interval / 2)
        return min(periods) if periods else None

    def _watch(self, link: Link) -> None:
        self._watchdog = None
        if link is not self._active or not link.is_open:
            return
        now = self.clock.seconds()
        silence = now - link.last_rx
        stall = self.options.stall_timeout
        if stall is not None and silence >= stall:
            self.stats.stalls += 1
            log.warn(
                "{url}: nothing received for {s:.1f}s; replacing the connection",
                url=self.url,
                s=silence,
            )
            self._status(Stalled(self.url, silence))
            link.stalled = True
            link.close_reason = f"stalled: nothing received for {silence:.1f}s"
            link.abort()
            return
        hb = self.rules.heartbeat
        if hb is not None and now - max(link.last_rx, link.last_tx) >= hb.idle_interval:
            with contextlib.suppress(ExchangeError):
                link.send(hb.payload)
        period = self._watchdog_period()
        assert period is not None
        self._watchdog = self.clock.callLater(period, self._watch, link)

    def _age_reached(self) -> None:
        self._age_timer = None
        self.rollover()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None

    def _cancel_age_timer(self) -> None:
        if self._age_timer is not None and self._age_timer.active():
            self._age_timer.cancel()
        self._age_timer = None

    def _cancel_timers(self) -> None:
        self._stop_watchdog()
        self._cancel_age_timer()
        ro = self._rollover
        if ro is not None and ro.timeout is not None and ro.timeout.active():
            ro.timeout.cancel()

    # -- shutdown --------------------------------------------------------

    def _force_close(self) -> None:
        self._stop_timer = None
        for link in list(self._links):
            log.warn("{url}: close handshake timed out; dropping the socket", url=self.url)
            link.abort()

    def _finish_stop(self) -> None:
        if self._stop_timer is not None and self._stop_timer.active():
            self._stop_timer.cancel()
        self._stop_timer = None
        if self._state is State.STOPPING:
            self._fire("closed")
        waiters, self._stop_waiters = self._stop_waiters, []
        for w in waiters:
            w.callback(None)
