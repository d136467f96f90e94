"""The private side of :class:`~txexchange.testing.bybit.FakeBybit`: accounts, spot orders,
and the private stream.

Sits beside the fake's market-data side and answers, in Bybit's v5 format
(``{"retCode", "retMsg", "result", "retExtInfo", "time"}``), the signed REST
endpoints ``/v5/account/wallet-balance``, ``/v5/order/realtime``,
``/v5/order/history``, ``/v5/execution/list``,
``/v5/asset/deposit/query-record``, ``/v5/asset/withdraw/query-record``,
``/v5/order/create``, ``/v5/order/cancel`` and ``/v5/order/cancel-all``, and
the private WebSocket ``/v5/private`` (``auth``, ``subscribe`` to ``order``,
``execution``, ``wallet``, ``ping``).  Every signed request is checked as
Bybit documents it, independently of the client's signer: a known API key
(10003), ``server_time - recv_window <= timestamp < server_time + 1000``
(10002) and the HMAC-SHA256 of ``timestamp + key + recv_window + (query
string | raw body)`` exactly as received (10004).  ``auth`` needs a known
key, an ``expires`` in the future and the HMAC of ``"GET/realtime" +
expires``.  A :class:`~txexchange.testing.ledger.Ledger` keeps balances and
orders; every change is pushed to that key's authenticated subscriptions.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from txexchange.codec import DecodeError, loads
from txexchange.testing.ledger import Ledger, LedgerError, LedgerFill, LedgerOrder, LedgerTransfer
from txexchange.testing.ledger import fmt as _fmt
from txexchange.testing.rest import Response

__all__ = ["FakeBybitPrivate"]

DEFAULT_RECV_WINDOW = 5000
#: the private topics served
TOPICS = ("order", "execution", "wallet")

_LEDGER_REFUSALS = {
    "insufficient": (170131, "Insufficient balance."),
    "duplicate_client_id": (170141, "Duplicate clientOrderId."),
    "unknown_order": (170213, "Order does not exist."),
    "bad_order": (170130, "Data sent for paramter 'qty' is not valid."),
}


class _Refused(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class _Session:
    __slots__ = ("key", "topics")

    def __init__(self) -> None:
        self.key: str | None = None
        self.topics: set[str] = set()


class FakeBybitPrivate:
    """Accounts, orders and the signed endpoints of one fake Bybit (``fake.private``)."""

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.ledger = Ledger(now_ms=self._now_ms, market_price=self._market_price,
                             split=self._split)  # fmt: skip
        self.ledger.on_order.append(self._order_changed)
        self.ledger.on_balance.append(self._balance_changed)
        #: ``(method, path)`` of every signed REST request that passed the checks
        self.signed_requests: list[tuple[str, str]] = []
        #: signed requests refused: ``(retCode, retMsg)``
        self.refused: list[tuple[int, str]] = []
        #: ``auth`` requests received: ``(api_key, accepted)``
        self.auth_requests: list[tuple[str, bool]] = []
        #: private stream pushes sent
        self.pushed = 0
        self._sessions: dict[Any, _Session] = {}
        self._push_id = 0
        self._register()

    # -- market facts ------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.fake.clock.seconds() * 1000)

    def _market_price(self, symbol: str, side: str) -> Decimal:
        bids, asks, _ = self.fake.market.book(symbol, 1)
        return Decimal((asks if side == "buy" else bids)[0][0])

    def _split(self, symbol: str) -> tuple[str, str]:
        info = self.fake.market.info(symbol)
        return info.base, info.quote

    def _symbol(self, market_id: Any) -> str:
        state = self.fake._by_id.get(market_id) if isinstance(market_id, str) else None
        if state is None:
            raise _Refused(170121, "Invalid symbol.")
        return state.symbol

    def _market_id(self, symbol: str) -> str:
        return self.fake.market_id(symbol)

    # -- REST ----------------------------------------------------------------------------

    def _register(self) -> None:
        routes: list[tuple[str, str, Callable[[str, dict[str, Any]], Any]]] = [
            ("GET", "/v5/account/wallet-balance", self._rest_wallet),
            ("GET", "/v5/order/realtime", self._rest_realtime),
            ("GET", "/v5/order/history", self._rest_history),
            ("GET", "/v5/execution/list", self._rest_executions),
            ("GET", "/v5/asset/deposit/query-record", self._rest_deposits),
            ("GET", "/v5/asset/withdraw/query-record", self._rest_withdrawals),
            ("POST", "/v5/order/create", self._rest_create),
            ("POST", "/v5/order/cancel", self._rest_cancel),
            ("POST", "/v5/order/cancel-all", self._rest_cancel_all),
        ]
        for method, path, handler in routes:
            self.fake.server.rest.route(method, path, self._signed(method, path, handler))

    def _signed(
        self, method: str, path: str, handler: Callable[[str, dict[str, Any]], Any]
    ) -> Callable[[Any], Response]:
        def serve(request: Any) -> Response:
            if not self.fake._allow():
                self.fake.rejected_403 += 1
                return Response(403, "access too frequent")
            try:
                key, params = self._verify(request, method)
                self.signed_requests.append((method, path))
                result = handler(key, params)
            except _Refused as e:
                self.refused.append((e.code, e.msg))
                return Response(200, self.fake._envelope(e.code, e.msg, {}))
            return Response(200, self.fake._envelope(0, "OK", result))

        return serve

    def _verify(self, request: Any, method: str) -> tuple[str, dict[str, Any]]:
        """The API key and parameters of a signed request, or :class:`_Refused`."""
        key = request.getHeader("X-BAPI-API-KEY")
        stamp = request.getHeader("X-BAPI-TIMESTAMP")
        window = request.getHeader("X-BAPI-RECV-WINDOW") or str(DEFAULT_RECV_WINDOW)
        sign = request.getHeader("X-BAPI-SIGN")
        secret = self.fake.api_keys.get(key) if key else None
        if secret is None:
            raise _Refused(10003, "API key is invalid.")
        if not stamp or not stamp.isdigit() or not window.isdigit() or not sign:
            raise _Refused(10001, "params error: missing X-BAPI-TIMESTAMP / X-BAPI-SIGN")
        now = self._now_ms()
        ts, win = int(stamp), int(window)
        if not (now - win <= ts < now + 1000):
            raise _Refused(
                10002,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{now}],recv_window[{win}]",
            )
        if method == "GET":
            payload = request.uri.decode("latin-1").partition("?")[2]
            params: dict[str, Any] = {
                k.decode(): v[-1].decode() for k, v in (request.args or {}).items() if v
            }
        else:
            raw = request.content.read() if request.content is not None else b""
            payload = raw.decode("utf-8", "replace")
            try:
                params = loads(raw) if raw else {}
            except DecodeError:
                raise _Refused(10001, "params error: body is not JSON") from None
            if not isinstance(params, dict):
                raise _Refused(10001, "params error: body is not a JSON object")
        expected = hmac.new(secret.encode(), f"{stamp}{key}{window}{payload}".encode(),
                            hashlib.sha256).hexdigest()  # fmt: skip
        if not hmac.compare_digest(expected, sign.lower()):
            raise _Refused(10004, "error sign! please check your signature.")
        return key, params

    @staticmethod
    def _spot(params: dict[str, Any]) -> None:
        if params.get("category") != "spot":
            raise _Refused(10001, "params error: category only support spot here")

    def _rest_wallet(self, key: str, params: dict[str, Any]) -> Any:
        if params.get("accountType") != "UNIFIED":
            raise _Refused(10001, "accountType only support UNIFIED.")
        return {"list": [self.account_json(key, None)]}

    def _filtered(self, key: str, params: dict[str, Any], orders: list[LedgerOrder]) -> Any:
        if params.get("symbol"):
            symbol = self._symbol(params["symbol"])
            orders = [o for o in orders if o.symbol == symbol]
        if params.get("orderId"):
            orders = [o for o in orders if o.id == params["orderId"]]
        if params.get("orderLinkId"):
            orders = [o for o in orders if o.client_id == params["orderLinkId"]]
        if params.get("startTime"):
            orders = [o for o in orders if o.created >= int(params["startTime"])]
        limit = int(params.get("limit") or 20)
        newest = sorted(orders, key=lambda o: (o.created, int(o.id)), reverse=True)[:limit]
        return {"category": "spot", "list": [self.order_json(o) for o in newest],
                "nextPageCursor": ""}  # fmt: skip

    def _rest_realtime(self, key: str, params: dict[str, Any]) -> Any:
        self._spot(params)
        history = self.ledger.history(key)
        if str(params.get("openOnly", "0")) == "1":
            orders = [o for o in history if o.status != "open"][-500:]
        else:
            orders = [o for o in history if o.status == "open"]
        return self._filtered(key, params, orders)

    def _rest_history(self, key: str, params: dict[str, Any]) -> Any:
        self._spot(params)
        return self._filtered(key, params, self.ledger.history(key))

    def _rest_executions(self, key: str, params: dict[str, Any]) -> Any:
        self._spot(params)
        fills = self.ledger.my_fills(key)
        if params.get("symbol"):
            symbol = self._symbol(params["symbol"])
            fills = [f for f in fills if f.symbol == symbol]
        if params.get("startTime"):
            fills = [f for f in fills if f.time >= int(params["startTime"])]
        limit = int(params.get("limit") or 50)
        newest = list(reversed(fills))[:limit]
        return {"category": "spot", "list": [self.execution_json(f) for f in newest],
                "nextPageCursor": ""}  # fmt: skip

    def _transfers(self, key: str, kind: str, params: dict[str, Any]) -> list[LedgerTransfer]:
        found = [t for t in self.ledger.transfers if t.key == key and t.type == kind]
        if params.get("coin"):
            found = [t for t in found if t.currency == params["coin"]]
        if params.get("startTime"):
            found = [t for t in found if t.time >= int(params["startTime"])]
        return list(reversed(found))[: int(params.get("limit") or 50)]

    def _rest_deposits(self, key: str, params: dict[str, Any]) -> Any:
        rows = [self.deposit_json(t) for t in self._transfers(key, "deposit", params)]
        return {"rows": rows, "nextPageCursor": ""}

    def _rest_withdrawals(self, key: str, params: dict[str, Any]) -> Any:
        rows = [self.withdrawal_json(t) for t in self._transfers(key, "withdrawal", params)]
        return {"rows": rows, "nextPageCursor": ""}

    def _rest_create(self, key: str, params: dict[str, Any]) -> Any:
        self._spot(params)
        symbol = self._symbol(params.get("symbol"))
        side = {"Buy": "buy", "Sell": "sell"}.get(params.get("side"))  # type: ignore[arg-type]
        kind = {"Limit": "limit", "Market": "market"}.get(params.get("orderType"))  # type: ignore[arg-type]
        if side is None or kind is None:
            raise _Refused(10001, "params error: side or orderType invalid")
        if kind == "market" and params.get("side") == "Buy" and params.get("marketUnit") != \
                "baseCoin":  # fmt: skip
            raise _Refused(10001, "params error: this fake takes market buys in baseCoin only")
        try:
            order = self.ledger.place(
                key, symbol, side, kind, str(params.get("qty", "0")),
                params.get("price") if kind == "limit" else None,
                params.get("orderLinkId"), str(params.get("timeInForce") or "GTC"),
            )  # fmt: skip
        except LedgerError as e:
            raise _Refused(*_LEDGER_REFUSALS[e.reason]) from None
        except ArithmeticError:
            raise _Refused(*_LEDGER_REFUSALS["bad_order"]) from None
        return {"orderId": order.id, "orderLinkId": order.client_id}

    def _find(self, key: str, params: dict[str, Any]) -> LedgerOrder:
        symbol = self._symbol(params.get("symbol"))
        try:
            return self.ledger.find(key, symbol, params.get("orderId") or None,
                                    params.get("orderLinkId") or None)  # fmt: skip
        except LedgerError:
            raise _Refused(*_LEDGER_REFUSALS["unknown_order"]) from None

    def _rest_cancel(self, key: str, params: dict[str, Any]) -> Any:
        self._spot(params)
        order = self._find(key, params)
        try:
            self.ledger.cancel(key, order.symbol, order.id)
        except LedgerError:
            raise _Refused(*_LEDGER_REFUSALS["unknown_order"]) from None
        return {"orderId": order.id, "orderLinkId": order.client_id}

    def _rest_cancel_all(self, key: str, params: dict[str, Any]) -> Any:
        self._spot(params)
        symbol = self._symbol(params["symbol"]) if params.get("symbol") else None
        canceled = self.ledger.cancel_all(key, symbol)
        return {"list": [{"orderId": o.id, "orderLinkId": o.client_id} for o in canceled],
                "success": "1"}  # fmt: skip

    # -- wire formats ----------------------------------------------------------------------

    def order_json(self, order: LedgerOrder) -> dict[str, Any]:
        if order.status == "open":
            status = "PartiallyFilled" if order.filled else "New"
        elif order.status == "closed":
            status = "Filled"
        elif order.status == "canceled":
            status = "PartiallyFilledCanceled" if order.filled else "Cancelled"
        else:
            status = "Rejected"
        average = _fmt(order.cost / order.filled) if order.filled else ""
        return {
            "category": "spot", "symbol": self._market_id(order.symbol), "orderId": order.id,
            "orderLinkId": order.client_id, "blockTradeId": "", "isLeverage": "0",
            "side": "Buy" if order.side == "buy" else "Sell",
            "orderType": "Limit" if order.type == "limit" else "Market",
            "price": _fmt(order.price) if order.price is not None else "0",
            "qty": _fmt(order.amount), "orderStatus": status, "avgPrice": average,
            "cumExecQty": _fmt(order.filled), "cumExecValue": _fmt(order.cost),
            "cumExecFee": _fmt(order.fee), "leavesQty": _fmt(order.remaining)
            if order.status == "open" else "0",
            "leavesValue": "0", "timeInForce": order.tif, "rejectReason": "EC_NoError",
            "createdTime": str(order.created), "updatedTime": str(order.updated),
            "smpType": "None", "triggerPrice": "0", "stopOrderType": "",
        }  # fmt: skip

    def execution_json(self, fill: LedgerFill) -> dict[str, Any]:
        order = self.ledger.orders[fill.order_id]
        return {
            "category": "spot", "symbol": self._market_id(fill.symbol), "execId": fill.id,
            "execPrice": _fmt(fill.price), "execQty": _fmt(fill.amount),
            "execValue": _fmt(fill.price * fill.amount), "execFee": _fmt(fill.fee),
            "feeCurrency": fill.fee_currency, "execType": "Trade", "orderId": fill.order_id,
            "orderLinkId": order.client_id, "side": "Buy" if fill.side == "buy" else "Sell",
            "orderType": "Limit" if order.type == "limit" else "Market",
            "orderPrice": _fmt(order.price) if order.price is not None else "0",
            "orderQty": _fmt(order.amount), "leavesQty": _fmt(order.remaining),
            "execTime": str(fill.time), "isMaker": fill.maker, "feeRate": "0.001",
        }  # fmt: skip

    def coin_json(self, currency: str, free: Decimal, locked: Decimal) -> dict[str, Any]:
        total = _fmt(free + locked)
        return {
            "coin": currency, "walletBalance": total, "locked": _fmt(locked), "equity": total,
            "availableToWithdraw": _fmt(free), "usdValue": "", "borrowAmount": "0",
            "spotHedgingQty": "0", "cumRealisedPnl": "0", "unrealisedPnl": "0",
        }  # fmt: skip

    def account_json(self, key: str, currencies: dict[str, tuple[Decimal, Decimal]] | None) -> Any:
        rows = currencies if currencies is not None else self.ledger.account(key)
        coins = [self.coin_json(c, f, lk) for c, (f, lk) in sorted(rows.items())
                 if currencies is not None or f or lk]  # fmt: skip
        return {"accountType": "UNIFIED", "totalEquity": "", "totalWalletBalance": "",
                "accountIMRate": "0", "accountMMRate": "0", "coin": coins}  # fmt: skip

    def deposit_json(self, t: LedgerTransfer) -> dict[str, Any]:
        return {
            "id": t.id, "coin": t.currency, "chain": t.currency, "amount": _fmt(t.amount),
            "txID": t.txid or f"0x{t.id}", "status": 3, "toAddress": "fake-address", "tag": "",
            "depositFee": "", "successAt": str(t.time), "confirmations": "10", "txIndex": "0",
            "blockHash": "", "batchReleaseLimit": "-1", "depositType": "0",
        }  # fmt: skip

    def withdrawal_json(self, t: LedgerTransfer) -> dict[str, Any]:
        return {
            "withdrawId": t.id, "coin": t.currency, "chain": t.currency,
            "amount": _fmt(t.amount), "txID": t.txid or f"0x{t.id}", "status": "success",
            "toAddress": t.address, "tag": "", "withdrawFee": "0", "createTime": str(t.time),
            "updateTime": str(t.time), "withdrawType": 0,
        }  # fmt: skip

    # -- private WebSocket -------------------------------------------------------------------

    def sessions(self, api_key: str | None = None) -> list[Any]:
        """Open private sessions authenticated (with ``api_key``, if given)."""
        return [s for s, info in self._sessions.items()
                if info.key is not None and (api_key is None or info.key == api_key)
                and s.is_open]  # fmt: skip

    def on_text(self, session: Any, conn_id: str, message: Any) -> None:
        """A text frame on a ``/v5/private`` session."""
        info = self._sessions.get(session)
        if info is None:
            info = self._sessions[session] = _Session()
            session.closed.addBoth(lambda r: (self._sessions.pop(session, None), r)[1])
        server = self.fake.server
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            server.reply(session, {"success": False, "ret_msg": "error:invalid request",
                                   "conn_id": conn_id, "op": ""})  # fmt: skip
            return
        op = message["op"]
        req_id = message.get("req_id")

        def answer(success: bool, ret_msg: str = "", **extra: Any) -> None:
            out: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "op": op,
                                   "conn_id": conn_id}  # fmt: skip
            if req_id is not None:
                out["req_id"] = req_id
            out.update(extra)
            server.reply(session, out)

        if op == "ping":
            out = {"op": "pong", "args": [str(self._now_ms())], "conn_id": conn_id}
            if req_id is not None:
                out["req_id"] = req_id
            server.reply(session, out)
        elif op == "auth":
            verdict = self._auth(message.get("args"))
            if verdict is None:
                info.key = message["args"][0]
                answer(True)
            else:
                answer(False, verdict)
        elif op in ("subscribe", "unsubscribe"):
            args = message.get("args")
            if info.key is None:
                answer(False, "Request not authorized")
            elif not isinstance(args, list) or not args or any(a not in TOPICS for a in args):
                answer(False, f"error:handler not found,topic:{args!r:.100}")
            elif op == "subscribe":
                info.topics.update(args)
                answer(True)
            else:
                info.topics.difference_update(args)
                answer(True)
        else:
            answer(False, f"error:unsupported op:{op}")

    def _auth(self, args: Any) -> str | None:
        """``None`` if ``args`` authenticate, else Bybit's refusal text."""
        if not isinstance(args, list) or len(args) != 3:
            return "Params Error"
        key, expires, signature = args
        secret = self.fake.api_keys.get(key) if isinstance(key, str) else None
        if secret is None or not isinstance(signature, str):
            self.auth_requests.append((str(key), False))
            return "Request not authorized"
        try:
            exp = int(expires)
        except (TypeError, ValueError):
            exp = 0
        expected = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(),
                            hashlib.sha256).hexdigest()  # fmt: skip
        ok = exp > self._now_ms() and hmac.compare_digest(expected, signature.lower())
        self.auth_requests.append((key, ok))
        if exp <= self._now_ms():
            return "Params Error"
        return None if ok else "Request not authorized"

    def _push(self, key: str, topic: str, data: list[Any], time: int) -> None:
        self._push_id += 1
        message = {"id": f"fake-{self._push_id}", "topic": topic, "creationTime": time,
                   "data": data}  # fmt: skip
        for session, info in list(self._sessions.items()):
            if info.key == key and topic in info.topics and session.is_open:
                session.send(message)
                self.pushed += 1

    def _order_changed(self, key: str, order: LedgerOrder, fill: LedgerFill | None) -> None:
        if fill is not None:
            self._push(key, "execution", [self.execution_json(fill)], fill.time)
        self._push(key, "order", [self.order_json(order)], order.updated)

    def _balance_changed(
        self, key: str, changed: dict[str, tuple[Decimal, Decimal]], time: int
    ) -> None:
        self._push(key, "wallet", [self.account_json(key, changed)], time)
