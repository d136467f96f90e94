"""Kraken Spot WebSocket v2 order-book integrity (CRC32 checksum, depth) as a pure state machine.

Sits in the adapter layer, between the Kraken message parser (which yields
:class:`KrakenBookMessage` values for the ``book`` channel) and the state
layer (which applies levels to a :class:`~txexchange.state.book.OrderBook`).
:class:`KrakenBookSync` holds no levels: for every message it returns one
*action* telling the caller what to do.  No I/O, no reactor.

Rules (PROTOCOLS.md section 5.3, Kraken docs "book" and the v2 book guide):

* A subscription starts with a ``snapshot``; every later message is an
  ``update`` with the changed levels only (``qty`` 0 deletes; the same price
  may change several times in one message, in order).
* The book holds exactly the subscribed ``depth`` (10, 25, 100, 500, 1000):
  Kraken sends no delete for a level that falls out of range, so after every
  message each side is truncated to ``depth``.
* Every snapshot *and* update carries ``checksum``: CRC32 (unsigned) of the
  best 10 asks (ascending) then the best 10 bids (descending), each level
  as its price then its quantity, rendered with the pair's
  ``price_precision`` / ``qty_precision``, the ``.`` removed and leading
  zeros stripped, concatenated -- taken *after* applying and truncating.
* There are no sequence numbers; the only way back to a consistent book is
  a new snapshot, i.e. unsubscribe and subscribe again.

Verdicts:

* checksum mismatch -> :class:`Resync` (mark the book stale, resubscribe);
  updates are then ignored until the new snapshot replaces the book;
* updates before the first snapshot -> :class:`Ignore` (they cannot be
  placed: there is nothing to apply them to);
* a snapshot older (by its ``timestamp``) than what the book had already
  reached while a resync is pending -> :class:`SnapshotTooOld`
  (resubscribe again); while synced such a snapshot is ignored;
* a delete of a price the book does not hold is harmless (the book ignores
  it); the checksum still decides whether the book is right.

Checksum design (as for OKX): the sync never sees levels, so an action that
changes the book carries ``checksum``; after applying it (and truncating to
``depth``) the caller calls :meth:`KrakenBookSync.verify` with its book's
``top(side, n)``, which computes :func:`kraken_checksum` over the real book.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Literal

import attrs

from txexchange.errors import BadRequest
from txexchange.events import BookDelta, BookSnapshot, Level

__all__ = [
    "BOOK_DEPTHS",
    "CHECKSUM_DEPTH",
    "ApplyDelta",
    "ApplySnapshot",
    "Ignore",
    "KrakenBookMessage",
    "KrakenBookSync",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
    "TopLevels",
    "kraken_checksum",
    "kraken_checksum_string",
    "render_decimal",
]

#: Levels per side that the checksum covers, whatever the subscribed depth.
CHECKSUM_DEPTH = 10
#: Depths the ``book`` channel accepts (default 10).
BOOK_DEPTHS: tuple[int, ...] = (10, 25, 100, 500, 1000)

#: ``top(side, n)``: the best ``n`` levels of ``side``, best first -- e.g. ``OrderBook.top``.
TopLevels = Callable[[Literal["bids", "asks"], int], Sequence[Level]]

_FORMATS = tuple(f".{n}f" for n in range(64))


def render_decimal(value: Decimal, places: int | None) -> str:
    """``value`` as a plain decimal string with at least ``places`` decimals.

    Kraken sends prices and quantities as JSON numbers, so trailing zeros are
    lost on the wire (``0.5660`` arrives as ``0.566``); this puts them back
    (``render_decimal(Decimal("0.566"), 4) == "0.5660"``), which is the
    exchange's canonical string and what its checksum is computed over.
    Digits are never dropped: a value with more decimals than ``places``
    keeps them all.  ``places=None`` renders the value as it is.
    """
    exponent = value.as_tuple().exponent
    if places is not None and type(exponent) is int and exponent >= -places:
        return format(value, _FORMATS[places] if places < 64 else f".{places}f")
    return format(value, "f")


def _field(text: str, places: int | None) -> str:
    if places is not None:
        dot = text.find(".")
        decimals = 0 if dot < 0 else len(text) - dot - 1
        if decimals < places:
            # not a number: hashed as it is (and will not match)
            with contextlib.suppress(InvalidOperation):
                text = render_decimal(Decimal(text), places)
    return text.replace(".", "").lstrip("0")


def kraken_checksum_string(
    bids: Sequence[Level],
    asks: Sequence[Level],
    price_precision: int | None = None,
    qty_precision: int | None = None,
    depth: int = CHECKSUM_DEPTH,
) -> str:
    """The string Kraken's book checksum is taken over.

    ``bids`` and ``asks`` are best first, ``(price, qty)`` strings; only the
    first ``depth`` of each count, asks first.  When a precision is given,
    values with fewer decimals are padded to it first (so levels rendered
    from JSON numbers without their trailing zeros still hash right).
    """
    parts: list[str] = []
    append = parts.append
    for side in (asks, bids):
        for level in side[:depth]:
            append(_field(level[0], price_precision))
            append(_field(level[1], qty_precision))
    return "".join(parts)


def kraken_checksum(
    bids: Sequence[Level],
    asks: Sequence[Level],
    price_precision: int | None = None,
    qty_precision: int | None = None,
) -> int:
    """Kraken's book checksum: CRC32 of :func:`kraken_checksum_string`, unsigned."""
    return zlib.crc32(
        kraken_checksum_string(bids, asks, price_precision, qty_precision).encode("ascii")
    )


@attrs.frozen(slots=True)
class KrakenBookMessage:
    """One ``book`` channel item, before any integrity check.

    ``event`` is a :class:`~txexchange.events.BookSnapshot` (``type:
    "snapshot"``) or a :class:`~txexchange.events.BookDelta` (``type:
    "update"``); ``nonce`` is ``None`` on both (Kraken has no sequence) and
    levels are ``(price, qty)`` strings rendered with the pair's precisions.
    ``checksum`` is the value Kraken sent.  Feed it to
    :meth:`KrakenBookSync.on_message`.
    """

    event: BookSnapshot | BookDelta
    checksum: int

    @property
    def symbol(self) -> str:
        return self.event.symbol


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class ApplySnapshot:
    """Replace the book with ``snapshot``, truncate each side to ``depth``, then verify."""

    snapshot: BookSnapshot
    depth: int
    checksum: int | None = None


@attrs.frozen(slots=True)
class ApplyDelta:
    """Apply ``delta``, truncate each side to ``depth``, then verify."""

    delta: BookDelta
    depth: int
    checksum: int | None = None


@attrs.frozen(slots=True)
class Ignore:
    """Nothing to do (update before any snapshot, update while resyncing, old snapshot)."""

    reason: str


@attrs.frozen(slots=True)
class Resync:
    """The book is inconsistent: mark it stale, unsubscribe and subscribe again."""

    reason: str


@attrs.frozen(slots=True)
class SnapshotTooOld:
    """A snapshot older than the book already was arrived while resyncing: resubscribe again."""

    reason: str


SyncAction = ApplySnapshot | ApplyDelta | Ignore | Resync | SnapshotTooOld

_BEFORE_SNAPSHOT = Ignore("update before the first snapshot")
_RESYNCING = Ignore("update while waiting for the resync snapshot")


class KrakenBookSync:
    """Integrity bookkeeping for one Kraken book (one symbol at one depth).

    Feed it every ``book`` item of the symbol with :meth:`on_message` and act
    on what it returns; after applying an :class:`ApplySnapshot` or
    :class:`ApplyDelta` (and truncating to its ``depth``) call :meth:`verify`
    with the book's ``top``.  On :class:`Resync` mark the book stale and
    resubscribe (unsubscribe + subscribe) to get a new snapshot; call
    :meth:`reset` after a reconnect.

    :param depth: the subscribed depth (one of :data:`BOOK_DEPTHS`).
    :param price_precision: the pair's ``price_precision`` (instrument
        channel) or ``pair_decimals`` (REST ``AssetPairs``).
    :param qty_precision: the pair's ``qty_precision`` / ``lot_decimals``.
    :param verify_checksum: verify every message's checksum (on by default).
    """

    __slots__ = (
        "_expected",
        "_last_ts",
        "_state",
        "depth",
        "price_precision",
        "qty_precision",
        "symbol",
        "verify_checksum",
    )

    def __init__(
        self,
        symbol: str,
        depth: int = 10,
        *,
        price_precision: int,
        qty_precision: int,
        verify_checksum: bool = True,
    ) -> None:
        if depth not in BOOK_DEPTHS:
            raise BadRequest(
                f"Kraken book depth must be one of {', '.join(map(str, BOOK_DEPTHS))}, "
                f"not {depth!r}"
            )
        for name, value in (("price_precision", price_precision), ("qty_precision", qty_precision)):
            if type(value) is not int or not 0 <= value <= 30:
                raise BadRequest(f"Kraken {name} must be an integer in 0..30, not {value!r}")
        self.symbol = symbol
        self.depth = depth
        self.price_precision = price_precision
        self.qty_precision = qty_precision
        self.verify_checksum = verify_checksum
        self._state: Literal["waiting", "synced", "resyncing"] = "waiting"
        #: newest event timestamp (ms) the book reached (None: none seen)
        self._last_ts: int | None = None
        #: checksum to verify after the caller applied the last action
        self._expected: int | None = None

    # -- introspection -------------------------------------------------------

    @property
    def state(self) -> Literal["waiting", "synced", "resyncing"]:
        """``"waiting"`` for the first snapshot, ``"synced"``, or ``"resyncing"`` after a Resync."""
        return self._state

    @property
    def last_timestamp(self) -> int | None:
        """Newest event timestamp (ms) the book has reached, ``None`` before any."""
        return self._last_ts

    def reset(self) -> None:
        """Forget everything (after a reconnect): wait for a first snapshot again."""
        self._state = "waiting"
        self._last_ts = None
        self._expected = None

    # -- inputs ----------------------------------------------------------------

    def on_message(self, message: KrakenBookMessage) -> SyncAction:
        """Judge one ``book`` item of this symbol."""
        event = message.event
        if event.symbol != self.symbol:
            raise BadRequest(f"message for {event.symbol!r} fed to the {self.symbol!r} book")
        self._expected = None
        checksum = message.checksum if self.verify_checksum else None
        ts = event.timestamp
        last = self._last_ts
        if type(event) is BookDelta:
            if self._state != "synced":
                return _BEFORE_SNAPSHOT if self._state == "waiting" else _RESYNCING
            if ts is not None and (last is None or ts > last):
                self._last_ts = ts
            self._expected = checksum
            return ApplyDelta(event, self.depth, checksum)
        assert isinstance(event, BookSnapshot)
        if ts is not None and last is not None and ts < last:
            reason = f"snapshot at {ts} is older than the book's last update at {last}"
            if self._state == "synced":
                return Ignore(reason)
            return SnapshotTooOld(reason)
        self._state = "synced"
        if ts is not None:
            self._last_ts = ts
        self._expected = checksum
        return ApplySnapshot(event, self.depth, checksum)

    def verify(self, top: TopLevels) -> Resync | None:
        """Check the book after applying (and truncating) the last action.

        ``top`` is the book's ``top(side, n)`` (:meth:`OrderBook.top`).
        Returns ``None`` when the checksum matches (or nothing is to be
        verified), else a :class:`Resync`.
        """
        expected = self._expected
        if expected is None:
            return None
        self._expected = None
        got = kraken_checksum(
            top("bids", CHECKSUM_DEPTH),
            top("asks", CHECKSUM_DEPTH),
            self.price_precision,
            self.qty_precision,
        )
        if got == expected:
            return None
        self._state = "resyncing"
        return Resync(f"checksum mismatch: got {got}, Kraken sent {expected}")

    def invalidate(self, reason: str) -> Resync:
        """The caller found the book inconsistent itself (e.g. a level it could not apply)."""
        self._expected = None
        self._state = "resyncing"
        return Resync(reason)

    def __repr__(self) -> str:
        return f"<KrakenBookSync {self.symbol} depth={self.depth} {self._state}>"
