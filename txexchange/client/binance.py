"""Binance spot: combined-stream connections, books kept by the documented procedure.

Sits in the client layer: wires the Binance adapter
(:mod:`txexchange.adapters.binance`: stream names, parsing, the pure book-sync
state machine, REST request descriptions) to connections, REST and the state
layer.  Books are built from ``@depth@100ms`` diffs plus a REST snapshot
(``book_mode="diff"``, the default) or taken from the partial-depth stream
(``book_mode="partial"``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters import binance as adapter
from txexchange.adapters.binance_book import (
    ApplyDelta,
    ApplySnapshot,
    BinanceBookSync,
    NeedSnapshot,
    Resync,
    SnapshotTooOld,
)
from txexchange.adapters.rest import RestRequest
from txexchange.client.base import ClientOptions, ExchangeClient
from txexchange.client.pool import StreamPool
from txexchange.client.rest import RestClient
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.delivery.hub import Key
from txexchange.errors import BadRequest, BadSymbol, ExchangeError, MalformedMessage
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.state import CandleSeries, OrderBook, TradeBuffer, ohlcv
from txexchange.transport import (
    Connection,
    Disconnected,
    RetriesExhaustedEvent,
    StatusEvent,
    TransportOptions,
)

__all__ = ["BinanceClient", "ClientStats"]

log = Logger()


class ClientStats:
    """Counters of a client (read by the service's metrics)."""

    __slots__ = ("book_resyncs", "malformed", "snapshot_requests", "unknown_messages")

    def __init__(self) -> None:
        self.book_resyncs = 0
        self.snapshot_requests = 0
        self.malformed = 0
        self.unknown_messages = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _BookEntry:
    __slots__ = ("book", "fetching", "key", "retry_call", "sync", "topic")

    def __init__(self, book: OrderBook, sync: BinanceBookSync, key: Key, topic: str) -> None:
        self.book = book
        self.sync = sync
        self.key = key
        self.topic = topic
        self.fetching = False
        self.retry_call: Any = None


class BinanceClient(ExchangeClient):
    """Binance spot market data.  URL keys for ``urls=``: ``ws``, ``rest``, ``ws_api``.

    ``rest_tap`` is handed to the :class:`~txexchange.client.rest.RestClient`
    (called with every answer of an unsigned REST request; the recorder uses it).
    """

    name = "binance"

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
    ) -> None:
        super().__init__(
            reactor=reactor, clock=clock, options=options, transport=transport, markets=markets
        )
        self.urls = adapter.resolve_urls(urls)
        opts = self.options
        if opts.book_mode == "partial" and opts.partial_depth not in (5, 10, 20):
            raise BadRequest(f"Binance partial_depth must be 5, 10 or 20, not {opts.partial_depth}")
        if opts.update_speed not in (100, 1000):
            raise BadRequest(
                f"Binance update_speed must be 100 or 1000 ms, not {opts.update_speed}"
            )
        adapter.depth_weight(opts.snapshot_limit)  # validates the limit
        self.rules = adapter.BinanceWireRules()
        self._rng = rng
        self.rest = RestClient(
            self.urls["rest"],
            reactor=self.reactor,
            clock=self.clock,
            http_client=http_client,
            trust_root=self.transport_options.trust_root,
            parse_error=adapter.parse_rest_error,
            used_weight=adapter.used_weight,
            weight_limit=opts.weight_limit,
            tap=rest_tap,
            timeout=self.options.rest_timeout,
        )
        self.pool = StreamPool(self._new_connection, self.rules.max_topics_per_connection)
        self.stats = ClientStats()
        self._parser: adapter.BinanceParser | None = None
        self._book_entries: dict[str, _BookEntry] = {}
        self._topic_key: dict[str, Key] = {}
        self._key_topic: dict[Key, str] = {}
        self._pending_trades: dict[str, list[Trade] | None] = {}
        self._timers: set[Any] = set()

    # -- private ----------------------------------------------------------------

    def _account_backend(self) -> Any:
        from txexchange.client.binance_account import BinanceAccountBackend

        return BinanceAccountBackend(self, self.credentials)

    # -- connections ------------------------------------------------------------

    def _new_connection(self) -> Connection:
        cell: list[Connection] = []

        def on_status(event: StatusEvent) -> None:
            self._on_status(cell[0], event)

        def on_message(obj: Any) -> None:
            self._on_message(cell[0], obj)

        conn = Connection(
            adapter.combined_stream_url(self.urls["ws"]),
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

    def _on_status(self, conn: Connection, event: StatusEvent) -> None:
        # the connection's event first, then what it caused (resyncs, failed streams)
        self.hub.publish(("status", None), event)
        if isinstance(event, Disconnected):
            for topic in self.pool.topics_of(conn):
                key = self._topic_key.get(topic)
                if key is not None and key[0] == "book":
                    self._book_lost(key[1], "disconnected: " + event.reason)  # type: ignore[arg-type]
        elif isinstance(event, RetriesExhaustedEvent):
            error = event.error or ExchangeError("retries exhausted")
            # The connection is gone for good: new streams go to a new one, and
            # the streams it carried fail (a later call opens them again).
            for topic in self.pool.retire(conn):
                key = self._topic_key.get(topic)
                if key is not None:
                    self._stream_failed(key, error)

    def _stream_failed(self, key: Key, error: Exception) -> None:
        """``key`` cannot be served: forget it, tell status observers, fail its waiters."""
        if key in self._open:
            self._open.discard(key)
            self.hub.set_not_ready(key)
            topic = self._forget_stream(key)
            if topic is not None:
                self.pool.discard(topic)
        self.hub.publish(("status", None), StreamFailed(key[0], key[1], error))
        self.hub.fail(key, error)

    # -- the hot path -----------------------------------------------------------

    def _on_message(self, conn: Connection, obj: Any) -> None:
        parser = self._parser
        if parser is None:
            return
        fields = parser.depth_fields(obj)
        if fields is not None:
            self._on_depth(*fields)
            return
        try:
            result = parser.parse(obj)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warn("binance: malformed message: {e}", e=e)
            return
        if type(result) is list:
            for event in result:
                kind = type(event)
                if kind is BookDelta:
                    self._on_delta(event)
                elif kind is Trade:
                    self._on_trade(event)
                elif kind is BookSnapshot:
                    self._on_partial(event)
                elif kind is Ticker:
                    if ("ticker", event.symbol) in self._open:
                        self._publish_ticker(event)
                elif kind is Candle:
                    self._publish_candle(event)
        elif type(result) is ServerShutdown:
            log.info("binance: server shutdown notice; rolling the connection over")
            conn.rollover()
        elif type(result) is Unknown:
            self.stats.unknown_messages += 1
            log.debug("binance: {reason}", reason=result.reason)

    # -- books ------------------------------------------------------------------

    def _on_depth(
        self, symbol: str, first: int, last: int, bids: list[Any], asks: list[Any], ts: Any
    ) -> None:
        # The synced steady state builds no BookDelta, no verdict and (with
        # nobody listening) no BookUpdate; anything else takes _on_delta.
        entry = self._book_entries.get(symbol)
        if entry is None:
            return
        if not entry.sync.advance(first, last):
            self._on_delta(BookDelta(symbol, bids, asks, last, first, None, ts))
            return
        book = entry.book
        try:
            book.apply_levels(bids, asks, last, ts)
        except ValueError as e:
            self._bad_levels(entry, e)
            return
        hub = self.hub
        key = entry.key
        if hub.heard(key):
            hub.publish(key, BookUpdate(symbol, bids, asks, last, ts, False, book))
        else:
            hub.skip()

    def _on_delta(self, delta: BookDelta) -> None:
        entry = self._book_entries.get(delta.symbol)
        if entry is None:
            return
        sync = entry.sync
        if sync.advance(delta.first_id, delta.nonce):  # the synced steady state
            self._apply_delta(entry, delta)
            return
        action = sync.on_delta(delta)
        kind = type(action)
        if kind is ApplyDelta:
            self._apply_delta(entry, delta)
        elif kind is NeedSnapshot:
            self._fetch_snapshot(entry)
        elif kind is Resync:
            self._book_stale(entry, action.reason)  # type: ignore[union-attr]
            self._fetch_snapshot(entry)

    def _bad_levels(self, entry: _BookEntry, error: ValueError) -> None:
        # the book marked itself stale; start again (the next delta asks for a snapshot)
        self.stats.malformed += 1
        entry.sync.reset()
        self._book_stale(entry, f"bad level: {error}")

    def _apply_delta(self, entry: _BookEntry, delta: BookDelta) -> None:
        book = entry.book
        try:
            book.apply_delta(delta)
        except ValueError as e:
            self._bad_levels(entry, e)
            return
        hub = self.hub
        key = entry.key
        if hub.heard(key):
            hub.publish(
                key,
                BookUpdate(
                    delta.symbol, delta.bids, delta.asks, delta.nonce, delta.timestamp, False, book
                ),
            )
        else:  # pull mode: nobody would see the event, so it is not built
            hub.skip()

    def _book_stale(self, entry: _BookEntry, reason: str) -> None:
        self.stats.book_resyncs += 1
        entry.book.mark_stale(reason)
        self.hub.set_not_ready(entry.key)
        log.warn(
            "binance: {symbol} book resyncing: {reason}", symbol=entry.book.symbol, reason=reason
        )
        self.hub.publish(("status", None), BookResyncing(entry.book.symbol, reason))

    def _book_lost(self, symbol: str, reason: str) -> None:
        entry = self._book_entries.get(symbol)
        if entry is None or not entry.book.synced:
            if entry is not None:
                entry.sync.reset()
            return
        entry.sync.reset()
        self._book_stale(entry, reason)

    def _fetch_snapshot(self, entry: _BookEntry) -> None:
        if entry.fetching or self._closed:
            return
        entry.fetching = True
        self.stats.snapshot_requests += 1
        market_id = self.market(entry.book.symbol).id
        req = adapter.depth_request(market_id, self.options.snapshot_limit)
        self.rest.request(req).addCallbacks(
            self._snapshot_arrived,
            self._snapshot_failed,
            callbackArgs=(entry,),
            errbackArgs=(entry,),
        )

    def _snapshot_arrived(self, payload: Any, entry: _BookEntry) -> None:
        entry.fetching = False
        if self._book_entries.get(entry.book.symbol) is not entry:
            return  # unsubscribed meanwhile
        try:
            snapshot = adapter.parse_depth_snapshot(entry.book.symbol, payload)
        except MalformedMessage as e:
            self.stats.malformed += 1
            self._retry_snapshot(entry, e)
            return
        if snapshot.timestamp is None:
            # Binance's REST depth carries no time: stamp it with its arrival
            snapshot = attrs.evolve(snapshot, timestamp=int(self.rest.answered_at * 1000))
        action = entry.sync.on_snapshot(snapshot)
        kind = type(action)
        if kind is ApplySnapshot:
            book = entry.book
            try:
                book.apply_snapshot(snapshot)
                for delta in action.deltas:  # type: ignore[union-attr]
                    book.apply_delta(delta)
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            self._book_synced(entry)
        elif kind is SnapshotTooOld:
            log.debug("binance: {s} snapshot too old; fetching again", s=entry.book.symbol)
            self._fetch_snapshot(entry)
        # Ignore: synced meanwhile, or waiting for the first delta

    def _book_synced(self, entry: _BookEntry) -> None:
        book = entry.book
        self.hub.set_ready(entry.key)
        self.hub.publish(("status", None), BookSynced(book.symbol, book.nonce))
        full = book.snapshot()
        self.hub.publish(
            entry.key,
            BookUpdate(book.symbol, full.bids, full.asks, book.nonce, book.timestamp, True, book),
        )

    def _snapshot_failed(self, failure: Failure, entry: _BookEntry) -> None:
        entry.fetching = False
        if self._closed or self._book_entries.get(entry.book.symbol) is not entry:
            return
        error = failure.value
        if isinstance(error, BadSymbol):
            self.hub.fail(entry.key, error)
            return
        self._retry_snapshot(entry, error)

    def _retry_snapshot(self, entry: _BookEntry, error: Any) -> None:
        log.warn("binance: {s} snapshot failed ({e}); retrying", s=entry.book.symbol, e=error)

        def again() -> None:
            self._timers.discard(call)
            entry.retry_call = None
            book = entry.book
            if self._book_entries.get(book.symbol) is entry and (book.stale or not book.synced):
                self._fetch_snapshot(entry)

        call = self.clock.callLater(1.0, again)
        entry.retry_call = call
        self._timers.add(call)

    def _on_partial(self, snapshot: BookSnapshot) -> None:
        entry = self._book_entries.get(snapshot.symbol)
        if entry is None:
            return
        book = entry.book
        try:
            book.apply_snapshot(snapshot)
        except ValueError as e:
            # stale until the next partial book replaces it
            self.stats.malformed += 1
            self._book_stale(entry, f"bad level: {e}")
            return
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

    # -- streams ----------------------------------------------------------------

    def _fetch_markets(self) -> Deferred[MarketIndex]:
        return self.rest.request(adapter.exchange_info_request()).addCallback(adapter.market_index)

    def load_markets(
        self, reload: bool = False, markets: Any = None
    ) -> Deferred[dict[str, Market]]:
        def parser(result: Any) -> Any:
            self._parser = adapter.BinanceParser(self._index)  # type: ignore[arg-type]
            return result

        return super().load_markets(reload, markets).addCallback(parser)

    def _check_timeframe(self, timeframe: str) -> None:
        if timeframe not in adapter.KLINE_INTERVALS:
            raise BadRequest(
                f"unsupported Binance timeframe {timeframe!r}; valid: "
                + " ".join(adapter.KLINE_INTERVALS)
            )

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
        if channel == "ticker":
            return adapter.ticker_topic(market_id)
        return adapter.kline_topic(market_id, channel[6:])

    def _start_stream(self, key: Key) -> None:
        if self._parser is None and self._index is not None:
            self._parser = adapter.BinanceParser(self._index)
        channel, symbol = key
        assert symbol is not None
        topic = self._topic(key)
        self._topic_key[topic] = key
        self._key_topic[key] = topic
        market_id = self.market(symbol).id
        opts = self.options
        if channel == "book":
            book = OrderBook(symbol, opts.book_depth)
            self.books[symbol] = book
            self._book_entries[symbol] = _BookEntry(book, BinanceBookSync(symbol), key, topic)
        elif channel == "trades":
            self.trades[symbol] = TradeBuffer(opts.trades_limit)
            if opts.seed_from_rest:
                self._pending_trades[symbol] = []
                limit = min(opts.trades_limit, 1000)
                self.rest.request(adapter.trades_request(market_id, limit)).addBoth(
                    self._trades_seeded, symbol, key
                )
            else:
                self.hub.set_ready(key)
        elif channel == "ticker":
            if opts.seed_from_rest:
                self.rest.request(adapter.ticker_24hr_request(market_id)).addBoth(
                    self._ticker_seeded, key
                )
        else:
            timeframe = channel[6:]
            self.candles[(symbol, timeframe)] = CandleSeries(symbol, timeframe, opts.candles_limit)
            if opts.seed_from_rest:
                limit = min(opts.candles_limit, 1000)
                req = adapter.klines_request(market_id, timeframe, limit=limit)
                self.rest.request(req).addBoth(self._candles_seeded, symbol, timeframe, key)
            else:
                self.hub.set_ready(key)
        subscribed = self.pool.add(topic)
        if channel == "book" and opts.book_mode == "diff":
            subscribed.addCallback(lambda _: self._book_subscribed(symbol))
        subscribed.addErrback(self._subscribe_failed, key)

    def _book_subscribed(self, symbol: str) -> None:
        # Ask for the snapshot as soon as the diff stream is acknowledged
        # instead of waiting for the first diff (a quiet market may send none
        # for a while).  The book-sync rules keep this safe: the first diff
        # after the snapshot either joins it or is a gap that resyncs.
        entry = self._book_entries.get(symbol)
        if entry is not None and entry.sync.state == "waiting" and not entry.sync.buffered:
            self._fetch_snapshot(entry)

    def _trades_seeded(self, result: Any, symbol: str, key: Key) -> None:
        pending = self._pending_trades.pop(symbol, None) or []
        buf = self.trades.get(symbol)
        if buf is None:
            return
        if isinstance(result, Failure):
            log.warn("binance: {s} trade history unavailable: {e}", s=symbol, e=result.value)
        else:
            try:
                buf.extend(adapter.parse_rest_trades(symbol, result))
            except MalformedMessage as e:
                log.warn("binance: {s} bad trade history: {e}", s=symbol, e=e)
        for trade in pending:
            self._publish_trade(trade)
        self.hub.set_ready(key)

    def _ticker_seeded(self, result: Any, key: Key) -> None:
        if isinstance(result, Failure):
            log.warn("binance: {k} ticker seed failed: {e}", k=key, e=result.value)
            return
        if key not in self._open:
            return
        try:
            tickers = adapter.parse_ticker_24hr(result, self._index)  # type: ignore[arg-type]
        except MalformedMessage as e:
            log.warn("binance: bad ticker answer: {e}", e=e)
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
                "binance: {s} {tf} candle history unavailable: {e}",
                s=symbol,
                tf=timeframe,
                e=result.value,
            )
        else:
            try:
                now = int(self.rest.answered_at * 1000)
                history = adapter.parse_klines(symbol, timeframe, result, now)
            except MalformedMessage as e:
                log.warn("binance: bad klines answer: {e}", e=e)
                history = []
            forming = series.forming
            for candle in history:
                if forming is None or candle.timestamp < forming.timestamp:
                    series.update(candle)
            if forming is not None:
                series.update(forming)
        self.hub.set_ready(key)

    def _stop_stream(self, key: Key) -> Deferred[None]:
        topic = self._forget_stream(key)
        if topic is None:
            return succeed(None)
        return self.pool.remove(topic)

    def _forget_stream(self, key: Key) -> str | None:
        """Drop the local state of ``key``'s stream; returns its topic (None if not open)."""
        topic = self._key_topic.pop(key, None)
        if topic is None:
            return None
        self._topic_key.pop(topic, None)
        channel, symbol = key
        if channel == "book":
            entry = self._book_entries.pop(symbol, None)  # type: ignore[arg-type]
            if entry is not None and entry.retry_call is not None and entry.retry_call.active():
                entry.retry_call.cancel()
            self.books.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "trades":
            self.trades.pop(symbol, None)  # type: ignore[arg-type]
            self._pending_trades.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "ticker":
            self.tickers.discard(symbol)  # type: ignore[arg-type]
        else:
            self.candles.pop((symbol, channel[6:]), None)  # type: ignore[arg-type]
        return topic

    def _fetch_ohlcv_history(
        self, symbol: str, timeframe: str, since: int, limit: int | None
    ) -> Deferred[list[list[Any]]]:
        market_id = self.market(symbol).id
        req = adapter.klines_request(
            market_id, timeframe, start_time=since, limit=min(limit or 500, 1000)
        )
        now = int(self.clock.seconds() * 1000)
        return self.rest.request(req).addCallback(
            lambda rows: [ohlcv(c) for c in adapter.parse_klines(symbol, timeframe, rows, now)]
        )

    def _shutdown(self) -> Deferred[None]:
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        ds = [self.pool.close(), self.rest.close()]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)
