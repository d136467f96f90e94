"""Coinbase Exchange: ws-feed connections, level2 books rebuilt by resubscribing.

Sits in the client layer: wires the Coinbase adapter
(:mod:`txexchange.adapters.coinbase`: topics, wire rules, parsing, REST
request descriptions; and :mod:`txexchange.adapters.coinbase_book`: the pure
level2 and trade-id state machines) to connections, REST and the state layer.

* ``book``: ``level2_batch`` (a snapshot, then ``l2update``; no sequence, no
  checksum).  A book judged inconsistent is marked stale and its topic is
  unsubscribed and subscribed again, which brings a fresh snapshot.
* ``trades``: ``matches`` checked trade id by trade id and against the
  ``heartbeat`` channel's ``last_trade_id``; missed trades are fetched by REST
  and delivered in order before newer ones.  Seeded from REST.
* ``ticker``: ``ticker`` (on every match), seeded from REST ``/ticker`` +
  ``/stats``.
* ``ohlcv:<tf>``: Coinbase has no candle channel: candles come from REST
  ``/candles`` (decoded exactly), polled every :attr:`CoinbaseClient.candle_poll_interval`.

Every subscribe goes through :func:`~txexchange.adapters.coinbase.with_heartbeats`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters import coinbase as adapter
from txexchange.adapters.coinbase_book import (
    ApplyDelta,
    ApplySnapshot,
    CoinbaseBookSync,
    CoinbaseHeartbeat,
    CoinbaseMatch,
    CoinbaseTradeSync,
    EmitTrade,
    MissedTrades,
    Resync,
)
from txexchange.adapters.rest import RestRequest
from txexchange.client.base import ClientOptions, ExchangeClient
from txexchange.client.pool import StreamPool
from txexchange.client.rest import RestClient
from txexchange.codec import DecodeError, loads_exact
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.delivery.hub import Key
from txexchange.errors import BadRequest, ExchangeError, MalformedMessage, RateLimitExceeded
from txexchange.events import BookDelta, BookSnapshot, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.state import CandleSeries, OrderBook, TradeBuffer, ohlcv
from txexchange.transport import (
    Connection,
    Disconnected,
    RetriesExhaustedEvent,
    StatusEvent,
    TransportOptions,
)

__all__ = ["CoinbaseClient", "CoinbaseStats"]

log = Logger()

#: the book channel (``level2`` needs an authenticated subscribe)
BOOK_CHANNEL = "level2_batch"
#: Coinbase's public REST limit is 10 requests a second per IP with bursts of 15.
#: The queue counts aligned one-second windows, so two windows can meet in a
#: burst: 7 per window keeps any burst at 14 or fewer.
REST_WINDOW = 1.0
REST_REQUESTS_PER_WINDOW = 7
#: Coinbase's 429 comes without ``Retry-After``; its limit refills every second
_RATE_LIMIT_PAUSE = 1.0


class CoinbaseStats:
    """Counters of a client (read by the service's metrics)."""

    __slots__ = (
        "book_resyncs",
        "exchange_errors",
        "malformed",
        "missed_trade_fetches",
        "missed_trades",
        "refused_topics",
        "resubscribes",
        "unknown_messages",
    )

    def __init__(self) -> None:
        self.book_resyncs = 0
        #: ``{"type": "error"}`` messages
        self.exchange_errors = 0
        #: topics Coinbase refused (their streams failed)
        self.refused_topics = 0
        self.malformed = 0
        self.unknown_messages = 0
        #: unsubscribe + subscribe pairs sent to get a fresh snapshot
        self.resubscribes = 0
        #: trades reported missed by the trade-id checks, and REST fetches for them
        self.missed_trades = 0
        self.missed_trade_fetches = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _BookEntry:
    __slots__ = ("book", "key", "sync", "topic")

    def __init__(self, book: OrderBook, sync: CoinbaseBookSync, key: Key, topic: str) -> None:
        self.book = book
        self.sync = sync
        self.key = key
        self.topic = topic


class _Fetch:
    """Trades being fetched by REST; delivered in queue order once here."""

    __slots__ = ("done", "trades")

    def __init__(self) -> None:
        self.done = False
        self.trades: list[Trade] = []


class _TradeEntry:
    __slots__ = ("first_id", "key", "queue", "sync")

    def __init__(self, key: Key, sync: CoinbaseTradeSync) -> None:
        self.key = key
        self.sync = sync
        #: the trade id of the first match of the subscription
        self.first_id: int | None = None
        #: trades (and REST fetches) waiting behind an unfinished fetch, in order
        self.queue: list[Trade | _Fetch] = []


class CoinbaseClient(ExchangeClient):
    """Coinbase Exchange market data.  URL keys for ``urls=``: ``ws``, ``rest``
    (``ws_direct`` is accepted and unused: it needs authentication).

    ``rest_tap`` is handed to the :class:`~txexchange.client.rest.RestClient`
    (called with every answer of an unsigned REST request; the recorder uses it).
    """

    name = "coinbase"
    #: seconds between REST polls of a candle stream (Coinbase has no candle channel)
    candle_poll_interval: float = 5.0

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
        if opts.book_mode != "diff":
            raise BadRequest(
                "Coinbase has no partial-depth book stream; use book_mode='diff' "
                "(with book_depth to limit the levels shown)"
            )
        self.rules = adapter.CoinbaseWireRules("ws")
        self._rng = rng
        self._user_tap = rest_tap
        #: raw bodies of candle answers, by request, for exact decoding
        self._raw: dict[int, bytes] = {}
        per_window = min(
            REST_REQUESTS_PER_WINDOW, max(1, int(opts.weight_limit * REST_WINDOW / 60))
        )
        self.rest = RestClient(
            self.urls["rest"],
            reactor=self.reactor,
            clock=self.clock,
            http_client=http_client,
            trust_root=self.transport_options.trust_root,
            parse_error=_parse_rest_error,
            weight_limit=per_window,
            weight_window=REST_WINDOW,
            safety=1.0,
            tap=self._tap,
            timeout=self.options.rest_timeout,
        )
        self.pool = StreamPool(self._new_connection, self.rules.max_topics_per_connection)
        self.stats = CoinbaseStats()
        self._parser: adapter.CoinbaseParser | None = None
        self._book_entries: dict[str, _BookEntry] = {}
        self._trade_entries: dict[str, _TradeEntry] = {}
        self._topic_key: dict[str, Key] = {}
        self._key_topic: dict[Key, str] = {}
        #: heartbeat topic -> streams using it
        self._heartbeats: dict[str, int] = {}
        #: topics sent on a connection and not yet listed in a ``subscriptions`` reply
        self._unconfirmed: dict[int, dict[str, None]] = {}
        self._pollers: dict[Key, Any] = {}
        #: topics unsubscribed to be subscribed again once the unsubscribe has left
        self._resubscribing: set[str] = set()
        self._timers: set[Any] = set()

    # -- REST -------------------------------------------------------------------

    def _tap(self, request: RestRequest, status: int, body: bytes, at: float) -> None:
        if status == 200 and request.path.endswith("/candles"):
            self._raw[id(request)] = body
        if self._user_tap is not None:
            self._user_tap(request, status, body, at)

    def _request_exact(self, request: RestRequest) -> Deferred[Any]:
        """``request``, its JSON body decoded with numbers as Decimal (candles)."""

        def exact(value: Any) -> Any:
            body = self._raw.pop(id(request), None)
            if body is None:
                return value
            try:
                return loads_exact(body)
            except (DecodeError, ValueError):
                return value

        def forget(f: Failure) -> Failure:
            self._raw.pop(id(request), None)
            return f

        return self.rest.request(request).addCallbacks(exact, forget)

    # -- connections ------------------------------------------------------------

    def _new_connection(self) -> Connection:
        cell: list[Connection] = []

        def on_status(event: StatusEvent) -> None:
            self._on_status(cell[0], event)

        def on_message(obj: Any) -> None:
            self._on_message(cell[0], obj)

        conn = Connection(
            self.urls["ws"],
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
            self._unconfirmed.pop(id(conn), None)
            for topic in self.pool.topics_of(conn):
                if topic in self._resubscribing:
                    # its unsubscribe may never leave: hold it again, so the
                    # reconnect subscribes it (with a fresh snapshot)
                    self._resubscribing.discard(topic)
                    conn.subscribe([topic]).addErrback(lambda _: None)
                key = self._topic_key.get(topic)
                if key is not None and key[0] == "book":
                    self._book_lost(key[1], "disconnected: " + event.reason)  # type: ignore[arg-type]
        elif isinstance(event, RetriesExhaustedEvent):
            error = event.error or ExchangeError("retries exhausted")
            self._unconfirmed.pop(id(conn), None)
            for topic in self.pool.retire(conn):
                key = self._topic_key.get(topic)
                if key is not None:
                    self._stream_failed(key, error)
                else:
                    self._heartbeats.pop(topic, None)

    def _stream_failed(self, key: Key, error: Exception) -> None:
        """``key`` cannot be served: forget it, tell status observers, fail its waiters."""
        if key in self._open:
            self._open.discard(key)
            self.hub.set_not_ready(key)
            topic = self._forget_stream(key)
            if topic is not None:
                for t in [topic, *self._release_heartbeat(topic)]:
                    conn = self.pool.connection_of(t)
                    self.pool.discard(t)
                    if conn is not None:
                        conn.unsubscribe([t])
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
            log.warn("coinbase: malformed message: {e}", e=e)
            return
        if type(result) is list:
            for event in result:
                kind = type(event)
                if kind is BookDelta or kind is BookSnapshot:
                    self._on_book_event(event)
                elif kind is CoinbaseMatch:
                    self._on_match(event)
                elif kind is CoinbaseHeartbeat:
                    self._on_heartbeat(event)
                elif kind is Ticker and ("ticker", event.symbol) in self._open:
                    self._publish_ticker(event)
        elif type(result) is adapter.CoinbaseSubscriptions:
            pending = self._unconfirmed.get(id(conn))
            if pending:
                for topic in result.topics:
                    pending.pop(topic, None)
        elif type(result) is adapter.CoinbaseError:
            self._on_error(conn, result)
        elif type(result) is ServerShutdown:  # Coinbase documents none; kept for safety
            log.info("coinbase: shutdown notice; rolling {url} over", url=conn.url)
            conn.rollover()
        elif type(result) is Unknown:
            self.stats.unknown_messages += 1
            log.debug("coinbase: {reason}", reason=result.reason)

    def _on_error(self, conn: Connection, error: adapter.CoinbaseError) -> None:
        """An ``error`` message: fail the streams whose subscribe it refused.

        Coinbase names no request.  Topics sent but not yet confirmed by a
        ``subscriptions`` reply are the candidates: those whose product or
        channel the error names failed; if it names none, all of them did.
        A refused request changes nothing, so the other candidates of the
        same message are subscribed again.
        """
        self.stats.exchange_errors += 1
        log.warn(
            "coinbase: error from {url}: {msg} {reason}",
            url=conn.url,
            msg=error.message,
            reason=error.reason,
        )
        pending = self._unconfirmed.get(id(conn))
        if not pending or error.message.lower().startswith("failed to unsubscribe"):
            # not about a subscribe of ours (ErrSlowConsume before a close, or the
            # unsubscribe of a topic Coinbase had refused anyway)
            return
        text = f"{error.message} {error.reason}"
        named = [t for t in pending if _named(t, text)]
        refused = named or list(pending)
        exc = error.exception()
        for topic in refused:
            pending.pop(topic, None)
        for topic in refused:
            self.stats.refused_topics += 1
            key = self._topic_key.get(topic)
            if key is not None:
                log.error("coinbase: {key} refused: {e}", key=key, e=exc)
                self._stream_failed(key, exc)
        if named:
            for topic in list(pending):
                pending.pop(topic, None)
                self._resubscribe(topic)

    # -- books ------------------------------------------------------------------

    def _on_book_event(self, event: BookSnapshot | BookDelta) -> None:
        entry = self._book_entries.get(event.symbol)
        if entry is None:
            return
        action = entry.sync.on_event(event)
        kind = type(action)
        book = entry.book
        if kind is ApplyDelta:
            delta: BookDelta = action.delta  # type: ignore[union-attr]
            try:
                book.apply_delta(delta)
            except ValueError as e:
                entry.sync.reset()
                self._resync(entry, f"bad level: {e}")
                return
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
            try:
                book.apply_snapshot(action.snapshot)  # type: ignore[union-attr]
            except ValueError as e:
                entry.sync.reset()
                self._resync(entry, f"bad level in snapshot: {e}")
                return
            resync = entry.sync.verify(book.top)
            if resync is not None:
                self._resync(entry, resync.reason)
                return
            self._book_synced(entry)
        elif kind is Resync:
            self._resync(entry, action.reason)  # type: ignore[union-attr]
        # Ignore: stale update, or one of the old subscription

    def _resync(self, entry: _BookEntry, reason: str) -> None:
        if not entry.book.stale:
            self._book_stale(entry, reason)
        self._resubscribe(entry.topic)

    def _resubscribe(self, topic: str) -> None:
        """Unsubscribe ``topic`` and subscribe it again once the unsubscribe has left.

        Both go through the connection's control queue, which cancels an
        unsubscribe by a subscribe that follows it before it was sent: so the
        subscribe waits for the unsubscribe's Deferred (it fires when sent,
        Coinbase having no acknowledgement).
        """
        conn = self.pool.connection_of(topic)
        if conn is None or self._closed or topic in self._resubscribing:
            return
        self._resubscribing.add(topic)
        self.stats.resubscribes += 1

        def again(_: Any) -> None:
            if topic not in self._resubscribing:
                return  # done already (the connection dropped meanwhile)
            self._resubscribing.discard(topic)
            if self._closed or self.pool.connection_of(topic) is not conn:
                return  # released or failed meanwhile
            self._watch_subscribe(conn, topic, conn.subscribe([topic]))

        conn.unsubscribe([topic]).addBoth(again)

    def _book_stale(self, entry: _BookEntry, reason: str) -> None:
        self.stats.book_resyncs += 1
        entry.book.mark_stale(reason)
        self.hub.set_not_ready(entry.key)
        log.warn(
            "coinbase: {symbol} book resyncing: {reason}", symbol=entry.book.symbol, reason=reason
        )
        self.hub.publish(("status", None), BookResyncing(entry.book.symbol, reason))

    def _book_lost(self, symbol: str, reason: str) -> None:
        entry = self._book_entries.get(symbol)
        if entry is None:
            return
        entry.sync.reset()  # the reconnect's subscribe brings a snapshot
        if entry.book.synced and not entry.book.stale:
            self._book_stale(entry, reason)

    def _book_synced(self, entry: _BookEntry) -> None:
        book = entry.book
        if not self.hub.is_ready(entry.key):
            self.hub.set_ready(entry.key)
            self.hub.publish(("status", None), BookSynced(book.symbol, book.nonce))
        full = book.snapshot()
        self.hub.publish(
            entry.key,
            BookUpdate(book.symbol, full.bids, full.asks, book.nonce, book.timestamp, True, book),
        )

    # -- trades -----------------------------------------------------------------

    def _on_match(self, match: CoinbaseMatch) -> None:
        entry = self._trade_entries.get(match.symbol)
        if entry is None:
            return
        action = entry.sync.on_match(match)
        if type(action) is not EmitTrade:
            return  # duplicate or late
        if entry.first_id is None:
            entry.first_id = match.trade_id
        if action.missed is not None:
            self._fetch_missed(entry, action.missed)
        self._queue_trade(entry, action.trade)

    def _on_heartbeat(self, heartbeat: CoinbaseHeartbeat) -> None:
        entry = self._trade_entries.get(heartbeat.symbol)
        if entry is None:
            return
        action = entry.sync.on_heartbeat(heartbeat)
        if type(action) is MissedTrades:
            self._fetch_missed(entry, action)

    def _queue_trade(self, entry: _TradeEntry, trade: Trade) -> None:
        if entry.queue:
            entry.queue.append(trade)  # behind a REST fetch still on its way
        else:
            self._publish_trade(trade)

    def _fetch_missed(
        self, entry: _TradeEntry, missed: MissedTrades, at: int | None = None
    ) -> None:
        self.stats.missed_trades += missed.count
        log.info(
            "coinbase: {s} missed trades {a}..{b} ({r}); fetching",
            s=missed.symbol,
            a=missed.first_id,
            b=missed.last_id,
            r=missed.reason,
        )
        fetch = _Fetch()
        if at is None:
            entry.queue.append(fetch)
        else:
            entry.queue.insert(at, fetch)
        market_id = self.market(missed.symbol).id
        ensureDeferred(self._missed_pages(market_id, missed)).addBoth(
            self._missed_arrived, entry, fetch, missed
        )

    async def _missed_pages(self, market_id: str, missed: MissedTrades) -> list[Trade]:
        got: dict[str, Trade] = {}
        request = adapter.missed_trades_request(market_id, missed)
        while True:
            self.stats.missed_trade_fetches += 1
            payload = await self.rest.request(request)
            page = adapter.trades_in(adapter.parse_rest_trades(missed.symbol, payload), missed)
            for trade in page:
                got[trade.id] = trade
            if not page or len(got) >= missed.count:
                break
            oldest = min(int(t.id) for t in page)
            if oldest <= missed.first_id:
                break
            request = adapter.trades_request(
                market_id, min(oldest - missed.first_id, 1000), after=oldest
            )
        return sorted(got.values(), key=lambda t: int(t.id))

    def _missed_arrived(
        self, result: Any, entry: _TradeEntry, fetch: _Fetch, missed: MissedTrades
    ) -> None:
        fetch.done = True
        if isinstance(result, Failure):
            if not self._closed:
                log.warn(
                    "coinbase: {s} missed trades {a}..{b} unavailable: {e}",
                    s=missed.symbol,
                    a=missed.first_id,
                    b=missed.last_id,
                    e=result.value,
                )
        else:
            fetch.trades = result
        self._drain(entry)

    def _drain(self, entry: _TradeEntry) -> None:
        if self._trade_entries.get(entry.sync.symbol) is not entry:
            return  # released meanwhile
        queue = entry.queue
        while queue:
            head = queue[0]
            if type(head) is _Fetch:
                if not head.done:
                    return
                queue.pop(0)
                for trade in head.trades:
                    self._publish_trade(trade)
            else:
                queue.pop(0)
                self._publish_trade(head)  # type: ignore[arg-type]

    # -- streams ----------------------------------------------------------------

    def _fetch_markets(self) -> Deferred[MarketIndex]:
        return self.rest.request(adapter.products_request()).addCallback(adapter.market_index)

    def load_markets(
        self, reload: bool = False, markets: Any = None
    ) -> Deferred[dict[str, Market]]:
        def parser(result: Any) -> Any:
            self._parser = adapter.CoinbaseParser(self._index)  # type: ignore[arg-type]
            return result

        return super().load_markets(reload, markets).addCallback(parser)

    def _check_timeframe(self, timeframe: str) -> None:
        adapter.granularity_of(timeframe)  # BadRequest naming the valid ones

    def _topic(self, key: Key) -> str | None:
        channel, symbol = key
        market_id = self.market(symbol).id  # type: ignore[arg-type]
        if channel == "book":
            return adapter.level2_topic(market_id, BOOK_CHANNEL)
        if channel == "trades":
            return adapter.matches_topic(market_id)
        if channel == "ticker":
            return adapter.ticker_topic(market_id)
        return None  # candles: REST only

    def _start_stream(self, key: Key) -> None:
        if self._parser is None and self._index is not None:
            self._parser = adapter.CoinbaseParser(self._index)
        channel, symbol = key
        assert symbol is not None
        market_id = self.market(symbol).id
        opts = self.options
        if channel.startswith("ohlcv:"):
            timeframe = channel[6:]
            self.candles[(symbol, timeframe)] = CandleSeries(symbol, timeframe, opts.candles_limit)
            self._poll_candles(key)
            return
        topic = self._topic(key)
        assert topic is not None
        self._topic_key[topic] = key
        self._key_topic[key] = topic
        if channel == "book":
            book = OrderBook(symbol, opts.book_depth)
            self.books[symbol] = book
            self._book_entries[symbol] = _BookEntry(book, CoinbaseBookSync(symbol), key, topic)
        elif channel == "trades":
            self.trades[symbol] = TradeBuffer(opts.trades_limit)
            entry = _TradeEntry(key, CoinbaseTradeSync(symbol))
            self._trade_entries[symbol] = entry
            if opts.seed_from_rest:
                fetch = _Fetch()
                entry.queue.append(fetch)
                limit = min(opts.trades_limit, 1000)
                self.rest.request(adapter.trades_request(market_id, limit)).addBoth(
                    self._trades_seeded, entry, fetch
                )
            else:
                self.hub.set_ready(key)
        elif channel == "ticker" and opts.seed_from_rest:
            ds = [
                self.rest.request(adapter.ticker_request(market_id)),
                self.rest.request(adapter.stats_request(market_id)),
            ]
            gatherResults(ds, consumeErrors=True).addBoth(self._ticker_seeded, key)
        for t in adapter.with_heartbeats([topic]):
            if t != topic:
                n = self._heartbeats.get(t, 0)
                self._heartbeats[t] = n + 1
                if n:
                    continue
            self._add_topic(t, key if t == topic else None)

    def _add_topic(self, topic: str, key: Key | None) -> None:
        d = self.pool.add(topic)
        conn = self.pool.connection_of(topic)
        if conn is not None:
            self._watch_subscribe(conn, topic, d)
        if key is not None:
            d.addErrback(self._subscribe_failed, key)
        else:
            d.addErrback(lambda _: None)

    def _watch_subscribe(self, conn: Connection, topic: str, d: Deferred[None]) -> None:
        """Once the subscribe of ``topic`` has been sent, wait for Coinbase's verdict."""

        def sent(result: Any) -> Any:
            if self.pool.connection_of(topic) is conn:
                self._unconfirmed.setdefault(id(conn), {})[topic] = None
            return result

        d.addCallback(sent)

    def _subscribe_failed(self, failure: Failure, key: Key) -> None:
        if self._closed or key not in self._open:
            return  # released (or closing) before it was sent
        error = failure.value
        if not isinstance(error, ExchangeError):
            error = ExchangeError(str(error))
        log.error("coinbase: cannot subscribe {key}: {e}", key=key, e=error)
        self._stream_failed(key, error)

    def _trades_seeded(self, result: Any, entry: _TradeEntry, fetch: _Fetch) -> None:
        symbol = entry.sync.symbol
        fetch.done = True
        if isinstance(result, Failure):
            log.warn("coinbase: {s} trade history unavailable: {e}", s=symbol, e=result.value)
        else:
            try:
                fetch.trades = adapter.parse_rest_trades(symbol, result)
            except ExchangeError as e:
                log.warn("coinbase: {s} bad trade history: {e}", s=symbol, e=e)
            first, seeded = entry.first_id, fetch.trades
            if first is not None and seeded and int(seeded[-1].id) + 1 < first:
                # trades between the REST answer and the subscription's first match
                gap = MissedTrades(
                    symbol, int(seeded[-1].id) + 1, first - 1, "between seed and first match"
                )
                self._fetch_missed(entry, gap, at=1)
        self._drain(entry)
        if self._trade_entries.get(symbol) is entry:
            self.hub.set_ready(entry.key)

    def _ticker_seeded(self, result: Any, key: Key) -> None:
        if isinstance(result, Failure):
            error = result.value
            if isinstance(error, BaseException) and hasattr(error, "subFailure"):
                error = error.subFailure.value
            log.warn("coinbase: {k} ticker seed failed: {e}", k=key, e=error)
            return
        if key not in self._open or self.tickers.get(key[1]) is not None:  # type: ignore[arg-type]
            return
        try:
            ticker = adapter.parse_ticker(key[1], result[0], result[1])  # type: ignore[arg-type]
        except ExchangeError as e:
            log.warn("coinbase: bad ticker answer: {e}", e=e)
            return
        self._publish_ticker(ticker)

    # -- candles (REST) ---------------------------------------------------------

    def _poll_candles(self, key: Key) -> None:
        self._pollers.pop(key, None)
        symbol = key[1]
        timeframe = key[0][6:]
        if self._closed or key not in self._open:
            return
        req = adapter.candles_request(self.market(symbol).id, timeframe)  # type: ignore[arg-type]
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
            log.warn("coinbase: {k} candles unavailable: {e}", k=key, e=result.value)
        else:
            try:
                now = int(self.rest.answered_at * 1000)
                rows = adapter.parse_candles(symbol, timeframe, result, now)  # type: ignore[arg-type]
            except ExchangeError as e:
                log.warn("coinbase: bad candles answer: {e}", e=e)
            else:
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
        period = adapter.granularity_of(timeframe) * 1000
        n = min(limit or 300, 300)
        start = since // period * period
        end = start + period * n - 1000  # the last second of the n-th bucket
        req = adapter.candles_request(self.market(symbol).id, timeframe, start=start, end=end)
        now = int(self.clock.seconds() * 1000)

        def rows(payload: Any) -> list[list[Any]]:
            candles = adapter.parse_candles(symbol, timeframe, payload, now)
            return [ohlcv(c) for c in candles if c.timestamp >= since][:n]

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
        topic = self._forget_stream(key)
        if topic is None:
            return succeed(None)
        ds = [self.pool.remove(topic)]
        ds += [self.pool.remove(hb) for hb in self._release_heartbeat(topic)]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)

    def _release_heartbeat(self, topic: str) -> list[str]:
        _, product_id = adapter.topic_parts(topic)
        hb = adapter.heartbeat_topic(product_id)
        n = self._heartbeats.get(hb, 0) - 1
        if n > 0:
            self._heartbeats[hb] = n
            return []
        self._heartbeats.pop(hb, None)
        return [hb]

    def _forget_stream(self, key: Key) -> str | None:
        """Drop the local state of ``key``'s stream; returns its topic (None if not open)."""
        topic = self._key_topic.pop(key, None)
        if topic is None:
            return None
        self._topic_key.pop(topic, None)
        self._resubscribing.discard(topic)
        for pending in self._unconfirmed.values():
            pending.pop(topic, None)
        channel, symbol = key
        if channel == "book":
            self._book_entries.pop(symbol, None)  # type: ignore[arg-type]
            self.books.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "trades":
            self._trade_entries.pop(symbol, None)  # type: ignore[arg-type]
            self.trades.pop(symbol, None)  # type: ignore[arg-type]
        elif channel == "ticker":
            self.tickers.discard(symbol)  # type: ignore[arg-type]
        return topic

    def _shutdown(self) -> Deferred[None]:
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        self._pollers.clear()
        ds = [self.pool.close(), self.rest.close()]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)


def _parse_rest_error(status: int, headers: Any, body: bytes) -> ExchangeError:
    """The adapter's typed error; a 429 without ``Retry-After`` waits a second
    (the REST queue would otherwise pause for a minute)."""
    error = adapter.parse_rest_error(status, headers, body)
    if isinstance(error, RateLimitExceeded) and error.retry_after is None:
        error.retry_after = _RATE_LIMIT_PAUSE
    return error


def _named(topic: str, text: str) -> bool:
    """Whether an error text names ``topic``'s product (or, failing that, its channel)."""
    channel, product_id = topic.split(":", 1)
    if product_id in text:
        return True
    return f"{channel} " in text or f"{channel}," in text
