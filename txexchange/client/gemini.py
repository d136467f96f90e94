"""Gemini (current WebSocket API): books from ``@depth@100ms`` diffs, trades, tickers, candles.

Sits in the client layer: wires the Gemini adapter
(:mod:`txexchange.adapters.gemini`: stream names, parsing, REST request
descriptions; :mod:`txexchange.adapters.gemini_book`: the pure book-sync
machine) to connections, REST and the state layer.

* Books (``book_mode="diff"``, the default): ``{sym}@depth@100ms`` on a
  ``?snapshot=-1`` connection.  Each time the diff stream is (re)subscribed the
  server pushes the whole book (``{"lastUpdateId", "s", "bids", "asks"}``);
  diffs chain by ``U``/``u``.  On a gap or a crossed book the book is marked
  stale and a snapshot is asked for over the same socket with the ``depth``
  method; its answer comes back as a :class:`~txexchange.adapters.gemini.GeminiReply`.
* Books (``book_mode="partial"``): ``{sym}@depth5|10|20``.  Gemini's partial
  frames do not name their symbol, so each partial book gets a connection of
  its own (the connection says whose book a frame is).
* Trades: ``{sym}@trade``, seeded from ``/v1/trades``.  Tickers:
  ``{sym}@bookTicker`` (bid/ask), seeded from ``/v1/pubticker`` (last,
  volumes) and ``/v2/ticker`` (open/high/low/close).  Candles: Gemini streams
  none on this API; ``/v2/candles`` is polled every
  :attr:`GeminiClient.candle_poll_interval` seconds.
* REST answers that carry JSON numbers (symbol details, candles) are decoded
  exactly with :func:`txexchange.adapters.gemini.decode` from the raw body,
  which the :class:`~txexchange.client.rest.RestClient` ``tap`` hands over.

* Legacy Market Data v1 (``GeminiClient(..., api="v1")``): the ``book`` and
  ``trades`` streams of a symbol share one socket to
  ``v1_url(urls["v1"], id, heartbeat=True)``; its ``initial`` change events
  form the book, later changes update it, ``trade`` events are the trades,
  and :class:`~txexchange.adapters.gemini_book.GeminiV1Sync` checks
  ``socket_sequence``.  A gap closes the socket and opens a new one (a new
  ``initial`` book).  Tickers and candles still use the current API / REST.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import Unknown
from txexchange.adapters import gemini as adapter
from txexchange.adapters.gemini_book import (
    ApplyDelta,
    ApplySnapshot,
    GeminiBookSync,
    GeminiV1Sync,
    NeedSnapshot,
    Reconnect,
    Resync,
    SnapshotTooOld,
    V1Update,
)
from txexchange.adapters.rest import RestRequest
from txexchange.client.base import ClientOptions, ExchangeClient
from txexchange.client.pool import StreamPool
from txexchange.client.rest import RestClient
from txexchange.codec import DecodeError
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.delivery.hub import Key
from txexchange.errors import BadRequest, BadSymbol, ExchangeError, MalformedMessage
from txexchange.events import BookDelta, BookSnapshot, Ticker, Trade
from txexchange.markets import MarketIndex
from txexchange.state import CandleSeries, OrderBook, TradeBuffer, ohlcv
from txexchange.transport import (
    Connected,
    Connection,
    Disconnected,
    RetriesExhaustedEvent,
    StatusEvent,
    TransportOptions,
)

__all__ = ["GeminiClient", "GeminiStats"]

log = Logger()

#: Gemini's public REST limit: 120 requests a minute
REST_LIMIT = 120
REST_WINDOW = 60.0


class GeminiStats:
    """Counters of a client (read by the service's metrics)."""

    __slots__ = (
        "book_resyncs",
        "crossed_books",
        "exchange_errors",
        "malformed",
        "snapshot_requests",
        "unknown_messages",
        "v1_reconnects",
    )

    def __init__(self) -> None:
        self.book_resyncs = 0
        self.crossed_books = 0
        self.snapshot_requests = 0
        self.exchange_errors = 0
        self.malformed = 0
        self.unknown_messages = 0
        #: legacy v1 sockets replaced after a ``socket_sequence`` gap
        self.v1_reconnects = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _BookEntry:
    __slots__ = ("book", "fetching", "key", "retry_call", "sync", "topic")

    def __init__(
        self, book: OrderBook, sync: GeminiBookSync | GeminiV1Sync, key: Key, topic: str
    ) -> None:
        self.book = book
        self.sync = sync
        self.key = key
        self.topic = topic
        #: request id of the ``depth`` request in flight (None: none)
        self.fetching: str | None = None
        self.retry_call: Any = None


class _V1Socket:
    """The legacy v1 socket of one symbol, shared by its ``book`` and ``trades`` streams.

    The book is kept whenever the socket is open (also for a trades-only
    socket), so a ``book`` stream opened later is served at once.
    """

    __slots__ = ("book", "channels", "conn", "entry", "parser", "symbol", "sync", "url")

    def __init__(self, symbol: str, url: str, depth: int | None) -> None:
        self.symbol = symbol
        self.url = url
        self.parser = adapter.GeminiV1Parser(symbol)
        self.sync = GeminiV1Sync(symbol)
        self.book = OrderBook(symbol, depth)
        #: open streams on this socket: "book", "trades"
        self.channels: set[str] = set()
        #: the ``book`` stream's entry (None: no book stream open)
        self.entry: _BookEntry | None = None
        #: the socket's current connection (None: closed)
        self.conn: Connection | None = None


class GeminiClient(ExchangeClient):
    """Gemini market data.  URL keys for ``urls=``: ``ws``, ``v1`` (or ``marketdata_v1``), ``rest``.

    ``api="v1"`` takes books and trades from the legacy Market Data v1 sockets
    (one per symbol, ``urls["v1"]``) instead of the current API; tickers and
    candles are unchanged.  :func:`txexchange.exchange` does not pass ``api``:
    construct ``GeminiClient(..., api="v1")`` directly for it.

    ``rest_tap`` is handed on: it is called with every answer of an unsigned
    REST request (the recorder uses it).
    """

    name = "gemini"
    #: seconds between ``/v2/candles`` polls of a watched candle series
    candle_poll_interval: float = 5.0
    #: seconds to wait for the answer to a ``depth`` request before asking again
    depth_timeout: float = 5.0

    def __init__(
        self,
        *,
        reactor: Any = None,
        clock: Any = None,
        urls: Mapping[str, str] | None = None,
        options: ClientOptions | None = None,
        transport: TransportOptions | None = None,
        markets: Any = None,
        http_client: Any = None,
        rng: random.Random | None = None,
        rest_tap: Callable[[RestRequest, int, bytes, float], None] | None = None,
        api: str = "current",
    ) -> None:
        if api not in ("current", "v1"):
            raise BadRequest(f"Gemini api must be 'current' or 'v1', not {api!r}")
        super().__init__(
            reactor=reactor, clock=clock, options=options, transport=transport, markets=markets
        )
        if urls and "marketdata_v1" in urls:
            # FakeGemini.urls (and PROTOCOLS.md) call the legacy base ``marketdata_v1``;
            # the adapter calls it ``v1``: accept both spellings
            urls = dict(urls)
            legacy = urls.pop("marketdata_v1")
            urls.setdefault("v1", legacy)
        self.urls = adapter.resolve_urls(urls)
        opts = self.options
        if opts.book_mode not in ("diff", "partial"):
            raise BadRequest(
                f"Gemini book_mode must be 'diff' or 'partial', not {opts.book_mode!r}"
            )
        if opts.book_mode == "partial" and opts.partial_depth not in (5, 10, 20):
            raise BadRequest(f"Gemini partial_depth must be 5, 10 or 20, not {opts.partial_depth}")
        if opts.update_speed not in (100, 1000):
            raise BadRequest(f"Gemini update_speed must be 100 or 1000 ms, not {opts.update_speed}")
        if api == "v1" and opts.book_mode != "diff":
            raise BadRequest("Gemini api='v1' keeps whole books; book_mode must be 'diff'")
        #: "current" (the current WebSocket API) or "v1" (books and trades from legacy v1)
        self.api = api
        self.v1_rules = adapter.GeminiV1WireRules()
        #: legacy v1 sockets by symbol (``api="v1"``)
        self._v1: dict[str, _V1Socket] = {}
        #: v1 connections replaced after a gap, still closing
        self._v1_closing: set[Connection] = set()
        self.rules = adapter.GeminiWireRules()
        self._rng = rng
        self._user_tap = rest_tap
        #: raw bodies of answers with JSON numbers, by id(request), for exact decoding
        self._raw: dict[int, bytes] = {}
        self.rest = RestClient(
            self.urls["rest"],
            reactor=self.reactor,
            clock=self.clock,
            http_client=http_client,
            trust_root=self.transport_options.trust_root,
            parse_error=adapter.parse_rest_error,
            weight_limit=min(REST_LIMIT, opts.weight_limit),
            weight_window=REST_WINDOW,
            tap=self._tap,
            timeout=self.options.rest_timeout,
        )
        #: the diff, trade and ticker streams (no per-connection cap documented)
        self.pool = StreamPool(
            lambda: self._new_connection(adapter.ws_url(self.urls["ws"])),
            self.rules.max_topics_per_connection,
        )
        #: partial books, one connection each (their frames do not name the symbol)
        self.partial_pool = StreamPool(
            lambda: self._new_connection(adapter.ws_url(self.urls["ws"], snapshot=None)), 1
        )
        self.stats = GeminiStats()
        self._parser: adapter.GeminiParser | None = None
        self._book_entries: dict[str, _BookEntry] = {}
        self._topic_key: dict[str, Key] = {}
        self._key_topic: dict[Key, str] = {}
        self._pending_trades: dict[str, list[Trade] | None] = {}
        #: symbols whose ticker has had a stream update (REST seeds then keep off bid/ask)
        self._streamed_tickers: set[str] = set()
        #: ``depth`` request id -> symbol
        self._depth_requests: dict[str, str] = {}
        self._request_seq = 0
        self._pollers: dict[Key, Any] = {}
        self._timers: set[Any] = set()

    # -- REST -------------------------------------------------------------------

    def _tap(self, request: RestRequest, status: int, body: bytes, at: float) -> None:
        if status == 200 and (
            request.path.startswith("/v2/candles/") or request.path.startswith("/v1/symbols/")
        ):
            self._raw[id(request)] = body
        if self._user_tap is not None:
            self._user_tap(request, status, body, at)

    def _request_exact(self, request: RestRequest) -> Deferred[Any]:
        """``request``, its JSON body decoded with :func:`adapter.decode` (exact numbers)."""

        def exact(value: Any) -> Any:
            body = self._raw.pop(id(request), None)
            if body is None:
                return value
            try:
                return adapter.decode(body)
            except (DecodeError, ValueError):
                return value

        def forget(f: Failure) -> Failure:
            self._raw.pop(id(request), None)
            return f

        return self.rest.request(request).addCallbacks(exact, forget)

    # -- connections ------------------------------------------------------------

    def _new_connection(self, url: str) -> Connection:
        cell: list[Connection] = []

        def on_status(event: StatusEvent) -> None:
            self._on_status(cell[0], event)

        def on_message(obj: Any) -> None:
            self._on_message(cell[0], obj)

        conn = Connection(
            url,
            self.rules,
            on_message=on_message,
            on_status=on_status,
            reactor=self.reactor,
            clock=self.clock,
            options=self.transport_options,
            rng=self._rng,
        )
        cell.append(conn)
        return conn

    def _pool_of(self, conn: Connection) -> StreamPool:
        return self.partial_pool if conn in self.partial_pool.connections else self.pool

    def _on_status(self, conn: Connection, event: StatusEvent) -> None:
        # the connection's event first, then what it caused (resyncs, failed streams)
        self.hub.publish(("status", None), event)
        pool = self._pool_of(conn)
        if isinstance(event, Disconnected):
            for topic in pool.topics_of(conn):
                key = self._topic_key.get(topic)
                if key is not None and key[0] == "book":
                    self._book_lost(key[1], "disconnected: " + event.reason)  # type: ignore[arg-type]
        elif isinstance(event, Connected):
            # the transport resubscribes now: the subscribe snapshot follows the ack
            for topic in pool.topics_of(conn):
                key = self._topic_key.get(topic)
                if key is not None and key[0] == "book":
                    entry = self._book_entries.get(key[1])  # type: ignore[arg-type]
                    if entry is not None and self.options.book_mode == "diff":
                        self._forget_depth_request(entry)
                        entry.sync.expect_snapshot()
        elif isinstance(event, RetriesExhaustedEvent):
            error = event.error or ExchangeError("retries exhausted")
            for topic in pool.retire(conn):
                key = self._topic_key.get(topic)
                if key is not None:
                    self._stream_failed(key, error)

    def _stream_failed(self, key: Key, error: Exception) -> None:
        """``key`` cannot be served: forget it, tell status observers, fail its waiters."""
        if key in self._open:
            self._open.discard(key)
            self.hub.set_not_ready(key)
            if self._is_v1(key):
                self._v1_release(key)
            else:
                topic = self._forget_stream(key)
                if topic is not None:
                    self._pool_for(key).discard(topic)
        self.hub.publish(("status", None), StreamFailed(key[0], key[1], error))
        self.hub.fail(key, error)

    def _pool_for(self, key: Key) -> StreamPool:
        if key[0] == "book" and self.options.book_mode == "partial":
            return self.partial_pool
        return self.pool

    # -- the hot path -----------------------------------------------------------

    def _on_message(self, conn: Connection, obj: Any) -> None:
        parser = self._parser
        if parser is None:
            return
        try:
            result = parser.parse(obj)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warn("gemini: malformed message: {e}", e=e)
            return
        if type(result) is list:
            for event in result:
                kind = type(event)
                if kind is BookDelta:
                    self._on_delta(event)
                elif kind is Trade:
                    self._on_trade(event)
                elif kind is BookSnapshot:
                    self._on_book_frame(event)
                elif kind is Ticker and ("ticker", event.symbol) in self._open:
                    self._streamed_tickers.add(event.symbol)
                    self._publish_ticker(event)
        elif type(result) is adapter.GeminiReply:
            self._on_reply(result)
        elif type(result) is Unknown:
            if type(obj) is dict and "lastUpdateId" in obj and "s" not in obj:
                self._on_partial_frame(conn, obj)
                return
            self.stats.unknown_messages += 1
            log.debug("gemini: {reason}", reason=result.reason)
        # Pong: nothing to do (the transport counts the traffic)

    # -- books ------------------------------------------------------------------

    def _on_delta(self, delta: BookDelta) -> None:
        entry = self._book_entries.get(delta.symbol)
        if entry is None:
            return
        action = entry.sync.on_delta(delta)
        kind = type(action)
        if kind is ApplyDelta:
            book = entry.book
            try:
                book.apply_delta(delta)
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            problem = entry.sync.verify(book.top)
            if problem is not None:
                self.stats.crossed_books += 1
                self._book_stale(entry, problem.reason)
                self._request_depth(entry)
                return
            self.hub.publish(
                entry.key,
                BookUpdate(
                    delta.symbol, delta.bids, delta.asks, delta.nonce, delta.timestamp, False, book
                ),
            )
        elif kind is ApplySnapshot:
            # the ``?snapshot=`` book sent as a diff with U == u
            self._apply_snapshot(entry, action)  # type: ignore[arg-type]
        elif kind is NeedSnapshot:
            self._request_depth(entry)
        elif kind is Resync:
            self._book_stale(entry, action.reason)  # type: ignore[union-attr]
            self._request_depth(entry)
        # Buffer / Ignore: nothing to do

    def _on_book_frame(self, snapshot: BookSnapshot) -> None:
        """A book frame naming its symbol: the subscribe snapshot (or a named partial)."""
        entry = self._book_entries.get(snapshot.symbol)
        if entry is None:
            return
        if self.options.book_mode == "partial":
            self._on_partial(entry, snapshot)
            return
        self._on_snapshot(entry, snapshot)

    def _on_snapshot(self, entry: _BookEntry, snapshot: BookSnapshot) -> None:
        action = entry.sync.on_snapshot(snapshot)
        kind = type(action)
        if kind is ApplySnapshot:
            self._forget_depth_request(entry)
            self._apply_snapshot(entry, action)  # type: ignore[arg-type]
        elif kind is SnapshotTooOld:
            log.debug("gemini: {s} snapshot too old; asking again", s=entry.book.symbol)
            self._forget_depth_request(entry)
            self._request_depth(entry)
        # Ignore: synced already, or a stale snapshot

    def _apply_snapshot(self, entry: _BookEntry, action: ApplySnapshot) -> None:
        book = entry.book
        snapshot = action.snapshot
        if snapshot.timestamp is None:
            snapshot = attrs.evolve(snapshot, timestamp=int(self.clock.seconds() * 1000))
        try:
            book.apply_snapshot(snapshot)
            for delta in action.deltas:
                book.apply_delta(delta)
        except ValueError as e:
            self._bad_levels(entry, e)
            return
        problem = entry.sync.verify(book.top)
        if problem is not None:
            self.stats.crossed_books += 1
            self._book_stale(entry, problem.reason)
            self._request_depth(entry)
            return
        self._book_synced(entry)

    def _bad_levels(self, entry: _BookEntry, error: ValueError) -> None:
        # the book marked itself stale; ask for a new book as after a crossed one
        self.stats.malformed += 1
        self._book_stale(entry, f"bad level: {error}")
        self._request_depth(entry)

    def _book_stale(self, entry: _BookEntry, reason: str) -> None:
        self.stats.book_resyncs += 1
        entry.book.mark_stale(reason)
        self.hub.set_not_ready(entry.key)
        log.warn(
            "gemini: {symbol} book resyncing: {reason}", symbol=entry.book.symbol, reason=reason
        )
        self.hub.publish(("status", None), BookResyncing(entry.book.symbol, reason))

    def _book_lost(self, symbol: str, reason: str) -> None:
        entry = self._book_entries.get(symbol)
        if entry is None:
            return
        self._forget_depth_request(entry)
        if self.options.book_mode == "diff":
            entry.sync.reset()
        if entry.book.synced and not entry.book.stale:
            self._book_stale(entry, reason)

    def _book_synced(self, entry: _BookEntry) -> None:
        book = entry.book
        self.hub.set_ready(entry.key)
        self.hub.publish(("status", None), BookSynced(book.symbol, book.nonce))
        full = book.snapshot()
        self.hub.publish(
            entry.key,
            BookUpdate(book.symbol, full.bids, full.asks, book.nonce, book.timestamp, True, book),
        )

    def _request_depth(self, entry: _BookEntry) -> None:
        """Ask for the book with the ``depth`` method on the book's own connection."""
        if entry.fetching is not None or self._closed:
            return
        conn = self.pool.connection_of(entry.topic)
        if conn is None or not conn.is_open:
            return  # the reconnect's subscribe snapshot brings the book back
        self._request_seq += 1
        request_id = f"depth{self._request_seq}"
        market_id = self.market(entry.book.symbol).id
        try:
            conn.send(adapter.depth_message(market_id, request_id))
        except ExchangeError as e:
            log.warn("gemini: cannot ask for the {s} book: {e}", s=entry.book.symbol, e=e)
            return
        self.stats.snapshot_requests += 1
        entry.fetching = request_id
        self._depth_requests[request_id] = entry.book.symbol

        def timed_out() -> None:
            self._timers.discard(call)
            entry.retry_call = None
            if entry.fetching == request_id:
                log.warn("gemini: {s} depth request unanswered; again", s=entry.book.symbol)
                self._forget_depth_request(entry)
                if self._book_entries.get(entry.book.symbol) is entry:
                    self._request_depth(entry)

        call = self.clock.callLater(self.depth_timeout, timed_out)
        entry.retry_call = call
        self._timers.add(call)

    def _forget_depth_request(self, entry: _BookEntry) -> None:
        if entry.fetching is not None:
            self._depth_requests.pop(entry.fetching, None)
            entry.fetching = None
        call = entry.retry_call
        if call is not None:
            entry.retry_call = None
            self._timers.discard(call)
            if call.active():
                call.cancel()

    def _on_reply(self, reply: adapter.GeminiReply) -> None:
        rid = reply.request_id
        symbol = self._depth_requests.pop(rid, None) if type(rid) is str else None
        if symbol is None:
            if not reply.ok:
                self.stats.exchange_errors += 1
                log.warn("gemini: error reply: {e}", e=reply.text())
            else:
                self.stats.unknown_messages += 1
                log.debug("gemini: unexpected reply {rid!r}", rid=rid)
            return
        entry = self._book_entries.get(symbol)
        if entry is None or entry.fetching != rid:
            return
        self._forget_depth_request(entry)
        try:
            snapshot = adapter.parse_depth_reply(symbol, reply)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warn("gemini: bad {s} depth answer: {e}", s=symbol, e=e)
            self._retry_depth(entry)
            return
        except ExchangeError as e:
            self.stats.exchange_errors += 1
            log.warn("gemini: {s} depth request failed: {e}", s=symbol, e=e)
            if isinstance(e, BadSymbol):
                self.hub.fail(entry.key, e)
                return
            self._retry_depth(entry)
            return
        self._on_snapshot(entry, snapshot)

    def _retry_depth(self, entry: _BookEntry) -> None:
        def again() -> None:
            self._timers.discard(call)
            entry.retry_call = None
            if self._book_entries.get(entry.book.symbol) is entry and entry.sync.state == "waiting":
                self._request_depth(entry)

        call = self.clock.callLater(1.0, again)
        entry.retry_call = call
        self._timers.add(call)

    def _on_partial_frame(self, conn: Connection, obj: Any) -> None:
        """A partial-depth frame: whose it is, its connection says."""
        topics = self.partial_pool.topics_of(conn)
        key = self._topic_key.get(topics[0]) if len(topics) == 1 else None
        if key is None or key[0] != "book":
            self.stats.unknown_messages += 1
            return
        entry = self._book_entries.get(key[1])  # type: ignore[arg-type]
        if entry is None:
            return
        try:
            snapshot = adapter.parse_depth_reply(entry.book.symbol, obj)
        except ExchangeError as e:
            self.stats.malformed += 1
            log.warn("gemini: bad partial book: {e}", e=e)
            return
        self._on_partial(entry, snapshot)

    def _on_partial(self, entry: _BookEntry, snapshot: BookSnapshot) -> None:
        book = entry.book
        if snapshot.timestamp is None:
            snapshot = attrs.evolve(snapshot, timestamp=int(self.clock.seconds() * 1000))
        book.apply_snapshot(snapshot)
        if not self.hub.is_ready(entry.key):
            self.hub.set_ready(entry.key)
            self.hub.publish(("status", None), BookSynced(book.symbol, book.nonce))
        self.hub.publish(
            entry.key,
            BookUpdate(
                snapshot.symbol,
                snapshot.bids,
                snapshot.asks,
                snapshot.nonce,
                snapshot.timestamp,
                True,
                book,
            ),
        )

    # -- trades -----------------------------------------------------------------

    def _on_trade(self, trade: Trade) -> None:
        pending = self._pending_trades.get(trade.symbol)
        if pending is not None:
            pending.append(trade)  # REST seed still on its way
            return
        self._publish_trade(trade)

    # -- markets ----------------------------------------------------------------

    def _fetch_markets(self) -> Deferred[MarketIndex]:
        """``/v1/symbols`` then one ``/v1/symbols/details`` per symbol (paced by the
        REST queue at Gemini's 120 a minute), decoded exactly."""

        def details(ids: list[str]) -> Deferred[MarketIndex]:
            ds = [self._request_exact(adapter.symbol_details_request(i)) for i in ids]
            return gatherResults(ds, consumeErrors=True).addCallback(adapter.market_index)

        def unwrap(f: Failure) -> Any:
            inner = getattr(f.value, "subFailure", None)
            return inner if inner is not None else f

        return (
            self.rest.request(adapter.symbols_request())
            .addCallback(adapter.parse_symbols)
            .addCallback(details)
            .addErrback(unwrap)
        )

    def load_markets(self, reload: bool = False, markets: Any = None) -> Deferred[Any]:
        def parser(result: Any) -> Any:
            self._parser = adapter.GeminiParser(self._index)  # type: ignore[arg-type]
            return result

        return super().load_markets(reload, markets).addCallback(parser)

    def _check_timeframe(self, timeframe: str) -> None:
        if timeframe not in adapter.TIMEFRAMES:
            raise BadRequest(
                f"unsupported Gemini timeframe {timeframe!r}; valid: "
                + " ".join(adapter.TIMEFRAMES)
            )

    # -- streams ----------------------------------------------------------------

    def _topic(self, key: Key) -> str:
        channel, symbol = key
        market_id = self.market(symbol).id  # type: ignore[arg-type]
        opts = self.options
        if channel == "book":
            if opts.book_mode == "partial":
                return adapter.partial_depth_topic(market_id, opts.partial_depth, opts.update_speed)
            return adapter.depth_topic(market_id, opts.update_speed)
        if channel == "trades":
            return adapter.trade_topic(market_id)
        return adapter.book_ticker_topic(market_id)

    def _start_stream(self, key: Key) -> None:
        if self._parser is None and self._index is not None:
            self._parser = adapter.GeminiParser(self._index)
        channel, symbol = key
        assert symbol is not None
        market_id = self.market(symbol).id
        opts = self.options
        if channel.startswith("ohlcv:"):
            timeframe = channel[6:]
            self.candles[(symbol, timeframe)] = CandleSeries(symbol, timeframe, opts.candles_limit)
            self._poll_candles(key)
            return
        v1 = self._is_v1(key)
        topic = self._v1_url(market_id) if v1 else self._topic(key)
        if not v1:
            self._topic_key[topic] = key
            self._key_topic[key] = topic
        if channel == "book" and v1:
            pass  # the v1 socket keeps the book (below)
        elif channel == "book":
            book = OrderBook(symbol, opts.book_depth)
            self.books[symbol] = book
            # contiguous=True: the SDK's overlap (U == previous u) and PROTOCOLS.md's
            # contiguous chaining (U == previous u + 1) are both accepted (open item)
            sync = GeminiBookSync(symbol, contiguous=True)
            self._book_entries[symbol] = _BookEntry(book, sync, key, topic)
        elif channel == "trades":
            self.trades[symbol] = TradeBuffer(opts.trades_limit)
            if opts.seed_from_rest:
                self._pending_trades[symbol] = []
                limit = min(opts.trades_limit, 500)
                self.rest.request(adapter.trades_request(market_id, limit)).addBoth(
                    self._trades_seeded, symbol, key
                )
            else:
                self.hub.set_ready(key)
        elif channel == "ticker" and opts.seed_from_rest:
            self.rest.request(adapter.pubticker_request(market_id)).addBoth(
                self._ticker_seeded, key, "pubticker"
            )
            self.rest.request(adapter.ticker_request(market_id)).addBoth(
                self._ticker_seeded, key, "ticker"
            )
        if v1:
            self._v1_add(key, topic)
            return
        pool = self._pool_for(key)
        subscribed = pool.add(topic)
        if channel == "book" and opts.book_mode == "diff":
            subscribed.addCallback(lambda _: self._book_subscribed(symbol))
        subscribed.addErrback(self._subscribe_failed, key)

    def _book_subscribed(self, symbol: str) -> None:
        # The ``?snapshot=-1`` book follows the acknowledgement.  Only a book
        # still waiting is told to expect it (the book frame may have been
        # handled already, and a synced book must not be dropped).
        entry = self._book_entries.get(symbol)
        if entry is None:
            return
        sync = entry.sync
        if sync.state == "waiting" and not sync.buffered and entry.fetching is None:
            sync.expect_snapshot()

    def _trades_seeded(self, result: Any, symbol: str, key: Key) -> None:
        pending = self._pending_trades.pop(symbol, None) or []
        buf = self.trades.get(symbol)
        if buf is None:
            return
        if isinstance(result, Failure):
            log.warn("gemini: {s} trade history unavailable: {e}", s=symbol, e=result.value)
        else:
            try:
                buf.extend(adapter.parse_rest_trades(symbol, result))
            except MalformedMessage as e:
                log.warn("gemini: {s} bad trade history: {e}", s=symbol, e=e)
        for trade in pending:
            self._publish_trade(trade)
        self.hub.set_ready(key)

    def _ticker_seeded(self, result: Any, key: Key, kind: str) -> None:
        if isinstance(result, Failure):
            log.warn("gemini: {k} {kind} seed failed: {e}", k=key, kind=kind, e=result.value)
            return
        if self._closed or key not in self._open:
            return
        symbol = key[1]
        assert symbol is not None
        try:
            if kind == "pubticker":
                ticker = adapter.parse_pubticker(self.market(symbol), result)
            else:
                ticker = adapter.parse_ticker(symbol, result)
        except ExchangeError as e:
            log.warn("gemini: bad {kind} answer: {e}", kind=kind, e=e)
            return
        if symbol in self._streamed_tickers:
            # the stream's best bid/ask is fresher than the REST answer's
            ticker = attrs.evolve(ticker, bid=None, ask=None)
        self._publish_ticker(ticker)

    # -- candles (REST) ---------------------------------------------------------

    def _poll_candles(self, key: Key) -> None:
        self._pollers.pop(key, None)
        if self._closed or key not in self._open:
            return
        req = adapter.candles_request(self.market(key[1]).id, key[0][6:])  # type: ignore[arg-type]
        self._request_exact(req).addBoth(self._candles_arrived, key)

    def _candles_arrived(self, result: Any, key: Key) -> None:
        symbol, timeframe = key[1], key[0][6:]
        series = self.candles.get((symbol, timeframe))  # type: ignore[arg-type]
        if series is None or self._closed or key not in self._open:
            return
        # the next poll first: readiness below may run a caller that closes us
        call = self.clock.callLater(self.candle_poll_interval, self._poll_fire, key)
        self._pollers[key] = call
        self._timers.add(call)
        if isinstance(result, Failure):
            log.warn("gemini: {k} candles unavailable: {e}", k=key, e=result.value)
            return
        try:
            now = int(self.rest.answered_at * 1000)
            rows = adapter.parse_candles(symbol, timeframe, result, now)  # type: ignore[arg-type]
        except ExchangeError as e:
            log.warn("gemini: bad candles answer: {e}", e=e)
            return
        for candle in rows:
            self._publish_candle(candle)
        if not self.hub.is_ready(key):
            self.hub.set_ready(key)

    def _poll_fire(self, key: Key) -> None:
        call = self._pollers.get(key)
        if call is not None:
            self._timers.discard(call)
        self._poll_candles(key)

    def _fetch_ohlcv_history(
        self, symbol: str, timeframe: str, since: int, limit: int | None
    ) -> Deferred[list[list[Any]]]:
        req = adapter.candles_request(self.market(symbol).id, timeframe)
        now = int(self.clock.seconds() * 1000)

        def rows(payload: Any) -> list[list[Any]]:
            candles = adapter.parse_candles(symbol, timeframe, payload, now)
            out = [ohlcv(c) for c in candles if c.timestamp >= since]
            return out[:limit] if limit else out

        return self._request_exact(req).addCallback(rows)

    # -- releasing --------------------------------------------------------------

    def _stop_stream(self, key: Key) -> Deferred[None]:
        if key[0].startswith("ohlcv:"):
            call = self._pollers.pop(key, None)
            if call is not None:
                self._timers.discard(call)
                if call.active():
                    call.cancel()
            self.candles.pop((key[1], key[0][6:]), None)  # type: ignore[arg-type]
            return succeed(None)
        if self._is_v1(key):
            return self._v1_release(key)
        topic = self._forget_stream(key)
        if topic is None:
            return succeed(None)
        return self._pool_for(key).remove(topic)

    def _forget_stream(self, key: Key) -> str | None:
        """Drop the local state of ``key``'s stream; returns its topic (None if not open)."""
        topic = self._key_topic.pop(key, None)
        if topic is None:
            return None
        self._topic_key.pop(topic, None)
        channel, symbol = key
        if channel == "book":
            entry = self._book_entries.pop(symbol, None)  # type: ignore[arg-type]
            if entry is not None:
                self._forget_depth_request(entry)
            self.books.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "trades":
            self.trades.pop(symbol, None)  # type: ignore[arg-type]
            self._pending_trades.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "ticker":
            self.tickers.discard(symbol)  # type: ignore[arg-type]
            self._streamed_tickers.discard(symbol)  # type: ignore[arg-type]
        return topic

    def _shutdown(self) -> Deferred[None]:
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        self._pollers.clear()
        ds = [self.pool.close(), self.partial_pool.close(), self.rest.close()]
        for sock in list(self._v1.values()):
            conn, sock.conn = sock.conn, None
            if conn is not None:
                ds.append(conn.close())
        self._v1.clear()
        ds += [conn.close() for conn in list(self._v1_closing)]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)

    # -- legacy Market Data v1 (api="v1") -----------------------------------------

    def _is_v1(self, key: Key) -> bool:
        return self.api == "v1" and key[0] in ("book", "trades")

    def _v1_url(self, market_id: str) -> str:
        return adapter.v1_url(self.urls["v1"], market_id, heartbeat=True)

    def _v1_add(self, key: Key, url: str) -> None:
        """Open ``key``'s stream on its symbol's v1 socket (opening the socket if needed)."""
        channel, symbol = key
        assert symbol is not None
        sock = self._v1.get(symbol)
        if sock is None:
            sock = _V1Socket(symbol, url, self.options.book_depth)
            self._v1[symbol] = sock
            self._v1_connect(sock)
        sock.channels.add(channel)
        if channel == "book":
            self.books[symbol] = sock.book
            entry = _BookEntry(sock.book, sock.sync, key, url)
            sock.entry = entry
            if sock.book.synced and not sock.book.stale:
                self._book_synced(entry)

    def _v1_connect(self, sock: _V1Socket) -> None:
        conn: Connection

        def on_message(obj: Any) -> None:
            self._on_v1_message(sock, conn, obj)

        def on_status(event: StatusEvent) -> None:
            self._on_v1_status(sock, conn, event)

        conn = Connection(
            sock.url,
            self.v1_rules,
            on_message=on_message,
            on_status=on_status,
            reactor=self.reactor,
            clock=self.clock,
            options=self.transport_options,
            rng=self._rng,
        )
        sock.sync.reset()
        sock.conn = conn
        conn.start()

    def _v1_release(self, key: Key) -> Deferred[None]:
        """Forget ``key``'s stream; the socket closes with its last stream."""
        channel, symbol = key
        assert symbol is not None
        sock = self._v1.get(symbol)
        if channel == "book":
            self.books.pop(symbol, None)
        else:
            self.trades.pop(symbol, None)
            self._pending_trades.pop(symbol, None)
        if sock is None:
            return succeed(None)
        sock.channels.discard(channel)
        if channel == "book":
            sock.entry = None
        if sock.channels:
            return succeed(None)
        del self._v1[symbol]
        conn, sock.conn = sock.conn, None
        return conn.close() if conn is not None else succeed(None)

    def _on_v1_status(self, sock: _V1Socket, conn: Connection, event: StatusEvent) -> None:
        if sock.conn is not conn:
            return  # a socket replaced after a gap, closing
        self.hub.publish(("status", None), event)
        if isinstance(event, Connected):
            sock.sync.reset()  # sequence 0 and a new ``initial`` book come next
        elif isinstance(event, Disconnected):
            sock.sync.reset()
            self._v1_book_lost(sock, "disconnected: " + event.reason)
        elif isinstance(event, RetriesExhaustedEvent):
            error = event.error or ExchangeError("retries exhausted")
            for channel in sorted(sock.channels):
                self._stream_failed((channel, sock.symbol), error)

    def _v1_book_lost(self, sock: _V1Socket, reason: str) -> None:
        book = sock.book
        if not book.synced or book.stale:
            return
        if sock.entry is not None:
            self._book_stale(sock.entry, reason)
        else:
            book.mark_stale(reason)

    def _on_v1_message(self, sock: _V1Socket, conn: Connection, obj: Any) -> None:
        if sock.conn is not conn:
            return  # the rest of a socket replaced after a gap
        try:
            message = sock.parser.parse(obj)
        except MalformedMessage as e:
            # its socket_sequence is lost with it: the next message shows the gap
            self.stats.malformed += 1
            log.warn("gemini: malformed v1 message: {e}", e=e)
            return
        if type(message) is Unknown:
            self.stats.unknown_messages += 1
            log.debug("gemini: {reason}", reason=message.reason)  # type: ignore[union-attr]
            return
        if type(message) is V1Update and message.trades and "trades" in sock.channels:
            for trade in message.trades:  # type: ignore[union-attr]
                self._on_trade(trade)
        action = sock.sync.on_message(message)  # type: ignore[arg-type]
        kind = type(action)
        book = sock.book
        entry = sock.entry
        if kind is ApplyDelta:
            delta = action.delta  # type: ignore[union-attr]
            book.apply_delta(delta)
            if entry is not None and not book.stale:
                self.hub.publish(
                    entry.key,
                    BookUpdate(
                        delta.symbol,
                        delta.bids,
                        delta.asks,
                        delta.nonce,
                        delta.timestamp,
                        False,
                        book,
                    ),
                )
        elif kind is ApplySnapshot:
            snapshot = action.snapshot  # type: ignore[union-attr]
            if snapshot.timestamp is None:
                snapshot = attrs.evolve(snapshot, timestamp=int(self.clock.seconds() * 1000))
            book.apply_snapshot(snapshot)
            for delta in action.deltas:  # type: ignore[union-attr]
                book.apply_delta(delta)
            if entry is not None:
                self._book_synced(entry)
        elif kind is Reconnect:
            self._v1_reconnect(sock, action.reason)  # type: ignore[union-attr]
        # Ignore: heartbeats, trade-only updates

    def _v1_reconnect(self, sock: _V1Socket, reason: str) -> None:
        """Data was missed: mark the book stale, replace the socket (a new ``initial`` book)."""
        self.stats.v1_reconnects += 1
        log.warn("gemini: {s} v1 socket {r}; reconnecting", s=sock.symbol, r=reason)
        self._v1_book_lost(sock, reason)
        old, sock.conn = sock.conn, None
        if old is not None:
            self._v1_closing.add(old)
            old.close().addBoth(lambda _: self._v1_closing.discard(old))
        if not self._closed and self._v1.get(sock.symbol) is sock:
            self._v1_connect(sock)
