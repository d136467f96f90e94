"""Binance local order book procedure (diff stream + REST snapshot) as a pure state machine.

Sits in the adapter layer, between the Binance message parser (which yields
:class:`~txexchange.events.BookDelta` / :class:`~txexchange.events.BookSnapshot`)
and the state layer (which applies levels to a book).  :class:`BinanceBookSync`
holds no levels, only update ids: for every delta or snapshot it returns one
*action* telling the caller what to do.  No I/O, no reactor.

The procedure is Binance's current one (corrected 2025-11-12):

1. Subscribe to ``<symbol>@depth`` and buffer events; remember the ``U`` of the
   first buffered event.
2. Fetch ``GET /api/v3/depth?symbol=<SYM>&limit=5000``.
3. The snapshot is too old if it cannot join the first buffered event, i.e.
   the first ``U`` > ``lastUpdateId`` + 1; fetch again.
4. Drop buffered events with ``u`` <= ``lastUpdateId``.
5. Initialise the book from the snapshot; book id := ``lastUpdateId``.
6. Apply the remaining buffered events, then live ones, with:
   ``u`` <= book id -> stale, ignore; ``U`` > book id + 1 -> gap, discard the
   book and start again; otherwise apply and set book id := ``u``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from txexchange.errors import BadRequest, ProtocolViolation
from txexchange.events import BookDelta, BookSnapshot

__all__ = [
    "ApplyDelta",
    "ApplySnapshot",
    "BinanceBookSync",
    "Buffer",
    "Ignore",
    "NeedSnapshot",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
]


@attrs.frozen(slots=True)
class NeedSnapshot:
    """The first event of a (re)start was buffered: fetch the REST snapshot now.

    ``first_update_id`` is that event's ``U``; a snapshot must reach at least
    ``first_update_id - 1`` to be usable.
    """

    first_update_id: int


@attrs.frozen(slots=True)
class Buffer:
    """The delta was buffered; keep waiting for the snapshot already asked for.

    ``restarted`` is true when the buffer had to be emptied first (a gap
    between buffered events, or the buffer limit): ``first_update_id`` then
    moved forward and a snapshot already in flight may turn out too old.
    """

    first_update_id: int
    buffered: int
    restarted: bool = False


@attrs.frozen(slots=True)
class SnapshotTooOld:
    """The snapshot ends before the first buffered event starts: fetch again."""

    snapshot_id: int
    first_update_id: int


@attrs.frozen(slots=True)
class ApplySnapshot:
    """Replace the book with ``snapshot``, then apply ``deltas`` in order.

    ``book_id`` is the book's update id afterwards (the last delta's ``u``,
    or the snapshot's ``lastUpdateId`` when no buffered delta was newer).
    """

    snapshot: BookSnapshot
    deltas: tuple[BookDelta, ...]
    book_id: int


@attrs.frozen(slots=True)
class ApplyDelta:
    """Apply ``delta`` to the book; the book id becomes ``delta.nonce``."""

    delta: BookDelta


@attrs.frozen(slots=True)
class Ignore:
    """Nothing to do (stale or duplicate delta, or a snapshot not needed any more)."""

    reason: str


@attrs.frozen(slots=True)
class Resync:
    """Gap: discard the book (mark it stale) and fetch a new snapshot.

    The delta that revealed the gap is already buffered as the first event of
    the new attempt; ``first_update_id`` is its ``U``.
    """

    reason: str
    first_update_id: int


SyncAction = NeedSnapshot | Buffer | SnapshotTooOld | ApplySnapshot | ApplyDelta | Ignore | Resync

_STALE = Ignore("stale: u <= book id")
_DUPLICATE = Ignore("duplicate or out of order while buffering: u <= last buffered u")
_LATE_SNAPSHOT = Ignore("book already synced; snapshot not needed")


class BinanceBookSync:
    """Update-id bookkeeping for one Binance symbol's local book.

    Feed it every ``depthUpdate`` of the symbol with :meth:`on_delta` and
    every REST snapshot with :meth:`on_snapshot`; act on what they return.
    The caller keeps at most one snapshot fetch in flight: it fetches on
    :class:`NeedSnapshot`, :class:`SnapshotTooOld` and :class:`Resync` (unless
    a fetch is already running, whose answer will be judged on arrival).

    A snapshot that arrives before any delta is applied at once
    (``ApplySnapshot`` with no deltas); the first delta then either joins it
    or is a gap.
    """

    __slots__ = ("_buffer", "_first", "_last", "_synced", "max_buffer", "symbol")

    def __init__(self, symbol: str, *, max_buffer: int = 10_000) -> None:
        if max_buffer < 1:
            raise BadRequest("max_buffer must be at least 1")
        self.symbol = symbol
        self.max_buffer = max_buffer
        self._synced = False
        #: book id when synced; last buffered ``u`` while waiting (None: empty)
        self._last: int | None = None
        self._first: int | None = None
        self._buffer: list[BookDelta] = []

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
    def first_update_id(self) -> int | None:
        """``U`` of the first buffered delta while waiting, else ``None``."""
        return None if self._synced else self._first

    @property
    def buffered(self) -> Sequence[BookDelta]:
        """The deltas buffered while waiting for a snapshot (read-only view)."""
        return tuple(self._buffer)

    def reset(self) -> None:
        """Forget everything (e.g. after a reconnect): wait for deltas again."""
        self._synced = False
        self._last = None
        self._first = None
        self._buffer = []

    # -- inputs ----------------------------------------------------------------

    def on_delta(self, delta: BookDelta) -> SyncAction:
        """Judge one ``depthUpdate`` of this symbol."""
        first = delta.first_id
        last = delta.nonce
        if first is None or last is None:
            raise ProtocolViolation(f"{self.symbol}: Binance depth delta without U/u ids")
        if delta.symbol != self.symbol:
            raise BadRequest(f"delta for {delta.symbol!r} fed to the {self.symbol!r} book")
        previous = self._last
        if self._synced:
            assert previous is not None
            if last <= previous:
                return _STALE
            if first > previous + 1:
                self._restart(delta)
                return Resync(f"gap: U={first} > book id {previous} + 1", first)
            self._last = last
            return ApplyDelta(delta)
        # waiting for a snapshot
        if previous is None:
            self._restart(delta)
            return NeedSnapshot(first)
        if last <= previous:
            return _DUPLICATE
        if first > previous + 1 or len(self._buffer) >= self.max_buffer:
            self._restart(delta)
            return Buffer(first, 1, restarted=True)
        self._buffer.append(delta)
        self._last = last
        assert self._first is not None
        return Buffer(self._first, len(self._buffer))

    def advance(self, first: int | None, last: int | None) -> bool:
        """The steady-state shortcut of :meth:`on_delta`, allocating nothing.

        ``first``/``last`` are the ``U``/``u`` of a delta of this symbol.  When
        synced and the delta joins the book (``U`` <= book id + 1 <= ``u``),
        the book id becomes ``u`` and the answer is true: apply the delta,
        exactly as for :meth:`on_delta`'s :class:`ApplyDelta`.  Otherwise
        nothing changes and the answer is false: ask :meth:`on_delta`.
        """
        if not self._synced or first is None or last is None:
            return False
        previous = self._last
        if previous is None or last <= previous or first > previous + 1:
            return False
        self._last = last
        return True

    def on_snapshot(self, snapshot: BookSnapshot) -> SyncAction:
        """Judge one REST snapshot (``nonce`` = ``lastUpdateId``)."""
        snapshot_id = snapshot.nonce
        if snapshot_id is None:
            raise ProtocolViolation(f"{self.symbol}: Binance snapshot without lastUpdateId")
        if snapshot.symbol != self.symbol:
            raise BadRequest(f"snapshot for {snapshot.symbol!r} fed to the {self.symbol!r} book")
        if self._synced:
            return _LATE_SNAPSHOT
        first = self._first
        if first is not None and first > snapshot_id + 1:
            return SnapshotTooOld(snapshot_id, first)
        # The buffer is contiguous from ``first`` <= snapshot_id + 1, so the
        # first delta with u > snapshot_id starts at or before snapshot_id + 1.
        book_id = snapshot_id
        kept: list[BookDelta] = []
        for delta in self._buffer:
            assert delta.nonce is not None and delta.first_id is not None
            if delta.nonce <= book_id:
                continue
            if delta.first_id > book_id + 1:  # pragma: no cover - buffer is contiguous
                self._restart(delta)
                return Resync(f"gap: U={delta.first_id} > book id {book_id} + 1", delta.first_id)
            kept.append(delta)
            book_id = delta.nonce
        self._synced = True
        self._last = book_id
        self._first = None
        self._buffer = []
        return ApplySnapshot(snapshot, tuple(kept), book_id)

    def _restart(self, delta: BookDelta) -> None:
        assert delta.first_id is not None and delta.nonce is not None
        self._synced = False
        self._buffer = [delta]
        self._first = delta.first_id
        self._last = delta.nonce

    def __repr__(self) -> str:
        if self._synced:
            return f"<BinanceBookSync {self.symbol} synced at {self._last}>"
        return (
            f"<BinanceBookSync {self.symbol} waiting first_U={self._first} "
            f"buffered={len(self._buffer)}>"
        )
