"""Gemini order-book integrity (current ``U``/``u`` API and legacy v1 ``socket_sequence``).

Sits in the adapter layer, between the Gemini message parsers in
:mod:`txexchange.adapters.gemini` (which yield
:class:`~txexchange.events.BookDelta`, :class:`~txexchange.events.BookSnapshot`
and :class:`V1Update` values) and the state layer (which applies levels to a
book).  The machines here hold no levels, only ids: for every input they
return one *action* telling the caller what to do.  No I/O, no reactor.

Current API (``wss://ws.gemini.com``, ``{sym}@depth`` / ``{sym}@depth@100ms``)
-- :class:`GeminiBookSync`:

* A diff carries ``U`` (first) and ``u`` (last update id).  Gemini's stream
  *overlaps*: the next diff's ``U`` equals the previous diff's ``u`` (Gemini's
  own SDK, ``packages/sdk-typescript/src/orderbook.ts``: "overlaps at U ==
  lastUpdateId").  So with book id ``b``: ``u <= b`` is stale (ignored),
  ``U > b`` is a gap (resync), otherwise apply and ``b := u``.  Binance's
  contiguous rule (``U == b + 1`` also joins) is available with
  ``contiguous=True`` in case Gemini's stream turns out to follow it.
* Starting book, either of:

  - connect with ``?snapshot=-1`` (or ``N``): right after the subscribe is
    acknowledged the first frame of the stream is a ``depthUpdate`` with
    ``U == u`` holding the whole (top-N) book.  Gemini sends no distinct
    snapshot message, so the caller says when to expect one with
    :meth:`GeminiBookSync.expect_snapshot` (on every subscribe
    acknowledgement, including after a reconnect).  Should the snapshot come
    as a book frame with ``lastUpdateId`` instead, feed it to
    :meth:`GeminiBookSync.on_snapshot`, which accepts it the same way;
  - the WebSocket ``depth`` method (``{"lastUpdateId", "bids", "asks"}``) or
    a top-N partial-depth frame with ``lastUpdateId``, fed to
    :meth:`GeminiBookSync.on_snapshot`: diffs are buffered meanwhile; a
    snapshot that cannot reach the first buffered diff is
    :class:`SnapshotTooOld`; buffered diffs it already covers are dropped.

* Stale-snapshot detection: a snapshot older than the book already held, or
  older than the buffered diffs, is never applied.
* Gemini publishes no checksum.  :meth:`GeminiBookSync.verify` offers the one
  check that needs none: after an action the caller may pass its book's
  ``top``; a crossed book (best bid >= best ask) can only be a diverged one
  and yields :class:`Resync`.

Legacy Market Data v1 (``wss://api.gemini.com/v1/marketdata/{symbol}``) --
:class:`GeminiV1Sync`: one socket per symbol; every message (heartbeats
included) carries ``socket_sequence``, starting at 0 and rising by exactly 1.
Any jump means missed data; the only documented remedy is to reconnect (a new
socket starts again with an ``initial`` book), so the machine answers
:class:`Reconnect`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

import attrs

from txexchange.errors import BadRequest, ProtocolViolation
from txexchange.events import BookDelta, BookSnapshot, Level, Trade

__all__ = [
    "ApplyDelta",
    "ApplySnapshot",
    "Buffer",
    "GeminiBookSync",
    "GeminiV1Sync",
    "Ignore",
    "NeedSnapshot",
    "Reconnect",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
    "TopLevels",
    "V1Action",
    "V1Heartbeat",
    "V1Message",
    "V1Update",
]

#: ``top(side, n)``: the best ``n`` levels of ``side``, best first (``OrderBook.top``).
TopLevels = Callable[[Literal["bids", "asks"], int], Sequence[Level]]


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class NeedSnapshot:
    """No snapshot is coming by itself: ask for one (WebSocket ``depth`` method).

    ``first_update_id`` is the ``U`` of the first buffered diff; a snapshot
    must reach at least that id to be joined.
    """

    first_update_id: int


@attrs.frozen(slots=True)
class Buffer:
    """The diff was buffered; keep waiting for the snapshot already asked for.

    ``restarted``: the buffer was emptied first (a gap between buffered diffs
    or the buffer limit), so a snapshot already in flight may be too old.
    """

    first_update_id: int
    buffered: int
    restarted: bool = False


@attrs.frozen(slots=True)
class SnapshotTooOld:
    """The snapshot ends before the first buffered diff starts: ask again."""

    snapshot_id: int
    first_update_id: int


@attrs.frozen(slots=True)
class ApplySnapshot:
    """Replace the book with ``snapshot``, then apply ``deltas`` in order.

    ``book_id`` is the book's update id afterwards.
    """

    snapshot: BookSnapshot
    deltas: tuple[BookDelta, ...]
    book_id: int


@attrs.frozen(slots=True)
class ApplyDelta:
    """Apply ``delta``; the book id becomes ``delta.nonce``."""

    delta: BookDelta


@attrs.frozen(slots=True)
class Ignore:
    """Nothing to do (stale diff, stale or unneeded snapshot, ...)."""

    reason: str


@attrs.frozen(slots=True)
class Resync:
    """The book is inconsistent: mark it stale and get a new snapshot.

    Either resubscribe (with ``?snapshot=`` on the connection; call
    :meth:`GeminiBookSync.expect_snapshot` when the resubscribe is
    acknowledged) or send the ``depth`` method and feed its answer to
    :meth:`GeminiBookSync.on_snapshot`.  When the diff that revealed the gap
    could start a new buffer it is already buffered and ``first_update_id``
    is its ``U``.
    """

    reason: str
    first_update_id: int | None = None


@attrs.frozen(slots=True)
class Reconnect:
    """Legacy v1: data was missed on this socket; close it and open a new one.

    The book must be marked stale until the new socket's ``initial`` book.
    """

    reason: str


SyncAction = NeedSnapshot | Buffer | SnapshotTooOld | ApplySnapshot | ApplyDelta | Ignore | Resync

_STALE = Ignore("stale: u <= book id")
_DUPLICATE = Ignore("duplicate or out of order while buffering: u <= last buffered u")
_LATE_SNAPSHOT = Ignore("book already synced; snapshot not needed")


def _is_zero(amount: str) -> bool:
    rest = amount.lstrip("0.")
    if not rest:
        return True
    if rest[0] in "123456789":
        return False
    try:
        return Decimal(amount) == 0
    except InvalidOperation:
        return False


def _crossed(top: TopLevels) -> str | None:
    bids = top("bids", 1)
    asks = top("asks", 1)
    if not bids or not asks:
        return None
    bid = bids[0][0]
    ask = asks[0][0]
    try:
        if Decimal(bid) >= Decimal(ask):
            return f"crossed book: best bid {bid} >= best ask {ask}"
    except InvalidOperation:
        return f"unreadable top of book: {bid!r} / {ask!r}"
    return None


class GeminiBookSync:
    """Update-id bookkeeping for one symbol's book on the current Gemini API.

    Feed every ``depthUpdate`` of the symbol to :meth:`on_delta` and every
    snapshot (``depth`` method answer, ``lastUpdateId`` frame) to
    :meth:`on_snapshot`; call :meth:`expect_snapshot` whenever a subscribe to
    the symbol's diff stream is acknowledged on a ``?snapshot=`` connection.
    The caller keeps at most one snapshot request in flight (see
    :attr:`fetching`).

    :param contiguous: also join a diff whose ``U`` is the book id + 1
        (Binance's rule); off by default because Gemini's stream overlaps.
    :param max_buffer: most diffs held while waiting for a snapshot.
    """

    __slots__ = (
        "_buffer",
        "_expect",
        "_fetching",
        "_first",
        "_last",
        "_slack",
        "_synced",
        "max_buffer",
        "symbol",
    )

    def __init__(self, symbol: str, *, contiguous: bool = False, max_buffer: int = 10_000) -> None:
        if max_buffer < 1:
            raise BadRequest("max_buffer must be at least 1")
        self.symbol = symbol
        self.max_buffer = max_buffer
        self._slack = 1 if contiguous else 0
        self._synced = False
        #: book id when synced; last buffered ``u`` while waiting (None: empty)
        self._last: int | None = None
        self._first: int | None = None
        self._buffer: list[BookDelta] = []
        #: the next diff is the ``?snapshot=`` book sent on subscribe
        self._expect = False
        self._fetching = False

    # -- introspection -------------------------------------------------------

    @property
    def state(self) -> Literal["waiting", "synced"]:
        """``"synced"`` once a snapshot has been applied, else ``"waiting"``."""
        return "synced" if self._synced else "waiting"

    @property
    def book_id(self) -> int | None:
        """The update id the book is at (``None`` until synced)."""
        return self._last if self._synced else None

    @property
    def buffered(self) -> tuple[BookDelta, ...]:
        """The diffs buffered while waiting for a snapshot."""
        return tuple(self._buffer)

    @property
    def fetching(self) -> bool:
        """True between an action asking for a snapshot and a snapshot arriving."""
        return self._fetching

    @property
    def expecting_snapshot(self) -> bool:
        """True while the next diff is taken as the subscribe snapshot."""
        return self._expect

    # -- inputs ----------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (reconnect, unsubscribe)."""
        self._synced = False
        self._last = None
        self._first = None
        self._buffer = []
        self._expect = False
        self._fetching = False

    def expect_snapshot(self) -> None:
        """The diff stream was (re)subscribed on a ``?snapshot=`` connection.

        The book is dropped: the next diff of the symbol is the new book.  (A
        resubscribe answers a :class:`Resync` without a ``depth`` request.)
        """
        self.reset()
        self._expect = True

    def on_delta(self, delta: BookDelta) -> SyncAction:
        """Judge one ``depthUpdate`` of this symbol."""
        first = delta.first_id
        last = delta.nonce
        if first is None or last is None:
            raise ProtocolViolation(f"{self.symbol}: Gemini depthUpdate without U/u")
        if delta.symbol != self.symbol:
            raise BadRequest(f"delta for {delta.symbol!r} fed to the {self.symbol!r} book")
        if first > last:
            raise ProtocolViolation(f"{self.symbol}: Gemini depthUpdate with U {first} > u {last}")
        if self._expect:
            self._expect = False
            if first == last:
                snapshot = BookSnapshot(
                    self.symbol,
                    [lv for lv in delta.bids if not _is_zero(lv[1])],
                    [lv for lv in delta.asks if not _is_zero(lv[1])],
                    last,
                    delta.timestamp,
                )
                self._synced = True
                self._last = last
                self._first = None
                self._buffer = []
                self._fetching = False
                return ApplySnapshot(snapshot, (), last)
            # No snapshot came (connection without ?snapshot=): ask for one.
            self._restart(delta)
            self._fetching = True
            return NeedSnapshot(first)
        previous = self._last
        if self._synced:
            assert previous is not None
            if last <= previous:
                return _STALE
            if first > previous + self._slack:
                self._restart(delta)
                self._fetching = True
                return Resync(f"gap: U={first} > book id {previous}", first)
            self._last = last
            return ApplyDelta(delta)
        # waiting for a snapshot
        if previous is None:
            self._restart(delta)
            if self._fetching:
                return Buffer(first, 1, restarted=True)
            self._fetching = True
            return NeedSnapshot(first)
        if last <= previous:
            return _DUPLICATE
        if first > previous + self._slack or len(self._buffer) >= self.max_buffer:
            self._restart(delta)
            return Buffer(first, 1, restarted=True)
        self._buffer.append(delta)
        self._last = last
        assert self._first is not None
        return Buffer(self._first, len(self._buffer))

    def on_snapshot(self, snapshot: BookSnapshot) -> SyncAction:
        """Judge one snapshot (``nonce`` = ``lastUpdateId``)."""
        snap = snapshot.nonce
        if snap is None:
            raise ProtocolViolation(f"{self.symbol}: Gemini snapshot without lastUpdateId")
        if snapshot.symbol != self.symbol:
            raise BadRequest(f"snapshot for {snapshot.symbol!r} fed to the {self.symbol!r} book")
        if self._synced:
            assert self._last is not None
            if snap < self._last:
                return Ignore(f"stale snapshot: lastUpdateId {snap} < book id {self._last}")
            return _LATE_SNAPSHOT
        first = self._first
        if first is not None and first > snap + self._slack:
            self._fetching = True
            return SnapshotTooOld(snap, first)
        self._fetching = False
        self._expect = False
        # The buffer is a chain from ``first`` <= snap, so the first diff with
        # u > snap starts at or before snap: it joins.
        book_id = snap
        kept: list[BookDelta] = []
        for delta in self._buffer:
            assert delta.nonce is not None
            if delta.nonce <= book_id:
                continue
            kept.append(delta)
            book_id = delta.nonce
        self._synced = True
        self._last = book_id
        self._first = None
        self._buffer = []
        return ApplySnapshot(snapshot, tuple(kept), book_id)

    def verify(self, top: TopLevels) -> Resync | None:
        """Sanity check after applying: a crossed book means it diverged.

        ``top`` is the book's ``top(side, n)``.  Returns ``None`` when the book
        looks consistent, else a :class:`Resync` (the machine is back to
        waiting; ask for a snapshot).
        """
        if not self._synced:
            return None
        problem = _crossed(top)
        if problem is None:
            return None
        book_id = self._last
        self._synced = False
        self._last = None
        self._first = None
        self._buffer = []
        self._fetching = True
        return Resync(f"{problem} at update id {book_id}")

    def _restart(self, delta: BookDelta) -> None:
        assert delta.first_id is not None and delta.nonce is not None
        self._synced = False
        self._buffer = [delta]
        self._first = delta.first_id
        self._last = delta.nonce

    def __repr__(self) -> str:
        if self._synced:
            return f"<GeminiBookSync {self.symbol} synced at {self._last}>"
        return (
            f"<GeminiBookSync {self.symbol} waiting first_U={self._first} "
            f"buffered={len(self._buffer)}>"
        )


# ---------------------------------------------------------------------------
# Legacy v1
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class V1Heartbeat:
    """``{"type": "heartbeat", "socket_sequence": n}`` (with ``heartbeat=true``)."""

    socket_sequence: int
    timestamp: int | None = None


@attrs.frozen(slots=True)
class V1Update:
    """One v1 ``update`` message, split by what it does to the book.

    ``snapshot`` holds the ``reason: "initial"`` change events (the whole
    book, first message of a socket); ``delta`` the other change events
    (``remaining`` is the absolute size, ``"0"`` deletes); ``trades`` the
    trade events.  ``event_id`` is Gemini's ``eventId`` (monotonic, shared
    across connections), ``timestamp`` is ``timestampms``.
    """

    socket_sequence: int
    event_id: int | None
    timestamp: int | None
    snapshot: BookSnapshot | None = None
    delta: BookDelta | None = None
    trades: tuple[Trade, ...] = ()
    other: int = 0

    @property
    def symbol(self) -> str | None:
        if self.snapshot is not None:
            return self.snapshot.symbol
        if self.delta is not None:
            return self.delta.symbol
        return self.trades[0].symbol if self.trades else None


V1Message = V1Update | V1Heartbeat
V1Action = ApplySnapshot | ApplyDelta | Ignore | Reconnect


class GeminiV1Sync:
    """``socket_sequence`` and book bookkeeping for one legacy v1 socket (one symbol).

    Feed every parsed message (updates and heartbeats) to :meth:`on_message`;
    call :meth:`reset` when a new socket opens.  A :class:`Reconnect` leaves
    the machine waiting for the next socket's sequence 0.
    """

    __slots__ = ("_expected", "_synced", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._expected = 0
        self._synced = False

    @property
    def state(self) -> Literal["waiting", "synced"]:
        """``"synced"`` once the ``initial`` book arrived on this socket."""
        return "synced" if self._synced else "waiting"

    @property
    def expected_sequence(self) -> int:
        """The ``socket_sequence`` the next message must carry."""
        return self._expected

    def reset(self) -> None:
        """A new socket: sequence 0 and an ``initial`` book come next."""
        self._expected = 0
        self._synced = False

    def on_message(self, message: V1Message) -> V1Action:
        """Judge one message of the socket."""
        seq = message.socket_sequence
        expected = self._expected
        if seq != expected:
            self._synced = False
            self._expected = 0
            return Reconnect(f"socket_sequence {seq}, expected {expected}")
        self._expected = seq + 1
        if type(message) is V1Heartbeat:
            return Ignore("heartbeat")
        assert isinstance(message, V1Update)
        symbol = message.symbol
        if symbol is not None and symbol != self.symbol:
            raise BadRequest(f"v1 message for {symbol!r} fed to the {self.symbol!r} socket")
        if message.snapshot is not None:
            self._synced = True
            deltas = (message.delta,) if message.delta is not None else ()
            return ApplySnapshot(message.snapshot, deltas, message.event_id or 0)
        if message.delta is not None:
            if not self._synced:
                self._expected = 0
                return Reconnect("book change before the initial book")
            return ApplyDelta(message.delta)
        return Ignore("no book change")

    def __repr__(self) -> str:
        return f"<GeminiV1Sync {self.symbol} {self.state} next={self._expected}>"
