"""Prometheus metrics and ``/health`` for the service, over ``twisted.web``.

Sits beside the service at the end of the flow: nothing is counted here;
each scrape reads the counters the layers keep (``connection.stats``,
``client.stats``, ``client.rest.stats``, the sinks' own counts and what
:class:`~txexchange.service.feed.FeedService` tracks per book) and renders
them in the Prometheus text format (version 0.0.4).  ``/health`` answers 200
with a JSON summary when the feeds run and every book is synced, else 503.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from txexchange.codec import dumps

__all__ = ["HealthResource", "MetricsResource", "metrics_site", "render_metrics"]

_CONN_COUNTERS = {
    "messages": ("txexchange_messages_total", "WebSocket messages received"),
    "bytes": ("txexchange_bytes_total", "WebSocket payload bytes received"),
    "connects": ("txexchange_connects_total", "WebSocket connections established"),
    "reconnects": ("txexchange_reconnects_total", "reconnection attempts"),
    "errors": ("txexchange_connection_errors_total", "transport errors"),
    "rejected_frames": ("txexchange_rejected_frames_total", "frames rejected (size, bombs)"),
    "stalls": ("txexchange_stalls_total", "stall watchdog firings"),
    "rollovers": ("txexchange_rollovers_total", "planned connection rollovers"),
}
_CLIENT_COUNTERS = {
    "book_resyncs": ("txexchange_book_resyncs_total", "books marked stale and resynced"),
    "snapshot_requests": ("txexchange_snapshot_requests_total", "REST book snapshots asked"),
    "malformed": ("txexchange_malformed_messages_total", "malformed messages"),
    "unknown_messages": ("txexchange_unknown_messages_total", "messages of unknown type"),
}
_REST_COUNTERS = {
    "requests": ("txexchange_rest_requests_total", "REST requests sent"),
    "weight_sent": ("txexchange_rest_weight_total", "REST request weight spent"),
    "rate_limited": ("txexchange_rest_rate_limited_total", "REST answers 429/418"),
    "retries": ("txexchange_rest_retries_total", "REST retries"),
    "errors": ("txexchange_rest_errors_total", "REST errors"),
}
_SINK_METRICS = {
    "records": ("txexchange_sink_records_total", "counter", "records written"),
    "dropped": ("txexchange_sink_dropped_total", "counter", "records dropped (queue full)"),
    "coalesced": ("txexchange_sink_coalesced_total", "counter", "books replaced before written"),
    "errors": ("txexchange_sink_errors_total", "counter", "failed backend writes"),
    "queue_depth": ("txexchange_sink_queue_depth", "gauge", "records waiting"),
}


def _labels(**labels: Any) -> str:
    parts = []
    for k, v in labels.items():
        text = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{k}="{text}"')
    return "{" + ",".join(parts) + "}"


def _num(value: float | int) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(self, name: str, kind: str, help_: str, samples: Iterable[tuple[str, Any]]) -> None:
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_}")
            self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is not None:
                self.lines.append(f"{name}{labels} {_num(value)}")


def render_metrics(service: Any) -> str:
    """The Prometheus text exposition of ``service`` (a FeedService) now."""
    now = service.reactor.seconds()
    w = _Writer()
    w.metric(
        "txexchange_up", "gauge", "1 while the feeds run", [("", 1 if service.running_feeds else 0)]
    )
    if service.started_at is not None:
        w.metric(
            "txexchange_uptime_seconds",
            "gauge",
            "seconds since start",
            [("", round(now - service.started_at, 3))],
        )
    conns = service.connections()
    for key, (name, help_) in _CONN_COUNTERS.items():
        w.metric(
            name,
            "counter",
            help_,
            [
                (_labels(exchange=ex, connection=i), conn.stats.as_dict()[key])
                for i, (ex, conn) in enumerate(conns)
            ],
        )
    w.metric(
        "txexchange_last_message_age_seconds",
        "gauge",
        "seconds since a connection's last message",
        [
            (_labels(exchange=ex, connection=i), conn.stats.last_message_age())
            for i, (ex, conn) in enumerate(conns)
        ],
    )
    clients = service.clients
    for key, (name, help_) in _CLIENT_COUNTERS.items():
        w.metric(
            name,
            "counter",
            help_,
            [
                (_labels(exchange=ex), c.stats.as_dict().get(key))
                for ex, c in clients.items()
                if getattr(c, "stats", None) is not None
            ],
        )
    w.metric(
        "txexchange_integrity_failures_total",
        "counter",
        "books found inconsistent (gap, checksum), not counting reconnects",
        [(_labels(exchange=ex), service.integrity_failures.get(ex, 0)) for ex in clients],
    )
    for key, (name, help_) in _REST_COUNTERS.items():
        w.metric(
            name,
            "counter",
            help_,
            [
                (_labels(exchange=ex), c.rest.stats.as_dict().get(key))
                for ex, c in clients.items()
                if getattr(c, "rest", None) is not None
            ],
        )
    books = []
    for ex, client in clients.items():
        for symbol, book in client.books.items():
            books.append((ex, symbol, book))
    w.metric(
        "txexchange_book_synced",
        "gauge",
        "1 when the book is consistent",
        [(_labels(exchange=ex, symbol=s), int(b.synced and not b.stale)) for ex, s, b in books],
    )
    tracks = service.books
    w.metric(
        "txexchange_book_updates_total",
        "counter",
        "book updates delivered",
        [(_labels(exchange=ex, symbol=s), t.updates) for (ex, s), t in tracks.items()],
    )
    w.metric(
        "txexchange_book_age_seconds",
        "gauge",
        "seconds since the book's last update",
        [
            (_labels(exchange=ex, symbol=s), round(now - t.last_at, 3))
            for (ex, s), t in tracks.items()
            if t.last_at is not None
        ],
    )
    w.metric(
        "txexchange_book_lag_seconds",
        "gauge",
        "local time minus the exchange time of the book's last update",
        [
            (_labels(exchange=ex, symbol=s), round(now - t.ts / 1000, 3))
            for (ex, s), t in tracks.items()
            if t.ts is not None
        ],
    )
    for key, (name, kind, help_) in _SINK_METRICS.items():
        w.metric(name, kind, help_, [(_labels(sink=s.name), s.stats()[key]) for s in service.sinks])
    return "\n".join(w.lines) + "\n"


def health(service: Any) -> tuple[int, dict[str, Any]]:
    synced, total = service.books_synced()
    ok = service.running_feeds and synced == total
    status = "ok" if ok else ("starting" if not service.running_feeds else "degraded")
    body = {
        "status": status,
        "books_synced": synced,
        "books": total,
        "exchanges": sorted(service.clients),
        "sinks": {s.name: s.stats() for s in service.sinks},
        **service.totals(),
    }
    return (200 if ok else 503), body


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return render_metrics(self.service).encode()


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        code, body = health(self.service)
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return dumps(body) + b"\n"


def metrics_site(service: Any) -> Any:
    """A ``twisted.web`` site serving ``/metrics`` and ``/health``."""
    from twisted.web.server import Site

    root = Resource()
    root.putChild(b"metrics", MetricsResource(service))
    root.putChild(b"health", HealthResource(service))
    site = Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
