"""The JSON-able state the web view shows, read from a running ``FeedService``.

Sits beside the service at the end of the flow, like the metrics: nothing is
counted or changed here; each call reads what the layers keep (connection
states and counters, the books and trades the clients hold, what the service
tracks per book) and returns plain dicts, lists, strings and numbers.  Book
levels keep the exchange's decimal strings exactly.  A book known to be
inconsistent is never shown: a stale or unsynced book comes with no levels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from txexchange.errors import BookIntegrityError
from txexchange.service.web.rates import RateMeter

__all__ = [
    "DEFAULT_DEPTH",
    "MAX_DEPTH",
    "TRADES_SHOWN",
    "book_view",
    "change_marker",
    "message_counts",
    "service_state",
    "stream_message",
]

#: levels a side in a book view unless asked otherwise, and the most one may ask for
DEFAULT_DEPTH = 50
MAX_DEPTH = 500
#: recent trades in a book view
TRADES_SHOWN = 20

#: connection states from worst to best: a feed shows its worst connection's
_STATE_ORDER = ("exhausted", "stopped", "stopping", "backoff", "connecting", "idle", "open")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def message_counts(service: Any) -> dict[str, int]:
    """Messages received so far per exchange, over every connection of its client."""
    counts = {name: 0 for name in service.clients}
    for name, conn in service.connections():
        counts[name] = counts.get(name, 0) + conn.stats.messages
    return counts


def change_marker(service: Any) -> tuple[Any, ...]:
    """A value that changes whenever anything the view shows may have changed."""
    conns = service.connections()
    return (
        service.running_feeds,
        sum(conn.stats.messages for _, conn in conns),
        tuple(conn.state.value for _, conn in conns),
        sum(track.updates for track in service.books.values()),
        sum(service.integrity_failures.values()),
    )


def _worst(states: Iterable[str]) -> str:
    found = set(states)
    if not found:
        return "idle"
    for state in _STATE_ORDER:
        if state in found:
            return state
    return sorted(found)[0]


def _book_rows(service: Any, exchange: str, client: Any, now: float) -> list[dict[str, Any]]:
    rows = []
    for symbol in sorted(client.books):
        book = client.books[symbol]
        track = service.books.get((exchange, symbol))
        last_at = track.last_at if track is not None else None
        best_bid = best_ask = None
        ok = book.synced and not book.stale
        if ok:
            best_bid, best_ask = book.best_bid, book.best_ask
        rows.append(
            {
                "symbol": symbol,
                "synced": ok,
                "stale": book.stale_reason,
                "updates": track.updates if track is not None else 0,
                "age": _round(now - last_at) if last_at is not None else None,
                "nonce": book.nonce if ok else None,
                "timestamp": book.timestamp if ok else None,
                "best_bid": list(best_bid) if best_bid else None,
                "best_ask": list(best_ask) if best_ask else None,
            }
        )
    return rows


def service_state(service: Any, rates: RateMeter | None = None) -> dict[str, Any]:
    """Every feed with its connection state, rate, reconnects, integrity failures and ages.

    ``rates`` (sampled with :func:`message_counts`) gives ``msg_rate``;
    without it the rate is ``null``.
    """
    now = service.reactor.seconds()
    by_exchange: dict[str, list[Any]] = {name: [] for name in service.clients}
    for name, conn in service.connections():
        by_exchange.setdefault(name, []).append(conn)
    feeds = []
    for name, client in service.clients.items():
        conns = by_exchange.get(name, [])
        ages = [a for a in (c.stats.last_message_age() for c in conns) if a is not None]
        feeds.append(
            {
                "exchange": name,
                "state": _worst(c.state.value for c in conns),
                "connections": [
                    {
                        "state": c.state.value,
                        "messages": c.stats.messages,
                        "reconnects": c.stats.reconnects,
                        "age": _round(c.stats.last_message_age()),
                    }
                    for c in conns
                ],
                "messages": sum(c.stats.messages for c in conns),
                "bytes": sum(c.stats.bytes for c in conns),
                "msg_rate": _round(rates.rate(name) if rates is not None else None, 1),
                "reconnects": sum(c.stats.reconnects for c in conns),
                "integrity_failures": service.integrity_failures.get(name, 0),
                "age": _round(min(ages)) if ages else None,
                "books": _book_rows(service, name, client, now),
                "trades": sorted(s for s, buf in client.trades.items() if len(buf)),
            }
        )
    synced, total = service.books_synced()
    if not service.running_feeds:
        status = "starting"
    elif synced == total:
        status = "ok"
    else:
        status = "degraded"
    started = service.started_at
    return {
        "status": status,
        "uptime": _round(now - started) if started is not None else None,
        "books_synced": synced,
        "books": total,
        "feeds": feeds,
    }


def _trade(trade: Any) -> dict[str, Any]:
    return {
        "id": trade.id,
        "timestamp": trade.timestamp,
        "price": trade.price,
        "amount": trade.amount,
        "side": trade.side,
    }


def default_book(service: Any) -> tuple[str, str] | None:
    """The first book of the first exchange (what the page shows until one is chosen)."""
    for name, client in service.clients.items():
        if client.books:
            return name, sorted(client.books)[0]
    return None


def book_view(
    service: Any, exchange: str, symbol: str, depth: int = DEFAULT_DEPTH
) -> dict[str, Any] | None:
    """One book's best ``depth`` levels a side and its recent trades (``None``: unknown book)."""
    client = service.clients.get(exchange)
    if client is None or symbol not in client.books:
        return None
    book = client.books[symbol]
    now = service.reactor.seconds()
    track = service.books.get((exchange, symbol))
    last_at = track.last_at if track is not None else None
    try:
        snap = book.snapshot(depth)
    except BookIntegrityError:
        snap = None
    buf = client.trades.get(symbol)
    trades = [_trade(t) for t in reversed(buf.select(limit=TRADES_SHOWN))] if buf else []
    return {
        "exchange": exchange,
        "symbol": symbol,
        "synced": snap is not None,
        "stale": book.stale_reason,
        "nonce": snap.nonce if snap is not None else None,
        "timestamp": snap.timestamp if snap is not None else None,
        "age": _round(now - last_at) if last_at is not None else None,
        "updates": track.updates if track is not None else 0,
        "bids": [list(level) for level in snap.bids] if snap is not None else [],
        "asks": [list(level) for level in snap.asks] if snap is not None else [],
        "trades": trades,
    }


def stream_message(
    service: Any,
    rates: RateMeter | None,
    selected: tuple[str, str] | None,
    depth: int = DEFAULT_DEPTH,
) -> dict[str, Any]:
    """What one push-channel message carries: the service state and the chosen book."""
    chosen = selected or default_book(service)
    return {
        "t": _round(service.reactor.seconds()),
        "state": service_state(service, rates),
        "book": book_view(service, *chosen, depth) if chosen is not None else None,
    }
