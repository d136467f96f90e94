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
    "BookDelta",
    "BookSnapshot",
    "Candle",
    "Level",
    "Ticker",
    "Trade",
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
