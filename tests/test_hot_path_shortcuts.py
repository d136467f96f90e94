"""The allocation-free shortcuts of the Binance book path agree with the full path.

``BinanceParser.depth_fields`` must give what ``parse`` puts in the BookDelta,
and nothing for what it should not decide.

``BinanceBookSync.advance`` must say "apply" exactly when ``on_delta`` would
return :class:`ApplyDelta` (and leave the same state behind), and
``Hub.heard`` must be true exactly when a published update reaches someone.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from txexchange.adapters import binance as bn
from txexchange.adapters.binance import ApplyDelta, BinanceBookSync
from txexchange.delivery import Hub
from txexchange.delivery.hub import UpdateStream
from txexchange.errors import MalformedMessage
from txexchange.events import BookDelta, BookSnapshot

SYM = "BNB/BTC"


def _delta(first: int, last: int, sym: str = SYM) -> BookDelta:
    return BookDelta(sym, [], [], nonce=last, first_id=first)


def _state(sync: BinanceBookSync) -> tuple[Any, ...]:
    return (sync.state, sync.book_id, sync.first_update_id, [d.nonce for d in sync.buffered])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-3, 3), st.integers(0, 4), st.booleans(), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_advance_agrees_with_on_delta(steps: list[tuple[int, int, bool, bool]]) -> None:
    fast, full = BinanceBookSync(SYM), BinanceBookSync(SYM)
    for sync in (fast, full):
        sync.on_delta(_delta(101, 105))
        sync.on_snapshot(BookSnapshot(SYM, [], [], nonce=100))
    for offset, length, snapshot, other_symbol in steps:
        if snapshot:  # a snapshot in between (late, or after a resync)
            snap = BookSnapshot(SYM, [], [], nonce=(full.book_id or 0) + offset)
            assert fast.on_snapshot(snap) == full.on_snapshot(snap)
            continue
        base = full.book_id if full.book_id is not None else (full.first_update_id or 0)
        first = base + 1 + offset
        delta = _delta(first, first + length, "ETH/BTC" if other_symbol else SYM)
        try:
            expected = full.on_delta(delta)
        except Exception as e:
            assert other_symbol or not fast.advance(delta.first_id, delta.nonce)
            assert type(e) is type(_raises(fast, delta))
            continue
        took = not other_symbol and fast.advance(delta.first_id, delta.nonce)
        assert took == (expected == ApplyDelta(delta))
        if not took:
            assert fast.on_delta(delta) == expected
        assert _state(fast) == _state(full)


def _raises(sync: BinanceBookSync, delta: BookDelta) -> Exception:
    try:
        sync.on_delta(delta)
    except Exception as e:
        return e
    raise AssertionError("on_delta accepted what it refused before")


def test_advance_refuses_while_waiting_and_keeps_state() -> None:
    sync = BinanceBookSync(SYM)
    assert not sync.advance(1, 2)
    assert _state(sync) == ("waiting", None, None, [])


def test_heard_follows_observers_streams_and_watchers() -> None:
    hub = Hub(Clock())
    key = ("book", SYM)
    got: list[Any] = []
    assert not hub.heard(key)
    handle = hub.add_observer(key, got.append)
    assert hub.heard(key) and not hub.heard(("book", "ETH/BTC"))
    handle.stop()
    assert not hub.heard(key)
    d = hub.watch(key, lambda ev: ev)
    assert hub.heard(key)
    hub.publish(key, "x")
    assert d.called and not hub.heard(key)
    stream = UpdateStream(hub, key, lambda ev: ev, latest_only=True, maxlen=1)
    assert hub.heard(key)
    stream.close()
    assert not hub.heard(key)
    before = hub.published
    hub.skip()
    assert hub.published == before + 1 and got == []


def _depth(data: Any, stream: str = "ethbtc@depth@100ms") -> dict[str, Any]:
    return {"stream": stream, "data": data}


def test_depth_fields_match_parse_and_leave_the_rest_to_it() -> None:
    index = bn.market_index(
        {"symbols": [{"symbol": "ETHBTC", "baseAsset": "ETH", "quoteAsset": "BTC",
                      "status": "TRADING"}]}
    )  # fmt: skip
    parser = bn.BinanceParser(index)
    good = _depth({"e": "depthUpdate", "E": 7, "s": "ETHBTC", "U": 3, "u": 5,
                   "b": [["0.1", "2"]], "a": []})  # fmt: skip
    assert parser.depth_fields(good) is None  # stream not routed yet: parse() decides
    (delta,) = parser.parse(good)
    fields = parser.depth_fields(good)
    assert fields == (delta.symbol, delta.first_id, delta.nonce, delta.bids, delta.asks, 7)
    assert fields[0] == "ETH/BTC"
    for bad in ({"U": "3", "u": 5, "b": [], "a": []}, {"U": 6, "u": 5, "b": [], "a": []},
                {"U": 3, "u": 5, "b": {}, "a": []}, {"U": 3, "b": [], "a": []}, []):  # fmt: skip
        message = _depth(bad)
        assert parser.depth_fields(message) is None
        with pytest.raises(MalformedMessage):
            parser.parse(message)
    trade = _depth({"e": "trade"}, "ethbtc@trade")
    with pytest.raises(MalformedMessage):
        parser.parse(trade)  # routes the trade stream
    assert parser.depth_fields(trade) is None
    assert parser.depth_fields([good]) is None and parser.depth_fields({"result": None}) is None
