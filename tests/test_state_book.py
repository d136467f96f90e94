"""Tests for txexchange.state.book: L2 book semantics, integrity and snapshots."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txexchange.errors import BookIntegrityError
from txexchange.events import BookDelta, BookSnapshot
from txexchange.state import OrderBook, OrderBookSnapshot, is_zero

SYM = "BTC/USDT"


def snap(bids, asks, nonce=None, timestamp=None, symbol=SYM) -> BookSnapshot:
    return BookSnapshot(symbol, bids, asks, nonce=nonce, timestamp=timestamp)


def delta(bids=(), asks=(), nonce=None, timestamp=None, symbol=SYM) -> BookDelta:
    return BookDelta(symbol, list(bids), list(asks), nonce=nonce, timestamp=timestamp)


def synced_book(depth: int | None = None) -> OrderBook:
    book = OrderBook(SYM, depth=depth)
    book.apply_snapshot(
        snap(
            [["100.00", "1.5"], ["99.50", "2"], ["99.00", "3"]],
            [["100.50", "0.5"], ["101.00", "1"], ["102.00", "4"]],
            nonce=10,
            timestamp=1_700_000_000_000,
        )
    )
    return book


# -- snapshot and delta semantics ------------------------------------------------


def test_snapshot_orders_best_first_and_keeps_strings():
    book = OrderBook(SYM)
    book.apply_snapshot(
        snap(
            [["9.5", "1"], ["10.1", "0.01000000"], ["100", "2"]],
            [["1000.00000000", "1"], ["999.99", "2"], ["1E+3", "5"], ["1001", "3"]],
            nonce=5,
            timestamp=123,
        )
    )
    s = book.snapshot()
    # numeric, not lexicographic, order; strings exactly as received
    assert s.bids == (("100", "2"), ("10.1", "0.01000000"), ("9.5", "1"))
    # "1000.00000000" and "1E+3" are the same level: the later one wins
    assert s.asks == (("999.99", "2"), ("1E+3", "5"), ("1001", "3"))
    assert (s.nonce, s.timestamp, s.symbol) == (5, 123, SYM)
    assert book.synced and not book.stale


def test_snapshot_skips_zero_levels_and_replaces_everything():
    book = synced_book()
    book.apply_snapshot(
        snap([["1", "0.000"], ["2", "1"], ["5", "1"], ["5.0", "0"]], [["3", "0"]], nonce=99)
    )
    s = book.snapshot()
    assert s.bids == (("2", "1"),)
    assert s.asks == ()
    assert s.nonce == 99
    assert s.timestamp is None


def test_delta_insert_replace_delete():
    book = synced_book()
    book.apply_delta(
        delta(
            bids=[["99.75", "7"], ["100.00", "1.25"], ["99.00", "0"]],
            asks=[["100.25", "3"], ["101.00", "0.00000000"]],
            nonce=11,
            timestamp=1_700_000_000_500,
        )
    )
    s = book.snapshot()
    assert s.bids == (("100.00", "1.25"), ("99.75", "7"), ("99.50", "2"))
    assert s.asks == (("100.25", "3"), ("100.50", "0.5"), ("102.00", "4"))
    assert s.nonce == 11
    assert s.timestamp == 1_700_000_000_500


def test_delta_for_unknown_price_with_zero_amount_is_a_no_op():
    book = synced_book()
    before = book.snapshot()
    book.apply_delta(delta(bids=[["42", "0"]], asks=[["4200", "0.0"]], nonce=11))
    after = book.snapshot()
    assert (after.bids, after.asks) == (before.bids, before.asks)
    assert after.nonce == 11


def test_same_price_several_times_in_one_delta_applies_in_order():
    book = synced_book()
    book.apply_delta(delta(bids=[["98", "1"], ["98", "0"], ["97", "0"], ["97", "2"]]))
    assert book.top("bids", 10)[-2:] == [("99.00", "3"), ("97", "2")]


@pytest.mark.parametrize(
    "zero",
    ["0", "0.0", "0.00000000", "00.000", ".0", "0.", "-0", "+0.0", "0e0", "0E-8", "-0.000e+5"],
)
def test_any_spelling_of_zero_deletes(zero):
    book = synced_book()
    book.apply_delta(delta(bids=[["100.00", zero]], asks=[["100.5", zero]]))
    s = book.snapshot()
    assert s.best_bid == ("99.50", "2")
    assert s.best_ask == ("101.00", "1")


@pytest.mark.parametrize("amount", ["0.00000001", "1e-8", "0.0001E+2", "10", "-1", "0.10"])
def test_nonzero_amounts_do_not_delete(amount):
    assert not is_zero(amount)
    book = synced_book()
    book.apply_delta(delta(bids=[["100.00", amount]]))
    assert book.snapshot().best_bid == ("100.00", amount)


def test_equal_prices_spelled_differently_are_one_level():
    book = synced_book()
    book.apply_delta(delta(bids=[["100.0", "9"], ["99.5000", "8"]], asks=[["101", "0"]]))
    s = book.snapshot()
    assert s.bids == (("100.0", "9"), ("99.5000", "8"), ("99.00", "3"))
    assert s.asks == (("100.50", "0.5"), ("102.00", "4"))
    assert book.level_count("bids") == 3


def test_nonce_and_timestamp_kept_when_delta_has_none():
    book = synced_book()
    book.apply_delta(delta(bids=[["1", "1"]]))
    assert (book.nonce, book.timestamp) == (10, 1_700_000_000_000)
    book.apply_delta(delta(nonce=12))
    assert book.nonce == 12


def test_event_for_other_symbol_is_refused():
    book = synced_book()
    with pytest.raises(ValueError):
        book.apply_delta(delta(bids=[["1", "1"]], symbol="ETH/USDT"))
    with pytest.raises(ValueError):
        book.apply_snapshot(snap([], [], symbol="ETH/USDT"))
    assert not book.stale


def test_levels_may_carry_extra_fields():
    # OKX sends [price, size, "0", orders]; Kraken adapters may add a timestamp
    book = OrderBook(SYM)
    book.apply_snapshot(snap([("1.5", "2", "0", "3")], [["2.5", "1", "0", "1"]]))
    book.apply_delta(delta(bids=[("1.6", "1", "0", "1")]))
    assert book.snapshot().bids == (("1.6", "1"), ("1.5", "2"))


# -- depth -------------------------------------------------------------------------


def test_depth_trims_what_is_shown_but_keeps_levels():
    book = synced_book(depth=2)
    s = book.snapshot()
    assert s.bids == (("100.00", "1.5"), ("99.50", "2"))
    assert s.asks == (("100.50", "0.5"), ("101.00", "1"))
    assert book.level_count("bids") == 3
    book.apply_delta(delta(bids=[["100.00", "0"]], asks=[["100.50", "0"], ["101.00", "0"]]))
    s = book.snapshot()
    assert s.bids == (("99.50", "2"), ("99.00", "3"))
    assert s.asks == (("102.00", "4"),)


def test_limit_and_depth_combine():
    book = synced_book(depth=2)
    assert len(book.snapshot(1).bids) == 1
    assert len(book.snapshot(5).bids) == 2
    assert book.snapshot(0).bids == ()
    with pytest.raises(ValueError):
        OrderBook(SYM, depth=0)


def test_truncate_drops_levels_beyond_depth():
    book = synced_book()
    book.truncate(2)
    book.apply_delta(delta(bids=[["100.00", "0"]], asks=[["100.50", "0"]]))
    s = book.snapshot()
    assert s.bids == (("99.50", "2"),)
    assert s.asks == (("101.00", "1"),)


# -- handed-out snapshots ------------------------------------------------------------


def test_snapshot_never_changes_under_its_holder():
    book = synced_book()
    held = book.snapshot()
    copy = (held.bids, held.asks, held.nonce, held.timestamp)
    as_dict = held.to_dict()
    book.apply_delta(
        delta(bids=[["100.00", "0"], ["100.10", "5"]], asks=[["100.5", "9"]], nonce=11)
    )
    book.apply_snapshot(snap([["1", "1"]], [["2", "2"]], nonce=50))
    book.clear()
    assert (held.bids, held.asks, held.nonce, held.timestamp) == copy
    assert held.to_dict() == as_dict
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        held.nonce = 1  # type: ignore[misc]
    assert isinstance(held.bids, tuple) and all(type(level) is tuple for level in held.bids)


def test_to_dict_is_a_fresh_ccxt_shaped_copy():
    book = synced_book()
    s = book.snapshot(2)
    d = s.to_dict()
    assert d == {
        "symbol": SYM,
        "bids": [["100.00", "1.5"], ["99.50", "2"]],
        "asks": [["100.50", "0.5"], ["101.00", "1"]],
        "timestamp": 1_700_000_000_000,
        "datetime": "2023-11-14T22:13:20.000Z",
        "nonce": 10,
    }
    d["bids"][0][1] = "999"
    d["bids"].clear()
    assert s.bids[0] == ("100.00", "1.5")


def test_ccxt_item_access_and_best_levels():
    s = synced_book().snapshot()
    assert s["bids"] is s.bids
    assert s["asks"][0] == ("100.50", "0.5")
    assert s["symbol"] == SYM
    assert s["nonce"] == 10
    assert s["datetime"] == "2023-11-14T22:13:20.000Z"
    assert s.get("nope", 1) == 1
    assert set(s.keys()) == {"symbol", "bids", "asks", "timestamp", "datetime", "nonce"}
    with pytest.raises(KeyError):
        s["best_bid"]
    assert s.best_bid == ("100.00", "1.5")
    assert s.best_ask == ("100.50", "0.5")
    empty = OrderBookSnapshot(SYM, (), ())
    assert empty.best_bid is None and empty.best_ask is None and empty["datetime"] is None


def test_snapshot_is_cached_until_the_book_changes():
    book = synced_book()
    first = book.snapshot(2)
    assert book.snapshot(2) is first
    assert book.snapshot() is not first
    book.apply_delta(delta(asks=[["100.50", "0.75"]]))
    second = book.snapshot(2)
    assert second is not first
    assert second.best_ask == ("100.50", "0.75")
    assert first.best_ask == ("100.50", "0.5")


# -- integrity ------------------------------------------------------------------------


def test_never_synced_book_is_not_handed_out():
    book = OrderBook(SYM)
    assert not book.synced and not book.stale
    with pytest.raises(BookIntegrityError, match="not synced"):
        book.snapshot()
    book.apply_delta(delta(bids=[["1", "1"]]))
    with pytest.raises(BookIntegrityError):
        book.snapshot()


def test_stale_book_is_not_handed_out_until_a_snapshot():
    book = synced_book()
    book.snapshot()  # cached: must not survive mark_stale
    book.mark_stale("gap: expected 11, got 13")
    assert book.stale and book.stale_reason == "gap: expected 11, got 13"
    with pytest.raises(BookIntegrityError, match="expected 11, got 13"):
        book.snapshot()
    # deltas still apply (adapters replay buffered deltas around a resync)
    book.apply_delta(delta(bids=[["100.25", "1"]], nonce=13))
    assert book.top("bids", 1) == [("100.25", "1")]
    with pytest.raises(BookIntegrityError):
        book.snapshot()
    book.apply_snapshot(snap([["1", "1"]], [["2", "1"]], nonce=20))
    assert not book.stale and book.stale_reason is None
    assert book.snapshot().nonce == 20


def test_clear_empties_and_unsyncs_but_keeps_stale_mark():
    book = synced_book()
    book.mark_stale("checksum mismatch")
    book.clear()
    assert not book.synced and book.stale
    assert book.top("bids", 5) == [] and book.top("asks", 5) == []
    assert book.nonce is None and book.timestamp is None
    with pytest.raises(BookIntegrityError, match="checksum"):
        book.snapshot()
    book.apply_snapshot(snap([], [["2", "1"]]))
    assert book.snapshot().asks == (("2", "1"),)


@pytest.mark.parametrize("price", ["abc", "nan", "inf", "-Infinity", "sNaN", "1..0", ""])
def test_bad_price_raises_and_marks_the_book_stale(price):
    book = synced_book()
    with pytest.raises(ValueError):
        book.apply_delta(delta(bids=[[price, "1"]]))
    assert book.stale
    with pytest.raises(BookIntegrityError):
        book.snapshot()
    book2 = OrderBook(SYM)
    with pytest.raises(ValueError):
        book2.apply_snapshot(snap([], [["1", "1"], [price, "1"]]))
    assert book2.stale


def test_bad_amount_raises():
    book = synced_book()
    with pytest.raises(ValueError):
        book.apply_delta(delta(asks=[["100.5", "-x"]]))
    assert book.stale


# -- top() for checksums ----------------------------------------------------------------


def test_top_returns_best_first_string_pairs():
    book = synced_book(depth=1)
    assert book.top("bids", 2) == [("100.00", "1.5"), ("99.50", "2")]
    assert book.top("asks", 10) == [("100.50", "0.5"), ("101.00", "1"), ("102.00", "4")]
    assert book.top("asks", 0) == []
    assert book.best_bid == ("100.00", "1.5") and book.best_ask == ("100.50", "0.5")
    with pytest.raises(ValueError):
        book.top("bid", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        book.top("bids", -1)


# -- prices floats cannot keep apart --------------------------------------------------


def test_prices_beyond_float_precision_stay_distinct_and_ordered():
    book = synced_book()
    book.apply_delta(
        delta(
            bids=[["100.000000000000000001", "1"], ["99.99999999999999999", "2"]],
            asks=[["100.49999999999999999999", "3"], ["100.50000000000000000000", "7"]],
        )
    )
    s = book.snapshot()
    assert s.bids[:4] == (
        ("100.000000000000000001", "1"),
        ("100.00", "1.5"),
        ("99.99999999999999999", "2"),
        ("99.50", "2"),
    )
    # "100.50000000000000000000" is long but equal to "100.50": same level
    assert s.asks[:3] == (
        ("100.49999999999999999999", "3"),
        ("100.50000000000000000000", "7"),
        ("101.00", "1"),
    )
    # later short prices and deletes keep working on the exact keys
    book.apply_delta(delta(bids=[["100.0", "0"], ["100.000000000000000002", "4"]]))
    assert book.top("bids", 3) == [
        ("100.000000000000000002", "4"),
        ("100.000000000000000001", "1"),
        ("99.99999999999999999", "2"),
    ]


def test_snapshot_with_long_prices():
    book = OrderBook(SYM)
    book.apply_snapshot(
        snap(
            [["0.1", "1"], ["0.10000000000000000001", "2"], ["0.09999999999999999999", "3"]],
            [["1e-400", "1"], ["1e-399", "2"]],
        )
    )
    s = book.snapshot()
    assert [p for p, _ in s.bids] == ["0.10000000000000000001", "0.1", "0.09999999999999999999"]
    assert [p for p, _ in s.asks] == ["1e-400", "1e-399"]


def test_prices_beyond_decimal_context_precision_stay_exact():
    # more digits than the default 28-digit Decimal context: no rounding anywhere
    p1 = "1.000000000000000000000000000000001"
    p2 = "1.000000000000000000000000000000002"
    book = OrderBook(SYM)
    book.apply_snapshot(snap([[p2, "1"], [p1, "2"]], [[p2, "3"], [p1, "4"]]))
    assert book.top("asks", 5) == [(p1, "4"), (p2, "3")]
    assert book.top("bids", 5) == [(p2, "1"), (p1, "2")]
    book.apply_delta(delta(bids=[[p1, "0"]], asks=[[p2, "0"], ["1." + "0" * 40, "5"]]))
    assert book.top("asks", 5) == [("1." + "0" * 40, "5"), (p1, "4")]
    assert book.top("bids", 5) == [(p2, "1")]
    # a side switched to exact keys by a delta, on the ask side
    book2 = synced_book()
    book2.apply_delta(delta(asks=[[p2, "1"], [p1, "2"]]))
    assert book2.top("asks", 2) == [(p1, "2"), (p2, "1")]


def test_infinite_price_in_a_delete_is_refused():
    book = synced_book()
    with pytest.raises(ValueError):
        book.apply_delta(delta(bids=[["inf", "0"]]))
    assert book.stale
    book2 = synced_book()
    with pytest.raises(ValueError):
        book2.apply_delta(delta(asks=[["-inf", "1"]]))
    # an exponent that overflows a float is a valid price, deleted or not
    book3 = synced_book()
    book3.apply_delta(delta(bids=[["1e400", "0"]], asks=[["1e400", "0"], ["1e400", "2"]]))
    assert book3.top("asks", 5)[-1] == ("1e400", "2")
    assert not book3.stale


def test_exponent_prices_outside_float_range_are_exact():
    book = synced_book()
    book.apply_delta(delta(asks=[["1e999", "1"], ["1e998", "2"]], bids=[["1e-999", "3"]]))
    assert book.top("asks", 10)[-2:] == [("1e998", "2"), ("1e999", "1")]
    assert book.top("bids", 10)[-1] == ("1e-999", "3")
    book.apply_delta(delta(bids=[["1E-999", "0"]]))
    assert book.level_count("bids") == 3


# -- property test against a reference model ------------------------------------------

_digits = st.integers(min_value=1, max_value=400)
_scale = st.integers(min_value=0, max_value=3)
_pad = st.integers(min_value=0, max_value=3)


@st.composite
def prices(draw: st.DrawFn) -> str:
    """Decimal strings with few distinct values and many spellings of each."""
    value = Decimal(draw(_digits)).scaleb(-draw(_scale))
    if draw(st.integers(0, 9)) == 0:
        # beyond float precision: collides with its neighbour as a float
        value += Decimal(draw(st.sampled_from([1, -1]))).scaleb(-20)
    if draw(st.integers(0, 9)) == 0:
        return f"{value:E}"  # exponent notation, e.g. "1.2300E+2"
    text = format(value, "f")
    pad = draw(_pad)
    if pad:
        text = (text if "." in text else text + ".") + "0" * pad
    return text


amounts = st.one_of(
    st.sampled_from(["0", "0.0", "0.00000000", "0E-8", "1", "0.01000000", "2.5", "1e-8"]),
    st.decimals(min_value=0, max_value=100, places=4, allow_nan=False).map(str),
)
levels = st.lists(st.tuples(prices(), amounts), max_size=12)
events = st.lists(
    st.tuples(st.sampled_from(["delta", "delta", "delta", "snapshot"]), levels, levels),
    min_size=1,
    max_size=25,
)


def _reference_apply(side: dict[Decimal, tuple[str, str]], updates, snapshot: bool) -> None:
    if snapshot:
        side.clear()
    for price, amount in updates:
        if Decimal(amount) == 0:
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = (price, amount)


@settings(max_examples=300, deadline=None)
@given(events=events, depth=st.one_of(st.none(), st.integers(1, 5)))
def test_book_matches_reference_model(events, depth):
    book = OrderBook(SYM, depth=depth)
    ref_bids: dict[Decimal, tuple[str, str]] = {}
    ref_asks: dict[Decimal, tuple[str, str]] = {}
    synced = False
    for nonce, (kind, bids, asks) in enumerate(events):
        if kind == "snapshot":
            book.apply_snapshot(snap(bids, asks, nonce=nonce))
            synced = True
        else:
            book.apply_delta(delta(bids, asks, nonce=nonce))
        _reference_apply(ref_bids, bids, kind == "snapshot")
        _reference_apply(ref_asks, asks, kind == "snapshot")
        want_bids = [ref_bids[k] for k in sorted(ref_bids, reverse=True)]
        want_asks = [ref_asks[k] for k in sorted(ref_asks)]
        assert book.top("bids", 10_000) == want_bids
        assert book.top("asks", 10_000) == want_asks
        assert book.best_bid == (want_bids[0] if want_bids else None)
        assert book.nonce == nonce
        if synced:
            shown = book.snapshot()
            assert list(shown.bids) == want_bids[:depth]
            assert list(shown.asks) == want_asks[:depth]
        else:
            with pytest.raises(BookIntegrityError):
                book.snapshot()


@settings(max_examples=200, deadline=None)
@given(events=events)
def test_book_matches_reference_model_while_the_key_cache_churns(events):
    # The sort-key cache is shared by every book and emptied when full: with
    # room for two prices it is emptied all the time, and the same price
    # strings go to both sides (bids and asks keep apart caches: asks negate).
    from txexchange.state import book as book_module

    saved = book_module._KEY_CACHE_SIZE
    book_module._KEY_CACHE_SIZE = 2
    book_module._BID_KEYS.clear()  # entries left by other tests
    book_module._ASK_KEYS.clear()
    try:
        book = OrderBook(SYM)
        ref_bids: dict[Decimal, tuple[str, str]] = {}
        ref_asks: dict[Decimal, tuple[str, str]] = {}
        for nonce, (kind, bids, _) in enumerate(events):
            if kind == "snapshot":
                book.apply_snapshot(snap(bids, bids, nonce=nonce))
            else:
                book.apply_delta(delta(bids, bids, nonce=nonce))
            _reference_apply(ref_bids, bids, kind == "snapshot")
            _reference_apply(ref_asks, bids, kind == "snapshot")
            assert book.top("bids", 10_000) == [ref_bids[k] for k in sorted(ref_bids, reverse=True)]
            assert book.top("asks", 10_000) == [ref_asks[k] for k in sorted(ref_asks)]
            assert len(book_module._BID_KEYS) <= 2 and len(book_module._ASK_KEYS) <= 2
    finally:
        book_module._KEY_CACHE_SIZE = saved
