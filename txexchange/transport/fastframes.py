"""The lean receive path for WebSocket data frames, under Autobahn's protocol.

Sits at the very bottom of the flow, inside
:class:`~txexchange.transport.websocket.FeedProtocol`: socket bytes in,
complete data messages out to the link.  Autobahn's own receive path costs,
for every message, a frame-header object, message begin/end callbacks, a
future, a UTF-8 validation pass and a copy of the whole remaining receive
buffer (``data = data[n:]``).  Exchange feeds are almost entirely small,
unfragmented, unmasked text frames whose payload is JSON that the link
decodes anyway (and every decoder used there rejects invalid UTF-8, so the
separate validation pass adds nothing).

:class:`FastFramesMixin` parses exactly those frames itself, walking the
buffer with an offset, and hands each payload straight to the link.
Anything else - control frames (ping, pong, close), fragmented or
compressed (RSV1) messages, masked frames, non-minimal length encodings,
frames over the size caps, any state but open, or a frame already
half-processed by Autobahn - goes through Autobahn's code unchanged, so the
protocol checks, the caps and the close handshake behave as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.websocket.protocol import WebSocketProtocol

if TYPE_CHECKING:
    from txexchange.transport.link import Link

__all__ = ["FastFramesMixin"]

_OPEN = WebSocketProtocol.STATE_OPEN
#: first header octet of a final, uncompressed text / binary frame
_TEXT_FIN = 0x81
_BINARY_FIN = 0x82


class FastFramesMixin:
    """Mixed in before Autobahn's ``WebSocketClientProtocol``; see the module docstring."""

    link: Link
    data: bytes
    state: int
    current_frame: Any
    inside_message: bool
    logOctets: bool
    logFrames: bool
    maxFramePayloadSize: int
    maxMessagePayloadSize: int

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's twisted adapter only adds a debug log call here.
        self._dataReceived(data)

    def _dataReceived(self, data: bytes) -> None:
        if (
            self.state != _OPEN
            or self.current_frame is not None
            or self.inside_message
            or self.logOctets
            or self.logFrames
        ):
            super()._dataReceived(data)  # type: ignore[misc]
            return
        buf = self.data + data if self.data else data
        self.data = b""
        size = len(buf)
        pos = 0
        frame = self.link.frame
        limit = self._fast_limit()
        while True:
            if size - pos < 2:
                break
            b0 = buf[pos]
            n = buf[pos + 1]
            if (b0 != _TEXT_FIN and b0 != _BINARY_FIN) or n & 0x80:
                pos = self._slow_frame(buf, pos)
                if pos < 0:
                    return
                size = len(buf)
                continue
            if n < 126:
                start = pos + 2
            elif n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
                if n < 126:
                    pos = self._slow_frame(buf, pos)
                    if pos < 0:
                        return
                    continue
            else:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
                if n < 65536:
                    pos = self._slow_frame(buf, pos)
                    if pos < 0:
                        return
                    continue
            if n > limit:
                pos = self._slow_frame(buf, pos)
                if pos < 0:
                    return
                continue
            end = start + n
            if end > size:
                break
            frame(buf[start:end], b0 == _BINARY_FIN)
            pos = end
            if self.state != _OPEN:
                # the message made the link close or fail the connection
                self.data = buf[pos:]
                if self.data:
                    super()._dataReceived(b"")  # type: ignore[misc]
                return
        if pos < size:
            self.data = buf[pos:]

    def _fast_limit(self) -> int:
        """The largest payload the fast path takes (larger ones go to Autobahn's checks)."""
        limits = [x for x in (self.maxFramePayloadSize, self.maxMessagePayloadSize) if x]
        return min(limits) if limits else 2**63

    def _slow_frame(self, buf: bytes, pos: int) -> int:
        """Let Autobahn process the frame at ``pos`` (and, if incomplete, everything after).

        Returns where the fast path goes on in ``buf``, or -1 when Autobahn
        now owns the rest of the buffer (frame incomplete, connection no
        longer open, or a message left unfinished).
        """
        self.data = buf[pos:]
        while True:
            more = self.processData()  # type: ignore[attr-defined]
            if self.state != _OPEN:
                if more and self.state != WebSocketProtocol.STATE_CLOSED:
                    self.consumeData()  # type: ignore[attr-defined]
                return -1
            if not more:
                # needs more bytes: Autobahn keeps them (and any partial frame state)
                return -1
            if self.current_frame is None and not self.inside_message:
                break
        rest = self.data
        self.data = b""
        # continue on the rest, which is a suffix of buf
        return len(buf) - len(rest)
