"""The web view's ``twisted.web`` resources: the page, its assets and the JSON API.

Sits beside the service at the end of the flow.  Everything here answers
``GET`` only and reads the service; :class:`WebSite` refuses every other
method with 405 before any resource is looked up, sets the security headers
(a strict Content-Security-Policy: the page loads only its own files), and,
when the site listens on loopback, answers 403 to a request whose ``Host``
is not a loopback name (so a web page elsewhere cannot reach it through DNS
rebinding).  The page's files ship inside the package (``static/``); nothing
comes from elsewhere.
"""

from __future__ import annotations

from collections.abc import Collection
from importlib import resources
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txexchange.codec import dumps
from txexchange.service.web.rates import RateMeter
from txexchange.service.web.snapshot import (
    DEFAULT_DEPTH,
    MAX_DEPTH,
    book_view,
    service_state,
)
from txexchange.service.web.stream import EventBroadcaster

__all__ = ["LOOPBACK_HOSTS", "WebSite", "web_root"]

#: ``Host`` names accepted when the site listens on loopback
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_ASSETS = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _asset(name: str) -> bytes:
    return (resources.files("txexchange.service.web") / "static" / name).read_bytes()


class _Asset(Resource):
    """One file of the page, read from the package once."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.body = _asset(name)
        self.content_type = _ASSETS[name]

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


class _Error(Resource):
    isLeaf = True

    def __init__(self, code: int, message: str, allow: bytes | None = None) -> None:
        super().__init__()
        self.code = code
        self.message = message
        self.allow = allow

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        if self.allow is not None:
            request.setHeader(b"allow", self.allow)
        return _json(request, {"error": self.message})


def _json(request: Request, body: Any) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return dumps(body) + b"\n"


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


class _BadQuery(ValueError):
    pass


def _query(request: Request, need_book: bool) -> tuple[tuple[str, str] | None, int]:
    """``((exchange, symbol) or None, depth)`` from the query string."""
    exchange, symbol = _arg(request, "exchange"), _arg(request, "symbol")
    depth_text = _arg(request, "depth")
    depth = DEFAULT_DEPTH
    if depth_text is not None:
        if not depth_text.isdigit() or not 1 <= int(depth_text) <= MAX_DEPTH:
            raise _BadQuery(f"depth must be a whole number from 1 to {MAX_DEPTH}")
        depth = int(depth_text)
    if (exchange is None) != (symbol is None):
        raise _BadQuery("give both exchange and symbol, or neither")
    if exchange is None or symbol is None:
        if need_book:
            raise _BadQuery(
                "exchange and symbol are required, e.g. ?exchange=binance&symbol=BTC/USDT"
            )
        return None, depth
    return (exchange, symbol), depth


class _Api(Resource):
    isLeaf = True

    def __init__(self, service: Any, rates: RateMeter | None) -> None:
        super().__init__()
        self.service = service
        self.rates = rates


class StateResource(_Api):
    """``GET /api/state``: every feed's state, counters and books."""

    def render_GET(self, request: Request) -> bytes:
        return _json(request, service_state(self.service, self.rates))


class BookResource(_Api):
    """``GET /api/book?exchange=..&symbol=..[&depth=N]``: one book and its recent trades."""

    def render_GET(self, request: Request) -> bytes:
        try:
            selected, depth = _query(request, need_book=True)
        except _BadQuery as e:
            return _Error(400, str(e)).render(request)
        assert selected is not None
        view = book_view(self.service, *selected, depth)
        if view is None:
            return _Error(404, f"no book {selected[1]!r} on {selected[0]!r}").render(request)
        return _json(request, view)


class EventsResource(_Api):
    """``GET /api/events[?exchange=..&symbol=..&depth=N]``: the push channel (SSE)."""

    def __init__(self, service: Any, rates: RateMeter | None, broadcaster: EventBroadcaster):
        super().__init__(service, rates)
        self.broadcaster = broadcaster

    def render_GET(self, request: Request) -> bytes | int:
        try:
            selected, depth = _query(request, need_book=False)
        except _BadQuery as e:
            return _Error(400, str(e)).render(request)
        if selected is not None and book_view(self.service, *selected, 1) is None:
            return _Error(404, f"no book {selected[1]!r} on {selected[0]!r}").render(request)
        self.broadcaster.add(request, selected, depth)
        return NOT_DONE_YET


class _Dir(Resource):
    """A node of the tree: unknown children are a JSON 404."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _Error(404, "not found")


class _ApiIndex(_Dir):
    def render_GET(self, request: Request) -> bytes:
        return _json(
            request,
            {
                "state": "/api/state",
                "book": "/api/book?exchange=EXCHANGE&symbol=BASE/QUOTE&depth=N",
                "events": "/api/events?exchange=EXCHANGE&symbol=BASE/QUOTE&depth=N",
            },
        )


def web_root(service: Any, rates: RateMeter | None, broadcaster: EventBroadcaster) -> Resource:
    """``/`` (the page), ``/static/*`` and ``/api/{state,book,events}``."""
    root = _Dir()
    root.putChild(b"", _Asset("index.html"))
    static = _Dir()
    for name in _ASSETS:
        if name != "index.html":
            static.putChild(name.encode(), _Asset(name))
    root.putChild(b"static", static)
    api = _ApiIndex()
    api.putChild(b"", _ApiIndex())
    api.putChild(b"state", StateResource(service, rates))
    api.putChild(b"book", BookResource(service, rates))
    api.putChild(b"events", EventsResource(service, rates, broadcaster))
    root.putChild(b"api", api)
    return root


class WebSite(Site):
    """A read-only site: ``GET`` only, security headers, loopback ``Host`` check.

    :param allowed_hosts: ``Host`` names (without port) accepted; ``None`` accepts any.
    """

    displayTracebacks = False
    noisy = False

    def __init__(self, resource: Resource, allowed_hosts: Collection[str] | None = None) -> None:
        super().__init__(resource)
        self.allowed_hosts = frozenset(allowed_hosts) if allowed_hosts is not None else None

    def getResourceFor(self, request: Request) -> Any:
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"content-security-policy", _CSP)
        if request.method != b"GET":
            return _Error(405, "read-only: only GET is served", allow=b"GET")
        if self.allowed_hosts is not None and _host_name(request) not in self.allowed_hosts:
            return _Error(403, "this view answers only to a loopback Host name")
        return super().getResourceFor(request)


def _host_name(request: Request) -> str:
    host = (request.getHeader(b"host") or b"").decode("ascii", "replace").strip().lower()
    if host.startswith("["):  # [::1]:8080
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host
