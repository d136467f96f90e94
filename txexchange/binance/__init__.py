"""python-binance compatibility: a Twisted-native ``BinanceSocketManager``.

Sits at the top of the flow beside the unified client; see
:mod:`txexchange.binance.socket_manager`.
"""

from __future__ import annotations

from txexchange.binance.socket_manager import (
    MAX_RETRIES_MESSAGE,
    RETIRED_STREAMS,
    BinanceSocketManager,
    RetiredStreamError,
)

__all__ = [
    "MAX_RETRIES_MESSAGE",
    "RETIRED_STREAMS",
    "BinanceSocketManager",
    "RetiredStreamError",
]
