"""OKX v5 spot account and trading: REST requests, private WebSocket rules, and parsers.

Sits in the adapter layer beside :mod:`txexchange.adapters.okx` (public
market data) and :mod:`txexchange.adapters.okx_signing`: builds the signed
requests of the account side (balance, orders, fills, deposits,
withdrawals; placing and cancelling orders, over REST or as WebSocket
``op``s), the wire rules of the private WebSocket (login, then the
``account`` and ``orders`` channels), and turns OKX's answers and pushes into
the typed account events of :mod:`txexchange.events`.  Pure: no I/O.

OKX conventions kept in mind here: every number is a decimal string, empty
(``""``) when absent; fees are negative when charged (``fee``, ``fillFee``),
so their sign is flipped for the unified positive ``fee_cost``; times are ms
as strings; a spot market order's ``sz`` is in the quote currency for buys
unless ``tgtCcy`` is ``base_ccy`` (always sent here, so ``amount`` is base).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from txexchange.adapters.okx import error_class
from txexchange.adapters.okx_signing import OkxSigner
from txexchange.adapters.rest import RestRequest
from txexchange.codec import dumps
from txexchange.errors import BadRequest, ExchangeError, InvalidOrder, MalformedMessage
from txexchange.events import BalanceSnapshot, Fill, Order, OrderStatus, Transfer
from txexchange.markets import MarketIndex
from txexchange.transport.rules import Compression, ControlReply, Heartbeat

__all__ = [
    "BATCH_CANCEL_LIMIT",
    "ORDER_STATUS",
    "PRIVATE_CHANNELS",
    "PRIVATE_TOPIC",
    "OkxPrivateRules",
    "balance_request",
    "batch_cancel_body",
    "cancel_order_body",
    "check_ack",
    "create_order_body",
    "deposits_request",
    "fills_request",
    "op_error",
    "order_request",
    "orders_history_request",
    "orders_pending_request",
    "parse_balance",
    "parse_balance_push",
    "parse_deposit",
    "parse_fill",
    "parse_order",
    "parse_orders_push",
    "parse_private_push",
    "parse_withdrawal",
    "rest_data",
    "time_request",
    "withdrawals_request",
]

#: OKX order state -> ccxt order status
ORDER_STATUS: Mapping[str, OrderStatus] = {
    "live": "open",
    "partially_filled": "open",
    "filled": "closed",
    "canceled": "canceled",
    "mmp_canceled": "canceled",
}
#: the one topic the private connection's transport holds (login + channels)
PRIVATE_TOPIC = "private"
#: what the private connection subscribes after login
PRIVATE_CHANNELS: tuple[dict[str, str], ...] = (
    {"channel": "account"},
    {"channel": "orders", "instType": "SPOT"},
)
#: most orders one ``batch-cancel-orders`` request may name
BATCH_CANCEL_LIMIT = 20
#: OKX pings: the same text keep-alive as the public connections
HEARTBEAT = Heartbeat("ping", idle_interval=25.0, pong="pong")

_ORD_TYPES = {"limit": "limit", "market": "market"}
_TIF_ORD_TYPES = {"PO": "post_only", "IOC": "ioc", "FOK": "fok"}
_CL_ORD_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


# -- REST requests ------------------------------------------------------------------------


def time_request() -> RestRequest:
    """``GET /api/v5/public/time`` (unsigned): ``{"data": [{"ts": "<ms>"}]}``."""
    return RestRequest("GET", "/api/v5/public/time")


def balance_request() -> RestRequest:
    """``GET /api/v5/account/balance``: every currency with a balance."""
    return RestRequest("GET", "/api/v5/account/balance", signed=True)


def orders_pending_request(inst_id: str | None = None) -> RestRequest:
    """``GET /api/v5/trade/orders-pending`` (spot; at most 100, newest first)."""
    params: dict[str, Any] = {"instType": "SPOT"}
    if inst_id is not None:
        params["instId"] = inst_id
    return RestRequest("GET", "/api/v5/trade/orders-pending", params, signed=True)


def _window(params: dict[str, Any], since: int | None, limit: int | None) -> dict[str, Any]:
    if since is not None:
        params["begin"] = str(since)
    if limit is not None:
        params["limit"] = str(min(limit, 100))
    return params


def orders_history_request(
    inst_id: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /api/v5/trade/orders-history``: completed spot orders of the last 7 days."""
    params: dict[str, Any] = {"instType": "SPOT"}
    if inst_id is not None:
        params["instId"] = inst_id
    return RestRequest("GET", "/api/v5/trade/orders-history", _window(params, since, limit),
                       signed=True)  # fmt: skip


def order_request(
    inst_id: str, order_id: str | None = None, client_order_id: str | None = None
) -> RestRequest:
    """``GET /api/v5/trade/order`` by ``ordId`` (or ``clOrdId``)."""
    params: dict[str, Any] = {"instId": inst_id}
    if order_id is not None:
        params["ordId"] = order_id
    elif client_order_id is not None:
        params["clOrdId"] = client_order_id
    else:
        raise BadRequest("an order id (or client order id) is required")
    return RestRequest("GET", "/api/v5/trade/order", params, signed=True)


def fills_request(
    inst_id: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /api/v5/trade/fills``: spot fills of the last 3 days, newest first."""
    params: dict[str, Any] = {"instType": "SPOT"}
    if inst_id is not None:
        params["instId"] = inst_id
    return RestRequest("GET", "/api/v5/trade/fills", _window(params, since, limit), signed=True)


def _transfer_params(currency: str | None, since: int | None, limit: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if currency is not None:
        params["ccy"] = currency
    if since is not None:
        params["before"] = str(max(since - 1, 0))  # records newer than this ts
    if limit is not None:
        params["limit"] = str(min(limit, 100))
    return params


def deposits_request(
    currency: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /api/v5/asset/deposit-history``."""
    return RestRequest("GET", "/api/v5/asset/deposit-history",
                       _transfer_params(currency, since, limit), signed=True)  # fmt: skip


def withdrawals_request(
    currency: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /api/v5/asset/withdrawal-history``."""
    return RestRequest("GET", "/api/v5/asset/withdrawal-history",
                       _transfer_params(currency, since, limit), signed=True)  # fmt: skip


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


def check_client_order_id(client_order_id: Any) -> str:
    """OKX's ``clOrdId``: 1-32 letters and digits, starting with a letter."""
    if (
        not isinstance(client_order_id, str)
        or not 0 < len(client_order_id) <= 32
        or not set(client_order_id) <= _CL_ORD_ID_CHARS
        or not client_order_id[0].isalpha()
    ):
        raise BadRequest(
            "an OKX client order id is 1 to 32 letters and digits, starting with a letter; "
            f"got {client_order_id!r}"
        )
    return client_order_id


def create_order_body(
    inst_id: str,
    type: str,
    side: str,
    amount: Any,
    price: Any = None,
    client_order_id: str | None = None,
    time_in_force: str | None = None,
) -> dict[str, Any]:
    """The argument of a new spot order (REST ``POST /api/v5/trade/order`` and WS ``order``).

    ``amount`` is in the base currency for every order (``tgtCcy: base_ccy``
    on market orders); ``time_in_force`` ``PO``/``IOC``/``FOK`` turns a limit
    order into OKX's ``post_only``/``ioc``/``fok`` order types.
    """
    if side not in ("buy", "sell"):
        raise BadRequest(f"side must be 'buy' or 'sell', got {side!r}")
    if type not in _ORD_TYPES:
        raise BadRequest(f"order type must be 'limit' or 'market', got {type!r}")
    body: dict[str, Any] = {"instId": inst_id, "tdMode": "cash", "side": side,
                            "ordType": _ORD_TYPES[type]}  # fmt: skip
    if client_order_id is not None:
        body["clOrdId"] = check_client_order_id(client_order_id)
    body["sz"] = _positive_decimal(amount, "amount")
    if type == "limit":
        if price is None:
            raise InvalidOrder("a limit order needs a price")
        body["px"] = _positive_decimal(price, "price")
        if time_in_force not in (None, "GTC"):
            ord_type = _TIF_ORD_TYPES.get(str(time_in_force))
            if ord_type is None:
                raise BadRequest("timeInForce must be GTC, PO, IOC or FOK")
            body["ordType"] = ord_type
    else:
        if price is not None:
            raise InvalidOrder("a market order takes no price")
        if time_in_force is not None:
            raise BadRequest("a market order takes no timeInForce")
        body["tgtCcy"] = "base_ccy"
    return body


def cancel_order_body(
    inst_id: str, order_id: str | None = None, client_order_id: str | None = None
) -> dict[str, Any]:
    """The argument of ``cancel-order`` (REST and WS): ``instId`` and ``ordId`` or ``clOrdId``."""
    if order_id is not None:
        return {"instId": inst_id, "ordId": str(order_id)}
    if client_order_id is not None:
        return {"instId": inst_id, "clOrdId": client_order_id}
    raise BadRequest("cancel_order needs an order id (or client order id)")


def batch_cancel_body(orders: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """``[(instId, ordId), ...]`` as the arguments of one batch cancel (at most 20)."""
    if not 0 < len(orders) <= BATCH_CANCEL_LIMIT:
        raise BadRequest(f"a batch cancel names 1 to {BATCH_CANCEL_LIMIT} orders")
    return [{"instId": inst_id, "ordId": ord_id} for inst_id, ord_id in orders]


# -- answers and errors ---------------------------------------------------------------------


def _bad(what: str, data: Any) -> MalformedMessage:
    return MalformedMessage(f"OKX {what}: {data!r:.300}")


def _typed(code: str | None, msg: str | None, prefix: str) -> ExchangeError:
    text = prefix
    if code:
        text += f" code {code}"
    if msg:
        text += f": {msg[:200]}"
    cls = error_class(code, default=ExchangeError if code not in (None, "") else MalformedMessage)
    error = cls(text)
    error.code = code  # type: ignore[attr-defined]
    return error


def op_error(answer: Mapping[str, Any], prefix: str = "OKX") -> ExchangeError:
    """The typed error of a failed answer: the first item's ``sCode`` wins over ``code``."""
    data = answer.get("data")
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and item.get("sCode") not in (None, "", "0"):
                return _typed(str(item["sCode"]), str(item.get("sMsg") or ""), prefix)
    code = answer.get("code")
    msg = answer.get("msg")
    return _typed(str(code) if code is not None else None,
                  msg if isinstance(msg, str) else None, prefix)  # fmt: skip


def rest_data(payload: Any) -> list[Any]:
    """``data`` of a REST answer; a non-zero ``code`` raises its typed error."""
    if type(payload) is not dict:
        raise _bad("REST answer is not a JSON object", payload)
    code = payload.get("code")
    if code != "0" and code != 0:
        raise op_error(payload, "OKX REST")
    data = payload.get("data")
    if type(data) is not list:
        raise _bad("REST answer without a 'data' list", payload)
    return data


def check_ack(answer: Any, prefix: str = "OKX") -> list[dict[str, Any]]:
    """The items of a trading answer (REST or WS ``op``) that succeeded (``sCode`` 0).

    Raises the typed error of the first failed item when every item failed
    (``code`` not ``"0"``/``"2"``); with ``code`` ``"2"`` (partial success)
    the failed items are left out.
    """
    if type(answer) is not dict:
        raise _bad("trading answer is not a JSON object", answer)
    code = answer.get("code")
    data = answer.get("data")
    if code not in ("0", 0, "2"):
        raise op_error(answer, prefix)
    if type(data) is not list or not all(type(d) is dict for d in data):
        raise _bad("trading answer without a 'data' list", answer)
    return [d for d in data if d.get("sCode") in ("0", 0, None, "")]


# -- parsing -------------------------------------------------------------------------------


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if isinstance(value, str) and value:
        return value
    raise _bad(f"{what}: field {key!r} missing or empty", obj)


def _opt(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _ms(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if type(value) is int:
        return value
    return None


def _num(value: str, what: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise MalformedMessage(f"OKX {what}: not a number: {value!r}") from None
    if not d.is_finite():
        raise MalformedMessage(f"OKX {what}: not a finite number: {value!r}")
    return d


def _text(d: Decimal) -> str:
    return "0" if d == 0 else f"{d.normalize():f}"


def _dict(obj: Any, what: str) -> Mapping[str, Any]:
    if type(obj) is not dict:
        raise _bad(f"{what}: expected an object", obj)
    return obj


def _side(value: Any, what: str) -> Any:
    if value in ("buy", "sell"):
        return value
    raise _bad(f"{what}: bad side", value)


def _fee_cost(fee: str | None) -> str | None:
    """OKX's fee (negative when charged) as a unified cost (positive when charged)."""
    if fee is None:
        return None
    return _text(-_num(fee, "fee"))


def _details(payload: Any, what: str) -> tuple[dict[str, tuple[str, str]], int | None]:
    obj = _dict(payload, what)
    rows = obj.get("details")
    if not isinstance(rows, list):
        raise _bad(f"{what}: 'details' missing", obj)
    balances: dict[str, tuple[str, str]] = {}
    newest = _ms(obj, "uTime")
    for row in rows:
        row = _dict(row, f"{what} detail")
        ccy = _str(row, "ccy", what)
        frozen = _opt(row, "frozenBal") or "0"
        free = _opt(row, "availBal")
        if free is None:  # some account modes leave availBal empty: cash minus frozen
            free = _text(_num(_opt(row, "cashBal") or "0", "cashBal") - _num(frozen, "frozenBal"))
        _num(free, "availBal")
        _num(frozen, "frozenBal")
        balances[ccy] = (free, frozen)
        t = _ms(row, "uTime")
        if t is not None and (newest is None or t > newest):
            newest = t
    return balances, newest


def parse_balance(payload: Any) -> BalanceSnapshot:
    """``GET /api/v5/account/balance`` -> the complete balances (free ``availBal``,
    used ``frozenBal``), stamped with the newest ``uTime``."""
    data = rest_data(payload)
    if not data:
        raise _bad("balance answer without data", payload)
    balances, ts = _details(data[0], "balance")
    return BalanceSnapshot(balances, ts, complete=True, info=payload)


def parse_balance_push(message: Mapping[str, Any]) -> list[BalanceSnapshot]:
    """An ``account`` channel push -> the balances of the currencies it names.

    Each push names the currencies it covers (``snapshot`` pages too), so
    none of them is taken as complete.
    """
    data = message.get("data")
    if not isinstance(data, list):
        raise _bad("account push without 'data'", message)
    out = []
    for item in data:
        balances, ts = _details(item, "account push")
        if balances:
            out.append(BalanceSnapshot(balances, ts, complete=False, info=dict(message)))
    return out


def parse_order(payload: Any, index: MarketIndex) -> Order:
    """One order of the REST order endpoints or of the ``orders`` channel."""
    what = "order"
    obj = _dict(payload, what)
    state = obj.get("state")
    status = ORDER_STATUS.get(state) if isinstance(state, str) else None
    if status is None:
        raise _bad(f"{what}: unknown state", state)
    filled = _opt(obj, "accFillSz") or "0"
    average = _opt(obj, "avgPx")
    cost = None
    if average is not None and _num(average, "avgPx") != 0:
        cost = _text(_num(average, "avgPx") * _num(filled, "accFillSz"))
    else:
        average = None
        cost = "0"
    price = _opt(obj, "px")
    if price is not None and _num(price, "px") == 0:
        price = None
    ord_type = obj.get("ordType")
    tif = {"post_only": "PO", "ioc": "IOC", "fok": "FOK"}.get(str(ord_type))
    fee = _opt(obj, "fee")
    return Order(
        symbol=index.symbol_of(_str(obj, "instId", what)),
        id=_str(obj, "ordId", what),
        status=status,
        side=_side(obj.get("side"), what),
        type="market" if ord_type == "market" else "limit",
        amount=_str(obj, "sz", what),
        filled=filled,
        price=price,
        client_order_id=_opt(obj, "clOrdId"),
        timestamp=_ms(obj, "cTime"),
        last_update=_ms(obj, "uTime") or _ms(obj, "cTime"),
        cost=cost,
        average=average,
        time_in_force=tif or ("GTC" if ord_type == "limit" else None),
        fee_cost=_fee_cost(fee) if fee is not None and _num(fee, "fee") != 0 else None,
        fee_currency=_opt(obj, "feeCcy") if fee is not None else None,
        info=payload,
    )


def parse_fill(payload: Any, index: MarketIndex) -> Fill:
    """One ``GET /api/v5/trade/fills`` entry."""
    what = "fill"
    obj = _dict(payload, what)
    ts = _ms(obj, "fillTime") or _ms(obj, "ts")
    if ts is None:
        raise _bad(f"{what}: no time", obj)
    exec_type = obj.get("execType")
    return Fill(
        symbol=index.symbol_of(_str(obj, "instId", what)),
        id=_str(obj, "tradeId", what),
        order_id=_str(obj, "ordId", what),
        timestamp=ts,
        side=_side(obj.get("side"), what),
        price=_str(obj, "fillPx", what),
        amount=_str(obj, "fillSz", what),
        taker_or_maker="maker" if exec_type == "M" else "taker" if exec_type == "T" else None,
        fee_cost=_fee_cost(_opt(obj, "fee")),
        fee_currency=_opt(obj, "feeCcy"),
        client_order_id=_opt(obj, "clOrdId"),
        info=payload,
    )


def parse_orders_push(message: Mapping[str, Any], index: MarketIndex) -> list[Order | Fill]:
    """An ``orders`` channel push -> each order's new state, plus a :class:`Fill`
    for each item that reports a trade (``tradeId`` with a non-zero ``fillSz``)."""
    data = message.get("data")
    if not isinstance(data, list):
        raise _bad("orders push without 'data'", message)
    out: list[Order | Fill] = []
    for item in data:
        order = parse_order(item, index)
        out.append(order)
        fill_sz = _opt(item, "fillSz")
        trade_id = _opt(item, "tradeId")
        if trade_id is None or fill_sz is None or _num(fill_sz, "fillSz") == 0:
            continue
        exec_type = item.get("execType")
        out.append(
            Fill(
                symbol=order.symbol,
                id=trade_id,
                order_id=order.id,
                timestamp=_ms(item, "fillTime") or order.last_update or 0,
                side=order.side,
                price=_str(item, "fillPx", "orders push"),
                amount=fill_sz,
                taker_or_maker="maker" if exec_type == "M" else "taker"
                if exec_type == "T" else None,
                fee_cost=_fee_cost(_opt(item, "fillFee")),
                fee_currency=_opt(item, "fillFeeCcy"),
                client_order_id=order.client_order_id,
                info=dict(item),
            )
        )  # fmt: skip
    return out


def parse_private_push(
    message: Any, index: MarketIndex
) -> list[Order | Fill | BalanceSnapshot] | None:
    """A data push of the private connection -> account events; ``None`` if it is
    not an ``account``/``orders`` push (events, replies, other channels)."""
    if type(message) is not dict:
        return None
    arg = message.get("arg")
    if type(arg) is not dict or "data" not in message:
        return None
    channel = arg.get("channel")
    if channel == "account":
        return list(parse_balance_push(message))
    if channel == "orders":
        return parse_orders_push(message, index)
    return None


_DEPOSIT_STATE = {"0": "pending", "1": "ok", "2": "ok", "8": "pending", "11": "failed",
                  "12": "failed", "13": "failed", "14": "pending"}  # fmt: skip
_WITHDRAW_STATE = {"-3": "pending", "-2": "canceled", "-1": "failed", "0": "pending",
                   "1": "pending", "2": "ok", "7": "pending", "10": "pending"}  # fmt: skip


def parse_deposit(payload: Any) -> Transfer:
    what = "deposit"
    obj = _dict(payload, what)
    return Transfer(
        id=_str(obj, "depId", what),
        type="deposit",
        currency=_str(obj, "ccy", what),
        amount=_str(obj, "amt", what),
        status=_DEPOSIT_STATE.get(str(obj.get("state")), "pending"),  # type: ignore[arg-type]
        timestamp=_ms(obj, "ts"),
        address=_opt(obj, "to"),
        txid=_opt(obj, "txId"),
        network=_opt(obj, "chain"),
        info=payload,
    )


def parse_withdrawal(payload: Any) -> Transfer:
    what = "withdrawal"
    obj = _dict(payload, what)
    return Transfer(
        id=_str(obj, "wdId", what),
        type="withdrawal",
        currency=_str(obj, "ccy", what),
        amount=_str(obj, "amt", what),
        status=_WITHDRAW_STATE.get(str(obj.get("state")), "pending"),  # type: ignore[arg-type]
        timestamp=_ms(obj, "ts"),
        address=_opt(obj, "to"),
        txid=_opt(obj, "txId"),
        network=_opt(obj, "chain"),
        fee_cost=_opt(obj, "fee"),
        info=payload,
    )


# -- the private WebSocket ------------------------------------------------------------------


@attrs.define(eq=False, repr=False)
class OkxPrivateRules:
    """:class:`~txexchange.transport.rules.WireRules` of OKX's private WebSocket.

    The transport holds one opaque topic, :data:`PRIVATE_TOPIC`; "subscribing"
    it is a two-step exchange that the transport sees as one request:

    1. the subscribe frame is a freshly signed ``login`` (built at send time,
       after every reconnect, with ``now()`` plus ``time_offset_ms``);
    2. when OKX answers ``{"event": "login", "code": "0"}``, ``on_login`` (set
       by the client layer) sends :meth:`channels_message` with the same
       request id — only then, as OKX requires;
    3. once OKX acknowledged every channel, the request is settled
       (:class:`ControlReply` ok) and ``on_subscribed`` is called.

    A refused login arrives as ``{"event": "error", "code": "600xx"}``
    without an id (OKX does not echo one for login): while a login is
    pending, such an error settles the request as refused, with the typed
    error in :attr:`last_error`.  Trading ``op`` answers (``{"id", "op",
    "code", "data"}``) are not control replies and reach the data path.
    """

    signer: OkxSigner
    now: Callable[[], float]
    time_offset_ms: float = 0
    channels: tuple[dict[str, str], ...] = PRIVATE_CHANNELS

    #: login + one subscribe per connection: no need for OKX's 480/h pacing
    control_rate: float = 2.0
    max_topics_per_message: int = 1
    max_topics_per_connection: int | None = 1
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = HEARTBEAT
    max_connection_age: float | None = None

    #: typed error of the last refused login or subscription (``None`` after a success)
    last_error: ExchangeError | None = attrs.field(default=None, init=False)
    #: logins OKX accepted, and channel subscriptions completed (one each per connect)
    logins: int = attrs.field(default=0, init=False)
    subscriptions_acknowledged: int = attrs.field(default=0, init=False)
    #: the ``timestamp`` (Unix seconds) of the last login frame built
    last_timestamp: int | None = attrs.field(default=None, init=False)
    #: called with the request id after a successful login (sends the channels)
    on_login: Callable[[str], None] | None = attrs.field(default=None, init=False)
    #: called after every completed subscription (the first, and after each reconnect)
    on_subscribed: Callable[[], None] | None = attrs.field(default=None, init=False)
    _login_id: str | None = attrs.field(default=None, init=False)
    _subscribe_id: str | None = attrs.field(default=None, init=False)
    _unsubscribe_id: str | None = attrs.field(default=None, init=False)
    _acks: int = attrs.field(default=0, init=False)

    def __repr__(self) -> str:
        return f"<OkxPrivateRules {self.signer!r} logins={self.logins}>"

    def _check(self, topics: Sequence[str]) -> None:
        if list(topics) != [PRIVATE_TOPIC]:
            raise BadRequest(f"the OKX private connection carries only {PRIVATE_TOPIC!r}")

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """A freshly signed ``login`` (the channels follow once it is accepted)."""
        self._check(topics)
        ts = int((self.now() * 1000 + self.time_offset_ms) // 1000)
        self.last_timestamp = ts
        self._login_id = str(request_id)
        self._subscribe_id = None
        self._acks = 0
        return dumps({"op": "login", "args": [self.signer.login_args(ts)]})

    def channels_message(self, request_id: str) -> bytes:
        """``subscribe`` of :attr:`channels`, after the login of ``request_id`` succeeded."""
        self._subscribe_id = request_id
        self._acks = 0
        return dumps(
            {"id": request_id, "op": "subscribe", "args": [dict(c) for c in self.channels]}
        )

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        self._check(topics)
        self._unsubscribe_id = str(request_id)
        return dumps({"id": str(request_id), "op": "unsubscribe",
                      "args": [dict(c) for c in self.channels]})  # fmt: skip

    def control_reply(self, message: Any) -> ControlReply | None:
        if type(message) is not dict:
            return None
        event = message.get("event")
        rid = message.get("id")
        if event == "login" and self._login_id is not None:
            if str(message.get("code", "0")) != "0":
                return self._refused(self._login_id, message, "login")
            self._subscribe_id, self._login_id = self._login_id, None
            self.logins += 1
            self.last_error = None
            if self.on_login is not None:
                self.on_login(self._subscribe_id)
            return None
        if event == "error":
            if self._login_id is not None and rid in (None, "", self._login_id):
                login_id, self._login_id = self._login_id, None
                return self._refused(login_id, message, "login")
            if rid is not None and rid == self._subscribe_id:
                self._subscribe_id = None
                return self._refused(rid, message, "subscribe")
            return None
        if event == "subscribe" and rid is not None and rid == self._subscribe_id:
            self._acks += 1
            if self._acks < len(self.channels):
                return None
            self._subscribe_id = None
            self.subscriptions_acknowledged += 1
            if self.on_subscribed is not None:
                self.on_subscribed()
            return ControlReply(_request_id_in(rid), True)
        if event == "unsubscribe" and rid is not None and rid == self._unsubscribe_id:
            self._unsubscribe_id = None
            return ControlReply(_request_id_in(rid), True)
        return None

    def _refused(self, rid: str, message: Mapping[str, Any], what: str) -> ControlReply:
        code = message.get("code")
        msg = message.get("msg")
        error = _typed(str(code) if code is not None else None,
                       msg if isinstance(msg, str) else None, f"OKX {what} refused")  # fmt: skip
        self.last_error = error
        return ControlReply(_request_id_in(rid), False, str(error))

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw


def _request_id_in(value: str) -> int | str:
    return int(value) if value.isascii() and value.isdigit() else value
