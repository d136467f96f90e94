"""Binance Spot account and trading: REST requests, WebSocket API requests, and parsers.

Sits in the adapter layer beside :mod:`~txexchange.adapters.binance_user`
(which frames the user data stream): builds the signed requests of the
account side (balances, orders, fills, deposits, withdrawals; placing and
cancelling orders) and turns Binance's answers and user data events into
the typed account events of :mod:`txexchange.events`.  Pure: no I/O; the
client layer signs (:mod:`~txexchange.adapters.binance_signing`) and sends.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from txexchange.adapters.rest import RestRequest
from txexchange.errors import BadRequest, InvalidOrder, MalformedMessage
from txexchange.events import BalanceDelta, BalanceSnapshot, Fill, Order, OrderStatus, Transfer
from txexchange.markets import MarketIndex

__all__ = [
    "ORDER_STATUS",
    "account_request",
    "all_orders_request",
    "cancel_all_request",
    "cancel_order_params",
    "cancel_order_request",
    "create_order_params",
    "create_order_request",
    "deposits_request",
    "my_trades_request",
    "open_orders_request",
    "parse_account",
    "parse_deposit",
    "parse_fill",
    "parse_order",
    "parse_user_event",
    "parse_withdrawal",
    "withdrawals_request",
]

#: Binance order status -> ccxt order status
ORDER_STATUS: Mapping[str, OrderStatus] = {
    "NEW": "open",
    "PARTIALLY_FILLED": "open",
    "PENDING_NEW": "open",
    "PENDING_CANCEL": "open",
    "FILLED": "closed",
    "CANCELED": "canceled",
    "REJECTED": "rejected",
    "EXPIRED": "expired",
    "EXPIRED_IN_MATCH": "expired",
}

_ORDER_TYPES = ("limit", "market", "limit_maker", "stop_loss", "stop_loss_limit",
                "take_profit", "take_profit_limit")  # fmt: skip
_TIME_IN_FORCE = ("GTC", "IOC", "FOK")


# -- requests --------------------------------------------------------------------------


def account_request() -> RestRequest:
    """``GET /api/v3/account`` (weight 20): balances, with zero balances left out."""
    return RestRequest(
        "GET", "/api/v3/account", {"omitZeroBalances": "true"}, weight=20, signed=True
    )


def open_orders_request(market_id: str | None = None) -> RestRequest:
    """``GET /api/v3/openOrders`` (weight 6 for one symbol, 80 for all)."""
    params = {"symbol": market_id} if market_id else {}
    return RestRequest("GET", "/api/v3/openOrders", params, weight=6 if market_id else 80,
                       signed=True)  # fmt: skip


def all_orders_request(
    market_id: str, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /api/v3/allOrders`` (weight 20): open and closed orders of one symbol."""
    params: dict[str, Any] = {"symbol": market_id}
    if since is not None:
        params["startTime"] = since
    if limit is not None:
        params["limit"] = limit
    return RestRequest("GET", "/api/v3/allOrders", params, weight=20, signed=True)


def my_trades_request(
    market_id: str, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /api/v3/myTrades`` (weight 20): the account's fills on one symbol."""
    params: dict[str, Any] = {"symbol": market_id}
    if since is not None:
        params["startTime"] = since
    if limit is not None:
        params["limit"] = limit
    return RestRequest("GET", "/api/v3/myTrades", params, weight=20, signed=True)


def _history_params(currency: str | None, since: int | None, limit: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if currency is not None:
        params["coin"] = currency
    if since is not None:
        params["startTime"] = since
    if limit is not None:
        params["limit"] = limit
    return params


def deposits_request(
    currency: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /sapi/v1/capital/deposit/hisrec``."""
    return RestRequest("GET", "/sapi/v1/capital/deposit/hisrec",
                       _history_params(currency, since, limit), weight=1, signed=True)  # fmt: skip


def withdrawals_request(
    currency: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /sapi/v1/capital/withdraw/history``."""
    return RestRequest("GET", "/sapi/v1/capital/withdraw/history",
                       _history_params(currency, since, limit), weight=1, signed=True)  # fmt: skip


def _positive_decimal(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise BadRequest(f"{name} must be a decimal string, int or Decimal, got {value!r}")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise BadRequest(f"{name} is not a number: {value!r}") from None
    if not d.is_finite() or d <= 0:
        raise BadRequest(f"{name} must be a positive number, got {value!r}")
    return f"{d:f}"


def create_order_params(
    market_id: str,
    type: str,
    side: str,
    amount: Any,
    price: Any = None,
    client_order_id: str | None = None,
    time_in_force: str | None = None,
) -> dict[str, Any]:
    """The parameters of a new order (REST ``POST /api/v3/order`` and WS ``order.place``).

    ``amount`` and ``price`` are decimal strings (or ``int``/``Decimal``;
    floats are refused: their binary rounding would reach the exchange).
    """
    if side not in ("buy", "sell"):
        raise BadRequest(f"side must be 'buy' or 'sell', got {side!r}")
    if type not in _ORDER_TYPES:
        raise BadRequest(f"order type must be one of {', '.join(_ORDER_TYPES)}, got {type!r}")
    params: dict[str, Any] = {
        "symbol": market_id,
        "side": side.upper(),
        "type": type.upper(),
        "quantity": _positive_decimal(amount, "amount"),
    }
    needs_price = type in ("limit", "limit_maker", "stop_loss_limit", "take_profit_limit")
    if needs_price:
        if price is None:
            raise InvalidOrder(f"a {type} order needs a price")
        params["price"] = _positive_decimal(price, "price")
    elif price is not None:
        raise InvalidOrder(f"a {type} order takes no price")
    if type == "limit":
        tif = time_in_force or "GTC"
        if tif not in _TIME_IN_FORCE:
            raise BadRequest(f"time_in_force must be one of {', '.join(_TIME_IN_FORCE)}")
        params["timeInForce"] = tif
    if client_order_id is not None:
        if not isinstance(client_order_id, str) or not 0 < len(client_order_id) <= 36:
            raise BadRequest("client_order_id must be a string of 1 to 36 characters")
        params["newClientOrderId"] = client_order_id
    params["newOrderRespType"] = "FULL"
    return params


def create_order_request(params: Mapping[str, Any]) -> RestRequest:
    """``POST /api/v3/order`` (weight 1) with :func:`create_order_params`."""
    return RestRequest("POST", "/api/v3/order", dict(params), weight=1, signed=True)


def cancel_order_params(
    market_id: str, order_id: str | None = None, client_order_id: str | None = None
) -> dict[str, Any]:
    if order_id is None and client_order_id is None:
        raise BadRequest("cancel_order needs an order id (or client_order_id)")
    params: dict[str, Any] = {"symbol": market_id}
    if order_id is not None:
        params["orderId"] = int(order_id) if str(order_id).isdigit() else order_id
    else:
        params["origClientOrderId"] = client_order_id
    return params


def cancel_order_request(params: Mapping[str, Any]) -> RestRequest:
    """``DELETE /api/v3/order`` (weight 1)."""
    return RestRequest("DELETE", "/api/v3/order", dict(params), weight=1, signed=True)


def cancel_all_request(market_id: str) -> RestRequest:
    """``DELETE /api/v3/openOrders`` (weight 1): every open order of one symbol."""
    return RestRequest("DELETE", "/api/v3/openOrders", {"symbol": market_id}, weight=1,
                       signed=True)  # fmt: skip


# -- parsing ---------------------------------------------------------------------------


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MalformedMessage(f"Binance {what}: field {key!r} missing or not a string: {value!r}")


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if type(value) is int:
        return value
    raise MalformedMessage(f"Binance {what}: field {key!r} missing or not an integer: {value!r}")


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if type(value) is int else None


def _dict(obj: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise MalformedMessage(f"Binance {what}: expected an object, got {type(obj).__name__}")
    return obj


def _num(value: str, what: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise MalformedMessage(f"Binance {what}: not a number: {value!r}") from None
    if not d.is_finite():
        raise MalformedMessage(f"Binance {what}: not a finite number: {value!r}")
    return d


def _text(d: Decimal) -> str:
    return "0" if d == 0 else f"{d.normalize():f}"


def _side(value: Any, what: str) -> Any:
    if value == "BUY":
        return "buy"
    if value == "SELL":
        return "sell"
    raise MalformedMessage(f"Binance {what}: bad side {value!r}")


def _status(value: Any, what: str) -> OrderStatus:
    status = ORDER_STATUS.get(value) if isinstance(value, str) else None
    if status is None:
        raise MalformedMessage(f"Binance {what}: unknown order status {value!r}")
    return status


def parse_account(payload: Any) -> BalanceSnapshot:
    """``GET /api/v3/account`` -> the complete balances (``updateTime`` as timestamp)."""
    obj = _dict(payload, "account")
    rows = obj.get("balances")
    if not isinstance(rows, list):
        raise MalformedMessage("Binance account: 'balances' missing")
    balances: dict[str, tuple[str, str]] = {}
    for row in rows:
        row = _dict(row, "account balance")
        free = _str(row, "free", "account balance")
        locked = _str(row, "locked", "account balance")
        _num(free, "free")
        _num(locked, "locked")
        balances[_str(row, "asset", "account balance")] = (free, locked)
    return BalanceSnapshot(balances, _opt_int(obj, "updateTime"), complete=True, info=payload)


def parse_order(payload: Any, index: MarketIndex) -> Order:
    """A REST order (``allOrders``, ``openOrders``, ``POST/DELETE /order``) or a
    WebSocket API order result."""
    what = "order"
    obj = _dict(payload, what)
    symbol = index.symbol_of(_str(obj, "symbol", what))
    amount = _str(obj, "origQty", what)
    filled = _str(obj, "executedQty", what)
    cost = obj.get("cummulativeQuoteQty")
    cost = cost if isinstance(cost, str) else None
    average = None
    if cost is not None and _num(filled, "executedQty") > 0:
        average = _text(_num(cost, "cost") / _num(filled, "executedQty"))
    price = obj.get("price")
    price = price if isinstance(price, str) and _num(price, "price") != 0 else None
    created = _opt_int(obj, "time") or _opt_int(obj, "transactTime") or _opt_int(obj, "workingTime")
    updated = _opt_int(obj, "updateTime") or _opt_int(obj, "transactTime") or created
    type_ = obj.get("type")
    # a cancel answer's clientOrderId is the cancel request's own; the order's is orig...
    client_id = obj.get("origClientOrderId") or obj.get("clientOrderId")
    return Order(
        symbol=symbol,
        id=_str(obj, "orderId", what),
        status=_status(obj.get("status"), what),
        side=_side(obj.get("side"), what),
        type=type_.lower() if isinstance(type_, str) else "unknown",
        amount=amount,
        filled=filled,
        price=price,
        client_order_id=client_id if isinstance(client_id, str) else None,
        timestamp=created,
        last_update=updated,
        cost=cost,
        average=average,
        time_in_force=obj.get("timeInForce") if isinstance(obj.get("timeInForce"), str) else None,
        info=payload,
    )  # fmt: skip


def parse_fill(payload: Any, index: MarketIndex) -> Fill:
    """One ``GET /api/v3/myTrades`` entry."""
    what = "trade"
    obj = _dict(payload, what)
    return Fill(
        symbol=index.symbol_of(_str(obj, "symbol", what)),
        id=_str(obj, "id", what),
        order_id=_str(obj, "orderId", what),
        timestamp=_int(obj, "time", what),
        side="buy" if obj.get("isBuyer") is True else "sell",
        price=_str(obj, "price", what),
        amount=_str(obj, "qty", what),
        taker_or_maker="maker" if obj.get("isMaker") is True else "taker",
        fee_cost=obj.get("commission") if isinstance(obj.get("commission"), str) else None,
        fee_currency=obj.get("commissionAsset")
        if isinstance(obj.get("commissionAsset"), str) else None,
        info=payload,
    )  # fmt: skip


_DEPOSIT_STATUS = {0: "pending", 6: "ok", 1: "ok", 7: "failed", 8: "pending"}
_WITHDRAW_STATUS = {0: "pending", 1: "canceled", 2: "pending", 3: "failed", 4: "pending",
                    5: "failed", 6: "ok"}  # fmt: skip


def parse_deposit(payload: Any) -> Transfer:
    what = "deposit"
    obj = _dict(payload, what)
    status = obj.get("status")
    return Transfer(
        id=_str(obj, "id", what),
        type="deposit",
        currency=_str(obj, "coin", what),
        amount=_str(obj, "amount", what),
        status=_DEPOSIT_STATUS.get(status, "pending") if type(status) is int else "pending",  # type: ignore[arg-type]
        timestamp=_opt_int(obj, "insertTime"),
        address=obj.get("address") if isinstance(obj.get("address"), str) else None,
        txid=obj.get("txId") if isinstance(obj.get("txId"), str) else None,
        network=obj.get("network") if isinstance(obj.get("network"), str) else None,
        info=payload,
    )


def _apply_time(value: Any) -> int | None:
    """Withdrawal ``applyTime``: ``"2019-10-12 11:12:02"`` (UTC) as Binance sends it, or ms."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            moment = _dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=_dt.UTC)
        except ValueError:
            return None
        return int(moment.timestamp() * 1000)
    return None


def parse_withdrawal(payload: Any) -> Transfer:
    what = "withdrawal"
    obj = _dict(payload, what)
    status = obj.get("status")
    applied = obj.get("applyTime")
    return Transfer(
        id=_str(obj, "id", what),
        type="withdrawal",
        currency=_str(obj, "coin", what),
        amount=_str(obj, "amount", what),
        status=_WITHDRAW_STATUS.get(status, "pending") if type(status) is int else "pending",  # type: ignore[arg-type]
        timestamp=_apply_time(applied),
        address=obj.get("address") if isinstance(obj.get("address"), str) else None,
        txid=obj.get("txId") if isinstance(obj.get("txId"), str) else None,
        network=obj.get("network") if isinstance(obj.get("network"), str) else None,
        fee_cost=obj.get("transactionFee") if isinstance(obj.get("transactionFee"), str)
        else None,
        info=payload,
    )  # fmt: skip


def parse_user_event(
    event: Mapping[str, Any], index: MarketIndex
) -> list[Order | Fill | BalanceSnapshot | BalanceDelta]:
    """A user data stream event -> account events (``[]`` for ones that change nothing
    the account keeps, e.g. ``listStatus``).

    ``executionReport`` gives the order's new state, plus a :class:`Fill` when
    it reports a trade (``x == "TRADE"``); ``outboundAccountPosition`` the
    absolute balances of the assets it names (at ``u``); ``balanceUpdate``
    a delta (at ``T``).
    """
    kind = event.get("e")
    if kind == "executionReport":
        what = "executionReport"
        symbol = index.symbol_of(_str(event, "s", what))
        filled = _str(event, "z", what)
        cost = event.get("Z") if isinstance(event.get("Z"), str) else None
        average = None
        if cost is not None and _num(filled, "z") > 0:
            average = _text(_num(cost, "Z") / _num(filled, "z"))
        price = event.get("p")
        price = price if isinstance(price, str) and _num(price, "p") != 0 else None
        client_id = event.get("C") if event.get("x") == "CANCELED" and event.get("C") else (
            event.get("c"))
        order = Order(
            symbol=symbol,
            id=_str(event, "i", what),
            status=_status(event.get("X"), what),
            side=_side(event.get("S"), what),
            type=str(event.get("o", "unknown")).lower(),
            amount=_str(event, "q", what),
            filled=filled,
            price=price,
            client_order_id=client_id if isinstance(client_id, str) else None,
            timestamp=_opt_int(event, "O"),
            last_update=_opt_int(event, "T") or _opt_int(event, "E"),
            cost=cost,
            average=average,
            time_in_force=event.get("f") if isinstance(event.get("f"), str) else None,
            info=dict(event),
        )  # fmt: skip
        out: list[Any] = [order]
        if event.get("x") == "TRADE":
            out.append(
                Fill(
                    symbol=symbol,
                    id=_str(event, "t", what),
                    order_id=order.id,
                    timestamp=_int(event, "T", what),
                    side=order.side,
                    price=_str(event, "L", what),
                    amount=_str(event, "l", what),
                    taker_or_maker="maker" if event.get("m") is True else "taker",
                    fee_cost=event.get("n") if isinstance(event.get("n"), str) else None,
                    fee_currency=event.get("N") if isinstance(event.get("N"), str) else None,
                    client_order_id=order.client_order_id,
                    info=dict(event),
                )
            )
        return out
    if kind == "outboundAccountPosition":
        what = "outboundAccountPosition"
        rows = event.get("B")
        if not isinstance(rows, list):
            raise MalformedMessage(f"Binance {what}: 'B' missing")
        balances: dict[str, tuple[str, str]] = {}
        for row in rows:
            row = _dict(row, what)
            free, locked = _str(row, "f", what), _str(row, "l", what)
            _num(free, "f")
            _num(locked, "l")
            balances[_str(row, "a", what)] = (free, locked)
        ts = _opt_int(event, "u") or _opt_int(event, "E")
        return [BalanceSnapshot(balances, ts, complete=False, info=dict(event))]
    if kind == "balanceUpdate":
        what = "balanceUpdate"
        delta = _str(event, "d", what)
        _num(delta, "d")
        ts = _opt_int(event, "T") or _opt_int(event, "E")
        return [BalanceDelta(_str(event, "a", what), delta, ts, info=dict(event))]
    return []
