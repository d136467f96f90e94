"""Recordings: every raw frame and REST answer a service received, in a gzip file.

Sits beside the service at the end of the flow, fed from the two ends of the
client: the transport's ``frame_tap`` (each WebSocket frame as received,
before inflating or decoding) and the REST client's ``tap`` (each answer of an
unsigned request).  :class:`RecordingWriter` appends them, with their receive
times, as JSON lines to a gzip file, written through Twisted's thread pool in
the background with bounded memory; :class:`RecordingReader` reads a file back
for :mod:`txexchange.service.replay`, and :func:`read_header` checks one before
anything starts.

The format (version 1), one JSON document per line:

* ``{"k": "header", "format": "txexchange-recording", "version": 1, "t": ...,
  "feeds": [...], "exchanges": {NAME: {"urls": ..., "options": {...}}}, ...}``
* ``{"k": "ws", "ex": NAME, "u": URL, "t": ..., "bin": false, "text": "..."}``
  (binary frames, or text that is not UTF-8: ``"b64"`` instead of ``"text"``)
* ``{"k": "rest", "ex": NAME, "m": "GET", "p": "/api/v3/depth?symbol=..", "t": ...,
  "s": 200, "text": "..."}``
* ``{"k": "status", "ex": NAME, "t": ..., "event": "Disconnected", "u": URL}``
  (connection events, for information)
* ``{"k": "gap", "t": ..., "dropped": N}``: the writer fell behind and dropped
  records here; a replay stops at it
* ``{"k": "end", "t": ..., "frames": N, "rest": N}``: the service stopped observing.

``t`` is the client clock's ``seconds()`` when the frame or answer arrived.
Nothing secret is ever written: signed REST requests are not tapped, the
WebSocket API connection has no frame tap, and the header holds only client
options (never credentials) and URLs.
"""

from __future__ import annotations

import base64
import gzip
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters.rest import RestRequest
from txexchange.codec import DecodeError, dumps, loads
from txexchange.errors import BadRequest
from txexchange.service.config import ConfigError

__all__ = [
    "FORMAT",
    "VERSION",
    "RecordingError",
    "RecordingReader",
    "RecordingWriter",
    "payload_of",
    "read_header",
]

log = Logger()

FORMAT = "txexchange-recording"
VERSION = 1


class RecordingError(ConfigError):
    """A recording cannot be written, or a file is not a readable recording."""


def _encode_payload(record: dict[str, Any], payload: bytes) -> dict[str, Any]:
    try:
        record["text"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        record["b64"] = base64.b64encode(payload).decode("ascii")
    return record


def payload_of(record: Mapping[str, Any]) -> bytes:
    """The raw bytes of a ``ws`` or ``rest`` record, exactly as received."""
    text = record.get("text")
    if text is not None:
        return str(text).encode("utf-8")
    return base64.b64decode(record["b64"])


class RecordingWriter:
    """Appends what a service receives to a gzip JSON lines file.

    Lines are buffered in memory and handed to Twisted's thread pool (one
    write at a time, in order) every ``flush_bytes`` and on :meth:`flush`.
    If the disk falls behind by more than ``max_backlog`` bytes, records are
    dropped (counted, logged) and a ``gap`` record marks the place, so memory
    stays bounded and a replay knows where the recording stops being whole.

    :param reactor: its thread pool does the writing (a reactor without one,
        such as a ``Clock``, gets synchronous writes).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reactor: Any,
        flush_bytes: int = 1 << 20,
        max_backlog: int = 64 << 20,
        compresslevel: int = 6,
    ) -> None:
        self.path = Path(path)
        self._reactor = reactor
        self._flush_bytes = flush_bytes
        self._max_backlog = max_backlog
        self._compresslevel = compresslevel
        self._file: IO[bytes] | None = None
        self._lines: list[bytes] = []
        self._buffered = 0
        self._chunks: deque[bytes] = deque()
        self._backlog = 0
        self._writing = False
        self._idle: list[Deferred[None]] = []
        self._ended = False
        self._gap = 0
        #: frames and REST answers recorded
        self.frames = 0
        self.rest = 0
        #: records dropped because the disk fell behind
        self.dropped = 0
        #: failed writes
        self.errors = 0

    # -- life cycle ----------------------------------------------------------

    def open(self, header: Mapping[str, Any]) -> None:
        """Create the file and write the header (synchronously: it is small)."""
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            raw = self.path.open("wb")
        except OSError as e:
            raise RecordingError(
                f"--record {str(self.path)!r}: cannot write: {e.strerror}"
            ) from None
        self._file = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=self._compresslevel)
        self._raw = raw
        head = {"k": "header", "format": FORMAT, "version": VERSION, **header}
        self._file.write(dumps(head) + b"\n")
        self._file.flush()

    def end(self, t: float) -> None:
        """The service stopped observing: write the ``end`` record, ignore anything after."""
        if self._ended or self._file is None:
            return
        self._add({"k": "end", "t": t, "frames": self.frames, "rest": self.rest})
        self._ended = True

    def close(self, t: float | None = None) -> Deferred[None]:
        """Write what is buffered and close the file (fires when it is on disk)."""
        if t is not None:
            self.end(t)
        self._ended = True
        self.flush()

        def close(_: Any) -> Any:
            f, self._file = self._file, None
            if f is None:
                return None
            return self._run(_close_file, f, self._raw)

        return self._when_idle().addCallback(close).addCallback(lambda _: None)

    # -- the taps ----------------------------------------------------------------

    def frame_tap(self, exchange: str) -> Callable[[str, float, bytes, bool], None]:
        """A ``TransportOptions.frame_tap`` recording ``exchange``'s frames."""

        def tap(url: str, t: float, payload: bytes, is_binary: bool) -> None:
            if self._ended:
                return
            try:
                record = {"k": "ws", "ex": exchange, "u": url, "t": t, "bin": is_binary}
                if is_binary:
                    record["b64"] = base64.b64encode(payload).decode("ascii")
                else:
                    _encode_payload(record, payload)
                self.frames += 1
                self._add(record)
            except Exception:  # noqa: BLE001 - the hot path must never fail because of us
                self.errors += 1
                log.failure("recording a frame failed")

        return tap

    def rest_tap(self, exchange: str) -> Callable[[RestRequest, int, bytes, float], None]:
        """A ``RestClient`` tap recording ``exchange``'s unsigned REST answers."""

        def tap(request: RestRequest, status: int, body: bytes, t: float) -> None:
            if self._ended or request.signed:
                return
            try:
                record = {
                    "k": "rest",
                    "ex": exchange,
                    "m": request.method,
                    "p": request.url(""),
                    "t": t,
                    "s": status,
                }
                self.rest += 1
                self._add(_encode_payload(record, body))
            except Exception:  # noqa: BLE001 - never break the client
                self.errors += 1
                log.failure("recording a REST answer failed")

        return tap

    def status(self, exchange: str, t: float, event: Any) -> None:
        """Note a connection event (for information; a replay warns on reconnects)."""
        if self._ended:
            return
        record: dict[str, Any] = {"k": "status", "ex": exchange, "t": t}
        record["event"] = type(event).__name__
        url = getattr(event, "url", None)
        if isinstance(url, str):
            record["u"] = url
        self._add(record)

    # -- buffering and writing ---------------------------------------------------

    def _add(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        if self._backlog + self._buffered > self._max_backlog and record["k"] in ("ws", "rest"):
            self.dropped += 1
            if self._gap == 0:
                log.warn(
                    "recording {path}: the disk is behind by {mb:.0f} MB; dropping records "
                    "(a replay stops at this point)",
                    path=str(self.path),
                    mb=self._backlog / 1e6,
                )
            self._gap += 1
            return
        if self._gap:
            gap = dumps({"k": "gap", "t": record.get("t"), "dropped": self._gap}) + b"\n"
            self._gap = 0
            self._lines.append(gap)
            self._buffered += len(gap)
        line = dumps(record) + b"\n"
        self._lines.append(line)
        self._buffered += len(line)
        if self._buffered >= self._flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Hand what is buffered to the writer (called every second by the service)."""
        if not self._lines:
            return
        chunk = b"".join(self._lines)
        self._lines = []
        self._buffered = 0
        self._chunks.append(chunk)
        self._backlog += len(chunk)
        self._pump()

    def _pump(self) -> None:
        if self._writing or not self._chunks or self._file is None:
            if not self._writing and not self._chunks:
                idle, self._idle = self._idle, []
                for d in idle:
                    d.callback(None)
            return
        chunks = list(self._chunks)
        self._chunks.clear()
        data = b"".join(chunks)
        self._writing = True
        self._run(self._file.write, data).addBoth(self._written, len(data))

    def _written(self, result: Any, size: int) -> None:
        self._writing = False
        self._backlog -= size
        if isinstance(result, Failure):
            self.errors += 1
            log.error(
                "recording {path}: write failed: {why}",
                path=str(self.path),
                why=result.getErrorMessage(),
            )
        self._pump()

    def _when_idle(self) -> Deferred[None]:
        if not self._writing and not self._chunks:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        get_pool = getattr(self._reactor, "getThreadPool", None)
        if get_pool is None:
            from twisted.internet.defer import maybeDeferred

            return maybeDeferred(f, *args)
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self._reactor, get_pool(), f, *args)


def _close_file(f: IO[bytes], raw: IO[bytes]) -> None:
    f.close()
    raw.close()


# -- reading -----------------------------------------------------------------------


def _bad(path: str | os.PathLike[str], why: str) -> RecordingError:
    return RecordingError(f"--replay {str(path)!r}: {why}")


def _check_header(path: str | os.PathLike[str], head: Any) -> dict[str, Any]:
    from txexchange.client import ClientOptions
    from txexchange.service.config import ConfigError, FeedSpec, check_exchange

    if not isinstance(head, dict) or head.get("k") != "header" or head.get("format") != FORMAT:
        raise _bad(path, f"not a txexchange recording (no {FORMAT} header)")
    version = head.get("version")
    if version != VERSION:
        raise _bad(
            path,
            f"recording format version {version!r} is not supported (this txexchange reads "
            f"version {VERSION})",
        )
    if not isinstance(head.get("t"), int | float):
        raise _bad(path, "bad header: no start time 't'")
    feeds = head.get("feeds")
    exchanges = head.get("exchanges")
    if not isinstance(feeds, list) or not feeds or not isinstance(exchanges, dict):
        raise _bad(path, "bad header: 'feeds' and 'exchanges' are missing")
    try:
        for feed in feeds:
            check_exchange(feed["exchange"], "recorded exchange")
            FeedSpec(feed["exchange"], tuple(feed["symbols"]), tuple(feed["channels"]))
        for settings in exchanges.values():
            ClientOptions(**(settings.get("options") or {}))
    except (ConfigError, BadRequest, KeyError, TypeError, AttributeError) as e:
        raise _bad(path, f"bad header: {e}") from None
    return head


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked header of the recording at ``path``; :class:`RecordingError` if
    the file is missing, not gzip, corrupt or of an unknown format version."""
    try:
        with gzip.open(path, "rb") as f:
            line = f.readline(1 << 20)
    except FileNotFoundError:
        raise _bad(path, "no such file") from None
    except OSError as e:  # gzip.BadGzipFile is an OSError
        raise _bad(path, f"not a gzip file or unreadable ({e})") from None
    except (EOFError, zlib.error) as e:
        raise _bad(path, f"corrupt or truncated ({e})") from None
    try:
        head = loads(line)
    except DecodeError:
        raise _bad(path, "corrupt: the header is not JSON") from None
    return _check_header(path, head)


class RecordingReader:
    """Reads a recording's records in batches (the header first, checked)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        #: the file ended without an ``end`` record, or in a corrupt place
        self.truncated: str | None = None

    def open(self) -> dict[str, Any]:
        header = read_header(self.path)
        self._file = gzip.open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._file.readline(1 << 20)
        return header

    def read_batch(self, n: int = 2000) -> list[dict[str, Any]]:
        """Up to ``n`` records; an empty list at the end (blocking: run it in a thread)."""
        f = self._file
        out: list[dict[str, Any]] = []
        if f is None:
            return out
        try:
            for _ in range(n):
                line = f.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    self.truncated = "the last line is incomplete"
                    break
                out.append(loads(line))
        except (EOFError, OSError, zlib.error) as e:
            self.truncated = f"corrupt or truncated ({e})"
        except DecodeError:
            self.truncated = "corrupt: a line is not JSON"
        if len(out) < n:
            self.close()
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            batch = self.read_batch()
            if not batch:
                return
            yield from batch

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()


def header_feeds(header: Mapping[str, Any]) -> Sequence[Any]:
    """The :class:`~txexchange.service.config.FeedSpec` list of a checked header."""
    from txexchange.service.config import FeedSpec

    return [
        FeedSpec(f["exchange"], tuple(f["symbols"]), tuple(f["channels"])) for f in header["feeds"]
    ]
