"""The unified client: ccxt-named pull methods and push subscriptions over live state.

Sits in the middle of the flow.  :class:`ExchangeClient` holds what every
exchange shares — markets, the state stores, the delivery hub, stream
reference-keeping, and the pull/push surface — and leaves to its subclass
(one per exchange, e.g. :class:`~txexchange.client.binance.BinanceClient`)
how a stream is opened on the wire and how messages become state.

Streams are named ``(channel, symbol)``; channels are ``book``, ``trades``,
``ticker``, ``ohlcv:<timeframe>`` and ``status`` (symbol ``None``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from txexchange.client.account import PRIVATE_CHANNELS
from txexchange.client.private import PrivateMethods
from txexchange.credentials import Credentials
from txexchange.delivery import Hub, ObserverHandle, StreamFailed, UpdateStream
from txexchange.delivery.hub import Key
from txexchange.errors import BadRequest, BadSymbol, ClientClosed, ExchangeError
from txexchange.events import Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.state import (
    CandleSeries,
    OrderBook,
    OrderBookSnapshot,
    TickerStore,
    TradeBuffer,
    ohlcv,
    ticker_to_ccxt,
    to_ccxt,
)
from txexchange.transport import TransportOptions

__all__ = ["CHANNELS", "ClientOptions", "ExchangeClient"]

log = Logger()

CHANNELS = ("book", "trades", "ticker", "ohlcv:<timeframe>", "status", *PRIVATE_CHANNELS)


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value <= 0:
        raise BadRequest(f"option {attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ClientOptions:
    """What a client keeps and how long pull calls wait (``exchange(name, **options)``)."""

    #: pull calls wait at most this long for a stream to (re)sync, then fail with ResyncTimeout
    resync_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: trades kept per symbol (ring buffer)
    trades_limit: int = attrs.field(default=1000, validator=_positive)
    #: closed candles kept per symbol and timeframe
    candles_limit: int = attrs.field(default=1000, validator=_positive)
    #: levels shown per side in books handed out (all levels are kept internally)
    book_depth: int | None = attrs.field(default=None, validator=_positive)
    #: "diff" (local book from diffs + REST snapshot) or "partial" (exchange's top-N stream)
    book_mode: str = attrs.field(default="diff")
    #: levels of the partial book stream (Binance: 5, 10 or 20)
    partial_depth: int = attrs.field(default=20, validator=_positive)
    #: book update speed in ms where the exchange offers a choice (Binance: 100 or 1000)
    update_speed: int = attrs.field(default=100, validator=_positive)
    #: levels asked for in a REST book snapshot (Binance weights: <=100: 5, <=500: 25, <=1000: 50)
    snapshot_limit: int = attrs.field(default=1000, validator=_positive)
    #: seed trades, tickers and candles from REST when their stream opens
    seed_from_rest: bool = True
    #: seconds a REST request may take before it counts as timed out (then retried if it
    #: is a read)
    rest_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: REST request-weight budget per minute (the exchange's published limit)
    weight_limit: int = attrs.field(default=6000, validator=_positive)
    #: values an async iterator keeps for a slow consumer (books keep only the latest)
    stream_maxlen: int = attrs.field(default=1000, validator=_positive)
    #: where orders are placed and cancelled: "ws" (the exchange's WebSocket API,
    #: where it has one) or "rest"
    trade_over: str = attrs.field(default="ws")
    #: ms a signed request stays valid after its timestamp (Binance recvWindow,
    #: Bybit X-BAPI-RECV-WINDOW); None: the exchange's default (5000)
    recv_window: int | None = attrs.field(default=None, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.trade_over not in ("ws", "rest"):
            raise BadRequest(f"option trade_over must be 'ws' or 'rest', got {self.trade_over!r}")
        if self.recv_window is not None and self.recv_window > 60_000:
            raise BadRequest(f"option recv_window must be at most 60000 ms, got {self.recv_window}")
        if self.book_mode not in ("diff", "partial"):
            raise BadRequest(
                f"option book_mode must be 'diff' or 'partial', got {self.book_mode!r}"
            )

    @classmethod
    def names(cls) -> list[str]:
        return [a.name for a in attrs.fields(cls)]


class ExchangeClient(PrivateMethods):
    """Live state of one exchange, by pull (``fetch_*``) and push (observers, ``watch_*``).

    Not constructed directly: use :func:`txexchange.exchange`.
    """

    name = "exchange"

    def __init__(
        self,
        *,
        reactor: Any = None,
        clock: Any = None,
        options: ClientOptions | None = None,
        transport: TransportOptions | None = None,
        markets: Iterable[Market] | MarketIndex | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.options = options or ClientOptions()
        self.transport_options = transport or TransportOptions()
        self.hub = Hub(self.clock, on_unused=self._maybe_release)
        self.books: dict[str, OrderBook] = {}
        self.trades: dict[str, TradeBuffer] = {}
        self.tickers = TickerStore()
        self.candles: dict[tuple[str, str], CandleSeries] = {}
        self._index: MarketIndex | None = None
        self._markets_d: _Shared | None = None
        self._open: set[Key] = set()
        self._held: set[Key] = set()
        self._closed = False
        self._close_d: _Shared | None = None
        #: API credentials for the private methods (``exchange()`` sets them)
        self.credentials = Credentials()
        self._private_account = None
        # set by _arm_shutdown() once the client starts doing anything
        self._shutdown_trigger: Any = None
        if markets is not None:
            self._index = (
                markets
                if isinstance(markets, MarketIndex)
                else MarketIndex.from_markets(markets, self.name)
            )

    def __repr__(self) -> str:
        n = 0 if self._index is None else len(self._index)
        return f"<{type(self).__name__} markets={n} streams={len(self._open)}>"

    # -- markets ----------------------------------------------------------------

    @property
    def markets(self) -> dict[str, Market]:
        """Markets by unified symbol (empty until :meth:`load_markets`)."""
        return {} if self._index is None else dict(self._index.by_symbol)

    @property
    def symbols(self) -> list[str]:
        return [] if self._index is None else self._index.symbols

    def load_markets(
        self, reload: bool = False, markets: Iterable[Market] | None = None
    ) -> Deferred[dict[str, Market]]:
        """Load the exchange's market list once (or take ``markets``); fires with it."""
        self._arm_shutdown()
        if markets is not None:
            self._index = MarketIndex.from_markets(markets, self.name)
        if self._index is not None and not reload:
            return succeed(self.markets)
        if self._markets_d is None or reload:

            def loaded(index: MarketIndex) -> MarketIndex:
                self._index = index
                self._markets_d = None
                log.info("{name}: {n} markets loaded", name=self.name, n=len(index))
                return index

            def failed(f: Failure) -> Failure:
                self._markets_d = None
                log.error("{name}: loading markets failed: {e}", name=self.name, e=f.value)
                return f

            self._markets_d = _Shared(self._fetch_markets().addCallbacks(loaded, failed))
        return self._markets_d.wait().addCallback(lambda _: self.markets)

    def market(self, symbol: str) -> Market:
        """The market of ``symbol``; :class:`BadSymbol` if unknown or markets not loaded."""
        if self._index is None:
            raise BadSymbol(f"{self.name}: markets are not loaded; call load_markets() first")
        return self._index.market(symbol)

    def _with_markets(self) -> Deferred[Any]:
        if self._index is not None:
            return succeed(self._index)
        return self.load_markets()

    # -- streams ----------------------------------------------------------------

    def _key(self, channel: str, symbol: str | None) -> Key:
        if channel == "status":
            return ("status", None)
        if channel in ("book", "trades", "ticker") or channel.startswith("ohlcv:"):
            if channel.startswith("ohlcv:"):
                self._check_timeframe(channel[6:])
            if not isinstance(symbol, str):
                raise BadSymbol(
                    f"channel {channel!r} needs a symbol like 'BTC/USDT', got {symbol!r}"
                )
            if self._index is not None:
                self.market(symbol)
            return (channel, symbol)
        raise BadRequest(f"unknown channel {channel!r}; valid: {', '.join(CHANNELS)}")

    def _ensure_open(self, key: Key) -> None:
        """Open the stream of ``key`` (markets must be loaded)."""
        if key in self._open or key[0] == "status" or self._closed:
            return
        self._arm_shutdown()
        self._open.add(key)
        try:
            self._start_stream(key)
        except ExchangeError as e:
            self._open.discard(key)
            self.hub.fail(key, e)
            raise

    def _open_later(self, key: Key) -> Deferred[None]:
        """Open ``key`` once markets are loaded; failures reach the key's waiters."""

        def go(_: Any) -> None:
            self.market(key[1])  # type: ignore[arg-type]
            self._ensure_open(key)

        def failed(f: Any) -> None:
            err = f.value if isinstance(f.value, Exception) else ExchangeError(str(f.value))
            log.error("{name}: cannot open {key}: {err}", name=self.name, key=key, err=err)
            self.hub.fail(key, err)
            self.hub.publish(("status", None), StreamFailed(key[0], key[1], err))
            return None

        return self._with_markets().addCallback(go).addErrback(failed)

    def _hold(self, key: Key) -> None:
        self._held.add(key)

    def _maybe_release(self, key: Key) -> None:
        if key in self._held or self.hub.observer_count(key) or key not in self._open:
            return
        self._open.discard(key)
        self.hub.set_not_ready(key)
        self._stop_stream(key)

    def unsubscribe(self, channel: str, symbol: str | None = None) -> Deferred[None]:
        """Release the pull/watch hold on a stream; it closes when nobody uses it."""
        key = self._key(channel, symbol)
        self._held.discard(key)
        if self.hub.observer_count(key) or key not in self._open:
            return succeed(None)
        self._open.discard(key)
        self.hub.set_not_ready(key)
        return self._stop_stream(key)

    unwatch = unsubscribe

    # -- pull -------------------------------------------------------------------

    def _pull(self, key: Key, read: Callable[[], Any], what: str) -> Deferred[Any]:
        if self._closed:
            return fail(ClientClosed(f"{self.name} client is closed"))
        if self._index is not None and self.hub.is_ready(key):
            try:
                return succeed(read())
            except ExchangeError as e:
                return fail(e)
        return ensureDeferred(self._pull_slow(key, read, what))

    async def _pull_slow(self, key: Key, read: Callable[[], Any], what: str) -> Any:
        await self._with_markets()
        key = self._key(key[0], key[1])  # validates the symbol now that markets are in
        self._hold(key)
        # wait before opening: a stream that fails at once fails this call too
        ready = self.hub.when_ready(key, self.options.resync_timeout, f"{self.name} {what}")
        try:
            self._ensure_open(key)
        except ExchangeError:
            ready.addErrback(lambda _: None)  # the same error is raised here
            ready.cancel()
            raise
        await ready
        return read()

    def fetch_order_book(
        self, symbol: str, limit: int | None = None
    ) -> Deferred[OrderBookSnapshot]:
        """The merged book now (a frozen snapshot; ``limit`` levels per side)."""
        return self._pull(
            ("book", symbol), lambda: self.books[symbol].snapshot(limit), f"{symbol} order book"
        )

    def fetch_order_books(
        self, symbols: Iterable[str] | None = None, limit: int | None = None
    ) -> Deferred[dict[str, OrderBookSnapshot]]:
        """Books of several symbols, by symbol (all subscribed books if ``symbols`` is None)."""
        wanted = list(symbols) if symbols is not None else sorted(self.books)
        ds = [self.fetch_order_book(s, limit) for s in wanted]
        return _gather(ds).addCallback(lambda books: dict(zip(wanted, books, strict=True)))

    def fetch_ticker(self, symbol: str) -> Deferred[dict[str, Any]]:
        """Latest ticker (ccxt shape)."""

        def read() -> dict[str, Any]:
            ticker = self.tickers.get(symbol)
            if ticker is None:
                raise ExchangeError(f"no ticker for {symbol} yet")
            return ticker_to_ccxt(ticker)

        return self._pull(("ticker", symbol), read, f"{symbol} ticker")

    def fetch_tickers(self, symbols: Iterable[str] | None = None) -> Deferred[dict[str, Any]]:
        """Tickers of several symbols (all subscribed tickers if ``symbols`` is None)."""
        wanted = list(symbols) if symbols is not None else sorted(self.tickers)
        ds = [self.fetch_ticker(s) for s in wanted]
        return _gather(ds).addCallback(lambda ts: dict(zip(wanted, ts, strict=True)))

    def fetch_trades(
        self, symbol: str, since: int | None = None, limit: int | None = None
    ) -> Deferred[list[dict[str, Any]]]:
        """Recent trades (ccxt shape), ``since``/``limit`` as ccxt."""

        def read() -> list[dict[str, Any]]:
            return [to_ccxt(t) for t in self.trades[symbol].select(since, limit)]

        return self._pull(("trades", symbol), read, f"{symbol} trades")

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
    ) -> Deferred[list[list[Any]]]:
        """Candles ``[timestamp, open, high, low, close, volume]``, the forming one last."""
        channel = f"ohlcv:{timeframe}"
        self._check_timeframe(timeframe)

        def read() -> list[list[Any]]:
            return self.candles[(symbol, timeframe)].select(since, limit)

        d = self._pull((channel, symbol), read, f"{symbol} {timeframe} candles")
        if since is None:
            return d

        def maybe_history(rows: list[list[Any]]) -> Any:
            series = self.candles[(symbol, timeframe)]
            oldest = series.candles(None, None)
            if oldest and oldest[0].timestamp <= since:
                return rows
            return self._fetch_ohlcv_history(symbol, timeframe, since, limit)

        return d.addCallback(maybe_history)

    # -- push -------------------------------------------------------------------

    def subscribe(
        self, channel: str, symbol: str | None, observer: Callable[[Any], Any]
    ) -> ObserverHandle:
        """Call ``observer`` with every update of a stream, in order; ``handle.stop()`` ends it.

        Book observers get :class:`~txexchange.delivery.BookUpdate`; trades,
        tickers and candles their typed events; ``"status"`` (symbol None)
        connection and integrity events.  An observer that raises is logged
        and skipped.  Unknown symbols raise :class:`BadSymbol` at once if
        markets are loaded, else fail the stream once they are.
        """
        if self._closed:
            raise ClientClosed(f"{self.name} client is closed")
        if channel in PRIVATE_CHANNELS:
            return self._subscribe_private(channel, symbol, observer)
        key = self._key(channel, symbol)
        handle = self.hub.add_observer(key, observer)
        if key[0] != "status":
            if self._index is not None:
                self._ensure_open(key)
            else:
                self._open_later(key)
        return handle

    def _watch(self, key: Key, convert: Callable[[Any], Any]) -> Deferred[Any]:
        if self._closed:
            return fail(ClientClosed(f"{self.name} client is closed"))
        try:
            key = self._key(*key)
        except ExchangeError as e:
            return fail(e)
        d = self.hub.watch(key, convert)
        self._hold(key)
        if self._index is not None:
            # a failure to open reaches the watcher through hub.fail
            with contextlib.suppress(ExchangeError):
                self._ensure_open(key)
        else:
            self._open_later(key)
        return d

    def watch_order_book(
        self, symbol: str, limit: int | None = None
    ) -> Deferred[OrderBookSnapshot]:
        """Fires with the book after its next update."""
        return self._watch(("book", symbol), lambda ev: ev.book(limit))

    def watch_ticker(self, symbol: str) -> Deferred[dict[str, Any]]:
        """Fires with the ticker after its next update."""
        return self._watch(("ticker", symbol), ticker_to_ccxt)

    def watch_trades(self, symbol: str) -> Deferred[list[dict[str, Any]]]:
        """Fires with the next trade(s), as a list of ccxt trades."""
        return self._watch(("trades", symbol), lambda t: [to_ccxt(t)])

    def watch_ohlcv(self, symbol: str, timeframe: str = "1m") -> Deferred[list[list[Any]]]:
        """Fires with the candle that changed next, as ``[[ts, o, h, l, c, v]]``."""
        self._check_timeframe(timeframe)
        return self._watch((f"ohlcv:{timeframe}", symbol), lambda c: [ohlcv(c)])

    def stream(self, channel: str, symbol: str | None = None) -> UpdateStream:
        """An async iterator over a stream's updates, for ``async for`` in coroutines.

        Yields what the matching ``watch_*`` fires with.  Books yield only the
        latest state to a slow consumer; other channels keep up to
        ``stream_maxlen`` values.  ``close()`` it when done.
        """
        if channel in PRIVATE_CHANNELS:
            return self._stream_private(channel, symbol, self.options.stream_maxlen)
        key = self._key(channel, symbol)
        convert = _CONVERTERS.get(key[0].split(":")[0], lambda x: x)
        s = UpdateStream(
            self.hub, key, convert, latest_only=key[0] == "book", maxlen=self.options.stream_maxlen
        )
        if key[0] != "status":
            if self._index is not None:
                self._ensure_open(key)
            else:
                self._open_later(key)
        return s

    # -- life cycle -------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Close every connection (close handshake), stop timers, fail pending calls."""
        if self._close_d is None:
            if self._shutdown_trigger is not None:
                self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
                self._shutdown_trigger = None
            self._closed = True
            self.hub.close()
            self._close_d = _Shared(
                _gather([self._close_private(), self._shutdown()]).addCallback(lambda _: None)
            )
        return self._close_d.wait()

    def _arm_shutdown(self) -> None:
        """Make ``reactor.stop()`` call :meth:`close` before the reactor goes down.

        Armed on first use rather than in ``__init__``, so that a client whose
        construction failed, or that never did anything, is left alone.
        """
        if self._shutdown_trigger is None and not self._closed:
            add = getattr(self.reactor, "addSystemEventTrigger", None)
            if add is not None:
                self._shutdown_trigger = add("before", "shutdown", self._close_at_shutdown)

    def _close_at_shutdown(self) -> Deferred[None]:
        self._shutdown_trigger = None  # firing: it must not be removed any more
        return self.close()

    # -- for subclasses ---------------------------------------------------------

    def _fetch_markets(self) -> Deferred[MarketIndex]:
        raise NotImplementedError

    def _check_timeframe(self, timeframe: str) -> None:
        raise NotImplementedError

    def _start_stream(self, key: Key) -> None:
        raise NotImplementedError

    def _stop_stream(self, key: Key) -> Deferred[None]:
        raise NotImplementedError

    def _fetch_ohlcv_history(
        self, symbol: str, timeframe: str, since: int, limit: int | None
    ) -> Deferred[list[list[Any]]]:
        raise NotImplementedError

    def _shutdown(self) -> Deferred[None]:
        raise NotImplementedError

    def _stream_failed(self, key: Key, error: Exception) -> None:
        raise NotImplementedError

    def _subscribe_failed(self, failure: Failure, key: Key) -> None:
        """Errback of a stream's subscription: the stream fails (unless already released)."""
        if self._closed or key not in self._open:
            return  # released (or closing) before the exchange acknowledged it
        error = failure.value
        if not isinstance(error, ExchangeError):
            error = ExchangeError(str(error))
        log.error("{name}: cannot subscribe {key}: {e}", name=self.name, key=key, e=error)
        self._stream_failed(key, error)

    # -- state helpers for subclasses -------------------------------------------

    def _publish_trade(self, trade: Trade) -> None:
        buf = self.trades.get(trade.symbol)
        if buf is not None and buf.append(trade):
            self.hub.publish(("trades", trade.symbol), trade)

    def _publish_ticker(self, ticker: Ticker) -> None:
        merged = self.tickers.update(ticker)
        key = ("ticker", ticker.symbol)
        if not self.hub.is_ready(key) and key in self._open:
            self.hub.set_ready(key)
        self.hub.publish(key, merged)

    def _publish_candle(self, candle: Candle) -> None:
        series = self.candles.get((candle.symbol, candle.timeframe))
        if series is not None and series.update(candle):
            self.hub.publish((f"ohlcv:{candle.timeframe}", candle.symbol), candle)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "book": lambda ev: ev.book(),
    "ticker": ticker_to_ccxt,
    "trades": lambda t: [to_ccxt(t)],
    "ohlcv": lambda c: [ohlcv(c)],
}


class _Shared:
    """One Deferred's result handed to any number of waiters, now or later."""

    _UNSET: Any = object()

    def __init__(self, d: Deferred[Any]) -> None:
        self._result: Any = self._UNSET
        self._waiters: list[Deferred[Any]] = []
        d.addBoth(self._fire)

    def _fire(self, result: Any) -> None:
        self._result = result
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            self._hand(w)

    def _hand(self, w: Deferred[Any]) -> None:
        if isinstance(self._result, Failure):
            w.errback(self._result)
        else:
            w.callback(self._result)

    def wait(self) -> Deferred[Any]:
        w: Deferred[Any] = Deferred()
        if self._result is self._UNSET:
            self._waiters.append(w)
        else:
            self._hand(w)
        return w


def _gather(ds: list[Deferred[Any]]) -> Deferred[list[Any]]:
    def unwrap(f: Any) -> Any:
        return f.value.subFailure

    return gatherResults(ds, consumeErrors=True).addErrback(unwrap)
