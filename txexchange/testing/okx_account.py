"""The private side of :class:`~txexchange.testing.okx.FakeOkx`: accounts, orders, login.

Sits beside the fake's market-data side and speaks OKX v5's private
protocol, written from OKX's documentation:

* the signed REST endpoints (``/api/v5/account/balance``,
  ``/api/v5/trade/orders-pending``, ``orders-history``, ``order``, ``fills``,
  ``/api/v5/asset/deposit-history``, ``withdrawal-history``; ``POST``
  ``/api/v5/trade/order``, ``cancel-order``, ``cancel-batch-orders``), each
  checked as OKX checks it: a known ``OK-ACCESS-KEY`` (50111), the right
  passphrase (50105), an ISO-8601 ``OK-ACCESS-TIMESTAMP`` (50112) within
  30 s of the fake's clock (50102), and ``OK-ACCESS-SIGN`` =
  Base64(HMAC-SHA256(secret, timestamp + METHOD + path?query + body)) over
  the request exactly as it arrived (50113), all with HTTP 401;
* the private WebSocket (``/ws/v5/private``): ``login`` (60005 unknown key,
  60024 wrong passphrase, 60004/60006 bad or stale timestamp, 60007 bad
  sign), ``subscribe`` to ``account`` and ``orders`` only once logged in
  (60011 otherwise), and the ``order``, ``cancel-order`` and
  ``batch-cancel-orders`` operations.

The :class:`~txexchange.testing.ledger.Ledger` keeps balances and orders;
every change is pushed on the ``orders`` and ``account`` channels of the
key's logged-in sessions, before the operation's own answer.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from txexchange.codec import DecodeError, loads
from txexchange.testing.ledger import Ledger, LedgerError, LedgerFill, LedgerOrder, fmt
from txexchange.testing.rest import Response
from txexchange.testing.server import FakeSession

__all__ = ["PRIVATE_PATH", "FakeOkxPrivate"]

#: the private WebSocket path
PRIVATE_PATH = "/ws/v5/private"
#: how far (s) a request's timestamp may be from the fake's clock
TIMESTAMP_WINDOW = 30.0

_LEDGER_CODES = {
    "insufficient": ("51008", "Order failed. Insufficient balance."),
    "duplicate_client_id": ("51016", "Duplicated clOrdId"),
    "unknown_order": ("51603", "Order does not exist"),
    "bad_order": ("51000", "Parameter sz error"),
}
_STATE = {"closed": "filled", "canceled": "canceled", "rejected": "canceled"}


class _Refused(Exception):
    def __init__(self, code: str, msg: str, status: int = 200) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def _sign(secret: str, prehash: str) -> str:
    digest = hmac.new(secret.encode(), prehash.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class _Private:
    """A private session's login and channels."""

    __slots__ = ("channels", "key")

    def __init__(self) -> None:
        self.key: str | None = None
        self.channels: list[dict[str, Any]] = []


class FakeOkxPrivate:
    """Accounts, orders and the signed endpoints of one fake OKX (``fake.private``).

    ``api_keys`` maps API keys to ``(secret, passphrase)``.
    """

    def __init__(self, fake: Any, api_keys: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.fake = fake
        self.api_keys: dict[str, tuple[str, str]] = dict(api_keys or {})
        self.ledger = Ledger(now_ms=self._now_ms, market_price=self._market_price,
                             split=self._split)  # fmt: skip
        self.ledger.on_order.append(self._order_changed)
        self.ledger.on_balance.append(self._balance_changed)
        #: ``(method, path)`` of every signed REST request that passed the checks
        self.signed_requests: list[tuple[str, str]] = []
        #: refusals (REST and login): ``(code, message)``
        self.refused: list[tuple[str, str]] = []
        #: every ``login`` request received: ``(session, args)``
        self.logins: list[tuple[FakeSession, Any]] = []
        self.sessions: dict[FakeSession, _Private] = {}
        self._register()

    # -- market facts ------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.fake.clock.seconds() * 1000)

    def _market_price(self, symbol: str, side: str) -> Decimal:
        bids, asks, _ = self.fake.market.book(symbol, 1)
        return Decimal((asks if side == "buy" else bids)[0][0])

    def _split(self, symbol: str) -> tuple[str, str]:
        info = self.fake.market.info(symbol)
        return info.base, info.quote

    def _symbol(self, inst_id: Any) -> str:
        state = self.fake._by_id.get(inst_id) if isinstance(inst_id, str) else None
        if state is None:
            raise _Refused("51001", "Instrument ID does not exist.")
        return state.symbol

    def _inst_id(self, symbol: str) -> str:
        return self.fake.inst_id(symbol)

    # -- REST ----------------------------------------------------------------------------

    def _register(self) -> None:
        routes: list[tuple[str, str, Callable[[str, dict[str, str], Any], Any]]] = [
            ("GET", "/api/v5/account/balance", self._rest_balance),
            ("GET", "/api/v5/trade/orders-pending", self._rest_pending),
            ("GET", "/api/v5/trade/orders-history", self._rest_history),
            ("GET", "/api/v5/trade/order", self._rest_order),
            ("GET", "/api/v5/trade/fills", self._rest_fills),
            ("GET", "/api/v5/asset/deposit-history", self._rest_deposits),
            ("GET", "/api/v5/asset/withdrawal-history", self._rest_withdrawals),
            ("POST", "/api/v5/trade/order", self._rest_place),
            ("POST", "/api/v5/trade/cancel-order", self._rest_cancel),
            ("POST", "/api/v5/trade/cancel-batch-orders", self._rest_cancel_batch),
        ]
        for method, path, handler in routes:
            self.fake.server.rest.route(method, path, self._signed(method, path, handler))

    def _verify(self, request: Any) -> str:
        """The API key of a correctly signed request, or :class:`_Refused` (HTTP 401)."""
        key = (request.getHeader("OK-ACCESS-KEY") or "").strip()
        entry = self.api_keys.get(key)
        if entry is None:
            raise _Refused("50111", "Invalid OK-ACCESS-KEY", 401)
        secret, passphrase = entry
        if request.getHeader("OK-ACCESS-PASSPHRASE") != passphrase:
            raise _Refused("50105", "Invalid OK-ACCESS-PASSPHRASE", 401)
        stamp = request.getHeader("OK-ACCESS-TIMESTAMP") or ""
        try:
            moment = _dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            raise _Refused("50112", "Invalid OK-ACCESS-TIMESTAMP", 401) from None
        sent = moment.replace(tzinfo=_dt.UTC).timestamp()
        if abs(self.fake.clock.seconds() - sent) > TIMESTAMP_WINDOW:
            raise _Refused("50102", "Timestamp request expired", 401)
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        prehash = stamp + request.method.decode() + request.uri.decode("latin-1") + body.decode()
        given = request.getHeader("OK-ACCESS-SIGN") or ""
        if not hmac.compare_digest(_sign(secret, prehash), given):
            raise _Refused("50113", "Invalid Sign", 401)
        return key

    def _signed(
        self, method: str, path: str, handler: Callable[[str, dict[str, str], Any], Any]
    ) -> Callable[[Any], Response]:
        def serve(request: Any) -> Response:
            try:
                key = self._verify(request)
                self.signed_requests.append((method, path))
                args = {k.decode(): v[-1].decode() for k, v in (request.args or {}).items() if v}
                body: Any = None
                if method == "POST":
                    request.content.seek(0)
                    try:
                        body = loads(request.content.read())
                    except DecodeError:
                        raise _Refused("50000", "Body can not be empty.", 400) from None
                answer = handler(key, args, body)
            except _Refused as e:
                self.refused.append((e.code, e.msg))
                return Response(e.status, {"code": e.code, "msg": e.msg, "data": []})
            if isinstance(answer, Response):
                return answer
            return Response(200, {"code": "0", "msg": "", "data": answer})

        return serve

    def _rest_balance(self, key: str, args: dict[str, str], _: Any) -> Any:
        rows = [self._balance_row(key, c, free, locked)
                for c, (free, locked) in sorted(self.ledger.account(key).items())
                if free or locked]  # fmt: skip
        return [{"uTime": str(self._last_change(key)), "totalEq": "0", "isoEq": "0",
                 "adjEq": "", "ordFroz": "", "imr": "", "mmr": "", "mgnRatio": "",
                 "notionalUsd": "", "upl": "", "details": rows}]  # fmt: skip

    def _balance_row(self, key: str, ccy: str, free: Decimal, locked: Decimal) -> dict[str, str]:
        total = fmt(free + locked)
        return {"ccy": ccy, "eq": total, "cashBal": total, "availBal": fmt(free),
                "frozenBal": fmt(locked), "ordFrozen": fmt(locked), "availEq": "",
                "uTime": str(self._last_change(key)), "upl": "0", "eqUsd": "0", "liab": "",
                "disEq": "0", "isoEq": "0", "stgyEq": "0"}  # fmt: skip

    def _last_change(self, key: str) -> int:
        times = [o.updated for o in self.ledger.history(key)]
        times += [t.time for t in self.ledger.transfers if t.key == key]
        return max(times, default=0)

    def _filtered(self, orders: list[LedgerOrder], args: dict[str, str]) -> list[LedgerOrder]:
        if args.get("instType") not in (None, "SPOT", "ANY"):
            return []
        if "instId" in args:
            symbol = self._symbol(args["instId"])
            orders = [o for o in orders if o.symbol == symbol]
        if "begin" in args:
            orders = [o for o in orders if o.created >= int(args["begin"])]
        orders = sorted(orders, key=lambda o: (o.created, int(o.id)), reverse=True)
        return orders[: int(args.get("limit", 100))]

    def _rest_pending(self, key: str, args: dict[str, str], _: Any) -> Any:
        return [self.order_json(o) for o in self._filtered(self.ledger.open_orders(key), args)]

    def _rest_history(self, key: str, args: dict[str, str], _: Any) -> Any:
        done = [o for o in self.ledger.history(key) if o.status != "open"]
        return [self.order_json(o) for o in self._filtered(done, args)]

    def _find(self, key: str, arg: Mapping[str, Any]) -> LedgerOrder:
        symbol = self._symbol(arg.get("instId"))
        try:
            return self.ledger.find(key, symbol, arg.get("ordId") or None,
                                    arg.get("clOrdId") or None)  # fmt: skip
        except LedgerError:
            raise _Refused("51603", "Order does not exist") from None

    def _rest_order(self, key: str, args: dict[str, str], _: Any) -> Any:
        try:
            return [self.order_json(self._find(key, args))]
        except _Refused as e:
            return Response(200, {"code": e.code, "msg": e.msg, "data": []})

    def _rest_fills(self, key: str, args: dict[str, str], _: Any) -> Any:
        symbol = self._symbol(args["instId"]) if "instId" in args else None
        fills = self.ledger.my_fills(key, symbol)
        if "begin" in args:
            fills = [f for f in fills if f.time >= int(args["begin"])]
        fills = list(reversed(fills))[: int(args.get("limit", 100))]
        return [self.fill_json(f) for f in fills]

    def _transfers(self, key: str, kind: str, args: dict[str, str]) -> list[Any]:
        found = [t for t in self.ledger.transfers if t.key == key and t.type == kind]
        if "ccy" in args:
            found = [t for t in found if t.currency == args["ccy"]]
        if "before" in args:
            found = [t for t in found if t.time > int(args["before"])]
        return list(reversed(found))[: int(args.get("limit", 100))]

    def _rest_deposits(self, key: str, args: dict[str, str], _: Any) -> Any:
        return [{"ccy": t.currency, "chain": f"{t.currency}-Fake", "amt": fmt(t.amount),
                 "from": "", "areaCodeFrom": "", "to": "fake-deposit-address",
                 "txId": t.txid or f"0x{t.id}", "ts": str(t.time), "state": "2",
                 "depId": t.id, "fromWdId": "", "actualDepBlkConfirm": "12"}
                for t in self._transfers(key, "deposit", args)]  # fmt: skip

    def _rest_withdrawals(self, key: str, args: dict[str, str], _: Any) -> Any:
        return [{"chain": f"{t.currency}-Fake", "fee": "0", "feeCcy": t.currency,
                 "ccy": t.currency, "clientId": "", "amt": fmt(t.amount),
                 "txId": t.txid or f"0x{t.id}", "from": "", "areaCodeFrom": "", "to": t.address,
                 "areaCodeTo": "", "state": "2", "ts": str(t.time), "nonTradableAsset": False,
                 "wdId": t.id}
                for t in self._transfers(key, "withdrawal", args)]  # fmt: skip

    def _rest_place(self, key: str, args: dict[str, str], body: Any) -> Any:
        return self._answer(self._ops(key, "order", [body] if isinstance(body, dict) else body))

    def _rest_cancel(self, key: str, args: dict[str, str], body: Any) -> Any:
        return self._answer(self._ops(key, "cancel-order",
                                      [body] if isinstance(body, dict) else body))  # fmt: skip

    def _rest_cancel_batch(self, key: str, args: dict[str, str], body: Any) -> Any:
        return self._answer(self._ops(key, "batch-cancel-orders", body))

    @staticmethod
    def _answer(result: tuple[str, str, list[dict[str, Any]]]) -> Response:
        code, msg, data = result
        return Response(200, {"code": code, "msg": msg, "data": data})

    # -- trading (REST and WebSocket alike) ------------------------------------------------

    def _ops(self, key: str, op: str, args: Any) -> tuple[str, str, list[dict[str, Any]]]:
        """Run one trading request: ``(code, msg, data)`` as OKX answers it."""
        if not isinstance(args, list) or not args or not all(isinstance(a, dict) for a in args):
            return "60012", "Invalid request", []
        if op != "batch-cancel-orders" and len(args) != 1:
            return "60012", "Invalid request", []
        if len(args) > 20:
            return "51000", "Parameter error: at most 20 orders", []
        data = []
        for arg in args:
            try:
                order = self._place(key, arg) if op == "order" else self._cancel(key, arg)
                data.append({"ordId": order.id, "clOrdId": order.client_id, "tag": "",
                             "ts": str(self._now_ms()), "sCode": "0",
                             "sMsg": "Order placed" if op == "order" else ""})  # fmt: skip
            except _Refused as e:
                self.refused.append((e.code, e.msg))
                data.append({"ordId": str(arg.get("ordId", "")), "tag": "",
                             "clOrdId": str(arg.get("clOrdId", "")),
                             "ts": str(self._now_ms()), "sCode": e.code,
                             "sMsg": e.msg})  # fmt: skip
        failed = sum(1 for d in data if d["sCode"] != "0")
        if failed == 0:
            return "0", "", data
        if failed == len(data):
            return "1", "All operations failed", data
        return "2", "Bulk operation partially succeeded", data

    def _place(self, key: str, arg: Mapping[str, Any]) -> LedgerOrder:
        symbol = self._symbol(arg.get("instId"))
        if arg.get("tdMode") != "cash":
            raise _Refused("51000", "Parameter tdMode error")
        ord_type = arg.get("ordType")
        side = arg.get("side")
        if ord_type not in ("limit", "market", "post_only", "ioc", "fok"):
            raise _Refused("51000", "Parameter ordType error")
        cl_ord_id = arg.get("clOrdId") or None
        if cl_ord_id is not None and (not str(cl_ord_id).isalnum() or len(str(cl_ord_id)) > 32):
            raise _Refused("51000", "Parameter clOrdId error")
        if cl_ord_id is not None and any(o.client_id == cl_ord_id
                                         for o in self.ledger.history(key)):  # fmt: skip
            raise _Refused("51016", "Duplicated clOrdId")
        try:
            amount = Decimal(str(arg.get("sz")))
            if ord_type == "market" and side == "buy" and arg.get("tgtCcy") != "base_ccy":
                amount = amount / self._market_price(symbol, "buy")  # sz in the quote currency
            order = self.ledger.place(
                key, symbol, str(side), "market" if ord_type == "market" else "limit", amount,
                arg.get("px") if ord_type != "market" else None, cl_ord_id,
                {"post_only": "PO", "ioc": "IOC", "fok": "FOK"}.get(str(ord_type), "GTC"),
            )  # fmt: skip
        except LedgerError as e:
            code, msg = _LEDGER_CODES[e.reason]
            raise _Refused(code, msg) from None
        except ArithmeticError:
            raise _Refused("51000", "Parameter sz error") from None
        return order

    def _cancel(self, key: str, arg: Mapping[str, Any]) -> LedgerOrder:
        order = self._find(key, arg)
        if order.status != "open":
            raise _Refused("51400", "Cancellation failed as the order has been filled, "
                                    "canceled or does not exist.")  # fmt: skip
        self.ledger.cancel(key, order.symbol, order.id)
        return order

    # -- the private WebSocket --------------------------------------------------------------

    def opened(self, session: FakeSession) -> None:
        self.sessions[session] = _Private()

        def gone(result: Any) -> Any:
            self.sessions.pop(session, None)
            return result

        session.closed.addBoth(gone)

    def on_text(self, session: FakeSession, info: Any, message: dict[str, Any]) -> None:
        """A JSON request on a private session (``ping`` is handled by the fake)."""
        state = self.sessions.get(session)
        if state is None:
            return
        op = message.get("op")
        rid = message.get("id")
        if op == "login":
            if not self.fake._count_op(session, info):
                return
            self._login(session, info, state, message.get("args"))
            return
        if op in ("subscribe", "unsubscribe"):
            if not self.fake._count_op(session, info):
                return
            if state.key is None:
                self.fake._error(session, info, rid, "60011", "Please log in")
                return
            self._channels(session, info, state, op, rid, message.get("args"))
            return
        if op in ("order", "cancel-order", "batch-cancel-orders"):
            if state.key is None:
                code, msg, data = "60011", "Please log in", []
            else:
                code, msg, data = self._ops(state.key, op, message.get("args"))
            answer = {
                "id": rid,
                "op": op,
                "code": code,
                "msg": msg,
                "data": data,
                "inTime": str(self._now_ms() * 1000),
                "outTime": str(self._now_ms() * 1000),
            }
            self.fake._reply(session, answer)
            return
        self.fake._error(session, info, rid, "60012", "Invalid request")

    def _login(self, session: FakeSession, info: Any, state: _Private, args: Any) -> None:
        self.logins.append((session, args))
        arg = args[0] if isinstance(args, list) and len(args) == 1 else None
        try:
            if not isinstance(arg, dict):
                raise _Refused("60009", "Login failed.")
            entry = self.api_keys.get(arg.get("apiKey"))  # type: ignore[arg-type]
            if entry is None:
                raise _Refused("60005", "Invalid OK-ACCESS-KEY")
            secret, passphrase = entry
            if arg.get("passphrase") != passphrase:
                raise _Refused("60024", "Wrong passphrase")
            stamp = arg.get("timestamp")
            try:
                sent = float(stamp)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise _Refused("60004", "Invalid timestamp") from None
            if abs(self.fake.clock.seconds() - sent) > TIMESTAMP_WINDOW:
                raise _Refused("60006", "Timestamp request expired")
            expected = _sign(secret, f"{stamp}GET/users/self/verify")
            if not hmac.compare_digest(expected, str(arg.get("sign"))):
                raise _Refused("60007", "Invalid sign")
        except _Refused as e:
            self.refused.append((e.code, e.msg))
            self.fake._error(session, info, None, e.code, e.msg)
            return
        state.key = arg["apiKey"]
        self.fake._reply(session, {"event": "login", "code": "0", "msg": "",
                                   "connId": info.conn_id})  # fmt: skip

    def _channels(self, session: FakeSession, info: Any, state: _Private, op: str, rid: Any,
                  args: Any) -> None:  # fmt: skip
        if not isinstance(args, list) or not args:
            self.fake._error(session, info, rid, "60012", "Invalid request")
            return
        for arg in args:
            name = arg.get("channel") if isinstance(arg, dict) else None
            if name not in ("account", "orders") or (name == "orders" and arg.get(
                    "instType") not in ("SPOT", "ANY")):  # fmt: skip
                self.fake._error(session, info, rid, "60018",
                                 f"Wrong URL or channel:{name} doesn't exist.")  # fmt: skip
                return
        for arg in args:
            ack = {"event": op, "arg": arg, "connId": info.conn_id}
            if rid is not None:
                ack = {"id": rid, **ack}
            if op == "subscribe":
                if arg not in state.channels:
                    state.channels.append(dict(arg))
            elif arg in state.channels:
                state.channels.remove(arg)
            self.fake._reply(session, ack)
            if op == "subscribe" and arg["channel"] == "account":
                rows = [self._balance_row(state.key, c, f, lk)  # type: ignore[arg-type]
                        for c, (f, lk) in sorted(self.ledger.account(state.key).items())
                        if f or lk]  # type: ignore[arg-type]  # fmt: skip
                self._send(session, "account", rows, "snapshot")

    # -- pushes ---------------------------------------------------------------------------

    def _subscribers(self, key: str, channel: str, inst_id: str | None = None) -> list[Any]:
        out = []
        for session, state in list(self.sessions.items()):
            if state.key != key or not session.is_open:
                continue
            for arg in state.channels:
                if arg["channel"] == channel and arg.get("instId") in (None, inst_id):
                    out.append(session)
                    break
        return out

    def _send(self, session: FakeSession, channel: str, rows: Any, event_type: str) -> None:
        if channel == "account":
            now = str(self._now_ms())
            message: dict[str, Any] = {
                "arg": {"channel": "account", "uid": "44705892343619584"},
                "eventType": event_type, "curPage": 1, "lastPage": True,
                "data": [{"uTime": now, "totalEq": "0", "isoEq": "0", "adjEq": "",
                          "details": rows}],
            }  # fmt: skip
        else:
            message = {"arg": {"channel": "orders", "instType": "SPOT",
                               "uid": "44705892343619584"}, "data": rows}  # fmt: skip
        self.fake._reply(session, message)

    def _order_changed(self, key: str, order: LedgerOrder, fill: LedgerFill | None) -> None:
        row = self.order_json(order, fill)
        for session in self._subscribers(key, "orders", self._inst_id(order.symbol)):
            self._send(session, "orders", [row], "event_update")

    def _balance_changed(self, key: str, changed: dict[str, tuple[Decimal, Decimal]],
                         time: int) -> None:  # fmt: skip
        rows = [self._balance_row(key, c, free, locked) for c, (free, locked) in changed.items()]
        for row in rows:
            row["uTime"] = str(time)
        for session in self._subscribers(key, "account"):
            self._send(session, "account", rows, "event_update")

    # -- wire formats ------------------------------------------------------------------------

    def order_json(self, order: LedgerOrder, fill: LedgerFill | None = None) -> dict[str, Any]:
        if order.status == "open":
            state = "partially_filled" if order.filled else "live"
        else:
            state = _STATE[order.status]
        ord_type = {"PO": "post_only", "IOC": "ioc", "FOK": "fok"}.get(order.tif, order.type)
        base, quote = self._split(order.symbol)
        average = order.cost / order.filled if order.filled else None
        return {
            "instType": "SPOT", "instId": self._inst_id(order.symbol), "tgtCcy": "", "ccy": "",
            "ordId": order.id, "clOrdId": order.client_id, "tag": "",
            "px": fmt(order.price) if order.price is not None else "", "sz": fmt(order.amount),
            "pnl": "0", "ordType": ord_type if order.type == "limit" else "market",
            "side": order.side, "posSide": "", "tdMode": "cash",
            "accFillSz": fmt(order.filled),
            "fillPx": fmt(fill.price) if fill else "", "tradeId": fill.id if fill else "",
            "fillSz": fmt(fill.amount) if fill else "0",
            "fillTime": str(fill.time) if fill else "",
            "fillFee": fmt(-fill.fee) if fill else "0", "fillFeeCcy": quote if fill else "",
            "execType": ("M" if fill.maker else "T") if fill else "",
            "avgPx": fmt(average) if average is not None else "", "state": state,
            "lever": "", "fee": fmt(-order.fee), "feeCcy": quote if order.fee else base,
            "rebate": "0", "rebateCcy": quote, "source": "", "category": "normal",
            "cancelSource": "1" if order.status == "canceled" else "",
            "uTime": str(order.updated), "cTime": str(order.created),
        }  # fmt: skip

    def fill_json(self, fill: LedgerFill) -> dict[str, Any]:
        order = self.ledger.orders[fill.order_id]
        return {
            "instType": "SPOT", "instId": self._inst_id(fill.symbol), "tradeId": fill.id,
            "ordId": fill.order_id, "clOrdId": order.client_id, "billId": f"9{fill.id}",
            "tag": "", "fillPx": fmt(fill.price), "fillSz": fmt(fill.amount),
            "fillIdxPx": "", "fillPnl": "0", "side": fill.side, "posSide": "",
            "execType": "M" if fill.maker else "T", "feeCcy": fill.fee_currency,
            "fee": fmt(-fill.fee), "ts": str(fill.time), "fillTime": str(fill.time),
        }  # fmt: skip
