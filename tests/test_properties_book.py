"""Property tests: the L2 book against a naive reference model, for arbitrary event sequences.

The reference is a dict of exact price -> level, sorted on read.  On top of
the model test in ``test_state_book.py`` these cover depth limits with
:meth:`OrderBook.truncate` and ``snapshot(limit)``, frozen snapshots that must
never change after later events, stale marks and clears, and levels of the
wrong shape or type coming straight from the wire.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txexchange.errors import BookIntegrityError
from txexchange.events import BookDelta, BookSnapshot
from txexchange.state import OrderBook, OrderBookSnapshot

SYM = "ETH/USDT"

_digits = st.integers(0, 40)
_scale = st.integers(-2, 3)


@st.composite
def prices(draw: st.DrawFn) -> str:
    """Few distinct values, many spellings; some beyond what floats keep apart."""
    value = Decimal(draw(_digits)).scaleb(-draw(_scale))
    roll = draw(st.integers(0, 19))
    if roll == 0:
        value += Decimal(draw(st.sampled_from([1, -1]))).scaleb(-18)  # past float precision
    elif roll == 1:
        value = value.scaleb(draw(st.sampled_from([-300, 300])))  # near float range limits
    if draw(st.integers(0, 9)) == 0:
        return f"{value:E}"
    text = format(value, "f")
    pad = draw(st.integers(0, 3))
    if pad:
        text = (text if "." in text else text + ".") + "0" * pad
    return text


amounts = st.one_of(
    st.sampled_from(["0", "0.0", "0.00000000", "0E-8", "-0", "1", "0.01000000", "1e-8", "7"]),
    st.decimals(min_value=0, max_value=1000, places=8, allow_nan=False).map(str),
)
levels = st.lists(st.tuples(prices(), amounts), max_size=10)

# One operation on the book: ("snapshot", bids, asks), ("delta", bids, asks),
# ("truncate", n), ("stale",), ("clear",), ("read", limit).
operations = st.one_of(
    st.tuples(st.just("delta"), levels, levels),
    st.tuples(st.just("delta"), levels, levels),
    st.tuples(st.just("snapshot"), levels, levels),
    st.tuples(st.just("truncate"), st.integers(0, 6)),
    st.tuples(st.just("stale")),
    st.tuples(st.just("clear")),
    st.tuples(st.just("read"), st.one_of(st.none(), st.integers(0, 8))),
)


class ReferenceBook:
    """The naive model: exact price -> (price, amount) per side, sorted on every read."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.synced = False
        self.stale = False

    @staticmethod
    def _apply(side: dict[Decimal, tuple[str, str]], updates: Any) -> None:
        for level in updates:
            price, amount = level[0], level[1]
            if Decimal(amount) == 0:
                side.pop(Decimal(price), None)
            else:
                side[Decimal(price)] = (price, amount)

    def snapshot(self, bids: Any, asks: Any) -> None:
        self.bids.clear()
        self.asks.clear()
        self._apply(self.bids, bids)
        self._apply(self.asks, asks)
        self.synced = True
        self.stale = False

    def delta(self, bids: Any, asks: Any) -> None:
        self._apply(self.bids, bids)
        self._apply(self.asks, asks)

    def truncate(self, n: int) -> None:
        for side, best_first in ((self.bids, True), (self.asks, False)):
            keep = sorted(side, reverse=best_first)[:n]
            for k in list(side):
                if k not in keep:
                    del side[k]

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.synced = False

    def read(self, limit: int | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = [self.bids[k] for k in sorted(self.bids, reverse=True)]
        asks = [self.asks[k] for k in sorted(self.asks)]
        if limit is None:
            return bids, asks
        return bids[:limit], asks[:limit]


def _freeze(snap: OrderBookSnapshot) -> tuple[Any, ...]:
    return (snap.symbol, list(snap.bids), list(snap.asks), snap.nonce, snap.timestamp)


@settings(max_examples=250, deadline=None)
@given(ops=st.lists(operations, min_size=1, max_size=30), depth=st.none() | st.integers(1, 5))
def test_book_follows_reference_and_handed_out_books_never_change(ops, depth):
    book = OrderBook(SYM, depth=depth)
    ref = ReferenceBook()
    handed_out: list[tuple[OrderBookSnapshot, tuple[Any, ...]]] = []
    for nonce, op in enumerate(ops, start=1):
        kind = op[0]
        if kind == "snapshot":
            book.apply_snapshot(BookSnapshot(SYM, op[1], op[2], nonce=nonce, timestamp=nonce))
            ref.snapshot(op[1], op[2])
        elif kind == "delta":
            book.apply_delta(BookDelta(SYM, op[1], op[2], nonce=nonce, timestamp=nonce))
            ref.delta(op[1], op[2])
        elif kind == "truncate":
            book.truncate(op[1])
            ref.truncate(op[1])
        elif kind == "stale":
            book.mark_stale("test")
            ref.stale = True
        elif kind == "clear":
            book.clear()
            ref.clear()
        else:
            limit = op[1]
            if ref.stale or not ref.synced:
                with pytest.raises(BookIntegrityError):
                    book.snapshot(limit)
            else:
                shown = book.snapshot(limit)
                cap = limit if depth is None else min(depth, limit if limit is not None else depth)
                want_bids, want_asks = ref.read(cap)
                assert list(shown.bids) == want_bids
                assert list(shown.asks) == want_asks
                assert book.snapshot(limit) is shown  # cached until the next change
                handed_out.append((shown, _freeze(shown)))
        # every level is held (depth limits only what is shown) and best first
        all_bids, all_asks = ref.read(None)
        assert book.top("bids", 10_000) == all_bids
        assert book.top("asks", 10_000) == all_asks
        assert book.level_count("bids") == len(all_bids)
        assert book.best_ask == (all_asks[0] if all_asks else None)
        assert book.stale == ref.stale
        assert book.synced == ref.synced
    for snap, frozen in handed_out:
        assert _freeze(snap) == frozen


# -- levels of the wrong shape, straight from the wire ---------------------------------

_garbage_scalar = st.one_of(
    st.sampled_from(["", "NaN", "nan", "inf", "-Infinity", "sNaN", "1e999999999", "abc", "1,5"]),
    st.sampled_from(["0x10", " 1", "1 ", "--1", "1e", ".", "-", "+"]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
_wire_level = st.one_of(
    st.tuples(prices(), amounts).map(list),
    st.tuples(_garbage_scalar, amounts).map(list),
    st.tuples(prices(), _garbage_scalar).map(list),
    st.lists(prices(), max_size=1),  # truncated level
    st.tuples(prices(), amounts, st.just("extra")).map(list),  # extra fields are ignored
    _garbage_scalar,
)
_wire_levels = st.lists(_wire_level, max_size=6)


def _verdict(level: Any) -> str:
    """``"ok"``, ``"bad"``, or ``"ignorable"``: a delete of a price that is no number.

    Such a delete cannot match a held level, so the book may skip it (on the
    delta path it does not parse prices it does not need) or refuse it.
    """
    if not isinstance(level, list | tuple) or len(level) < 2:
        return "bad"
    price, amount = level[0], level[1]
    if type(price) is not str or type(amount) is not str:
        return "bad"
    try:
        a = Decimal(amount)
    except InvalidOperation:
        return "bad"
    if not a.is_finite():
        return "bad"
    try:
        p = Decimal(price)
    except InvalidOperation:
        p = None
    if p is None or not p.is_finite():
        return "ignorable" if a == 0 else "bad"
    return "ok"


@settings(max_examples=300, deadline=None)
@given(
    start_bids=levels,
    start_asks=levels,
    bids=_wire_levels,
    asks=_wire_levels,
    as_snapshot=st.booleans(),
)
def test_bad_levels_raise_value_error_and_leave_the_book_stale(
    start_bids, start_asks, bids, asks, as_snapshot
):
    """A bad level is a ValueError and a stale book; good input applies exactly as the model."""
    book = OrderBook(SYM)
    book.apply_snapshot(BookSnapshot(SYM, start_bids, start_asks, nonce=1))
    before = book.snapshot()
    ref = ReferenceBook()
    ref.snapshot(start_bids, start_asks)
    verdicts = {_verdict(level) for level in [*bids, *asks]}
    good = "bad" not in verdicts
    try:
        if as_snapshot:
            book.apply_snapshot(BookSnapshot(SYM, bids, asks, nonce=2))
        else:
            book.apply_delta(BookDelta(SYM, bids, asks, nonce=2))
    except ValueError:
        assert verdicts != {"ok"} and verdicts != set(), "valid levels were refused"
        # part of the event may be applied: the book must never be handed out again
        assert book.stale
        with pytest.raises(BookIntegrityError):
            book.snapshot()
    else:
        assert good, f"invalid levels accepted: {bids!r} {asks!r}"
        assert as_snapshot is False or "ignorable" not in verdicts
        bids = [level for level in bids if _verdict(level) == "ok"]
        asks = [level for level in asks if _verdict(level) == "ok"]
        if as_snapshot:
            ref.snapshot(bids, asks)
        else:
            ref.delta(bids, asks)
        shown = book.snapshot()
        assert (list(shown.bids), list(shown.asks)) == ref.read(None)
    # what was handed out before never changes
    want_bids, want_asks = ReferenceBook.read(ref_of(start_bids, start_asks), None)
    assert (list(before.bids), list(before.asks)) == (want_bids, want_asks)


def ref_of(bids: Any, asks: Any) -> ReferenceBook:
    ref = ReferenceBook()
    ref.snapshot(bids, asks)
    return ref
