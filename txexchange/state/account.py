"""The user's account in memory: balances, orders and fills, merged from REST and stream.

Sits in the state layer beside the books: the private adapters turn each
exchange's account answers and private stream events into the typed events
of :mod:`txexchange.events` (:class:`~txexchange.events.BalanceSnapshot`,
:class:`~txexchange.events.BalanceDelta`, :class:`~txexchange.events.Order`,
:class:`~txexchange.events.Fill`), and :class:`Account` merges them:

* balances are kept per currency with the exchange time of their last
  change, so a REST answer older than a stream update does not roll the
  update back, and a delta already contained in an absolute update is not
  counted twice;
* orders are kept by id, the state with the newest ``last_update`` wins (a
  late REST answer never overwrites a fill the stream already delivered);
* fills are kept once each (by order and trade id), newest last.

Values stay the exchange's decimal strings; sums (``total``, ``remaining``)
are computed with :class:`~decimal.Decimal`, exactly.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from decimal import Decimal, InvalidOperation
from typing import Any

from txexchange.errors import MalformedMessage
from txexchange.events import BalanceDelta, BalanceSnapshot, Fill, Order, Transfer
from txexchange.state.trades import iso8601

__all__ = [
    "TERMINAL",
    "Account",
    "balance_to_ccxt",
    "fill_to_ccxt",
    "order_to_ccxt",
    "transfer_to_ccxt",
]

#: order states after which nothing more happens to an order
TERMINAL = frozenset({"closed", "canceled", "rejected", "expired"})


def _dec(value: str, what: str) -> Decimal:
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise MalformedMessage(f"{what}: not a decimal number: {value!r}") from None
    if not d.is_finite():
        raise MalformedMessage(f"{what}: not a finite number: {value!r}")
    return d


def _text(d: Decimal) -> str:
    return "0" if d == 0 else str(d)


def _order_rank(order: Order) -> tuple[int, Decimal, int]:
    """What makes one state of an order newer than another of the same time."""
    return (
        order.last_update if order.last_update is not None else -1,
        _dec(order.filled, "filled"),
        1 if order.status in TERMINAL else 0,
    )


class Account:
    """Balances, orders and fills of one account.

    :param closed_orders_limit: closed orders kept (the oldest go first);
        open orders are always kept.
    :param fills_limit: fills kept (the oldest go first).
    """

    def __init__(self, *, closed_orders_limit: int = 1000, fills_limit: int = 1000) -> None:
        self._balances: dict[str, tuple[str, str]] = {}
        self._balance_ts: dict[str, int] = {}
        self.balance_timestamp: int | None = None
        self.balance_info: Any = None
        self._orders: dict[str, Order] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._closed_limit = closed_orders_limit
        self._fills: deque[Fill] = deque()
        self._fill_keys: set[tuple[str, str, str]] = set()
        self._fills_limit = fills_limit

    def __repr__(self) -> str:
        return (
            f"<Account currencies={len(self._balances)} orders={len(self._orders)} "
            f"fills={len(self._fills)}>"
        )

    # -- balances --------------------------------------------------------------

    def apply_balance(self, snap: BalanceSnapshot) -> bool:
        """Merge absolute balances; ``True`` if anything changed."""
        ts = snap.timestamp
        changed = False
        for currency, (free, used) in snap.balances.items():
            _dec(free, f"{currency} free")
            _dec(used, f"{currency} used")
            seen = self._balance_ts.get(currency)
            if ts is not None and seen is not None and ts < seen:
                continue  # older than what the stream already told us
            if self._balances.get(currency) != (free, used):
                self._balances[currency] = (free, used)
                changed = True
            if ts is not None:
                self._balance_ts[currency] = ts
        if snap.complete:
            for currency in [c for c in self._balances if c not in snap.balances]:
                seen = self._balance_ts.get(currency)
                if ts is None or seen is None or seen <= ts:
                    del self._balances[currency]
                    self._balance_ts.pop(currency, None)
                    changed = True
        self._stamp(ts, snap.info)
        return changed

    def apply_balance_delta(self, delta: BalanceDelta) -> bool:
        """Add ``delta`` to a currency's free balance, unless an absolute update
        of the same or a later time already holds it."""
        ts = delta.timestamp
        seen = self._balance_ts.get(delta.currency)
        if ts is not None and seen is not None and ts <= seen:
            return False
        amount = _dec(delta.delta, f"{delta.currency} delta")
        free, used = self._balances.get(delta.currency, ("0", "0"))
        self._balances[delta.currency] = (_text(_dec(free, "free") + amount), used)
        if ts is not None:
            self._balance_ts[delta.currency] = ts
        self._stamp(ts, delta.info)
        return amount != 0

    def _stamp(self, ts: int | None, info: Any) -> None:
        if ts is not None and (self.balance_timestamp is None or ts > self.balance_timestamp):
            self.balance_timestamp = ts
        if info is not None:
            self.balance_info = info

    def balance(self, currency: str) -> tuple[str, str]:
        """``(free, used)`` of ``currency`` (``("0", "0")`` if none is held)."""
        return self._balances.get(currency, ("0", "0"))

    def balances(self) -> dict[str, tuple[str, str]]:
        return dict(self._balances)

    # -- orders ----------------------------------------------------------------

    def apply_order(self, order: Order) -> bool:
        """Keep ``order`` unless the account holds a newer state of it."""
        old = self._orders.get(order.id)
        if old is not None:
            if old == order or _order_rank(order) < _order_rank(old):
                return False
            if old.status in TERMINAL and order.status not in TERMINAL:
                return False  # a closed order does not reopen
        self._orders[order.id] = order
        if order.status in TERMINAL:
            self._closed[order.id] = None
            self._closed.move_to_end(order.id)
            while len(self._closed) > self._closed_limit:
                gone, _ = self._closed.popitem(last=False)
                self._orders.pop(gone, None)
        return True

    def order(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    def order_by_client_id(self, client_order_id: str) -> Order | None:
        for order in self._orders.values():
            if order.client_order_id == client_order_id:
                return order
        return None

    def orders(self, symbol: str | None = None) -> list[Order]:
        """Orders known, oldest first (by creation time, then id)."""
        found = [o for o in self._orders.values() if symbol is None or o.symbol == symbol]
        found.sort(key=lambda o: (o.timestamp or 0, o.id))
        return found

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders(symbol) if o.status == "open"]

    def closed_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders(symbol) if o.status in TERMINAL]

    # -- fills -----------------------------------------------------------------

    def apply_fill(self, fill: Fill) -> bool:
        """Keep ``fill`` once; ``False`` for one already held."""
        key = (fill.symbol, fill.order_id, fill.id)
        if key in self._fill_keys:
            return False
        _dec(fill.price, "fill price")
        _dec(fill.amount, "fill amount")
        self._fill_keys.add(key)
        self._fills.append(fill)
        while len(self._fills) > self._fills_limit:
            old = self._fills.popleft()
            self._fill_keys.discard((old.symbol, old.order_id, old.id))
        return True

    def fills(self, symbol: str | None = None) -> list[Fill]:
        return [f for f in self._fills if symbol is None or f.symbol == symbol]


# -- ccxt structures -------------------------------------------------------------


def balance_to_ccxt(account: Account) -> dict[str, Any]:
    """ccxt's balance structure: per currency ``free``/``used``/``total`` (strings)."""
    ts = account.balance_timestamp
    result: dict[str, Any] = {
        "info": account.balance_info,
        "timestamp": ts,
        "datetime": iso8601(ts),
        "free": {},
        "used": {},
        "total": {},
    }
    for currency, (free, used) in sorted(account.balances().items()):
        total = _text(Decimal(free) + Decimal(used))
        result[currency] = {"free": free, "used": used, "total": total}
        result["free"][currency] = free
        result["used"][currency] = used
        result["total"][currency] = total
    return result


def _fee(cost: str | None, currency: str | None) -> dict[str, Any] | None:
    if cost is None and currency is None:
        return None
    return {"cost": cost, "currency": currency}


def order_to_ccxt(order: Order) -> dict[str, Any]:
    """ccxt's order structure (strings kept; ``remaining`` = amount - filled)."""
    remaining = _text(Decimal(order.amount) - Decimal(order.filled))
    return {
        "id": order.id,
        "clientOrderId": order.client_order_id,
        "timestamp": order.timestamp,
        "datetime": iso8601(order.timestamp),
        "lastTradeTimestamp": None,
        "lastUpdateTimestamp": order.last_update,
        "symbol": order.symbol,
        "type": order.type,
        "timeInForce": order.time_in_force,
        "side": order.side,
        "price": order.price,
        "amount": order.amount,
        "filled": order.filled,
        "remaining": remaining,
        "cost": order.cost,
        "average": order.average,
        "status": order.status,
        "fee": _fee(order.fee_cost, order.fee_currency),
        "trades": [],
        "info": order.info,
    }


def fill_to_ccxt(fill: Fill) -> dict[str, Any]:
    """ccxt's trade structure for the user's own trades."""
    cost = _text(Decimal(fill.price) * Decimal(fill.amount))
    return {
        "id": fill.id,
        "order": fill.order_id,
        "clientOrderId": fill.client_order_id,
        "timestamp": fill.timestamp,
        "datetime": iso8601(fill.timestamp),
        "symbol": fill.symbol,
        "type": None,
        "side": fill.side,
        "takerOrMaker": fill.taker_or_maker,
        "price": fill.price,
        "amount": fill.amount,
        "cost": cost,
        "fee": _fee(fill.fee_cost, fill.fee_currency),
        "info": fill.info,
    }


def transfer_to_ccxt(transfer: Transfer) -> dict[str, Any]:
    """ccxt's transaction structure (deposits and withdrawals)."""
    return {
        "id": transfer.id,
        "txid": transfer.txid,
        "timestamp": transfer.timestamp,
        "datetime": iso8601(transfer.timestamp),
        "network": transfer.network,
        "address": transfer.address,
        "type": transfer.type,
        "amount": transfer.amount,
        "currency": transfer.currency,
        "status": transfer.status,
        "fee": _fee(transfer.fee_cost, transfer.currency if transfer.fee_cost else None),
        "info": transfer.info,
    }
