"""``FeedService``: feeds of one exchange, kept running, written to sinks.

Sits at the bottom of the flow as an ``IService``: on start it builds the
client (or, in demo mode, a simulated exchange on 127.0.0.1 first), subscribes
each sink to every configured stream, and logs progress every few seconds; on
stop it closes the client (close handshakes), flushes and closes the sinks and
stops the simulated exchange, returning a Deferred that fires when all of that
is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

import txexchange
from txexchange.errors import BadRequest
from txexchange.service.sinks import JsonLinesSink

__all__ = ["CHANNELS", "FeedService", "FeedSpec"]

log = Logger()

CHANNELS = ("book", "trades", "ticker", "ohlcv:<timeframe>")


def check_channel(channel: str) -> str:
    if channel in ("book", "trades", "ticker") or (
        channel.startswith("ohlcv:") and len(channel) > 6
    ):
        return channel
    raise BadRequest(f"unknown channel {channel!r}; valid: {', '.join(CHANNELS)}")


@attrs.frozen
class FeedSpec:
    """What to collect: ``channels`` of ``symbols`` on ``exchange``."""

    exchange: str
    symbols: Sequence[str]
    channels: Sequence[str] = ("book",)

    def __attrs_post_init__(self) -> None:
        if not self.symbols:
            raise BadRequest("a feed needs at least one symbol")
        for channel in self.channels:
            check_channel(channel)


class FeedService(Service):
    """Runs a feed and writes every update to the sinks.

    :param demo: run against a built-in simulated exchange on 127.0.0.1
        (offline); ``demo_rate`` market steps per second.
    :param urls: replacement exchange URLs (see :func:`txexchange.exchange`).
    :param client_options: passed to :func:`txexchange.exchange`.
    """

    name = "exchangefeed"

    def __init__(
        self,
        feed: FeedSpec,
        sinks: Sequence[JsonLinesSink],
        *,
        reactor: Any = None,
        demo: bool = False,
        demo_rate: float = 20.0,
        urls: dict[str, str] | None = None,
        progress_interval: float = 5.0,
        **client_options: Any,
    ) -> None:
        self.feed = feed
        self.sinks = list(sinks)
        self._reactor = reactor
        self.demo = demo
        self.demo_rate = demo_rate
        self.urls = urls
        self.progress_interval = progress_interval
        self.client_options = client_options
        self.client: Any = None
        self.fake: Any = None
        self._handles: list[Any] = []
        self._progress: Any = None
        self._started: Deferred[None] | None = None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def startService(self) -> None:
        super().startService()
        self._started = ensureDeferred(self._start())
        self._started.addErrback(self._failed_start)

    def when_running(self) -> Deferred[None]:
        """Fires once the feeds are subscribed (after a demo exchange started)."""
        assert self._started is not None, "service not started"
        d: Deferred[None] = Deferred()
        self._started.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    async def _start(self) -> None:
        urls = self.urls
        if self.demo:
            from txexchange.testing.binance import FakeBinance

            self.fake = FakeBinance(list(self.feed.symbols), reactor=self.reactor)
            await self.fake.start()
            self.fake.run(rate=self.demo_rate)
            urls = self.fake.urls
            log.info("demo: simulated {ex} on {url}", ex=self.feed.exchange, url=urls["rest"])
        for sink in self.sinks:
            sink.open()
        self.client = txexchange.exchange(
            self.feed.exchange, reactor=self.reactor, urls=urls, **self.client_options
        )
        self.client.subscribe("status", None, self._status)
        await self.client.load_markets()
        name = self.feed.exchange
        for symbol in self.feed.symbols:
            for channel in self.feed.channels:
                for sink in self.sinks:
                    handle = self.client.subscribe(
                        channel, symbol, lambda ev, s=sink: s.write(name, ev)
                    )
                    self._handles.append(handle)
        log.info(
            "exchangefeed: {n} streams of {ex} running",
            n=len(self.feed.symbols) * len(self.feed.channels),
            ex=name,
        )
        self._progress = self.reactor.callLater(self.progress_interval, self._report)

    def _failed_start(self, failure: Any) -> None:
        log.failure("exchangefeed failed to start", failure)
        if self.reactor.running:
            self.reactor.stop()

    def _status(self, event: Any) -> None:
        log.info("status: {event}", event=event)

    def _report(self) -> None:
        client = self.client
        synced = sum(1 for b in client.books.values() if b.synced and not b.stale)
        records = sum(s.records for s in self.sinks)
        messages = sum(c.stats.messages for c in client.pool.connections)
        log.info(
            "progress: {m} messages, {b}/{n} books synced, {r} records written",
            m=messages,
            b=synced,
            n=len(client.books),
            r=records,
        )
        for sink in self.sinks:
            sink.flush()
        self._progress = self.reactor.callLater(self.progress_interval, self._report)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._progress is not None and self._progress.active():
            self._progress.cancel()
        for handle in self._handles:
            handle.stop()
        if self.client is not None:
            await self.client.close()
        for sink in self.sinks:
            sink.close()
        if self.fake is not None:
            await self.fake.stop()
        records = sum(s.records for s in self.sinks)
        log.info("exchangefeed stopped cleanly; {r} records written", r=records)
