"""Bybit v5 order-book integrity (``u`` update ids, snapshot resets) as a pure state machine.

Sits in the adapter layer, between the Bybit message parser (which yields
:class:`BybitBookMessage` values for ``orderbook.{depth}.{symbol}`` pushes)
and the state layer (which applies levels to a book).  :class:`BybitBookSync`
holds no levels, only ids: for every message it returns one *action* telling
the caller what to do.  No I/O, no reactor.

Rules (PROTOCOLS.md section 6.4, Bybit docs "Orderbook"):

* After a subscribe Bybit sends a ``snapshot``, then ``delta`` messages.  A
  new ``snapshot`` at any time replaces the book (Bybit re-sends one when it
  has trouble, "guaranteed to contain the latest data").  Depth-1 streams send
  snapshots only, re-sent every 3 s with an unchanged ``u``.
* ``u == 1`` means the service restarted: the message *is* a snapshot,
  whatever its ``type`` says, and overwrites the book.
* Deltas carry absolute sizes; ``"0"`` deletes (a delete of a price the book
  does not hold is harmless: :class:`~txexchange.state.book.OrderBook`
  ignores it).  Bybit keeps the book at the subscribed depth, so after each
  delta the caller truncates the book to ``depth`` levels a side: levels that
  fall out of range get no further updates.
* Bybit documents no contiguity rule for ``u`` ("Update ID, is always in
  sequence").  The rule enforced: ``u`` must increase; a delta whose ``u`` is
  not above the book's (a regression or a duplicate) means the stream is not
  what it should be -> resync.  ``contiguous=True`` also treats a jump
  (``u != book u + 1``) as a gap.
* Stale snapshot: a snapshot (``u != 1``) whose ``u`` *and* ``seq`` (cross
  sequence: smaller means older, across depths) are both below the book's is
  older than what is held; it is ignored rather than rolled back to.
* Resync for Bybit means *resubscribing* the topic: the REST book
  (``GET /v5/market/orderbook``) only shares ``u`` with the 1000-level stream,
  so it cannot be joined to a 1/50/200-level stream.  Until the new snapshot
  arrives, deltas (late ones of the old subscription) are ignored.

Bybit sends no checksum.  What can be checked on the book actually held is
that it is not *crossed* (best bid below best ask): after applying an action
the caller calls :meth:`BybitBookSync.verify` with its book's ``top(side,
n)``, as for OKX.  The check is armed only after a snapshot that was itself
uncrossed (a book in a call auction may legitimately cross, and resubscribing
would not change that).  A depth-1 stream re-sends a snapshot every 3 s, so
silence there means trouble: :meth:`BybitBookSync.check_silence` says when to
resync.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

import attrs

from txexchange.errors import BadRequest, ProtocolViolation
from txexchange.events import BookDelta, BookSnapshot, Level

__all__ = [
    "BOOK_DEPTHS",
    "LEVEL1_RESEND_INTERVAL",
    "ApplyDelta",
    "ApplySnapshot",
    "BybitBookMessage",
    "BybitBookSync",
    "Ignore",
    "Resync",
    "SyncAction",
    "TopLevels",
]

#: Depths of ``orderbook.{depth}.{symbol}`` on the spot and linear streams.
BOOK_DEPTHS: tuple[int, ...] = (1, 50, 200, 1000)
#: Seconds after which a depth-1 stream re-sends an unchanged snapshot.
LEVEL1_RESEND_INTERVAL = 3.0

#: ``top(side, n)``: the best ``n`` levels of ``side``, best first (``OrderBook.top``).
TopLevels = Callable[[Literal["bids", "asks"], int], Sequence[Level]]


@attrs.frozen(slots=True)
class BybitBookMessage:
    """One ``orderbook.{depth}.{symbol}`` push, before any integrity check.

    ``event`` is a :class:`~txexchange.events.BookSnapshot` for ``type:
    snapshot`` or a :class:`~txexchange.events.BookDelta` for ``type: delta``
    (``nonce`` = ``u``, ``timestamp`` = ``ts``).  ``seq`` is Bybit's cross
    sequence, ``cts`` the matching engine's time (ms).  ``depth`` tells books
    of one symbol apart.  Feed it to :meth:`BybitBookSync.on_message`.
    """

    event: BookSnapshot | BookDelta
    depth: int
    seq: int | None = None
    cts: int | None = None

    @property
    def symbol(self) -> str:
        return self.event.symbol


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ApplySnapshot:
    """Replace the book with ``snapshot``, then call :meth:`BybitBookSync.verify`.

    ``restart`` is true for a ``u == 1`` message (Bybit's service restarted).
    """

    snapshot: BookSnapshot
    restart: bool = False


@attrs.frozen(slots=True)
class ApplyDelta:
    """Apply ``delta``, truncate the book to ``depth`` levels a side, then verify."""

    delta: BookDelta
    depth: int


@attrs.frozen(slots=True)
class Ignore:
    """Nothing to do (a stale snapshot, a late delta while waiting for a snapshot)."""

    reason: str


@attrs.frozen(slots=True)
class Resync:
    """The book is inconsistent: mark it stale and resubscribe the topic.

    The new subscription's snapshot resyncs the book; until then deltas are
    ignored.
    """

    reason: str


SyncAction = ApplySnapshot | ApplyDelta | Ignore | Resync

_WAITING = Ignore("waiting for a snapshot")
_STALE_SNAPSHOT = Ignore("stale snapshot: u and seq older than the book's")


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return value if value.is_finite() else None


class BybitBookSync:
    """Update-id bookkeeping for one Bybit book (one symbol, one depth).

    Feed it every :class:`BybitBookMessage` of the topic with
    :meth:`on_message` and act on the action returned; after an
    :class:`ApplySnapshot` or :class:`ApplyDelta` call :meth:`verify` with the
    book's ``top``.  On :class:`Resync` mark the book stale and resubscribe.

    :param contiguous: treat ``u != book u + 1`` as a gap (Bybit does not
        document that its ids are consecutive, so this is off by default).
    :param check_crossed: verify that the book is not crossed after applying.
    :param silence_timeout: seconds without a message after which
        :meth:`check_silence` asks for a resync; ``None``: never.  The
        default (any negative value) is 10 s for depth 1 (Bybit re-sends its
        snapshot every 3 s) and ``None`` for other depths (a quiet book may
        legitimately send nothing).
    """

    __slots__ = (
        "_armed",
        "_last",
        "_last_rx",
        "_pending_verify",
        "_seq",
        "_synced",
        "check_crossed",
        "contiguous",
        "depth",
        "silence_timeout",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        depth: int,
        *,
        contiguous: bool = False,
        check_crossed: bool = True,
        silence_timeout: float | None = -1.0,
    ) -> None:
        if type(depth) is not int or depth < 1:
            raise BadRequest(f"depth must be a positive integer, not {depth!r}")
        self.symbol = symbol
        self.depth = depth
        self.contiguous = contiguous
        self.check_crossed = check_crossed
        if silence_timeout is not None and silence_timeout < 0:
            silence_timeout = 10.0 if depth == 1 else None
        self.silence_timeout = silence_timeout
        self._synced = False
        self._last: int | None = None
        self._seq: int | None = None
        #: the crossed-book check is armed (last snapshot was uncrossed)
        self._armed = False
        #: verify() has something to check (an action was just returned)
        self._pending_verify: Literal["snapshot", "delta"] | None = None
        self._last_rx: float | None = None

    # -- introspection -------------------------------------------------------

    @property
    def state(self) -> Literal["waiting", "synced"]:
        """``"synced"`` once a snapshot has been applied, else ``"waiting"``."""
        return "synced" if self._synced else "waiting"

    @property
    def update_id(self) -> int | None:
        """The ``u`` the book is at (``None`` until synced)."""
        return self._last if self._synced else None

    @property
    def seq(self) -> int | None:
        """The cross sequence of the last message applied (``None`` until synced)."""
        return self._seq if self._synced else None

    def reset(self) -> None:
        """Forget everything (e.g. after a reconnect): wait for a snapshot again."""
        self._synced = False
        self._last = None
        self._seq = None
        self._armed = False
        self._pending_verify = None
        self._last_rx = None

    # -- inputs ----------------------------------------------------------------

    def on_message(self, message: BybitBookMessage, received_at: float | None = None) -> SyncAction:
        """Judge one push of the topic; ``received_at`` (local seconds) feeds
        :meth:`check_silence`."""
        event = message.event
        if event.symbol != self.symbol:
            raise BadRequest(f"message for {event.symbol!r} fed to the {self.symbol!r} book")
        if message.depth != self.depth:
            raise BadRequest(
                f"depth-{message.depth} message fed to the depth-{self.depth} {self.symbol} book"
            )
        u = event.nonce
        if u is None:
            raise ProtocolViolation(f"{self.symbol}: Bybit book message without u")
        if received_at is not None:
            self._last_rx = received_at
        self._pending_verify = None
        if u == 1:
            # Bybit's service restarted: a snapshot, whatever the type says.
            snapshot = (
                event
                if type(event) is BookSnapshot
                else BookSnapshot(event.symbol, event.bids, event.asks, u, event.timestamp)
            )
            return self._snapshot(snapshot, message.seq, restart=True)
        if type(event) is BookSnapshot:
            last = self._last
            if (
                self._synced
                and last is not None
                and u < last
                and (message.seq is None or self._seq is None or message.seq < self._seq)
            ):
                return _STALE_SNAPSHOT
            return self._snapshot(event, message.seq)
        assert isinstance(event, BookDelta)
        if not self._synced:
            return _WAITING
        last = self._last
        assert last is not None
        if u <= last:
            what = "duplicate" if u == last else "regression"
            return self._resync(f"update id {what}: u={u} after u={last}")
        if self.contiguous and u != last + 1:
            return self._resync(f"gap: u={u} after u={last}")
        self._last = u
        if message.seq is not None:
            self._seq = message.seq
        self._pending_verify = "delta"
        return ApplyDelta(event, self.depth)

    def verify(self, top: TopLevels) -> Resync | None:
        """Check the book after applying the last action (``top`` = ``OrderBook.top``).

        Returns ``None`` when it is consistent (or nothing is checked), else a
        :class:`Resync`: the book must be marked stale and resubscribed.
        """
        pending = self._pending_verify
        self._pending_verify = None
        if pending is None or not self.check_crossed:
            return None
        crossed = _crossed(top)
        if pending == "snapshot":
            # Arm the check only on a snapshot the exchange itself sent uncrossed.
            self._armed = crossed is None
            return None
        if crossed is None or not self._armed:
            return None
        return self._resync(f"crossed book after u={self._last}: {crossed}")

    def check_silence(self, now: float) -> Resync | None:
        """A :class:`Resync` if the synced book heard nothing for ``silence_timeout`` s."""
        timeout = self.silence_timeout
        if timeout is None or not self._synced or self._last_rx is None:
            return None
        silent = now - self._last_rx
        if silent < timeout:
            return None
        return self._resync(f"no book message for {silent:.1f}s")

    # -- internals -------------------------------------------------------------

    def _snapshot(
        self, snapshot: BookSnapshot, seq: int | None, *, restart: bool = False
    ) -> ApplySnapshot:
        self._synced = True
        self._last = snapshot.nonce
        self._seq = seq
        self._pending_verify = "snapshot"
        return ApplySnapshot(snapshot, restart)

    def _resync(self, reason: str) -> Resync:
        self._synced = False
        self._armed = False
        self._pending_verify = None
        return Resync(f"{self.symbol} depth {self.depth}: {reason}")

    def __repr__(self) -> str:
        if self._synced:
            return f"<BybitBookSync {self.symbol} depth {self.depth} synced at u={self._last}>"
        return f"<BybitBookSync {self.symbol} depth {self.depth} waiting>"


def _crossed(top: TopLevels) -> str | None:
    """``"bid X >= ask Y"`` if the best bid is not below the best ask, else ``None``."""
    bids = top("bids", 1)
    asks = top("asks", 1)
    if not bids or not asks:
        return None
    bid = _decimal(bids[0][0])
    ask = _decimal(asks[0][0])
    if bid is None or ask is None or bid < ask:
        return None
    return f"bid {bids[0][0]} >= ask {asks[0][0]}"
