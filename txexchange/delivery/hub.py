"""Observers, next-update Deferreds, async iterators and readiness waiters per stream.

Sits at the bottom of the flow, just above the user: the client applies an
event to state and calls :meth:`Hub.publish`; the hub calls every observer of
that stream in registration order (an observer that raises is logged, counted
and skipped), fires the ``watch_*`` Deferreds waiting for the next update,
and feeds async iterators.  Pull calls wait here for a stream to become
ready (first snapshot in, or a resync finished), bounded by a timeout that
fails with a clear error.

A stream is named by a key ``(channel, symbol)``, e.g. ``("book", "BTC/USDT")``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from txexchange.errors import ClientClosed, ResyncTimeout

__all__ = ["Hub", "Key", "ObserverHandle", "UpdateStream"]

log = Logger()

Key = tuple[str, str | None]
Observer = Callable[[Any], Any]


class ObserverHandle:
    """Returned by ``subscribe``: :meth:`stop` unregisters the observer."""

    def __init__(self, hub: Hub, key: Key, observer: Observer) -> None:
        self._hub = hub
        self.key = key
        self.observer = observer
        self.active = True

    def stop(self) -> None:
        """Stop calling the observer (idempotent); releases the stream if unused."""
        if self.active:
            self.active = False
            self._hub._remove_observer(self)

    def __repr__(self) -> str:
        return f"<ObserverHandle {self.key} {'active' if self.active else 'stopped'}>"


class UpdateStream:
    """Async iterator over a stream's updates (``async for x in client.stream(...)``).

    Values are what the matching ``watch_*`` returns.  With ``latest_only``
    (books) a slow consumer gets the newest state, never a backlog; otherwise
    up to ``maxlen`` values are kept and older ones dropped (counted in
    ``dropped``).  :meth:`close` (or leaving the loop with ``break`` and
    calling it) unregisters the iterator.
    """

    def __init__(
        self,
        hub: Hub,
        key: Key,
        convert: Callable[[Any], Any],
        *,
        latest_only: bool,
        maxlen: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._convert = convert
        self._queue: deque[Any] = deque(maxlen=1 if latest_only else maxlen)
        self._waiter: Deferred[Any] | None = None
        self._error: Exception | None = None
        self._on_close = on_close
        self.dropped = 0
        self._handle = hub.add_observer(key, self._on_update)
        hub._streams.setdefault(key, []).append(self)

    def _on_update(self, event: Any) -> None:
        value = self._convert(event)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.callback(value)
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(value)

    def _fail(self, error: Exception) -> None:
        self._error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.errback(error)

    def __aiter__(self) -> UpdateStream:
        return self

    def __anext__(self) -> Deferred[Any]:
        if self._queue:
            return succeed(self._queue.popleft())
        if self._error is not None:
            if isinstance(self._error, ClientClosed):
                return fail(StopAsyncIteration())
            return fail(self._error)
        if not self._handle.active:
            return fail(StopAsyncIteration())
        d: Deferred[Any] = Deferred(lambda _: self._cancel())
        self._waiter = d
        return d

    def _cancel(self) -> None:
        self._waiter = None

    def close(self) -> None:
        """Stop receiving; a pending ``__anext__`` ends the loop."""
        if self._handle.active:
            self._handle.stop()
            waiter, self._waiter = self._waiter, None
            if waiter is not None:
                waiter.errback(StopAsyncIteration())
            if self._on_close is not None:
                self._on_close()

    aclose = close


class Hub:
    """Push and pull delivery for every stream of one client."""

    def __init__(self, clock: Any, on_unused: Callable[[Key], None] | None = None) -> None:
        self._clock = clock
        self._on_unused = on_unused
        self._observers: dict[Key, list[ObserverHandle]] = {}
        self._watchers: dict[Key, list[tuple[Deferred[Any], Callable[[Any], Any]]]] = {}
        self._ready: set[Key] = set()
        self._ready_waiters: dict[Key, list[Deferred[None]]] = {}
        self._streams: dict[Key, list[UpdateStream]] = {}
        self.observer_errors = 0
        self.published = 0

    # -- push ---------------------------------------------------------------

    def add_observer(self, key: Key, observer: Observer) -> ObserverHandle:
        if not callable(observer):
            from txexchange.errors import BadRequest

            raise BadRequest(f"observer must be callable, got {observer!r}")
        handle = ObserverHandle(self, key, observer)
        self._observers.setdefault(key, []).append(handle)
        return handle

    def _remove_observer(self, handle: ObserverHandle) -> None:
        handles = self._observers.get(handle.key)
        if handles and handle in handles:
            handles.remove(handle)
            if not handles:
                del self._observers[handle.key]
        if self._on_unused is not None:
            self._on_unused(handle.key)

    def observer_count(self, key: Key) -> int:
        return len(self._observers.get(key, ()))

    def watch(self, key: Key, convert: Callable[[Any], Any]) -> Deferred[Any]:
        """A Deferred firing with ``convert(event)`` of the next update of ``key``."""
        entry: tuple[Deferred[Any], Callable[[Any], Any]]

        def cancel(d: Deferred[Any]) -> None:
            waiters = self._watchers.get(key)
            if waiters and entry in waiters:
                waiters.remove(entry)

        d: Deferred[Any] = Deferred(cancel)
        entry = (d, convert)
        self._watchers.setdefault(key, []).append(entry)
        return d

    def heard(self, key: Key) -> bool:
        """Whether anyone (observer, stream or watcher) would receive an update of ``key``.

        Lets a hot path skip building an event nobody consumes; it then calls
        :meth:`skip` instead of :meth:`publish`.
        """
        return key in self._observers or key in self._watchers

    def skip(self) -> None:
        """Count an update that :meth:`heard` said nobody receives, as if published."""
        self.published += 1

    def publish(self, key: Key, event: Any) -> None:
        """Deliver ``event`` to every observer of ``key`` in order, then to watchers."""
        self.published += 1
        handles = self._observers.get(key)
        if handles:
            for handle in tuple(handles):
                if not handle.active:
                    continue
                try:
                    handle.observer(event)
                except Exception:  # noqa: BLE001 - an observer's bug must not break the feed
                    self.observer_errors += 1
                    log.failure(
                        "observer {observer!r} of {key} raised", observer=handle.observer, key=key
                    )
        watchers = self._watchers.pop(key, None)
        if watchers:
            for d, convert in watchers:
                try:
                    value = convert(event)
                except Exception as e:  # noqa: BLE001 - handed to the watcher instead
                    d.errback(e)
                else:
                    d.callback(value)

    # -- pull readiness ---------------------------------------------------------

    def is_ready(self, key: Key) -> bool:
        return key in self._ready

    def set_ready(self, key: Key) -> None:
        self._ready.add(key)
        waiters = self._ready_waiters.pop(key, None)
        if waiters:
            for d in waiters:
                d.callback(None)

    def set_not_ready(self, key: Key) -> None:
        self._ready.discard(key)

    def when_ready(self, key: Key, timeout: float | None, what: str) -> Deferred[None]:
        """Fires once ``key`` is ready; fails with :class:`ResyncTimeout` after ``timeout`` s."""
        if key in self._ready:
            return succeed(None)
        call: Any = None

        def cancel(d: Deferred[None]) -> None:
            waiters = self._ready_waiters.get(key)
            if waiters and d in waiters:
                waiters.remove(d)

        d: Deferred[None] = Deferred(cancel)
        self._ready_waiters.setdefault(key, []).append(d)
        if timeout is not None:

            def expire() -> None:
                if not d.called:
                    waiters = self._ready_waiters.get(key)
                    if waiters and d in waiters:
                        waiters.remove(d)
                    d.errback(ResyncTimeout(f"{what} not available within {timeout:g}s"))

            call = self._clock.callLater(timeout, expire)

            def done(result: Any) -> Any:
                if call.active():
                    call.cancel()
                return result

            d.addBoth(done)
        return d

    # -- failure and shutdown ---------------------------------------------------

    def fail(self, key: Key, error: Exception) -> None:
        """Fail every waiter and watcher of ``key`` (the stream cannot be served)."""
        for d in self._ready_waiters.pop(key, []):
            d.errback(error)
        for d, _ in self._watchers.pop(key, []):
            d.errback(error)
        for stream in self._streams.get(key, []):
            stream._fail(error)

    def fail_all(self, error: Exception) -> None:
        keys = set(self._ready_waiters) | set(self._watchers) | set(self._streams)
        for key in keys:
            self.fail(key, error)

    def close(self) -> None:
        """Fail everything pending with :class:`ClientClosed` and drop every observer."""
        self.fail_all(ClientClosed("the client was closed"))
        for handles in self._observers.values():
            for handle in handles:
                handle.active = False
        self._observers.clear()
        self._streams.clear()
