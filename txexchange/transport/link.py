"""One physical WebSocket connection (with its reconnecting factory) of a logical connection.

Sits in the transport between :mod:`~txexchange.transport.websocket` (frames)
and :mod:`~txexchange.transport.connection` (topics, life cycle, rollover).
A logical connection normally has one link; during a planned rollover it has
two for a moment.  The link decodes each frame exactly once (inflating binary
frames under a cap), matches control replies to its own requests, and owns
the rate-limited control queue of its socket.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure

from txexchange.codec import DecodeError, loads
from txexchange.errors import ConnectionClosed, MalformedMessage, ProtocolViolation
from txexchange.transport.control import ControlQueue, Kind
from txexchange.transport.inflate import inflate
from txexchange.transport.websocket import FeedFactory, FeedProtocol, parse_ws_url

if TYPE_CHECKING:
    from txexchange.transport.connection import Connection

__all__ = ["Link"]


class Link:
    """A factory, its current protocol and control queue, reporting to a Connection."""

    def __init__(
        self,
        owner: Connection,
        url: str,
        *,
        role: str,
        rng: random.Random,
        headers: dict[str, str] | None,
    ) -> None:
        self.owner = owner
        self.url = url
        self.role = role
        opts = owner.options
        rules = owner.rules
        self.factory = FeedFactory(
            self, url, opts, reactor=owner.reactor, clock=owner.clock, rng=rng, headers=headers
        )
        self.queue = ControlQueue(
            owner.clock, rules.control_rate, rules.max_topics_per_message, self._send_control
        )
        self.pending: dict[int, tuple[Kind, list[str]]] = {}
        self.protocol: FeedProtocol | None = None
        self.is_open = False
        self.down = True
        self.connector: Any = None
        self.last_rx = 0.0
        self.last_tx = 0.0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.shutting_down = False
        self.stalled = False
        self.protocol_reason: Failure | None = None
        hb = rules.heartbeat
        self._pong = None if hb is None or hb.pong is None else hb.pong.encode()
        self._compression = rules.binary_compression
        self._cap = opts.max_decompressed_size
        # the adapter may decode itself (e.g. JSON numbers kept exact as Decimal)
        self._loads = getattr(rules, "decode", None) or loads
        self._tap = opts.frame_tap

    # -- life cycle ------------------------------------------------------

    def connect(self) -> None:
        secure, host, port, _ = parse_ws_url(self.url)
        opts = self.owner.options
        reactor = self.owner.reactor
        if secure:
            creator = optionsForClientTLS(host, trustRoot=opts.trust_root)
            reactor.connectSSL(host, port, self.factory, creator, timeout=opts.connect_timeout)
        else:
            reactor.connectTCP(host, port, self.factory, timeout=opts.connect_timeout)

    def attempting(self, connector: Any) -> None:
        self.connector = connector
        self.down = False
        self.close_code = None
        self.close_reason = None
        self.stalled = False
        self.owner._link_attempting(self)

    def opened(self, proto: FeedProtocol) -> None:
        self.protocol = proto
        self.is_open = True
        self.last_rx = self.last_tx = self.owner.clock.seconds()
        self.factory.handshake_succeeded()
        self.queue.start()
        self.owner._link_opened(self)

    def closed(
        self,
        proto: FeedProtocol,
        clean: bool,
        code: int | None,
        reason: str | None,
    ) -> None:
        self.close_code = code
        self.close_reason = reason

    def oversized(self, reason: str) -> None:
        from txexchange.errors import FrameTooLarge

        self.owner._reject(self, FrameTooLarge(reason))

    def protocol_lost(self, reason: Failure) -> None:
        self.protocol_reason = reason

    def lost(self, reason: Failure, *, connected: bool) -> None:
        if self.protocol_reason is not None:
            reason, self.protocol_reason = self.protocol_reason, None
        was_open = self.is_open
        self.protocol = None
        self.is_open = False
        self.down = True
        self.queue.stop()
        self.pending.clear()
        self.owner._link_lost(self, reason, was_open)

    def retry(self) -> float | None:
        """Schedule the next attempt (``None``: retries exhausted or stopped)."""
        if self.shutting_down:
            return None
        return self.factory.retry(self.connector)

    def shutdown(self, code: int = 1000) -> bool:
        """Stop reconnecting and close; return True if already fully down."""
        self.shutting_down = True
        self.factory.stopTrying()  # before the close frame, so the loss is not retried
        self.queue.stop()
        if self.down:
            return True
        proto = self.protocol
        if self.is_open and proto is not None:
            proto.sendClose(code)
        elif self.connector is not None:
            self.connector.disconnect()
        return False

    def abort(self) -> None:
        """Drop the TCP connection at once (stall, failed close handshake)."""
        proto = self.protocol
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()
        elif self.connector is not None and not self.down:
            self.connector.disconnect()

    # -- sending ---------------------------------------------------------

    def send(self, payload: str | bytes) -> None:
        proto = self.protocol
        state = getattr(proto, "state", None)  # (a replay's stand-in socket has none)
        if proto is None or not self.is_open or (state is not None and state != proto.STATE_OPEN):
            # (Autobahn raises its own error while the closing handshake runs)
            from txexchange.errors import ConnectionClosed

            raise ConnectionClosed(f"connection to {self.url} is not open")
        if isinstance(payload, str):
            payload = payload.encode()
        proto.sendMessage(payload, isBinary=False)
        self.last_tx = self.owner.clock.seconds()

    def _send_control(self, kind: Kind, topics: list[str]) -> None:
        owner = self.owner
        rid = owner._next_request_id()
        rules = owner.rules
        if kind == "sub":
            payload = rules.subscribe_message(topics, rid)
        else:
            payload = rules.unsubscribe_message(topics, rid)
        if rules.replies_to_control:
            self.pending[rid] = (kind, topics)
        try:
            self.send(payload)
        except ConnectionClosed:
            # closing: the next connection subscribes every held topic again,
            # and an unsubscribed topic goes with this one
            self.pending.pop(rid, None)
            if kind == "unsub":
                owner._control_done(self, kind, topics, None)
            return
        owner.stats.control_sent += 1
        if not rules.replies_to_control:
            owner._control_done(self, kind, topics, None)

    # -- receiving (the hot path) ----------------------------------------

    def activity(self) -> None:
        self.last_rx = self.owner.clock.seconds()

    def frame(self, payload: bytes, is_binary: bool) -> None:
        owner = self.owner
        stats = owner.stats
        stats.messages += 1
        stats.bytes += len(payload)
        self.last_rx = stats.last_message_at = now = owner.clock.seconds()
        if self._tap is not None:
            self._tap(self.url, now, payload, is_binary)
        if is_binary:
            if self._compression is not None:
                try:
                    payload = inflate(payload, self._compression, self._cap)
                except ProtocolViolation as e:
                    owner._reject(self, e)
                    return
        elif self._pong is not None and payload == self._pong:
            return
        try:
            obj = self._loads(payload)
        except DecodeError as e:
            owner._reject(self, MalformedMessage(f"undecodable frame ({e}): {payload[:80]!r}"))
            return
        if self.pending:
            reply = owner.rules.control_reply(obj)
            if reply is not None and reply.request_id in self.pending:
                kind, topics = self.pending.pop(reply.request_id)
                owner._control_done(
                    self, kind, topics, None if reply.ok else reply.error or "refused"
                )
                return
        owner._data(self, obj, payload)
