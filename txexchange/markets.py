"""Markets: the exchange-agnostic list of tradable symbols and their exchange ids.

Sits beside the adapter layer.  Each adapter turns its exchange's market list
(Binance ``GET /api/v3/exchangeInfo``, ...) into :class:`Market` values; the
client wraps them in a :class:`MarketIndex`, which maps unified ``BASE/QUOTE``
symbols to exchange ids and back.  Nothing here does I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from txexchange.errors import BadSymbol

__all__ = ["Market", "MarketIndex", "decimals_of"]


def decimals_of(step: str | None) -> int | None:
    """Number of decimal places a step such as ``"0.01000000"`` allows (here 2).

    ``None`` for ``None`` or something that is not a positive decimal.
    """
    if step is None:
        return None
    try:
        value = Decimal(step)
    except (InvalidOperation, TypeError, ValueError):
        return None
    if not value.is_finite() or value <= 0:
        return None
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


@attrs.frozen(slots=True)
class Market:
    """One tradable market.

    ``tick_size`` and ``amount_step`` are the exchange's own decimal strings
    (Binance ``PRICE_FILTER.tickSize`` and ``LOT_SIZE.stepSize``);
    :attr:`price_precision` and :attr:`amount_precision` are the number of
    decimals they allow.  ``info`` is the exchange's raw entry, left out of
    comparisons and the repr.
    """

    symbol: str
    id: str
    base: str
    quote: str
    active: bool = True
    tick_size: str | None = None
    amount_step: str | None = None
    info: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False, hash=False)

    @property
    def price_precision(self) -> int | None:
        """Decimals of :attr:`tick_size` (``"0.01000000"`` -> 2)."""
        return decimals_of(self.tick_size)

    @property
    def amount_precision(self) -> int | None:
        """Decimals of :attr:`amount_step` (``"0.00001000"`` -> 5)."""
        return decimals_of(self.amount_step)


@attrs.define(eq=False, slots=True, weakref_slot=True)
class MarketIndex:
    """Look-ups over one exchange's markets, by unified symbol and by exchange id.

    Built once per market load and not changed afterwards; a reload builds a
    new index.  Identity-hashed, so it can key caches.
    """

    by_symbol: Mapping[str, Market]
    by_id: Mapping[str, Market]
    exchange: str = ""

    @classmethod
    def from_markets(cls, markets: Iterable[Market], exchange: str = "") -> MarketIndex:
        """Index ``markets`` (a later duplicate symbol or id is ignored)."""
        by_symbol: dict[str, Market] = {}
        by_id: dict[str, Market] = {}
        for market in markets:
            if market.symbol in by_symbol or market.id in by_id:
                continue
            by_symbol[market.symbol] = market
            by_id[market.id] = market
        return cls(by_symbol, by_id, exchange)

    def __len__(self) -> int:
        return len(self.by_symbol)

    def __iter__(self) -> Iterator[Market]:
        return iter(self.by_symbol.values())

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.by_symbol

    @property
    def symbols(self) -> list[str]:
        """Every unified symbol, in the exchange's order."""
        return list(self.by_symbol)

    def market(self, symbol: str) -> Market:
        """The market for unified ``symbol``; :class:`BadSymbol` if not listed."""
        try:
            return self.by_symbol[symbol]
        except (KeyError, TypeError):
            raise BadSymbol(self._unknown_message(symbol)) from None

    def id_of(self, symbol: str) -> str:
        """Exchange id for unified ``symbol`` (``"BTC/USDT"`` -> ``"BTCUSDT"``)."""
        return self.market(symbol).id

    def symbol_of(self, market_id: str) -> str:
        """Unified symbol for exchange id ``market_id``; :class:`BadSymbol` if unknown."""
        try:
            return self.by_id[market_id].symbol
        except (KeyError, TypeError):
            pass
        raise BadSymbol(f"{self._where()}has no market with id {market_id!r}")

    def _where(self) -> str:
        return f"{self.exchange} " if self.exchange else "the exchange "

    def _unknown_message(self, symbol: object) -> str:
        if not self.by_symbol:
            return f"unknown symbol {symbol!r}: markets are not loaded (call load_markets())"
        text = f"{self._where()}does not list {symbol!r}"
        if isinstance(symbol, str):
            candidates = list(self.by_symbol)
            wanted = symbol.upper()
            if "/" not in wanted:
                # "BTCUSDT" or "btcusdt": an exchange id given where a symbol was expected
                hit = self.by_id.get(wanted) or self.by_id.get(symbol)
                if hit is not None:
                    return f"{text}; symbols are unified BASE/QUOTE: did you mean {hit.symbol!r}?"
            close = difflib.get_close_matches(wanted, candidates, n=3, cutoff=0.75)
            if close:
                return f"{text}; did you mean {', '.join(repr(c) for c in close)}?"
        return text
