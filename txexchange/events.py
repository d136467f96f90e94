"""Typed events: what adapters produce from exchange messages and the state layer consumes.

Sits between the adapter layer (which parses each exchange's wire format into
these) and the state layer (which knows only these).  Prices and amounts are
the exchange's own decimal strings, never floats.  Levels are ``(price,
amount)`` pairs; an amount of zero in a delta deletes the level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

__all__ = [
    "BalanceDelta",
    "BalanceSnapshot",
    "BookDelta",
    "BookSnapshot",
    "Candle",
    "Fill",
    "Level",
    "Order",
    "OrderStatus",
    "Ticker",
    "Trade",
    "Transfer",
]

#: ``(price, amount)`` as the exchange's decimal strings.  Adapters may pass
#: the exchange's own two-element lists through unchanged to avoid copying.
Level = Sequence[str]


@attrs.frozen(slots=True)
class BookSnapshot:
    """A full (or top-N) book that replaces whatever was held."""

    symbol: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    nonce: int | None = None
    timestamp: int | None = None


@attrs.frozen(slots=True)
class BookDelta:
    """Changed levels with absolute amounts (``"0"`` deletes).

    ``first_id``/``nonce`` are the first and last update ids the delta covers
    (Binance ``U``/``u``); ``prev_id`` the id it follows (OKX ``prevSeqId``).
    The adapter checks the chain; the state layer only records ``nonce``.
    """

    symbol: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    nonce: int | None = None
    first_id: int | None = None
    prev_id: int | None = None
    timestamp: int | None = None


@attrs.frozen(slots=True)
class Trade:
    """One public trade (ccxt field names)."""

    symbol: str
    id: str
    timestamp: int
    price: str
    amount: str
    side: Literal["buy", "sell"] | None = None
    taker_or_maker: Literal["taker", "maker"] | None = None


@attrs.frozen(slots=True)
class Ticker:
    """Latest ticker for a symbol (ccxt field names; absent values are ``None``)."""

    symbol: str
    timestamp: int | None = None
    bid: str | None = None
    bid_volume: str | None = None
    ask: str | None = None
    ask_volume: str | None = None
    last: str | None = None
    open: str | None = None
    high: str | None = None
    low: str | None = None
    close: str | None = None
    base_volume: str | None = None
    quote_volume: str | None = None
    change: str | None = None
    percentage: str | None = None
    vwap: str | None = None


@attrs.frozen(slots=True)
class Candle:
    """One OHLCV candle; ``closed`` is False while the candle is still forming."""

    symbol: str
    timeframe: str
    timestamp: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    closed: bool = False


# -- private (account) events -------------------------------------------------------

#: ccxt's order states
OrderStatus = Literal["open", "closed", "canceled", "rejected", "expired"]


@attrs.frozen(slots=True)
class Order:
    """The whole current state of one of the user's orders (not a delta).

    ``last_update`` (ms, the exchange's time of this state) orders states of
    the same order: the account keeps the newest.  ``info`` is the
    exchange's own message, unchanged.
    """

    symbol: str
    id: str
    status: OrderStatus
    side: Literal["buy", "sell"]
    type: str
    amount: str
    filled: str
    price: str | None = None
    client_order_id: str | None = None
    timestamp: int | None = None
    last_update: int | None = None
    #: quote amount filled so far (sum of price x amount of the fills)
    cost: str | None = None
    average: str | None = None
    time_in_force: str | None = None
    fee_cost: str | None = None
    fee_currency: str | None = None
    info: object = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(slots=True)
class Fill:
    """One execution of one of the user's orders (ccxt's "my trade")."""

    symbol: str
    id: str
    order_id: str
    timestamp: int
    side: Literal["buy", "sell"]
    price: str
    amount: str
    taker_or_maker: Literal["taker", "maker"] | None = None
    fee_cost: str | None = None
    fee_currency: str | None = None
    client_order_id: str | None = None
    info: object = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(slots=True)
class BalanceSnapshot:
    """Absolute balances: ``{currency: (free, used)}`` for the currencies named.

    ``complete`` says whether currencies not named are zero (a full account
    answer) or unchanged (an update naming only what changed).
    """

    balances: dict[str, tuple[str, str]]
    timestamp: int | None = None
    complete: bool = False
    info: object = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(slots=True)
class BalanceDelta:
    """A change of one currency's free balance (deposit, withdrawal, transfer)."""

    currency: str
    delta: str
    timestamp: int | None = None
    info: object = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(slots=True)
class Transfer:
    """A deposit or withdrawal (ccxt's "transaction")."""

    id: str
    type: Literal["deposit", "withdrawal"]
    currency: str
    amount: str
    status: Literal["pending", "ok", "failed", "canceled"]
    timestamp: int | None = None
    address: str | None = None
    txid: str | None = None
    network: str | None = None
    fee_cost: str | None = None
    info: object = attrs.field(default=None, eq=False, repr=False)
