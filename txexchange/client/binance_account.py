"""Binance's account backend: signed REST, the user data stream, and orders over the WebSocket API.

Sits in the client layer under :class:`~txexchange.client.account.PrivateAccount`:

* REST requests are signed here (percent-encoded query, ``timestamp`` with
  the measured server-time offset, ``recvWindow``, ``signature`` last, the key
  in ``X-MBX-APIKEY``) on the client's own :class:`~txexchange.client.rest.RestClient`,
  so public and private requests share one weight budget, as they do at Binance;
* the server-time offset is measured once (``GET /api/v3/time``) before the
  first signed request and again whenever Binance answers -1021 (timestamp
  outside ``recvWindow``), after which the request is sent once more;
* the user data stream (:class:`~txexchange.client.binance_user.BinanceUserStream`)
  also carries ``order.place``, ``order.cancel`` and ``openOrders.cancelAll``
  when ``trade_over="ws"`` (the default); ``"rest"`` uses ``/api/v3/order``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import binance_account as acct
from txexchange.adapters.binance_signing import Signer, server_time_offset, timestamp_ms
from txexchange.adapters.rest import RestRequest
from txexchange.client.binance_user import BinanceUserStream
from txexchange.credentials import Credentials
from txexchange.errors import BadRequest, ExchangeError, InvalidNonce, MalformedMessage
from txexchange.events import Fill, Order, Transfer

__all__ = ["BinanceAccountBackend"]

log = Logger()


class BinanceAccountBackend:
    """The :class:`~txexchange.client.account.AccountBackend` of a Binance client."""

    def __init__(self, client: Any, credentials: Credentials) -> None:
        assert credentials.api_key is not None and credentials.secret is not None
        self._client = client
        self._signer = Signer(credentials.api_key, credentials.secret)
        self._recv_window = client.options.recv_window
        self._trade_over = client.options.trade_over
        self._offset_ms = 0
        self._time_waiters: list[Deferred[None]] = []
        self._offset_known = False
        self._secret = credentials.secret
        self.rest = client.rest
        self.rest.set_signer(self._sign)
        self.stream: BinanceUserStream | None = None
        self._on_events: Callable[[list[Any]], None] | None = None
        self._on_gap: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<BinanceAccountBackend {self._signer!r}>"

    # -- time and signing --------------------------------------------------------

    @property
    def time_offset_ms(self) -> int:
        """Server time minus local time, in ms (0 until measured)."""
        return self._offset_ms

    def now_ms(self) -> int:
        return timestamp_ms(self._client.clock.seconds, self._offset_ms)

    def _sign(self, request: RestRequest, base_url: str) -> tuple[str, dict[str, str], None]:
        pairs = self._signer.rest_params(
            request.params, timestamp=self.now_ms(), recv_window=self._recv_window
        )
        signed = self._signer.sign_rest(query=pairs)
        return f"{base_url}{request.path}?{signed.query}", dict(signed.headers), None

    def _sync_time(self) -> Deferred[None]:
        """Measure the server-time offset (once; again after -1021); fires when known."""
        if self._offset_known:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._time_waiters.append(d)
        if len(self._time_waiters) == 1:
            clock = self._client.clock
            sent = clock.seconds()
            self.rest.request(RestRequest("GET", "/api/v3/time", weight=1)).addCallbacks(
                self._measured, self._not_measured, callbackArgs=(sent,)
            )
        return d

    def _measured(self, answer: Any, sent: float) -> None:
        server = answer.get("serverTime") if isinstance(answer, dict) else None
        if type(server) is not int:
            self._not_measured(Failure(MalformedMessage("Binance /api/v3/time: no serverTime")))
            return
        self._offset_ms = server_time_offset(server, sent, self._client.clock.seconds())
        self._offset_known = True
        if self.stream is not None:
            self.stream.time_offset_ms = self._offset_ms
        if abs(self._offset_ms) > 1000:
            log.warn(
                "Binance: the local clock is {ms} ms off the exchange's; timestamps corrected",
                ms=self._offset_ms,
            )
        waiters, self._time_waiters = self._time_waiters, []
        for w in waiters:
            w.callback(None)

    def _not_measured(self, failure: Failure) -> None:
        waiters, self._time_waiters = self._time_waiters, []
        for w in waiters:
            w.errback(failure)

    def _signed(self, request: RestRequest) -> Deferred[Any]:
        """Send a signed request; on -1021, measure the offset again and send it once more."""

        async def go() -> Any:
            await self._sync_time()
            try:
                return await self.rest.request(request)
            except InvalidNonce:
                log.warn("Binance refused a timestamp (-1021); measuring the time offset again")
                self._offset_known = False
                await self._sync_time()
                return await self.rest.request(request)

        return ensureDeferred(go())

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
                self.stream = BinanceUserStream(
                    api_key=self._signer.api_key,
                    secret=self._secret,
                    reactor=client.reactor,
                    clock=client.clock,
                    urls={"ws_api": client.urls["ws_api"]},
                    transport=client.transport_options,
                    on_event=self._event,
                    on_subscribed=self._subscribed,
                )
                self.stream.time_offset_ms = self._offset_ms
                if self._recv_window is not None:
                    self.stream.recv_window = self._recv_window
            await self.stream.start()

        return ensureDeferred(go())

    def _subscribed(self, count: int) -> None:
        if count > 1 and self._on_gap is not None:
            self._on_gap()

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("e") == "eventStreamTerminated":
            return
        index = self._client._index
        try:
            events = acct.parse_user_event(event, index)
        except ExchangeError as e:
            log.warn("Binance user data event dropped: {e}", e=str(e))
            return
        if events and self._on_events is not None:
            self._on_events(events)

    # -- REST reads --------------------------------------------------------------

    @property
    def _index(self) -> Any:
        return self._client._index

    def _id(self, symbol: str) -> str:
        return self._index.id_of(symbol)

    def load_balance(self) -> Deferred[Any]:
        return self._signed(acct.account_request()).addCallback(acct.parse_account)

    def _orders(self, answer: Any) -> list[Order]:
        if not isinstance(answer, list):
            raise MalformedMessage("Binance: expected a list of orders")
        return [acct.parse_order(o, self._index) for o in answer]

    def load_open_orders(self, symbol: str | None = None) -> Deferred[list[Order]]:
        market_id = self._id(symbol) if symbol else None
        return self._signed(acct.open_orders_request(market_id)).addCallback(self._orders)

    def fetch_order(self, order_id: str, symbol: str) -> Deferred[Order]:
        params = acct.cancel_order_params(self._id(symbol), order_id)
        request = RestRequest("GET", "/api/v3/order", params, weight=4, signed=True)
        return self._signed(request).addCallback(lambda o: acct.parse_order(o, self._index))

    def fetch_orders(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Order]]:
        if symbol is None:
            return fail(BadRequest("binance fetch_orders needs a symbol"))
        request = acct.all_orders_request(self._id(symbol), since, limit)
        return self._signed(request).addCallback(self._orders)

    def fetch_my_trades(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Fill]]:
        if symbol is None:
            return fail(BadRequest("binance fetch_my_trades needs a symbol"))

        def parse(answer: Any) -> list[Fill]:
            if not isinstance(answer, list):
                raise MalformedMessage("Binance myTrades: expected a list")
            return [acct.parse_fill(t, self._index) for t in answer]

        request = acct.my_trades_request(self._id(symbol), since, limit)
        return self._signed(request).addCallback(parse)

    def fetch_transfers(
        self, kind: str, currency: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Transfer]]:
        if kind == "deposit":
            request, parse = acct.deposits_request(currency, since, limit), acct.parse_deposit
        else:
            request, parse = (
                acct.withdrawals_request(currency, since, limit),
                acct.parse_withdrawal,
            )

        def rows(answer: Any) -> list[Transfer]:
            if not isinstance(answer, list):
                raise MalformedMessage(f"Binance {kind} history: expected a list")
            found = [parse(row) for row in answer]
            return sorted(found, key=lambda t: (t.timestamp or 0, t.id))

        return self._signed(request).addCallback(rows)

    # -- trading -----------------------------------------------------------------

    def _ws(self, method: str, params: dict[str, Any]) -> Deferred[Any]:
        assert self.stream is not None

        async def go() -> Any:
            try:
                return await self.stream.request(method, params)  # type: ignore[union-attr]
            except InvalidNonce:
                self._offset_known = False
                await self._sync_time()
                return await self.stream.request(method, params)  # type: ignore[union-attr]

        return ensureDeferred(go())

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
            body = acct.create_order_params(
                self._id(symbol),
                type,
                side,
                amount,
                price,
                client_order_id,
                params.pop("timeInForce", None),
            )
            if params:
                raise BadRequest(f"unknown order parameter(s): {', '.join(sorted(params))}")
        except ExchangeError as e:
            return fail(e)
        if self._trade_over == "ws" and self.stream is not None:
            d = self._ws("order.place", body)
        else:
            d = self._signed(acct.create_order_request(body))
        return d.addCallback(lambda o: acct.parse_order(o, self._index))

    def cancel_order(
        self, order_id: str | None, symbol: str, client_order_id: str | None
    ) -> Deferred[Order]:
        try:
            body = acct.cancel_order_params(self._id(symbol), order_id, client_order_id)
        except ExchangeError as e:
            return fail(e)
        if self._trade_over == "ws" and self.stream is not None:
            d = self._ws("order.cancel", body)
        else:
            d = self._signed(acct.cancel_order_request(body))
        return d.addCallback(lambda o: acct.parse_order(o, self._index))

    def cancel_all_orders(self, symbol: str | None) -> Deferred[list[Order]]:
        if symbol is None:
            return fail(BadRequest("binance cancel_all_orders needs a symbol"))
        market_id = self._id(symbol)
        if self._trade_over == "ws" and self.stream is not None:
            d = self._ws("openOrders.cancelAll", {"symbol": market_id})
        else:
            d = self._signed(acct.cancel_all_request(market_id))
        return d.addCallback(self._orders)

    def close(self) -> Deferred[None]:
        stream, self.stream = self.stream, None
        if stream is None:
            return succeed(None)
        return stream.close()
