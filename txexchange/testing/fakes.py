"""One way to get the fake of any supported exchange, by the exchange's name.

Sits beside the per-exchange fakes: demos, examples and tests that should run
the same code against every exchange ask for ``fake_exchange(name)`` instead of
naming a class, and get its natural demo symbols from :data:`DEMO_SYMBOLS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from txexchange.errors import BadRequest

__all__ = ["DEMO_SYMBOLS", "FAKES", "fake_exchange"]

#: exchange name -> "module:class" of its fake (imported only when asked for)
FAKES: dict[str, str] = {
    "binance": "txexchange.testing.binance:FakeBinance",
    "okx": "txexchange.testing.okx:FakeOkx",
    "bybit": "txexchange.testing.bybit:FakeBybit",
    "kraken": "txexchange.testing.kraken:FakeKraken",
    "coinbase": "txexchange.testing.coinbase:FakeCoinbase",
    "gemini": "txexchange.testing.gemini:FakeGemini",
}

#: symbols each fake lists by default, in the exchange's own quote currency
DEMO_SYMBOLS: dict[str, tuple[str, ...]] = {
    "binance": ("BTC/USDT", "ETH/USDT"),
    "okx": ("BTC/USDT", "ETH/USDT"),
    "bybit": ("BTC/USDT", "ETH/USDT"),
    "kraken": ("BTC/USD", "ETH/USD"),
    "coinbase": ("BTC/USD", "ETH/USD"),
    "gemini": ("BTC/USD", "ETH/USD"),
}


def fake_exchange(name: str, symbols: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """A (not yet started) fake of exchange ``name`` listing ``symbols``.

    ``kwargs`` go to the fake's constructor (``reactor``, ``seed``, ``tls`` ...).
    ``fake.urls`` is what ``txexchange.exchange(name, urls=...)`` takes.
    """
    try:
        target = FAKES[name]
    except KeyError:
        raise BadRequest(
            f"no fake exchange {name!r}; available: {', '.join(sorted(FAKES))}"
        ) from None
    module, _, cls = target.partition(":")
    fake_class = getattr(importlib.import_module(module), cls)
    return fake_class(tuple(symbols or DEMO_SYMBOLS[name]), **kwargs)
