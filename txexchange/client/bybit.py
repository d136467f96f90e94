"""Bybit v5 spot and linear: one connection kind per category, books kept by ``u``.

Sits in the client layer: wires the Bybit adapter (:mod:`txexchange.adapters.bybit`:
URLs, topics, wire rules per connection kind, parsing, the ticker merger, REST
request descriptions; and :mod:`txexchange.adapters.bybit_book`: the pure
``u``/snapshot state machine) to connections, REST and the state layer.

Bybit serves each category on its own URL and its topics do not name the
category, so spot (``BTC/USDT``) and linear (``BTC/USDT:USDT``) symbols go over
separate connection pools, each with its own parser over its own market index.
Books are Bybit's ``orderbook.{depth}`` streams: a snapshot on subscribe, then
deltas, truncated to the subscribed depth (``book_mode="diff"``: depth 200;
``"partial"``: depth 50, or 1 with ``partial_depth=1``).  A book found
inconsistent is resynced by unsubscribing and subscribing the topic again --
the REST book cannot be joined to those streams.  The ``system.status``
maintenance stream is watched on its own connection and its records are
published as status events.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters import bybit as adapter
from txexchange.adapters.bybit_book import (
    ApplyDelta,
    ApplySnapshot,
    BybitBookMessage,
    BybitBookSync,
    Resync,
)
from txexchange.adapters.rest import RestRequest
from txexchange.client.base import ClientOptions, ExchangeClient
from txexchange.client.pool import StreamPool
from txexchange.client.rest import RestClient
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.delivery.hub import Key
from txexchange.errors import (
    BadRequest,
    ExchangeError,
    MalformedMessage,
    ProtocolViolation,
)
from txexchange.events import Candle, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.state import CandleSeries, OrderBook, TradeBuffer, ohlcv
from txexchange.transport import (
    Connection,
    Disconnected,
    RetriesExhaustedEvent,
    StatusEvent,
    TransportOptions,
)

__all__ = ["DIFF_DEPTH", "REST_WINDOW", "BybitClient", "BybitStats"]

log = Logger()

#: depth of the ``orderbook`` stream in ``book_mode="diff"``
DIFF_DEPTH = 200
#: Bybit's REST IP limit is 600 requests per 5 s window
REST_WINDOW = 5.0
_REST_PER_WINDOW = 600
#: how often depth-1 books are checked for silence (s)
SILENCE_CHECK_INTERVAL = 1.0
#: most pages of the linear instrument list followed
_MAX_PAGES = 50

_CATEGORIES = ("spot", "linear")


class BybitStats:
    """Counters of a client (read by the service's metrics)."""

    __slots__ = (
        "book_resyncs",
        "exchange_errors",
        "maintenance_notices",
        "malformed",
        "resubscribes",
        "silence_resyncs",
        "unknown_messages",
    )

    def __init__(self) -> None:
        self.book_resyncs = 0
        #: unsubscribe + subscribe rounds that resynced a book
        self.resubscribes = 0
        #: depth-1 books resynced because they went quiet
        self.silence_resyncs = 0
        self.malformed = 0
        self.unknown_messages = 0
        #: ``{"success": false}`` answers not consumed as a request's reply
        self.exchange_errors = 0
        #: ``system.status`` records received
        self.maintenance_notices = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _Pools:
    """The spot, linear and status pools seen as one (``client.pool.connections``)."""

    def __init__(self, pools: Mapping[str, StreamPool]) -> None:
        self.pools = pools

    @property
    def connections(self) -> list[Connection]:
        return [c for pool in self.pools.values() for c in pool.connections]

    def __len__(self) -> int:
        return sum(len(p) for p in self.pools.values())

    def close(self) -> Deferred[None]:
        ds = [p.close() for p in self.pools.values()]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)


class _BookEntry:
    __slots__ = ("book", "category", "key", "resubscribing", "sync", "topic")

    def __init__(
        self, book: OrderBook, sync: BybitBookSync, key: Key, topic: str, category: str
    ) -> None:
        self.book = book
        self.sync = sync
        self.key = key
        self.topic = topic
        self.category = category
        #: an unsubscribe + subscribe of the topic is under way
        self.resubscribing = False


class BybitClient(ExchangeClient):
    """Bybit v5 spot and linear market data.

    URL keys for ``urls=``: ``spot``, ``linear``, ``status`` (``system.status``),
    ``private`` (the account stream) and ``rest``.  Spot symbols are
    ``BASE/QUOTE``, linear ones ``BASE/QUOTE:SETTLE`` (futures
    ``BASE/QUOTE:SETTLE-YYMMDD``).
    ``watch_system_status`` subscribes ``system.status`` once the first market
    stream opens; its :class:`~txexchange.adapters.bybit.Maintenance` records
    reach ``"status"`` observers.  ``rest_tap`` is handed to the
    :class:`~txexchange.client.rest.RestClient`.
    """

    name = "bybit"

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
        watch_system_status: bool = True,
    ) -> None:
        super().__init__(reactor=reactor, clock=clock, options=options, transport=transport)
        self.urls = adapter.resolve_urls(urls)
        opts = self.options
        if opts.book_mode == "diff":
            self.book_stream_depth = DIFF_DEPTH
        elif opts.partial_depth == 1:
            self.book_stream_depth = 1
        elif opts.partial_depth <= 50:
            self.book_stream_depth = 50
        else:
            raise BadRequest(
                f"Bybit partial_depth must be 1 or at most 50, not {opts.partial_depth}"
            )
        self._rng = rng
        self._watch_status = watch_system_status
        per_window = min(_REST_PER_WINDOW, int(opts.weight_limit * REST_WINDOW / 60))
        self.rest = RestClient(
            self.urls["rest"],
            reactor=self.reactor,
            clock=self.clock,
            http_client=http_client,
            trust_root=self.transport_options.trust_root,
            parse_error=adapter.parse_rest_error,
            weight_limit=max(1, per_window),
            weight_window=REST_WINDOW,
            tap=rest_tap,
            timeout=self.options.rest_timeout,
        )
        self.rules = {kind: adapter.BybitWireRules(kind) for kind in ("spot", "linear", "status")}
        self.pools: dict[str, StreamPool] = {
            kind: StreamPool(
                (lambda k=kind: self._new_connection(k)),  # type: ignore[misc]
                self.rules[kind].max_topics_per_connection,
            )
            for kind in ("spot", "linear", "status")
        }
        #: every pool (``pool.connections`` lists every connection)
        self.pool = _Pools(self.pools)
        self.stats = BybitStats()
        #: one market index per category (ids repeat across categories)
        self.indexes: dict[str, MarketIndex] = {}
        self._parsers: dict[str, adapter.BybitParser] = {}
        self._category: dict[str, str] = {}
        self._mergers: dict[int, adapter.BybitTickerMerger] = {}
        self._book_entries: dict[str, _BookEntry] = {}
        self._topic_key: dict[tuple[str, str], Key] = {}
        self._key_topic: dict[Key, tuple[str, str]] = {}
        self._pending_trades: dict[str, list[Trade]] = {}
        self._timers: set[Any] = set()
        self._silence_call: Any = None
        self._status_started = False
        #: the ``system.status`` records received, by id (latest state)
        self.maintenance: dict[str, adapter.Maintenance] = {}
        if markets is not None:
            self._index = self._adopt(markets)

    # -- private ----------------------------------------------------------------

    def _account_backend(self) -> Any:
        from txexchange.client.bybit_account import BybitAccountBackend

        return BybitAccountBackend(self, self.credentials)

    # -- markets ----------------------------------------------------------------

    def _install(self, spot: MarketIndex, linear: MarketIndex) -> MarketIndex:
        """Keep the per-category indexes and parsers; return the combined index."""
        self.indexes = {"spot": spot, "linear": linear}
        self._parsers = {
            "spot": adapter.BybitParser(spot),
            "linear": adapter.BybitParser(linear),
            "status": adapter.BybitParser(spot),
        }
        by_symbol: dict[str, Market] = {}
        by_id: dict[str, Market] = {}
        self._category = {}
        for category, index in (("spot", spot), ("linear", linear)):
            for market in index:
                by_symbol.setdefault(market.symbol, market)
                by_id.setdefault(market.id, market)  # spot first: ids repeat
                self._category.setdefault(market.symbol, category)
        return MarketIndex(by_symbol, by_id, self.name)

    def _adopt(self, markets: Iterable[Market] | MarketIndex) -> MarketIndex:
        spot: list[Market] = []
        linear: list[Market] = []
        for market in markets:
            (linear if adapter.category_of(market.symbol) == "linear" else spot).append(market)
        return self._install(
            MarketIndex.from_markets(spot, self.name), MarketIndex.from_markets(linear, self.name)
        )

    def load_markets(
        self, reload: bool = False, markets: Iterable[Market] | None = None
    ) -> Deferred[dict[str, Market]]:
        """Spot and linear markets (linear followed page by page), or ``markets`` given."""
        if markets is not None:
            self._index = self._adopt(markets)
            return succeed(self.markets)
        return super().load_markets(reload)

    def _fetch_markets(self) -> Deferred[MarketIndex]:
        return ensureDeferred(self._load_markets())

    async def _load_markets(self) -> MarketIndex:
        spot = await self.rest.request(adapter.instruments_request("spot"))
        pages = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await self.rest.request(adapter.instruments_request("linear", cursor=cursor))
            pages.append(page)
            cursor = adapter.next_cursor(page)
            if cursor is None:
                break
        return self._install(
            adapter.market_index(spot, category="spot"),
            adapter.market_index(*pages, category="linear"),
        )

    def category(self, symbol: str) -> str:
        """``"spot"`` or ``"linear"``: the category (and connection kind) of ``symbol``."""
        found = self._category.get(symbol)
        return found if found is not None else adapter.category_of(symbol)

    def _check_timeframe(self, timeframe: str) -> None:
        if timeframe not in adapter.TIMEFRAMES:
            raise BadRequest(
                f"unsupported Bybit timeframe {timeframe!r}; valid: " + " ".join(adapter.TIMEFRAMES)
            )

    # -- connections ------------------------------------------------------------

    def _new_connection(self, kind: str) -> Connection:
        cell: list[Connection] = []

        def on_status(event: StatusEvent) -> None:
            self._on_status(kind, cell[0], event)

        def on_message(obj: Any) -> None:
            self._on_message(kind, cell[0], obj)

        conn = Connection(
            self.urls[kind],
            self.rules[kind],
            on_message=on_message,
            on_status=on_status,
            reactor=self.reactor,
            clock=self.clock,
            options=self.transport_options,
            rng=self._rng,
        )
        cell.append(conn)
        self._mergers[id(conn)] = adapter.BybitTickerMerger()
        return conn

    def _on_status(self, kind: str, conn: Connection, event: StatusEvent) -> None:
        # the connection's event first, then what it caused (resyncs, failed streams)
        self.hub.publish(("status", None), event)
        pool = self.pools[kind]
        if isinstance(event, Disconnected):
            merger = self._mergers.get(id(conn))
            if merger is not None:
                merger.reset()  # linear deltas need a fresh snapshot after a reconnect
            for topic in pool.topics_of(conn):
                key = self._topic_key.get((kind, topic))
                if key is not None and key[0] == "book":
                    self._book_lost(key[1], conn, "disconnected: " + event.reason)  # type: ignore[arg-type]
        elif isinstance(event, RetriesExhaustedEvent):
            error = event.error or ExchangeError("retries exhausted")
            # The connection is gone for good: new streams go to a new one, and
            # the streams it carried fail (a later call opens them again).
            for topic in pool.retire(conn):
                key = self._topic_key.get((kind, topic))
                if key is not None:
                    self._stream_failed(key, error)
            if kind == "status":
                self._status_started = False

    def _stream_failed(self, key: Key, error: Exception) -> None:
        """``key`` cannot be served: forget it, tell status observers, fail its waiters."""
        if key in self._open:
            self._open.discard(key)
            self.hub.set_not_ready(key)
            where = self._forget_stream(key)
            if where is not None:
                self.pools[where[0]].discard(where[1])
        self.hub.publish(("status", None), StreamFailed(key[0], key[1], error))
        self.hub.fail(key, error)

    # -- the hot path -----------------------------------------------------------

    def _on_message(self, kind: str, conn: Connection, obj: Any) -> None:
        parser = self._parsers.get(kind)
        if parser is None:
            return
        try:
            result = parser.parse(obj)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warn("bybit: malformed {kind} message: {e}", kind=kind, e=e)
            return
        if type(result) is list:
            for event in result:
                k = type(event)
                if k is BybitBookMessage:
                    self._on_book_message(event)
                elif k is Trade:
                    self._on_trade(event)
                elif k is adapter.BybitTickerMessage:
                    self._on_ticker(conn, event)
                elif k is Candle:
                    self._publish_candle(event)
                elif k is adapter.Maintenance:
                    self._on_maintenance(event)
        elif type(result) is adapter.BybitError:
            self.stats.exchange_errors += 1
            log.warn(
                "bybit: {op} refused on {url}: {msg}",
                op=result.op,
                url=conn.url,
                msg=result.message,
            )
        elif type(result) is Unknown:
            self.stats.unknown_messages += 1
            log.debug("bybit: {reason}", reason=result.reason)
        elif type(result) is ServerShutdown:  # Bybit documents none; kept for safety
            log.info("bybit: {r}; rolling {url} over", r=result.reason, url=conn.url)
            conn.rollover().addErrback(self._rollover_failed, conn)
        # ControlReply (an acknowledgement the transport did not match) and PONG need nothing

    def _rollover_failed(self, failure: Failure, conn: Connection) -> None:
        if not self._closed:
            log.warn("bybit: rollover of {url} failed: {e}", url=conn.url, e=failure.value)

    def _on_maintenance(self, record: adapter.Maintenance) -> None:
        self.stats.maintenance_notices += 1
        self.maintenance[record.id] = record
        affected = [c for c in _CATEGORIES if record.affects_market_data(c)]
        if affected:
            log.warn(
                "bybit: maintenance {state} ({title}) affects {cats} market data, {begin}..{end}",
                state=record.state,
                title=record.title,
                cats="/".join(affected),
                begin=record.begin,
                end=record.end,
            )
        else:
            log.info(
                "bybit: system status {state}: {title}", state=record.state, title=record.title
            )
        self.hub.publish(("status", None), record)

    # -- books ------------------------------------------------------------------

    def _on_book_message(self, message: BybitBookMessage) -> None:
        entry = self._book_entries.get(message.event.symbol)
        if entry is None or message.depth != entry.sync.depth:
            return
        try:
            action = entry.sync.on_message(message, self.clock.seconds())
        except (ProtocolViolation, BadRequest) as e:
            self.stats.malformed += 1
            log.warn("bybit: {s} book message refused: {e}", s=entry.book.symbol, e=e)
            return
        kind = type(action)
        book = entry.book
        if kind is ApplyDelta:
            delta = action.delta  # type: ignore[union-attr]
            try:
                book.apply_delta(delta)
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            book.truncate(action.depth)  # type: ignore[union-attr]
            resync = entry.sync.verify(book.top)
            if resync is not None:
                self._resync(entry, resync.reason)
                return
            self.hub.publish(
                entry.key,
                BookUpdate(
                    delta.symbol, delta.bids, delta.asks, delta.nonce, delta.timestamp, False, book
                ),
            )
        elif kind is ApplySnapshot:
            snapshot = action.snapshot  # type: ignore[union-attr]
            if action.restart:  # type: ignore[union-attr]
                log.info("bybit: {s} service restarted (u == 1)", s=book.symbol)
            try:
                book.apply_snapshot(snapshot)
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            entry.sync.verify(book.top)  # arms the crossed-book check
            entry.resubscribing = False
            if not self.hub.is_ready(entry.key):
                self.hub.set_ready(entry.key)
                self.hub.publish(("status", None), BookSynced(book.symbol, book.nonce))
            full = book.snapshot()
            self.hub.publish(
                entry.key,
                BookUpdate(
                    book.symbol, full.bids, full.asks, book.nonce, book.timestamp, True, book
                ),
            )
        elif kind is Resync:
            self._resync(entry, action.reason)  # type: ignore[union-attr]
        # Ignore: a stale snapshot, or a late delta while waiting for a snapshot

    def _bad_levels(self, entry: _BookEntry, error: ValueError) -> None:
        self.stats.malformed += 1
        entry.sync.reset()
        self._resync(entry, f"bad level: {error}")

    def _resync(self, entry: _BookEntry, reason: str) -> None:
        self._book_stale(entry, reason)
        self._resubscribe(entry)

    def _book_stale(self, entry: _BookEntry, reason: str) -> None:
        self.stats.book_resyncs += 1
        entry.book.mark_stale(reason)
        self.hub.set_not_ready(entry.key)
        log.warn("bybit: {s} book resyncing: {reason}", s=entry.book.symbol, reason=reason)
        self.hub.publish(("status", None), BookResyncing(entry.book.symbol, reason))

    def _book_lost(self, symbol: str, conn: Connection, reason: str) -> None:
        # the connection dropped: it subscribes again on reconnect, and that
        # subscription's snapshot resyncs the book
        entry = self._book_entries.get(symbol)
        if entry is None:
            return
        entry.sync.reset()
        if entry.resubscribing:
            entry.resubscribing = False
            if entry.topic not in conn.topics:
                # dropped between the unsubscribe and the subscribe: hold it again
                # (the reconnect subscribes it)
                conn.subscribe([entry.topic]).addErrback(self._subscribe_failed, entry.key)
        if entry.book.synced and not entry.book.stale:
            self._book_stale(entry, reason)

    def _resubscribe(self, entry: _BookEntry) -> None:
        """Unsubscribe the book's topic and, once Bybit acknowledged, subscribe it again:
        the new subscription starts with a snapshot."""
        if entry.resubscribing or self._closed:
            return
        pool = self.pools[entry.category]
        conn = pool.connection_of(entry.topic)
        if conn is None or not conn.is_open or entry.topic not in conn.topics:
            return  # reconnecting: the transport subscribes again by itself
        entry.resubscribing = True
        self.stats.resubscribes += 1
        topic = entry.topic

        def current() -> bool:
            return (
                not self._closed
                and self._book_entries.get(entry.book.symbol) is entry
                and pool.connection_of(topic) is conn
            )

        def again(_: Any) -> Deferred[None] | None:
            if not current():
                return None
            return conn.subscribe([topic])

        def done(result: Any) -> None:
            if not current():
                return
            if isinstance(result, Failure):
                entry.resubscribing = False
                error = result.value
                if not isinstance(error, ExchangeError):
                    error = ExchangeError(str(error))
                log.error("bybit: cannot resubscribe {t}: {e}", t=topic, e=error)
                self._stream_failed(entry.key, error)

        conn.unsubscribe([topic]).addBoth(again).addBoth(done)

    def _schedule_silence_check(self) -> None:
        if self._silence_call is not None or self._closed:
            return
        if not any(e.sync.silence_timeout is not None for e in self._book_entries.values()):
            return

        def check() -> None:
            self._timers.discard(call)
            self._silence_call = None
            now = self.clock.seconds()
            for entry in list(self._book_entries.values()):
                resync = entry.sync.check_silence(now)
                if resync is not None:
                    self.stats.silence_resyncs += 1
                    self._resync(entry, resync.reason)
            self._schedule_silence_check()

        call = self.clock.callLater(SILENCE_CHECK_INTERVAL, check)
        self._silence_call = call
        self._timers.add(call)

    # -- trades and tickers -------------------------------------------------------

    def _on_trade(self, trade: Trade) -> None:
        pending = self._pending_trades.get(trade.symbol)
        if pending is not None:
            pending.append(trade)  # REST seed still on its way
            return
        self._publish_trade(trade)

    def _on_ticker(self, conn: Connection, message: adapter.BybitTickerMessage) -> None:
        if ("ticker", message.symbol) not in self._open:
            return
        merger = self._mergers.get(id(conn))
        if merger is None:
            return
        try:
            ticker = merger.on_message(message)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warn("bybit: bad ticker: {e}", e=e)
            return
        if ticker is not None:
            self._publish_ticker(ticker)

    # -- streams ----------------------------------------------------------------

    def _topic(self, key: Key) -> str:
        channel, symbol = key
        market_id = self.market(symbol).id  # type: ignore[arg-type]
        if channel == "book":
            return adapter.orderbook_topic(market_id, self.book_stream_depth)
        if channel == "trades":
            return adapter.trade_topic(market_id)
        if channel == "ticker":
            return adapter.ticker_topic(market_id)
        return adapter.kline_topic(market_id, channel[6:])

    def _start_status_stream(self) -> None:
        if self._status_started or not self._watch_status or self._closed:
            return
        self._status_started = True

        def failed(f: Failure) -> None:
            if not self._closed:
                log.warn("bybit: cannot watch system.status: {e}", e=f.value)

        self.pools["status"].add(adapter.SYSTEM_STATUS_TOPIC).addErrback(failed)

    def _start_stream(self, key: Key) -> None:
        if not self._parsers and self._index is not None:
            self._index = self._adopt(self._index)
        channel, symbol = key
        assert symbol is not None
        category = self.category(symbol)
        topic = self._topic(key)
        self._topic_key[(category, topic)] = key
        self._key_topic[key] = (category, topic)
        market_id = self.market(symbol).id
        opts = self.options
        if channel == "book":
            book = OrderBook(symbol, opts.book_depth)
            self.books[symbol] = book
            sync = BybitBookSync(symbol, self.book_stream_depth)
            self._book_entries[symbol] = _BookEntry(book, sync, key, topic, category)
            self._schedule_silence_check()
        elif channel == "trades":
            self.trades[symbol] = TradeBuffer(opts.trades_limit)
            if opts.seed_from_rest:
                self._pending_trades[symbol] = []
                most = 60 if category == "spot" else 1000
                req = adapter.trades_request(category, market_id, min(opts.trades_limit, most))
                self.rest.request(req).addBoth(self._trades_seeded, symbol, key)
            else:
                self.hub.set_ready(key)
        elif channel == "ticker":
            if opts.seed_from_rest:
                self.rest.request(adapter.ticker_request(category, market_id)).addBoth(
                    self._ticker_seeded, key, category
                )
        else:
            timeframe = channel[6:]
            self.candles[(symbol, timeframe)] = CandleSeries(symbol, timeframe, opts.candles_limit)
            if opts.seed_from_rest:
                limit = min(opts.candles_limit, 1000)
                req = adapter.candles_request(category, market_id, timeframe, limit=limit)
                self.rest.request(req).addBoth(self._candles_seeded, symbol, timeframe, key)
            else:
                self.hub.set_ready(key)
        self.pools[category].add(topic).addErrback(self._subscribe_failed, key)
        self._start_status_stream()

    def _trades_seeded(self, result: Any, symbol: str, key: Key) -> None:
        pending = self._pending_trades.pop(symbol, None) or []
        buf = self.trades.get(symbol)
        if buf is None:
            return
        if isinstance(result, Failure):
            log.warn("bybit: {s} trade history unavailable: {e}", s=symbol, e=result.value)
        else:
            try:
                buf.extend(adapter.parse_rest_trades(symbol, result))
            except ExchangeError as e:
                log.warn("bybit: {s} bad trade history: {e}", s=symbol, e=e)
        for trade in pending:
            self._publish_trade(trade)
        self.hub.set_ready(key)

    def _ticker_seeded(self, result: Any, key: Key, category: str) -> None:
        if isinstance(result, Failure):
            log.warn("bybit: {k} ticker seed failed: {e}", k=key, e=result.value)
            return
        if key not in self._open:
            return
        try:
            tickers = adapter.parse_tickers(result, self.indexes[category])
        except ExchangeError as e:
            log.warn("bybit: bad ticker answer: {e}", e=e)
            return
        for ticker in tickers:
            if ticker.symbol == key[1] and self.tickers.get(ticker.symbol) is None:
                self._publish_ticker(ticker)

    def _candles_seeded(self, result: Any, symbol: str, timeframe: str, key: Key) -> None:
        series = self.candles.get((symbol, timeframe))
        if series is None:
            return
        if isinstance(result, Failure):
            log.warn(
                "bybit: {s} {tf} candle history unavailable: {e}",
                s=symbol,
                tf=timeframe,
                e=result.value,
            )
        else:
            try:
                now = int(self.rest.answered_at * 1000)
                history = adapter.parse_candles(symbol, timeframe, result, now)
            except ExchangeError as e:
                log.warn("bybit: bad kline answer: {e}", e=e)
                history = []
            forming = series.forming
            for candle in history:
                if forming is None or candle.timestamp < forming.timestamp:
                    series.update(candle)
            if forming is not None:
                series.update(forming)
        self.hub.set_ready(key)

    def _stop_stream(self, key: Key) -> Deferred[None]:
        where = self._forget_stream(key)
        if where is None:
            return succeed(None)
        category, topic = where
        return self.pools[category].remove(topic)

    def _forget_stream(self, key: Key) -> tuple[str, str] | None:
        """Drop the local state of ``key``'s stream; returns its (category, topic)."""
        where = self._key_topic.pop(key, None)
        if where is None:
            return None
        self._topic_key.pop(where, None)
        channel, symbol = key
        if channel == "book":
            self._book_entries.pop(symbol, None)  # type: ignore[arg-type]
            self.books.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "trades":
            self.trades.pop(symbol, None)  # type: ignore[arg-type]
            self._pending_trades.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "ticker":
            self.tickers.discard(symbol)  # type: ignore[arg-type]
            conn = self.pools[where[0]].connection_of(where[1])
            merger = self._mergers.get(id(conn)) if conn is not None else None
            if merger is not None:
                merger.reset(symbol)
        else:
            self.candles.pop((symbol, channel[6:]), None)  # type: ignore[arg-type]
        return where

    def _fetch_ohlcv_history(
        self, symbol: str, timeframe: str, since: int, limit: int | None
    ) -> Deferred[list[list[Any]]]:
        n = min(limit or 200, 1000)
        req = adapter.candles_request(
            self.category(symbol), self.market(symbol).id, timeframe, start=since, limit=n
        )
        now = int(self.clock.seconds() * 1000)

        def rows(payload: Any) -> list[list[Any]]:
            candles = adapter.parse_candles(symbol, timeframe, payload, now)
            return [ohlcv(c) for c in candles if c.timestamp >= since][:n]

        return self.rest.request(req).addCallback(rows)

    def _shutdown(self) -> Deferred[None]:
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        self._silence_call = None
        ds = [self.pool.close(), self.rest.close()]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)
