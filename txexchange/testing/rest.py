"""The REST half of a fake exchange: routes, a request log and HTTP faults.

Part of the test toolkit (:mod:`txexchange.testing`).  :class:`FakeRest` is
a :mod:`twisted.web` resource that the fake server mounts at its root (beside
the WebSocket paths); tests register handlers per method and path, read back
every request that arrived, and queue faults (an error status with
``Retry-After``, a slow answer, no answer at all) for the next requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txexchange.codec import dumps

__all__ = ["FakeRest", "Handler", "RecordedRequest", "Response"]

log = Logger()

#: a route handler: gets the request, returns a JSON-able object, a
#: :class:`Response`, or a Deferred of either
Handler = Callable[[Request], Any]


@attrs.frozen
class Response:
    """An explicit answer from a route handler.

    ``body`` is sent as JSON unless it is :class:`bytes` (sent as is) or
    :class:`str` (sent UTF-8 encoded); ``None`` sends an empty body.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class RecordedRequest:
    """One request as the fake saw it."""

    method: str
    #: the request path, without the query string
    path: str
    #: query (and form) arguments, decoded
    args: dict[str, list[str]]
    #: request headers, lower-cased names; repeated headers joined with ``", "``
    headers: dict[str, str]
    #: ``reactor.seconds()`` when the request arrived
    time: float
    #: the request body
    body: bytes = b""


@attrs.define
class _Fault:
    kind: str  # "fail" | "delay" | "hang"
    remaining: int
    path: str | None
    status: int = 500
    retry_after: float | None = None
    body: Any = None
    seconds: float = 0.0

    def matches(self, path: str) -> bool:
        return self.path is None or self.path == path


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class FakeRest(Resource):
    """A REST endpoint for fake exchanges.

    Routes are matched on the exact method and the full request path (no
    query string).  An unknown path gets ``404`` with
    ``{"code": -1, "msg": "not found"}``; a known path with another method
    gets ``405``.

    ``reactor`` is only needed for :meth:`delay_next` and the request
    timestamps; the fake server passes its own.  When left out, the global
    reactor is imported the first time it is needed.
    """

    isLeaf = True

    def __init__(self, *, reactor: Any = None) -> None:
        super().__init__()
        self._reactor = reactor
        self._routes: dict[tuple[str, str], Handler] = {}
        self._faults: list[_Fault] = []
        self._pending: set[Any] = set()
        self._hung: list[Request] = []
        #: every request that arrived, faulted ones included, in order
        self.requests: list[RecordedRequest] = []

    # -- configuration ---------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``method path`` with ``handler(request)``.

        The handler returns a JSON-able object (sent as ``application/json``
        with status 200), a :class:`Response`, or a Deferred of either.  An
        exception (or failed Deferred) becomes a ``500``.  Registering the same
        method and path again replaces the handler.
        """
        if not path.startswith("/"):
            raise ValueError(f"route paths start with '/': {path!r}")
        self._routes[(method.upper(), path)] = handler

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        body: Any = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (to ``path``, if given) with ``status``.

        ``retry_after`` adds a ``Retry-After`` header (seconds).  ``body``
        defaults to ``{"code": -1, "msg": <reason phrase>}``.
        """
        self._add(_Fault("fail", count, path, status=status, retry_after=retry_after, body=body))

    def delay_next(self, seconds: float, *, count: int = 1, path: str | None = None) -> None:
        """Answer the next ``count`` requests (to ``path``, if given) ``seconds`` late."""
        self._add(_Fault("delay", count, path, seconds=seconds))

    def hang_next(self, *, count: int = 1, path: str | None = None) -> None:
        """Never answer the next ``count`` requests (to ``path``, if given).

        The connections stay open until the client gives up or the server
        stops.
        """
        self._add(_Fault("hang", count, path))

    @property
    def queued_faults(self) -> int:
        """Faults queued by ``fail_next``/``delay_next``/``hang_next`` and not used yet."""
        return len(self._faults)

    def clear_faults(self) -> None:
        """Forget every queued fault that has not been used yet."""
        self._faults.clear()

    def cancel_pending(self) -> None:
        """Cancel delayed answers and cut off hung requests (their connections are
        aborted, so clients see the failure).  Called by the server on stop."""
        for call in list(self._pending):
            if call.active():
                call.cancel()
        self._pending.clear()
        hung, self._hung = self._hung, []
        for request in hung:
            transport = getattr(request, "transport", None)
            if transport is not None:
                transport.abortConnection()

    @property
    def hung_requests(self) -> list[Request]:
        """Requests held open by :meth:`hang_next` whose client is still there."""
        return list(self._hung)

    def _add(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("count must be at least 1")
        self._faults.append(fault)

    @property
    def reactor(self) -> Any:
        """The reactor for delays and timestamps (the global one unless set)."""
        return self._get_reactor()

    @reactor.setter
    def reactor(self, value: Any) -> None:
        self._reactor = value

    def _get_reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    # -- serving -----------------------------------------------------------------

    def render(self, request: Request) -> bytes | int:
        method = _decode(request.method).upper()
        path = _decode(request.path)
        self.requests.append(self._record(request, method, path))
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        fault = self._take_fault(path)
        if fault is None:
            self._dispatch(request, method, path, gone)
        elif fault.kind == "fail":
            log.debug(
                "fake REST: {method} {path} -> {status}",
                method=method,
                path=path,
                status=fault.status,
            )
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _format_retry_after(fault.retry_after)
            body = fault.body
            if body is None:
                phrase = http.RESPONSES.get(fault.status, b"error").decode("ascii", "replace")
                body = {"code": -1, "msg": phrase}
            self._write(request, Response(fault.status, body, headers), gone)
        elif fault.kind == "delay":
            log.debug(
                "fake REST: {method} {path} delayed {s}s", method=method, path=path, s=fault.seconds
            )
            self._delay(request, method, path, fault.seconds, gone)
        else:
            log.debug("fake REST: {method} {path} hangs", method=method, path=path)
            self._hung.append(request)
            request.notifyFinish().addBoth(lambda _: self._forget_hung(request))
        return NOT_DONE_YET

    def _record(self, request: Request, method: str, path: str) -> RecordedRequest:
        args = {_decode(k): [_decode(v) for v in vs] for k, vs in (request.args or {}).items()}
        headers = {
            _decode(k).lower(): ", ".join(_decode(v) for v in vs)
            for k, vs in request.requestHeaders.getAllRawHeaders()
        }
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
            request.content.seek(0)
        return RecordedRequest(
            method=method,
            path=path,
            args=args,
            headers=headers,
            time=self._get_reactor().seconds(),
            body=body,
        )

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _forget_hung(self, request: Request) -> None:
        if request in self._hung:
            self._hung.remove(request)

    def _delay(
        self, request: Request, method: str, path: str, seconds: float, gone: list[Failure]
    ) -> None:
        def fire() -> None:
            self._pending.discard(call)
            self._dispatch(request, method, path, gone)

        def lost(_: object) -> None:
            if call.active():
                call.cancel()
            self._pending.discard(call)

        call = self._get_reactor().callLater(seconds, fire)
        self._pending.add(call)
        request.notifyFinish().addErrback(lost)

    def _dispatch(self, request: Request, method: str, path: str, gone: list[Failure]) -> None:
        handler = self._routes.get((method, path))
        if handler is None:
            if any(p == path for (_, p) in self._routes):
                result: Any = Response(405, {"code": -1, "msg": "method not allowed"})
            else:
                result = Response(404, {"code": -1, "msg": "not found"})
            self._write(request, result, gone)
            return
        d: Deferred[Any] = maybeDeferred(handler, request)

        def failed(failure: Failure) -> Response:
            log.failure(
                "fake REST handler for {method} {path} failed", failure, method=method, path=path
            )
            return Response(500, {"code": -1, "msg": "internal error"})

        d.addErrback(failed)
        d.addCallback(lambda result: self._write(request, result, gone))

    def _write(self, request: Request, result: Any, gone: list[Failure]) -> None:
        if gone or request.finished:
            return
        if not isinstance(result, Response):
            result = Response(200, result)
        request.setResponseCode(result.status)
        body = result.body
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        else:
            data = dumps(body)
            request.setHeader(b"content-type", b"application/json")
        for name, value in result.headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        request.setHeader(b"content-length", str(len(data)).encode("ascii"))
        if data:
            request.write(data)
        request.finish()
