"""A python-binance-style ``BinanceSocketManager`` on the txexchange transport.

Sits beside the unified client at the top of the flow, for programs written
against python-binance's (Twisted) socket manager: callbacks receive Binance's
messages exactly as Binance sends them, with no parsing into typed events.
Underneath, every market stream goes through a shared pool of combined-stream
connections (:class:`~txexchange.client.pool.StreamPool`, many streams per
socket via ``SUBSCRIBE``, at most 1024 per socket), which reconnect with
backoff and resubscribe by themselves; the user-data socket goes through the
WebSocket API (:class:`~txexchange.client.binance_user.BinanceUserStream`).
No threads: the caller runs the reactor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import binance as adapter
from txexchange.client.pool import StreamPool
from txexchange.errors import (
    BadRequest,
    ClientClosed,
    NetworkError,
    RetriesExhausted,
    SubscriptionError,
    TLSVerificationError,
)
from txexchange.transport import (
    Connection,
    RetriesExhaustedEvent,
    StatusEvent,
    TransportOptions,
)

__all__ = [
    "MAX_RETRIES_MESSAGE",
    "RETIRED_STREAMS",
    "BinanceSocketManager",
    "RetiredStreamError",
]

log = Logger()

Callback = Callable[[Any], object]

#: What callbacks receive when reconnection gives up (python-binance's wording).
MAX_RETRIES_MESSAGE = "Max reconnect retries reached"

#: Streams Binance no longer serves, with what to use instead.  ``!bookTicker``
#: (all-market book ticker) is absent from Binance's current stream catalogue;
#: only ``<symbol>@bookTicker`` remains.
RETIRED_STREAMS: Mapping[str, str] = {
    **adapter.RETIRED_STREAMS,
    "!bookTicker": (
        "the all-market book ticker stream '!bookTicker' is no longer served by Binance; "
        "use per-symbol '<symbol>@bookTicker' streams (start_symbol_book_ticker_socket, "
        "or start_multiplex_socket with several '<symbol>@bookTicker' names)"
    ),
}

_USER = "userData"  # conn_key (and pseudo stream) of the user-data socket


class RetiredStreamError(BadRequest):
    """The stream asked for was retired by Binance; the message names the replacement."""


def _error(message: str) -> dict[str, str]:
    return {"e": "error", "m": message}


def _give_up_message(error: Exception | None) -> str:
    """python-binance's message, or the TLS failure (which is never retried)."""
    if isinstance(error, TLSVerificationError):
        return f"TLS verification failed: {error}"
    return MAX_RETRIES_MESSAGE


def _normalise_stream(name: Any) -> str:
    """Binance's spelling of ``name``: the symbol part in lower case, the rest as given."""
    if not isinstance(name, str) or not name:
        raise BadRequest(f"invalid Binance stream name {name!r}")
    if not name.startswith("!"):
        symbol, at, rest = name.partition("@")
        name = symbol.lower() + at + rest
    retired = RETIRED_STREAMS.get(name)
    if retired is not None:
        raise RetiredStreamError(retired)
    return adapter.check_stream_name(name)


def _symbol(symbol: Any) -> str:
    if not isinstance(symbol, str) or not symbol:
        raise BadRequest(f"invalid Binance symbol {symbol!r}")
    return symbol.lower()


@attrs.define(eq=False)
class _Socket:
    """What one conn_key stands for."""

    key: str
    path: str  # python-binance's name for it (the base of ``key``)
    streams: tuple[str, ...]
    callback: Callback
    multiplex: bool = False


class BinanceSocketManager:
    """python-binance's ``BinanceSocketManager``, Twisted-native and thread-free.

    :param client: optional python-binance-style client; its ``API_KEY`` and
        ``API_SECRET`` are used for :meth:`start_user_socket`.
    :param reactor: the reactor (default: the global one, imported on first use).
    :param urls: Binance URL overrides: ``ws`` (market streams), ``ws_api``
        (WebSocket API, user data), ``rest``.
    :param max_retries: failed reconnects after which a socket gives up and
        its callbacks receive ``{'e': 'error', 'm': 'Max reconnect retries reached'}``
        (``None``: retry forever).
    :param api_key: API key (overrides ``client.API_KEY``).
    :param secret: API secret (overrides ``client.API_SECRET``).
    :param transport: :class:`~txexchange.transport.TransportOptions` (backoff,
        timeouts, a test CA as ``trust_root``); ``max_retries`` overrides its own.
    :param clock: an ``IReactorTime`` for timers (default: ``reactor``).
    :param user_timeout: accepted for python-binance compatibility and ignored
        (the listenKey keep-alive it timed no longer exists).
    """

    WEBSOCKET_DEPTH_5 = "5"
    WEBSOCKET_DEPTH_10 = "10"
    WEBSOCKET_DEPTH_20 = "20"

    def __init__(
        self,
        client: Any = None,
        *,
        reactor: Any = None,
        urls: Mapping[str, str] | None = None,
        max_retries: int | None = 5,
        api_key: str | None = None,
        secret: str | None = None,
        transport: TransportOptions | None = None,
        clock: Any = None,
        user_timeout: float | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.urls = adapter.resolve_urls(urls)
        self.options = (transport or TransportOptions()).replace(max_retries=max_retries)
        self._api_key = api_key if api_key is not None else getattr(client, "API_KEY", None)
        self._secret = secret if secret is not None else getattr(client, "API_SECRET", None)
        self._rules = adapter.BinanceWireRules()
        self._pool = self._new_pool()
        self._sockets: dict[str, _Socket] = {}
        self._listeners: dict[str, dict[str, None]] = {}  # stream -> conn_keys
        self._user: Any = None  # BinanceUserStream, while a user socket is open
        self._suspects: dict[str, None] = {}  # refused in a batch, to be tried alone
        self._probing = False

    def __repr__(self) -> str:
        return (
            f"<BinanceSocketManager {self.urls['ws']} sockets={len(self._sockets)} "
            f"streams={len(self._listeners)} connections={len(self._pool.connections)}>"
        )

    # -- python-binance's public surface ------------------------------------------

    def start_depth_socket(
        self,
        symbol: str,
        callback: Callback,
        depth: int | str | None = None,
        interval: int | None = None,
    ) -> str:
        """Diff depth (``<symbol>@depth``) or, with ``depth`` 5/10/20, the partial book.

        ``interval=100`` selects the 100 ms stream; ``None`` (or 0, 1000) the 1 s one.
        """
        if interval in (None, 0, 1000):
            speed = 1000
        elif interval == 100:
            speed = 100
        else:
            raise BadRequest(f"Binance depth interval must be 100 or 1000 ms, got {interval!r}")
        sym = _symbol(symbol)
        if depth in (None, 0, 1, "1", ""):
            stream = adapter.depth_topic(sym, speed)
        else:
            try:
                levels = int(depth)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise BadRequest(f"Binance depth must be 5, 10 or 20, got {depth!r}") from None
            stream = adapter.partial_depth_topic(sym, levels, speed)
        return self._start_single(stream, callback)

    def start_kline_socket(self, symbol: str, callback: Callback, interval: str = "1m") -> str:
        """Candles: ``<symbol>@kline_<interval>``."""
        return self._start_single(adapter.kline_topic(_symbol(symbol), interval), callback)

    def start_miniticker_socket(self, callback: Callback, update_time: int = 1000) -> str:
        """Mini tickers of every market that changed, each second: ``!miniTicker@arr``."""
        if update_time != 1000:
            raise BadRequest(
                "Binance sends '!miniTicker@arr' every 1000 ms only, "
                f"got update_time={update_time!r}"
            )
        return self._start_single(adapter.all_mini_tickers_topic(), callback)

    def start_trade_socket(self, symbol: str, callback: Callback) -> str:
        """Raw trades: ``<symbol>@trade``."""
        return self._start_single(adapter.trade_topic(_symbol(symbol)), callback)

    def start_aggtrade_socket(self, symbol: str, callback: Callback) -> str:
        """Aggregate trades: ``<symbol>@aggTrade``."""
        return self._start_single(adapter.agg_trade_topic(_symbol(symbol)), callback)

    def start_symbol_ticker_socket(self, symbol: str, callback: Callback) -> str:
        """24 h rolling ticker of one symbol: ``<symbol>@ticker``."""
        return self._start_single(adapter.ticker_topic(_symbol(symbol)), callback)

    def start_ticker_socket(self, callback: Callback) -> str:
        """Always raises :class:`RetiredStreamError`: ``!ticker@arr`` was retired on 2026-03-26.

        Use :meth:`start_symbol_ticker_socket` (or :meth:`start_multiplex_socket`
        with ``<symbol>@ticker`` names) or :meth:`start_miniticker_socket`.
        """
        return self._start_single(_normalise_stream("!ticker@arr"), callback)

    def start_symbol_book_ticker_socket(self, symbol: str, callback: Callback) -> str:
        """Best bid/ask of one symbol in real time: ``<symbol>@bookTicker``."""
        return self._start_single(adapter.book_ticker_topic(_symbol(symbol)), callback)

    def start_book_ticker_socket(self, callback: Callback) -> str:
        """Always raises :class:`RetiredStreamError`: Binance no longer serves ``!bookTicker``.

        Use :meth:`start_symbol_book_ticker_socket` or :meth:`start_multiplex_socket`
        with ``<symbol>@bookTicker`` names; the messages have the same shape.
        """
        return self._start_single(_normalise_stream("!bookTicker"), callback)

    def start_multiplex_socket(self, streams: Iterable[str], callback: Callback) -> str:
        """Several streams, named as Binance spells them; the callback gets ``{"stream", "data"}``.

        The conn_key is ``"streams=" + "/".join(streams)``.
        """
        if isinstance(streams, str):
            raise BadRequest("start_multiplex_socket takes a list of stream names, not one string")
        names = tuple(dict.fromkeys(_normalise_stream(s) for s in streams))
        if not names:
            raise BadRequest("start_multiplex_socket needs at least one stream")
        return self._start("streams=" + "/".join(names), names, callback, multiplex=True)

    def start_user_socket(self, callback: Callback) -> str:
        """Account events (``outboundAccountPosition``, ``balanceUpdate``,
        ``executionReport``, ...) through the WebSocket API's
        ``userDataStream.subscribe``; re-subscribed after every reconnect.

        Needs ``api_key``/``secret`` (or a ``client`` holding them).
        """
        if not self._api_key or not self._secret:
            raise BadRequest(
                "start_user_socket needs an API key and secret: pass client= or api_key=/secret="
            )
        key = self._existing(_USER, callback)
        if key is not None:
            return key
        key = self._new_key(_USER)
        self._sockets[key] = _Socket(key, _USER, (), callback)
        if self._user is None:
            self._open_user_stream()
        return key

    def stop_socket(self, conn_key: str) -> Deferred[None]:
        """Stop the socket ``conn_key``; streams other keys still use stay subscribed.

        Returns a Deferred that fires when the exchange has acknowledged (it
        never fails; unknown keys are ignored).
        """
        sock = self._sockets.pop(conn_key, None)
        if sock is None:
            return succeed(None)
        if sock.path == _USER:
            if any(s.path == _USER for s in self._sockets.values()):
                return succeed(None)
            return self._close_user_stream()
        waits = []
        for stream in sock.streams:
            keys = self._listeners.get(stream)
            if keys is None:
                continue
            keys.pop(conn_key, None)
            if not keys:
                del self._listeners[stream]
                waits.append(self._pool.remove(stream).addErrback(self._log_failure, stream))
        return _all(waits)

    def start(self) -> None:
        """Kept for python-binance compatibility; does nothing.

        Sockets connect as soon as they are started (or as soon as the reactor
        runs).  There is no thread: run the reactor yourself (``reactor.run()``,
        ``task.react``), before or after this call.
        """

    def close(self) -> Deferred[None]:
        """Stop every socket; fires once every connection has closed cleanly.

        The reactor keeps running: stop it yourself afterwards if you want
        (``bm.close().addCallback(lambda _: reactor.stop())``).  The manager
        can be used again after ``close()``.
        """
        self._sockets.clear()
        self._listeners.clear()
        self._suspects.clear()
        pool, self._pool = self._pool, self._new_pool()
        waits = [pool.close()]
        if self._user is not None:
            waits.append(self._close_user_stream())
        return _all(waits)

    # -- market streams -------------------------------------------------------------

    def _new_pool(self) -> StreamPool:
        return StreamPool(self._new_connection, self._rules.max_topics_per_connection)

    def _new_connection(self) -> Connection:
        cell: list[Connection] = []

        def on_message(obj: Any) -> None:
            self._on_message(cell[0], obj)

        def on_status(event: StatusEvent) -> None:
            self._on_status(cell[0], event)

        conn = Connection(
            adapter.combined_stream_url(self.urls["ws"]),
            self._rules,
            on_message=on_message,
            on_status=on_status,
            reactor=self._reactor,
            clock=self._clock,
            options=self.options,
        )
        cell.append(conn)
        return conn

    def _start_single(self, stream: str, callback: Callback) -> str:
        return self._start(stream, (stream,), callback, multiplex=False)

    def _start(
        self, path: str, streams: tuple[str, ...], callback: Callback, *, multiplex: bool
    ) -> str:
        key = self._existing(path, callback)
        if key is not None:
            return key
        key = self._new_key(path)
        self._sockets[key] = _Socket(key, path, streams, callback, multiplex)
        for stream in streams:
            keys = self._listeners.get(stream)
            if keys is None:
                keys = self._listeners[stream] = {}
                self._subscribe(stream, probing=False)
            keys[key] = None
        return key

    def _existing(self, path: str, callback: Callback) -> str | None:
        """The key already serving ``path`` to ``callback``, if any."""
        for sock in self._sockets.values():
            if sock.path == path and sock.callback == callback:
                return sock.key
        return None

    def _new_key(self, path: str) -> str:
        key, n = path, 1
        while key in self._sockets:
            n += 1
            key = f"{path}#{n}"
        return key

    def _on_message(self, conn: Connection, obj: Any) -> None:
        if type(obj) is not dict:
            return
        stream = obj.get("stream")
        if stream == "!serverShutdown":
            log.info("binance: server shutdown notice; rolling {url} over", url=conn.url)
            conn.rollover().addErrback(self._log_failure, "rollover")
            return
        keys = self._listeners.get(stream)  # type: ignore[arg-type]
        if not keys:
            return
        data = obj.get("data")
        for key in tuple(keys):
            sock = self._sockets.get(key)
            if sock is not None:
                self._call(sock, obj if sock.multiplex else data)

    def _on_status(self, conn: Connection, event: StatusEvent) -> None:
        if not isinstance(event, RetriesExhaustedEvent):
            return
        # The connection is gone for good: every key with a stream on it gets
        # the error dict once and is dropped (a new start_* opens it again).
        keys: dict[str, None] = {}
        for stream in self._pool.retire(conn):
            keys.update(self._listeners.get(stream, {}))
        self._fail_keys(keys, _give_up_message(event.error))

    def _subscribe(self, stream: str, *, probing: bool) -> Deferred[None]:
        d = self._pool.add(stream)
        d.addErrback(self._subscribe_failed, stream, probing)
        return d

    def _subscribe_failed(self, failure: Failure, stream: str, probing: bool) -> None:
        if failure.check(NetworkError, ClientClosed):
            return  # reported through the status event, or we are closing
        keys = self._listeners.get(stream)
        if not keys:
            return  # unsubscribed before it was acknowledged
        if not failure.check(SubscriptionError):
            self._log_failure(failure, stream)
            return
        self._pool.discard(stream)
        if not probing:
            # Binance refuses a SUBSCRIBE as a whole: one bad name in a batch
            # fails every stream in it.  Try each again on its own before
            # telling anyone.
            self._suspects[stream] = None
            if not self._probing:
                self._probe_next()
            return
        self._fail_keys(dict(keys), f"Binance refused the stream {stream!r}: {failure.value}")

    def _probe_next(self, _: object = None) -> None:
        """Subscribe the next refused stream alone; a second refusal is final."""
        self._probing = False
        while self._suspects:
            stream = next(iter(self._suspects))
            del self._suspects[stream]
            if self._listeners.get(stream):
                self._probing = True
                self._subscribe(stream, probing=True).addBoth(self._probe_next)
                return

    def _fail_keys(self, keys: Mapping[str, None], message: str) -> None:
        for key in keys:
            sock = self._sockets.get(key)
            if sock is None:
                continue
            self.stop_socket(key)
            self._call(sock, _error(message))

    # -- user data ------------------------------------------------------------------

    def _open_user_stream(self) -> None:
        from txexchange.client.binance_user import BinanceUserStream

        user = BinanceUserStream(
            api_key=self._api_key,
            secret=self._secret,
            reactor=self._reactor,
            clock=self._clock,
            urls=self.urls,
            transport=self.options,
            on_event=self._on_user_event,
            on_status=self._on_user_status,
        )
        self._user = user
        user.start().addErrback(self._user_start_failed, user)

    def _close_user_stream(self) -> Deferred[None]:
        user, self._user = self._user, None
        if user is None:
            return succeed(None)
        return user.close().addErrback(self._log_failure, "user stream close")

    def _user_keys(self) -> list[_Socket]:
        return [s for s in self._sockets.values() if s.path == _USER]

    def _on_user_event(self, event: Any) -> None:
        if type(event) is dict and "event" in event and "subscriptionId" in event:
            event = event["event"]  # the WebSocket API's envelope
        for sock in self._user_keys():
            self._call(sock, event)

    def _on_user_status(self, event: StatusEvent) -> None:
        if isinstance(event, RetriesExhaustedEvent):
            self._user_failed(_give_up_message(event.error))

    def _user_start_failed(self, failure: Failure, user: Any) -> None:
        if user is not self._user or failure.check(ClientClosed):
            return
        if failure.check(RetriesExhausted, TLSVerificationError):
            self._user_failed(_give_up_message(failure.value))
        else:
            log.error("binance user stream failed: {error}", error=failure.value)
            self._user_failed(f"User data stream failed: {failure.value}")

    def _user_failed(self, message: str) -> None:
        socks = self._user_keys()
        if self._user is not None:
            self._close_user_stream()
        for sock in socks:
            self._sockets.pop(sock.key, None)
            self._call(sock, _error(message))

    # -- helpers --------------------------------------------------------------------

    def _call(self, sock: _Socket, message: Any) -> None:
        try:
            sock.callback(message)
        except Exception:  # noqa: BLE001 - a callback bug must not break the feed
            log.failure("callback of socket {key} raised", key=sock.key)

    @staticmethod
    def _log_failure(failure: Failure, what: str) -> None:
        if not failure.check(ClientClosed):
            log.failure("binance socket manager: {what}", failure, what=what)


def _all(waits: list[Deferred[Any]]) -> Deferred[None]:
    if not waits:
        return succeed(None)
    return gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)
