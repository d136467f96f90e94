"""txexchange: live exchange market data for Twisted programs.

Public surface only; the layers live in subpackages (``transport``,
``adapters``, ``state``, ``delivery``, ``service``) and ``testing`` holds the
fake exchanges.  Importing this package never imports or installs a reactor.
"""

from __future__ import annotations

from txexchange import errors
from txexchange._registry import exchange
from txexchange.credentials import Credentials
from txexchange.errors import (
    BadRequest,
    BadSymbol,
    ExchangeError,
    NetworkError,
    RateLimitExceeded,
    RetriesExhausted,
)
from txexchange.transport import TransportOptions

__version__ = "0.1.0.dev0"

__all__ = [
    "BadRequest",
    "BadSymbol",
    "Credentials",
    "ExchangeError",
    "NetworkError",
    "RateLimitExceeded",
    "RetriesExhausted",
    "TransportOptions",
    "__version__",
    "errors",
    "exchange",
]
