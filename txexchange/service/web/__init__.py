"""A live web view of a running ``FeedService`` (``exchangefeed --web``).

Sits beside the service at the end of the flow, like the metrics, and only
reads it: one page (feeds, a chosen book's depth chart and top levels,
recent trades), a JSON API for scripts and a Server-Sent Events push channel
that coalesces updates for slow browsers.  :class:`WebViewService` listens on
a Twisted endpoint description (``tcp:8080:interface=127.0.0.1``); see
``docs/web.md``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txexchange.service.web.rates import RateMeter
from txexchange.service.web.resource import LOOPBACK_HOSTS, WebSite, web_root
from txexchange.service.web.snapshot import book_view, message_counts, service_state
from txexchange.service.web.stream import EventBroadcaster

__all__ = [
    "EventBroadcaster",
    "RateMeter",
    "WebSite",
    "WebViewService",
    "book_view",
    "service_state",
    "web_root",
]

log = Logger()


def _listens_on_loopback(description: str) -> bool:
    """Whether a ``tcp:`` description binds a loopback address only."""
    for part in description.split(":")[1:]:
        key, eq, value = part.partition("=")
        if eq and key == "interface":
            value = value.replace("\\", "")
            return value in LOOPBACK_HOSTS or value.startswith("127.")
    return False  # no interface: every address (never made by parse_web)


class WebViewService(Service):
    """Serves the web view of ``feeds`` (a FeedService) on ``description``.

    :param interval: seconds between push-channel ticks.
    :param rate_interval: seconds between message-rate samples.
    :param rate_window: seconds the message rate is averaged over.
    """

    name = "exchangefeed-web"

    def __init__(
        self,
        feeds: Any,
        description: str,
        *,
        reactor: Any = None,
        interval: float = 0.2,
        rate_interval: float = 1.0,
        rate_window: float = 5.0,
    ) -> None:
        self.feeds = feeds
        self.description = description
        self._reactor = reactor
        self.rates = RateMeter(rate_window)
        self.rate_interval = rate_interval
        self.broadcaster = EventBroadcaster(feeds, self.rates, self.reactor, interval=interval)
        allowed = LOOPBACK_HOSTS if _listens_on_loopback(description) else None
        self.site = WebSite(web_root(feeds, self.rates, self.broadcaster), allowed)
        self.port: Any = None
        #: why listening failed (the reactor is stopped then)
        self.failure: Any = None
        self._listening: Deferred[Any] | None = None
        self._sampler: LoopingCall | None = None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            self._reactor = self.feeds.reactor
        return self._reactor

    @property
    def url(self) -> str | None:
        """``http://HOST:PORT/`` once listening."""
        if self.port is None:
            return None
        address = self.port.getHost()
        host = address.host if ":" not in address.host else f"[{address.host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{address.port}/"

    def startService(self) -> None:
        from twisted.internet.endpoints import serverFromString

        super().startService()
        self._sampler = LoopingCall(self._sample)
        self._sampler.clock = self.reactor
        self._sampler.start(self.rate_interval, now=True)
        endpoint = serverFromString(self.reactor, self.description)
        self._listening = endpoint.listen(self.site)
        self._listening.addCallback(self._listened)
        self._listening.addErrback(self._listen_failed)

    def _listened(self, port: Any) -> Any:
        self.port = port
        log.info("web view on {url}", url=self.url)
        return port

    def _listen_failed(self, failure: Any) -> None:
        log.error(
            "web view cannot listen on {desc}: {why}",
            desc=self.description,
            why=failure.getErrorMessage(),
        )
        self.failure = failure
        reactor = self.reactor
        if reactor.running:
            reactor.stop()

    def when_listening(self) -> Deferred[str]:
        """Fires with :attr:`url` once the site listens (fails if it cannot)."""
        assert self._listening is not None, "service not started"
        d: Deferred[str] = Deferred()

        def fire(_: Any) -> None:
            if self.failure is not None:
                d.errback(self.failure)
            else:
                d.callback(self.url)

        self._listening.addCallback(lambda r: (fire(r), r)[1])
        return d

    def _sample(self) -> None:
        self.rates.sample(self.reactor.seconds(), message_counts(self.feeds))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self.broadcaster.close()
        if self.port is not None:
            port, self.port = self.port, None
            await port.stopListening()
