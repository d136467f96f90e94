"""Bybit's account backend: signed REST v5, the private stream, and spot orders over REST.

Sits in the client layer under :class:`~txexchange.client.account.PrivateAccount`:

* REST requests are signed here (``X-BAPI-*`` headers over ``timestamp +
  api_key + recv_window + query string | JSON body``) on the client's own
  :class:`~txexchange.client.rest.RestClient`; Bybit answers errors with HTTP
  200 and a non-zero ``retCode``, turned here into typed errors;
* the server-time offset is measured once (``GET /v5/market/time``) before the
  first signed request and again whenever Bybit answers ``10002`` (timestamp
  outside ``recv_window``), after which the request is sent once more;
* the private stream (:class:`BybitPrivateStream`) authenticates with
  ``auth`` and subscribes ``order``, ``execution`` and ``wallet`` after every
  (re)connect;
* orders are placed and cancelled over REST (``trade_over="ws"`` falls back
  to REST: Bybit's ``/v5/trade`` WebSocket is not used).  ``/v5/order/create``
  answers only the ids, so the order is then read back with
  ``/v5/order/realtime`` (or built from the request if that fails).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import bybit_account as acct
from txexchange.adapters.bybit_signing import DEFAULT_RECV_WINDOW, BybitSigner
from txexchange.adapters.rest import RestRequest
from txexchange.codec import dumps
from txexchange.credentials import Credentials
from txexchange.errors import (
    BadRequest,
    ClientClosed,
    ExchangeError,
    InvalidNonce,
    MalformedMessage,
    OrderNotFound,
    SubscriptionError,
)
from txexchange.events import Fill, Order, Transfer
from txexchange.transport import Connection, ControlFailed, StatusEvent, TransportOptions

__all__ = ["BybitAccountBackend", "BybitPrivateStream"]

log = Logger()

_PENDING = object()


class BybitPrivateStream:
    """The private stream of one API key: authenticated and subscribed across reconnects.

    :param on_message: called with each data push (``topic`` + ``data``), in order.
    :param on_subscribed: called with the number of subscription rounds
        acknowledged so far, after each (1 first, more after reconnects).
    :param now_ms: the exchange's time now (ms), for ``auth``'s ``expires``.

    After a refused ``auth`` or subscribe once started (e.g. a key revoked, a
    clock step), it tries again after ``retry_delay`` seconds, doubling up to
    ``max_retry_delay`` -- never in a tight loop.
    """

    retry_delay: float = 5.0
    max_retry_delay: float = 300.0

    def __init__(
        self,
        *,
        signer: BybitSigner,
        url: str,
        reactor: Any,
        clock: Any,
        now_ms: Callable[[], int],
        transport: TransportOptions | None,
        on_message: Callable[[dict[str, Any]], None],
        on_subscribed: Callable[[int], None],
    ) -> None:
        self._signer = signer
        self.clock = clock
        self.rules = acct.BybitPrivateRules(signer, now_ms)
        self.rules.on_authenticated = self._authenticated
        if transport is not None and transport.frame_tap is not None:
            transport = transport.replace(frame_tap=None)  # signed traffic is never recorded
        self.connection = Connection(
            url,
            self.rules,
            on_message=self._message,
            on_status=self._status,
            reactor=reactor,
            clock=clock,
            options=transport,
        )
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._sub_seq = 0
        self._sub_rid: str | None = None
        #: subscription rounds acknowledged (one per authenticated connection)
        self.subscribed = 0
        self._outcome: Any = _PENDING
        self._waiters: list[Deferred[None]] = []
        self._started = False
        self._closing = False
        self._retry_call: Any = None
        self._delay = self.retry_delay

    def __repr__(self) -> str:
        return f"<BybitPrivateStream {self.connection.url} {self._signer!r}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a closed stream is not started again)."""
        return self._closing

    def start(self) -> Deferred[None]:
        """Connect, authenticate, subscribe; fires once Bybit acknowledged the subscription.

        Fails with :class:`AuthenticationError` if Bybit refuses ``auth`` (the
        connection is then closed, not retried).
        """
        if self._closing:
            return fail(ClientClosed("the Bybit private stream was closed"))
        if self._outcome is None:
            return succeed(None)
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if not self._started:
            self._started = True
            self.connection.start()
            self.connection.subscribe([acct.PRIVATE_TOPIC]).addErrback(self._first_refusal)
        return d

    def _done(self, outcome: Failure | None) -> None:
        if self._outcome is not _PENDING:
            return
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if outcome is None:
                w.callback(None)
            else:
                w.errback(outcome)

    def _first_refusal(self, failure: Failure) -> None:
        if self._outcome is not _PENDING:
            return
        err = failure.value
        if isinstance(err, SubscriptionError) and self.rules.last_error is not None:
            err = self.rules.last_error
        log.error("Bybit private stream not started: {error}", error=str(err))
        self._done(Failure(err))
        self.close()

    def close(self) -> Deferred[None]:
        self._closing = True
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._outcome is _PENDING and self._waiters:
            self._done(Failure(ClientClosed("the Bybit private stream was closed")))
        return self.connection.close()

    # -- subscription ------------------------------------------------------------

    def _authenticated(self) -> None:
        """``auth`` accepted on this socket: subscribe the data topics on it."""
        self._sub_seq += 1
        self._sub_rid = f"sub{self._sub_seq}"
        try:
            self.connection.send(acct.subscribe_frame(self._sub_rid))
        except ExchangeError as e:
            log.warn("Bybit private stream: cannot subscribe: {e}", e=str(e))

    def _sub_answer(self, message: dict[str, Any]) -> None:
        self._sub_rid = None
        if message.get("success") is True:
            self.subscribed += 1
            self._delay = self.retry_delay
            if self.subscribed == 1:
                log.info("Bybit private stream authenticated and subscribed ({key})",
                         key=repr(self._signer))  # fmt: skip
            self._done(None)
            try:
                self._on_subscribed(self.subscribed)
            except Exception:  # noqa: BLE001 - a listener bug must not break the stream
                log.failure("Bybit private stream: on_subscribed raised")
            return
        text = message.get("ret_msg")
        err = SubscriptionError(f"Bybit private subscribe refused: {text}")
        if self._outcome is _PENDING:
            self._first_refusal(Failure(err))
        else:
            self._retry_later(err)

    def _status(self, event: StatusEvent) -> None:
        if isinstance(event, ControlFailed) and self._outcome is None and not self._closing:
            self._retry_later(self.rules.last_error or ExchangeError(event.error))

    def _retry_later(self, err: ExchangeError) -> None:
        if self._closing or (self._retry_call is not None and self._retry_call.active()):
            return
        delay, self._delay = self._delay, min(self._delay * 2, self.max_retry_delay)
        log.error("Bybit refused the private stream ({error}); trying again in {delay:g}s",
                  error=str(err), delay=delay)  # fmt: skip
        self._retry_call = self.clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        if self._closing:
            return
        if acct.PRIVATE_TOPIC in self.connection.topics:
            # authenticated, but the data subscription was refused: ask again
            self._authenticated()
            return
        self.connection.subscribe([acct.PRIVATE_TOPIC]).addErrback(lambda _: None)

    # -- incoming -------------------------------------------------------------------

    def _message(self, message: Any) -> None:
        if type(message) is not dict:
            return
        if "topic" in message:
            try:
                self._on_message(message)
            except Exception:  # noqa: BLE001 - a listener bug must not break the stream
                log.failure("Bybit private stream: on_message raised")
            return
        if message.get("op") == "subscribe" and message.get("req_id") == self._sub_rid:
            self._sub_answer(message)
        # pongs and other answers: nothing to do


class BybitAccountBackend:
    """The :class:`~txexchange.client.account.AccountBackend` of a Bybit client (spot)."""

    def __init__(self, client: Any, credentials: Credentials) -> None:
        assert credentials.api_key is not None and credentials.secret is not None
        self._client = client
        self._signer = BybitSigner(credentials.api_key, credentials.secret)
        self._recv_window = client.options.recv_window or DEFAULT_RECV_WINDOW
        self._offset_ms = 0
        self._offset_known = False
        self._time_waiters: list[Deferred[None]] = []
        self.rest = client.rest
        self.rest.set_signer(self._sign)
        self.stream: BybitPrivateStream | None = None
        self._on_events: Callable[[list[Any]], None] | None = None
        self._on_gap: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<BybitAccountBackend {self._signer!r}>"

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
        if request.method == "GET":
            payload = request.query_string()
            url = f"{base_url}{request.path}" + (f"?{payload}" if payload else "")
            body = None
        else:
            raw = dumps(request.body if request.body is not None else {})
            payload = raw.decode("utf-8")
            url = f"{base_url}{request.path}"
            body = raw
        signed = self._signer.rest_headers(self.now_ms(), self._recv_window, payload)
        headers = dict(signed.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        return url, headers, body

    def _sync_time(self) -> Deferred[None]:
        """Measure the server-time offset (once; again after 10002); fires when known."""
        if self._offset_known:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._time_waiters.append(d)
        if len(self._time_waiters) == 1:
            sent = self._client.clock.seconds()
            self.rest.request(RestRequest("GET", "/v5/market/time")).addCallbacks(
                self._measured, self._not_measured, callbackArgs=(sent,)
            )
        return d

    def _measured(self, answer: Any, sent: float) -> None:
        try:
            result = acct.result_of(answer)
            nanos = result.get("timeNano")
            server_ms = int(nanos) // 1_000_000 if isinstance(nanos, str) and nanos.isdigit() \
                else int(result["timeSecond"]) * 1000  # fmt: skip
        except (ExchangeError, KeyError, TypeError, ValueError) as e:
            self._not_measured(Failure(MalformedMessage(f"Bybit /v5/market/time: {e}")))
            return
        local_ms = (sent + self._client.clock.seconds()) / 2 * 1000
        self._offset_ms = round(server_ms - local_ms)
        self._offset_known = True
        if abs(self._offset_ms) > 1000:
            log.warn("Bybit: the local clock is {ms} ms off the exchange's; timestamps corrected",
                     ms=self._offset_ms)  # fmt: skip
        waiters, self._time_waiters = self._time_waiters, []
        for w in waiters:
            w.callback(None)

    def _not_measured(self, failure: Failure) -> None:
        waiters, self._time_waiters = self._time_waiters, []
        for w in waiters:
            w.errback(failure)

    def _raw(self, request: RestRequest) -> Deferred[Any]:
        """Send a signed request; fires with the whole answer (``time`` included) once its
        ``retCode`` is 0.  On 10002 the offset is measured again and the request sent once
        more."""

        async def go() -> Any:
            await self._sync_time()
            payload = await self.rest.request(request)
            try:
                acct.result_of(payload)
            except InvalidNonce:
                log.warn("Bybit refused a timestamp (10002); measuring the time offset again")
                self._offset_known = False
                await self._sync_time()
                payload = await self.rest.request(request)
                acct.result_of(payload)
            return payload

        return ensureDeferred(go())

    def _signed(self, request: RestRequest) -> Deferred[Any]:
        """:meth:`_raw`, fired with the answer's ``result``."""
        return self._raw(request).addCallback(acct.result_of)

    # -- stream ------------------------------------------------------------------

    def start(
        self, on_events: Callable[[list[Any]], None], on_gap: Callable[[], None]
    ) -> Deferred[None]:
        self._on_events = on_events
        self._on_gap = on_gap
        client = self._client

        async def go() -> None:
            await self._sync_time()
            if self.stream is None or self.stream.closed:
                # (a stream closed after a refused start is replaced: a later call tries again)
                self.stream = BybitPrivateStream(
                    signer=self._signer,
                    url=client.urls["private"],
                    reactor=client.reactor,
                    clock=client.clock,
                    now_ms=self.now_ms,
                    transport=client.transport_options,
                    on_message=self._push,
                    on_subscribed=self._subscribed,
                )
            await self.stream.start()

        return ensureDeferred(go())

    def _subscribed(self, count: int) -> None:
        if count > 1 and self._on_gap is not None:
            self._on_gap()

    def _push(self, message: dict[str, Any]) -> None:
        try:
            events = acct.parse_private_message(message, self._index)
        except ExchangeError as e:
            log.warn("Bybit private message dropped: {e}", e=str(e))
            return
        if isinstance(events, list) and events and self._on_events is not None:
            self._on_events(events)

    # -- REST reads --------------------------------------------------------------

    @property
    def _index(self) -> Any:
        return self._client.indexes["spot"]

    def _id(self, symbol: str) -> str:
        return self._index.id_of(symbol)

    def _orders(self, result: Any) -> list[Order]:
        rows = result.get("list")
        if not isinstance(rows, list):
            raise MalformedMessage("Bybit: expected a list of orders")
        return [acct.parse_order(o, self._index) for o in rows]

    def load_balance(self) -> Deferred[Any]:
        return self._raw(acct.wallet_request()).addCallback(acct.parse_wallet)

    def load_open_orders(self, symbol: str | None = None) -> Deferred[list[Order]]:
        market_id = self._id(symbol) if symbol else None

        async def go() -> list[Order]:
            found: list[Order] = []
            cursor: str | None = None
            for _ in range(20):
                result = await self._signed(acct.open_orders_request(market_id, cursor=cursor))
                found.extend(self._orders(result))
                cursor = result.get("nextPageCursor") or None
                if not cursor:
                    break
            return found

        return ensureDeferred(go())

    def fetch_order(self, order_id: str, symbol: str) -> Deferred[Order]:
        market_id = self._id(symbol)

        async def go() -> Order:
            for request in (
                acct.open_orders_request(market_id, order_id=order_id),
                acct.open_orders_request(market_id, order_id=order_id, open_only=1),
                acct.order_history_request(market_id, order_id=order_id),
            ):
                orders = self._orders(await self._signed(request))
                for order in orders:
                    if order.id == order_id:
                        return order
            raise OrderNotFound(f"Bybit: no order {order_id} on {symbol}")

        return ensureDeferred(go())

    def fetch_orders(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Order]]:
        market_id = self._id(symbol) if symbol else None
        request = acct.order_history_request(market_id, since, limit)

        def oldest_first(result: Any) -> list[Order]:
            orders = self._orders(result)
            return sorted(orders, key=lambda o: (o.timestamp or 0, o.id))

        return self._signed(request).addCallback(oldest_first)

    def fetch_my_trades(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Fill]]:
        market_id = self._id(symbol) if symbol else None

        def parse(result: Any) -> list[Fill]:
            rows = result.get("list")
            if not isinstance(rows, list):
                raise MalformedMessage("Bybit execution list: expected a list")
            fills = [acct.parse_fill(t, self._index) for t in rows]
            return sorted(fills, key=lambda f: (f.timestamp, f.id))

        return self._signed(acct.executions_request(market_id, since, limit)).addCallback(parse)

    def fetch_transfers(
        self, kind: str, currency: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Transfer]]:
        if kind == "deposit":
            request, parse = acct.deposits_request(currency, since, limit), acct.parse_deposit
        else:
            request = acct.withdrawals_request(currency, since, limit)
            parse = acct.parse_withdrawal

        def rows(result: Any) -> list[Transfer]:
            found = result.get("rows")
            if not isinstance(found, list):
                raise MalformedMessage(f"Bybit {kind} records: expected a 'rows' list")
            return sorted((parse(r) for r in found), key=lambda t: (t.timestamp or 0, t.id))

        return self._signed(request).addCallback(rows)

    # -- trading (REST) ------------------------------------------------------------

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
        try:
            body = acct.create_order_body(
                self._id(symbol), type, side, amount, price, client_order_id,
                params.pop("timeInForce", None),
            )  # fmt: skip
            if params:
                raise BadRequest(f"unknown order parameter(s): {', '.join(sorted(params))}")
        except ExchangeError as e:
            return fail(e)

        async def go() -> Order:
            result = await self._signed(acct.create_order_request(body))
            order_id = result.get("orderId")
            if not isinstance(order_id, str) or not order_id:
                raise MalformedMessage("Bybit order/create: no orderId in the answer")
            try:
                return await self.fetch_order(order_id, symbol)
            except ExchangeError as e:
                log.warn("Bybit: order {id} placed but not read back: {e}", id=order_id, e=str(e))
                return self._from_request(symbol, order_id, body)

        return ensureDeferred(go())

    def _from_request(self, symbol: str, order_id: str, body: dict[str, Any]) -> Order:
        return Order(
            symbol=symbol,
            id=order_id,
            status="open",
            side="buy" if body["side"] == "Buy" else "sell",
            type=body["orderType"].lower(),
            amount=body["qty"],
            filled="0",
            price=body.get("price"),
            client_order_id=body.get("orderLinkId"),
            time_in_force=body.get("timeInForce"),
            info=dict(body),
        )

    def cancel_order(
        self, order_id: str | None, symbol: str, client_order_id: str | None
    ) -> Deferred[Order]:
        try:
            request = acct.cancel_order_request(self._id(symbol), order_id, client_order_id)
        except ExchangeError as e:
            return fail(e)

        async def go() -> Order:
            result = await self._signed(request)
            found = result.get("orderId")
            if not isinstance(found, str) or not found:
                raise MalformedMessage("Bybit order/cancel: no orderId in the answer")
            return await self.fetch_order(found, symbol)

        return ensureDeferred(go())

    def cancel_all_orders(self, symbol: str | None) -> Deferred[list[Order]]:
        market_id = self._id(symbol) if symbol else None

        async def go() -> list[Order]:
            before = {o.id: o for o in await self.load_open_orders(symbol)}
            result = await self._signed(acct.cancel_all_request(market_id))
            rows = result.get("list")
            if not isinstance(rows, list):
                raise MalformedMessage("Bybit order/cancel-all: expected a list")
            out = []
            for row in rows:
                oid = row.get("orderId") if isinstance(row, dict) else None
                known = before.get(oid) if isinstance(oid, str) else None
                if known is not None:
                    out.append(await self.fetch_order(known.id, known.symbol))
            return out

        return ensureDeferred(go())

    def close(self) -> Deferred[None]:
        if self.stream is None:
            return succeed(None)
        return self.stream.close()
