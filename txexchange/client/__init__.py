"""Unified exchange clients: the glue between transport, adapters, state and delivery.

Sits in the middle of the flow: a client owns the connections, feeds what
they receive through its exchange's adapter into the state layer, and
publishes to the delivery layer.  Use :func:`txexchange.exchange` to get one.
"""

from __future__ import annotations

from txexchange.client.base import ClientOptions, ExchangeClient
from txexchange.client.binance import BinanceClient
from txexchange.client.binance_user import BinanceUserStream
from txexchange.client.bybit import BybitClient
from txexchange.client.coinbase import CoinbaseClient
from txexchange.client.gemini import GeminiClient
from txexchange.client.kraken import KrakenClient
from txexchange.client.okx import OkxClient
from txexchange.client.rest import RestClient

__all__ = [
    "BinanceClient",
    "BinanceUserStream",
    "BybitClient",
    "ClientOptions",
    "CoinbaseClient",
    "ExchangeClient",
    "GeminiClient",
    "KrakenClient",
    "OkxClient",
    "RestClient",
]
