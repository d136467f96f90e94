"""A small Redis client on Twisted: RESP2 commands, pipelined, one connection.

Sits under the Redis Streams sink (and is handy for consumers, see
``examples/redis_consumer.py``).  It speaks just the protocol: commands go
out as arrays of bulk strings, replies come back as ``bytes``, ``int``,
``list``, ``None`` or a :class:`RedisError` (failing the command's Deferred).
Replies are matched to commands in order, so any number may be in flight.
Reconnection is the caller's business (the sink uses
:class:`twisted.application.internet.ClientService`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from txexchange.errors import ConnectionClosed

__all__ = ["RedisError", "RedisProtocol", "encode_command"]


class RedisError(Exception):
    """An error reply from Redis (``-ERR ...``)."""


def encode_command(args: Sequence[bytes | str | int | float]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One reply starting at ``pos``: ``(value, next position)``; raises _Incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos : pos + 1]
    line = buf[pos + 1 : end]
    pos = end + 2
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete
        return buf[pos : pos + n], pos + n + 2
    if kind == b"*":
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    raise RedisError(f"protocol error: unexpected reply type {kind!r}")


class RedisProtocol(Protocol):
    """Pipelined RESP2 commands on one connection."""

    def __init__(self) -> None:
        self._buf = b""
        self._waiting: deque[Deferred[Any]] = deque()
        self._lost: Failure | None = None

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def execute(self, *args: bytes | str | int | float) -> Deferred[Any]:
        """Send one command; fires with its reply (errbacks with :class:`RedisError`)."""
        return self.pipeline([args])[0]

    def pipeline(
        self, commands: Sequence[Sequence[bytes | str | int | float]]
    ) -> list[Deferred[Any]]:
        """Send several commands in one write; one Deferred per command, in order."""
        if self._lost is not None or self.transport is None:
            return [fail(ConnectionClosed("redis connection is closed")) for _ in commands]
        ds: list[Deferred[Any]] = []
        for _ in commands:
            d: Deferred[Any] = Deferred()
            self._waiting.append(d)
            ds.append(d)
        self.transport.write(b"".join(encode_command(c) for c in commands))
        return ds

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        pos = 0
        buf = self._buf
        try:
            while pos < len(buf):
                value, pos = _parse(buf, pos)
                d = self._waiting.popleft() if self._waiting else None
                if d is None:
                    continue  # a reply nobody waits for (push message): ignore
                if isinstance(value, RedisError):
                    d.errback(value)
                else:
                    d.callback(value)
        except _Incomplete:
            pass
        except (RedisError, ValueError) as e:
            self._buf = b""
            self.transport.loseConnection()  # type: ignore[union-attr]
            self._fail_all(Failure(e))
            return
        self._buf = buf[pos:]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = reason
        self._fail_all(Failure(ConnectionClosed(f"redis connection lost: {reason.value}")))

    def _fail_all(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(failure)
