"""Exchange adapters: one module per exchange, pure functions over wire data.

Sits between the transport (frames in, control messages out) and the state
layer (typed events in :mod:`txexchange.events`).  Adapters build request
descriptions and parse responses; they never touch a reactor, a socket or a
Deferred.  This package also holds the outcomes every adapter shares besides
events: :class:`ServerShutdown` and :class:`Unknown`.
"""

from __future__ import annotations

from typing import Any

import attrs

from txexchange.adapters.rest import RestRequest

__all__ = ["RestRequest", "ServerShutdown", "Unknown"]


@attrs.frozen(slots=True)
class ServerShutdown:
    """The exchange says this connection is about to go away: reconnect now.

    Binance ``serverShutdown``; ``timestamp`` is the exchange's event time (ms).
    """

    exchange: str
    timestamp: int | None = None
    reason: str = ""


@attrs.frozen(slots=True)
class Unknown:
    """A well-formed message that the adapter does not turn into an event.

    For example a stream the adapter has no parser for (Binance ``avgPrice``)
    or an event for a market that is not in the loaded market list.  Callers
    log and count these; they are never fatal.
    """

    reason: str
    message: Any = attrs.field(default=None, eq=False, repr=False)
