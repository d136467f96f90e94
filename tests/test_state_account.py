"""The account state and Binance's account parsers, on documented messages (no sockets)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from txexchange.adapters import binance_account as acct
from txexchange.errors import BadRequest, InvalidOrder, MalformedMessage
from txexchange.events import BalanceDelta, BalanceSnapshot, Fill, Order
from txexchange.markets import Market, MarketIndex
from txexchange.state.account import Account, balance_to_ccxt, fill_to_ccxt, order_to_ccxt

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"
FIXTURES = {
    f["name"]: f["message"]
    for f in json.loads(VECTORS.read_text(encoding="utf-8"))["fixtures"]["binance"]
}
INDEX = MarketIndex.from_markets(
    [
        Market(symbol="ETH/BTC", id="ETHBTC", base="ETH", quote="BTC"),
        Market(symbol="BTC/USDT", id="BTCUSDT", base="BTC", quote="USDT"),
    ],
    "binance",
)


def order(status="open", filled="0", last_update=10, **kw):
    base = dict(
        symbol="BTC/USDT",
        id="1",
        status=status,
        side="buy",
        type="limit",
        amount="1",
        filled=filled,
        price="100",
        timestamp=1,
        last_update=last_update,
    )
    base.update(kw)
    return Order(**base)


def test_newer_order_state_wins_and_closed_orders_do_not_reopen():
    a = Account()
    assert a.apply_order(order(last_update=10))
    assert a.apply_order(order(status="closed", filled="1", last_update=20))
    assert not a.apply_order(order(last_update=15)), "an older REST answer rolled it back"
    assert not a.apply_order(order(last_update=30)), "a closed order reopened"
    assert a.order("1").status == "closed"
    # same time: more filled wins
    b = Account()
    b.apply_order(order(filled="0.5", last_update=10))
    assert not b.apply_order(order(filled="0.2", last_update=10))
    assert b.order("1").filled == "0.5"


def test_closed_orders_are_bounded_open_ones_kept():
    a = Account(closed_orders_limit=3)
    a.apply_order(order(id="open-1"))
    for i in range(10):
        a.apply_order(order(id=f"c{i}", status="canceled", last_update=i))
    assert [o.id for o in a.closed_orders()] == ["c7", "c8", "c9"]
    assert [o.id for o in a.open_orders()] == ["open-1"]


def test_balances_merge_by_time_and_deltas_are_not_counted_twice():
    a = Account()
    a.apply_balance(BalanceSnapshot({"BTC": ("1", "0"), "USDT": ("50", "5")}, 100, complete=True))
    # the stream saw a later change of BTC; a REST answer from before must not undo it
    a.apply_balance(BalanceSnapshot({"BTC": ("2", "0")}, 200))
    a.apply_balance(BalanceSnapshot({"BTC": ("1", "0"), "USDT": ("60", "0")}, 150, complete=True))
    assert a.balance("BTC") == ("2", "0") and a.balance("USDT") == ("60", "0")
    # a delta already contained in an absolute update of the same time is skipped
    assert not a.apply_balance_delta(BalanceDelta("BTC", "0.5", 200))
    assert a.apply_balance_delta(BalanceDelta("BTC", "0.5", 201))
    assert a.balance("BTC") == ("2.5", "0")
    ccxt = balance_to_ccxt(a)
    assert ccxt["BTC"] == {"free": "2.5", "used": "0", "total": "2.5"}
    assert ccxt["total"]["USDT"] == "60" and ccxt["timestamp"] == 201
    # a complete snapshot drops currencies not held any more, unless changed later
    a.apply_balance(BalanceSnapshot({"USDT": ("60", "0")}, 300, complete=True))
    assert "BTC" not in a.balances()


def test_fills_kept_once_and_converted_exactly():
    a = Account(fills_limit=2)
    f = Fill("BTC/USDT", "7", "1", 5, "buy", "0.1", "3", "maker", "0.0003", "USDT")
    assert a.apply_fill(f) and not a.apply_fill(f)
    assert fill_to_ccxt(f)["cost"] == "0.3"
    for i in range(3):
        a.apply_fill(Fill("BTC/USDT", f"x{i}", "1", 6 + i, "buy", "1", "1"))
    assert [x.id for x in a.fills()] == ["x1", "x2"]
    with pytest.raises(MalformedMessage):
        a.apply_fill(Fill("BTC/USDT", "bad", "1", 1, "buy", "NaN", "1"))
    assert order_to_ccxt(order(filled="0.25"))["remaining"] == "0.75"


def test_documented_user_events_parse():
    (report,) = acct.parse_user_event(FIXTURES["executionReport_wsapi"]["event"], INDEX)
    assert (report.symbol, report.id, report.status, report.side) == (
        "ETH/BTC",
        "4293153",
        "open",
        "buy",
    )
    assert report.client_order_id == "mUvoqJxFIILMdfAW5iGSOW" and report.price == "0.10264410"
    assert report.last_update == 1499405658657 and report.average is None
    (position,) = acct.parse_user_event(FIXTURES["outboundAccountPosition_wsapi"]["event"], INDEX)
    assert position.balances == {"ETH": ("10000.000000", "0.000000")}
    assert position.timestamp == 1564034571073 and not position.complete
    (delta,) = acct.parse_user_event(FIXTURES["balanceUpdate_wsapi"]["event"], INDEX)
    assert (delta.currency, delta.delta, delta.timestamp) == ("BTC", "100.00000000", 1573200697068)
    trade = dict(
        FIXTURES["executionReport_wsapi"]["event"],
        x="TRADE",
        X="FILLED",
        l="1.00000000",
        z="1.00000000",
        L="0.10000000",
        Z="0.10000000",
        t=77,
        n="0.001",
        N="BNB",
    )
    updated, fill = acct.parse_user_event(trade, INDEX)
    assert updated.status == "closed" and updated.average == "0.1"
    assert (fill.id, fill.price, fill.amount, fill.fee_currency) == (
        "77",
        "0.10000000",
        "1.00000000",
        "BNB",
    )
    assert acct.parse_user_event({"e": "listStatus"}, INDEX) == []
    with pytest.raises(MalformedMessage):
        acct.parse_user_event(dict(trade, X="WEIRD"), INDEX)


def test_order_params_refuse_floats_and_check_types():
    params = acct.create_order_params("BTCUSDT", "limit", "buy", "0.10", Decimal("100.5"), "id-1")
    assert params == {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "0.10",
        "price": "100.5",
        "timeInForce": "GTC",
        "newClientOrderId": "id-1",
        "newOrderRespType": "FULL",
    }
    with pytest.raises(BadRequest):
        acct.create_order_params("BTCUSDT", "limit", "buy", 0.1, "1")
    with pytest.raises(BadRequest):
        acct.create_order_params("BTCUSDT", "limit", "hold", "1", "1")
    with pytest.raises(InvalidOrder):
        acct.create_order_params("BTCUSDT", "market", "buy", "1", "1")
    with pytest.raises(BadRequest):
        acct.create_order_params("BTCUSDT", "limit", "buy", "-1", "1")
    with pytest.raises(BadRequest):
        acct.cancel_order_params("BTCUSDT")


def test_error_codes_map_to_the_ccxt_hierarchy():
    from txexchange.adapters.binance import parse_rest_error
    from txexchange.errors import (
        AuthenticationError,
        DuplicateOrderId,
        InsufficientFunds,
        InvalidNonce,
        OrderNotFound,
    )

    def err(code, msg):
        return parse_rest_error(400, {}, json.dumps({"code": code, "msg": msg}).encode())

    assert type(err(-2010, "Account has insufficient balance for requested action.")) is (
        InsufficientFunds
    )
    assert type(err(-2010, "Duplicate order sent.")) is DuplicateOrderId
    assert type(err(-2010, "Order would trigger immediately.")) is InvalidOrder
    assert type(err(-2011, "Unknown order sent.")) is OrderNotFound
    assert type(err(-1021, "Timestamp outside recvWindow")) is InvalidNonce
    assert type(err(-1022, "Signature for this request is not valid.")) is AuthenticationError
