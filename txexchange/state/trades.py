"""Recent public trades per symbol: a bounded ring buffer with ccxt selection rules.

Sits in the state layer: adapters produce :class:`~txexchange.events.Trade`
events, this module keeps the most recent ones per symbol, and the delivery
layer answers ``fetch_trades(symbol, since, limit)`` from
:meth:`TradeBuffer.select` and renders them with :func:`to_ccxt`.
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from collections.abc import Iterable, Iterator
from decimal import Context, Decimal
from itertools import islice
from typing import Any

from txexchange.events import Trade

__all__ = ["TradeBuffer", "exact_product", "iso8601", "to_ccxt"]

_EPOCH = _dt.datetime(1970, 1, 1)


def iso8601(timestamp: int | None) -> str | None:
    """Milliseconds since the epoch as ccxt's ISO 8601 (``2024-01-02T03:04:05.678Z``).

    ``None`` gives ``None``.
    """
    if timestamp is None:
        return None
    moment = _EPOCH + _dt.timedelta(milliseconds=timestamp)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def exact_product(a: str, b: str) -> str:
    """``a * b`` of two decimal strings, computed exactly, as a plain decimal string.

    Trailing fractional zeros are dropped and exponent notation is never used:
    ``exact_product("0.01000000", "2.5") == "0.025"``.
    """
    # The product of numbers with p and q digits has at most p + q digits, and
    # a string's length bounds its digit count: this context never rounds.
    context = Context(prec=max(28, len(a) + len(b)))
    text = format(context.multiply(Decimal(a), Decimal(b)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


def to_ccxt(trade: Trade) -> dict[str, Any]:
    """The ccxt unified trade dict for ``trade``; price, amount and cost stay strings.

    ``cost`` is ``price * amount`` computed exactly (see :func:`exact_product`).
    Keys ccxt has but the event does not carry (``order``, ``type``, ``fee``,
    ``info``) are present with ``None`` (``fees`` is an empty list).
    """
    return {
        "id": trade.id,
        "timestamp": trade.timestamp,
        "datetime": iso8601(trade.timestamp),
        "symbol": trade.symbol,
        "order": None,
        "type": None,
        "side": trade.side,
        "takerOrMaker": trade.taker_or_maker,
        "price": trade.price,
        "amount": trade.amount,
        "cost": exact_product(trade.price, trade.amount),
        "fee": None,
        "fees": [],
        "info": None,
    }


class TradeBuffer:
    """The most recent ``maxlen`` trades of one symbol, oldest first.

    :param maxlen: how many trades to keep; older ones are dropped.
    :param dedupe: if true, a trade whose non-empty ``id`` is already in the
        buffer is ignored (exchanges resend recent trades after a reconnect).
    """

    __slots__ = ("_dedupe", "_ids", "_trades", "maxlen")

    def __init__(self, maxlen: int = 1000, *, dedupe: bool = True) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be positive, not {maxlen!r}")
        self.maxlen = maxlen
        self._trades: deque[Trade] = deque(maxlen=maxlen)
        self._dedupe = dedupe
        self._ids: set[str] = set()

    def __repr__(self) -> str:
        return f"<TradeBuffer {len(self._trades)}/{self.maxlen}>"

    def __len__(self) -> int:
        return len(self._trades)

    def __iter__(self) -> Iterator[Trade]:
        return iter(self._trades)

    def append(self, trade: Trade) -> bool:
        """Add ``trade`` as the newest; return ``False`` if it was ignored as a duplicate."""
        trades = self._trades
        if self._dedupe:
            ids = self._ids
            if trade.id:
                if trade.id in ids:
                    return False
                ids.add(trade.id)
            if len(trades) == self.maxlen:
                ids.discard(trades[0].id)
        trades.append(trade)
        return True

    def extend(self, trades: Iterable[Trade]) -> int:
        """Append each trade in order; return how many were added."""
        added = 0
        for trade in trades:
            added += self.append(trade)
        return added

    def clear(self) -> None:
        """Forget every trade."""
        self._trades.clear()
        self._ids.clear()

    @property
    def latest(self) -> Trade | None:
        """The newest trade, or ``None``."""
        return self._trades[-1] if self._trades else None

    def select(self, since: int | None = None, limit: int | None = None) -> list[Trade]:
        """Trades in arrival order, filtered like ccxt's ``filter_by_since_limit``.

        ``since`` (ms, inclusive) keeps trades with ``timestamp >= since``;
        then ``limit`` keeps the *last* ``limit`` trades when ``since`` is
        ``None`` (the most recent ones) and the *first* ``limit`` when it is
        given (the earliest ones from ``since`` on).
        """
        trades = self._trades
        if limit is not None and limit < 0:
            raise ValueError(f"limit must not be negative, not {limit!r}")
        if since is None:
            if limit is None or limit >= len(trades):
                return list(trades)
            if limit == 0:
                return []
            result = list(islice(reversed(trades), limit))
            result.reverse()
            return result
        chosen = (trade for trade in trades if trade.timestamp >= since)
        if limit is None:
            return list(chosen)
        return list(islice(chosen, limit))
