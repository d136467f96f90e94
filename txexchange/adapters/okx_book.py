"""OKX v5 order-book integrity (``seqId`` chain, CRC32 checksum) as a pure state machine.

Sits in the adapter layer, between the OKX message parser (which yields
:class:`OkxBookMessage` values for the incremental book channels and
:class:`~txexchange.events.BookSnapshot` values for REST snapshots) and the
state layer (which applies levels to a book).  :class:`OkxBookSync` holds no
levels, only sequence ids: for every message it returns one *action* telling
the caller what to do.  No I/O, no reactor.

Rules (PROTOCOLS.md section 2.4, OKX docs "order book channel"):

* ``seqId`` is per instrument; an update's ``prevSeqId`` must equal the
  ``seqId`` of the message before it.  Snapshots carry ``prevSeqId = -1``.
* Keep-alive: a silent book gets an update with no levels and
  ``seqId == prevSeqId`` (about every 60 s); it is ignored.
* Sequence reset (after maintenance): an update whose ``seqId`` is *smaller*
  than its ``prevSeqId``; accepted when it chains (``prevSeqId`` == last
  ``seqId``), and numbering continues from it.  A reset that does not chain
  means updates were missed before it: that is a gap like any other.
* Gap: ``prevSeqId`` != last ``seqId`` (and not an old duplicate, i.e.
  ``prevSeqId < seqId <= last``, which is ignored) -> drop the book, resync.
* Checksum (legacy; OKX sends ``0`` since 2026-06-23): when non-zero, CRC32
  (signed 32-bit) of ``bidPx:bidSz:askPx:askSz:...`` over the best 25 levels
  of each side, interleaved, skipping the missing levels of the shorter side,
  taken from the book *after* the message is applied.

Two ways to get the starting book, both handled (``snapshots="auto"``):

* the channel's own ``action: "snapshot"`` push on subscribe (the book is
  replaced and the chain starts at its ``seqId``);
* the procedure OKX prescribes once that push is gone (announced for August
  2026): buffer updates, fetch ``GET /api/v5/market/books`` (its ``seqId`` is
  the snapshot id), refetch while the snapshot's ``seqId`` is below the first
  buffered ``prevSeqId``, drop buffered updates with ``seqId`` <= the
  snapshot's, the first kept one must satisfy ``prevSeqId <= snapshot seqId <
  seqId``, then the normal chain.

In ``"auto"`` mode the first message decides: a snapshot push is used, an
update starts the REST procedure.  Every resync (gap, checksum mismatch) goes
through REST, which works whether or not the channel still pushes snapshots
and costs no subscribe request (OKX allows only 480 of those per hour per
connection).  ``snapshots="rest"`` ignores snapshot pushes altogether.

Checksum design: the sync never sees levels, so it cannot compute the
checksum itself.  An action that changes the book carries ``checksum`` (the
value to verify, or ``None``); after applying it the caller calls
:meth:`OkxBookSync.verify` with its book's ``top(side, n)``, which computes
:func:`okx_checksum` over the real book and returns ``None`` or a
:class:`Resync`.  Verifying the book actually held (rather than a model of it
inside the sync) is what makes the checksum worth having.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

from txexchange.errors import BadRequest, ProtocolViolation
from txexchange.events import BookDelta, BookSnapshot, Level

__all__ = [
    "CHECKSUM_DEPTH",
    "ApplyDelta",
    "ApplySnapshot",
    "Buffer",
    "Ignore",
    "NeedSnapshot",
    "OkxBookMessage",
    "OkxBookSync",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
    "TopLevels",
    "okx_checksum",
    "okx_checksum_string",
]

#: Levels per side that the checksum covers.
CHECKSUM_DEPTH = 25

#: ``top(side, n)``: the best ``n`` levels of ``side`` (``"bids"``/``"asks"``),
#: best first, as ``(price, amount)`` wire strings -- e.g. ``OrderBook.top``.
TopLevels = Callable[[Literal["bids", "asks"], int], Sequence[Level]]


def okx_checksum_string(
    bids: Sequence[Level], asks: Sequence[Level], depth: int = CHECKSUM_DEPTH
) -> str:
    """The string OKX's checksum is taken over: ``bidPx:bidSz:askPx:askSz:...``.

    ``bids`` and ``asks`` are best first; only the first ``depth`` of each
    count.  Where one side is shorter its missing levels are skipped.  Only
    the first two fields of a level are used, so OKX's four-field levels work
    as well as ``(price, amount)`` pairs.
    """
    parts: list[str] = []
    append = parts.append
    nb = min(len(bids), depth)
    na = min(len(asks), depth)
    for i in range(max(nb, na)):
        if i < nb:
            level = bids[i]
            append(level[0])
            append(level[1])
        if i < na:
            level = asks[i]
            append(level[0])
            append(level[1])
    return ":".join(parts)


def okx_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """OKX's book checksum: CRC32 of :func:`okx_checksum_string`, as a signed 32-bit int."""
    crc = zlib.crc32(okx_checksum_string(bids, asks).encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc


@attrs.frozen(slots=True)
class OkxBookMessage:
    """One push of an incremental OKX book channel, before any integrity check.

    ``event`` is a :class:`~txexchange.events.BookSnapshot` for
    ``action: "snapshot"`` (``nonce`` = ``seqId``) or a
    :class:`~txexchange.events.BookDelta` for ``action: "update"`` (``nonce``
    = ``seqId``, ``prev_id`` = ``prevSeqId``).  ``checksum`` is the value OKX
    sent (``0``: none).  ``channel`` (``"books"``, ``"books-l2-tbt"``, ...)
    tells books of one symbol apart.  Feed it to :meth:`OkxBookSync.on_message`.
    """

    event: BookSnapshot | BookDelta
    checksum: int = 0
    channel: str = "books"

    @property
    def symbol(self) -> str:
        return self.event.symbol


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class NeedSnapshot:
    """The first update of a (re)start was buffered: fetch the REST snapshot now.

    A snapshot must reach at least ``first_prev_seq_id`` (the first buffered
    update's ``prevSeqId``) to be usable.
    """

    first_prev_seq_id: int


@attrs.frozen(slots=True)
class Buffer:
    """The update was buffered; keep waiting for the snapshot already asked for.

    ``restarted`` is true when the buffer had to be emptied first (a gap
    between buffered updates, the buffer limit, a sequence reset):
    ``first_prev_seq_id`` then moved and a snapshot already in flight may turn
    out too old.
    """

    first_prev_seq_id: int | None
    buffered: int
    restarted: bool = False


@attrs.frozen(slots=True)
class SnapshotTooOld:
    """The REST snapshot cannot be joined to the buffered updates: fetch again."""

    snapshot_seq_id: int
    first_prev_seq_id: int | None
    reason: str = "snapshot seqId is older than the first buffered update's prevSeqId"


@attrs.frozen(slots=True)
class ApplySnapshot:
    """Replace the book with ``snapshot``, apply ``deltas`` in order, then verify.

    ``seq_id`` is the book's sequence id afterwards.  If ``checksum`` is not
    ``None``, call :meth:`OkxBookSync.verify` once everything is applied.
    """

    snapshot: BookSnapshot
    deltas: tuple[BookDelta, ...]
    seq_id: int
    checksum: int | None = None


@attrs.frozen(slots=True)
class ApplyDelta:
    """Apply ``delta`` to the book, then verify if ``checksum`` is not ``None``."""

    delta: BookDelta
    checksum: int | None = None


@attrs.frozen(slots=True)
class Ignore:
    """Nothing to do (keep-alive, old duplicate, snapshot not needed any more)."""

    reason: str


@attrs.frozen(slots=True)
class Resync:
    """The book is inconsistent: mark it stale and fetch a REST snapshot.

    (Unless a fetch is already in flight: its answer will be judged when it
    arrives.)  When the update that revealed a gap could start the new buffer
    it is already in it and ``first_prev_seq_id`` is its ``prevSeqId``.
    """

    reason: str
    first_prev_seq_id: int | None = None


SyncAction = NeedSnapshot | Buffer | SnapshotTooOld | ApplySnapshot | ApplyDelta | Ignore | Resync

_KEEPALIVE = Ignore("keep-alive: no change")
_STALE = Ignore("old duplicate: seqId <= book seqId")
_LATE_SNAPSHOT = Ignore("book already synced; snapshot not needed")
_SNAPSHOT_IGNORED = Ignore("snapshot push ignored (snapshots='rest')")


class OkxBookSync:
    """Sequence bookkeeping for one OKX book (one symbol, one channel).

    Feed it every message of the book's channel with :meth:`on_message` and
    every REST snapshot (``GET /api/v5/market/books``, parsed with
    ``parse_order_book``) with :meth:`on_snapshot`; act on what they return.
    After applying an action whose ``checksum`` is not ``None``, call
    :meth:`verify`.

    The caller keeps at most one REST fetch in flight: it fetches on
    :class:`NeedSnapshot`, :class:`SnapshotTooOld` and :class:`Resync` unless
    one is already running (its answer is judged on arrival).

    :param snapshots: ``"auto"`` (use a channel snapshot push when the first
        message is one, else REST) or ``"rest"`` (always REST; snapshot pushes
        are ignored, as OKX's post-August-2026 procedure says).
    :param verify_checksum: verify non-zero ``checksum`` fields (only old
        captures have them now).
    :param max_buffer: most updates held while waiting for a snapshot; the
        buffer restarts beyond it.
    """

    __slots__ = (
        "_buffer",
        "_expected",
        "_fetching",
        "_first_prev",
        "_joining",
        "_last",
        "_stale_fetch",
        "_synced",
        "max_buffer",
        "snapshots",
        "symbol",
        "verify_checksum",
    )

    def __init__(
        self,
        symbol: str,
        *,
        snapshots: Literal["auto", "rest"] = "auto",
        verify_checksum: bool = True,
        max_buffer: int = 10_000,
    ) -> None:
        if snapshots not in ("auto", "rest"):
            raise BadRequest(f"snapshots must be 'auto' or 'rest', not {snapshots!r}")
        if max_buffer < 1:
            raise BadRequest("max_buffer must be at least 1")
        self.symbol = symbol
        self.snapshots = snapshots
        self.verify_checksum = verify_checksum
        self.max_buffer = max_buffer
        self._synced = False
        #: book seqId when synced; last buffered seqId while waiting (None: empty)
        self._last: int | None = None
        self._first_prev: int | None = None
        self._buffer: list[tuple[BookDelta, int | None]] = []
        #: synced from REST and no update applied yet: the first one may straddle
        self._joining = False
        #: a REST snapshot was asked for (by an action) and has not been judged
        self._fetching = False
        #: a sequence reset happened while that fetch was in flight: refuse its answer
        self._stale_fetch = False
        #: checksum to verify after the caller applied the last action
        self._expected: int | None = None

    # -- introspection -------------------------------------------------------

    @property
    def state(self) -> Literal["waiting", "synced"]:
        """``"synced"`` once a snapshot has been applied, else ``"waiting"``."""
        return "synced" if self._synced else "waiting"

    @property
    def seq_id(self) -> int | None:
        """The ``seqId`` the book is at (``None`` until synced)."""
        return self._last if self._synced else None

    @property
    def first_prev_seq_id(self) -> int | None:
        """``prevSeqId`` of the first buffered update while waiting, else ``None``."""
        return None if self._synced else self._first_prev

    @property
    def buffered(self) -> tuple[BookDelta, ...]:
        """The updates buffered while waiting for a snapshot."""
        return tuple(d for d, _ in self._buffer)

    @property
    def fetching(self) -> bool:
        """True between an action asking for a REST snapshot and its answer."""
        return self._fetching

    def reset(self) -> None:
        """Forget everything (e.g. after a reconnect or resubscribe)."""
        self._synced = False
        self._last = None
        self._first_prev = None
        self._buffer = []
        self._joining = False
        self._fetching = False
        self._stale_fetch = False
        self._expected = None

    # -- inputs ----------------------------------------------------------------

    def on_message(self, message: OkxBookMessage) -> SyncAction:
        """Judge one push of the book's channel."""
        event = message.event
        if event.symbol != self.symbol:
            raise BadRequest(f"message for {event.symbol!r} fed to the {self.symbol!r} book")
        self._expected = None
        checksum = message.checksum if self.verify_checksum and message.checksum else None
        if type(event) is BookDelta:
            return self._on_update(event, checksum)
        assert isinstance(event, BookSnapshot)
        if event.nonce is None:
            raise ProtocolViolation(f"{self.symbol}: OKX snapshot push without seqId")
        if self.snapshots == "rest":
            return _SNAPSHOT_IGNORED
        # Any snapshot push replaces the book (it is what a (re)subscribe sends).
        self._synced = True
        self._last = event.nonce
        self._joining = False
        self._first_prev = None
        self._buffer = []
        self._stale_fetch = False
        self._expected = checksum
        return ApplySnapshot(event, (), event.nonce, checksum)

    def on_snapshot(self, snapshot: BookSnapshot) -> SyncAction:
        """Judge one REST snapshot (``nonce`` = its ``seqId``)."""
        snap = snapshot.nonce
        if snap is None:
            raise ProtocolViolation(f"{self.symbol}: OKX REST snapshot without seqId")
        if snapshot.symbol != self.symbol:
            raise BadRequest(f"snapshot for {snapshot.symbol!r} fed to the {self.symbol!r} book")
        self._expected = None
        if self._synced:
            self._fetching = False
            self._stale_fetch = False
            return _LATE_SNAPSHOT
        first = self._first_prev
        if self._stale_fetch:
            self._stale_fetch = False
            self._fetching = True
            return SnapshotTooOld(snap, first, "sequence reset while the snapshot was in flight")
        if first is not None and snap < first:
            self._fetching = True
            return SnapshotTooOld(snap, first)
        self._fetching = False
        # The buffer is a contiguous chain from ``first`` <= snap, so the first
        # update with seqId > snap has prevSeqId <= snap.
        kept: list[BookDelta] = []
        checksum: int | None = None
        seq = snap
        for delta, chk in self._buffer:
            assert delta.nonce is not None
            if delta.nonce <= snap:
                continue
            kept.append(delta)
            seq = delta.nonce
            checksum = chk
        self._synced = True
        self._last = seq
        self._joining = not kept
        self._first_prev = None
        self._buffer = []
        self._expected = checksum
        return ApplySnapshot(snapshot, tuple(kept), seq, self._expected)

    def verify(self, top: TopLevels) -> Resync | None:
        """Check the book after applying an action that carried a ``checksum``.

        ``top`` is the book's ``top(side, n)`` (:meth:`OrderBook.top`).
        Returns ``None`` when it matches (or nothing is to be verified), else
        a :class:`Resync`: the book must be marked stale and refetched.
        """
        expected = self._expected
        if expected is None:
            return None
        self._expected = None
        got = okx_checksum(top("bids", CHECKSUM_DEPTH), top("asks", CHECKSUM_DEPTH))
        if got == expected:
            return None
        seq = self._last
        self._synced = False
        self._joining = False
        self._last = None
        self._first_prev = None
        self._buffer = []
        self._fetching = True
        return Resync(f"checksum mismatch at seqId {seq}: got {got}, OKX sent {expected}")

    # -- internals -------------------------------------------------------------

    def _on_update(self, delta: BookDelta, checksum: int | None) -> SyncAction:
        seq = delta.nonce
        prev = delta.prev_id
        if seq is None or prev is None:
            raise ProtocolViolation(f"{self.symbol}: OKX book update without seqId/prevSeqId")
        last = self._last
        if self._synced:
            assert last is not None
            if self._joining:
                # first update after a REST snapshot: prevSeqId <= snap < seqId
                if seq < prev:
                    return self._gap(delta, f"sequence reset right after the snapshot at {last}")
                if seq <= last:
                    return _STALE
                if prev > last:
                    return self._gap(
                        delta, f"gap: prevSeqId {prev} > snapshot seqId {last}", checksum
                    )
                self._joining = False
                self._last = seq
                self._expected = checksum
                return ApplyDelta(delta, checksum)
            if prev == last:
                if seq == prev and not delta.bids and not delta.asks:
                    return _KEEPALIVE
                # normal (seq > prev) or a documented sequence reset (seq < prev)
                self._last = seq
                self._expected = checksum
                return ApplyDelta(delta, checksum)
            if prev <= seq <= last:
                return _STALE
            return self._gap(delta, f"gap: prevSeqId {prev} != book seqId {last}", checksum)
        # waiting for a snapshot (REST procedure)
        if seq < prev:
            # A reset cannot be joined to a snapshot (the numberings differ):
            # start again after it, and refuse a snapshot fetched before it.
            self._buffer = []
            self._first_prev = None
            self._last = None
            if not self._fetching:
                return Ignore("sequence reset while waiting; starting from the next update")
            self._stale_fetch = True
            return Buffer(None, 0, restarted=True)
        if last is None:
            return self._start_buffer(delta, checksum)
        if prev == last:
            if seq == prev and not delta.bids and not delta.asks:
                return Buffer(self._first_prev, len(self._buffer))
            if len(self._buffer) >= self.max_buffer:
                return self._start_buffer(delta, checksum)
            self._buffer.append((delta, checksum))
            self._last = seq
            return Buffer(self._first_prev, len(self._buffer))
        if prev <= seq <= last:
            return Ignore("old duplicate while buffering: seqId <= last buffered seqId")
        return self._start_buffer(delta, checksum)

    def _start_buffer(self, delta: BookDelta, checksum: int | None) -> SyncAction:
        assert delta.nonce is not None and delta.prev_id is not None
        keepalive = delta.nonce == delta.prev_id and not delta.bids and not delta.asks
        self._buffer = [] if keepalive else [(delta, checksum)]
        self._first_prev = delta.prev_id
        self._last = delta.nonce
        if self._fetching:
            return Buffer(delta.prev_id, len(self._buffer), restarted=True)
        self._fetching = True
        return NeedSnapshot(delta.prev_id)

    def _gap(self, delta: BookDelta, reason: str, checksum: int | None = None) -> Resync:
        assert delta.nonce is not None and delta.prev_id is not None
        self._synced = False
        self._joining = False
        self._expected = None
        fetching = self._fetching
        self._fetching = True
        if delta.nonce < delta.prev_id:
            # a reset cannot start a buffer; an older fetch in flight is useless
            self._buffer = []
            self._first_prev = None
            self._last = None
            self._stale_fetch = fetching
            return Resync(reason, None)
        keepalive = delta.nonce == delta.prev_id and not delta.bids and not delta.asks
        self._buffer = [] if keepalive else [(delta, checksum)]
        self._first_prev = delta.prev_id
        self._last = delta.nonce
        return Resync(reason, delta.prev_id)

    def __repr__(self) -> str:
        if self._synced:
            return f"<OkxBookSync {self.symbol} synced at {self._last}>"
        return (
            f"<OkxBookSync {self.symbol} waiting first_prev={self._first_prev} "
            f"buffered={len(self._buffer)}>"
        )
