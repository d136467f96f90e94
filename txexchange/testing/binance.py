"""A fake Binance Spot exchange on 127.0.0.1: market streams, REST market data, weights.

Part of the test toolkit (:mod:`txexchange.testing`), in the exchange's place
in the flow: a :class:`FakeBinance` drives a
:class:`~txexchange.testing.market.SimulatedMarket` and turns every
:class:`~txexchange.testing.market.MarketUpdate` into the wire messages
Binance documents (``depthUpdate`` diffs, partial depth, trades, klines,
tickers), served over a :class:`~txexchange.testing.server.FakeExchangeServer`
(raw ``/ws/<stream>``, combined ``/stream``, live ``SUBSCRIBE``), plus the
REST market-data endpoints with request-weight accounting (429, then 418).
It is written from the Binance documentation, not from the client adapter,
so the two check each other.

Every payload is encoded once per message and the same bytes go to every
subscribed session.  Nothing here imports a reactor at import time.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from txexchange.codec import DecodeError, dumps, loads
from txexchange.testing.binance_account import WS_METHODS as PRIVATE_WS_METHODS
from txexchange.testing.binance_account import FakeBinancePrivate
from txexchange.testing.market import MarketUpdate, SimTrade, SimulatedMarket
from txexchange.testing.rest import RecordedRequest, Response
from txexchange.testing.server import FakeExchangeServer, FakeSession
from txexchange.testing.tls import ServerCertificate

__all__ = [
    "FakeBinance",
    "balance_update_event",
    "execution_report_event",
    "outbound_account_position_event",
]

log = Logger()

#: streams Binance allows on one connection
MAX_STREAMS = 1024
#: incoming messages Binance allows per second per connection
MAX_INCOMING_PER_SECOND = 5
#: the WebSocket API path
WS_API_PATH = "/ws-api/v3"
#: the server's ``recvWindow`` when a signed request sends none (ms)
DEFAULT_RECV_WINDOW = 5000
#: the largest ``recvWindow`` accepted (ms)
MAX_RECV_WINDOW = 60_000
#: active user data subscriptions allowed per WebSocket API session
MAX_USER_SUBSCRIPTIONS = 1000

_DAY_MS = 86_400_000
_ZERO = Decimal(0)
_ZERO_TEXT = "0.00000000"

_INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": _DAY_MS,
    "3d": 3 * _DAY_MS,
    "1w": 7 * _DAY_MS,
    "1M": 0,  # calendar months
}
#: 1970-01-05 was a Monday: weekly candles open on Mondays 00:00 UTC
_WEEK_ALIGN_MS = 4 * _DAY_MS
_KLINE_OFFSETS = {"+08:00": 8 * 3_600_000}

_RETIRED = {
    "!ticker@arr": "the '!ticker@arr' stream was retired on 2026-03-26",
    "!bookTicker": "the '!bookTicker' stream was retired",
}
_KIND_RE = re.compile(
    r"^(?:(?P<diff>depth(?:@100ms|@1000ms)?)"
    r"|depth(?P<levels>5|10|20)(?:@100ms|@1000ms)?"
    r"|kline_(?P<interval>1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)(?:@(?P<tz>\+08:00))?"
    r"|(?P<simple>trade|aggTrade|bookTicker|ticker|miniTicker))$"
)
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,36}$")


def _fmt(value: Decimal) -> str:
    """Binance's 8-decimal rendering of a computed quantity."""
    return f"{value:.8f}"


class _Stream:
    """A parsed stream name: ``kind`` in diff, partial, trade, aggTrade, kline,
    bookTicker, ticker, miniTicker, miniTickerArr."""

    __slots__ = ("interval", "kind", "levels", "name", "symbol", "tz")

    def __init__(
        self,
        name: str,
        symbol: str | None,
        kind: str,
        levels: int = 0,
        interval: str = "",
        tz: str = "",
    ) -> None:
        self.name = name
        self.symbol = symbol
        self.kind = kind
        self.levels = levels
        self.interval = interval
        self.tz = tz


class _Candle:
    """One kline being built from trades (Decimal sums, wire strings for prices)."""

    __slots__ = ("L", "Q", "T", "V", "c", "f", "h", "hd", "l", "ld", "n", "o", "q", "t", "v", "x")

    def __init__(self, start: int, end: int, price: str | None) -> None:
        self.t = start
        self.T = end
        self.o = self.h = self.l = self.c = price or _ZERO_TEXT
        self.hd = self.ld = Decimal(self.o)
        self.v = self.q = self.V = self.Q = _ZERO
        self.n = 0
        self.f = self.L = -1
        self.x = False

    def add(self, trade: SimTrade, price: Decimal, amount: Decimal) -> None:
        if self.n == 0:
            self.o = self.h = self.l = trade.price
            self.hd = self.ld = price
            self.f = trade.id
        elif price > self.hd:
            self.h, self.hd = trade.price, price
        elif price < self.ld:
            self.l, self.ld = trade.price, price
        self.c = trade.price
        self.L = trade.id
        self.n += 1
        self.v += amount
        quote = price * amount
        self.q += quote
        if trade.side == "buy":  # the taker bought
            self.V += amount
            self.Q += quote

    def merge(self, other: _Candle) -> None:
        if other.n == 0:
            if self.n == 0:
                self.c = other.c
            return
        if self.n == 0:
            self.o, self.h, self.l, self.hd, self.ld = other.o, other.h, other.l, other.hd, other.ld
            self.f = other.f
        else:
            if other.hd > self.hd:
                self.h, self.hd = other.h, other.hd
            if other.ld < self.ld:
                self.l, self.ld = other.l, other.ld
        self.c = other.c
        self.L = other.L
        self.n += other.n
        self.v += other.v
        self.q += other.q
        self.V += other.V
        self.Q += other.Q

    def kline(self, symbol_id: str, interval: str) -> dict[str, Any]:
        return {
            "t": self.t, "T": self.T, "s": symbol_id, "i": interval, "f": self.f, "L": self.L,
            "o": self.o, "c": self.c, "h": self.h, "l": self.l, "v": _fmt(self.v), "n": self.n,
            "x": self.x, "q": _fmt(self.q), "V": _fmt(self.V), "Q": _fmt(self.Q), "B": "0",
        }  # fmt: skip

    def row(self) -> list[Any]:
        return [self.t, self.o, self.h, self.l, self.c, _fmt(self.v), self.T, _fmt(self.q),
                self.n, _fmt(self.V), _fmt(self.Q), "0"]  # fmt: skip


def _bucket(ts: int, interval: str, offset: int = 0) -> tuple[int, int]:
    """``(open time, close time)`` of the ``interval`` candle holding ``ts`` (ms)."""
    length = _INTERVAL_MS[interval]
    if length == 0:  # calendar month, in the offset's time zone
        local = datetime.datetime.fromtimestamp((ts + offset) / 1000, datetime.UTC)
        start = datetime.datetime(local.year, local.month, 1, tzinfo=datetime.UTC)
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        end = datetime.datetime(year, month, 1, tzinfo=datetime.UTC)
        return (
            calendar.timegm(start.timetuple()) * 1000 - offset,
            calendar.timegm(end.timetuple()) * 1000 - offset - 1,
        )
    align = _WEEK_ALIGN_MS if interval == "1w" else 0
    start = (ts + offset - align) // length * length + align - offset
    return start, start + length - 1


class _Candles:
    """Klines of one symbol for one interval (and time zone): closed history + forming."""

    __slots__ = ("forming", "history", "interval", "offset")

    def __init__(self, interval: str, offset: int = 0, history: int = 1000) -> None:
        self.interval = interval
        self.offset = offset
        self.history: deque[_Candle] = deque(maxlen=history)
        self.forming: _Candle | None = None

    def update(self, ts: int, trades: Sequence[tuple[SimTrade, Decimal, Decimal]]) -> list[_Candle]:
        """Feed one market update; returns the candles to publish (closed first)."""
        out: list[_Candle] = []
        forming = self.forming
        last_close: str | None = None
        if forming is not None and ts > forming.T:
            forming.x = True
            self.history.append(forming)
            out.append(forming)
            last_close = forming.c
            forming = self.forming = None
        if forming is None and (trades or last_close is not None):
            start, end = _bucket(ts, self.interval, self.offset)
            forming = self.forming = _Candle(start, end, last_close)
            if not trades:
                out.append(forming)
        if trades:
            assert forming is not None
            for trade, price, amount in trades:
                forming.add(trade, price, amount)
            out.append(forming)
        return out

    def all(self) -> list[_Candle]:
        candles = list(self.history)
        if self.forming is not None:
            candles.append(self.forming)
        return candles


def _aggregate(candles: Sequence[_Candle], interval: str, offset: int = 0) -> list[_Candle]:
    """Merge 1m candles into ``interval`` candles (time zone ``offset`` ms)."""
    out: list[_Candle] = []
    for candle in candles:
        start, end = _bucket(candle.t, interval, offset)
        if not out or out[-1].t != start:
            merged = _Candle(start, end, candle.o)
            merged.x = True
            out.append(merged)
        out[-1].merge(candle)
        out[-1].x = candle.x
    return out


class _Stats24h:
    """Rolling 24 h trade statistics of one symbol (running sums, monotonic min/max)."""

    __slots__ = ("count", "high", "low", "prev_close", "quote", "seq", "trades", "volume")

    def __init__(self) -> None:
        #: (seq, ts, trade, price, amount, quote)
        self.trades: deque[tuple[int, int, SimTrade, Decimal, Decimal, Decimal]] = deque()
        self.high: deque[tuple[int, Decimal, str]] = deque()
        self.low: deque[tuple[int, Decimal, str]] = deque()
        self.volume = _ZERO
        self.quote = _ZERO
        self.seq = 0
        self.count = 0
        self.prev_close: str | None = None

    def add(self, trade: SimTrade, price: Decimal, amount: Decimal) -> None:
        self.seq += 1
        quote = price * amount
        self.trades.append((self.seq, trade.timestamp, trade, price, amount, quote))
        self.volume += amount
        self.quote += quote
        high, low = self.high, self.low
        while high and high[-1][1] <= price:
            high.pop()
        high.append((self.seq, price, trade.price))
        while low and low[-1][1] >= price:
            low.pop()
        low.append((self.seq, price, trade.price))

    def expire(self, now: int) -> None:
        trades = self.trades
        cutoff = now - _DAY_MS
        while trades and trades[0][1] <= cutoff:
            seq, _ts, trade, _price, amount, quote = trades.popleft()
            self.volume -= amount
            self.quote -= quote
            self.prev_close = trade.price
            if self.high and self.high[0][0] == seq:
                self.high.popleft()
            if self.low and self.low[0][0] == seq:
                self.low.popleft()

    def figures(self, now: int) -> dict[str, Any]:
        """The window's figures in Binance's REST names (without book and symbol)."""
        self.expire(now)
        trades = self.trades
        if trades:
            first, last = trades[0][2], trades[-1][2]
            open_price, last_price, last_qty = first.price, last.price, last.amount
            change = trades[-1][3] - trades[0][3]
            percent = change / trades[0][3] * 100
            vwap = self.quote / self.volume if self.volume else _ZERO
            first_id, last_id, count = first.id, last.id, len(trades)
            high, low = self.high[0][2], self.low[0][2]
        else:
            open_price = last_price = high = low = self.prev_close or _ZERO_TEXT
            last_qty = _ZERO_TEXT
            change = percent = vwap = _ZERO
            first_id = last_id = -1
            count = 0
        return {
            "priceChange": _fmt(change),
            "priceChangePercent": f"{percent:.3f}",
            "weightedAvgPrice": _fmt(vwap),
            "prevClosePrice": self.prev_close or open_price,
            "lastPrice": last_price,
            "lastQty": last_qty,
            "openPrice": open_price,
            "highPrice": high,
            "lowPrice": low,
            "volume": _fmt(self.volume),
            "quoteVolume": _fmt(self.quote),
            "openTime": now - _DAY_MS,
            "closeTime": now,
            "firstId": first_id,
            "lastId": last_id,
            "count": count,
        }


class _Symbol:
    """Per-symbol state of the fake: streams in use, trade log, candles, 24 h stats."""

    __slots__ = (
        "active",
        "agg_id",
        "candles",
        "id",
        "last_top",
        "prefix",
        "skip",
        "stale",
        "stats",
        "symbol",
        "trades",
        "updated",
    )

    def __init__(self, symbol: str, market_id: str) -> None:
        self.symbol = symbol
        self.id = market_id
        self.prefix = market_id.lower()
        #: stream name -> parsed stream, for streams with at least one subscriber
        self.active: dict[str, _Stream] = {}
        #: (interval, time zone) -> candles; ("1m", "") always exists
        self.candles: dict[tuple[str, str], _Candles] = {("1m", ""): _Candles("1m", 0, 10_000)}
        self.trades: deque[tuple[SimTrade, int]] = deque(maxlen=1000)
        self.agg_id = 0
        self.stats = _Stats24h()
        self.skip = 0
        #: queued stale-snapshot faults: how many updates behind each REST depth answer is
        self.stale: deque[int] = deque()
        self.last_top: tuple[str, str, str, str] | None = None
        self.updated = False


class _SessionInfo:
    __slots__ = ("api", "combined", "stamps", "streams", "user_next", "user_subs", "violated")

    def __init__(self, combined: bool, api: bool) -> None:
        self.combined = combined
        self.api = api
        self.streams: dict[str, None] = {}
        self.stamps: deque[float] = deque()
        self.violated = False
        #: WebSocket API user data subscriptions: subscriptionId -> API key
        self.user_subs: dict[int, str] = {}
        self.user_next = 0


class _RequestError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


def _bad_symbol() -> _RequestError:
    return _RequestError(-1121, "Invalid symbol.")


class FakeBinance:
    """A fake Binance Spot exchange: market streams, REST market data, weights, faults.

    ``symbols`` are unified ``BASE/QUOTE`` names (ignored when ``market`` is
    given: its symbols are used).  ``seed`` and ``levels`` make the default
    :class:`SimulatedMarket` (virtual clock: 1 ms of market time per step).
    ``tls`` serves ``wss``/``https``.  ``weight_limit`` is the REST request
    weight allowed per minute of the reactor's (or ``clock``'s) time.
    ``ticker_interval``: ``None`` sends ``@ticker``/``@miniTicker``/
    ``!miniTicker@arr`` events on every update of the symbol; a number sends
    them every that many seconds of *market* time (checked after each step).

    ``api_keys`` maps API keys to their HMAC secrets: the WebSocket API's
    ``userDataStream.subscribe.signature`` is accepted for those keys when
    the signature (HMAC-SHA256 of the parameters sorted by name, raw values)
    matches and ``timestamp`` is within ``recvWindow`` (default 5000 ms) of
    the fake's ``clock`` and not 1 s or more ahead of it.  Events are then
    sent with :meth:`push_user_event`; the ``*_event`` functions of this
    module build realistic ones.
    """

    #: seconds of one weight window
    weight_window: float = 60.0
    #: seconds a client is banned (418) for requesting again within a 429's Retry-After
    ban_seconds: float = 120.0

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"),
        *,
        reactor: Any = None,
        seed: int = 0,
        tls: ServerCertificate | None = None,
        market: SimulatedMarket | None = None,
        levels: int = 50,
        weight_limit: int = 6000,
        ticker_interval: float | None = None,
        clock: Any = None,
        api_keys: Mapping[str, str] | None = None,
    ) -> None:
        if market is None:
            market = SimulatedMarket(tuple(symbols), seed=seed, levels=levels)
        if ticker_interval is not None and ticker_interval <= 0:
            raise ValueError("ticker_interval must be positive (or None)")
        #: the simulated market behind the fake
        self.market = market
        self.weight_limit = weight_limit
        self.ticker_interval = ticker_interval
        self._reactor = reactor
        self._clock = clock
        #: the WebSocket + REST server, for fault injection
        self.server = FakeExchangeServer(
            reactor=reactor, tls=tls, ws_paths=("/ws", "/stream", WS_API_PATH)
        )
        self.server.on_session = self._on_session
        self.server.on_text = self._on_text
        self.server.on_binary = self._on_binary
        self._symbols: dict[str, _Symbol] = {}
        self._by_id: dict[str, _Symbol] = {}
        self._by_prefix: dict[str, _Symbol] = {}
        for symbol in market.symbols:
            info = market.info(symbol)
            state = _Symbol(symbol, info.id.upper())
            self._symbols[symbol] = state
            self._by_id[state.id] = state
            self._by_prefix[state.prefix] = state
        #: what ``GET /api/v3/exchangeInfo`` answers (``serverTime`` filled in per request)
        self.exchange_info: dict[str, Any] = self._make_exchange_info()
        #: stream name -> sessions subscribed to it (in subscription order)
        self._subs: dict[str, dict[FakeSession, None]] = {}
        self._sessions: dict[FakeSession, _SessionInfo] = {}
        #: global streams with subscribers (``!miniTicker@arr``)
        self._global: dict[str, _Stream] = {}
        self._now_ms = 0
        self._next_ticker_ms: int | None = None
        # REST weights
        self._window_start = -math.inf
        self._window_weight = 0
        self._backoff_until = -math.inf
        self._banned_until = -math.inf
        #: REST (and WS-API) requests answered 429
        self.rejected_429 = 0
        #: REST requests answered 418 (banned)
        self.banned_418 = 0
        #: connections closed for sending more than 5 messages in a second
        self.control_rate_violations = 0
        #: depth diff events withheld by :meth:`skip_next`
        self.skipped_diffs = 0
        self._loop: Any = None
        self._run_done: Deferred[None] | None = None
        self._run_left: int | None = None
        #: API key -> HMAC secret accepted by the WebSocket API's signed requests
        self.api_keys: dict[str, str] = dict(api_keys or {})
        self._register_routes()
        #: the private side: signed endpoints, accounts and orders (see its module)
        self.private = FakeBinancePrivate(self, _RequestError)
        #: balances, orders and fills of every API key (``fund``, ``fill``, ``deposit``)
        self.ledger = self.private.ledger

    def __repr__(self) -> str:
        return f"<FakeBinance {len(self._symbols)} symbols {self.server!r}>"

    # -- life cycle ------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def clock(self) -> Any:
        """What REST weight windows are timed with (the reactor unless ``clock`` was given)."""
        return self._clock if self._clock is not None else self.reactor

    def start(self) -> Deferred[FakeBinance]:
        """Listen on 127.0.0.1 (ephemeral port); fires with this fake."""
        return self.server.start().addCallback(lambda _: self)

    def stop(self) -> Deferred[None]:
        """Stop stepping, drop every connection and stop listening."""
        self.stop_running()
        return self.server.stop()

    @property
    def urls(self) -> dict[str, str]:
        """``urls=`` for the client: ``ws`` (no path), ``rest`` and ``ws_api``."""
        scheme = "wss" if self.server.tls is not None else "ws"
        base = f"{scheme}://127.0.0.1:{self.server.port}"
        return {"ws": base, "rest": self.server.rest_url, "ws_api": base + WS_API_PATH}

    @property
    def rest_log(self) -> list[RecordedRequest]:
        """Every REST request that arrived (faulted and rejected ones included)."""
        return self.server.rest.requests

    @property
    def used_weight(self) -> int:
        """Request weight used in the current one-minute window."""
        now = self.clock.seconds()
        if now >= self._window_start + self.weight_window:
            return 0
        return self._window_weight

    # -- the market ------------------------------------------------------------

    def true_book(
        self, symbol: str, nonce: int | None = None, limit: int | None = None
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
        """``(bids, asks, update id)`` best first: now, or as of update id ``nonce``."""
        if nonce is None:
            return self.market.book(symbol, limit)
        bids, asks = self.market.book_at(symbol, nonce, limit)
        return bids, asks, nonce

    def skip_next(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` depth diff events of ``symbol`` from everyone."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).skip += n

    def stale_snapshot_next(self, symbol: str, updates_behind: int = 5, count: int = 1) -> None:
        """The next ``count`` REST depth answers for ``symbol`` are the book and
        ``lastUpdateId`` of ``updates_behind`` updates ago: consistent in
        themselves but older than the diffs the client has buffered."""
        if updates_behind < 1 or count < 1:
            raise ValueError("updates_behind and count must be at least 1")
        self._state(symbol).stale.extend([updates_behind] * count)

    def step(self, n: int = 1) -> list[MarketUpdate]:
        """Advance the market ``n`` steps and publish what changed; returns the updates."""
        out: list[MarketUpdate] = []
        for _ in range(n):
            updates = self.market.step()
            for update in updates:
                self._publish_update(update)
            out.extend(updates)
            if self.ticker_interval is not None:
                self._maybe_tickers()
        return out

    def run(self, rate: float, count: int | None = None) -> Deferred[None]:
        """Step ``rate`` times per second of reactor time; fires after ``count`` steps
        (``None``: when :meth:`stop_running` or :meth:`stop` is called)."""
        from twisted.internet.task import LoopingCall

        if rate <= 0:
            raise ValueError("rate must be positive")
        if self._loop is not None:
            raise RuntimeError("already running; call stop_running() first")
        done: Deferred[None] = Deferred()
        self._run_done = done
        self._run_left = count
        if count is not None and count <= 0:
            self._finish_run()
            return done
        loop = LoopingCall.withCount(self._tick)
        loop.clock = self.reactor
        self._loop = loop
        loop.start(1.0 / rate, now=False).addErrback(self._run_failed)
        return done

    def stop_running(self) -> None:
        """Stop :meth:`run`; its Deferred fires."""
        self._finish_run()

    def _tick(self, missed: int) -> None:
        steps = missed if self._run_left is None else min(missed, self._run_left)
        self.step(steps)
        if self._run_left is not None:
            self._run_left -= steps
            if self._run_left <= 0:
                self._finish_run()

    def _run_failed(self, failure: Any) -> None:
        log.failure("FakeBinance.run: a step failed", failure)
        self._loop = None
        done, self._run_done = self._run_done, None
        if done is not None:
            done.errback(failure)

    def _finish_run(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        done, self._run_done = self._run_done, None
        if done is not None:
            done.callback(None)

    def _state(self, symbol: str) -> _Symbol:
        try:
            return self._symbols[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not a symbol of this FakeBinance") from None

    # -- publishing --------------------------------------------------------------

    def _send(self, stream: str, event: Any) -> None:
        sessions = self._subs.get(stream)
        if not sessions:
            return
        raw = dumps(event)
        wrapped: bytes | None = None
        info = self._sessions
        for session in tuple(sessions):
            if info[session].combined:
                if wrapped is None:
                    wrapped = b'{"stream":"' + stream.encode() + b'","data":' + raw + b"}"
                session.send(wrapped)
            else:
                session.send(raw)

    def _publish_update(self, update: MarketUpdate) -> None:
        state = self._symbols[update.symbol]
        ts = update.timestamp
        self._now_ms = ts
        state.updated = True
        trades = [(t, Decimal(t.price), Decimal(t.amount)) for t in update.trades]
        for trade, price, amount in trades:
            state.agg_id += 1
            state.trades.append((trade, state.agg_id))
            state.stats.add(trade, price, amount)
        first_agg = state.agg_id - len(trades) + 1
        active = state.active
        symbol_id = state.id
        skip = False
        if state.skip:
            state.skip -= 1
            self.skipped_diffs += 1
            skip = True
        candles_out: dict[tuple[str, str], list[_Candle]] = {}
        for key, candles in state.candles.items():
            candles_out[key] = candles.update(ts, trades)
        if not active:
            if self.ticker_interval is None and "!miniTicker@arr" in self._global:
                self._send("!miniTicker@arr", [self._mini_ticker(state)])
            return
        top: tuple[list[tuple[str, str]], list[tuple[str, str]], int] | None = None
        for name, stream in tuple(active.items()):
            kind = stream.kind
            if kind == "diff":
                if not skip:
                    self._send(name, {
                        "e": "depthUpdate", "E": ts, "s": symbol_id, "U": update.first_id,
                        "u": update.last_id, "b": update.bids, "a": update.asks,
                    })  # fmt: skip
            elif kind == "partial":
                if top is None:
                    top = self.market.book(state.symbol, 20)
                n = stream.levels
                self._send(name, {"lastUpdateId": top[2], "bids": top[0][:n], "asks": top[1][:n]})
            elif kind == "trade":
                for trade, _p, _a in trades:
                    self._send(name, {
                        "e": "trade", "E": ts, "s": symbol_id, "t": trade.id, "p": trade.price,
                        "q": trade.amount, "T": trade.timestamp, "m": trade.side == "sell",
                        "M": True,
                    })  # fmt: skip
            elif kind == "aggTrade":
                for i, (trade, _p, _a) in enumerate(trades):
                    self._send(name, {
                        "e": "aggTrade", "E": ts, "s": symbol_id, "a": first_agg + i,
                        "p": trade.price, "q": trade.amount, "f": trade.id, "l": trade.id,
                        "T": trade.timestamp, "m": trade.side == "sell", "M": True,
                    })  # fmt: skip
            elif kind == "kline":
                for candle in candles_out.get((stream.interval, stream.tz), ()):
                    self._send(
                        name,
                        {
                            "e": "kline",
                            "E": ts,
                            "s": symbol_id,
                            "k": candle.kline(symbol_id, stream.interval),
                        },
                    )
            elif kind == "bookTicker":
                if top is None:
                    top = self.market.book(state.symbol, 20)
                bids, asks, uid = top
                if bids and asks:
                    now_top = (bids[0][0], bids[0][1], asks[0][0], asks[0][1])
                    if now_top != state.last_top:
                        state.last_top = now_top
                        self._send(
                            name,
                            {
                                "u": uid,
                                "s": symbol_id,
                                "b": now_top[0],
                                "B": now_top[1],
                                "a": now_top[2],
                                "A": now_top[3],
                            },
                        )
            elif self.ticker_interval is None:
                if kind == "ticker":
                    self._send(name, self._ticker(state))
                elif kind == "miniTicker":
                    self._send(name, self._mini_ticker(state))
        if self.ticker_interval is None and "!miniTicker@arr" in self._global:
            self._send("!miniTicker@arr", [self._mini_ticker(state)])

    def _maybe_tickers(self) -> None:
        assert self.ticker_interval is not None
        now = self._now_ms
        if self._next_ticker_ms is None:
            self._next_ticker_ms = now + int(self.ticker_interval * 1000)
            return
        if now < self._next_ticker_ms:
            return
        self._next_ticker_ms = now + int(self.ticker_interval * 1000)
        changed: list[dict[str, Any]] = []
        want_arr = "!miniTicker@arr" in self._global
        for state in self._symbols.values():
            for name, stream in tuple(state.active.items()):
                if stream.kind == "ticker":
                    self._send(name, self._ticker(state))
                elif stream.kind == "miniTicker":
                    self._send(name, self._mini_ticker(state))
            if state.updated and want_arr:
                changed.append(self._mini_ticker(state))
            state.updated = False
        if changed:
            self._send("!miniTicker@arr", changed)

    def _ticker(self, state: _Symbol) -> dict[str, Any]:
        f = state.stats.figures(self._now_ms)
        bids, asks, _uid = self.market.book(state.symbol, 1)
        bid = bids[0] if bids else (_ZERO_TEXT, _ZERO_TEXT)
        ask = asks[0] if asks else (_ZERO_TEXT, _ZERO_TEXT)
        return {
            "e": "24hrTicker", "E": self._now_ms, "s": state.id,
            "p": f["priceChange"], "P": f["priceChangePercent"], "w": f["weightedAvgPrice"],
            "x": f["prevClosePrice"], "c": f["lastPrice"], "Q": f["lastQty"],
            "b": bid[0], "B": bid[1], "a": ask[0], "A": ask[1],
            "o": f["openPrice"], "h": f["highPrice"], "l": f["lowPrice"],
            "v": f["volume"], "q": f["quoteVolume"], "O": f["openTime"], "C": f["closeTime"],
            "F": f["firstId"], "L": f["lastId"], "n": f["count"],
        }  # fmt: skip

    def _mini_ticker(self, state: _Symbol) -> dict[str, Any]:
        f = state.stats.figures(self._now_ms)
        return {
            "e": "24hrMiniTicker", "E": self._now_ms, "s": state.id, "c": f["lastPrice"],
            "o": f["openPrice"], "h": f["highPrice"], "l": f["lowPrice"], "v": f["volume"],
            "q": f["quoteVolume"],
        }  # fmt: skip

    # -- WebSocket sessions and subscriptions ---------------------------------------

    def _parse_stream(self, name: Any) -> _Stream:
        if not isinstance(name, str) or not name:
            raise _RequestError(2, f"Invalid request: invalid stream name {name!r}")
        if name in _RETIRED:
            raise _RequestError(2, f"Invalid request: {_RETIRED[name]}")
        if name == "!miniTicker@arr":
            return _Stream(name, None, "miniTickerArr")
        prefix, at, kind = name.partition("@")
        state = self._by_prefix.get(prefix)
        if not at or state is None:
            raise _RequestError(2, f"Invalid request: unknown stream or symbol {name!r}")
        m = _KIND_RE.match(kind)
        if m is None:
            raise _RequestError(2, f"Invalid request: unknown stream {name!r}")
        if m["diff"]:
            return _Stream(name, state.symbol, "diff")
        if m["levels"]:
            return _Stream(name, state.symbol, "partial", levels=int(m["levels"]))
        if m["interval"]:
            return _Stream(name, state.symbol, "kline", interval=m["interval"], tz=m["tz"] or "")
        return _Stream(name, state.symbol, m["simple"])

    def _subscribe(self, session: FakeSession, info: _SessionInfo, streams: list[_Stream]) -> None:
        new = [s for s in streams if s.name not in info.streams]
        if len(info.streams) + len(dict.fromkeys(s.name for s in new)) > MAX_STREAMS:
            raise _RequestError(
                2, f"Invalid request: more than {MAX_STREAMS} streams on one connection"
            )
        for stream in new:
            info.streams[stream.name] = None
            session.subscriptions.add(stream.name)
            subscribers = self._subs.setdefault(stream.name, {})
            subscribers[session] = None
            if stream.symbol is None:
                self._global[stream.name] = stream
                continue
            state = self._symbols[stream.symbol]
            state.active[stream.name] = stream
            if stream.kind == "bookTicker":
                state.last_top = None
            if stream.kind == "kline":
                key = (stream.interval, stream.tz)
                if key not in state.candles:
                    state.candles[key] = self._new_candles(state, stream.interval, stream.tz)

    @staticmethod
    def _new_candles(state: _Symbol, interval: str, tz: str) -> _Candles:
        """Candles for a newly subscribed kline stream, seeded from the 1m history."""
        offset = _KLINE_OFFSETS.get(tz, 0)
        candles = _Candles(interval, offset)
        if interval != "1s":
            merged = _aggregate(state.candles[("1m", "")].all(), interval, offset)
            if merged:
                candles.history.extend(merged[:-1])
                candles.forming = merged[-1]
                candles.forming.x = False
        return candles

    def _unsubscribe(self, session: FakeSession, info: _SessionInfo, names: list[str]) -> None:
        for name in names:
            info.streams.pop(name, None)
            session.subscriptions.discard(name)
            subscribers = self._subs.get(name)
            if subscribers is None:
                continue
            subscribers.pop(session, None)
            if subscribers:
                continue
            del self._subs[name]
            self._global.pop(name, None)
            prefix = name.partition("@")[0]
            state = self._by_prefix.get(prefix)
            if state is not None:
                state.active.pop(name, None)

    def _on_session(self, session: FakeSession) -> None:
        path = unquote(session.path)
        api = path == WS_API_PATH or path.startswith(WS_API_PATH + "/")
        combined = path == "/stream" or path.startswith("/stream/")
        info = _SessionInfo(combined, api)
        self._sessions[session] = info

        def gone(result: Any) -> Any:
            self._unsubscribe(session, info, list(info.streams))
            self._sessions.pop(session, None)
            return result

        session.closed.addBoth(gone)
        if api:
            return
        names: list[str] = []
        if combined:
            for value in session.query.get("streams", []):
                names.extend(n for n in unquote(value).split("/") if n)
        elif path.startswith("/ws/"):
            names.extend(n for n in path[4:].split("/") if n)
        try:
            streams = [self._parse_stream(n) for n in names]
            self._subscribe(session, info, streams)
        except _RequestError as e:
            log.debug("FakeBinance: refusing {path}: {msg}", path=path, msg=e.msg)
            session.close(1008, e.msg)

    def _count_message(self, session: FakeSession, info: _SessionInfo) -> bool:
        """Record one incoming message; False (and the connection closed) past 5/s."""
        if info.violated:
            return False
        now = self.reactor.seconds()
        stamps = info.stamps
        while stamps and stamps[0] <= now - 1.0:
            stamps.popleft()
        stamps.append(now)
        if len(stamps) > MAX_INCOMING_PER_SECOND:
            info.violated = True
            self.control_rate_violations += 1
            log.info(
                "FakeBinance: {session} sent more than 5 messages in a second; closing",
                session=session,
            )
            session.close(1008, "Too many messages")
            return False
        return True

    def _on_binary(self, session: FakeSession, payload: bytes) -> None:
        info = self._sessions.get(session)
        if info is None or (not info.api and not self._count_message(session, info)):
            return
        self.server.reply(
            session, {"error": {"code": 3, "msg": "Invalid JSON: binary frame"}, "id": None}
        )

    def _on_text(self, session: FakeSession, message: Any) -> None:
        info = self._sessions.get(session)
        if info is None:
            return
        if info.api:
            self._ws_api(session, message)
            return
        if not self._count_message(session, info):
            return
        if not isinstance(message, dict):
            self.server.reply(session, {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        request_id = message.get("id")
        try:
            if not (
                request_id is None
                or (type(request_id) is int and -(2**63) <= request_id < 2**63)
                or (isinstance(request_id, str) and _ID_RE.match(request_id))
            ):
                request_id = None
                raise _RequestError(2, "Invalid request: invalid request id")
            method = message.get("method")
            params = message.get("params")
            if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
                if not isinstance(params, list) or not params:
                    raise _RequestError(2, "Invalid request: params must be a list of streams")
                if method == "SUBSCRIBE":
                    self._subscribe(session, info, [self._parse_stream(p) for p in params])
                else:
                    for p in params:
                        if not isinstance(p, str):
                            raise _RequestError(2, f"Invalid request: invalid stream {p!r}")
                    self._unsubscribe(session, info, params)
                result: Any = None
            elif method == "LIST_SUBSCRIPTIONS":
                result = list(info.streams)
            elif method == "SET_PROPERTY":
                if not isinstance(params, list) or len(params) != 2 or params[0] != "combined":
                    raise _RequestError(0, "Unknown property")
                if type(params[1]) is not bool:
                    raise _RequestError(1, "Invalid value type: expected Boolean")
                info.combined = params[1]
                result = None
            elif method == "GET_PROPERTY":
                if params != ["combined"]:
                    raise _RequestError(0, "Unknown property")
                result = info.combined
            else:
                raise _RequestError(2, f"Invalid request: unknown method {method!r}")
        except _RequestError as e:
            self.server.reply(session, {"error": {"code": e.code, "msg": e.msg}, "id": request_id})
            return
        self.server.reply(session, {"result": result, "id": request_id})

    def _ws_api(self, session: FakeSession, message: Any) -> None:
        """A minimal WebSocket API: ``ping``, ``time``, ``exchangeInfo``, ``depth`` and
        the user data stream (``userDataStream.subscribe.signature``,
        ``userDataStream.unsubscribe``, ``session.subscriptions``)."""
        request_id = message.get("id") if isinstance(message, dict) else None
        method = message.get("method") if isinstance(message, dict) else None
        params = (message.get("params") if isinstance(message, dict) else None) or {}
        if method in _USER_METHODS:
            self._user_request(session, request_id, method, params)
            return
        if method in PRIVATE_WS_METHODS:
            self.private.ws_request(session, request_id, method, params)
            return
        weights = {"ping": 1, "time": 1, "exchangeInfo": 20}
        try:
            if method == "depth":
                weight = self._depth_weight(params.get("limit"))
            elif method in weights:
                weight = weights[method]
            else:
                raise _RequestError(-1000, f"FakeBinance does not implement {method!r}")
            verdict = self._charge(weight)
            if verdict is not None:
                raise _RequestError(-1003, verdict.body["msg"], verdict.status)
            if method == "ping":
                result: Any = {}
            elif method == "time":
                result = {"serverTime": int(self.clock.seconds() * 1000)}
            elif method == "exchangeInfo":
                result = self.exchange_info
            else:
                result = self._depth_body(params.get("symbol"), params.get("limit"))
        except _RequestError as e:
            self.server.reply(
                session,
                {"id": request_id, "status": e.status, "error": {"code": e.code, "msg": e.msg}},
            )
            return
        self.server.reply(session, {
            "id": request_id, "status": 200, "result": result,
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": self.weight_limit,
                            "count": self.used_weight}],
        })  # fmt: skip

    # -- WebSocket API: user data stream -----------------------------------------------

    def push_user_event(self, event: Mapping[str, Any], api_key: str | None = None) -> int:
        """Send ``{"subscriptionId": k, "event": event}`` on every user data subscription
        (of ``api_key``, if given); returns how many subscriptions got it."""
        sent = 0
        for session, info in list(self._sessions.items()):
            if not session.is_open:
                continue
            for sub_id, key in list(info.user_subs.items()):
                if api_key is None or key == api_key:
                    session.send({"subscriptionId": sub_id, "event": dict(event)})
                    sent += 1
        return sent

    def end_user_streams(self, api_key: str | None = None) -> int:
        """End user data subscriptions (of ``api_key``, if given) as Binance does:
        each gets an ``eventStreamTerminated`` event and is gone.  Returns how many."""
        ended = 0
        for session, info in list(self._sessions.items()):
            for sub_id, key in list(info.user_subs.items()):
                if api_key is None or key == api_key:
                    del info.user_subs[sub_id]
                    self._terminated(session, sub_id)
                    ended += 1
        return ended

    def user_sessions(self, api_key: str | None = None) -> list[FakeSession]:
        """Open WebSocket API sessions holding a user data subscription (of ``api_key``)."""
        return [
            session
            for session, info in self._sessions.items()
            if session.is_open
            and any(api_key is None or key == api_key for key in info.user_subs.values())
        ]

    @property
    def user_subscribe_requests(self) -> list[tuple[FakeSession, dict[str, Any]]]:
        """Every ``userDataStream.subscribe.signature`` request received, in order."""
        return [
            (session, message)
            for session, message in self.server.received
            if isinstance(message, dict) and message.get("method") == _SUBSCRIBE_SIGNATURE
        ]

    def _terminated(self, session: FakeSession, sub_id: int) -> None:
        if session.is_open:
            now = int(self.clock.seconds() * 1000)
            session.send(
                {"subscriptionId": sub_id, "event": {"e": "eventStreamTerminated", "E": now}}
            )

    def _user_request(
        self, session: FakeSession, request_id: Any, method: str, params: Any
    ) -> None:
        info = self._sessions[session]
        ended: list[int] = []
        try:
            if not isinstance(params, dict):
                raise _RequestError(-1104, "Not all sent parameters were read.")
            if method == _SUBSCRIBE_SIGNATURE:
                api_key = self._verify_signed(params)
                if len(info.user_subs) >= MAX_USER_SUBSCRIPTIONS:
                    raise _RequestError(-1210, "Too many subscriptions on this session.")
                sub_id = info.user_next
                info.user_next += 1
                info.user_subs[sub_id] = api_key
                result: Any = {"subscriptionId": sub_id}
            elif method == "userDataStream.unsubscribe":
                wanted = params.get("subscriptionId")
                if wanted is None:
                    ended = list(info.user_subs)
                elif type(wanted) is not int or wanted not in info.user_subs:
                    raise _RequestError(-2035, "User Data Stream subscription not found.")
                else:
                    ended = [wanted]
                for sub_id in ended:
                    del info.user_subs[sub_id]
                result = {}
            else:  # session.subscriptions
                result = [{"subscriptionId": k} for k in info.user_subs]
        except _RequestError as e:
            self.server.reply(
                session,
                {"id": request_id, "status": e.status, "error": {"code": e.code, "msg": e.msg}},
            )
            return
        self.server.reply(session, {"id": request_id, "status": 200, "result": result})
        for sub_id in ended:
            self._terminated(session, sub_id)

    def _verify_signed(self, params: dict[str, Any]) -> str:
        """Check a signed request's key, timestamp and HMAC signature; returns the key."""
        for name in ("apiKey", "timestamp", "signature"):
            if params.get(name) in (None, ""):
                raise _RequestError(
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        api_key = params["apiKey"]
        secret = self.api_keys.get(api_key) if isinstance(api_key, str) else None
        if secret is None:
            raise _RequestError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        timestamp = params["timestamp"]
        window = params.get("recvWindow", DEFAULT_RECV_WINDOW)
        if type(timestamp) is not int:
            raise _RequestError(-1100, "Illegal characters found in parameter 'timestamp'.")
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not 0 < window <= MAX_RECV_WINDOW
        ):
            raise _RequestError(-1131, "recvWindow must be less than 60000")
        now = self.clock.seconds() * 1000
        if timestamp >= now + 1000:
            raise _RequestError(
                -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if now - timestamp > window:
            raise _RequestError(-1021, "Timestamp for this request is outside of the recvWindow.")
        # the documented rule: every parameter but the signature, sorted by
        # name, as name=value joined with '&', values as raw UTF-8 text
        payload = "&".join(
            f"{name}={_param_text(params[name])}" for name in sorted(params) if name != "signature"
        )
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        signature = params["signature"]
        if not isinstance(signature, str) or not hmac.compare_digest(expected, signature.lower()):
            raise _RequestError(-1022, "Signature for this request is not valid.", 401)
        return api_key

    # -- REST ----------------------------------------------------------------------

    def _make_exchange_info(self) -> dict[str, Any]:
        entries = []
        for state in self._symbols.values():
            info = self.market.info(state.symbol)
            tick = _fmt(Decimal(info.tick_size))
            step = _fmt(Decimal(info.amount_step))
            entries.append({
                "symbol": state.id, "status": "TRADING",
                "baseAsset": info.base, "baseAssetPrecision": 8,
                "quoteAsset": info.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT",
                               "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
                "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
                "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick,
                     "maxPrice": "1000000.00000000", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000",
                     "stepSize": step},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            })  # fmt: skip
        return {
            "timezone": "UTC",
            "serverTime": 0,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": entries,
        }

    def _register_routes(self) -> None:
        rest = self.server.rest
        endpoints: dict[str, tuple[Callable[[dict[str, str]], int],
                                   Callable[[dict[str, str]], Any]]] = {
            "/api/v3/ping": (lambda a: 1, lambda a: {}),
            "/api/v3/time": (lambda a: 1, self._rest_time),
            "/api/v3/exchangeInfo": (lambda a: 20, self._rest_exchange_info),
            "/api/v3/depth": (lambda a: self._depth_weight(a.get("limit")), self._rest_depth),
            "/api/v3/trades": (lambda a: 25, self._rest_trades),
            "/api/v3/aggTrades": (lambda a: 4, self._rest_agg_trades),
            "/api/v3/klines": (lambda a: 2, self._rest_klines),
            "/api/v3/ticker/24hr": (self._ticker_weight, self._rest_ticker),
        }  # fmt: skip
        for path, (weigh, handler) in endpoints.items():
            rest.route("GET", path, self._endpoint(weigh, handler))

    def _endpoint(
        self, weigh: Callable[[dict[str, str]], int], handler: Callable[[dict[str, str]], Any]
    ) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            args = {
                k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                for k, v in (request.args or {}).items()
                if v
            }
            verdict = self._charge(weigh(args))
            if verdict is not None:
                return verdict
            headers = {"X-MBX-USED-WEIGHT-1M": str(self._window_weight)}
            try:
                return Response(200, handler(args), headers)
            except _RequestError as e:
                return Response(e.status, {"code": e.code, "msg": e.msg}, headers)

        return serve

    def _charge(self, weight: int) -> Response | None:
        """Count ``weight``; a 429/418 :class:`Response` if the request is refused."""
        now = self.clock.seconds()
        window = self.weight_window
        if now >= self._window_start + window:
            self._window_start = now // window * window
            self._window_weight = 0
        used = {"X-MBX-USED-WEIGHT-1M": str(self._window_weight)}
        if now < self._banned_until or now < self._backoff_until:
            if now >= self._banned_until:
                self._banned_until = now + self.ban_seconds
            self.banned_418 += 1
            retry = max(1, math.ceil(self._banned_until - now))
            return Response(
                418,
                {"code": -1003, "msg": f"Way too many requests; IP banned until "
                                       f"{int(self._banned_until * 1000)}."},
                {**used, "Retry-After": str(retry)},
            )  # fmt: skip
        if self._window_weight + weight > self.weight_limit:
            self.rejected_429 += 1
            end = self._window_start + window
            self._backoff_until = end
            retry = max(1, math.ceil(end - now))
            return Response(
                429,
                {"code": -1003, "msg": "Too many requests; current limit of IP is "
                                       f"{self.weight_limit} requests per minute. Please use the "
                                       "websocket for live updates to avoid polling the API."},
                {**used, "Retry-After": str(retry)},
            )  # fmt: skip
        self._window_weight += weight
        return None

    @staticmethod
    def _int_arg(value: Any, name: str, default: int | None = None) -> int | None:
        if value is None or value == "":
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit() and len(value) <= 20:
            return int(value)
        raise _RequestError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )

    def _depth_weight(self, limit: Any) -> int:
        try:
            n = self._int_arg(limit, "limit", 100) or 100
        except _RequestError:
            n = 100
        return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250

    def _ticker_weight(self, args: dict[str, str]) -> int:
        if "symbol" in args:
            return 2
        if "symbols" in args:
            try:
                n = len(loads(args["symbols"]))
            except (DecodeError, TypeError):
                return 2
            return 2 if n <= 20 else 40 if n <= 100 else 80
        return 80

    def _symbol_arg(self, args: dict[str, Any]) -> _Symbol:
        market_id = args.get("symbol")
        if not market_id:
            raise _RequestError(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        state = self._by_id.get(market_id)
        if state is None:
            raise _bad_symbol()
        return state

    def _symbols_arg(self, args: dict[str, str]) -> list[_Symbol] | None:
        if "symbol" in args:
            return [self._symbol_arg(args)]
        if "symbols" not in args:
            return None
        try:
            ids = loads(args["symbols"])
        except DecodeError:
            ids = None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise _RequestError(-1100, "Illegal characters found in parameter 'symbols'.")
        states = [self._by_id.get(i) for i in ids]
        if any(s is None for s in states):
            raise _bad_symbol()
        return [s for s in states if s is not None]

    def _rest_time(self, args: dict[str, str]) -> Any:
        return {"serverTime": int(self.clock.seconds() * 1000)}

    def _rest_exchange_info(self, args: dict[str, str]) -> Any:
        info = dict(self.exchange_info)
        info["serverTime"] = int(self.clock.seconds() * 1000)
        wanted = self._symbols_arg(args)
        if wanted is not None:
            ids = {s.id for s in wanted}
            info["symbols"] = [e for e in info["symbols"] if e["symbol"] in ids]
        return info

    def _depth_body(self, market_id: Any, limit: Any) -> dict[str, Any]:
        state = self._symbol_arg({"symbol": market_id})
        n = self._int_arg(limit, "limit", 100)
        assert n is not None
        if n < 1:
            raise _RequestError(-1100, "Illegal characters found in parameter 'limit'.")
        bids, asks, uid = self.market.book(state.symbol, min(n, 5000))
        if state.stale:
            uid = max(0, uid - state.stale.popleft())
            bids, asks = self.market.book_at(state.symbol, uid, min(n, 5000))
        return {"lastUpdateId": uid, "bids": bids, "asks": asks}

    def _rest_depth(self, args: dict[str, str]) -> Any:
        return self._depth_body(args.get("symbol"), args.get("limit"))

    def _limit(self, args: dict[str, str], default: int, most: int) -> int:
        n = self._int_arg(args.get("limit"), "limit", default)
        assert n is not None
        if n < 1:
            raise _RequestError(-1100, "Illegal characters found in parameter 'limit'.")
        return min(n, most)

    def _rest_trades(self, args: dict[str, str]) -> Any:
        state = self._symbol_arg(args)
        limit = self._limit(args, 500, 1000)
        rows = list(state.trades)[-limit:]
        return [
            {"id": t.id, "price": t.price, "qty": t.amount,
             "quoteQty": _fmt(Decimal(t.price) * Decimal(t.amount)), "time": t.timestamp,
             "isBuyerMaker": t.side == "sell", "isBestMatch": True}
            for t, _agg in rows
        ]  # fmt: skip

    def _rest_agg_trades(self, args: dict[str, str]) -> Any:
        state = self._symbol_arg(args)
        limit = self._limit(args, 500, 1000)
        from_id = self._int_arg(args.get("fromId"), "fromId")
        start = self._int_arg(args.get("startTime"), "startTime")
        end = self._int_arg(args.get("endTime"), "endTime")
        rows = [
            (t, a) for t, a in state.trades
            if (from_id is None or a >= from_id)
            and (start is None or t.timestamp >= start)
            and (end is None or t.timestamp <= end)
        ]  # fmt: skip
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [
            {"a": a, "p": t.price, "q": t.amount, "f": t.id, "l": t.id, "T": t.timestamp,
             "m": t.side == "sell", "M": True}
            for t, a in rows
        ]  # fmt: skip

    def _rest_klines(self, args: dict[str, str]) -> Any:
        state = self._symbol_arg(args)
        interval = args.get("interval")
        if not interval:
            raise _RequestError(
                -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
            )
        if interval not in _INTERVAL_MS:
            raise _RequestError(-1120, "Invalid interval.")
        limit = self._limit(args, 500, 1000)
        start = self._int_arg(args.get("startTime"), "startTime")
        end = self._int_arg(args.get("endTime"), "endTime")
        one_minute = state.candles[("1m", "")]
        if interval == "1m":
            candles = one_minute.all()
        elif interval == "1s":
            built = state.candles.get(("1s", ""))
            candles = built.all() if built is not None else []
        else:
            candles = _aggregate(one_minute.all(), interval)
        rows = [
            c for c in candles
            if (start is None or c.t >= start) and (end is None or c.t <= end)
        ]  # fmt: skip
        rows = rows[:limit] if start is not None else rows[-limit:]
        return [c.row() for c in rows]

    def _rest_ticker(self, args: dict[str, str]) -> Any:
        states = self._symbols_arg(args)
        mini = args.get("type", "FULL").upper() == "MINI"
        rows = [self._ticker_row(s, mini) for s in (states or self._symbols.values())]
        return rows[0] if "symbol" in args else rows

    def _ticker_row(self, state: _Symbol, mini: bool) -> dict[str, Any]:
        f = state.stats.figures(self._now_ms)
        if mini:
            keep = (
                "openPrice",
                "highPrice",
                "lowPrice",
                "lastPrice",
                "volume",
                "quoteVolume",
                "openTime",
                "closeTime",
                "firstId",
                "lastId",
                "count",
            )
            return {"symbol": state.id, **{k: f[k] for k in keep}}
        bids, asks, _uid = self.market.book(state.symbol, 1)
        bid = bids[0] if bids else (_ZERO_TEXT, _ZERO_TEXT)
        ask = asks[0] if asks else (_ZERO_TEXT, _ZERO_TEXT)
        row: dict[str, Any] = {"symbol": state.id}
        for key in (
            "priceChange",
            "priceChangePercent",
            "weightedAvgPrice",
            "prevClosePrice",
            "lastPrice",
            "lastQty",
        ):
            row[key] = f[key]
        row.update(bidPrice=bid[0], bidQty=bid[1], askPrice=ask[0], askQty=ask[1])
        for key in (
            "openPrice",
            "highPrice",
            "lowPrice",
            "volume",
            "quoteVolume",
            "openTime",
            "closeTime",
            "firstId",
            "lastId",
            "count",
        ):
            row[key] = f[key]
        return row


# -- the user data stream ---------------------------------------------------------------

_SUBSCRIBE_SIGNATURE = "userDataStream.subscribe.signature"
_USER_METHODS = frozenset(
    {_SUBSCRIBE_SIGNATURE, "userDataStream.unsubscribe", "session.subscriptions"}
)


def _param_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def execution_report_event(
    symbol: str = "BTCUSDT",
    *,
    side: str = "BUY",
    order_type: str = "LIMIT",
    quantity: str = "1.00000000",
    price: str = "0.10264410",
    execution_type: str = "NEW",
    status: str | None = None,
    order_id: int = 4293153,
    client_order_id: str = "mUvoqJxFIILMdfAW5iGSOW",
    last_quantity: str = "0.00000000",
    last_price: str = "0.00000000",
    cumulative_quantity: str | None = None,
    cumulative_quote: str = "0.00000000",
    commission: str = "0",
    commission_asset: str | None = None,
    trade_id: int = -1,
    maker: bool = False,
    event_time: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An ``executionReport`` with the documented fields (``extra`` adds or overrides).

    ``status`` defaults to ``execution_type`` (``NEW``, ``TRADE`` -> ``FILLED``
    when fully filled, else ``PARTIALLY_FILLED``).
    """
    now = _now_ms() if event_time is None else event_time
    filled = last_quantity if cumulative_quantity is None else cumulative_quantity
    if status is None:
        if execution_type == "TRADE":
            status = "FILLED" if Decimal(filled) >= Decimal(quantity) else "PARTIALLY_FILLED"
        else:
            status = {"CANCELED": "CANCELED", "EXPIRED": "EXPIRED", "REJECTED": "REJECTED"}.get(
                execution_type, "NEW"
            )
    last_quote = _fmt(Decimal(last_quantity) * Decimal(last_price))
    event: dict[str, Any] = {
        "e": "executionReport", "E": now, "s": symbol, "c": client_order_id,
        "S": side, "o": order_type, "f": "GTC", "q": quantity, "p": price,
        "P": "0.00000000", "F": "0.00000000", "g": -1, "C": "",
        "x": execution_type, "X": status, "r": "NONE", "i": order_id,
        "l": last_quantity, "z": filled, "L": last_price, "n": commission,
        "N": commission_asset, "T": now, "t": trade_id, "v": 3,
        "I": 8641984, "w": status in ("NEW", "PARTIALLY_FILLED"), "m": maker, "M": False,
        "O": now, "Z": cumulative_quote, "Y": last_quote, "Q": "0.00000000", "W": now,
        "V": "NONE",
    }  # fmt: skip
    event.update(extra)
    return event


def outbound_account_position_event(
    balances: Mapping[str, tuple[str, str]] | None = None,
    *,
    event_time: int | None = None,
    last_update: int | None = None,
) -> dict[str, Any]:
    """An ``outboundAccountPosition``: ``balances`` maps asset -> (free, locked)."""
    now = _now_ms() if event_time is None else event_time
    if balances is None:
        balances = {"ETH": ("10000.000000", "0.000000")}
    return {
        "e": "outboundAccountPosition",
        "E": now,
        "u": now if last_update is None else last_update,
        "B": [{"a": asset, "f": free, "l": locked} for asset, (free, locked) in balances.items()],
    }


def balance_update_event(
    asset: str = "BTC",
    delta: str = "100.00000000",
    *,
    event_time: int | None = None,
    clear_time: int | None = None,
) -> dict[str, Any]:
    """A ``balanceUpdate`` (deposit, withdrawal or transfer of ``delta`` ``asset``)."""
    now = _now_ms() if event_time is None else event_time
    return {
        "e": "balanceUpdate",
        "E": now,
        "a": asset,
        "d": delta,
        "T": now if clear_time is None else clear_time,
    }
