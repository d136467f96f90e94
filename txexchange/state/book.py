"""L2 order books: a snapshot plus deltas kept in memory, handed out as frozen snapshots.

Sits in the state layer: adapters turn exchange messages into
:class:`~txexchange.events.BookSnapshot` / :class:`~txexchange.events.BookDelta`
events and apply them here; the delivery layer hands users the frozen
:class:`OrderBookSnapshot` objects this module builds.  Nothing here knows any
exchange's wire format, and integrity verdicts (sequence gaps, checksums) are
the adapter's: it calls :meth:`OrderBook.mark_stale` and re-applies a snapshot.

Representation (chosen by measurement, see ``bench/bench_book.py`` and
``docs/state.rst``): each side is two parallel Python lists kept sorted with
:mod:`bisect`, numeric sort keys and the levels' ``(price, amount)`` tuples of
the exchange's original strings, best level last.  The key is
``float(price)`` (negated for asks) while every price on the side has at most
15 significant digits: then distinct decimals map to distinct floats in the
same order, and equal decimals (``"1.0"``, ``"1.00"``) to the same float.  The
first price that floats could not keep apart switches that side to exact
:class:`~decimal.Decimal` keys until the next snapshot.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import attrs

from txexchange.errors import BookIntegrityError
from txexchange.events import BookDelta, BookSnapshot, Level

from .trades import iso8601

__all__ = ["OrderBook", "OrderBookSnapshot", "PriceLevel", "Side", "is_zero"]

#: One level as handed out: ``(price, amount)``, the exchange's own strings.
PriceLevel = tuple[str, str]

#: Which side of a book: ``"bids"`` (best = highest) or ``"asks"`` (best = lowest).
Side = Literal["bids", "asks"]

_Key = float | Decimal

# A plain decimal string of at most this many characters has at most 15
# significant digits and a magnitude float represents without under/overflow,
# so ``float`` maps distinct such prices to distinct floats in the same order.
_FLOAT_SAFE_LEN = 15
_FLOAT_DIGITS = 15
_NONZERO_DIGITS = frozenset("123456789")
_SENTINEL = float("inf")
_EXACT_SENTINEL = Decimal("Infinity")  # no float/Decimal ordering (FloatOperation traps)

# Sort keys of recently applied prices, by price string: ``float(str)`` costs
# several times a dict lookup, and a busy book sees the same few prices near
# its top again and again.  Only plain prices that pass every check of
# ``_apply_float`` are kept (at most 15 characters, no exponent, finite), so a
# hit needs no further checks.  Shared by all books; emptied when full.
_BID_KEYS: dict[str, float] = {}
_ASK_KEYS: dict[str, float] = {}
_KEY_CACHE_SIZE = 8192


def is_zero(amount: str) -> bool:
    """Return whether a decimal string denotes zero (``"0"``, ``"0.00000000"``, ``"-0e3"``...).

    The common spellings are decided with one :meth:`str.lstrip`; anything else
    (signs, exponents) is decided exactly by :class:`~decimal.Decimal`.
    """
    rest = amount.lstrip("0.")
    if not rest:
        return _zero_spelling(amount)
    if rest[0] in _NONZERO_DIGITS:
        return False
    return _decimal(amount) == 0


def _zero_spelling(amount: str) -> bool:
    """True for an amount made of zeros and at most one point; ValueError for ``""``, ``"."``."""
    if "0" not in amount or amount.count(".") > 1:
        raise ValueError(f"not a decimal number: {amount!r}")
    return True


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite decimal number: {text!r}")
    return value


def _float_is_exact_enough(price: str) -> bool:
    """Whether ``float`` keeps ``price`` apart from every other decimal with <= 15 digits."""
    value = _decimal(price)
    if not value:
        return True
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    n = len(digits)
    while n and digits[n - 1] == 0:
        n -= 1
        exponent += 1
    # magnitude well inside the normal float range
    return n <= _FLOAT_DIGITS and -290 < exponent + n < 290


class _NeedsDecimalKeys(Exception):
    """Internal: a price arrived that floats cannot order exactly."""


@attrs.frozen(slots=True)
class OrderBookSnapshot:
    """An order book as handed to users: immutable, never changes afterwards.

    ``bids`` are best (highest) first, ``asks`` best (lowest) first; each level
    is ``(price, amount)`` with the exchange's strings exactly as received.
    Supports ccxt-style item access (``book["bids"]``, ``book["datetime"]``)
    and :meth:`to_dict` for the ccxt dict shape.
    """

    symbol: str
    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]
    timestamp: int | None = None
    nonce: int | None = None

    _KEYS = ("symbol", "bids", "asks", "timestamp", "datetime", "nonce")

    @property
    def datetime(self) -> str | None:
        """``timestamp`` as ISO 8601 with milliseconds and ``Z`` (``None`` without one)."""
        return iso8601(self.timestamp)

    @property
    def best_bid(self) -> PriceLevel | None:
        """The highest bid ``(price, amount)``, or ``None`` if there are no bids."""
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> PriceLevel | None:
        """The lowest ask ``(price, amount)``, or ``None`` if there are no asks."""
        return self.asks[0] if self.asks else None

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style :meth:`dict.get` over the ccxt keys."""
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> tuple[str, ...]:
        """The ccxt keys this object answers to."""
        return self._KEYS

    def to_dict(self) -> dict[str, Any]:
        """A new ccxt-shaped dict; levels become ``[price, amount]`` lists (strings kept)."""
        return {
            "symbol": self.symbol,
            "bids": [list(level) for level in self.bids],
            "asks": [list(level) for level in self.asks],
            "timestamp": self.timestamp,
            "datetime": self.datetime,
            "nonce": self.nonce,
        }


class _BookSide:
    """One side of a book: sort keys ascending and the levels in the same order.

    The best level is *last* on both sides (bids are keyed by price, asks by
    minus the price), so the busy top of the book sits at the end of the
    lists, where inserting and deleting moves few items, and the best ``n``
    levels are one reversed slice.  ``keys`` ends with an extra ``+inf``
    sentinel (of the keys' type), so ``keys[bisect_left(keys, key)]`` never
    needs a bounds check.
    """

    __slots__ = ("ask", "exact", "keys", "rows")

    def __init__(self, ask: bool) -> None:
        self.keys: list[_Key] = [_SENTINEL]
        self.rows: list[PriceLevel] = []
        #: True for the ask side (keys are minus the price).
        self.ask = ask
        #: True once the side uses Decimal keys (a price floats cannot keep apart arrived).
        self.exact = False

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, levels: Iterable[Level]) -> None:
        """Replace the side with ``levels``, applied in order (the last duplicate wins)."""
        try:
            self._load(levels, False)
        except _NeedsDecimalKeys:
            self._load(levels, True)

    def _load(self, levels: Iterable[Level], exact: bool) -> None:
        table: dict[_Key, PriceLevel] = {}
        ask = self.ask
        for level in levels:
            if type(level) is str:  # "12" would read as price "1", amount "2"
                raise ValueError(f"level is a string, not a pair: {level!r:.40}")
            price = level[0]
            amount = level[1]
            if exact:
                key = _decimal(price)
                if ask:
                    key = key.copy_negate()  # exact, unlike unary minus
            elif len(price) <= _FLOAT_SAFE_LEN and "e" not in price and "E" not in price:
                key = float(price)
                if key - key:
                    raise ValueError(f"not a finite price: {price!r}")
            else:
                key = _make_key(price, False)
            if ask and not exact:
                key = -key
            rest = amount.lstrip("0.")
            if (not rest and _zero_spelling(amount)) or (
                rest and rest[0] not in _NONZERO_DIGITS and _decimal(amount) == 0
            ):
                # levels apply in order, as in a delta: zero removes an earlier duplicate
                table.pop(key, None)
            else:
                table[key] = (price, amount)
        keys = sorted(table)
        self.rows = list(map(table.__getitem__, keys))
        keys.append(_EXACT_SENTINEL if exact else _SENTINEL)
        self.keys = keys
        self.exact = exact

    def to_exact(self) -> None:
        """Re-key the side with exact Decimal keys (the order does not change)."""
        keys = [_decimal(price) for price, _ in self.rows]
        if self.ask:
            keys = [key.copy_negate() for key in keys]
        keys.append(_EXACT_SENTINEL)
        self.keys = keys
        self.exact = True

    def apply(self, levels: Iterable[Level]) -> None:
        """Apply absolute-amount changes in order; a zero amount deletes."""
        if not self.exact:
            try:
                self._apply_float(levels)
                return
            except (_NeedsDecimalKeys, IndexError):
                # A price floats cannot keep apart, or one that became +inf as
                # a float and matched the sentinel (which ``_apply_float``
                # detects by touching ``rows`` first).  Setting absolute
                # amounts is idempotent, so re-applying the whole list after
                # re-keying exactly gives the right result (or a ValueError).
                self.to_exact()
        self._apply_exact(levels)

    def _apply_float(self, levels: Iterable[Level]) -> None:
        keys = self.keys
        rows = self.rows
        cache = _ASK_KEYS if self.ask else _BID_KEYS
        cached = cache.get
        nonzero = _NONZERO_DIGITS
        for level in levels:
            if type(level) is str:  # "12" would read as price "1", amount "2"
                raise ValueError(f"level is a string, not a pair: {level!r:.40}")
            price = level[0]
            amount = level[1]
            key = cached(price)
            if key is None:
                key = self._float_key(price, cache)
            i = bisect_left(keys, key)
            if amount[:1] not in nonzero:  # rarely taken for amounts that are not zero
                rest = amount.lstrip("0.")
                if not rest or (rest[0] not in nonzero and _decimal(amount) == 0):
                    if not rest and ("0" not in amount or amount.count(".") > 1):
                        raise ValueError(f"not a decimal number: {amount!r}")  # "", ".", "0.0.0"
                    if keys[i] == key:
                        del rows[i]  # first: IndexError if key matched the sentinel
                        del keys[i]
                    continue
            float(amount)  # ValueError for "1e", "1.2.3", "0.5x" (a digit first is not enough)
            if keys[i] == key:
                rows[i] = (price, amount)
            else:
                if key - key or "e" in price or "E" in price:
                    # inf or nan (raises), or exponent notation (may switch to Decimal)
                    _make_key(price, False)
                keys.insert(i, key)
                rows.insert(i, (price, amount))

    def _float_key(self, price: str, cache: dict[str, float]) -> float:
        """The float sort key of a price not in ``cache``; remembered there if plain."""
        n = len(price)
        if n > _FLOAT_SAFE_LEN and not _float_is_exact_enough(price):
            raise _NeedsDecimalKeys(price)
        key = float(price)
        if self.ask:
            key = -key
        if n <= _FLOAT_SAFE_LEN and not (key - key) and "e" not in price and "E" not in price:
            if len(cache) >= _KEY_CACHE_SIZE:
                cache.clear()
            cache[price] = key
        return key

    def _apply_exact(self, levels: Iterable[Level]) -> None:
        keys = self.keys
        rows = self.rows
        ask = self.ask
        for level in levels:
            if type(level) is str:  # "12" would read as price "1", amount "2"
                raise ValueError(f"level is a string, not a pair: {level!r:.40}")
            price = level[0]
            amount = level[1]
            if type(price) is not str or type(amount) is not str:
                # Decimal() would take an int or a tuple: levels are the exchange's strings
                raise ValueError(f"level values must be strings: {level!r:.60}")
            key = _decimal(price).copy_negate() if ask else _decimal(price)
            i = bisect_left(keys, key)
            if is_zero(amount):
                if keys[i] == key:
                    del rows[i]
                    del keys[i]
                continue
            _decimal(amount)  # ValueError for "1,5", "1e", ... (a digit first is not enough)
            if keys[i] == key:
                rows[i] = (price, amount)
            else:
                keys.insert(i, key)
                rows.insert(i, (price, amount))

    def best_first(self, n: int | None) -> list[PriceLevel]:
        """The best ``n`` levels (all if ``None``), best first."""
        if n is None:
            return self.rows[::-1]
        return self.rows[: -n - 1 : -1]

    def best(self) -> PriceLevel | None:
        """The best level, or ``None`` if the side is empty."""
        rows = self.rows
        return rows[-1] if rows else None

    def truncate(self, n: int) -> None:
        """Keep only the best ``n`` levels."""
        excess = len(self.rows) - n
        if excess > 0:
            del self.keys[:excess]
            del self.rows[:excess]

    def clear(self) -> None:
        self.keys = [_SENTINEL]
        self.rows = []
        self.exact = False


def _make_key(price: str, exact: bool) -> _Key:
    """The sort key of ``price`` (not negated): a float where that is exact enough."""
    if exact:
        return _decimal(price)
    if (len(price) > _FLOAT_SAFE_LEN or "e" in price or "E" in price) and not (
        _float_is_exact_enough(price)
    ):
        raise _NeedsDecimalKeys(price)
    key = float(price)
    if key - key:
        raise ValueError(f"not a finite price: {price!r}")
    return key


class OrderBook:
    """A live L2 book for one symbol, fed with snapshot and delta events.

    :param symbol: the unified symbol (``"BTC/USDT"``); events for another
        symbol are refused with :class:`ValueError`.
    :param depth: if given, :meth:`snapshot` shows at most this many levels
        per side; every level is still kept, so deleting a top level reveals
        the next one.  (Use :meth:`truncate` where the exchange itself stops
        reporting levels beyond the subscribed depth, as Kraken does.)
    """

    __slots__ = (
        "_asks",
        "_bids",
        "_cache",
        "_depth",
        "_stale_reason",
        "_synced",
        "nonce",
        "symbol",
        "timestamp",
    )

    def __init__(self, symbol: str, depth: int | None = None) -> None:
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be positive, not {depth!r}")
        self.symbol = symbol
        self._depth = depth
        #: Last update id (or sequence) the book reflects, from the events.
        self.nonce: int | None = None
        #: Time of the last event applied, ms since the epoch (if the exchange sent one).
        self.timestamp: int | None = None
        self._bids = _BookSide(ask=False)
        self._asks = _BookSide(ask=True)
        self._synced = False
        self._stale_reason: str | None = None
        self._cache: dict[int | None, OrderBookSnapshot] = {}

    def __repr__(self) -> str:
        state = "stale" if self.stale else "synced" if self._synced else "unsynced"
        return (
            f"<OrderBook {self.symbol} {state} bids={len(self._bids)} "
            f"asks={len(self._asks)} nonce={self.nonce}>"
        )

    @property
    def depth(self) -> int | None:
        """The most levels per side :meth:`snapshot` shows (``None``: all); fixed at creation."""
        return self._depth

    # -- feeding -------------------------------------------------------------

    def apply_snapshot(self, snapshot: BookSnapshot) -> None:
        """Replace the whole book; the book becomes synced and fresh (not stale)."""
        self._check_symbol(snapshot.symbol)
        try:
            self._bids.load(snapshot.bids)
            self._asks.load(snapshot.asks)
        except ValueError as e:
            self._bad_input(e)
            raise
        except (TypeError, LookupError, AttributeError) as e:
            # a level of the wrong shape or type (a number, null, a short list...)
            error = ValueError(f"level of the wrong shape or type: {e}")
            self._bad_input(error)
            raise error from None
        self.nonce = snapshot.nonce
        self.timestamp = snapshot.timestamp
        self._synced = True
        self._stale_reason = None
        if self._cache:
            self._cache.clear()

    def apply_delta(self, delta: BookDelta) -> None:
        """Apply changed levels (absolute amounts; an amount equal to zero deletes).

        A new price inserts a level, a known one (numerically equal, so
        ``"1.0"`` and ``"1.00"`` are the same level) has its amount replaced
        and shows the price string last received.  ``nonce`` and
        ``timestamp`` are taken from the delta when it has them.  Deltas are
        applied even to a stale or unsynced book (adapters replay buffered
        deltas around a resync); only a snapshot makes the book fresh.

        :raises ValueError: for a price or amount that is not a finite decimal
            string; the book is then marked stale, as part of the delta may
            have been applied.
        """
        if delta.symbol != self.symbol:
            self._check_symbol(delta.symbol)
        self.apply_levels(delta.bids, delta.asks, delta.nonce, delta.timestamp)

    def apply_levels(
        self,
        bids: Sequence[Level],
        asks: Sequence[Level],
        nonce: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """:meth:`apply_delta` without the event object, for an adapter's hot path.

        The caller has already made sure the levels are for this book's symbol.
        """
        try:
            if bids:
                self._bids.apply(bids)
            if asks:
                self._asks.apply(asks)
        except ValueError as e:
            self._bad_input(e)
            raise
        except (TypeError, LookupError, AttributeError) as e:
            # a level of the wrong shape or type (a number, null, a short list...)
            error = ValueError(f"level of the wrong shape or type: {e}")
            self._bad_input(error)
            raise error from None
        if nonce is not None:
            self.nonce = nonce
        if timestamp is not None:
            self.timestamp = timestamp
        if self._cache:
            self._cache.clear()

    def truncate(self, depth: int) -> None:
        """Drop every level beyond the best ``depth`` on each side.

        For exchanges that stop reporting levels once they fall out of the
        subscribed depth (Kraken), where keeping them would show stale levels.
        """
        if depth < 0:
            raise ValueError(f"depth must not be negative, not {depth!r}")
        self._bids.truncate(depth)
        self._asks.truncate(depth)
        if self._cache:
            self._cache.clear()

    def _bad_input(self, error: ValueError) -> None:
        # Part of the event may have been applied: never hand that book out.
        self.mark_stale(f"bad level in event: {error}")

    def _check_symbol(self, symbol: str) -> None:
        if symbol != self.symbol:
            raise ValueError(f"event for {symbol!r} applied to the book of {self.symbol!r}")

    # -- integrity -----------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once a snapshot has been applied (and not cleared since)."""
        return self._synced

    @property
    def stale(self) -> bool:
        """True after :meth:`mark_stale`, until the next snapshot is applied."""
        return self._stale_reason is not None

    @property
    def stale_reason(self) -> str | None:
        """Why the book was marked stale, or ``None`` if it is not stale."""
        return self._stale_reason

    def mark_stale(self, reason: str) -> None:
        """Record that the book is known to be inconsistent (gap, bad checksum...).

        The levels are kept (deltas still apply) but :meth:`snapshot` refuses
        to hand the book out until :meth:`apply_snapshot` is called.
        """
        self._stale_reason = reason or "marked stale"
        if self._cache:
            self._cache.clear()

    def clear(self) -> None:
        """Drop every level, the nonce and the timestamp; the book becomes unsynced.

        A stale mark is kept (with its reason) until the next snapshot.
        """
        self._bids.clear()
        self._asks.clear()
        self.nonce = None
        self.timestamp = None
        self._synced = False
        if self._cache:
            self._cache.clear()

    # -- reading -------------------------------------------------------------

    def snapshot(self, limit: int | None = None) -> OrderBookSnapshot:
        """The book as an immutable :class:`OrderBookSnapshot` of at most ``limit`` levels a side.

        ``limit`` is further capped by the book's ``depth``.  The result is
        cached until the book next changes, so repeated calls are cheap and
        return the same object.

        :raises BookIntegrityError: if the book is stale or was never synced.
        """
        cached = self._cache.get(limit)
        if cached is not None:
            return cached
        if self._stale_reason is not None:
            raise BookIntegrityError(f"order book {self.symbol} is stale: {self._stale_reason}")
        if not self._synced:
            raise BookIntegrityError(f"order book {self.symbol} is not synced yet")
        n = limit
        depth = self._depth
        if depth is not None and (n is None or n > depth):
            n = depth
        if n is not None and n < 0:
            raise ValueError(f"limit must not be negative, not {limit!r}")
        snap = OrderBookSnapshot(
            self.symbol,
            tuple(self._bids.best_first(n)),
            tuple(self._asks.best_first(n)),
            self.timestamp,
            self.nonce,
        )
        self._cache[limit] = snap
        return snap

    def top(self, side: Side, n: int) -> list[PriceLevel]:
        """The best ``n`` levels of ``side`` as ``(price, amount)`` strings, best first.

        Meant for adapters computing checksums after each delta, so it works
        on stale and unsynced books too and ignores ``depth``.
        """
        if n < 0:
            raise ValueError(f"n must not be negative, not {n!r}")
        if side == "bids":
            return self._bids.best_first(n)
        if side == "asks":
            return self._asks.best_first(n)
        raise ValueError(f"side must be 'bids' or 'asks', not {side!r}")

    def level_count(self, side: Side) -> int:
        """Number of levels held on one side (all of them, regardless of ``depth``)."""
        if side == "bids":
            return len(self._bids)
        if side == "asks":
            return len(self._asks)
        raise ValueError(f"side must be 'bids' or 'asks', not {side!r}")

    @property
    def best_bid(self) -> PriceLevel | None:
        """The highest bid ``(price, amount)`` held (no integrity check), or ``None``."""
        return self._bids.best()

    @property
    def best_ask(self) -> PriceLevel | None:
        """The lowest ask ``(price, amount)`` held (no integrity check), or ``None``."""
        return self._asks.best()
