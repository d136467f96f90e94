"""Events handed to observers that the state layer's own events don't cover.

Sits in the delivery layer.  Trades, tickers and candles reach observers as
the typed events of :mod:`txexchange.events`; book observers get a
:class:`BookUpdate` (the changed levels plus a way to read the whole book),
and the ``"status"`` channel carries the transport's status events plus the
book integrity events defined here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from txexchange.events import Level

__all__ = ["BookResyncing", "BookSynced", "BookUpdate", "StreamFailed"]


@attrs.frozen(slots=True)
class BookUpdate:
    """A book changed: ``bids``/``asks`` are the changed levels (amount ``"0"``: removed).

    ``snapshot`` is true when the whole book was replaced (then ``bids`` and
    ``asks`` are the full snapshot).  :meth:`book` reads the merged book as
    it is *now* (call it inside the observer to get the state this update
    produced).
    """

    symbol: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    nonce: int | None
    timestamp: int | None
    snapshot: bool
    _book: Any = attrs.field(repr=False, eq=False, alias="book")

    def book(self, limit: int | None = None) -> Any:
        """The merged book now, as a frozen :class:`~txexchange.state.OrderBookSnapshot`."""
        return self._book.snapshot(limit)


@attrs.frozen(slots=True)
class BookResyncing:
    """The book of ``symbol`` is inconsistent (gap, checksum, reconnect) and being rebuilt."""

    symbol: str
    reason: str


@attrs.frozen(slots=True)
class BookSynced:
    """The book of ``symbol`` is consistent again at update id ``nonce``."""

    symbol: str
    nonce: int | None


@attrs.frozen(slots=True)
class StreamFailed:
    """A stream cannot be served any more (e.g. retries exhausted); ``error`` says why."""

    channel: str
    symbol: str | None
    error: Exception
