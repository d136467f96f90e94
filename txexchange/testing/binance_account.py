"""The private side of :class:`~txexchange.testing.binance.FakeBinance`: accounts and orders.

Sits beside the fake's market-data side and answers, in Binance's format,
the signed REST endpoints (``/api/v3/account``, ``openOrders``,
``allOrders``, ``order``, ``myTrades``, ``sapi`` deposit and withdrawal
history) and the WebSocket API's ``order.place``, ``order.cancel``,
``order.status`` and ``openOrders.cancelAll``.  Every signed request is
checked as Binance checks it: a known API key (-2015), a ``timestamp``
within ``recvWindow`` of the fake's clock and not 1 s ahead (-1021), and the
HMAC-SHA256 signature over the query string and body exactly as sent
(-1022).  The :class:`~txexchange.testing.ledger.Ledger` keeps balances and
orders; every change is pushed on the user data subscriptions of that key
(``executionReport``, ``outboundAccountPosition``, ``balanceUpdate``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from txexchange.testing.ledger import Ledger, LedgerError, LedgerFill, LedgerOrder, LedgerTransfer
from txexchange.testing.rest import Response

__all__ = ["FakeBinancePrivate"]

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000

#: WebSocket API methods answered here
WS_METHODS = frozenset({"order.place", "order.cancel", "order.status", "openOrders.cancelAll",
                        "openOrders.status", "account.status"})  # fmt: skip


class _Refused(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def f8(value: Decimal) -> str:
    """Binance's number format: at least 8 decimals, never an exponent, exact."""
    text = f"{value.normalize():f}" if value else "0"
    decimals = len(text.partition(".")[2])
    return f"{value:.8f}" if decimals <= 8 else text


_LEDGER_REFUSALS = {
    "insufficient": (-2010, "Account has insufficient balance for requested action."),
    "duplicate_client_id": (-2010, "Duplicate order sent."),
    "unknown_order": (-2011, "Unknown order sent."),
    "bad_order": (-1013, "Filter failure: invalid order."),
}


class FakeBinancePrivate:
    """Accounts, orders and the signed endpoints of one fake Binance (``fake.private``)."""

    def __init__(self, fake: Any, request_error: type[Exception]) -> None:
        self.fake = fake
        #: what the fake's WebSocket API signature check raises (code, msg, status)
        self._request_error = request_error
        self.ledger = Ledger(
            now_ms=self._now_ms, market_price=self._market_price, split=self._split
        )
        self.ledger.on_order.append(self._order_changed)
        self.ledger.on_balance.append(self._balance_changed)
        self.ledger.on_transfer.append(self._transfer_made)
        #: ``(method, path)`` of every signed REST request that passed the checks
        self.signed_requests: list[tuple[str, str]] = []
        #: signed requests refused: ``(code, message)``
        self.refused: list[tuple[int, str]] = []
        self._register()

    # -- market facts ------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.fake.clock.seconds() * 1000)

    def _market_price(self, symbol: str, side: str) -> Decimal:
        bids, asks, _ = self.fake.market.book(symbol, 1)
        level = asks[0] if side == "buy" else bids[0]
        return Decimal(level[0])

    def _split(self, symbol: str) -> tuple[str, str]:
        info = self.fake.market.info(symbol)
        return info.base, info.quote

    def _symbol(self, market_id: Any) -> str:
        state = self.fake._by_id.get(market_id) if isinstance(market_id, str) else None
        if state is None:
            raise _Refused(-1121, "Invalid symbol.")
        return state.symbol

    def _market_id(self, symbol: str) -> str:
        return self.fake.market.info(symbol).id.upper()

    # -- signature checks ----------------------------------------------------------

    def _check_time(self, timestamp: Any, window: Any) -> None:
        try:
            ts = int(timestamp)
            win = float(window)
        except (TypeError, ValueError):
            raise _Refused(-1100, "Illegal characters found in parameter 'timestamp'.") from None
        if not 0 < win <= MAX_RECV_WINDOW:
            raise _Refused(-1131, "recvWindow must be less than 60000")
        now = self._now_ms()
        if ts >= now + 1000:
            raise _Refused(
                -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if now - ts > win:
            raise _Refused(-1021, "Timestamp for this request is outside of the recvWindow.")

    def _verify_rest(self, request: Any) -> tuple[str, dict[str, str]]:
        """The API key and parameters of a signed REST request, or :class:`_Refused`."""
        key = request.getHeader("X-MBX-APIKEY")
        secret = self.fake.api_keys.get(key) if key else None
        if secret is None:
            raise _Refused(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        uri = request.uri.decode("latin-1")
        query = uri.partition("?")[2]
        body = request.content.read().decode("latin-1") if request.content is not None else ""
        signature = None
        parts = []
        for raw in (query, body):
            kept = []
            for piece in raw.split("&") if raw else []:
                if piece.startswith("signature="):
                    signature = piece[len("signature=") :]
                else:
                    kept.append(piece)
            parts.append("&".join(kept))
        if not signature:
            raise _Refused(-1102, "Mandatory parameter 'signature' was not sent.")
        payload = parts[0] + parts[1]
        expected = hmac.new(secret.encode(), payload.encode("latin-1"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise _Refused(-1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(parts[0], keep_blank_values=True))
        params.update(parse_qsl(parts[1], keep_blank_values=True))
        if "timestamp" not in params:
            raise _Refused(-1102, "Mandatory parameter 'timestamp' was not sent.")
        self._check_time(params["timestamp"], params.get("recvWindow", DEFAULT_RECV_WINDOW))
        return key, params

    # -- REST ------------------------------------------------------------------------

    def _register(self) -> None:
        routes: list[tuple[str, str, int, Callable[[str, dict[str, str]], Any]]] = [
            ("GET", "/api/v3/account", 20, self._rest_account),
            ("GET", "/api/v3/openOrders", 6, self._rest_open_orders),
            ("GET", "/api/v3/allOrders", 20, self._rest_all_orders),
            ("GET", "/api/v3/order", 4, self._rest_order_status),
            ("GET", "/api/v3/myTrades", 20, self._rest_my_trades),
            ("POST", "/api/v3/order", 1, self._rest_place),
            ("DELETE", "/api/v3/order", 1, self._rest_cancel),
            ("DELETE", "/api/v3/openOrders", 1, self._rest_cancel_all),
            ("GET", "/sapi/v1/capital/deposit/hisrec", 1, self._rest_deposits),
            ("GET", "/sapi/v1/capital/withdraw/history", 1, self._rest_withdrawals),
        ]
        for method, path, weight, handler in routes:
            self.fake.server.rest.route(method, path, self._signed_endpoint(method, path, weight,
                                                                            handler))  # fmt: skip

    def _signed_endpoint(
        self, method: str, path: str, weight: int, handler: Callable[[str, dict[str, str]], Any]
    ) -> Callable[[Any], Response]:
        def serve(request: Any) -> Response:
            verdict = self.fake._charge(weight)
            if verdict is not None:
                return verdict
            headers = {"X-MBX-USED-WEIGHT-1M": str(self.fake.used_weight)}
            try:
                key, params = self._verify_rest(request)
                self.signed_requests.append((method, path))
                return Response(200, handler(key, params), headers)
            except _Refused as e:
                self.refused.append((e.code, e.msg))
                return Response(e.status, {"code": e.code, "msg": e.msg}, headers)

        return serve

    def _rest_account(self, key: str, params: dict[str, str]) -> Any:
        omit = params.get("omitZeroBalances") == "true"
        balances = [
            {"asset": c, "free": f8(free), "locked": f8(locked)}
            for c, (free, locked) in sorted(self.ledger.account(key).items())
            if not (omit and free == 0 and locked == 0)
        ]
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
            "sellerCommission": 0, "canTrade": True, "canWithdraw": True, "canDeposit": True,
            "brokered": False, "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self._last_change(key), "accountType": "SPOT",
            "balances": balances, "permissions": ["SPOT"], "uid": 354937868,
        }  # fmt: skip

    def _last_change(self, key: str) -> int:
        times = [o.updated for o in self.ledger.history(key)]
        times += [t.time for t in self.ledger.transfers if t.key == key]
        return max(times, default=0)

    def _rest_open_orders(self, key: str, params: dict[str, str]) -> Any:
        symbol = self._symbol(params["symbol"]) if "symbol" in params else None
        return [self.order_json(o) for o in self.ledger.open_orders(key, symbol)]

    def _rest_all_orders(self, key: str, params: dict[str, str]) -> Any:
        symbol = self._symbol(params.get("symbol"))
        orders = self.ledger.history(key, symbol)
        if "startTime" in params:
            orders = [o for o in orders if o.created >= int(params["startTime"])]
        limit = int(params.get("limit", 500))
        return [self.order_json(o) for o in orders][-limit:]

    def _find(self, key: str, params: dict[str, Any]) -> LedgerOrder:
        symbol = self._symbol(params.get("symbol"))
        order_id = params.get("orderId")
        client_id = params.get("origClientOrderId")
        try:
            return self.ledger.find(key, symbol, None if order_id is None else str(order_id),
                                    client_id)  # fmt: skip
        except LedgerError:
            raise _Refused(-2013, "Order does not exist.") from None

    def _rest_order_status(self, key: str, params: dict[str, str]) -> Any:
        return self.order_json(self._find(key, params))

    def _rest_my_trades(self, key: str, params: dict[str, str]) -> Any:
        symbol = self._symbol(params.get("symbol"))
        fills = self.ledger.my_fills(key, symbol)
        if "startTime" in params:
            fills = [f for f in fills if f.time >= int(params["startTime"])]
        limit = int(params.get("limit", 500))
        return [self.fill_json(f) for f in fills][-limit:]

    def _place(self, key: str, params: dict[str, Any]) -> Any:
        symbol = self._symbol(params.get("symbol"))
        side = str(params.get("side", "")).lower()
        kind = str(params.get("type", "")).lower()
        try:
            order = self.ledger.place(
                key, symbol, side, kind, params.get("quantity", "0"), params.get("price"),
                params.get("newClientOrderId"), str(params.get("timeInForce", "GTC")),
            )  # fmt: skip
        except LedgerError as e:
            code, msg = _LEDGER_REFUSALS[e.reason]
            raise _Refused(code, msg) from None
        except ArithmeticError:
            raise _Refused(-1100, "Illegal characters found in a parameter.") from None
        body = self.order_json(order, transact=True)
        body["fills"] = [
            {"price": f8(f.price), "qty": f8(f.amount), "commission": f8(f.fee),
             "commissionAsset": f.fee_currency, "tradeId": int(f.id)}
            for f in self.ledger.fills if f.order_id == order.id
        ]  # fmt: skip
        return body

    def _rest_place(self, key: str, params: dict[str, str]) -> Any:
        return self._place(key, params)

    def _cancel(self, key: str, params: dict[str, Any]) -> Any:
        order = self._find(key, params)
        try:
            self.ledger.cancel(key, order.symbol, order.id)
        except LedgerError:
            raise _Refused(-2011, "Unknown order sent.") from None
        body = self.order_json(order, transact=True)
        body["origClientOrderId"] = order.client_id
        body["clientOrderId"] = f"cancel{order.id}"
        return body

    def _rest_cancel(self, key: str, params: dict[str, str]) -> Any:
        return self._cancel(key, params)

    def _cancel_all(self, key: str, params: dict[str, Any]) -> Any:
        symbol = self._symbol(params.get("symbol"))
        open_ = self.ledger.open_orders(key, symbol)
        if not open_:
            raise _Refused(-2011, "Unknown order sent.")
        out = []
        for order in open_:
            out.append(self._cancel(key, {"symbol": params["symbol"], "orderId": order.id}))
        return out

    def _rest_cancel_all(self, key: str, params: dict[str, str]) -> Any:
        return self._cancel_all(key, params)

    def _rest_deposits(self, key: str, params: dict[str, str]) -> Any:
        return [self.transfer_json(t) for t in self._transfers(key, "deposit", params)]

    def _rest_withdrawals(self, key: str, params: dict[str, str]) -> Any:
        return [self.transfer_json(t) for t in self._transfers(key, "withdrawal", params)]

    def _transfers(self, key: str, kind: str, params: dict[str, str]) -> list[LedgerTransfer]:
        found = [t for t in self.ledger.transfers if t.key == key and t.type == kind]
        if "coin" in params:
            found = [t for t in found if t.currency == params["coin"]]
        if "startTime" in params:
            found = [t for t in found if t.time >= int(params["startTime"])]
        return found[-int(params.get("limit", 1000)) :]

    # -- WebSocket API -------------------------------------------------------------------

    def ws_request(self, session: Any, request_id: Any, method: str, params: Any) -> None:
        """Answer one WebSocket API trading request on ``session``."""
        try:
            if not isinstance(params, dict):
                raise _Refused(-1104, "Not all sent parameters were read.")
            verdict = self.fake._charge(1)
            if verdict is not None:
                raise _Refused(-1003, verdict.body["msg"], verdict.status)
            try:
                key = self.fake._verify_signed(params)
            except self._request_error as e:
                raise _Refused(e.code, e.msg, e.status) from None  # type: ignore[attr-defined]
            if method == "order.place":
                result: Any = self._place(key, params)
            elif method == "order.cancel":
                result = self._cancel(key, params)
            elif method == "openOrders.cancelAll":
                result = self._cancel_all(key, params)
            elif method == "order.status":
                result = self.order_json(self._find(key, params))
            elif method == "openOrders.status":
                result = self._rest_open_orders(key, params)
            else:
                result = self._rest_account(key, params)
        except _Refused as e:
            self.refused.append((e.code, e.msg))
            self.fake.server.reply(
                session,
                {"id": request_id, "status": e.status, "error": {"code": e.code, "msg": e.msg}},
            )
            return
        self.fake.server.reply(session, {"id": request_id, "status": 200, "result": result})

    # -- wire formats ----------------------------------------------------------------------

    def order_json(self, order: LedgerOrder, transact: bool = False) -> dict[str, Any]:
        status = {"open": "PARTIALLY_FILLED" if order.filled else "NEW", "closed": "FILLED",
                  "canceled": "CANCELED", "rejected": "REJECTED"}[order.status]  # fmt: skip
        body: dict[str, Any] = {
            "symbol": self._market_id(order.symbol), "orderId": int(order.id),
            "orderListId": -1, "clientOrderId": order.client_id,
            "price": f8(order.price or Decimal(0)), "origQty": f8(order.amount),
            "executedQty": f8(order.filled), "cummulativeQuoteQty": f8(order.cost),
            "status": status, "timeInForce": order.tif, "type": order.type.upper(),
            "side": order.side.upper(), "stopPrice": "0.00000000", "icebergQty": "0.00000000",
            "workingTime": order.created, "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }  # fmt: skip
        if transact:
            body["transactTime"] = order.updated
        else:
            body["time"] = order.created
            body["updateTime"] = order.updated
            body["isWorking"] = True
        return body

    def fill_json(self, fill: LedgerFill) -> dict[str, Any]:
        return {
            "symbol": self._market_id(fill.symbol), "id": int(fill.id),
            "orderId": int(fill.order_id), "orderListId": -1, "price": f8(fill.price),
            "qty": f8(fill.amount), "quoteQty": f8(fill.price * fill.amount),
            "commission": f8(fill.fee), "commissionAsset": fill.fee_currency,
            "time": fill.time, "isBuyer": fill.side == "buy", "isMaker": fill.maker,
            "isBestMatch": True,
        }  # fmt: skip

    def transfer_json(self, t: LedgerTransfer) -> dict[str, Any]:
        if t.type == "deposit":
            return {
                "id": t.id, "amount": f8(t.amount), "coin": t.currency, "network": t.currency,
                "status": 1, "address": "fake-address", "addressTag": "", "txId": t.txid
                or f"0x{t.id}", "insertTime": t.time, "transferType": 0, "confirmTimes": "1/1",
                "unlockConfirm": 0, "walletType": 0,
            }  # fmt: skip
        applied = _dt.datetime.fromtimestamp(t.time / 1000, _dt.UTC)
        return {
            "id": t.id, "amount": f8(t.amount), "transactionFee": "0", "coin": t.currency,
            "status": 6, "address": t.address, "txId": t.txid or f"0x{t.id}",
            "applyTime": applied.strftime("%Y-%m-%d %H:%M:%S"), "network": t.currency,
            "transferType": 0, "info": "", "confirmNo": 1, "walletType": 0,
        }  # fmt: skip

    # -- user data events ------------------------------------------------------------------

    def _push(self, key: str, event: dict[str, Any]) -> None:
        self.fake.push_user_event(event, api_key=key)

    def _order_changed(self, key: str, order: LedgerOrder, fill: LedgerFill | None) -> None:
        status = self.order_json(order)["status"]
        if fill is not None:
            execution = "TRADE"
        elif order.status == "canceled":
            execution = "CANCELED"
        else:
            execution = "NEW"
        now = order.updated
        event = {
            "e": "executionReport", "E": now, "s": self._market_id(order.symbol),
            "c": order.client_id, "S": order.side.upper(), "o": order.type.upper(),
            "f": order.tif, "q": f8(order.amount), "p": f8(order.price or Decimal(0)),
            "P": "0.00000000", "F": "0.00000000", "g": -1,
            "C": order.client_id if execution == "CANCELED" else "",
            "x": execution, "X": status, "r": "NONE", "i": int(order.id),
            "l": f8(fill.amount) if fill else "0.00000000", "z": f8(order.filled),
            "L": f8(fill.price) if fill else "0.00000000",
            "n": f8(fill.fee) if fill else "0", "N": fill.fee_currency if fill else None,
            "T": now, "t": int(fill.id) if fill else -1, "v": 3, "I": 8641984,
            "w": order.status == "open", "m": bool(fill and fill.maker), "M": False,
            "O": order.created, "Z": f8(order.cost),
            "Y": f8(fill.price * fill.amount) if fill else "0.00000000",
            "Q": "0.00000000", "W": order.created, "V": "EXPIRE_MAKER",
        }  # fmt: skip
        if execution == "CANCELED":
            event["c"] = f"cancel{order.id}"
        self._push(key, event)

    def _balance_changed(
        self, key: str, changed: dict[str, tuple[Decimal, Decimal]], time: int
    ) -> None:
        rows = [{"a": c, "f": f8(free), "l": f8(locked)} for c, (free, locked) in changed.items()]
        self._push(key, {"e": "outboundAccountPosition", "E": time, "u": time, "B": rows})

    def _transfer_made(self, key: str, transfer: LedgerTransfer) -> None:
        delta = transfer.amount if transfer.type == "deposit" else -transfer.amount
        self._push(key, {"e": "balanceUpdate", "E": transfer.time, "a": transfer.currency,
                         "d": f8(delta), "T": transfer.time})  # fmt: skip
