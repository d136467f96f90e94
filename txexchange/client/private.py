"""The ccxt-named private methods every client has: account pull, push and trading.

Sits in the client layer as a mixin of
:class:`~txexchange.client.base.ExchangeClient`.  Each call checks its
arguments, waits for the markets, and hands over to the client's
:class:`~txexchange.client.account.PrivateAccount` (made on first use from the
exchange's backend, ``_account_backend()``).  A client whose exchange has no
private backend fails these calls with :class:`~txexchange.errors.NotSupported`;
missing credentials fail them with :class:`~txexchange.errors.AuthenticationError`.
Every method returns a Deferred; nothing here raises.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from txexchange.client.account import AccountBackend, PrivateAccount
from txexchange.credentials import Credentials
from txexchange.delivery import ObserverHandle, UpdateStream
from txexchange.errors import BadRequest, ClientClosed, ExchangeError, NotSupported

__all__ = ["PrivateMethods"]

log = Logger()


def _check_window(since: Any, limit: Any) -> None:
    if since is not None and (type(since) is not int or since < 0):
        raise BadRequest(f"since must be a timestamp in ms (int >= 0), got {since!r}")
    if limit is not None and (type(limit) is not int or limit <= 0):
        raise BadRequest(f"limit must be a positive int, got {limit!r}")


class PrivateMethods:
    """Mixin: ``fetch_balance``, ``create_order``, ``watch_orders``, ..."""

    name: str
    hub: Any
    clock: Any
    options: Any
    credentials: Credentials
    _closed: bool
    _private_account: PrivateAccount | None = None

    # -- for subclasses ----------------------------------------------------------

    def _account_backend(self) -> AccountBackend:
        raise NotSupported(f"{self.name}: the private API (account, orders) is not supported yet")

    # -- plumbing ----------------------------------------------------------------

    def _with_markets(self) -> Deferred[Any]:
        raise NotImplementedError

    def market(self, symbol: str) -> Any:
        raise NotImplementedError

    def _arm_shutdown(self) -> None:
        """Overridden by the client: close it when the reactor shuts down."""

    @property
    def private(self) -> PrivateAccount:
        """The live account (made on first use; raises if it cannot be)."""
        if self._closed:
            raise ClientClosed(f"{self.name} client is closed")
        if self._private_account is None:
            creds = getattr(self, "credentials", None) or Credentials()
            creds.require(self.name, password=getattr(self, "needs_password", False))
            self._arm_shutdown()
            self._private_account = PrivateAccount(
                self._account_backend(),
                self.hub,
                name=self.name,
                clock=self.clock,
            )
        return self._private_account

    def _call(
        self, symbol: str | None, go: Callable[[PrivateAccount], Deferred[Any]]
    ) -> Deferred[Any]:
        try:
            account = self.private
        except ExchangeError as e:
            return fail(e)

        def run(_: Any) -> Deferred[Any]:
            if symbol is not None:
                self.market(symbol)  # BadSymbol for an unknown one
            return go(account)

        return self._with_markets().addCallback(run)

    def _close_private(self) -> Deferred[None]:
        if self._private_account is None:
            return succeed(None)
        return self._private_account.close()

    # -- pull ------------------------------------------------------------------

    def fetch_balance(self) -> Deferred[dict[str, Any]]:
        """ccxt balance (``free``/``used``/``total`` per currency, decimal strings).

        The first call loads it over REST and starts the private stream; later
        calls answer at once from the live state."""
        return self._call(None, lambda a: a.fetch_balance())

    def fetch_open_orders(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Open orders from the live state (loaded once over REST, then kept by the stream)."""
        try:
            _check_window(since, limit)
        except ExchangeError as e:
            return fail(e)

        def go(a: PrivateAccount) -> Deferred[Any]:
            def window(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                rows = [r for r in rows if since is None or (r["timestamp"] or 0) >= since]
                return rows[-limit:] if limit else rows

            return a.fetch_open_orders(symbol).addCallback(window)

        return self._call(symbol, go)

    def fetch_orders(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Open and closed orders, over REST each time (merged with the live state)."""
        try:
            _check_window(since, limit)
        except ExchangeError as e:
            return fail(e)
        return self._call(symbol, lambda a: a.fetch_orders(symbol, since, limit))

    def fetch_closed_orders(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Closed (filled, canceled, rejected, expired) orders, over REST."""
        try:
            _check_window(since, limit)
        except ExchangeError as e:
            return fail(e)
        return self._call(symbol, lambda a: a.fetch_closed_orders(symbol, since, limit))

    def fetch_order(self, id: str, symbol: str) -> Deferred[dict[str, Any]]:
        """One order by id, over REST."""
        if not isinstance(id, str) or not id:
            return fail(BadRequest(f"order id must be a non-empty string, got {id!r}"))
        return self._call(symbol, lambda a: a.fetch_order(id, symbol))

    def fetch_my_trades(
        self, symbol: str | None = None, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """The account's fills, over REST."""
        try:
            _check_window(since, limit)
        except ExchangeError as e:
            return fail(e)
        return self._call(symbol, lambda a: a.fetch_my_trades(symbol, since, limit))

    def _transfers(self, kind: str, code: str | None, since: Any, limit: Any) -> Deferred[Any]:
        try:
            _check_window(since, limit)
            if code is not None and not isinstance(code, str):
                raise BadRequest(f"currency code must be a string, got {code!r}")
        except ExchangeError as e:
            return fail(e)
        return self._call(None, lambda a: a.fetch_transfers(kind, code, since, limit))

    def fetch_deposits(
        self, code: str | None = None, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Deposits (ccxt transactions), over REST."""
        return self._transfers("deposit", code, since, limit)

    def fetch_withdrawals(
        self, code: str | None = None, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Withdrawals (ccxt transactions), over REST."""
        return self._transfers("withdrawal", code, since, limit)

    def fetch_transactions(
        self, code: str | None = None, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Deposits and withdrawals together, oldest first, over REST."""
        return self._transfers("all", code, since, limit)

    # -- trading ---------------------------------------------------------------

    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: Any,
        price: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Place an order; fires with the ccxt order as the exchange accepted it.

        ``amount`` and ``price`` are decimal strings (or ``int``/``Decimal``;
        floats are refused).  ``params["clientOrderId"]`` sets the client order
        id (one is generated otherwise): sending the same id again while the
        order is open is refused by the exchange
        (:class:`~txexchange.errors.DuplicateOrderId`), so a retry after an
        unknown outcome cannot place the order twice.
        """
        extra = dict(params or {})
        client_id = extra.pop("clientOrderId", None) or extra.pop("client_order_id", None)
        if client_id is None:
            client_id = f"tx{uuid.uuid4().hex[:22]}"
        return self._call(
            symbol, lambda a: a.create_order(symbol, type, side, amount, price, client_id, extra)
        )

    def cancel_order(
        self, id: str | None, symbol: str, params: dict[str, Any] | None = None
    ) -> Deferred[dict[str, Any]]:
        """Cancel one order (by ``id``, or ``params["clientOrderId"]``); fires with it."""
        client_id = (params or {}).get("clientOrderId")
        if id is None and client_id is None:
            return fail(BadRequest("cancel_order needs an id or params['clientOrderId']"))
        return self._call(symbol, lambda a: a.cancel_order(id, symbol, client_id))

    def cancel_all_orders(self, symbol: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """Cancel every open order (of ``symbol``); fires with the canceled orders."""
        return self._call(symbol, lambda a: a.cancel_all_orders(symbol))

    # -- push ------------------------------------------------------------------

    def _private_key(self, channel: str, symbol: str | None) -> tuple[str, str | None]:
        if channel == "balance" and symbol is not None:
            raise BadRequest("the balance channel takes no symbol")
        return (channel, symbol)

    def _start_private(self, key: tuple[str, str | None]) -> None:
        def failed(f: Any) -> None:
            self.hub.fail(key, f.value)

        self._call(key[1], lambda a: a.ready()).addErrback(failed)

    def _watch_private(self, channel: str, symbol: str | None) -> Deferred[Any]:
        try:
            account = self.private
            key = self._private_key(channel, symbol)
        except ExchangeError as e:
            return fail(e)
        d = self.hub.watch(key, account.convert(channel))
        self._start_private(key)
        return d

    def watch_balance(self) -> Deferred[dict[str, Any]]:
        """Fires with the whole balance after its next change."""
        return self._watch_private("balance", None)

    def watch_orders(self, symbol: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """Fires with the next changed order (of ``symbol``), as ``[order]``."""
        return self._watch_private("orders", symbol)

    def watch_my_trades(self, symbol: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """Fires with the account's next fill (on ``symbol``), as ``[trade]``."""
        return self._watch_private("my_trades", symbol)

    def _subscribe_private(self, channel: str, symbol: str | None, observer: Any) -> ObserverHandle:
        self.private  # noqa: B018 - raises for missing credentials or no backend
        key = self._private_key(channel, symbol)
        handle = self.hub.add_observer(key, observer)
        self._start_private(key)
        return handle

    def _stream_private(self, channel: str, symbol: str | None, maxlen: int) -> UpdateStream:
        account = self.private
        key = self._private_key(channel, symbol)
        s = UpdateStream(self.hub, key, account.convert(channel), latest_only=channel == "balance",
                         maxlen=maxlen)  # fmt: skip
        self._start_private(key)
        return s
