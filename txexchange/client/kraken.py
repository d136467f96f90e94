"""Kraken Spot (WebSocket v2): one public connection, books kept by checksum and resubscription.

Sits in the client layer: wires the Kraken adapter
(:mod:`txexchange.adapters.kraken`: topics, wire rules with exact number
decoding, parsing, REST request descriptions; and
:mod:`txexchange.adapters.kraken_book`: the pure CRC32-checksum state machine)
to connections, REST and the state layer.

Kraken's ``book`` channel is a depth-limited stream: a snapshot, then updates
of the changed levels, each carrying a CRC32 checksum over the top 10 levels.
There are no sequence numbers and no REST snapshot that could be joined to
the stream, so a book that fails its checksum is marked stale and
resubscribed (unsubscribe, then subscribe) for a fresh snapshot.  Trades,
tickers and candles come from the ``trade``, ``ticker`` and ``ohlc``
channels, seeded from REST (``Trades``, ``Ticker``, ``OHLC``).
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
from txexchange.adapters import kraken as adapter
from txexchange.adapters.kraken_book import (
    BOOK_DEPTHS,
    ApplyDelta,
    ApplySnapshot,
    KrakenBookMessage,
    KrakenBookSync,
    Resync,
    SnapshotTooOld,
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
    RateLimitExceeded,
    SubscriptionError,
)
from txexchange.events import BookDelta, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.state import CandleSeries, OrderBook, TradeBuffer, ohlcv
from txexchange.transport import (
    Connection,
    Disconnected,
    RetriesExhaustedEvent,
    StatusEvent,
    TransportOptions,
)

__all__ = [
    "REST_REQUESTS_PER_WINDOW",
    "REST_WINDOW",
    "SNAPSHOT_GRACE",
    "KrakenClient",
    "KrakenStats",
]

log = Logger()

#: REST budget.  Kraken throttles public REST per IP with a decaying call
#: counter (bursts of about 15, then about one call a second); the client
#: allows itself 15 requests per 15 s window.
REST_WINDOW = 15.0
REST_REQUESTS_PER_WINDOW = 15
#: Kraken's 429 usually comes without ``Retry-After``; its counter decays within seconds
_RATE_LIMIT_PAUSE = 5.0
#: without REST seeding, how long after its ack a trade or candle stream waits for
#: its snapshot before pull calls are answered anyway
SNAPSHOT_GRACE = 2.0
#: the ``TransportOptions.stall_timeout`` default, which the client replaces with
#: the adapter's :data:`~txexchange.adapters.kraken.STALL_TIMEOUT`
_DEFAULT_STALL = attrs.fields(TransportOptions).stall_timeout.default
#: the book depth of ``book_mode="diff"`` when neither ``book_depth`` nor
#: ``snapshot_limit`` asks for less: Kraken's deepest book
_MAX_DEPTH = BOOK_DEPTHS[-1]


def _kraken_depth(levels: int) -> int:
    """The smallest Kraken book depth holding ``levels`` levels (at most 1000)."""
    for depth in BOOK_DEPTHS:
        if depth >= levels:
            return depth
    return _MAX_DEPTH


class KrakenStats:
    """Counters of a client (read by the service's metrics)."""

    __slots__ = (
        "bad_levels",
        "book_resyncs",
        "checksum_failures",
        "exchange_errors",
        "malformed",
        "resubscriptions",
        "rollovers_requested",
        "unknown_messages",
    )

    def __init__(self) -> None:
        self.book_resyncs = 0
        self.checksum_failures = 0
        #: book levels the state layer refused (the book was then resynced)
        self.bad_levels = 0
        #: book unsubscribe + subscribe rounds (checksum failures, old snapshots)
        self.resubscriptions = 0
        self.malformed = 0
        self.unknown_messages = 0
        #: refusals (``success: false``) not consumed as a request's reply
        self.exchange_errors = 0
        #: maintenance notices acted on with a rollover
        self.rollovers_requested = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class _BookEntry:
    __slots__ = ("book", "key", "resubscribing", "sync", "topic")

    def __init__(self, book: OrderBook, sync: KrakenBookSync, key: Key, topic: str) -> None:
        self.book = book
        self.sync = sync
        self.key = key
        self.topic = topic
        #: an unsubscribe + subscribe round is under way
        self.resubscribing = False


class KrakenClient(ExchangeClient):
    """Kraken spot market data.  URL keys for ``urls=``: ``ws``, ``rest``
    (``ws_auth`` is accepted and unused).

    Books: ``book_mode="diff"`` (the default) subscribes the ``book`` channel
    at the smallest Kraken depth (10, 25, 100, 500, 1000) holding
    ``book_depth`` levels, or ``snapshot_limit`` levels (default 1000) when
    ``book_depth`` is not set; ``book_mode="partial"`` subscribes the
    smallest depth holding ``partial_depth`` levels and shows
    ``partial_depth``.  Either way the book is kept at exactly the
    subscribed depth and checked by Kraken's checksum after every message.

    ``rest_tap`` is handed to the :class:`~txexchange.client.rest.RestClient`
    (called with every answer of an unsigned REST request; the recorder uses it).
    """

    name = "kraken"

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
        # heartbeats come about every second: a 10 s silence is a dead link
        # (unless the user chose a stall timeout of their own)
        if transport is None:
            transport = TransportOptions(stall_timeout=adapter.STALL_TIMEOUT)
        elif transport.stall_timeout == _DEFAULT_STALL:
            transport = transport.replace(stall_timeout=adapter.STALL_TIMEOUT)
        super().__init__(
            reactor=reactor, clock=clock, options=options, transport=transport, markets=markets
        )
        self.urls = adapter.resolve_urls(urls)
        opts = self.options
        if opts.book_mode == "partial":
            if opts.partial_depth > _MAX_DEPTH:
                raise BadRequest(
                    f"Kraken partial_depth must be at most {_MAX_DEPTH}, not {opts.partial_depth}"
                )
            #: levels per side subscribed on the ``book`` channel
            self.book_depth = _kraken_depth(opts.partial_depth)
            shown = opts.partial_depth
            if opts.book_depth is not None:
                shown = min(shown, opts.book_depth)
            self._shown: int | None = shown
        else:
            wanted = opts.book_depth if opts.book_depth is not None else opts.snapshot_limit
            self.book_depth = _kraken_depth(wanted)
            self._shown = opts.book_depth
        self._rng = rng
        # weight_limit is a per-minute budget, scaled to the 15 s window and
        # capped at what Kraken's public REST counter allows
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
        self.rules = adapter.KrakenWireRules()
        self.pool = StreamPool(self._new_connection, self.rules.max_topics_per_connection)
        self.stats = KrakenStats()
        #: the last ``status`` channel state seen, per connection (by id)
        self.system_status: dict[int, str] = {}
        self._parser: adapter.KrakenParser | None = None
        #: book entries by market id (the v2 symbol the book channel names)
        self._book_entries: dict[str, _BookEntry] = {}
        self._topic_key: dict[str, Key] = {}
        self._key_topic: dict[Key, str] = {}
        self._pending_trades: dict[str, list[Trade]] = {}
        #: unseeded trade/candle streams acknowledged and waiting for their
        #: snapshot, by Kraken channel, oldest first; and their grace timers
        self._snapshot_wait: dict[str, list[Key]] = {}
        self._grace: dict[Key, Any] = {}

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
            # the next connection greets with its own status
            self.system_status.pop(id(conn), None)
            for topic in self.pool.topics_of(conn):
                key = self._topic_key.get(topic)
                if key is not None and key[0] == "book":
                    self._book_lost(key, "disconnected: " + event.reason)
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
        try:
            result = parser.parse(obj)
        except MalformedMessage as e:
            self.stats.malformed += 1
            log.warn("kraken: malformed message: {e}", e=e)
            return
        kind = type(result)
        if kind is list:
            for event in result:  # type: ignore[union-attr]
                ek = type(event)
                if ek is KrakenBookMessage:
                    self._on_book_message(event)
                elif ek is Trade:
                    self._on_trade(event)
                elif ek is Ticker:
                    if ("ticker", event.symbol) in self._open:
                        self._publish_ticker(event)
                elif ek is Candle:
                    self._publish_candle(event)
        elif kind is adapter.KrakenHeartbeat or kind is adapter.Pong:
            pass  # the transport's watchdog already saw the traffic
        elif kind is adapter.SystemStatus:
            self._on_system_status(conn, result)  # type: ignore[arg-type]
        elif kind is adapter.KrakenError:
            self.stats.exchange_errors += 1
            error = result.exception()  # type: ignore[union-attr]
            log.warn("kraken: error from {url}: {e}", url=conn.url, e=error)
        elif kind is Unknown:
            self.stats.unknown_messages += 1
            log.debug("kraken: {reason}", reason=result.reason)  # type: ignore[union-attr]
        # ControlReply (an ack the transport did not consume) and Instruments
        # (not subscribed by this client) need nothing
        if self._snapshot_wait and type(obj) is dict and obj.get("type") == "snapshot":
            self._snapshot_seen(obj.get("channel"), result)

    def _snapshot_seen(self, channel: Any, result: Any) -> None:
        """An unseeded trade or candle stream got its snapshot: pull calls may read it."""
        waiting = self._snapshot_wait.get(channel) if type(channel) is str else None
        if not waiting:
            return
        named = {_key_of(e) for e in result} if type(result) is list else set()
        # an empty snapshot names no pair: acks and snapshots come in order
        keys = [k for k in waiting if k in named] if named else waiting[:1]
        for key in keys:
            self._stop_waiting(key)
            self._ready_if_open(key)

    def _await_snapshot(self, key: Key) -> None:
        if key not in self._open or key in self._grace:
            return
        channel = "trade" if key[0] == "trades" else "ohlc"
        self._snapshot_wait.setdefault(channel, []).append(key)

        def anyway() -> None:
            self._grace.pop(key, None)
            self._stop_waiting(key)
            self._ready_if_open(key)

        self._grace[key] = self.clock.callLater(SNAPSHOT_GRACE, anyway)

    def _stop_waiting(self, key: Key) -> None:
        channel = "trade" if key[0] == "trades" else "ohlc"
        waiting = self._snapshot_wait.get(channel)
        if waiting is not None and key in waiting:
            waiting.remove(key)
            if not waiting:
                del self._snapshot_wait[channel]
        call = self._grace.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _on_system_status(self, conn: Connection, status: adapter.SystemStatus) -> None:
        before = self.system_status.get(id(conn))
        self.system_status[id(conn)] = status.system
        if before == status.system or (before is None and status.online):
            return  # the greeting of a healthy connection, or no change
        log.info(
            "kraken: {url} system status {before} -> {now}",
            url=conn.url,
            before=before or "(connect)",
            now=status.system,
        )
        self.hub.publish(("status", None), status)
        if status.system == "maintenance" and before is not None:
            # Kraken restarts its engine in maintenance and cuts the sockets:
            # move to a fresh connection now rather than lose it mid-stream.
            # (Only on a change seen on an established connection, so that a
            # fresh connection greeted with "maintenance" does not loop.)
            self.stats.rollovers_requested += 1
            log.info("kraken: maintenance; rolling {url} over", url=conn.url)
            conn.rollover().addErrback(self._rollover_failed, conn)

    def _rollover_failed(self, failure: Failure, conn: Connection) -> None:
        if not self._closed:
            log.warn("kraken: rollover of {url} failed: {e}", url=conn.url, e=failure.value)

    # -- books ------------------------------------------------------------------

    def _on_book_message(self, message: KrakenBookMessage) -> None:
        entry = self._book_entries.get(message.event.symbol)
        if entry is None:
            return
        sync = entry.sync
        action = sync.on_message(message)
        kind = type(action)
        book = entry.book
        if kind is ApplyDelta:
            delta: BookDelta = action.delta  # type: ignore[union-attr]
            try:
                book.apply_delta(delta)
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            book.truncate(action.depth)  # type: ignore[union-attr]
            resync = sync.verify(book.top)
            if resync is not None:
                self.stats.checksum_failures += 1
                self._resync(entry, resync.reason)
                return
            self.hub.publish(
                entry.key,
                BookUpdate(book.symbol, delta.bids, delta.asks, None, delta.timestamp, False, book),
            )
        elif kind is ApplySnapshot:
            try:
                book.apply_snapshot(action.snapshot)  # type: ignore[union-attr]
            except ValueError as e:
                self._bad_levels(entry, e)
                return
            book.truncate(action.depth)  # type: ignore[union-attr]
            resync = sync.verify(book.top)
            if resync is not None:
                self.stats.checksum_failures += 1
                self._resync(entry, resync.reason)
                return
            self._book_synced(entry)
        elif kind is SnapshotTooOld:
            log.debug(
                "kraken: {s} {r}; resubscribing again",
                s=book.symbol,
                r=action.reason,  # type: ignore[union-attr]
            )
            self._resubscribe(entry)
        elif kind is Resync:  # not returned by on_message today; handled all the same
            self._resync(entry, action.reason)  # type: ignore[union-attr]
        # Ignore: before the first snapshot, while resyncing, an old snapshot

    def _bad_levels(self, entry: _BookEntry, error: ValueError) -> None:
        # the book marked itself stale (part of the message may be applied)
        self.stats.bad_levels += 1
        resync = entry.sync.invalidate(f"bad level: {error}")
        self._resync(entry, resync.reason)

    def _resync(self, entry: _BookEntry, reason: str) -> None:
        self._book_stale(entry, reason)
        self._resubscribe(entry)

    def _book_stale(self, entry: _BookEntry, reason: str) -> None:
        self.stats.book_resyncs += 1
        entry.book.mark_stale(reason)
        self.hub.set_not_ready(entry.key)
        log.warn(
            "kraken: {symbol} book resyncing: {reason}", symbol=entry.book.symbol, reason=reason
        )
        self.hub.publish(("status", None), BookResyncing(entry.book.symbol, reason))

    def _book_lost(self, key: Key, reason: str) -> None:
        entry = self._book_entries.get(self.market(key[1]).id)  # type: ignore[arg-type]
        if entry is None:
            return
        # the reconnected (or next) subscription starts with a new snapshot
        entry.sync.reset()
        if entry.book.synced and not entry.book.stale:
            self._book_stale(entry, reason)

    def _resubscribe(self, entry: _BookEntry) -> None:
        """Unsubscribe, then (once Kraken acknowledged it) subscribe for a new snapshot.

        The subscribe waits for the unsubscribe's ack: queued together, the
        transport would cancel the pair and no new snapshot would come.
        """
        if entry.resubscribing or self._closed:
            return
        entry.resubscribing = True
        self.stats.resubscriptions += 1
        topic = entry.topic

        def subscribe(_: Any) -> None:
            if self._closed or self._key_topic.get(entry.key) != topic:
                entry.resubscribing = False
                return  # released (or closing) meanwhile
            d = self.pool.add(topic)
            d.addBoth(done)
            d.addErrback(self._subscribe_failed, entry.key)

        def done(result: Any) -> Any:
            entry.resubscribing = False
            return result

        self.pool.remove(topic).addErrback(
            lambda f: log.warn("kraken: unsubscribe {t} failed: {e}", t=topic, e=f.value)
        ).addCallback(subscribe)

    def _book_synced(self, entry: _BookEntry) -> None:
        book = entry.book
        # the event and the new book first, then the pull calls it releases (which
        # may run their callers' code, subscriptions included, before returning)
        self.hub.publish(("status", None), BookSynced(book.symbol, book.nonce))
        full = book.snapshot()
        self.hub.publish(
            entry.key,
            BookUpdate(book.symbol, full.bids, full.asks, book.nonce, book.timestamp, True, book),
        )
        self.hub.set_ready(entry.key)

    # -- trades -----------------------------------------------------------------

    def _on_trade(self, trade: Trade) -> None:
        pending = self._pending_trades.get(trade.symbol)
        if pending is not None:
            pending.append(trade)  # REST seed still on its way
            return
        buf = self.trades.get(trade.symbol)
        if buf is None:
            return
        latest = buf.latest
        # Kraken's trade ids are sequential per pair: the snapshot of the last
        # 50 trades a (re)subscription brings must not go in again out of order
        if latest is not None and _older(trade.id, latest.id):
            return
        self._publish_trade(trade)

    # -- streams ----------------------------------------------------------------

    def _fetch_markets(self) -> Deferred[MarketIndex]:
        return self.rest.request(adapter.asset_pairs_request()).addCallback(adapter.market_index)

    def load_markets(
        self, reload: bool = False, markets: Any = None
    ) -> Deferred[dict[str, Market]]:
        def parser(result: Any) -> Any:
            self._parser = adapter.KrakenParser(self._index)  # type: ignore[arg-type]
            return result

        return super().load_markets(reload, markets).addCallback(parser)

    def _check_timeframe(self, timeframe: str) -> None:
        if timeframe not in adapter.TIMEFRAMES:
            raise BadRequest(
                f"unsupported Kraken timeframe {timeframe!r}; valid: "
                + " ".join(adapter.TIMEFRAMES)
            )

    def _topic(self, key: Key) -> str:
        channel, symbol = key
        market_id = self.market(symbol).id  # type: ignore[arg-type]
        if channel == "book":
            return adapter.book_topic(market_id, self.book_depth)
        if channel == "trades":
            return adapter.trade_topic(market_id)
        if channel == "ticker":
            return adapter.ticker_topic(market_id)
        return adapter.ohlc_topic(market_id, channel[6:])

    def _start_stream(self, key: Key) -> None:
        if self._parser is None and self._index is not None:
            self._parser = adapter.KrakenParser(self._index)
        channel, symbol = key
        assert symbol is not None
        market = self.market(symbol)
        topic = self._topic(key)
        opts = self.options
        if channel == "book":
            sync = adapter.book_sync(market, self.book_depth)  # BadRequest: no precisions
            book = OrderBook(symbol, self._shown)
            self.books[symbol] = book
            self._book_entries[market.id] = _BookEntry(book, sync, key, topic)
        self._topic_key[topic] = key
        self._key_topic[key] = topic
        pair = adapter.rest_pair(market)
        seeding = opts.seed_from_rest
        if channel == "trades":
            self.trades[symbol] = TradeBuffer(opts.trades_limit)
            if seeding:
                self._pending_trades[symbol] = []
                count = min(opts.trades_limit, 1000)
                self.rest.request(adapter.trades_request(pair, count=count)).addBoth(
                    self._trades_seeded, symbol, key
                )
        elif channel == "ticker":
            if seeding:
                self.rest.request(adapter.ticker_request(pair)).addBoth(
                    self._ticker_seeded, symbol, key
                )
        elif channel != "book":
            timeframe = channel[6:]
            self.candles[(symbol, timeframe)] = CandleSeries(symbol, timeframe, opts.candles_limit)
            if seeding:
                req = adapter.candles_request(pair, timeframe)
                self.rest.request(req).addBoth(self._candles_seeded, symbol, timeframe, key)
        subscribed = self.pool.add(topic)
        if not seeding and (channel == "trades" or channel.startswith("ohlcv:")):
            # ready with the snapshot (trades: the last 50; candles: the recent
            # ones) that follows the ack
            subscribed.addCallback(lambda _: self._await_snapshot(key))
        subscribed.addErrback(self._subscribe_failed, key)

    def _ready_if_open(self, key: Key) -> None:
        if key in self._open:
            self.hub.set_ready(key)

    def _subscribe_failed(self, failure: Failure, key: Key) -> None:
        if self._closed or key not in self._open:
            return  # released (or closing) before the exchange acknowledged it
        error = failure.value
        if isinstance(error, SubscriptionError):
            # "<topic>: <Kraken's refusal> (<symbol>)": type it by Kraken's text
            text = str(error).split(": ", 1)[-1]
            cls = adapter.error_class(text, SubscriptionError)
            if cls is not SubscriptionError:
                error = cls(str(error))
        elif not isinstance(error, ExchangeError):
            error = ExchangeError(str(error))
        log.error("kraken: cannot subscribe {key}: {e}", key=key, e=error)
        self._stream_failed(key, error)

    def _trades_seeded(self, result: Any, symbol: str, key: Key) -> None:
        pending = self._pending_trades.pop(symbol, None) or []
        buf = self.trades.get(symbol)
        if buf is None:
            return
        if isinstance(result, Failure):
            log.warn("kraken: {s} trade history unavailable: {e}", s=symbol, e=result.value)
        else:
            try:
                buf.extend(adapter.parse_rest_trades(symbol, result))
            except ExchangeError as e:
                log.warn("kraken: {s} bad trade history: {e}", s=symbol, e=e)
        for trade in pending:
            self._on_trade(trade)
        self.hub.set_ready(key)

    def _ticker_seeded(self, result: Any, symbol: str, key: Key) -> None:
        if isinstance(result, Failure):
            log.warn("kraken: {k} ticker seed failed: {e}", k=key, e=result.value)
            return
        if key not in self._open or self.tickers.get(symbol) is not None:
            return  # released, or the stream's snapshot came first (and is newer)
        try:
            ticker = adapter.parse_rest_ticker(symbol, result)
        except ExchangeError as e:
            log.warn("kraken: bad ticker answer: {e}", e=e)
            return
        self._publish_ticker(ticker)

    def _candles_seeded(self, result: Any, symbol: str, timeframe: str, key: Key) -> None:
        series = self.candles.get((symbol, timeframe))
        if series is None:
            return
        if isinstance(result, Failure):
            log.warn(
                "kraken: {s} {tf} candle history unavailable: {e}",
                s=symbol,
                tf=timeframe,
                e=result.value,
            )
        else:
            try:
                history = adapter.parse_candles(symbol, timeframe, result)
            except ExchangeError as e:
                log.warn("kraken: bad OHLC answer: {e}", e=e)
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
        assert symbol is not None
        if channel == "book":
            self._book_entries.pop(self.market(symbol).id, None)
            self.books.pop(symbol, None)
        elif channel == "trades":
            self._stop_waiting(key)
            self.trades.pop(symbol, None)
            self._pending_trades.pop(symbol, None)
        elif channel == "ticker":
            self.tickers.discard(symbol)
        else:
            self._stop_waiting(key)
            self.candles.pop((symbol, channel[6:]), None)
        return topic

    def _fetch_ohlcv_history(
        self, symbol: str, timeframe: str, since: int, limit: int | None
    ) -> Deferred[list[list[Any]]]:
        # Kraken's OHLC ``since`` (seconds) returns candles opening after it
        pair = adapter.rest_pair(self.market(symbol))
        req = adapter.candles_request(pair, timeframe, since=max(since // 1000 - 1, 0))

        def rows(payload: Any) -> list[list[Any]]:
            candles = adapter.parse_candles(symbol, timeframe, payload)
            chosen = [ohlcv(c) for c in candles if c.timestamp >= since]
            return chosen if limit is None else chosen[:limit]

        return self.rest.request(req).addCallback(rows)

    def _shutdown(self) -> Deferred[None]:
        for key in list(self._grace):
            self._stop_waiting(key)
        ds = [self.pool.close(), self.rest.close()]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)


def _key_of(event: Any) -> Key:
    """The stream key a trade or candle belongs to."""
    if type(event) is Candle:
        return (f"ohlcv:{event.timeframe}", event.symbol)
    return ("trades", event.symbol)


def _older(trade_id: str, latest_id: str) -> bool:
    """True if sequential trade id ``trade_id`` is not newer than ``latest_id``."""
    if trade_id.isdigit() and latest_id.isdigit():
        return int(trade_id) <= int(latest_id)
    return False


def _parse_rest_error(status: int, headers: Any, body: bytes) -> ExchangeError:
    """The adapter's typed error; a rate limit without ``Retry-After`` pauses a few
    seconds (the REST queue would otherwise pause for a minute)."""
    error = adapter.parse_rest_error(status, headers, body)
    if isinstance(error, RateLimitExceeded) and error.retry_after is None:
        error.retry_after = _RATE_LIMIT_PAUSE
    return error
