"""OKX's account backend: signed REST, the private WebSocket, and orders over it.

Sits in the client layer under :class:`~txexchange.client.account.PrivateAccount`:

* REST requests are signed here (``OK-ACCESS-*`` headers over
  ``timestamp + METHOD + path?query + body``, see
  :mod:`txexchange.adapters.okx_signing`) on the client's own
  :class:`~txexchange.client.rest.RestClient`;
* the server-time offset is measured (``GET /api/v5/public/time``) before
  the first signed request and the first login, and again whenever OKX
  refuses a timestamp (REST ``50102``/``50112``, login ``60004``/``60006``),
  after which the request is sent once more;
* the private WebSocket (:class:`~txexchange.client.okx_private.OkxPrivateStream`)
  logs in, subscribes ``account`` and ``orders``, does both again after
  every reconnect, and carries ``order``, ``cancel-order`` and
  ``batch-cancel-orders`` when ``trade_over="ws"`` (the default); ``"rest"``
  uses ``/api/v5/trade/*``.

OKX answers a placed order with its ids only: :meth:`create_order` returns
the order as requested (open, nothing filled), which the account merges with
whatever the ``orders`` channel has already said about it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import okx_account as acct
from txexchange.adapters.okx_signing import OkxSigner
from txexchange.adapters.rest import RestRequest
from txexchange.client.okx_private import OkxPrivateStream
from txexchange.codec import dumps
from txexchange.credentials import Credentials
from txexchange.errors import (
    BadRequest,
    ExchangeError,
    InvalidNonce,
    MalformedMessage,
    OrderNotFound,
)
from txexchange.events import Fill, Order, Transfer
from txexchange.state.account import TERMINAL

__all__ = ["OkxAccountBackend"]

log = Logger()

#: order states remembered from the stream (for cancel answers)
_REMEMBERED = 2000
#: seconds create_order waits after OKX's ack for the ``orders`` channel's first
#: word on the new order (its answer then shows fills the order got at once)
ACK_PUSH_WAIT = 1.0


class OkxAccountBackend:
    """The :class:`~txexchange.client.account.AccountBackend` of an OKX client."""

    def __init__(self, client: Any, credentials: Credentials) -> None:
        assert credentials.api_key and credentials.secret and credentials.password
        self._client = client
        self._signer = OkxSigner(credentials.api_key, credentials.secret, credentials.password)
        self._trade_over = client.options.trade_over
        self._offset_ms = 0
        self._offset_known = False
        self._time_waiters: list[Deferred[None]] = []
        self.rest = client.rest
        self.rest.set_signer(self._sign)
        self.stream: OkxPrivateStream | None = None
        self._on_events: Callable[[list[Any]], None] | None = None
        self._on_gap: Callable[[], None] | None = None
        self._latest: OrderedDict[str, Order] = OrderedDict()
        self._push_waiters: dict[str, list[Deferred[None]]] = {}

    def __repr__(self) -> str:
        return f"<OkxAccountBackend {self._signer!r}>"

    # -- time and signing --------------------------------------------------------

    @property
    def time_offset_ms(self) -> int:
        """Server time minus local time, in ms (0 until measured)."""
        return self._offset_ms

    def now_ms(self) -> int:
        return int(self._client.clock.seconds() * 1000 + self._offset_ms)

    def _sign(
        self, request: RestRequest, base_url: str
    ) -> tuple[str, dict[str, str], bytes | None]:
        query = request.query_string()
        path = f"{request.path}?{query}" if query else request.path
        body = "" if request.body is None else dumps(request.body).decode("utf-8")
        headers = self._signer.rest_headers(self.now_ms(), request.method, path, body)
        if body:
            headers["Content-Type"] = "application/json"
        return base_url.rstrip("/") + path, headers, body.encode("utf-8") if body else None

    def _sync_time(self) -> Deferred[None]:
        """Measure the server-time offset (once; again after a refused timestamp)."""
        if self._offset_known:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._time_waiters.append(d)
        if len(self._time_waiters) == 1:
            sent = self._client.clock.seconds()
            self.rest.request(acct.time_request()).addCallbacks(
                self._measured, self._not_measured, callbackArgs=(sent,)
            )
        return d

    def _measured(self, answer: Any, sent: float) -> None:
        try:
            data = acct.rest_data(answer)
            server = int(data[0]["ts"])
        except (ExchangeError, LookupError, TypeError, ValueError):
            self._not_measured(Failure(MalformedMessage("OKX /api/v5/public/time: no ts")))
            return
        received = self._client.clock.seconds()
        self._offset_ms = round(server - (sent + received) / 2 * 1000)
        self._offset_known = True
        if self.stream is not None:
            self.stream.time_offset_ms = self._offset_ms
        if abs(self._offset_ms) > 1000:
            log.warn("OKX: the local clock is {ms} ms off the exchange's; timestamps corrected",
                     ms=self._offset_ms)  # fmt: skip
        waiters, self._time_waiters = self._time_waiters, []
        for w in waiters:
            w.callback(None)

    def _not_measured(self, failure: Failure) -> None:
        waiters, self._time_waiters = self._time_waiters, []
        for w in waiters:
            w.errback(failure)

    def _signed(self, request: RestRequest) -> Deferred[Any]:
        """Send a signed request; on a refused timestamp, measure again and resend once."""

        async def go() -> Any:
            await self._sync_time()
            try:
                return await self.rest.request(request)
            except InvalidNonce:
                log.warn("OKX refused a timestamp; measuring the time offset again")
                self._offset_known = False
                await self._sync_time()
                return await self.rest.request(request)

        return ensureDeferred(go())

    def _data(self, request: RestRequest) -> Deferred[list[Any]]:
        return self._signed(request).addCallback(acct.rest_data)

    # -- stream ------------------------------------------------------------------

    def start(
        self, on_events: Callable[[list[Any]], None], on_gap: Callable[[], None]
    ) -> Deferred[None]:
        self._on_events = on_events
        self._on_gap = on_gap
        client = self._client

        async def go() -> None:
            await self._sync_time()
            if self.stream is None:
                self.stream = OkxPrivateStream(
                    signer=self._signer,
                    url=client.urls["private"],
                    reactor=client.reactor,
                    clock=client.clock,
                    transport=client.transport_options,
                    on_push=self._push,
                    on_subscribed=self._subscribed,
                    on_refused=self._refused,
                )
                self.stream.time_offset_ms = self._offset_ms
            await self.stream.start()

        return ensureDeferred(go())

    def _subscribed(self, count: int) -> None:
        if count > 1 and self._on_gap is not None:
            self._on_gap()

    def _refused(self, error: ExchangeError) -> None:
        if isinstance(error, InvalidNonce):
            self._offset_known = False
            self._sync_time().addErrback(lambda f: log.warn("OKX time not measured: {e}",
                                                            e=str(f.value)))  # fmt: skip

    def _push(self, message: Any) -> None:
        try:
            events = acct.parse_private_push(message, self._client._index)
        except ExchangeError as e:
            log.warn("OKX private push dropped: {e}", e=str(e))
            return
        if not events:
            return
        if self._on_events is not None:
            self._on_events(events)
        for event in events:  # after the account has them: this may fire create_order
            if isinstance(event, Order):
                self._remember(event)

    def _remember(self, order: Order) -> None:
        old = self._latest.get(order.id)
        if old is not None and (old.last_update or 0) > (order.last_update or 0):
            return
        self._latest[order.id] = order
        self._latest.move_to_end(order.id)
        while len(self._latest) > _REMEMBERED:
            self._latest.popitem(last=False)
        for waiter in self._push_waiters.pop(order.id, []):
            waiter.callback(None)

    def _pushed(self, order_id: str) -> Deferred[None]:
        """Fires once the stream told something about ``order_id`` (or after
        :data:`ACK_PUSH_WAIT` seconds)."""
        if order_id in self._latest or self.stream is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._push_waiters.setdefault(order_id, []).append(d)

        def give_up() -> None:
            waiters = self._push_waiters.get(order_id, [])
            if d in waiters:
                waiters.remove(d)
                if not waiters:
                    del self._push_waiters[order_id]
                d.callback(None)

        call = self._client.clock.callLater(ACK_PUSH_WAIT, give_up)
        return d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])

    # -- REST reads --------------------------------------------------------------

    @property
    def _index(self) -> Any:
        return self._client._index

    def _id(self, symbol: str) -> str:
        return self._index.id_of(symbol)

    def _orders(self, data: list[Any]) -> list[Order]:
        orders = [acct.parse_order(o, self._index) for o in data]
        return sorted(orders, key=lambda o: (o.timestamp or 0, o.id))

    def load_balance(self) -> Deferred[Any]:
        return self._signed(acct.balance_request()).addCallback(acct.parse_balance)

    def load_open_orders(self, symbol: str | None = None) -> Deferred[list[Order]]:
        inst_id = self._id(symbol) if symbol else None
        return self._data(acct.orders_pending_request(inst_id)).addCallback(self._orders)

    def fetch_order(self, order_id: str, symbol: str) -> Deferred[Order]:
        def one(data: list[Any]) -> Order:
            if not data:
                raise OrderNotFound(f"OKX: order {order_id} does not exist")
            order = acct.parse_order(data[0], self._index)
            self._remember(order)
            return order

        try:
            request = acct.order_request(self._id(symbol), order_id)
        except ExchangeError as e:
            return fail(e)
        return self._data(request).addCallback(one)

    def fetch_orders(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Order]]:
        inst_id = self._id(symbol) if symbol else None

        async def go() -> list[Order]:
            pending = await self._data(acct.orders_pending_request(inst_id))
            history = await self._data(acct.orders_history_request(inst_id, since, limit))
            orders = self._orders([*pending, *history])
            if since is not None:
                orders = [o for o in orders if (o.timestamp or 0) >= since]
            return orders[-limit:] if limit else orders

        return ensureDeferred(go())

    def fetch_my_trades(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Fill]]:
        inst_id = self._id(symbol) if symbol else None

        def parse(data: list[Any]) -> list[Fill]:
            fills = [acct.parse_fill(f, self._index) for f in data]
            return sorted(fills, key=lambda f: (f.timestamp, f.id))

        return self._data(acct.fills_request(inst_id, since, limit)).addCallback(parse)

    def fetch_transfers(
        self, kind: str, currency: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Transfer]]:
        if kind == "deposit":
            request, parse = acct.deposits_request(currency, since, limit), acct.parse_deposit
        else:
            request = acct.withdrawals_request(currency, since, limit)
            parse = acct.parse_withdrawal

        def rows(data: list[Any]) -> list[Transfer]:
            return sorted((parse(row) for row in data), key=lambda t: (t.timestamp or 0, t.id))

        return self._data(request).addCallback(rows)

    # -- trading -----------------------------------------------------------------

    def _over_ws(self) -> bool:
        return self._trade_over == "ws" and self.stream is not None

    def _trade(self, op: str, path: str, body: Any) -> Deferred[list[dict[str, Any]]]:
        """One trading call over the private WebSocket or REST; fires with the
        items OKX accepted (typed error if it accepted none)."""
        if self._over_ws():
            assert self.stream is not None
            args = body if isinstance(body, list) else [body]
            d = self.stream.request(op, args)
            prefix = f"OKX {op}"
        else:
            d = self._signed(RestRequest("POST", path, body=body, signed=True))
            prefix = f"OKX {path}"
        return d.addCallback(acct.check_ack, prefix)

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any,
        client_order_id: str | None,
        params: dict[str, Any],
    ) -> Deferred[Order]:
        tif = params.pop("timeInForce", None)
        try:
            body = acct.create_order_body(self._id(symbol), type, side, amount, price,
                                          client_order_id, tif)  # fmt: skip
            if params:
                raise BadRequest(f"unknown order parameter(s): {', '.join(sorted(params))}")
        except ExchangeError as e:
            return fail(e)

        def built(items: list[dict[str, Any]]) -> Deferred[Order]:
            if not items or not items[0].get("ordId"):
                raise MalformedMessage("OKX order answer without an ordId")
            ack = items[0]
            ts = ack.get("ts")
            order = Order(
                symbol=symbol,
                id=str(ack["ordId"]),
                status="open",
                side=side,  # type: ignore[arg-type]
                type=type,
                amount=body["sz"],
                filled="0",
                price=body.get("px"),
                client_order_id=ack.get("clOrdId") or body.get("clOrdId"),
                timestamp=int(ts) if isinstance(ts, str) and ts.isdigit() else self.now_ms(),
                last_update=None,  # any state the stream gives is newer
                cost="0",
                time_in_force=tif or ("GTC" if type == "limit" else None),
                info=ack,
            )
            # the account merges it with what the stream said (newer states win)
            return self._pushed(order.id).addCallback(lambda _: order)

        return self._trade("order", "/api/v5/trade/order", body).addCallback(built)

    def cancel_order(
        self, order_id: str | None, symbol: str, client_order_id: str | None
    ) -> Deferred[Order]:
        try:
            body = acct.cancel_order_body(self._id(symbol), order_id, client_order_id)
        except ExchangeError as e:
            return fail(e)

        def canceled(items: list[dict[str, Any]]) -> Deferred[Order] | Order:
            ord_id = str(items[0].get("ordId") or order_id) if items else order_id
            if not ord_id:
                raise MalformedMessage("OKX cancel answer without an ordId")
            known = self._latest.get(ord_id)
            if known is not None and known.status in TERMINAL:
                return known  # the orders channel was first
            return self.fetch_order(ord_id, symbol)

        return self._trade("cancel-order", "/api/v5/trade/cancel-order", body).addCallback(canceled)

    def cancel_all_orders(self, symbol: str | None) -> Deferred[list[Order]]:
        """OKX has no cancel-all for spot: the open orders are listed over REST and
        cancelled in batches of :data:`~txexchange.adapters.okx_account.BATCH_CANCEL_LIMIT`."""

        async def go() -> list[Order]:
            open_orders = await self.load_open_orders(symbol)
            done: list[Order] = []
            step = acct.BATCH_CANCEL_LIMIT
            for i in range(0, len(open_orders), step):
                chunk = open_orders[i : i + step]
                body = acct.batch_cancel_body([(self._id(o.symbol), o.id) for o in chunk])
                items = await self._trade("batch-cancel-orders",
                                          "/api/v5/trade/cancel-batch-orders", body)  # fmt: skip
                accepted = {str(item.get("ordId")) for item in items}
                for order in chunk:
                    if order.id not in accepted:
                        continue
                    known = self._latest.get(order.id)
                    if known is not None and known.status in TERMINAL:
                        done.append(known)
                    else:
                        done.append(attrs.evolve(order, status="canceled"))
            return done

        return ensureDeferred(go())

    def close(self) -> Deferred[None]:
        if self.stream is None:
            return succeed(None)
        return self.stream.close()
