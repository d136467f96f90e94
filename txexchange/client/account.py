"""The live account of one API key: loaded once over REST, then kept from the private stream.

Sits in the client layer between an exchange's :class:`AccountBackend` (which
signs, talks to the exchange's private REST API and private stream, and
parses into the typed events of :mod:`txexchange.events`) and the user:

* :meth:`PrivateAccount.start` opens the private stream (authenticated), then
  loads balances and open orders over REST once; stream events are applied
  as they arrive, before, during and after the load —
  :class:`~txexchange.state.account.Account` merges by exchange time, so
  the order does not matter;
* after every reconnect of the private stream (events sent while it was down
  are lost) balances and open orders are loaded again, orders that were open
  and are no longer listed are looked up one by one, and fills since the gap
  are fetched, so no fill or order change is missed;
* changes are published on the client's hub: ``("balance", None)``,
  ``("orders", symbol)`` and ``("orders", None)``, ``("my_trades", symbol)``
  and ``("my_trades", None)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.delivery import Hub
from txexchange.errors import BadRequest, ClientClosed, ExchangeError
from txexchange.events import BalanceDelta, BalanceSnapshot, Fill, Order, Transfer
from txexchange.state.account import (
    TERMINAL,
    Account,
    balance_to_ccxt,
    fill_to_ccxt,
    order_to_ccxt,
    transfer_to_ccxt,
)

__all__ = ["PRIVATE_CHANNELS", "AccountBackend", "AccountEvent", "PrivateAccount"]

log = Logger()

#: channels of the private (account) side, for ``subscribe`` and ``stream``
PRIVATE_CHANNELS = ("balance", "orders", "my_trades")

AccountEvent = Order | Fill | BalanceSnapshot | BalanceDelta


class AccountBackend(Protocol):
    """What one exchange provides to :class:`PrivateAccount` (all Deferreds)."""

    def start(
        self, on_events: Callable[[list[AccountEvent]], None], on_gap: Callable[[], None]
    ) -> Deferred[None]:
        """Open and authenticate the private stream; fires once it is subscribed.

        ``on_events`` gets each stream message's events, in order; ``on_gap``
        is called once the stream is subscribed again after a reconnect.
        """

    def now_ms(self) -> int:
        """The exchange's time now, as well as it is known (local clock + offset)."""

    def load_balance(self) -> Deferred[BalanceSnapshot]: ...

    def load_open_orders(self, symbol: str | None = None) -> Deferred[list[Order]]: ...

    def fetch_order(self, order_id: str, symbol: str) -> Deferred[Order]: ...

    def fetch_orders(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Order]]: ...

    def fetch_my_trades(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Fill]]: ...

    def fetch_transfers(
        self, kind: str, currency: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[Transfer]]: ...

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any,
        client_order_id: str | None,
        params: dict[str, Any],
    ) -> Deferred[Order]: ...

    def cancel_order(
        self, order_id: str | None, symbol: str, client_order_id: str | None
    ) -> Deferred[Order]: ...

    def cancel_all_orders(self, symbol: str | None) -> Deferred[list[Order]]: ...

    def close(self) -> Deferred[None]: ...


class AccountStats:
    """Counters of the private side (read by metrics)."""

    __slots__ = ("events", "fills_recovered", "gaps", "loads", "malformed", "orders_recovered")

    def __init__(self) -> None:
        self.events = 0
        self.gaps = 0
        self.loads = 0
        self.malformed = 0
        self.orders_recovered = 0
        self.fills_recovered = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class PrivateAccount:
    """Balances, orders and fills of one API key, kept live (see the module docstring)."""

    #: seconds before a failed recovery is tried again
    retry_delay: float = 5.0

    def __init__(self, backend: AccountBackend, hub: Hub, *, name: str, clock: Any) -> None:
        self.backend = backend
        self.clock = clock
        self._retry_call: Any = None
        self._failed_recovery = False
        #: exchange time (ms) of the last private event received / of the last full load
        self._heard_at = 0
        self._synced_at = 0
        self.hub = hub
        self.name = name
        self.account = Account()
        self.stats = AccountStats()
        self._start_d: Deferred[None] | None = None
        self._outcome: Failure | object | None = _PENDING
        self._waiters: list[Deferred[None]] = []
        self._closed = False
        self._reloading = False
        self._gap_at: int | None = None

    def __repr__(self) -> str:
        return f"<PrivateAccount {self.name} {self.account!r}>"

    # -- life cycle ------------------------------------------------------------

    def ready(self) -> Deferred[None]:
        """Start (once) and fire when the stream is subscribed and the first load done."""
        if self._closed:
            return fail(ClientClosed(f"{self.name} client is closed"))
        if self._outcome is None:
            return succeed(None)
        if isinstance(self._outcome, Failure):
            return fail(self._outcome)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._start_d is None:
            self._start_d = ensureDeferred(self._start())
            self._start_d.addBoth(self._started)
        return d

    async def _start(self) -> None:
        await self.backend.start(self._on_events, self._on_gap)
        await self._load()

    def _started(self, outcome: Any) -> None:
        if isinstance(outcome, Failure):
            error = outcome.value
            log.error("{name}: private account not started: {e}", name=self.name, e=str(error))
            # a later call tries again (e.g. after fixing the clock or the key)
            self._start_d = None
            self.backend.close()
        else:
            outcome = None
            self._outcome = None
            self.hub.set_ready(("balance", None))
            if self._gap_at is not None:
                self._retry()  # the stream reconnected during the first load
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if outcome is None:
                w.callback(None)
            else:
                w.errback(outcome)

    async def _load(self) -> None:
        started = self.backend.now_ms()
        balance, orders = await _both(self.backend.load_balance(), self.backend.load_open_orders())
        self.stats.loads += 1
        self._apply([balance, *orders])
        self._synced_at = started

    def close(self) -> Deferred[None]:
        self._closed = True
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(ClientClosed(f"{self.name} client is closed"))
        return self.backend.close()

    # -- events ----------------------------------------------------------------

    def _on_events(self, events: list[AccountEvent]) -> None:
        self.stats.events += len(events)
        self._heard_at = self.backend.now_ms()
        self._apply(events)

    def _apply(self, events: Iterable[AccountEvent]) -> None:
        account = self.account
        for event in events:
            try:
                if isinstance(event, Order):
                    if account.apply_order(event):
                        self.hub.publish(("orders", event.symbol), event)
                        self.hub.publish(("orders", None), event)
                elif isinstance(event, Fill):
                    if account.apply_fill(event):
                        self.hub.publish(("my_trades", event.symbol), event)
                        self.hub.publish(("my_trades", None), event)
                elif isinstance(event, BalanceSnapshot):
                    if account.apply_balance(event):
                        self.hub.publish(("balance", None), event)
                elif isinstance(event, BalanceDelta) and account.apply_balance_delta(event):
                    self.hub.publish(("balance", None), event)
            except ExchangeError as e:
                self.stats.malformed += 1
                log.warn("{name}: account event dropped: {e}", name=self.name, e=str(e))

    def _on_gap(self) -> None:
        """The private stream is back after a reconnect: reload what it may have missed."""
        self.stats.gaps += 1
        if self._gap_at is None:
            # what was lost came after the last event heard (or the last load)
            self._gap_at = max(self._heard_at, self._synced_at)
        if self._outcome is not None or self._reloading:
            return  # recovered once the first load (or the running recovery) is done
        self._reloading = True
        ensureDeferred(self._recover()).addErrback(self._recover_failed).addBoth(self._recovered)

    async def _recover(self) -> None:
        since = self._gap_at
        self._gap_at = None
        started = self.backend.now_ms()
        was_open = {o.id: o for o in self.account.open_orders()}
        balance, listed = await _both(self.backend.load_balance(), self.backend.load_open_orders())
        self.stats.loads += 1
        self._apply([balance, *listed])
        listed_ids = {o.id for o in listed}
        symbols = {o.symbol for o in was_open.values()} | {o.symbol for o in listed}
        for order in was_open.values():
            if order.id not in listed_ids:
                current = self.account.order(order.id)
                if current is not None and current.status in TERMINAL:
                    continue  # the stream told us already
                fresh = await self.backend.fetch_order(order.id, order.symbol)
                self.stats.orders_recovered += 1
                self._apply([fresh])
        for symbol in sorted(symbols):
            # a margin for clock differences; fills already held are not counted twice
            start = None if since is None else max(0, since - 60_000)
            fills = await self.backend.fetch_my_trades(symbol, start, None)
            before = len(self.account.fills())
            self._apply(fills)
            self.stats.fills_recovered += len(self.account.fills()) - before
        self._synced_at = started

    def _recover_failed(self, failure: Failure) -> None:
        log.error(
            "{name}: reloading the account after a reconnect failed: {e}",
            name=self.name,
            e=str(failure.value),
        )
        if self._gap_at is None:
            self._gap_at = max(self._heard_at, self._synced_at)
        self._failed_recovery = True

    def _recovered(self, _: Any) -> None:
        self._reloading = False
        if self._gap_at is None or self._closed:
            return
        if self._failed_recovery:
            # try again later, not in a tight loop (e.g. the exchange is down)
            self._failed_recovery = False
            if self._retry_call is None or not self._retry_call.active():
                self._retry_call = self.clock.callLater(self.retry_delay, self._retry)
            return
        self._retry()  # another reconnect while recovering: go again at once

    def _retry(self) -> None:
        self._retry_call = None
        if self._closed or self._reloading or self._gap_at is None:
            return
        self._reloading = True
        ensureDeferred(self._recover()).addErrback(self._recover_failed).addBoth(self._recovered)

    # -- pull ------------------------------------------------------------------

    def _when_ready(self, read: Callable[[], Any]) -> Deferred[Any]:
        return self.ready().addCallback(lambda _: read())

    def fetch_balance(self) -> Deferred[dict[str, Any]]:
        return self._when_ready(lambda: balance_to_ccxt(self.account))

    def fetch_open_orders(self, symbol: str | None) -> Deferred[list[dict[str, Any]]]:
        return self._when_ready(
            lambda: [order_to_ccxt(o) for o in self.account.open_orders(symbol)]
        )

    def _merged(self, orders: list[Order]) -> list[dict[str, Any]]:
        self._apply(orders)
        out = []
        for o in orders:
            current = self.account.order(o.id) or o
            out.append(order_to_ccxt(current))
        return out

    def fetch_orders(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[dict[str, Any]]]:
        return self.backend.fetch_orders(symbol, since, limit).addCallback(self._merged)

    def fetch_closed_orders(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[dict[str, Any]]]:
        def closed(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [o for o in orders if o["status"] in TERMINAL]

        return self.fetch_orders(symbol, since, limit).addCallback(closed)

    def fetch_order(self, order_id: str, symbol: str) -> Deferred[dict[str, Any]]:
        return self.backend.fetch_order(order_id, symbol).addCallback(
            lambda o: self._merged([o])[0]
        )

    def fetch_my_trades(
        self, symbol: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[dict[str, Any]]]:
        def done(fills: list[Fill]) -> list[dict[str, Any]]:
            self._apply(fills)
            return [fill_to_ccxt(f) for f in fills]

        return self.backend.fetch_my_trades(symbol, since, limit).addCallback(done)

    def fetch_transfers(
        self, kind: str, currency: str | None, since: int | None, limit: int | None
    ) -> Deferred[list[dict[str, Any]]]:
        if kind not in ("deposit", "withdrawal", "all"):
            return fail(BadRequest(f"unknown transfer kind {kind!r}"))
        if kind == "all":
            ds = [self.backend.fetch_transfers(k, currency, since, None)
                  for k in ("deposit", "withdrawal")]  # fmt: skip

            def merge(results: list[list[Transfer]]) -> list[dict[str, Any]]:
                both = sorted(
                    (t for r in results for t in r), key=lambda t: (t.timestamp or 0, t.id)
                )
                rows = [transfer_to_ccxt(t) for t in both]
                return rows[-limit:] if limit else rows

            return _gather(ds).addCallback(merge)
        return self.backend.fetch_transfers(kind, currency, since, limit).addCallback(
            lambda ts: [transfer_to_ccxt(t) for t in ts]
        )

    # -- trading ---------------------------------------------------------------

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any,
        client_order_id: str | None,
        params: dict[str, Any],
    ) -> Deferred[dict[str, Any]]:
        if isinstance(amount, float) or isinstance(price, float):
            return fail(
                BadRequest("amount and price must be decimal strings, int or Decimal, not float")
            )
        d = self.ready().addCallback(
            lambda _: self.backend.create_order(
                symbol, type, side, amount, price, client_order_id, params
            )
        )
        return d.addCallback(lambda o: self._merged([o])[0])

    def cancel_order(
        self, order_id: str | None, symbol: str, client_order_id: str | None
    ) -> Deferred[dict[str, Any]]:
        d = self.ready().addCallback(
            lambda _: self.backend.cancel_order(order_id, symbol, client_order_id)
        )
        return d.addCallback(lambda o: self._merged([o])[0])

    def cancel_all_orders(self, symbol: str | None) -> Deferred[list[dict[str, Any]]]:
        d = self.ready().addCallback(lambda _: self.backend.cancel_all_orders(symbol))
        return d.addCallback(self._merged)

    # -- push ------------------------------------------------------------------

    def convert(self, channel: str) -> Callable[[Any], Any]:
        if channel == "balance":
            return lambda _: balance_to_ccxt(self.account)
        if channel == "orders":
            return lambda o: [order_to_ccxt(o)]
        return lambda f: [fill_to_ccxt(f)]


_PENDING = object()


def _gather(ds: list[Deferred[Any]]) -> Deferred[list[Any]]:
    """All results in order, or the first failure itself (not wrapped in FirstError)."""
    return gatherResults(ds, consumeErrors=True).addErrback(lambda f: f.value.subFailure)


def _both(a: Deferred[Any], b: Deferred[Any]) -> Deferred[list[Any]]:
    return _gather([a, b])
