"""OKX v5 spot: public and business connections, books kept by the ``seqId`` chain.

Sits in the client layer: wires the OKX adapter (:mod:`txexchange.adapters.okx`:
topics, wire rules per URL kind, parsing, REST request descriptions; and
:mod:`txexchange.adapters.okx_book`: the pure ``seqId``/checksum state machine)
to connections, REST and the state layer.  Books, tickers and book tops go over
``public`` connections; candles and ``trades-all`` over ``business`` ones.
Books are built from the ``books`` channel (``book_mode="diff"``, the default:
the channel's snapshot push or a REST snapshot, then updates checked ``seqId``
by ``seqId`` and, where OKX still sends one, by checksum) or taken from
``books5`` (``book_mode="partial"``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters import okx as adapter
from txexchange.adapters.okx_book import (
    ApplyDelta,
    ApplySnapshot,
    NeedSnapshot,
    OkxBookMessage,
    OkxBookSync,
    Resync,
    SnapshotTooOld,
    SyncAction,
)
from txexchange.adapters.rest import RestRequest
from txexchange.client.base import ClientOptions, ExchangeClient
from txexchange.client.pool import StreamPool
from txexchange.client.rest import RestClient
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.delivery.hub import Key
from txexchange.errors import (
    BadRequest,
    BadSymbol,
    ExchangeError,
    MalformedMessage,
    ProtocolViolation,
    RateLimitExceeded,
)
from txexchange.events import BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.state import CandleSeries, OrderBook, TradeBuffer, ohlcv
from txexchange.transport import (
    Connected,
    Connection,
    Disconnected,
    RetriesExhaustedEvent,
    StatusEvent,
    TransportOptions,
)

__all__ = ["REST_REQUESTS_PER_WINDOW", "REST_WINDOW", "OkxClient", "OkxStats"]

log = Logger()

#: REST budget.  OKX limits each endpoint separately per 2 s and per IP (books
#: 40, candles 40, trades 100, ticker and instruments 20).  One queue serves
#: every endpoint, so it is held to the tightest of them: at most 4 requests in
#: any aligned half second, which keeps every sliding 2 s window at 20 or
#: fewer (8 requests a second sustained).
REST_WINDOW = 0.5
REST_REQUESTS_PER_WINDOW = 4
#: OKX's 429 (code 50011) comes without ``Retry-After``; its windows are 2 s long
_RATE_LIMIT_PAUSE = 2.0
#: after a ``books`` subscription is acknowledged (or its connection reopens),
#: how long to wait for OKX's snapshot push before taking the REST snapshot
#: (OKX stopped pushing it in 2026; a quiet book may send no update for a minute)
SNAPSHOT_PUSH_GRACE = 0.5
#: the incremental book channel of book_mode="diff"
_BOOK_CHANNEL = "books"


class OkxStats:
    """Counters of a client (read by the service's metrics)."""

    __slots__ = (
        "book_resyncs",
        "checksum_failures",
        "exchange_errors",
        "malformed",
        "rollovers_requested",
        "snapshot_requests",
        "unknown_messages",
    )

    def __init__(self) -> None:
        self.book_resyncs = 0
        self.checksum_failures = 0
        self.snapshot_requests = 0
        self.malformed = 0
        self.unknown_messages = 0
        #: ``{"event": "error"}`` messages not consumed as a request's reply
        self.exchange_errors = 0
        #: 64008 notices acted on
        self.rollovers_requested = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _Pools:
    """The public and business pools seen as one (``client.pool.connections``)."""

    def __init__(self, public: StreamPool, business: StreamPool) -> None:
        self.public = public
        self.business = business

    @property
    def connections(self) -> list[Connection]:
        return [*self.public.connections, *self.business.connections]

    def __len__(self) -> int:
        return len(self.public) + len(self.business)

    def close(self) -> Deferred[None]:
        ds = [self.public.close(), self.business.close()]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)


class _BookEntry:
    __slots__ = ("book", "fetching", "key", "sync", "timer", "topic")

    def __init__(self, book: OrderBook, sync: OkxBookSync | None, key: Key, topic: str) -> None:
        self.book = book
        self.sync = sync  # None for the partial (books5 / bbo-tbt) channels
        self.key = key
        self.topic = topic
        self.fetching = False
        #: the pending snapshot retry or snapshot-push grace check
        self.timer: Any = None


class OkxClient(ExchangeClient):
    """OKX spot market data and private API.  URL keys for ``urls=``: ``public``,
    ``business``, ``rest`` and ``private`` (the logged-in WebSocket of the account side).

    ``rest_tap`` is handed to the :class:`~txexchange.client.rest.RestClient`
    (called with every answer of an unsigned REST request; the recorder uses it).
    """

    name = "okx"
    #: OKX API keys come with a passphrase (``password=``)
    needs_password = True

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
        #: the book channel: ``books`` (diff), ``books5`` or ``bbo-tbt`` (partial)
        if opts.book_mode == "diff":
            self.book_channel = _BOOK_CHANNEL
        else:
            self.book_channel = "bbo-tbt" if opts.partial_depth == 1 else "books5"
        self._rng = rng
        # weight_limit is a per-minute budget: scaled to the half-second window
        # and capped at what keeps every OKX endpoint under its 2 s limit
        per_window = min(REST_REQUESTS_PER_WINDOW, int(opts.weight_limit * REST_WINDOW / 60))
        self.rest = RestClient(
            self.urls["rest"],
            reactor=self.reactor,
            clock=self.clock,
            http_client=http_client,
            trust_root=self.transport_options.trust_root,
            parse_error=_parse_rest_error,
            weight_limit=max(1, per_window),
            weight_window=REST_WINDOW,
            safety=1.0,
            tap=rest_tap,
            timeout=self.options.rest_timeout,
        )
        self.public_rules = adapter.OkxWireRules("public")
        self.business_rules = adapter.OkxWireRules("business")
        self.public_pool = StreamPool(
            lambda: self._new_connection("public"), self.public_rules.max_topics_per_connection
        )
        self.business_pool = StreamPool(
            lambda: self._new_connection("business"),
            self.business_rules.max_topics_per_connection,
        )
        #: both pools (``pool.connections`` lists every connection)
        self.pool = _Pools(self.public_pool, self.business_pool)
        self.stats = OkxStats()
        self._parser: adapter.OkxParser | None = None
        self._book_entries: dict[str, _BookEntry] = {}
        self._topic_key: dict[str, Key] = {}
        self._key_topic: dict[Key, str] = {}
        self._pending_trades: dict[str, list[Trade] | None] = {}
        self._timers: set[Any] = set()

    # -- private ----------------------------------------------------------------

    def _account_backend(self) -> Any:
        from txexchange.client.okx_account import OkxAccountBackend

        return OkxAccountBackend(self, self.credentials)

    # -- connections ------------------------------------------------------------

    def _pool_of(self, topic: str) -> StreamPool:
        return self.business_pool if adapter.url_kind(topic) == "business" else self.public_pool

    def _new_connection(self, kind: str) -> Connection:
        cell: list[Connection] = []
        pool = self.business_pool if kind == "business" else self.public_pool

        def on_status(event: StatusEvent) -> None:
            self._on_status(pool, cell[0], event)

        def on_message(obj: Any) -> None:
            self._on_message(cell[0], obj)

        conn = Connection(
            self.urls[kind],
            self.business_rules if kind == "business" else self.public_rules,
            on_message=on_message,
            on_status=on_status,
            reactor=self.reactor,
            clock=self.clock,
            options=self.transport_options,
            rng=self._rng,
        )
        cell.append(conn)
        return conn

    def _on_status(self, pool: StreamPool, conn: Connection, event: StatusEvent) -> None:
        # the connection's event first, then what it caused (resyncs, failed streams)
        self.hub.publish(("status", None), event)
        if isinstance(event, Disconnected):
            for topic in pool.topics_of(conn):
                key = self._topic_key.get(topic)
                if key is not None and key[0] == "book":
                    self._book_lost(key[1], "disconnected: " + event.reason)  # type: ignore[arg-type]
        elif isinstance(event, Connected):
            # resubscribed: books that get no snapshot push are taken from REST
            for topic in pool.topics_of(conn):
                key = self._topic_key.get(topic)
                if key is not None and key[0] == "book":
                    self._await_snapshot_push(key[1])  # type: ignore[arg-type]
        elif isinstance(event, RetriesExhaustedEvent):
            error = event.error or ExchangeError("retries exhausted")
            # The connection is gone for good: new streams go to a new one, and
            # the streams it carried fail (a later call opens them again).
            for topic in pool.retire(conn):
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
                self._pool_of(topic).discard(topic)
        self.hub.publish(("status", None), StreamFailed(key[0], key[1], error))
        self.hub.fail(key, error)

    # -- the hot path -----------------------------------------------------------

    def _on_message(self, conn: Connection, obj: Any) -> None:
        parser = self._parser
        if parser is None:
            return
        try:
            result = parser.parse(obj)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warn("okx: malformed message: {e}", e=e)
            return
        if type(result) is list:
            for event in result:
                kind = type(event)
                if kind is OkxBookMessage:
                    self._on_book_message(event)
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
            self.stats.rollovers_requested += 1
            log.info("okx: {r}; rolling {url} over", r=result.reason, url=conn.url)
            conn.rollover().addErrback(self._rollover_failed, conn)
        elif type(result) is adapter.OkxError:
            self.stats.exchange_errors += 1
            log.warn(
                "okx: error {code} from {url}: {msg}",
                code=result.code,
                url=conn.url,
                msg=result.message,
            )
        elif type(result) is Unknown:
            self.stats.unknown_messages += 1
            log.debug("okx: {reason}", reason=result.reason)
        # ControlReply (a later per-argument acknowledgement) and PONG (the
        # transport's heartbeat swallows OKX's text "pong" before parsing) need nothing

    def _rollover_failed(self, failure: Failure, conn: Connection) -> None:
        if not self._closed:
            log.warn("okx: rollover of {url} failed: {e}", url=conn.url, e=failure.value)

    # -- books ------------------------------------------------------------------

    def _on_book_message(self, message: OkxBookMessage) -> None:
        entry = self._book_entries.get(message.event.symbol)
        if entry is None or entry.sync is None or message.channel != self.book_channel:
            return
        sync = entry.sync
        event = message.event
        if type(event) is BookSnapshot and sync.state == "synced":
            seq = sync.seq_id
            if seq is not None and event.nonce is not None and event.nonce <= seq:
                # The snapshot a rollover's fresh connection got on subscribing:
                # the old connection already took the book past it.
                return
        try:
            action = sync.on_message(message)
        except ProtocolViolation as e:
            self.stats.malformed += 1
            log.warn("okx: {s} book message refused: {e}", s=entry.book.symbol, e=e)
            return
        self._act(entry, action)

    def _act(self, entry: _BookEntry, action: SyncAction) -> None:
        kind = type(action)
        book = entry.book
        sync = entry.sync
        assert sync is not None
        if kind is ApplyDelta:
            delta = action.delta  # type: ignore[union-attr]
            try:
                book.apply_delta(delta)
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            if action.checksum is not None:  # type: ignore[union-attr]
                resync = sync.verify(book.top)
                if resync is not None:
                    self.stats.checksum_failures += 1
                    self._resync(entry, resync.reason)
                    return
            self.hub.publish(
                entry.key,
                BookUpdate(
                    delta.symbol, delta.bids, delta.asks, delta.nonce, delta.timestamp, False, book
                ),
            )
        elif kind is ApplySnapshot:
            try:
                book.apply_snapshot(action.snapshot)  # type: ignore[union-attr]
                for delta in action.deltas:  # type: ignore[union-attr]
                    book.apply_delta(delta)
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            if action.checksum is not None:  # type: ignore[union-attr]
                resync = sync.verify(book.top)
                if resync is not None:
                    self.stats.checksum_failures += 1
                    self._resync(entry, resync.reason)
                    return
            self._book_synced(entry)
        elif kind is NeedSnapshot or kind is SnapshotTooOld:
            self._fetch_snapshot(entry)
        elif kind is Resync:
            self._resync(entry, action.reason)  # type: ignore[union-attr]
        # Buffer: a fetch is on its way; Ignore: keep-alive, duplicate, late snapshot

    def _bad_levels(self, entry: _BookEntry, error: ValueError) -> None:
        # the book marked itself stale; start again from a REST snapshot
        self.stats.malformed += 1
        assert entry.sync is not None
        entry.sync.reset()
        self._resync(entry, f"bad level: {error}")

    def _resync(self, entry: _BookEntry, reason: str) -> None:
        self._book_stale(entry, reason)
        self._fetch_snapshot(entry)

    def _book_stale(self, entry: _BookEntry, reason: str) -> None:
        self.stats.book_resyncs += 1
        entry.book.mark_stale(reason)
        self.hub.set_not_ready(entry.key)
        log.warn("okx: {symbol} book resyncing: {reason}", symbol=entry.book.symbol, reason=reason)
        self.hub.publish(("status", None), BookResyncing(entry.book.symbol, reason))

    def _book_lost(self, symbol: str, reason: str) -> None:
        entry = self._book_entries.get(symbol)
        if entry is None:
            return
        if entry.sync is not None:
            entry.sync.reset()
        if entry.book.synced and not entry.book.stale:
            self._book_stale(entry, reason)

    def _book_synced(self, entry: _BookEntry) -> None:
        self._cancel_timer(entry)
        book = entry.book
        self.hub.set_ready(entry.key)
        self.hub.publish(("status", None), BookSynced(book.symbol, book.nonce))
        full = book.snapshot()
        self.hub.publish(
            entry.key,
            BookUpdate(book.symbol, full.bids, full.asks, book.nonce, book.timestamp, True, book),
        )

    def _await_snapshot_push(self, symbol: str) -> None:
        """Take the REST snapshot if no snapshot push (nor any update) comes soon."""
        entry = self._book_entries.get(symbol)
        if entry is None or entry.sync is None or entry.timer is not None:
            return

        def check() -> None:
            self._timers.discard(call)
            entry.timer = None
            sync = entry.sync
            if (
                self._book_entries.get(symbol) is entry
                and sync is not None
                and sync.state == "waiting"
                and not sync.buffered
                and not sync.fetching
            ):
                self._fetch_snapshot(entry)

        call = self.clock.callLater(SNAPSHOT_PUSH_GRACE, check)
        entry.timer = call
        self._timers.add(call)

    def _cancel_timer(self, entry: _BookEntry) -> None:
        call, entry.timer = entry.timer, None
        if call is not None:
            self._timers.discard(call)
            if call.active():
                call.cancel()

    def _fetch_snapshot(self, entry: _BookEntry) -> None:
        if entry.fetching or self._closed:
            return
        entry.fetching = True
        self.stats.snapshot_requests += 1
        market_id = self.market(entry.book.symbol).id
        depth = adapter.BOOK_SNAPSHOT_DEPTH[self.book_channel]
        self.rest.request(adapter.book_snapshot_request(market_id, depth)).addCallbacks(
            self._snapshot_arrived,
            self._snapshot_failed,
            callbackArgs=(entry,),
            errbackArgs=(entry,),
        )

    def _snapshot_arrived(self, payload: Any, entry: _BookEntry) -> None:
        entry.fetching = False
        if self._book_entries.get(entry.book.symbol) is not entry:
            return  # unsubscribed meanwhile
        assert entry.sync is not None
        try:
            snapshot = adapter.parse_order_book(entry.book.symbol, payload)
            action = entry.sync.on_snapshot(snapshot)
        except (MalformedMessage, ProtocolViolation) as e:
            self.stats.malformed += 1
            self._retry_snapshot(entry, e)
            return
        except ExchangeError as e:  # a non-zero code in a 200 answer
            self._snapshot_error(entry, e)
            return
        if type(action) is SnapshotTooOld:
            log.debug("okx: {s} snapshot too old; fetching again", s=entry.book.symbol)
        self._act(entry, action)

    def _snapshot_failed(self, failure: Failure, entry: _BookEntry) -> None:
        entry.fetching = False
        if self._closed or self._book_entries.get(entry.book.symbol) is not entry:
            return
        self._snapshot_error(entry, failure.value)

    def _snapshot_error(self, entry: _BookEntry, error: Any) -> None:
        if isinstance(error, BadSymbol):
            self.hub.fail(entry.key, error)
            return
        self._retry_snapshot(entry, error)

    def _retry_snapshot(self, entry: _BookEntry, error: Any) -> None:
        log.warn("okx: {s} snapshot failed ({e}); retrying", s=entry.book.symbol, e=error)
        self._cancel_timer(entry)

        def again() -> None:
            self._timers.discard(call)
            entry.timer = None
            sync = entry.sync
            if (
                self._book_entries.get(entry.book.symbol) is entry
                and sync is not None
                and sync.state == "waiting"
            ):
                self._fetch_snapshot(entry)

        call = self.clock.callLater(1.0, again)
        entry.timer = call
        self._timers.add(call)

    def _on_partial(self, snapshot: BookSnapshot) -> None:
        entry = self._book_entries.get(snapshot.symbol)
        if entry is None or entry.sync is not None:
            return
        book = entry.book
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

    # -- streams ----------------------------------------------------------------

    def _fetch_markets(self) -> Deferred[MarketIndex]:
        return self.rest.request(adapter.instruments_request()).addCallback(adapter.market_index)

    def load_markets(
        self, reload: bool = False, markets: Any = None
    ) -> Deferred[dict[str, Market]]:
        def parser(result: Any) -> Any:
            self._parser = adapter.OkxParser(self._index)  # type: ignore[arg-type]
            return result

        return super().load_markets(reload, markets).addCallback(parser)

    def _check_timeframe(self, timeframe: str) -> None:
        if timeframe not in adapter.TIMEFRAMES:
            raise BadRequest(
                f"unsupported OKX timeframe {timeframe!r}; valid: " + " ".join(adapter.TIMEFRAMES)
            )

    def _topic(self, key: Key) -> str:
        channel, symbol = key
        market_id = self.market(symbol).id  # type: ignore[arg-type]
        if channel == "book":
            return adapter.books_topic(market_id, self.book_channel)
        if channel == "trades":
            # one message per fill, as the REST trades seed has them
            return adapter.trades_topic(market_id, every_fill=True)
        if channel == "ticker":
            return adapter.tickers_topic(market_id)
        return adapter.candle_topic(market_id, channel[6:])

    def _start_stream(self, key: Key) -> None:
        if self._parser is None and self._index is not None:
            self._parser = adapter.OkxParser(self._index)
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
            sync = OkxBookSync(symbol) if opts.book_mode == "diff" else None
            self._book_entries[symbol] = _BookEntry(book, sync, key, topic)
        elif channel == "trades":
            self.trades[symbol] = TradeBuffer(opts.trades_limit)
            if opts.seed_from_rest:
                self._pending_trades[symbol] = []  # until the seed is in
            else:
                self.hub.set_ready(key)
        elif channel == "ticker":
            if opts.seed_from_rest:
                self.rest.request(adapter.ticker_request(market_id)).addBoth(
                    self._ticker_seeded, key
                )
        else:
            timeframe = channel[6:]
            self.candles[(symbol, timeframe)] = CandleSeries(symbol, timeframe, opts.candles_limit)
            if not opts.seed_from_rest:
                self.hub.set_ready(key)
        self._pool_of(topic).add(topic).addCallback(self._subscribed, key).addErrback(
            self._subscribe_failed, key
        )

    def _subscribed(self, _: Any, key: Key) -> None:
        """The exchange acknowledged ``key``'s subscription.

        History is asked for only now: asked for earlier, what happened between
        its answer and the subscription going live would be missing.  Stream
        data arriving before the answer is held back and merged after it.
        """
        if self._closed or key not in self._open:
            return
        channel, symbol = key
        assert symbol is not None
        opts = self.options
        if channel == "book":
            if opts.book_mode == "diff":
                self._await_snapshot_push(symbol)
            return
        if not opts.seed_from_rest or channel == "ticker":
            return
        market_id = self.market(symbol).id
        if channel == "trades":
            limit = min(opts.trades_limit, 500)
            self.rest.request(adapter.trades_request(market_id, limit)).addBoth(
                self._trades_seeded, symbol, key
            )
        else:
            timeframe = channel[6:]
            limit = min(opts.candles_limit, 300)
            req = adapter.candles_request(market_id, timeframe, limit=limit)
            self.rest.request(req).addBoth(self._candles_seeded, symbol, timeframe, key)

    def _trades_seeded(self, result: Any, symbol: str, key: Key) -> None:
        pending = self._pending_trades.pop(symbol, None) or []
        buf = self.trades.get(symbol)
        if buf is None:
            return
        if isinstance(result, Failure):
            log.warn("okx: {s} trade history unavailable: {e}", s=symbol, e=result.value)
        else:
            try:
                buf.extend(adapter.parse_rest_trades(symbol, result))
            except ExchangeError as e:
                log.warn("okx: {s} bad trade history: {e}", s=symbol, e=e)
        for trade in pending:
            self._publish_trade(trade)
        self.hub.set_ready(key)

    def _ticker_seeded(self, result: Any, key: Key) -> None:
        if isinstance(result, Failure):
            log.warn("okx: {k} ticker seed failed: {e}", k=key, e=result.value)
            return
        if key not in self._open:
            return
        try:
            tickers = adapter.parse_tickers(result, self._index)  # type: ignore[arg-type]
        except ExchangeError as e:
            log.warn("okx: bad ticker answer: {e}", e=e)
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
                "okx: {s} {tf} candle history unavailable: {e}",
                s=symbol,
                tf=timeframe,
                e=result.value,
            )
        else:
            try:
                history = adapter.parse_candles(symbol, timeframe, result)
            except ExchangeError as e:
                log.warn("okx: bad candles answer: {e}", e=e)
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
        return self._pool_of(topic).remove(topic)

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
                self._cancel_timer(entry)
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
        # OKX pages backwards: ``before`` = newer than, ``after`` = older than
        n = min(limit or 100, 300)
        market_id = self.market(symbol).id
        req = adapter.candles_request(
            market_id,
            timeframe,
            before=max(since - 1, 0),
            after=since + _timeframe_ms(timeframe) * n,
            limit=n,
        )

        def rows(payload: Any) -> list[list[Any]]:
            candles = adapter.parse_candles(symbol, timeframe, payload)
            return [ohlcv(c) for c in candles if c.timestamp >= since][:n]

        return self.rest.request(req).addCallback(rows)

    def _shutdown(self) -> Deferred[None]:
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        ds = [self.pool.close(), self.rest.close()]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)


def _parse_rest_error(status: int, headers: Any, body: bytes) -> ExchangeError:
    """The adapter's typed error; a rate limit without ``Retry-After`` waits OKX's 2 s window
    (the REST queue would otherwise pause for a minute)."""
    error = adapter.parse_rest_error(status, headers, body)
    if isinstance(error, RateLimitExceeded) and error.retry_after is None:
        error.retry_after = _RATE_LIMIT_PAUSE
    return error


_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _timeframe_ms(timeframe: str) -> int:
    """Length of a unified timeframe in ms (months as 31 days: an upper bound)."""
    tf = timeframe.split("@", 1)[0]
    n, unit = int(tf[:-1]), tf[-1]
    if unit == "M":
        return n * 31 * 86_400_000
    return n * _UNIT_MS[unit]
