"""Bybit v5 account and trading (spot): REST requests, private stream rules, and parsers.

Sits in the adapter layer beside :mod:`txexchange.adapters.bybit`: builds the
signed requests of the account side (wallet balance, orders, executions,
deposits, withdrawals; placing and cancelling spot orders), the wire rules
of the private stream (``auth``, then ``order``, ``execution`` and
``wallet``), and turns Bybit's answers and private stream messages into the
typed account events of :mod:`txexchange.events`.  Pure: no I/O; the client
layer signs (:mod:`~txexchange.adapters.bybit_signing`) and sends.

Balances: Bybit reports per coin ``walletBalance`` (everything held) and
``locked`` (held by open spot orders); here ``used = locked`` and ``free =
walletBalance - locked``, for REST answers and ``wallet`` pushes alike.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from txexchange.adapters import Unknown
from txexchange.adapters.bybit import parse_rest_error
from txexchange.adapters.bybit_signing import AUTH_EXPIRY_MS, BybitSigner
from txexchange.adapters.rest import RestRequest
from txexchange.codec import dumps
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    ExchangeError,
    InvalidOrder,
    MalformedMessage,
)
from txexchange.events import BalanceSnapshot, Fill, Order, OrderStatus, Transfer
from txexchange.markets import MarketIndex
from txexchange.transport.rules import Compression, ControlReply, Heartbeat

__all__ = [
    "DATA_TOPICS",
    "ORDER_STATUS",
    "PRIVATE_TOPIC",
    "BybitPrivateRules",
    "cancel_all_request",
    "cancel_order_request",
    "create_order_body",
    "create_order_request",
    "deposits_request",
    "executions_request",
    "open_orders_request",
    "order_history_request",
    "parse_deposit",
    "parse_fill",
    "parse_order",
    "parse_private_message",
    "parse_wallet",
    "parse_withdrawal",
    "result_of",
    "rows_of",
    "subscribe_frame",
    "wallet_request",
    "withdrawals_request",
]

CATEGORY = "spot"
ACCOUNT_TYPE = "UNIFIED"

#: the one transport topic of the private stream: it stands for the ``auth`` request
PRIVATE_TOPIC = "auth"
#: the private topics subscribed after ``auth``
DATA_TOPICS: tuple[str, ...] = ("order", "execution", "wallet")

#: Bybit ``orderStatus`` -> ccxt order status
ORDER_STATUS: Mapping[str, OrderStatus] = {
    "Created": "open",
    "New": "open",
    "PartiallyFilled": "open",
    "Untriggered": "open",
    "Triggered": "open",
    "Active": "open",
    "Filled": "closed",
    "Cancelled": "canceled",
    "PartiallyFilledCanceled": "canceled",
    "Deactivated": "canceled",
    "Rejected": "rejected",
}

_TIME_IN_FORCE = ("GTC", "IOC", "FOK", "PostOnly")
#: ``{"op": "ping"}`` after 20 s without traffic (Bybit cuts a silent private socket)
PRIVATE_HEARTBEAT = Heartbeat(b'{"op":"ping"}', idle_interval=20.0, pong=None)


# -- private stream wire rules ---------------------------------------------------------


@attrs.define
class BybitPrivateRules:
    """:class:`~txexchange.transport.rules.WireRules` of ``wss://stream.bybit.com/v5/private``.

    The transport holds one opaque topic, :data:`PRIVATE_TOPIC`, whose
    "subscribe" frame is the ``auth`` request, built when the transport sends
    it (after every reconnect), each time with a fresh ``expires`` (the
    exchange's time now plus :data:`AUTH_EXPIRY_MS`) and signature.  Bybit
    answers ``{"success", "ret_msg", "op": "auth", "conn_id"}`` (echoing
    ``req_id`` when given; an answer without it is matched to the last
    ``auth`` sent).  On success ``on_authenticated`` is called, at once, so
    the stream subscribes :data:`DATA_TOPICS` on the same socket; those
    subscribe answers are not the transport's and reach the stream as data.
    ``{"op": "ping"}`` every 20 s; the private pong is ``{"op": "pong",
    "args": [ms]}`` (ordinary JSON, dropped by the stream).
    """

    signer: BybitSigner
    now_ms: Callable[[], int]
    control_rate: float = 10.0
    max_topics_per_message: int = 1
    max_topics_per_connection: int | None = 1
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = PRIVATE_HEARTBEAT
    max_connection_age: float | None = None
    on_authenticated: Callable[[], None] | None = None
    #: the last ``auth`` refusal, typed
    last_error: ExchangeError | None = None
    #: ``auth`` requests Bybit accepted (one per connection)
    authentications: int = 0
    _auth_rid: int | None = None

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """The ``auth`` request (the only "subscription" the transport holds)."""
        if list(topics) != [PRIVATE_TOPIC]:
            raise BadRequest(f"the Bybit private stream holds only {PRIVATE_TOPIC!r}")
        self._auth_rid = request_id
        args = self.signer.auth_args(self.now_ms() + AUTH_EXPIRY_MS)
        return dumps({"req_id": str(request_id), "op": "auth", "args": args})

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        # there is no "unauth": unsubscribe the data topics (answered like a subscribe)
        return dumps({"req_id": str(request_id), "op": "unsubscribe", "args": list(DATA_TOPICS)})

    def control_reply(self, message: Any) -> ControlReply | None:
        if type(message) is not dict:
            return None
        op = message.get("op")
        raw_id = message.get("req_id")
        rid: Any = int(raw_id) if isinstance(raw_id, str) and raw_id.isdigit() else None
        if op == "unsubscribe" and rid is not None and type(message.get("success")) is bool:
            return ControlReply(rid, True)
        if op != "auth":
            return None
        if rid is None:
            rid = self._auth_rid
        if message.get("success") is True:
            self.authentications += 1
            if self.on_authenticated is not None:
                self.on_authenticated()
            return ControlReply(rid, True)
        text = _ret_msg(message)
        self.last_error = AuthenticationError(f"Bybit auth refused: {text}")
        return ControlReply(rid, False, text)

    def overlap_key(self, raw: bytes) -> Hashable:
        return raw


def subscribe_frame(request_id: str) -> bytes:
    """``{"req_id", "op": "subscribe", "args": ["order", "execution", "wallet"]}``."""
    return dumps({"req_id": request_id, "op": "subscribe", "args": list(DATA_TOPICS)})


def _ret_msg(message: Mapping[str, Any]) -> str:
    text = message.get("ret_msg")
    return text if isinstance(text, str) and text else "refused"


# -- requests ----------------------------------------------------------------------------


def wallet_request() -> RestRequest:
    """``GET /v5/account/wallet-balance?accountType=UNIFIED``."""
    return RestRequest("GET", "/v5/account/wallet-balance", {"accountType": ACCOUNT_TYPE},
                       signed=True)  # fmt: skip


def open_orders_request(
    market_id: str | None = None,
    order_id: str | None = None,
    client_order_id: str | None = None,
    open_only: int | None = None,
    cursor: str | None = None,
) -> RestRequest:
    """``GET /v5/order/realtime?category=spot`` (open orders; or one order by id)."""
    params: dict[str, Any] = {"category": CATEGORY}
    if market_id is not None:
        params["symbol"] = market_id
    if order_id is not None:
        params["orderId"] = order_id
    if client_order_id is not None:
        params["orderLinkId"] = client_order_id
    if open_only is not None:
        params["openOnly"] = open_only
    params["limit"] = 50
    if cursor:
        params["cursor"] = cursor
    return RestRequest("GET", "/v5/order/realtime", params, signed=True)


def order_history_request(
    market_id: str | None = None,
    since: int | None = None,
    limit: int | None = None,
    order_id: str | None = None,
) -> RestRequest:
    """``GET /v5/order/history?category=spot`` (closed and open orders)."""
    params: dict[str, Any] = {"category": CATEGORY}
    if market_id is not None:
        params["symbol"] = market_id
    if order_id is not None:
        params["orderId"] = order_id
    if since is not None:
        params["startTime"] = since
    params["limit"] = min(limit or 50, 50)
    return RestRequest("GET", "/v5/order/history", params, signed=True)


def executions_request(
    market_id: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /v5/execution/list?category=spot``: the account's fills."""
    params: dict[str, Any] = {"category": CATEGORY}
    if market_id is not None:
        params["symbol"] = market_id
    if since is not None:
        params["startTime"] = since
    params["limit"] = min(limit or 100, 100)
    return RestRequest("GET", "/v5/execution/list", params, signed=True)


def _transfer_params(currency: str | None, since: int | None, limit: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if currency is not None:
        params["coin"] = currency
    if since is not None:
        params["startTime"] = since
    if limit is not None:
        params["limit"] = min(limit, 50)
    return params


def deposits_request(
    currency: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /v5/asset/deposit/query-record``."""
    return RestRequest("GET", "/v5/asset/deposit/query-record",
                       _transfer_params(currency, since, limit), signed=True)  # fmt: skip


def withdrawals_request(
    currency: str | None = None, since: int | None = None, limit: int | None = None
) -> RestRequest:
    """``GET /v5/asset/withdraw/query-record``."""
    return RestRequest("GET", "/v5/asset/withdraw/query-record",
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


def create_order_body(
    market_id: str,
    type: str,
    side: str,
    amount: Any,
    price: Any = None,
    client_order_id: str | None = None,
    time_in_force: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /v5/order/create`` for a spot limit or market order.

    ``amount`` is in the base currency (a market buy sets ``marketUnit``
    ``baseCoin`` so it is too).  Floats are refused.
    """
    if side not in ("buy", "sell"):
        raise BadRequest(f"side must be 'buy' or 'sell', got {side!r}")
    if type not in ("limit", "market"):
        raise BadRequest(f"Bybit spot order type must be 'limit' or 'market', got {type!r}")
    body: dict[str, Any] = {
        "category": CATEGORY,
        "symbol": market_id,
        "side": "Buy" if side == "buy" else "Sell",
        "orderType": "Limit" if type == "limit" else "Market",
        "qty": _positive_decimal(amount, "amount"),
    }
    if type == "limit":
        if price is None:
            raise InvalidOrder("a limit order needs a price")
        body["price"] = _positive_decimal(price, "price")
        tif = time_in_force or "GTC"
        if tif not in _TIME_IN_FORCE:
            raise BadRequest(f"time_in_force must be one of {', '.join(_TIME_IN_FORCE)}")
        body["timeInForce"] = tif
    else:
        if price is not None:
            raise InvalidOrder("a market order takes no price")
        body["marketUnit"] = "baseCoin"
        body["timeInForce"] = "IOC"
    if client_order_id is not None:
        if not isinstance(client_order_id, str) or not 0 < len(client_order_id) <= 36:
            raise BadRequest("client_order_id must be a string of 1 to 36 characters")
        body["orderLinkId"] = client_order_id
    return body


def create_order_request(body: Mapping[str, Any]) -> RestRequest:
    """``POST /v5/order/create``; answers only ``{orderId, orderLinkId}``."""
    return RestRequest("POST", "/v5/order/create", body=dict(body), signed=True)


def cancel_order_request(
    market_id: str, order_id: str | None = None, client_order_id: str | None = None
) -> RestRequest:
    """``POST /v5/order/cancel`` by ``orderId`` (or ``orderLinkId``)."""
    if order_id is None and client_order_id is None:
        raise BadRequest("cancel_order needs an order id (or client_order_id)")
    body: dict[str, Any] = {"category": CATEGORY, "symbol": market_id}
    if order_id is not None:
        body["orderId"] = order_id
    else:
        body["orderLinkId"] = client_order_id
    return RestRequest("POST", "/v5/order/cancel", body=body, signed=True)


def cancel_all_request(market_id: str | None = None) -> RestRequest:
    """``POST /v5/order/cancel-all`` (of one symbol, or every spot symbol)."""
    body: dict[str, Any] = {"category": CATEGORY}
    if market_id is not None:
        body["symbol"] = market_id
    return RestRequest("POST", "/v5/order/cancel-all", body=body, signed=True)


# -- parsing -----------------------------------------------------------------------------


def result_of(payload: Any) -> dict[str, Any]:
    """``result`` of a REST answer; a non-zero ``retCode`` raises its typed error."""
    if type(payload) is not dict:
        raise MalformedMessage(f"Bybit REST answer is not an object: {payload!r:.200}")
    code = payload.get("retCode")
    if type(code) is not int:
        raise MalformedMessage(f"Bybit REST answer without a retCode: {payload!r:.200}")
    if code != 0:
        raise parse_rest_error(200, None, payload)
    result = payload.get("result")
    if type(result) is not dict:
        raise MalformedMessage("Bybit REST answer without a 'result' object")
    return result


def _dict(obj: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise MalformedMessage(f"Bybit {what}: expected an object, got {type(obj).__name__}")
    return obj


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if isinstance(value, str) and value:
        return value
    if type(value) is int:
        return str(value)
    raise MalformedMessage(f"Bybit {what}: field {key!r} missing or not a string: {value!r}")


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def _num(value: str, what: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise MalformedMessage(f"Bybit {what}: not a number: {value!r}") from None
    if not d.is_finite():
        raise MalformedMessage(f"Bybit {what}: not a finite number: {value!r}")
    return d


def _opt_num(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    """A decimal string that is present and not zero, else ``None``."""
    value = _opt_str(obj, key)
    if value is None or _num(value, f"{what} {key}") == 0:
        return None
    return value


def _ms(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _text(d: Decimal) -> str:
    return "0" if d == 0 else f"{d.normalize():f}"


def _side(value: Any, what: str) -> Any:
    if value == "Buy":
        return "buy"
    if value == "Sell":
        return "sell"
    raise MalformedMessage(f"Bybit {what}: bad side {value!r}")


def parse_order(payload: Any, index: MarketIndex) -> Order:
    """One order of ``/v5/order/realtime``/``history`` or of the ``order`` topic."""
    what = "order"
    obj = _dict(payload, what)
    status_text = obj.get("orderStatus")
    status = ORDER_STATUS.get(status_text) if isinstance(status_text, str) else None
    if status is None:
        raise MalformedMessage(f"Bybit order: unknown orderStatus {status_text!r}")
    filled = _opt_str(obj, "cumExecQty") or "0"
    _num(filled, "cumExecQty")
    order_type = obj.get("orderType")
    tif = _opt_str(obj, "timeInForce")
    fee = _opt_num(obj, "cumExecFee", what)
    return Order(
        symbol=index.symbol_of(_str(obj, "symbol", what)),
        id=_str(obj, "orderId", what),
        status=status,
        side=_side(obj.get("side"), what),
        type=order_type.lower() if isinstance(order_type, str) else "unknown",
        amount=_str(obj, "qty", what),
        filled=filled,
        price=_opt_num(obj, "price", what),
        client_order_id=_opt_str(obj, "orderLinkId"),
        timestamp=_ms(obj, "createdTime"),
        last_update=_ms(obj, "updatedTime") or _ms(obj, "createdTime"),
        cost=_opt_str(obj, "cumExecValue"),
        average=_opt_num(obj, "avgPrice", what),
        time_in_force=tif,
        fee_cost=fee,
        info=payload,
    )


def _fee_currency(obj: Mapping[str, Any], market: Any, side: str) -> str | None:
    given = _opt_str(obj, "feeCurrency")
    if given is not None:
        return given
    # spot fees are taken from the asset received: base on a buy, quote on a sell
    if market is None:
        return None
    return market.base if side == "buy" else market.quote


def parse_fill(payload: Any, index: MarketIndex) -> Fill:
    """One execution of ``/v5/execution/list`` or of the ``execution`` topic."""
    what = "execution"
    obj = _dict(payload, what)
    market_id = _str(obj, "symbol", what)
    symbol = index.symbol_of(market_id)
    side = _side(obj.get("side"), what)
    time = _ms(obj, "execTime")
    if time is None:
        raise MalformedMessage(f"Bybit execution without execTime: {payload!r:.200}")
    fee = _opt_str(obj, "execFee")
    is_maker = obj.get("isMaker")
    return Fill(
        symbol=symbol,
        id=_str(obj, "execId", what),
        order_id=_str(obj, "orderId", what),
        timestamp=time,
        side=side,
        price=_str(obj, "execPrice", what),
        amount=_str(obj, "execQty", what),
        taker_or_maker=None if type(is_maker) is not bool else ("maker" if is_maker else "taker"),
        fee_cost=fee,
        fee_currency=_fee_currency(obj, index.by_id.get(market_id), side) if fee else None,
        client_order_id=_opt_str(obj, "orderLinkId"),
        info=payload,
    )


def _coins(accounts: Any, what: str) -> dict[str, tuple[str, str]]:
    if not isinstance(accounts, list):
        raise MalformedMessage(f"Bybit {what}: expected a list of accounts")
    balances: dict[str, tuple[str, str]] = {}
    for account in accounts:
        account = _dict(account, what)
        kind = account.get("accountType")
        if kind is not None and kind != ACCOUNT_TYPE:
            continue
        coins = account.get("coin")
        if not isinstance(coins, list):
            raise MalformedMessage(f"Bybit {what}: account without a 'coin' list")
        for row in coins:
            row = _dict(row, what)
            total = _num(_opt_str(row, "walletBalance") or "0", "walletBalance")
            locked = _num(_opt_str(row, "locked") or "0", "locked")
            balances[_str(row, "coin", what)] = (_text(total - locked), _text(locked))
    return balances


def parse_wallet(payload: Any) -> BalanceSnapshot:
    """``GET /v5/account/wallet-balance`` -> the complete balances (at the answer's ``time``)."""
    result = result_of(payload)
    time = payload.get("time")
    return BalanceSnapshot(
        _coins(result.get("list"), "wallet-balance"),
        time if type(time) is int else None,
        complete=True,
        info=payload,
    )


_DEPOSIT_STATUS = {0: "pending", 1: "pending", 2: "pending", 3: "ok", 4: "failed",
                   10011: "pending", 10012: "failed"}  # fmt: skip
_WITHDRAW_STATUS = {
    "SecurityCheck": "pending", "Pending": "pending", "success": "ok",
    "CancelByUser": "canceled", "Reject": "failed", "Fail": "failed",
    "BlockchainConfirmed": "ok", "MoreInformationRequired": "pending", "Unknown": "pending",
}  # fmt: skip


def parse_deposit(payload: Any) -> Transfer:
    """One ``rows`` entry of ``/v5/asset/deposit/query-record``."""
    what = "deposit"
    obj = _dict(payload, what)
    status = obj.get("status")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    txid = _opt_str(obj, "txID")
    ident = _opt_str(obj, "id") or txid
    if ident is None:
        raise MalformedMessage(f"Bybit deposit without id or txID: {payload!r:.200}")
    return Transfer(
        id=ident,
        type="deposit",
        currency=_str(obj, "coin", what),
        amount=_str(obj, "amount", what),
        status=_DEPOSIT_STATUS.get(status, "pending") if type(status) is int else "pending",  # type: ignore[arg-type]
        timestamp=_ms(obj, "successAt"),
        address=_opt_str(obj, "toAddress"),
        txid=txid,
        network=_opt_str(obj, "chain"),
        fee_cost=_opt_str(obj, "depositFee"),
        info=payload,
    )


def parse_withdrawal(payload: Any) -> Transfer:
    """One ``rows`` entry of ``/v5/asset/withdraw/query-record``."""
    what = "withdrawal"
    obj = _dict(payload, what)
    status = obj.get("status")
    return Transfer(
        id=_str(obj, "withdrawId", what),
        type="withdrawal",
        currency=_str(obj, "coin", what),
        amount=_str(obj, "amount", what),
        status=_WITHDRAW_STATUS.get(status, "pending") if isinstance(status, str) else "pending",  # type: ignore[arg-type]
        timestamp=_ms(obj, "createTime"),
        address=_opt_str(obj, "toAddress"),
        txid=_opt_str(obj, "txID"),
        network=_opt_str(obj, "chain"),
        fee_cost=_opt_str(obj, "withdrawFee"),
        info=payload,
    )


def rows_of(payload: Any, key: str = "list") -> list[Any]:
    """``result[key]`` of a REST answer (``list`` for orders and fills, ``rows`` for
    transfers)."""
    rows = result_of(payload).get(key)
    if not isinstance(rows, list):
        raise MalformedMessage(f"Bybit REST answer without a {key!r} list")
    return rows


def parse_private_message(
    message: Any, index: MarketIndex
) -> list[Order | Fill | BalanceSnapshot] | Unknown:
    """A private stream push -> account events; :class:`Unknown` for anything else
    (op answers, pongs, topics not kept).  Spot orders and fills only: other
    categories' events are left out."""
    if type(message) is not dict:
        return Unknown("Bybit private message is not an object", message)
    topic = message.get("topic")
    data = message.get("data")
    if not isinstance(topic, str) or not isinstance(data, list):
        return Unknown("Bybit private message without topic/data", message)
    base = topic.partition(".")[0]
    if base == "order":
        return [parse_order(d, index) for d in data if _spot(d)]
    if base == "execution":
        return [parse_fill(d, index) for d in data if _spot(d)]
    if base == "wallet":
        ts = _ms(message, "creationTime")
        return [BalanceSnapshot(_coins(data, "wallet"), ts, complete=False, info=message)]
    return Unknown(f"Bybit private topic {topic!r}", message)


def _spot(row: Any) -> bool:
    return isinstance(row, dict) and row.get("category", CATEGORY) == CATEGORY
