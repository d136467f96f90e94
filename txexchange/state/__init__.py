"""The exchange-agnostic state layer: books, trades, tickers and candles in memory.

Sits between the adapters (which turn each exchange's messages into the typed
events of :mod:`txexchange.events`) and the delivery layer (``fetch_*``,
observers, ``watch_*``).  Nothing here parses an exchange's wire format, runs
a reactor or opens a socket; prices and amounts stay the exchange's decimal
strings throughout.
"""

from __future__ import annotations

from .account import (
    Account,
    balance_to_ccxt,
    fill_to_ccxt,
    order_to_ccxt,
    transfer_to_ccxt,
)
from .book import OrderBook, OrderBookSnapshot, PriceLevel, Side, is_zero
from .candles import CandleSeries, ohlcv
from .tickers import TickerStore, ticker_to_ccxt
from .trades import TradeBuffer, exact_product, iso8601, to_ccxt

__all__ = [
    "Account",
    "CandleSeries",
    "OrderBook",
    "OrderBookSnapshot",
    "PriceLevel",
    "Side",
    "TickerStore",
    "TradeBuffer",
    "balance_to_ccxt",
    "exact_product",
    "fill_to_ccxt",
    "is_zero",
    "iso8601",
    "ohlcv",
    "order_to_ccxt",
    "ticker_to_ccxt",
    "to_ccxt",
    "transfer_to_ccxt",
]
