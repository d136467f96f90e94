"""Helpers for the web view's tests: a demo service with its web view, and a raw SSE client."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from txexchange.service.config import FeedSpec
from txexchange.service.feed import FeedService
from txexchange.service.web import WebViewService


async def start_web(
    channels: tuple[str, ...] = ("book", "trades"),
    rate: float = 50.0,
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT"),
    **web_options: Any,
) -> tuple[FeedService, WebViewService]:
    """A demo FeedService (simulated Binance on 127.0.0.1) and its web view on a free port."""
    feeds = FeedService(
        FeedSpec("binance", symbols, channels), [], reactor=reactor, demo=True, demo_rate=rate
    )
    web = WebViewService(feeds, "tcp:0:interface=127.0.0.1", reactor=reactor, **web_options)
    feeds.startService()
    web.startService()
    await feeds.when_running()
    await web.when_listening()
    return feeds, web


async def stop_web(feeds: FeedService, web: WebViewService) -> None:
    await web.stopService()
    await feeds.stopService()


class SSEClient(Protocol):
    """Sends one HTTP/1.0 GET (so the body is not chunked) and parses the SSE messages."""

    def __init__(self, path: str, host: str = "127.0.0.1") -> None:
        self.request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
        self.head: bytes | None = None
        self.messages: list[dict[str, Any]] = []
        self.received = 0
        self._buf = b""
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._buf += data
        if self.head is None:
            if b"\r\n\r\n" not in self._buf:
                return
            self.head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        *blocks, self._buf = self._buf.split(b"\n\n")
        for block in blocks:
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    self.messages.append(json.loads(line[6:]))

    @property
    def status(self) -> int | None:
        return int(self.head.split(b" ", 2)[1]) if self.head else None

    def header(self, name: str) -> str | None:
        assert self.head is not None
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


async def sse_connect(web: WebViewService, path: str, **kwargs: Any) -> SSEClient:
    client = SSEClient(path, **kwargs)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", web.port.getHost().port)
    await connectProtocol(endpoint, client)
    return client
