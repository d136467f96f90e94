"""The Autobahn protocol and the reconnecting factory under every connection.

Bottom of the flow: socket bytes -> WebSocket frames.  ``FeedProtocol`` is an
Autobahn ``WebSocketClientProtocol`` that hands frames to its owner (a
:class:`~txexchange.transport.link.Link`); ``FeedFactory`` mixes Autobahn's
``WebSocketClientFactory`` with Twisted's ``ReconnectingClientFactory`` and
fixes the known traps of that pairing: the clock is the injected reactor,
``delay`` is set together with ``initialDelay``, ``resetDelay()`` runs only
after the WebSocket handshake (not at TCP connect), jitter comes from an
injectable random source, and running out of retries is reported instead of
being silently abandoned.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.python.failure import Failure

from txexchange.errors import BadRequest
from txexchange.transport.fastframes import FastFramesMixin

if TYPE_CHECKING:
    from txexchange.transport.link import Link
    from txexchange.transport.options import TransportOptions

__all__ = ["FeedFactory", "FeedProtocol", "describe_tls_failure", "parse_ws_url"]


def parse_ws_url(url: str) -> tuple[bool, str, int, str]:
    """Split a ws:// or wss:// URL into ``(secure, host, port, resource)``."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise BadRequest(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    if not parts.hostname:
        raise BadRequest(f"WebSocket URL has no host: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return secure, parts.hostname, port, resource


def describe_tls_failure(reason: Failure) -> str | None:
    """If ``reason`` is a TLS verification failure, say what failed; else ``None``.

    Twisted reports a refused certificate as a plain lost connection whose
    value is an ``OpenSSL.SSL.Error`` or a ``service_identity`` verification
    error; this digs that out so it can be logged as what it is.
    """
    try:
        from OpenSSL.SSL import Error as SSLError
        from service_identity import VerificationError
    except ImportError:  # pragma: no cover - twisted[tls] is a dependency
        return None
    value = reason.value
    if isinstance(value, VerificationError):
        return f"host name verification failed: {value}"
    if isinstance(value, SSLError):
        text = str(value)
        if "certificate verify failed" in text:
            return "certificate not trusted (certificate verify failed)"
        return f"TLS error: {text}"
    return None


class FeedProtocol(FastFramesMixin, WebSocketClientProtocol):
    """One WebSocket connection; forwards everything to the owning link.

    Plain data frames take the lean path of
    :class:`~txexchange.transport.fastframes.FastFramesMixin`; everything
    else goes through Autobahn and arrives in :meth:`onMessage`.
    """

    link: Link

    def onOpen(self) -> None:
        self.link.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.link.frame(payload, isBinary)

    def onPing(self, payload: bytes) -> None:
        self.link.activity()
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        self.link.activity()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.link.closed(self, wasClean, code, reason)

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        # Autobahn's hook for an over-limit message (checked after
        # permessage-deflate inflation, so it also catches bombs); it then
        # drops the connection, which reconnects as after any loss.
        self.link.oversized(reason)
        super()._max_message_size_exceeded(msg_size, max_msg_size, reason)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # The TLS layer hands its verification error to the protocol; the
        # factory only sees the TCP close that followed.
        self.link.protocol_lost(reason)
        super().connectionLost(reason)


class FeedFactory(WebSocketClientFactory, ReconnectingClientFactory):
    """Autobahn client factory with Twisted's reconnection, configured from options."""

    protocol = FeedProtocol

    def __init__(
        self,
        link: Link,
        url: str,
        options: TransportOptions,
        *,
        reactor: Any,
        clock: Any,
        rng: random.Random | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        WebSocketClientFactory.__init__(self, url, reactor=reactor, headers=headers)
        self.link = link
        # ReconnectingClientFactory reads these as class attributes; set them
        # all here: initialDelay alone would leave the first delay at 1.0.
        self.clock = clock
        self.initialDelay = options.initial_delay
        self.delay = options.initial_delay
        self.maxDelay = options.max_delay
        self.factor = options.factor
        self.jitter = options.jitter
        self.maxRetries = options.max_retries
        self.rng = rng or random.Random()
        self.noisy = False
        offers = (
            [PerMessageDeflateOffer(accept_max_window_bits=True)] if options.compression else []
        )

        def accept(response: Any) -> Any:
            if isinstance(response, PerMessageDeflateResponse):
                return PerMessageDeflateResponseAccept(response)
            return None

        self.setProtocolOptions(
            maxMessagePayloadSize=options.max_message_size,
            maxFramePayloadSize=options.max_message_size,
            openHandshakeTimeout=options.open_timeout,
            closeHandshakeTimeout=options.close_timeout,
            autoPingInterval=options.auto_ping_interval or 0,
            autoPingTimeout=options.auto_ping_timeout or 0,
            perMessageCompressionOffers=offers,
            perMessageCompressionAccept=accept,
        )

    def buildProtocol(self, addr: Any) -> FeedProtocol:
        # Deliberately no resetDelay() here: a TCP connect that never completes
        # the WebSocket handshake must keep backing off.
        proto = WebSocketClientFactory.buildProtocol(self, addr)
        proto.link = self.link
        return proto

    def handshake_succeeded(self) -> None:
        """The WebSocket handshake completed: the backoff starts over."""
        self.resetDelay()

    def startedConnecting(self, connector: Any) -> None:
        self.link.attempting(connector)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.connector = connector
        self.link.lost(reason, connected=False)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        self.connector = connector
        self.link.lost(reason, connected=True)

    def retry(self, connector: Any = None) -> float | None:
        """Schedule the next attempt; return its delay, or ``None`` when giving up."""
        if not self.continueTrying:
            return None
        connector = connector or self.connector
        self.retries += 1
        if self.maxRetries is not None and self.retries > self.maxRetries:
            return None
        delay = self.delay
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)

        def reconnector() -> None:
            self._callID = None
            connector.connect()

        self._callID = self.clock.callLater(delay, reconnector)
        self.delay = min(self.delay * self.factor, self.maxDelay)
        return delay
