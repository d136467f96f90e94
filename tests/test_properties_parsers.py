"""Property tests: every adapter's parser fed mutated real-shaped messages.

The samples are the frames each exchange's fake sends to the real client over
loopback (book snapshots and diffs, trades, tickers, candles, control replies),
captured with the transport's frame tap and decoded the way the exchange's
client decodes them; the market index is the one the client loaded.  Each
example then damages a sample (drops keys, changes types, wrong and huge
numbers, NaN-ish strings, nested garbage, truncated lists, wrapped values)
and parses it: the parser may return anything it documents, but the only
exceptions allowed are the library's typed errors
(:class:`~txexchange.errors.ExchangeError` subclasses).  Whatever book events
come out are then applied to a book, which may refuse them only with
:class:`ValueError` (and must then be stale).
"""

from __future__ import annotations

import contextlib
import copy
from decimal import Decimal
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred

import txexchange
from helpers import sleep
from txexchange.adapters import binance, bybit, coinbase, gemini, kraken, okx
from txexchange.adapters.binance_user import parse_user_message
from txexchange.codec import loads
from txexchange.errors import ExchangeError
from txexchange.events import BookDelta, BookSnapshot
from txexchange.markets import MarketIndex
from txexchange.state import OrderBook
from txexchange.testing import DEMO_SYMBOLS, fake_exchange
from txexchange.testing.binance import (
    balance_update_event,
    execution_report_event,
    outbound_account_position_event,
)
from txexchange.transport import TransportOptions

ADAPTERS: dict[str, Any] = {
    "binance": binance,
    "okx": okx,
    "bybit": bybit,
    "kraken": kraken,
    "coinbase": coinbase,
    "gemini": gemini,
}
DECODERS: dict[str, Any] = {"kraken": kraken.decode, "gemini": gemini.decode}


class Samples(dict[str, tuple[MarketIndex, list[Any]]]):
    """exchange name -> (market index, decoded frames); a short repr for Hypothesis reports."""

    def __repr__(self) -> str:
        return "<samples " + ", ".join(f"{k}: {len(v[1])}" for k, v in self.items()) + ">"


async def _harvest(name: str) -> tuple[MarketIndex, list[Any]]:
    """Run the client against the fake for a moment; keep every text frame it received."""
    frames: list[bytes] = []

    def tap(url: str, received_at: float, payload: bytes, is_binary: bool) -> None:
        if not is_binary:
            frames.append(bytes(payload))

    fake = fake_exchange(name, reactor=reactor, seed=7)
    await fake.start()
    fake.run(rate=200)
    client = txexchange.exchange(
        name, reactor=reactor, urls=fake.urls, transport=TransportOptions(frame_tap=tap)
    )
    symbol = DEMO_SYMBOLS[name][0]
    try:
        await client.fetch_order_book(symbol).addTimeout(10, reactor)
        await client.watch_order_book(symbol).addTimeout(10, reactor)
        for channel in ("trades", "ticker", "ohlcv:1m"):
            # an exchange without that stream: its frames are simply absent
            with contextlib.suppress(ExchangeError):
                client.subscribe(channel, symbol, lambda _: None)
        await client.watch_trades(symbol).addTimeout(10, reactor)
        await sleep(0.3)
        index = MarketIndex.from_markets(client.markets.values(), name)
    finally:
        await client.close()
        await fake.stop()
    decode = DECODERS.get(name, loads)
    return index, [decode(frame) for frame in frames]


async def _harvest_all() -> Samples:
    return Samples({name: await _harvest(name) for name in ADAPTERS})


@pytest.fixture(scope="module")
def samples() -> Samples:
    return pytest_twisted.blockon(Deferred.fromCoroutine(_harvest_all()))


# -- mutations --------------------------------------------------------------------

_garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, -1, 2**63, 10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "NaN", "nan", "Infinity", "-inf", "1e999999", "0x1F", "abc", "-0"]),
    st.sampled_from(["1" * 400, "0." + "0" * 300 + "1", "9" * 30, " 1", "1,5", "\x00", "ü"]),
    st.sampled_from([Decimal("NaN"), Decimal("1e400"), Decimal("-0")]),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=3),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=6,
    ),
)

_OPS = ("drop", "replace", "retype", "truncate", "wrap", "unwrap", "dup")


def _retype(value: Any) -> Any:
    """The same value in another JSON type (string <-> number, list -> dict...)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return len(value)
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return 0


def _mutate(data: st.DataObject, message: Any) -> Any:
    """Walk from the root to a random node and damage it once."""
    if not isinstance(message, dict | list) or not message:
        return data.draw(_garbage)
    node = message
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.integers(0, 2)):
            node = child
            continue
        break
    op = data.draw(st.sampled_from(_OPS))
    if op == "drop":
        del node[key]
    elif op == "replace":
        node[key] = data.draw(_garbage)
    elif op == "retype":
        node[key] = _retype(child)
    elif op == "truncate" and isinstance(child, list | str):
        node[key] = child[: data.draw(st.integers(0, max(len(child) - 1, 0)))]
    elif op == "wrap":
        node[key] = [child]
    elif op == "unwrap" and isinstance(child, list) and child:
        node[key] = child[0]
    elif op == "dup" and isinstance(node, list):
        node.insert(key, copy.deepcopy(child))
    else:
        node[key] = data.draw(_garbage)
    return message


def _damaged(data: st.DataObject, pool: list[Any]) -> Any:
    message = copy.deepcopy(data.draw(st.sampled_from(pool)))
    for _ in range(data.draw(st.integers(1, 4))):
        message = _mutate(data, message)
    return message


def _apply_events(result: Any) -> None:
    """Book events that came out must apply, or be refused with ValueError + a stale book."""
    if not isinstance(result, list):
        return
    for item in result:
        event = getattr(item, "event", item)  # OKX/Bybit/Kraken wrap the event with ids
        if not isinstance(event, BookSnapshot | BookDelta):
            continue
        book = OrderBook(event.symbol)
        book.apply_snapshot(BookSnapshot(event.symbol, [], [], nonce=0))
        try:
            if isinstance(event, BookSnapshot):
                book.apply_snapshot(event)
            else:
                book.apply_delta(event)
        except ValueError:
            assert book.stale


# -- the properties -----------------------------------------------------------------


def test_every_exchange_sent_frames_of_every_kind(samples: Samples) -> None:
    for name, (index, messages) in samples.items():
        assert len(index) >= 2, name
        assert len(messages) >= 10, f"{name}: only {len(messages)} frames captured"
        outcomes = [ADAPTERS[name].parse_message(m, index) for m in messages]
        events = {
            type(getattr(e, "event", e)).__name__
            for r in outcomes
            if isinstance(r, list)
            for e in r
        }
        assert "BookDelta" in events or "BookSnapshot" in events, (name, events)
        assert "Trade" in events or "CoinbaseMatch" in events, (name, events)


def _mutation_test(name: str) -> Any:
    # one function per exchange: pytest-twisted re-wraps a parametrized Hypothesis
    # test once per parameter, which breaks the second and later parameters
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test(samples: Samples, data: st.DataObject) -> None:
        index, pool = samples[name]
        message = _damaged(data, pool)
        try:
            result = ADAPTERS[name].parse_message(message, index)
        except ExchangeError:
            return
        _apply_events(result)

    test.__name__ = f"test_mutated_{name}_messages_give_only_typed_outcomes"
    test.__qualname__ = test.__name__
    return test


for _name in ADAPTERS:
    _test = _mutation_test(_name)
    globals()[_test.__name__] = _test
del _name, _test


_USER_EVENTS = [
    {"subscriptionId": 0, "event": balance_update_event("BTC", "0.5", event_time=1, clear_time=2)},
    {"subscriptionId": 0, "event": outbound_account_position_event({"BTC": ("1.0", "0.1")})},
    {
        "subscriptionId": 0,
        "event": execution_report_event(
            "BTCUSDT", order_id=7, side="BUY", price="100.0", quantity="0.5"
        ),
    },
    {"id": "1", "status": 200, "result": {"subscriptionId": 0}},
    {"id": "2", "status": 400, "error": {"code": -1022, "msg": "Signature invalid"}},
]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_user_stream_messages_give_only_typed_outcomes(data: st.DataObject) -> None:
    message = _damaged(data, _USER_EVENTS)
    with contextlib.suppress(ExchangeError):
        parse_user_message(message)
