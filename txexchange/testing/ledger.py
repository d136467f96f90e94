"""Accounts, orders and fills for the fake exchanges' private APIs.

Sits under each fake exchange (``FakeBinance``, ``FakeOkx``, ``FakeBybit``):
the fake checks signatures and speaks its exchange's wire format; the
:class:`Ledger` keeps what is true — balances per API key, orders, fills,
deposits and withdrawals — exactly, in :class:`~decimal.Decimal`, and tells
its listeners about every change so the fake can push its private stream
events.

Matching is deliberately simple and deterministic: a market order fills at
once at the price ``market_price(symbol, side)`` gives (the fake's best
opposite price); a limit order that crosses that price fills at once at its
own limit price; any other limit order rests until the test calls
:meth:`Ledger.fill`.  A fee of ``fee_rate`` times the cost is charged in the
quote currency.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs

__all__ = ["Ledger", "LedgerError", "LedgerFill", "LedgerOrder", "LedgerTransfer"]


class LedgerError(Exception):
    """A request the ledger refuses; ``reason`` is one of ``insufficient``,
    ``unknown_order``, ``duplicate_client_id``, ``bad_order``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@attrs.define
class LedgerOrder:
    key: str
    id: str
    symbol: str
    side: str
    type: str
    amount: Decimal
    price: Decimal | None
    client_id: str
    created: int
    updated: int
    tif: str = "GTC"
    filled: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    status: str = "open"  # open, closed (filled), canceled, rejected
    #: what the order holds locked (quote for buys, base for sells)
    locked: Decimal = Decimal(0)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


@attrs.frozen
class LedgerFill:
    key: str
    id: str
    order_id: str
    symbol: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    maker: bool
    time: int


@attrs.frozen
class LedgerTransfer:
    key: str
    id: str
    type: str  # deposit, withdrawal
    currency: str
    amount: Decimal
    time: int
    address: str = ""
    txid: str = ""


def fmt(value: Decimal) -> str:
    """A decimal as the plain string exchanges send (no exponent, no trailing zeros)."""
    if value == 0:
        return "0"
    text = f"{value.normalize():f}"
    return text


class Ledger:
    """Balances and orders of every API key of one fake exchange.

    :param now_ms: the fake's clock, in ms.
    :param market_price: ``(symbol, side) -> Decimal``: where a market order
        of ``side`` fills (the best ask for a buy, the best bid for a sell).
    :param split: ``symbol -> (base, quote)``.
    """

    def __init__(
        self,
        *,
        now_ms: Callable[[], int],
        market_price: Callable[[str, str], Decimal],
        split: Callable[[str], tuple[str, str]],
        fee_rate: Decimal = Decimal("0.001"),
    ) -> None:
        self._now = now_ms
        self._market_price = market_price
        self._split = split
        self.fee_rate = fee_rate
        #: key -> currency -> [free, locked]
        self.balances: dict[str, dict[str, list[Decimal]]] = {}
        self.orders: dict[str, LedgerOrder] = {}
        self.fills: list[LedgerFill] = []
        self.transfers: list[LedgerTransfer] = []
        self._next_order = 1000
        self._next_fill = 5000
        self._next_transfer = 1
        #: called with ``(key, order, fill_or_None)`` after every order change
        self.on_order: list[Callable[[str, LedgerOrder, LedgerFill | None], None]] = []
        #: called with ``(key, {currency: (free, locked)}, time)`` after balances change
        self.on_balance: list[Callable[[str, dict[str, tuple[Decimal, Decimal]], int], None]] = []
        #: called with ``(key, transfer)`` after a deposit or withdrawal
        self.on_transfer: list[Callable[[str, LedgerTransfer], None]] = []

    # -- balances ----------------------------------------------------------------

    def fund(self, key: str, currency: str, amount: Decimal | str) -> None:
        """Set up a starting balance silently (no events, no transfer record)."""
        self._row(key, currency)[0] += Decimal(amount)

    def _row(self, key: str, currency: str) -> list[Decimal]:
        return self.balances.setdefault(key, {}).setdefault(currency, [Decimal(0), Decimal(0)])

    def balance(self, key: str, currency: str) -> tuple[Decimal, Decimal]:
        free, locked = self._row(key, currency)
        return free, locked

    def account(self, key: str) -> dict[str, tuple[Decimal, Decimal]]:
        return {c: (r[0], r[1]) for c, r in self.balances.get(key, {}).items()}

    def _changed(self, key: str, currencies: set[str], time: int) -> None:
        changed = {c: self.balance(key, c) for c in sorted(currencies)}
        for listener in list(self.on_balance):
            listener(key, changed, time)

    def deposit(
        self, key: str, currency: str, amount: Decimal | str, txid: str = ""
    ) -> LedgerTransfer:
        """Credit a deposit (a transfer record, then balance events)."""
        return self._transfer(key, "deposit", currency, Decimal(amount), txid=txid)

    def withdraw(
        self, key: str, currency: str, amount: Decimal | str, address: str
    ) -> LedgerTransfer:
        amount = Decimal(amount)
        if self._row(key, currency)[0] < amount:
            raise LedgerError("insufficient", f"insufficient {currency} to withdraw")
        return self._transfer(key, "withdrawal", currency, amount, address=address)

    def _transfer(
        self, key: str, kind: str, currency: str, amount: Decimal, **extra: str
    ) -> LedgerTransfer:
        if amount <= 0:
            raise LedgerError("bad_order", "amount must be positive")
        now = self._now()
        row = self._row(key, currency)
        row[0] += amount if kind == "deposit" else -amount
        transfer = LedgerTransfer(
            key, f"T{self._next_transfer}", kind, currency, amount, now, **extra
        )
        self._next_transfer += 1
        self.transfers.append(transfer)
        for listener in list(self.on_transfer):
            listener(key, transfer)
        self._changed(key, {currency}, now)
        return transfer

    # -- orders ------------------------------------------------------------------

    def place(
        self,
        key: str,
        symbol: str,
        side: str,
        type: str,
        amount: Decimal | str,
        price: Decimal | str | None = None,
        client_id: str | None = None,
        tif: str = "GTC",
    ) -> LedgerOrder:
        """Accept (and maybe fill) an order, or raise :class:`LedgerError`."""
        amount = Decimal(amount)
        limit = Decimal(price) if price is not None else None
        if side not in ("buy", "sell") or type not in ("limit", "market"):
            raise LedgerError("bad_order", f"unsupported order {side} {type}")
        if amount <= 0 or (type == "limit" and (limit is None or limit <= 0)):
            raise LedgerError("bad_order", "amount and limit price must be positive")
        if client_id is not None and any(
            o.key == key and o.client_id == client_id and o.status == "open"
            for o in self.orders.values()
        ):
            raise LedgerError("duplicate_client_id", "an open order has this client order id")
        base, quote = self._split(symbol)
        market = self._market_price(symbol, side)
        fill_price = market if type == "market" else limit
        assert fill_price is not None
        crosses = type == "market" or (
            limit is not None and (limit >= market if side == "buy" else limit <= market)
        )
        if side == "buy":
            need = amount * fill_price * (1 + self.fee_rate)
            currency = quote
        else:
            need = amount
            currency = base
        row = self._row(key, currency)
        if row[0] < need:
            raise LedgerError(
                "insufficient", "Account has insufficient balance for requested action."
            )
        now = self._now()
        order_id = str(self._next_order)
        self._next_order += 1
        order = LedgerOrder(
            key, order_id, symbol, side, type, amount, limit,
            client_id or f"x-{order_id}", now, now, tif,
        )  # fmt: skip
        row[0] -= need
        row[1] += need
        order.locked = need
        self.orders[order_id] = order
        if crosses:
            self._execute(order, amount, fill_price, maker=False, announce_new=False)
        else:
            for listener in list(self.on_order):
                listener(key, order, None)
            self._changed(key, {currency}, now)
        return order

    def find(
        self, key: str, symbol: str | None, order_id: str | None, client_id: str | None
    ) -> LedgerOrder:
        for order in self.orders.values():
            if order.key != key or (symbol is not None and order.symbol != symbol):
                continue
            if (order_id is not None and order.id == order_id) or (
                order_id is None and client_id is not None and order.client_id == client_id
            ):
                return order
        raise LedgerError("unknown_order", "Order does not exist.")

    def cancel(self, key: str, symbol: str | None, order_id: str | None = None,
               client_id: str | None = None) -> LedgerOrder:  # fmt: skip
        order = self.find(key, symbol, order_id, client_id)
        if order.status != "open":
            raise LedgerError("unknown_order", "Unknown order sent.")
        order.status = "canceled"
        order.updated = self._now()
        self._release(order)
        for listener in list(self.on_order):
            listener(key, order, None)
        self._changed(key, set(self._split(order.symbol)), order.updated)
        return order

    def cancel_all(self, key: str, symbol: str | None) -> list[LedgerOrder]:
        return [self.cancel(key, o.symbol, o.id) for o in self.open_orders(key, symbol)]

    def open_orders(self, key: str, symbol: str | None = None) -> list[LedgerOrder]:
        return [o for o in self.history(key, symbol) if o.status == "open"]

    def fill(self, order_id: str, amount: Decimal | str | None = None,
             price: Decimal | str | None = None) -> LedgerFill:  # fmt: skip
        """Fill a resting order (all that remains, or ``amount``) as maker."""
        order = self.orders[order_id]
        if order.status != "open":
            raise LedgerError("unknown_order", f"order {order_id} is {order.status}")
        qty = order.remaining if amount is None else Decimal(amount)
        if not 0 < qty <= order.remaining:
            raise LedgerError("bad_order", "fill amount out of range")
        at = Decimal(price) if price is not None else order.price
        assert at is not None
        return self._execute(order, qty, at, maker=True, announce_new=True)

    def _execute(self, order: LedgerOrder, qty: Decimal, price: Decimal, *, maker: bool,
                 announce_new: bool) -> LedgerFill:  # fmt: skip
        base, quote = self._split(order.symbol)
        cost = qty * price
        fee = cost * self.fee_rate
        now = self._now()
        if order.side == "buy":
            spend = cost + fee
            locked_part = min(order.locked, spend if order.remaining > qty else order.locked)
            quote_row = self._row(order.key, quote)
            quote_row[1] -= locked_part
            quote_row[0] -= spend - locked_part
            order.locked -= locked_part
            self._row(order.key, base)[0] += qty
        else:
            base_row = self._row(order.key, base)
            base_row[1] -= qty
            order.locked -= qty
            self._row(order.key, quote)[0] += cost - fee
        order.filled += qty
        order.cost += cost
        order.fee += fee
        order.updated = now
        if order.remaining == 0:
            order.status = "closed"
            self._release(order)
        fill = LedgerFill(order.key, str(self._next_fill), order.id, order.symbol, order.side,
                          price, qty, fee, quote, maker, now)  # fmt: skip
        self._next_fill += 1
        self.fills.append(fill)
        for listener in list(self.on_order):
            listener(order.key, order, fill)
        self._changed(order.key, {base, quote}, now)
        return fill

    def _release(self, order: LedgerOrder) -> None:
        if order.locked:
            base, quote = self._split(order.symbol)
            row = self._row(order.key, quote if order.side == "buy" else base)
            row[1] -= order.locked
            row[0] += order.locked
            order.locked = Decimal(0)

    def my_fills(self, key: str, symbol: str | None = None) -> list[LedgerFill]:
        return [f for f in self.fills if f.key == key and (symbol is None or f.symbol == symbol)]

    def history(self, key: str, symbol: str | None = None) -> list[LedgerOrder]:
        return [o for o in self.orders.values()
                if o.key == key and (symbol is None or o.symbol == symbol)]  # fmt: skip

    def snapshot(self) -> Any:
        """Everything, for assertions: ``{key: {currency: (free, locked)}}``."""
        return {k: self.account(k) for k in self.balances}
