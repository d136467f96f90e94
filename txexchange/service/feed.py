"""``FeedService``: feeds of one or more exchanges, kept running, written to sinks.

Sits at the bottom of the flow as an ``IService``: on start it opens the
sinks, builds one client per exchange (or, in demo mode, a simulated exchange
on 127.0.0.1 first), subscribes one observer per stream that turns each
update into a record and hands it to every sink, and logs a status line
every ``status_interval`` seconds; on stop it ends the subscriptions, closes
the clients (close handshakes, code 1000), writes what the sinks still hold
and closes them, and stops the simulated exchange, returning a Deferred that
fires when all of that is done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger

import txexchange
from txexchange.delivery import BookResyncing
from txexchange.errors import ExchangeError
from txexchange.service.config import CHANNELS, ExchangeSettings, FeedSpec, check_channel
from txexchange.service.sinks import Sink, record_for
from txexchange.transport import Disconnected, StatusEvent

__all__ = ["CHANNELS", "FeedService", "FeedSpec", "check_channel"]

log = Logger()


class _BookTrack:
    """What the service knows of one book stream (for metrics and health)."""

    __slots__ = ("last_at", "nonce", "ts", "updates")

    def __init__(self) -> None:
        self.updates = 0
        self.last_at: float | None = None
        self.ts: int | None = None
        self.nonce: int | None = None


class FeedService(Service):
    """Runs feeds and writes every update to the sinks.

    :param feeds: a :class:`FeedSpec` or several (any exchanges; one client each).
    :param sinks: :class:`~txexchange.service.sinks.Sink` instances.
    :param demo: run against a built-in simulated exchange on 127.0.0.1
        (offline); ``demo_rate`` market steps per second.
    :param urls: replacement exchange URLs for every client (see
        :func:`txexchange.exchange`); ``exchanges`` gives them per exchange.
    :param status_interval: seconds between status log lines.
    :param close_timeout: seconds sinks get to write what they hold on stop.
    :param record: write every frame and REST answer received to this file
        (see :mod:`txexchange.service.recording`); replay it with
        :class:`~txexchange.service.replay.ReplayFeedService`.
    :param client_options: passed to every :func:`txexchange.exchange`.
    """

    name = "exchangefeed"

    def __init__(
        self,
        feeds: FeedSpec | Sequence[FeedSpec],
        sinks: Sequence[Sink],
        *,
        reactor: Any = None,
        demo: bool = False,
        demo_rate: float = 20.0,
        urls: Mapping[str, str] | None = None,
        exchanges: Mapping[str, ExchangeSettings] | None = None,
        status_interval: float = 10.0,
        flush_interval: float = 1.0,
        close_timeout: float = 5.0,
        progress_interval: float | None = None,
        record: str | os.PathLike[str] | None = None,
        **client_options: Any,
    ) -> None:
        self.feeds: tuple[FeedSpec, ...] = (feeds,) if isinstance(feeds, FeedSpec) else tuple(feeds)
        self.sinks = list(sinks)
        self._reactor = reactor
        self.demo = demo
        self.demo_rate = demo_rate
        self.urls = urls
        self.exchanges = dict(exchanges or {})
        self.status_interval = progress_interval or status_interval
        self.flush_interval = flush_interval
        self.close_timeout = close_timeout
        self.client_options = client_options
        self.record = record
        #: the :class:`~txexchange.service.recording.RecordingWriter` of ``record``
        self.recorder: Any = None
        #: demo mode: the simulated exchange serving each exchange's feeds
        self.fakes: dict[str, Any] = {}
        #: clients by exchange name
        self.clients: dict[str, Any] = {}
        self.fake: Any = None
        self.books: dict[tuple[str, str], _BookTrack] = {}
        self.integrity_failures: dict[str, int] = {}
        self.started_at: float | None = None
        self.running_feeds = False
        self.failed = False
        self._handles: list[Any] = []
        self._timers: list[Any] = []
        self._started: Deferred[None] | None = None
        self._last_report: tuple[float, int, int] | None = None

    # -- properties --------------------------------------------------------------

    @property
    def feed(self) -> FeedSpec | None:
        """The first feed (for single-feed use)."""
        return self.feeds[0] if self.feeds else None

    @property
    def client(self) -> Any:
        """The first client (for single-exchange use)."""
        return next(iter(self.clients.values()), None)

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def connections(self) -> list[tuple[str, Any]]:
        """``(exchange, Connection)`` of every client's pool."""
        out = []
        for name, client in self.clients.items():
            pool = getattr(client, "pool", None)
            for conn in getattr(pool, "connections", ()):
                out.append((name, conn))
        return out

    def totals(self) -> dict[str, int]:
        """Messages, bytes and reconnects over every connection."""
        t = {"messages": 0, "bytes": 0, "reconnects": 0}
        for _, conn in self.connections():
            s = conn.stats
            t["messages"] += s.messages
            t["bytes"] += s.bytes
            t["reconnects"] += s.reconnects
        return t

    def books_synced(self) -> tuple[int, int]:
        """``(synced, total)`` books over every client."""
        synced = total = 0
        for client in self.clients.values():
            for book in client.books.values():
                total += 1
                if book.synced and not book.stale:
                    synced += 1
        return synced, total

    # -- life cycle ------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.started_at = self.reactor.seconds()
        self._started = ensureDeferred(self._start())
        self._started.addErrback(self._failed_start)

    def when_running(self) -> Deferred[None]:
        """Fires once the feeds are subscribed (after a demo exchange started)."""
        assert self._started is not None, "service not started"
        d: Deferred[None] = Deferred()
        self._started.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    async def _start(self) -> None:
        by_exchange: dict[str, list[FeedSpec]] = {}
        for feed in self.feeds:
            by_exchange.setdefault(feed.exchange, []).append(feed)
        if self.demo and by_exchange:
            from txexchange.testing import fake_exchange

            for exchange, feeds in by_exchange.items():
                symbols = sorted({s for feed in feeds for s in feed.symbols})
                fake = fake_exchange(exchange, symbols, reactor=self.reactor)
                await fake.start()
                fake.run(rate=self.demo_rate)
                self.fakes[exchange] = fake
                log.info("demo: simulated {ex} on {url}", ex=exchange, url=fake.urls["rest"])
            self.fake = next(iter(self.fakes.values()))
        await DeferredList(
            [s.open() for s in self.sinks], fireOnOneErrback=True, consumeErrors=True
        ).addErrback(lambda f: f.value.subFailure)
        for sink in self.sinks:
            log.info("sink {sink} open", sink=sink.name)
        if self.record is not None:
            self._open_recording(by_exchange)
        await self._start_clients(by_exchange)
        n = sum(len(f.symbols) * len(f.channels) for f in self.feeds)
        log.info(
            "exchangefeed: {n} streams of {ex} running",
            n=n,
            ex=", ".join(by_exchange) or "no exchange",
        )
        self.running_feeds = True
        self._timers.append(self.reactor.callLater(self.status_interval, self._report))
        self._timers.append(self.reactor.callLater(self.flush_interval, self._flush))

    def _client_settings(self, name: str) -> tuple[Any, dict[str, Any]]:
        """``(urls, options)`` of exchange ``name``'s client."""
        settings = self.exchanges.get(name, ExchangeSettings())
        fake = self.fakes.get(name)
        urls = fake.urls if fake is not None else (settings.urls or self.urls)
        return urls, {**self.client_options, **settings.options}

    def _make_client(
        self, name: str, urls: Any, options: dict[str, Any], reactor: Any = None
    ) -> Any:
        if self.recorder is not None:
            from txexchange.transport import TransportOptions

            transport = options.get("transport") or TransportOptions()
            options = {
                **options,
                "transport": transport.replace(frame_tap=self.recorder.frame_tap(name)),
                "rest_tap": self.recorder.rest_tap(name),
            }
        return txexchange.exchange(name, reactor=reactor or self.reactor, urls=urls, **options)

    async def _start_clients(self, by_exchange: Mapping[str, Sequence[FeedSpec]]) -> None:
        for name, feeds in by_exchange.items():
            urls, options = self._client_settings(name)
            client = self._make_client(name, urls, options)
            self.clients[name] = client
            client.subscribe("status", None, lambda ev, n=name: self._status(n, ev))
            await client.load_markets()
            for feed in feeds:
                for symbol in feed.symbols:
                    for channel in feed.channels:
                        observer = self._observer(name, channel, symbol)
                        self._handles.append(client.subscribe(channel, symbol, observer))

    def _open_recording(self, by_exchange: Mapping[str, Sequence[FeedSpec]]) -> None:
        from txexchange.client import ClientOptions
        from txexchange.service.recording import RecordingWriter

        assert self.record is not None
        valid = set(ClientOptions.names())
        exchanges = {}
        for name in by_exchange:
            urls, options = self._client_settings(name)
            # only ClientOptions: never credentials, transports or other objects
            exchanges[name] = {
                "urls": dict(urls) if urls else None,
                "options": {k: v for k, v in options.items() if k in valid},
            }
        clock = self.client_options.get("clock") or self.reactor
        header = {
            "t": clock.seconds(),
            "wall_time": time.time(),
            "feeds": [
                {"exchange": f.exchange, "symbols": list(f.symbols), "channels": list(f.channels)}
                for f in self.feeds
            ],
            "exchanges": exchanges,
            "depths": sorted({s.depth for s in self.sinks}),
            "demo": self.demo,
        }
        recorder = RecordingWriter(self.record, reactor=self.reactor)
        recorder.open(header)
        self.recorder = recorder
        log.info("recording every frame and REST answer to {path}", path=str(recorder.path))

    def _observer(self, exchange: str, channel: str, symbol: str) -> Any:
        sinks = self.sinks
        depths = sorted({s.depth for s in sinks})
        track: _BookTrack | None = None
        if channel == "book":
            track = self.books.setdefault((exchange, symbol), _BookTrack())
        seconds = self.reactor.seconds

        def observe(event: Any) -> None:
            records = {d: record_for(exchange, event, d) for d in depths}
            if track is not None:
                track.updates += 1
                track.last_at = seconds()
                rec = next(iter(records.values()), None)
                if rec is not None:
                    track.ts, track.nonce = rec["ts"], rec["nonce"]
            for sink in sinks:
                record = records[sink.depth]
                if record is not None:
                    sink.put(record)

        return observe

    def _failed_start(self, failure: Any) -> None:
        if failure.check(ConnectionError, ExchangeError):
            log.error("exchangefeed failed to start: {why}", why=failure.getErrorMessage())
        else:
            log.failure("exchangefeed failed to start", failure)
        self.failed = True
        if self.reactor.running:
            self.reactor.stop()

    def _status(self, exchange: str, event: Any) -> None:
        if self.recorder is not None and isinstance(event, StatusEvent):
            self.recorder.status(exchange, self.clients[exchange].clock.seconds(), event)
        if isinstance(event, BookResyncing) and not event.reason.startswith("disconnected"):
            self.integrity_failures[exchange] = self.integrity_failures.get(exchange, 0) + 1
        if isinstance(event, Disconnected):
            log.info(
                "status: {ex} disconnected from {url}: client code {code}, clean={clean} ({why})",
                ex=exchange,
                url=event.url,
                code=event.code,
                clean=event.clean,
                why=event.reason,
            )
        else:
            log.info("status: {ex} {event}", ex=exchange, event=event)

    def _flush(self) -> None:
        for sink in self.sinks:
            sink.flush()
        if self.recorder is not None:
            self.recorder.flush()
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self.reactor.callLater(self.flush_interval, self._flush))

    def _report(self) -> None:
        now = self.reactor.seconds()
        t = self.totals()
        synced, total = self.books_synced()
        records = sum(s.records for s in self.sinks)
        dropped = sum(s.dropped for s in self.sinks)
        queued = sum(s.queue_depth for s in self.sinks)
        last = self._last_report or (self.started_at or now, 0, 0)
        dt = max(now - last[0], 1e-9)
        log.info(
            "status: {rate:.1f} msg/s, {kbs:.1f} kB/s, {m} messages, {b}/{n} books synced, "
            "{rc} reconnects, {r} records written, {q} queued, {d} dropped",
            rate=(t["messages"] - last[1]) / dt,
            kbs=(t["bytes"] - last[2]) / dt / 1000,
            m=t["messages"],
            b=synced,
            n=total,
            rc=t["reconnects"],
            r=records,
            q=queued,
            d=dropped,
        )
        self._last_report = (now, t["messages"], t["bytes"])
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self.reactor.callLater(self.status_interval, self._report))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        began = time.monotonic()
        self.running_feeds = False
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for handle in self._handles:
            handle.stop()
        self._handles.clear()
        recorder = self.recorder
        if recorder is not None:
            # nothing after this point reaches the sinks, so nothing is replayed either
            recorder.end(self._client_seconds())
        if self.clients:
            conns = self.connections()
            await DeferredList([c.close() for c in self.clients.values()], consumeErrors=True)
            log.info(
                "exchangefeed: {n} connection(s) closed with code 1000 ({ex})",
                n=len(conns),
                ex=", ".join(self.clients),
            )
        if recorder is not None:
            await recorder.close()
            log.info(
                "recording {path}: {f} frames and {r} REST answers written",
                path=str(recorder.path),
                f=recorder.frames,
                r=recorder.rest,
            )
        await self._close_sinks()
        for fake in self.fakes.values():
            await fake.stop()
        records = sum(s.records for s in self.sinks)
        log.info(
            "exchangefeed stopped after a failed start"
            if self.failed
            else "exchangefeed stopped cleanly in {t:.2f}s; {r} records written",
            t=time.monotonic() - began,
            r=records,
        )

    def _client_seconds(self) -> float:
        client = self.client
        return (client.clock if client is not None else self.reactor).seconds()

    async def _close_sinks(self) -> None:
        await DeferredList([ensureDeferred(self._close_sink(s)) for s in self.sinks])

    async def _close_sink(self, sink: Sink) -> None:
        d = sink.close()
        d.addTimeout(self.close_timeout, self.reactor)
        try:
            await d
        except (CancelledError, TimeoutError, defer.TimeoutError):
            lost = sink.abandon()
            log.warn(
                "{sink}: not done after {t}s at shutdown; gave up on {n} queued records",
                sink=sink.name,
                t=self.close_timeout,
                n=lost,
            )
            await sink.force_close()
        except Exception:  # noqa: BLE001 - one failing sink must not stop the others
            log.failure("{sink} failed to close", sink=sink.name)
