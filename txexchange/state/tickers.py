"""Latest ticker per symbol, merging partial updates.

Sits in the state layer: adapters produce :class:`~txexchange.events.Ticker`
events, often partial (a book-ticker stream carries only bid/ask, a trade
stream only ``last``); :class:`TickerStore` merges them into one ticker per
symbol that ``fetch_ticker``/``fetch_tickers`` hand out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from txexchange.events import Ticker

from .trades import iso8601

__all__ = ["TickerStore", "ticker_to_ccxt"]

_FIELDS = tuple(field.name for field in attrs.fields(Ticker) if field.name != "symbol")

# event field name -> ccxt key
_CCXT_NAMES = {
    "bid_volume": "bidVolume",
    "ask_volume": "askVolume",
    "base_volume": "baseVolume",
    "quote_volume": "quoteVolume",
}


def _merge(previous: Ticker, update: Ticker) -> Ticker:
    changes = {}
    for name in _FIELDS:
        value = getattr(update, name)
        if value is not None and value != getattr(previous, name):
            changes[name] = value
    return attrs.evolve(previous, **changes) if changes else previous


class TickerStore:
    """The latest :class:`~txexchange.events.Ticker` of every symbol seen.

    :meth:`update` *merges*: each field of the incoming ticker that is not
    ``None`` replaces the stored one, and ``None`` fields keep the previous
    value.  So a book-ticker update (bid/ask only) does not wipe ``last`` or
    the 24 h volumes a full ticker delivered earlier.  The merged ticker is a
    new frozen object (:func:`attrs.evolve`); tickers handed out before never
    change.
    """

    __slots__ = ("_tickers",)

    def __init__(self) -> None:
        self._tickers: dict[str, Ticker] = {}

    def __repr__(self) -> str:
        return f"<TickerStore {len(self._tickers)} symbols>"

    def __len__(self) -> int:
        return len(self._tickers)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._tickers

    def __iter__(self) -> Iterator[str]:
        return iter(self._tickers)

    def update(self, ticker: Ticker) -> Ticker:
        """Merge ``ticker`` into the stored one for its symbol and return the result."""
        previous = self._tickers.get(ticker.symbol)
        merged = ticker if previous is None else _merge(previous, ticker)
        self._tickers[ticker.symbol] = merged
        return merged

    def get(self, symbol: str) -> Ticker | None:
        """The latest ticker of ``symbol``, or ``None`` if none has arrived."""
        return self._tickers.get(symbol)

    def all(self) -> dict[str, Ticker]:
        """A new dict of symbol -> latest ticker for every symbol seen."""
        return dict(self._tickers)

    def discard(self, symbol: str) -> None:
        """Forget the ticker of ``symbol`` (e.g. after unsubscribing)."""
        self._tickers.pop(symbol, None)

    def clear(self) -> None:
        """Forget every ticker."""
        self._tickers.clear()


def ticker_to_ccxt(ticker: Ticker) -> dict[str, Any]:
    """The ccxt unified ticker dict (camelCase keys, strings kept, ``info`` is ``None``)."""
    result: dict[str, Any] = {
        "symbol": ticker.symbol,
        "timestamp": ticker.timestamp,
        "datetime": iso8601(ticker.timestamp),
    }
    for name in _FIELDS:
        if name != "timestamp":
            result[_CCXT_NAMES.get(name, name)] = getattr(ticker, name)
    result["previousClose"] = None
    result["average"] = None
    result["info"] = None
    return result
