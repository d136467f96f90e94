"""A fake Bybit (v5) exchange on 127.0.0.1: public spot/linear WebSockets and REST market data.

Part of the test toolkit (:mod:`txexchange.testing`), in the exchange's place
in the flow: a :class:`FakeBybit` drives a
:class:`~txexchange.testing.market.SimulatedMarket` and turns every
:class:`~txexchange.testing.market.MarketUpdate` into the messages Bybit
documents for its v5 public streams on ``/v5/public/spot`` and
``/v5/public/linear``: ``orderbook.{depth}.{symbol}`` snapshot + deltas with
the update id ``u`` and cross sequence ``seq`` (no checksum: Bybit has none),
``publicTrade.{symbol}``, ``tickers.{symbol}`` (spot snapshots; linear
snapshot then deltas of the changed fields) and ``kline.{interval}.{symbol}``.
It answers ``{"op": "subscribe"|"unsubscribe"|"ping", "args": [...]}`` with
Bybit's acks and pongs (which differ between spot and linear), and serves the
``/v5/market/*`` REST endpoints in Bybit's ``retCode``/``retMsg``/``result``
envelope with the documented IP limit (HTTP 403) and injectable rate-limit
faults (HTTP 429, ``retCode`` 10006).  It is written from the Bybit
documentation (``PROTOCOLS.md`` section 6), not from the client adapter, so
the two check each other.

Every event is encoded once and the same bytes go to every subscribed
session.  Nothing here imports a reactor at import time.
"""

from __future__ import annotations

import calendar
import datetime
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from txexchange.codec import dumps
from txexchange.testing.bybit_account import FakeBybitPrivate
from txexchange.testing.market import VIRTUAL_EPOCH_MS, MarketUpdate, SimTrade, SimulatedMarket
from txexchange.testing.rest import RecordedRequest, Response
from txexchange.testing.server import FakeExchangeServer, FakeSession
from txexchange.testing.tls import ServerCertificate

__all__ = ["FakeBybit"]

log = Logger()

Category = Literal["spot", "linear"]
#: the categories served, and their WebSocket paths
CATEGORIES: tuple[Category, ...] = ("spot", "linear")
WS_PATHS: dict[str, str] = {
    "spot": "/v5/public/spot",
    "linear": "/v5/public/linear",
    "status": "/v5/public/misc/status",
    "private": "/v5/private",
}
#: the one topic of the ``status`` stream
STATUS_TOPIC = "system.status"
#: ``orderbook.{depth}`` depths of spot and linear
BOOK_DEPTHS = (1, 50, 200, 1000)
#: most levels ``GET /v5/market/orderbook`` gives (spot/linear/inverse)
REST_BOOK_MAX = 1000
#: most args in one spot subscribe request
SPOT_MAX_ARGS = 10
#: total characters of ``args`` allowed per public connection
MAX_ARGS_CHARS = 21_000

_MINUTE_MS = 60_000
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
#: 1970-01-05 was a Monday: weekly candles open on Mondays (UTC)
_WEEK_ALIGN_MS = 4 * _DAY_MS
#: kline interval -> length in ms (0: calendar month)
INTERVALS: dict[str, int] = {
    "1": _MINUTE_MS, "3": 3 * _MINUTE_MS, "5": 5 * _MINUTE_MS, "15": 15 * _MINUTE_MS,
    "30": 30 * _MINUTE_MS, "60": _HOUR_MS, "120": 2 * _HOUR_MS, "240": 4 * _HOUR_MS,
    "360": 6 * _HOUR_MS, "720": 12 * _HOUR_MS, "D": _DAY_MS, "W": _WEEK_MS, "M": 0,
}  # fmt: skip
#: where the cross sequence ``seq``/``cs`` starts, above the update ids
_SEQ_BASE = 60_000_000_000
#: system time ``ts`` is this many ms after the matching-engine time ``cts``
_PUSH_LAG_MS = 2
#: linear trade ids are UUIDs (version 5 here, like the docs' example)
_TRADE_NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")

_MSG_TOO_MANY = "Too many visits!"

Level = tuple[str, str]


# -- formatting and candles ----------------------------------------------------------------


class _Digits:
    """The market's fixed-decimal strings cut to a grid's decimals (``"16493.50"``)."""

    __slots__ = ("_cache", "_decimals")

    def __init__(self, step: str) -> None:
        text = f"{Decimal(step).normalize():f}"
        self._decimals = len(text.partition(".")[2])
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        out = self._cache.get(text)
        if out is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            whole, _dot, frac = text.partition(".")
            frac = (frac + "0" * self._decimals)[: self._decimals]
            out = f"{whole}.{frac}" if frac else whole
            self._cache[text] = out
        return out


def _text(value: Decimal) -> str:
    out = f"{value:f}"
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return out or "0"


def _bucket(ts: int, interval: str) -> tuple[int, int]:
    """``(start, end)`` in ms of the ``interval`` candle holding ``ts`` (UTC)."""
    length = INTERVALS[interval]
    if length == 0:
        day = datetime.datetime.fromtimestamp(ts / 1000, datetime.UTC)
        start_dt = datetime.datetime(day.year, day.month, 1, tzinfo=datetime.UTC)
        if day.month == 12:
            end_dt = datetime.datetime(day.year + 1, 1, 1, tzinfo=datetime.UTC)
        else:
            end_dt = datetime.datetime(day.year, day.month + 1, 1, tzinfo=datetime.UTC)
        start = calendar.timegm(start_dt.timetuple()) * 1000
        return start, calendar.timegm(end_dt.timetuple()) * 1000 - 1
    align = _WEEK_ALIGN_MS if interval == "W" else 0
    start = (ts - align) // length * length + align
    return start, start + length - 1


class _Candle:
    __slots__ = (
        "c",
        "closed",
        "end",
        "h",
        "hd",
        "l",
        "ld",
        "n",
        "o",
        "stamp",
        "start",
        "turnover",
        "volume",
    )

    def __init__(self, start: int, end: int, price: str) -> None:
        self.start = start
        self.end = end
        self.o = self.h = self.l = self.c = price
        self.hd = self.ld = Decimal(price)
        self.volume = Decimal(0)
        self.turnover = Decimal(0)
        self.n = 0
        self.closed = False
        self.stamp = start

    def add(self, price_text: str, price: Decimal, amount: Decimal) -> None:
        if self.n == 0:
            self.o = self.h = self.l = price_text
            self.hd = self.ld = price
        elif price > self.hd:
            self.h, self.hd = price_text, price
        elif price < self.ld:
            self.l, self.ld = price_text, price
        self.c = price_text
        self.n += 1
        self.volume += amount
        self.turnover += price * amount

    def merge(self, other: _Candle) -> None:
        self.stamp = max(self.stamp, other.stamp)
        if other.n == 0:
            if self.n == 0:
                self.c = other.c
            return
        if self.n == 0:
            self.o, self.h, self.l, self.hd, self.ld = other.o, other.h, other.l, other.hd, other.ld
        else:
            if other.hd > self.hd:
                self.h, self.hd = other.h, other.hd
            if other.ld < self.ld:
                self.l, self.ld = other.l, other.ld
        self.c = other.c
        self.n += other.n
        self.volume += other.volume
        self.turnover += other.turnover

    def kline(self, interval: str) -> dict[str, Any]:
        """The ``kline`` push item."""
        return {
            "start": self.start,
            "end": self.end,
            "interval": interval,
            "open": self.o,
            "close": self.c,
            "high": self.h,
            "low": self.l,
            "volume": _text(self.volume),
            "turnover": _text(self.turnover),
            "confirm": self.closed,
            "timestamp": self.stamp,
        }

    def row(self) -> list[str]:
        """The REST row ``[startTime, open, high, low, close, volume, turnover]``."""
        return [
            str(self.start),
            self.o,
            self.h,
            self.l,
            self.c,
            _text(self.volume),
            _text(self.turnover),
        ]


class _Candles:
    """One symbol's candles of one interval: closed history and the forming one."""

    __slots__ = ("forming", "history", "interval")

    def __init__(self, interval: str, history: int = 1000) -> None:
        self.interval = interval
        self.history: deque[_Candle] = deque(maxlen=history)
        self.forming: _Candle | None = None

    def update(self, ts: int, trades: Sequence[tuple[str, Decimal, Decimal]]) -> list[_Candle]:
        """Feed one market update; the candles to push (a just-closed one first)."""
        out: list[_Candle] = []
        forming = self.forming
        last_close: str | None = None
        start, end = _bucket(ts, self.interval)
        if forming is not None and start != forming.start:
            forming.closed = True
            self.history.append(forming)
            out.append(forming)
            last_close = forming.c
            forming = self.forming = None
        if forming is None and (trades or last_close is not None):
            forming = self.forming = _Candle(start, end, last_close or trades[0][0])
            if not trades:
                forming.stamp = ts
                out.append(forming)
        if trades:
            assert forming is not None
            for price_text, price, amount in trades:
                forming.add(price_text, price, amount)
            forming.stamp = ts
            out.append(forming)
        return out

    def all(self) -> list[_Candle]:
        out = list(self.history)
        if self.forming is not None:
            out.append(self.forming)
        return out


def _aggregate(candles: Iterable[_Candle], interval: str) -> list[_Candle]:
    """Merge 1-minute candles into ``interval`` candles."""
    out: list[_Candle] = []
    last: _Candle | None = None
    for candle in candles:
        start, end = _bucket(candle.start, interval)
        if not out or out[-1].start != start:
            merged = _Candle(start, end, candle.o)
            merged.closed = True
            out.append(merged)
        out[-1].merge(candle)
        last = candle
    if out and last is not None:
        out[-1].closed = last.closed
    return out


class _Window:
    """Rolling trade figures over ``span`` ms: sums, high/low (monotonic deques), first price."""

    __slots__ = ("high", "low", "n", "span", "trades", "turnover", "volume")

    def __init__(self, span: int) -> None:
        self.span = span
        self.trades: deque[tuple[int, int, str, Decimal, Decimal]] = deque()
        self.high: deque[tuple[int, Decimal, str]] = deque()
        self.low: deque[tuple[int, Decimal, str]] = deque()
        self.volume = Decimal(0)
        self.turnover = Decimal(0)
        self.n = 0

    def add(self, ts: int, price_text: str, price: Decimal, amount: Decimal) -> None:
        self.n += 1
        self.trades.append((self.n, ts, price_text, price, amount))
        self.volume += amount
        self.turnover += price * amount
        while self.high and self.high[-1][1] <= price:
            self.high.pop()
        self.high.append((self.n, price, price_text))
        while self.low and self.low[-1][1] >= price:
            self.low.pop()
        self.low.append((self.n, price, price_text))

    def expire(self, now: int) -> None:
        cutoff = now - self.span
        while self.trades and self.trades[0][1] <= cutoff:
            n, _ts, _text, price, amount = self.trades.popleft()
            self.volume -= amount
            self.turnover -= price * amount
            if self.high and self.high[0][0] == n:
                self.high.popleft()
            if self.low and self.low[0][0] == n:
                self.low.popleft()


# -- per-topic, per-symbol and per-session state ---------------------------------------------


class _Topic:
    """One ``(category, topic)`` with its subscribers and what it last sent."""

    __slots__ = (
        "category",
        "depth",
        "interval",
        "kind",
        "last",
        "last_delta",
        "last_u",
        "name",
        "sent_at",
        "subscribers",
        "symbol",
    )

    def __init__(self, category: str, name: str, kind: str, symbol: str) -> None:
        self.category = category
        self.name = name
        self.kind = kind  # "orderbook" | "publicTrade" | "tickers" | "kline"
        self.symbol = symbol
        self.depth = 0
        self.interval = ""
        self.subscribers: dict[FakeSession, None] = {}
        #: orderbook: the depth-limited view (bid dict, ask dict) the subscribers have;
        #: tickers: the last full ticker sent
        self.last: Any = None
        #: orderbook: the ``u`` of the last message, the bytes of the last delta and
        #: (level 1) when the last snapshot went out
        self.last_u = 0
        self.last_delta: bytes | None = None
        self.sent_at: float | None = None


class _Symbol:
    """Per-symbol state shared by both categories: numbering, faults, trades, candles, figures."""

    __slots__ = (
        "base",
        "candles",
        "day",
        "digits_amount",
        "digits_price",
        "hour",
        "id",
        "ids",
        "info",
        "last_price",
        "linear",
        "offset",
        "prev_price",
        "quote",
        "skip",
        "stale_rest",
        "symbol",
        "tick_direction",
        "topics",
        "trade_log",
        "ts",
    )

    def __init__(self, symbol: str, info: Any) -> None:
        self.symbol = symbol
        self.info = info
        self.base = info.base
        self.quote = info.quote
        self.id = f"{info.base}{info.quote}"
        self.linear = f"{symbol}:{info.quote}"
        self.digits_price = _Digits(info.tick_size)
        self.digits_amount = _Digits(info.amount_step)
        #: ``u`` = market update id - offset (changed by :meth:`FakeBybit.restart_service`)
        self.offset = 0
        #: recent market update ids (for stale snapshots)
        self.ids: deque[int] = deque(maxlen=1000)
        self.skip = 0
        self.stale_rest: list[int] = []
        self.ts = VIRTUAL_EPOCH_MS
        self.topics: dict[tuple[str, str], _Topic] = {}
        self.candles: dict[str, _Candles] = {"1": _Candles("1", 10_000)}
        self.trade_log: dict[str, deque[dict[str, Any]]] = {
            c: deque(maxlen=1000) for c in CATEGORIES
        }
        self.day = _Window(_DAY_MS)
        self.hour = _Window(_HOUR_MS)
        self.last_price: str | None = None
        self.prev_price: str | None = None
        self.tick_direction = "ZeroPlusTick"


class _SessionInfo:
    __slots__ = ("args_chars", "category", "conn_id", "idle_call", "last", "topics")

    def __init__(self, category: str, conn_id: str, now: float) -> None:
        self.category = category
        self.conn_id = conn_id
        self.topics: dict[str, _Topic] = {}
        self.args_chars = 0
        self.last = now
        self.idle_call: Any = None


class _WsError(Exception):
    pass


class _RestError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


RateLimitStyle = Literal["429", "10006", "403"]


class FakeBybit:
    """A fake Bybit v5 exchange: public spot + linear WebSockets, REST market data, faults.

    ``symbols`` are unified spot names ``BASE/QUOTE`` (``"BTC/USDT"`` is
    ``"BTCUSDT"`` in both categories; its linear perpetual is also
    ``"BTC/USDT:USDT"``).  Spot and linear share one simulated book per
    symbol.  With ``market`` given its symbols are used; ``seed`` and
    ``levels`` make the default :class:`SimulatedMarket`.  ``idle_timeout``
    (s, ``None`` = never) closes a connection that sent nothing for that long;
    ``level1_interval`` (s) re-sends ``orderbook.1`` snapshots with an
    unchanged ``u`` when nothing changed (Bybit: every 3 s).  ``rest_ip_limit``
    requests are allowed per ``rest_window`` seconds (Bybit: 600 per 5 s);
    past that REST answers HTTP 403 ``access too frequent``.  ``api_keys``
    maps API keys to HMAC secrets for the private side (``private``, see
    :mod:`txexchange.testing.bybit_account`; balances in ``ledger``).
    """

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"),
        *,
        reactor: Any = None,
        seed: int = 0,
        tls: ServerCertificate | None = None,
        market: SimulatedMarket | None = None,
        levels: int = 50,
        idle_timeout: float | None = None,
        level1_interval: float | None = 3.0,
        rest_ip_limit: int = 600,
        rest_window: float = 5.0,
        clock: Any = None,
        api_keys: Mapping[str, str] | None = None,
    ) -> None:
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        if level1_interval is not None and level1_interval <= 0:
            raise ValueError("level1_interval must be positive (or None)")
        if rest_ip_limit < 1 or rest_window <= 0:
            raise ValueError("rest_ip_limit and rest_window must be positive")
        if market is None:
            market = SimulatedMarket(tuple(symbols), seed=seed, levels=levels)
        #: the simulated market behind the fake
        self.market = market
        self.seed = seed
        self.idle_timeout = idle_timeout
        self.level1_interval = level1_interval
        self.rest_ip_limit = rest_ip_limit
        self.rest_window = rest_window
        self._reactor = reactor
        self._clock = clock
        #: the WebSocket + REST server, for the toolkit's faults (drop, stall, ...)
        self.server = FakeExchangeServer(
            reactor=reactor, tls=tls, ws_paths=tuple(WS_PATHS.values())
        )
        self.server.on_session = self._on_session
        self.server.on_text = self._on_text
        self.server.on_binary = self._on_binary
        self._symbols: dict[str, _Symbol] = {}
        self._by_id: dict[str, _Symbol] = {}
        self._names: dict[str, _Symbol] = {}
        for symbol in market.symbols:
            state = _Symbol(symbol, market.info(symbol))
            state.ids.append(market.last_update_id(symbol))
            self._symbols[symbol] = state
            self._by_id[state.id] = state
            self._names[symbol] = self._names[state.linear] = state
        self._sessions: dict[FakeSession, _SessionInfo] = {}
        self._calls: set[Any] = set()
        self._rest_stamps: deque[float] = deque()
        #: paths (``None``: any) of queued ``rate_limit_next(style="10006")`` faults
        self._limit_faults: list[str | None] = []
        #: REST requests answered 403 by the IP limit
        self.rejected_403 = 0
        #: REST requests answered by :meth:`rate_limit_next` faults
        self.rate_limited = 0
        #: ``{"op": "ping"}`` requests answered
        self.pings = 0
        #: the ``system.status`` records announced so far (see :meth:`maintenance_notice`)
        self.status_records: list[dict[str, Any]] = []
        self._status_topic = _Topic("status", STATUS_TOPIC, "status", "")
        #: connections closed by the idle cut-off
        self.idle_closes = 0
        #: orderbook messages withheld by :meth:`skip_next`
        self.skipped_updates = 0
        self._loop: Any = None
        self._level1_loop: Any = None
        self._run_done: Deferred[None] | None = None
        self._run_left: int | None = None
        self._register_routes()
        #: API key -> HMAC secret accepted by the private side
        self.api_keys: dict[str, str] = dict(api_keys or {})
        #: the private side: signed endpoints, accounts, orders, the private stream
        self.private = FakeBybitPrivate(self)
        #: the private side's ledger (balances and orders per API key)
        self.ledger = self.private.ledger

    def __repr__(self) -> str:
        return f"<FakeBybit {len(self._symbols)} symbols {self.server!r}>"

    # -- life cycle ------------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def clock(self) -> Any:
        """What REST rate windows and ``/v5/market/time`` use (the reactor unless ``clock``)."""
        return self._clock if self._clock is not None else self.reactor

    def start(self) -> Deferred[FakeBybit]:
        """Listen on 127.0.0.1 (ephemeral port); fires with this fake."""
        return self.server.start().addCallback(lambda _: self)

    def stop(self) -> Deferred[None]:
        """Stop stepping, cancel every timer, drop every connection, stop listening."""
        self.stop_running()
        loop, self._level1_loop = self._level1_loop, None
        if loop is not None and loop.running:
            loop.stop()
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        for info in self._sessions.values():
            self._cancel_idle(info)
        return self.server.stop()

    @property
    def urls(self) -> dict[str, str]:
        """``urls=`` for the client: ``spot``, ``linear``, ``status`` and ``private``
        (full stream URLs) and ``rest`` (the REST base, no trailing slash)."""
        return {
            "spot": self.server.ws_url(WS_PATHS["spot"]),
            "linear": self.server.ws_url(WS_PATHS["linear"]),
            "status": self.server.ws_url(WS_PATHS["status"]),
            "private": self.server.ws_url(WS_PATHS["private"]),
            "rest": self.server.rest_url,
        }

    @property
    def rest_log(self) -> list[RecordedRequest]:
        """Every REST request that arrived (faulted and rejected ones included)."""
        return self.server.rest.requests

    def market_id(self, symbol: str) -> str:
        """Bybit's symbol of ``symbol`` (``"BTC/USDT"`` or ``"BTC/USDT:USDT"`` -> ``"BTCUSDT"``)."""
        return self._state(symbol).id

    def update_id(self, symbol: str) -> int:
        """The ``u`` of ``symbol``'s book now."""
        state = self._state(symbol)
        return self.market.last_update_id(state.symbol) - state.offset

    def cross_seq(self, symbol: str) -> int:
        """The cross sequence (``seq``, ``cs``) of ``symbol`` now."""
        return _SEQ_BASE + self.market.last_update_id(self._state(symbol).symbol)

    def conn_id(self, session: FakeSession) -> str:
        """The ``conn_id`` Bybit's acks carry on ``session``."""
        return self._sessions[session].conn_id

    # -- the market ----------------------------------------------------------------------

    def true_book(
        self, symbol: str, nonce: int | None = None, limit: int | None = None
    ) -> tuple[list[Level], list[Level], int]:
        """``(bids, asks, u)`` best first, Bybit's strings: now, or as of update id
        ``nonce`` (in the numbering in use since the last :meth:`restart_service`)."""
        state = self._state(symbol)
        if nonce is None:
            bids, asks, _uid = self.market.book(state.symbol, limit)
            nonce = self.update_id(symbol)
        else:
            bids, asks = self.market.book_at(state.symbol, nonce + state.offset, limit)
        price, amount = state.digits_price, state.digits_amount
        return (
            [(price(p), amount(a)) for p, a in bids],
            [(price(p), amount(a)) for p, a in asks],
            nonce,
        )

    def step(self, n: int = 1) -> list[MarketUpdate]:
        """Advance the market ``n`` steps and push what changed; returns the updates."""
        out: list[MarketUpdate] = []
        for _ in range(n):
            updates = self.market.step()
            for update in updates:
                self._publish(update)
            out.extend(updates)
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
        log.failure("FakeBybit.run: a step failed", failure)
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
            return self._names[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not a symbol of this FakeBybit") from None

    # -- faults ----------------------------------------------------------------------------

    def skip_next(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` orderbook messages of ``symbol`` (every depth, both
        categories) from everyone: ``u`` jumps and the books clients hold diverge
        (later deltas are diffs against what the server had, as on a lost message)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).skip += n

    def resend_last_delta(self, symbol: str) -> int:
        """Send every orderbook topic's last delta of ``symbol`` again (same bytes,
        same ``u``): the duplicate / non-increasing ``u`` a client must catch.
        Returns how many sessions got one."""
        sent = 0
        for topic in self._state(symbol).topics.values():
            if topic.kind == "orderbook" and topic.last_delta is not None:
                sent += self._send_raw(topic, topic.last_delta)
        return sent

    def send_snapshot(self, symbol: str, depth: int | None = None) -> int:
        """Push a fresh ``snapshot`` (the current book, current ``u``) to the orderbook
        subscribers of ``symbol`` (of ``depth`` only, if given) -- Bybit does this at
        any time and clients must reset on it.  Returns how many sessions got one."""
        state = self._state(symbol)
        sent = 0
        for topic in list(state.topics.values()):
            if topic.kind == "orderbook" and (depth is None or topic.depth == depth):
                sent += self._send(topic, self._book_snapshot(state, topic))
        return sent

    def restart_service(self, symbol: str) -> int:
        """The documented service restart: the update-id numbering of ``symbol``
        restarts, every orderbook subscriber gets a ``snapshot`` with ``u == 1`` now
        and later deltas go on from 2.  ``true_book`` takes the new numbers.
        Returns how many sessions got the snapshot."""
        state = self._state(symbol)
        state.offset = self.market.last_update_id(state.symbol) - 1
        return self.send_snapshot(symbol)

    def send_stale_snapshot(self, symbol: str, back: int = 5, depth: int | None = None) -> int:
        """Push a ``snapshot`` of ``symbol``'s book as it was ``back`` market updates
        ago, with that older ``u`` (below the ``u`` clients already hold).  Later
        deltas carry on from the current book.  Returns how many sessions got it."""
        state = self._state(symbol)
        uid = self._older_id(state, back)
        sent = 0
        for topic in list(state.topics.values()):
            if topic.kind == "orderbook" and (depth is None or topic.depth == depth):
                sent += self._send(topic, self._book_snapshot(state, topic, uid))
        return sent

    def stale_rest_snapshot_next(self, symbol: str, back: int = 5, count: int = 1) -> None:
        """The next ``count`` ``GET /v5/market/orderbook`` answers for ``symbol`` show the
        book (and ``u``) as it was ``back`` market updates before the request."""
        if back < 1 or count < 1:
            raise ValueError("back and count must be at least 1")
        self._state(symbol).stale_rest.extend([back] * count)

    def rate_limit_next(
        self,
        count: int = 1,
        *,
        style: RateLimitStyle = "429",
        path: str | None = None,
        retry_after: float | None = 1.0,
    ) -> None:
        """Answer the next ``count`` REST requests (to ``path``, if given) as rate limited.

        ``style="429"``: HTTP 429 with ``Retry-After`` and the ``retCode`` 10006 body;
        ``"10006"``: Bybit's documented API limit -- HTTP 200, ``retCode`` 10006
        ``"Too many visits!"`` and ``X-Bapi-Limit*`` headers; ``"403"``: the
        documented IP ban, HTTP 403 ``access too frequent``.
        """
        if style not in ("429", "10006", "403"):
            raise ValueError(f"style is '429', '10006' or '403', not {style!r}")
        if style == "403":
            self.server.rest.fail_next(403, count=count, path=path, body="access too frequent")
            return
        now_ms = int(self.clock.seconds() * 1000)
        body = {
            "retCode": 10006,
            "retMsg": _MSG_TOO_MANY,
            "result": {},
            "retExtInfo": {},
            "time": now_ms,
        }
        if style == "429":
            self.server.rest.fail_next(
                429, count=count, path=path, retry_after=retry_after, body=body
            )
        else:
            self._limit_faults.extend([path] * count)

    def maintenance_notice(
        self,
        state: str = "scheduled",
        *,
        title: str = "System maintenance",
        begin_in: float = 60.0,
        duration: float = 600.0,
        record_id: str | None = None,
        disconnect_after: float | None = None,
    ) -> int:
        """Announce platform maintenance on ``system.status`` (and ``GET /v5/system/status``).

        Adds a record (or, with the ``record_id`` of an earlier one, updates its
        ``state``: ``"scheduled"``, ``"ongoing"``, ``"completed"``) beginning
        ``begin_in`` seconds from now and lasting ``duration``, and pushes it to
        the ``system.status`` subscribers.  With ``disconnect_after`` seconds, every
        spot and linear connection is dropped then.  Returns how many sessions
        got the record.
        """
        now_ms = int(self.clock.seconds() * 1000)
        record = next((r for r in self.status_records if r["id"] == record_id), None)
        if record is None:
            if record_id is None:
                record_id = str(
                    uuid.uuid5(_TRADE_NS, f"status:{self.seed}:{len(self.status_records)}")
                )
            begin = now_ms + int(begin_in * 1000)
            record = {
                "id": record_id,
                "title": title,
                "state": state,
                "begin": str(begin),
                "end": str(begin + int(duration * 1000)),
                "href": "",
                "serviceTypes": [1, 2, 3, 4, 5],
                "product": [1, 2, 3, 4],
                "uidSuffix": [],
                "maintainType": 1,
                "env": 1,
            }
            self.status_records.append(record)
        else:
            record["state"] = state
            if state == "completed":
                record["end"] = str(now_ms)
        sent = self._send(self._status_topic, self._status_message([record]))
        if disconnect_after is not None:
            targets = [
                s for s, info in self._sessions.items() if info.category != "status" and s.is_open
            ]

            def drop() -> None:
                self._calls.discard(call)
                for session in targets:
                    if session.is_open:
                        session.drop()

            call = self.reactor.callLater(disconnect_after, drop)
            self._calls.add(call)
        return sent

    def _status_message(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "topic": STATUS_TOPIC,
            "ts": int(self.clock.seconds() * 1000),
            "data": [dict(r) for r in records],
        }

    def _older_id(self, state: _Symbol, back: int) -> int:
        if back < 1:
            raise ValueError("back must be at least 1")
        ids = state.ids
        return ids[max(0, len(ids) - 1 - back)]

    # -- publishing --------------------------------------------------------------------------

    def _send(self, topic: _Topic, message: Any) -> int:
        """Encode ``message`` once, send the bytes to ``topic``'s subscribers."""
        if message is None or not topic.subscribers:
            return 0
        return self._send_raw(topic, dumps(message))

    def _send_raw(self, topic: _Topic, raw: bytes) -> int:
        sent = 0
        for session in tuple(topic.subscribers):
            if session._send_encoded(raw, raw, False):
                sent += 1
        return sent

    def _view(
        self, state: _Symbol, depth: int, uid: int | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        if uid is None:
            bids, asks, _ = self.market.book(state.symbol, depth)
        else:
            bids, asks = self.market.book_at(state.symbol, uid, depth)
        price, amount = state.digits_price, state.digits_amount
        return (
            {price(p): amount(a) for p, a in bids},
            {price(p): amount(a) for p, a in asks},
        )

    def _book_snapshot(self, state: _Symbol, topic: _Topic, uid: int | None = None) -> Any:
        """An orderbook ``snapshot`` message (current, or as of market id ``uid``)."""
        view = self._view(state, topic.depth, uid)
        if uid is None:
            topic.last = view
            uid = self.market.last_update_id(state.symbol)
            topic.last_u = uid - state.offset
        return self._book_message(state, topic, "snapshot", view, uid - state.offset, uid)

    def _book_message(
        self,
        state: _Symbol,
        topic: _Topic,
        kind: str,
        view: tuple[dict[str, str], dict[str, str]],
        u: int,
        uid: int,
    ) -> dict[str, Any]:
        key = Decimal
        bids = sorted(view[0].items(), key=lambda kv: key(kv[0]), reverse=True)
        asks = sorted(view[1].items(), key=lambda kv: key(kv[0]))
        cts = state.ts
        return {
            "topic": topic.name,
            "type": kind,
            "ts": cts + _PUSH_LAG_MS,
            "data": {
                "s": state.id,
                "b": [list(b) for b in bids],
                "a": [list(a) for a in asks],
                "u": u,
                "seq": _SEQ_BASE + uid,
            },
            "cts": cts,
        }

    def _book_delta(self, state: _Symbol, topic: _Topic, skip: bool) -> None:
        old = topic.last
        new = self._view(state, topic.depth)
        topic.last = new
        uid = self.market.last_update_id(state.symbol)
        u = uid - state.offset
        if topic.depth == 1:
            # level 1 is snapshots only, sent when the top changes
            if new == old or skip:
                return
            topic.last_u = u
            self._send(topic, self._book_message(state, topic, "snapshot", new, u, uid))
            topic.sent_at = self.reactor.seconds()
            return
        changes: list[dict[str, str]] = []
        for before, after in zip(old, new, strict=True):
            diff = {p: s for p, s in after.items() if before.get(p) != s}
            diff.update((p, "0") for p in before if p not in after)
            changes.append(diff)
        if not changes[0] and not changes[1]:
            return
        if skip:
            return
        topic.last_u = u
        message = self._book_message(state, topic, "delta", (changes[0], changes[1]), u, uid)
        raw = dumps(message)
        topic.last_delta = raw
        self._send_raw(topic, raw)

    def _publish(self, update: MarketUpdate) -> None:
        state = self._symbols[update.symbol]
        ts = update.timestamp
        state.ts = ts
        state.ids.append(update.last_id)
        seq = _SEQ_BASE + update.last_id
        price_digits, amount_digits = state.digits_price, state.digits_amount
        fills: list[tuple[str, Decimal, Decimal]] = []
        rows: dict[str, list[dict[str, Any]]] = {c: [] for c in CATEGORIES}
        for trade in update.trades:
            price_text = price_digits(trade.price)
            size_text = amount_digits(trade.amount)
            price, amount = Decimal(price_text), Decimal(size_text)
            fills.append((price_text, price, amount))
            state.day.add(ts, price_text, price, amount)
            state.hour.add(ts, price_text, price, amount)
            self._tick_direction(state, price_text, price)
            for category in CATEGORIES:
                row = self._trade_row(state, category, trade, price_text, size_text, seq)
                rows[category].append(row)
                state.trade_log[category].append(row)
        state.day.expire(ts)
        state.hour.expire(ts)
        candles_out = {iv: c.update(ts, fills) for iv, c in state.candles.items()}
        skip = False
        if state.skip:
            state.skip -= 1
            self.skipped_updates += 1
            skip = True
        for topic in tuple(state.topics.values()):
            if not topic.subscribers:
                continue
            kind = topic.kind
            if kind == "orderbook":
                self._book_delta(state, topic, skip)
            elif kind == "publicTrade":
                if rows[topic.category]:
                    self._send(
                        topic,
                        {
                            "topic": topic.name,
                            "type": "snapshot",
                            "ts": ts + _PUSH_LAG_MS,
                            "data": rows[topic.category],
                        },
                    )
            elif kind == "tickers":
                self._send(topic, self._ticker_message(state, topic))
            elif kind == "kline":
                out = candles_out.get(topic.interval, ())
                if out:
                    self._send(
                        topic,
                        {
                            "topic": topic.name,
                            "data": [c.kline(topic.interval) for c in out],
                            "ts": ts + _PUSH_LAG_MS,
                            "type": "snapshot",
                        },
                    )

    def _tick_direction(self, state: _Symbol, price_text: str, price: Decimal) -> None:
        last = state.last_price
        if last is not None:
            before = Decimal(last)
            if price > before:
                state.tick_direction = "PlusTick"
            elif price < before:
                state.tick_direction = "MinusTick"
            elif state.tick_direction in ("PlusTick", "ZeroPlusTick"):
                state.tick_direction = "ZeroPlusTick"
            else:
                state.tick_direction = "ZeroMinusTick"
        state.prev_price = last
        state.last_price = price_text

    def _trade_row(
        self, state: _Symbol, category: str, trade: SimTrade, price: str, size: str, seq: int
    ) -> dict[str, Any]:
        side = "Buy" if trade.side == "buy" else "Sell"
        if category == "spot":
            trade_id = str(trade.id)
            return {
                "T": trade.timestamp,
                "s": state.id,
                "S": side,
                "v": size,
                "p": price,
                "i": trade_id,
                "BT": False,
                "RPI": False,
                "seq": seq,
            }
        trade_id = str(uuid.uuid5(_TRADE_NS, f"{self.seed}:{state.id}:{trade.id}"))
        return {
            "T": trade.timestamp,
            "s": state.id,
            "S": side,
            "v": size,
            "p": price,
            "L": state.tick_direction,
            "i": trade_id,
            "BT": False,
            "RPI": False,
            "seq": seq,
        }

    # -- tickers --------------------------------------------------------------------------------

    def _ticker(self, state: _Symbol, category: str) -> dict[str, str]:
        """The full ticker of ``state`` in ``category`` (WebSocket field set)."""
        bids, asks, _uid = self.market.book(state.symbol, 1)
        price, amount = state.digits_price, state.digits_amount
        bid = (price(bids[0][0]), amount(bids[0][1])) if bids else ("", "")
        ask = (price(asks[0][0]), amount(asks[0][1])) if asks else ("", "")
        last = state.last_price or bid[0]
        day, hour = state.day, state.hour
        prev24 = day.trades[0][2] if day.trades else last
        prev1h = hour.trades[0][2] if hour.trades else last
        high = day.high[0][2] if day.high else last
        low = day.low[0][2] if day.low else last
        pcnt = Decimal(0)
        if Decimal(prev24):
            pcnt = (Decimal(last) - Decimal(prev24)) / Decimal(prev24)
        pcnt_text = f"{pcnt.quantize(Decimal('0.000001')):f}"
        volume, turnover = _text(day.volume), _text(day.turnover)
        if category == "spot":
            return {
                "symbol": state.id,
                "lastPrice": last,
                "highPrice24h": high,
                "lowPrice24h": low,
                "prevPrice24h": prev24,
                "volume24h": volume,
                "turnover24h": turnover,
                "price24hPcnt": pcnt_text,
                "usdIndexPrice": last,
            }
        mark = bid[0] or last
        open_interest = Decimal(1000 + zlib.crc32(state.id.encode()) % 100_000).scaleb(-3)
        next_funding = (state.ts // (8 * _HOUR_MS) + 1) * 8 * _HOUR_MS
        return {
            "symbol": state.id,
            "tickDirection": state.tick_direction,
            "price24hPcnt": pcnt_text,
            "lastPrice": last,
            "prevPrice24h": prev24,
            "highPrice24h": high,
            "lowPrice24h": low,
            "prevPrice1h": prev1h,
            "markPrice": mark,
            "indexPrice": mark,
            "openInterest": _text(open_interest),
            "openInterestValue": _text(open_interest * Decimal(mark)),
            "turnover24h": turnover,
            "volume24h": volume,
            "fundingIntervalHour": "8",
            "fundingCap": "0.005",
            "nextFundingTime": str(next_funding),
            "fundingRate": "0.0001",
            "bid1Price": bid[0],
            "bid1Size": bid[1],
            "ask1Price": ask[0],
            "ask1Size": ask[1],
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
        }

    def _ticker_message(self, state: _Symbol, topic: _Topic, initial: bool = False) -> Any:
        """Spot: a snapshot when the ticker changed; linear: the first time a snapshot,
        then a delta with the changed fields (and ``symbol``), ``None`` if none changed."""
        full = self._ticker(state, topic.category)
        last = topic.last
        topic.last = full
        cts = state.ts
        cs = _SEQ_BASE + self.market.last_update_id(state.symbol)
        if initial or last is None:
            data: dict[str, str] = full
            kind = "snapshot"
        else:
            if full == last:
                return None
            if topic.category == "spot":
                data, kind = full, "snapshot"
            else:
                data = {"symbol": state.id}
                data.update((k, v) for k, v in full.items() if last.get(k) != v)
                kind = "delta"
        return {"topic": topic.name, "type": kind, "data": data, "cs": cs, "ts": cts + _PUSH_LAG_MS}

    # -- WebSocket sessions ------------------------------------------------------------------------

    def _on_session(self, session: FakeSession) -> None:
        path = session.path.rstrip("/")
        category = next(c for c, p in WS_PATHS.items() if path == p or path.startswith(p + "/"))
        digest = format(zlib.crc32(f"bybit:{self.seed}:{session.number}".encode()), "08x")
        conn_id = f"{digest}-{session.number:04x}-4a05-930a-{digest}{session.number:04x}"
        info = _SessionInfo(category, conn_id, self.reactor.seconds())
        self._sessions[session] = info
        self._arm_idle(session, info, self.idle_timeout)

        def gone(result: Any) -> Any:
            self._cancel_idle(info)
            for topic in info.topics.values():
                topic.subscribers.pop(session, None)
            info.topics.clear()
            self._sessions.pop(session, None)
            return result

        session.closed.addBoth(gone)

    def _arm_idle(self, session: FakeSession, info: _SessionInfo, delay: float | None) -> None:
        if delay is None:
            return

        def check() -> None:
            self._calls.discard(info.idle_call)
            info.idle_call = None
            if not session.is_open or self.idle_timeout is None:
                return
            left = info.last + self.idle_timeout - self.reactor.seconds()
            if left > 1e-6:
                self._arm_idle(session, info, left)
                return
            self.idle_closes += 1
            log.info(
                "FakeBybit: {session} sent nothing for {s}s; closing",
                session=session,
                s=self.idle_timeout,
            )
            session.close(1000, "idle timeout")

        info.idle_call = self.reactor.callLater(delay, check)
        self._calls.add(info.idle_call)

    def _cancel_idle(self, info: _SessionInfo) -> None:
        call, info.idle_call = info.idle_call, None
        if call is not None:
            self._calls.discard(call)
            if call.active():
                call.cancel()

    def _ack(
        self, info: _SessionInfo, op: str, req_id: Any, success: bool, ret_msg: str
    ) -> dict[str, Any]:
        """Bybit's answer to a request (spot: ``ret_msg`` names the op on success)."""
        if success and info.category == "spot":
            ret_msg = op
        message: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": info.conn_id}
        if req_id is not None or info.category != "spot":
            message["req_id"] = "" if req_id is None else req_id
        message["op"] = op
        return message

    def _on_binary(self, session: FakeSession, payload: bytes) -> None:
        info = self._sessions.get(session)
        if info is not None:
            info.last = self.reactor.seconds()
            self.server.reply(session, self._ack(info, "", None, False, "error:invalid request"))

    def _on_text(self, session: FakeSession, message: Any) -> None:
        info = self._sessions.get(session)
        if info is None:
            return
        info.last = self.reactor.seconds()
        if info.category == "private":
            self.private.on_text(session, info.conn_id, message)
            return
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            self.server.reply(session, self._ack(info, "", None, False, "error:invalid request"))
            return
        op = message["op"]
        req_id = message.get("req_id")
        if op == "ping":
            self.pings += 1
            pong = {"success": True, "ret_msg": "pong", "conn_id": info.conn_id}
            if info.category != "spot":
                pong["req_id"] = "" if req_id is None else req_id
            pong["op"] = "ping"
            self.server.reply(session, pong)
            return
        if op not in ("subscribe", "unsubscribe"):
            self.server.reply(
                session, self._ack(info, op, req_id, False, f"error:unsupported op:{op}")
            )
            return
        args = message.get("args")
        try:
            if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
                raise _WsError("error:args must be a non-empty list of topics")
            if info.category == "spot" and len(args) > SPOT_MAX_ARGS:
                raise _WsError(f"args size >{SPOT_MAX_ARGS}")
            topics = [self._parse_topic(info.category, name) for name in args]
            if op == "subscribe":
                for name in args:
                    if name in info.topics:
                        raise _WsError(f"error:already subscribed,topic:{name}")
                if len(set(args)) != len(args):
                    raise _WsError("error:duplicate topics in one request")
                chars = info.args_chars + sum(len(a) for a in args)
                if chars > MAX_ARGS_CHARS:
                    raise _WsError(f"error:args length exceeds {MAX_ARGS_CHARS}")
        except _WsError as e:
            self.server.reply(session, self._ack(info, op, req_id, False, str(e)))
            return
        ack = self._ack(info, op, req_id, True, "")
        if op == "subscribe":
            self._subscribe(session, info, topics, ack)
        else:
            for topic in topics:
                self._unsubscribe(session, info, topic)
            self.server.reply(session, ack)

    def _parse_topic(self, category: str, name: str) -> _Topic:
        if category == "status" or name == STATUS_TOPIC:
            if category != "status" or name != STATUS_TOPIC:
                raise _WsError(f"error:handler not found,topic:{name}")
            return self._status_topic
        parts = name.split(".")
        kind = parts[0]
        state = self._by_id.get(parts[-1]) if len(parts) > 1 else None
        valid = (
            (
                kind == "orderbook"
                and len(parts) == 3
                and parts[1].isdigit()
                and int(parts[1]) in BOOK_DEPTHS
            )
            or (kind == "kline" and len(parts) == 3 and parts[1] in INTERVALS)
            or (kind in ("publicTrade", "tickers") and len(parts) == 2)
        )
        if not valid or state is None:
            if category == "spot":
                raise _WsError(
                    f"Invalid topic :[{name}]" if not valid else f"Invalid symbol :[{name}]"
                )
            raise _WsError(f"error:handler not found,topic:{name}")
        key = (category, name)
        topic = state.topics.get(key)
        if topic is None:
            topic = _Topic(category, name, kind, state.symbol)
            if kind == "orderbook":
                topic.depth = int(parts[1])
            elif kind == "kline":
                topic.interval = parts[1]
            state.topics[key] = topic
        return topic

    def _subscribe(
        self, session: FakeSession, info: _SessionInfo, topics: list[_Topic], ack: dict[str, Any]
    ) -> None:
        """Acknowledge, then (as one step, after :attr:`server.reply_delay` if set)
        make the subscriptions live and push their initial data."""

        def activate() -> None:
            if not session.is_open:
                return
            info.last = self.reactor.seconds()
            session.send(dumps(ack))
            for topic in topics:
                if topic.name in info.topics:
                    continue
                info.topics[topic.name] = topic
                info.args_chars += len(topic.name)
                session.subscriptions.add(topic.name)
                topic.subscribers[session] = None
                self._initial_push(session, topic)

        delay = self.server.reply_delay
        if delay > 0:

            def fire() -> None:
                self._calls.discard(call)
                activate()

            call = self.reactor.callLater(delay, fire)
            self._calls.add(call)
        else:
            activate()

    def _initial_push(self, session: FakeSession, topic: _Topic) -> None:
        if topic.kind == "status":
            if self.status_records:
                session.send(dumps(self._status_message(self.status_records)))
            return
        state = self._symbols[topic.symbol]
        message: Any = None
        if topic.kind == "orderbook":
            message = self._book_snapshot(state, topic)
            if topic.depth == 1:
                topic.sent_at = self.reactor.seconds()
                self._ensure_level1_loop()
        elif topic.kind == "tickers":
            message = self._ticker_message(state, topic, initial=True)
        elif topic.kind == "kline":
            candles = state.candles.get(topic.interval)
            if candles is None:
                candles = state.candles[topic.interval] = self._new_candles(state, topic.interval)
            if candles.forming is not None:
                message = {
                    "topic": topic.name,
                    "data": [candles.forming.kline(topic.interval)],
                    "ts": state.ts + _PUSH_LAG_MS,
                    "type": "snapshot",
                }
        if message is not None:
            session.send(dumps(message))

    def _ensure_level1_loop(self) -> None:
        if self.level1_interval is None or self._level1_loop is not None:
            return
        from twisted.internet.task import LoopingCall

        loop = LoopingCall(self._level1_resend)
        loop.clock = self.reactor
        self._level1_loop = loop
        loop.start(self.level1_interval, now=False).addErrback(
            lambda f: log.failure("FakeBybit: level-1 re-send failed", f)
        )

    def _level1_resend(self) -> None:
        """Re-send ``orderbook.1`` snapshots (same ``u``) that did not change for a while."""
        assert self.level1_interval is not None
        now = self.reactor.seconds()
        for state in self._symbols.values():
            for topic in state.topics.values():
                if topic.kind != "orderbook" or topic.depth != 1 or not topic.subscribers:
                    continue
                if topic.sent_at is not None and now - topic.sent_at < self.level1_interval - 1e-3:
                    continue
                uid = topic.last_u + state.offset
                message = self._book_message(
                    state, topic, "snapshot", topic.last, topic.last_u, uid
                )
                self._send(topic, message)
                topic.sent_at = now

    @staticmethod
    def _new_candles(state: _Symbol, interval: str) -> _Candles:
        candles = _Candles(interval)
        merged = _aggregate(state.candles["1"].all(), interval)
        if merged:
            candles.history.extend(merged[:-1])
            candles.forming = merged[-1]
            candles.forming.closed = False
        return candles

    def _unsubscribe(self, session: FakeSession, info: _SessionInfo, topic: _Topic) -> None:
        if info.topics.pop(topic.name, None) is not None:
            info.args_chars -= len(topic.name)
        session.subscriptions.discard(topic.name)
        topic.subscribers.pop(session, None)

    # -- REST ------------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        handlers: dict[str, Callable[[dict[str, str]], Any]] = {
            "/v5/market/time": self._rest_time,
            "/v5/market/instruments-info": self._rest_instruments,
            "/v5/market/orderbook": self._rest_orderbook,
            "/v5/market/recent-trade": self._rest_trades,
            "/v5/market/kline": self._rest_kline,
            "/v5/market/tickers": self._rest_tickers,
            "/v5/system/status": self._rest_status,
        }
        for path, handler in handlers.items():
            self.server.rest.route("GET", path, self._endpoint(path, handler))

    def _envelope(self, code: int, msg: str, result: Any) -> dict[str, Any]:
        return {
            "retCode": code,
            "retMsg": msg,
            "result": result,
            "retExtInfo": {},
            "time": int(self.clock.seconds() * 1000),
        }

    def _endpoint(
        self, path: str, handler: Callable[[dict[str, str]], Any]
    ) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if not self._allow():
                self.rejected_403 += 1
                return Response(403, "access too frequent")
            faults = self._limit_faults
            for i, fault_path in enumerate(faults):
                if fault_path is None or fault_path == path:
                    del faults[i]
                    self.rate_limited += 1
                    reset = int(self.clock.seconds() * 1000) + 1000
                    return Response(
                        200,
                        self._envelope(10006, _MSG_TOO_MANY, {}),
                        {
                            "X-Bapi-Limit": "10",
                            "X-Bapi-Limit-Status": "0",
                            "X-Bapi-Limit-Reset-Timestamp": str(reset),
                        },
                    )
            args = {
                k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                for k, v in (request.args or {}).items()
                if v
            }
            try:
                result = handler(args)
            except _RestError as e:
                return Response(200, self._envelope(e.code, e.msg, {}))
            return Response(
                200, self._envelope(0, "" if path == "/v5/system/status" else "OK", result)
            )

        return serve

    def _allow(self) -> bool:
        now = self.clock.seconds()
        stamps = self._rest_stamps
        while stamps and stamps[0] <= now - self.rest_window:
            stamps.popleft()
        if len(stamps) >= self.rest_ip_limit:
            return False
        stamps.append(now)
        return True

    @staticmethod
    def _category(args: dict[str, str], default: str | None = None) -> str:
        category = args.get("category") or default
        if category is None:
            raise _RestError(10001, "params error: category is required")
        if category not in CATEGORIES:
            raise _RestError(10001, f"params error: category {category} is not supported")
        return category

    def _symbol_arg(self, args: dict[str, str]) -> _Symbol:
        symbol = args.get("symbol")
        if not symbol:
            raise _RestError(10001, "params error: symbol is required")
        state = self._by_id.get(symbol.upper())
        if state is None:
            raise _RestError(10001, "params error: symbol invalid")
        return state

    @staticmethod
    def _limit(args: dict[str, str], default: int, most: int) -> int:
        value = args.get("limit")
        if value is None or value == "":
            return default
        if not value.isdigit() or not 1 <= int(value) <= most:
            raise _RestError(10001, f"params error: limit must be in [1, {most}]")
        return int(value)

    def _rest_time(self, args: dict[str, str]) -> Any:
        nanos = int(self.clock.seconds() * 1_000_000_000)
        return {"timeSecond": str(nanos // 1_000_000_000), "timeNano": str(nanos)}

    def _rest_instruments(self, args: dict[str, str]) -> Any:
        category = self._category(args)
        wanted = (args.get("symbol") or "").upper()
        rows: list[dict[str, Any]] = []
        for state in self._symbols.values():
            if wanted and state.id != wanted:
                continue
            info = state.info
            tick = _text(Decimal(info.tick_size))
            step = _text(Decimal(info.amount_step))
            if category == "spot":
                rows.append(
                    {
                        "symbol": state.id,
                        "baseCoin": state.base,
                        "quoteCoin": state.quote,
                        "innovation": "0",
                        "status": "Trading",
                        "marginTrading": "none",
                        "stTag": "0",
                        "lotSizeFilter": {
                            "basePrecision": step,
                            "quotePrecision": "0.00000001",
                            "minOrderQty": step,
                            "maxOrderQty": "10000",
                            "minOrderAmt": "1",
                            "maxOrderAmt": "2000000",
                        },
                        "priceFilter": {"tickSize": tick},
                        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
                    }
                )
            else:
                scale = len(tick.partition(".")[2])
                rows.append(
                    {
                        "symbol": state.id,
                        "contractType": "LinearPerpetual",
                        "status": "Trading",
                        "baseCoin": state.base,
                        "quoteCoin": state.quote,
                        "launchTime": "1585526400000",
                        "deliveryTime": "0",
                        "deliveryFeeRate": "",
                        "priceScale": str(scale),
                        "leverageFilter": {
                            "minLeverage": "1",
                            "maxLeverage": "100.00",
                            "leverageStep": "0.01",
                        },
                        "priceFilter": {
                            "minPrice": tick,
                            "maxPrice": "1999999.80",
                            "tickSize": tick,
                        },
                        "lotSizeFilter": {
                            "maxOrderQty": "1000",
                            "minOrderQty": step,
                            "qtyStep": step,
                            "postOnlyMaxOrderQty": "1000",
                            "maxMktOrderQty": "100",
                            "minNotionalValue": "5",
                        },
                        "unifiedMarginTrade": True,
                        "fundingInterval": 480,
                        "settleCoin": state.quote,
                        "copyTrading": "none",
                        "upperFundingRate": "0.005",
                        "lowerFundingRate": "-0.005",
                        "isPreListing": False,
                        "preListingInfo": None,
                    }
                )
        return {"category": category, "list": rows, "nextPageCursor": ""}

    def _rest_orderbook(self, args: dict[str, str]) -> Any:
        category = self._category(args)
        state = self._symbol_arg(args)
        limit = self._limit(args, 1 if category == "spot" else 25, REST_BOOK_MAX)
        uid = self.market.last_update_id(state.symbol)
        if state.stale_rest:
            uid = self._older_id(state, state.stale_rest.pop(0))
            bids_d, asks_d = self._view(state, limit, uid)
        else:
            bids_d, asks_d = self._view(state, limit)
        bids = sorted(bids_d.items(), key=lambda kv: Decimal(kv[0]), reverse=True)
        asks = sorted(asks_d.items(), key=lambda kv: Decimal(kv[0]))
        return {
            "s": state.id,
            "b": [list(b) for b in bids],
            "a": [list(a) for a in asks],
            "ts": state.ts + _PUSH_LAG_MS,
            "u": uid - state.offset,
            "seq": _SEQ_BASE + uid,
            "cts": state.ts,
        }

    def _rest_trades(self, args: dict[str, str]) -> Any:
        category = self._category(args)
        state = self._symbol_arg(args)
        limit = self._limit(
            args, 60 if category == "spot" else 500, 60 if category == "spot" else 1000
        )
        rows = list(state.trade_log[category])[-limit:]
        rows.reverse()
        out = [
            {
                "execId": r["i"],
                "symbol": r["s"],
                "price": r["p"],
                "size": r["v"],
                "side": r["S"],
                "time": str(r["T"]),
                "isBlockTrade": False,
                "isRPITrade": False,
                "seq": str(r["seq"]),
            }
            for r in rows
        ]
        return {"category": category, "list": out}

    def _rest_kline(self, args: dict[str, str]) -> Any:
        category = self._category(args, "linear")
        state = self._symbol_arg(args)
        interval = args.get("interval")
        if interval not in INTERVALS:
            raise _RestError(10001, "params error: interval invalid")
        limit = self._limit(args, 200, 1000)
        if interval in state.candles:
            candles = state.candles[interval].all()
        else:
            candles = _aggregate(state.candles["1"].all(), interval)
        rows = [c.row() for c in reversed(candles)]  # newest first
        start, end = args.get("start"), args.get("end")
        if start and start.isdigit():
            rows = [r for r in rows if int(r[0]) >= int(start)]
        if end and end.isdigit():
            rows = [r for r in rows if int(r[0]) <= int(end)]
        return {"category": category, "symbol": state.id, "list": rows[:limit]}

    def _rest_status(self, args: dict[str, str]) -> Any:
        rows = [
            dict(r)
            for r in self.status_records
            if (not args.get("id") or r["id"] == args["id"])
            and (not args.get("state") or r["state"] == args["state"])
        ]
        return {"list": rows}

    def _rest_tickers(self, args: dict[str, str]) -> Any:
        category = self._category(args)
        states = [self._symbol_arg(args)] if args.get("symbol") else list(self._symbols.values())
        rows = []
        for state in states:
            ticker = self._ticker(state, category)
            bids, asks, _ = self.market.book(state.symbol, 1)
            price, amount = state.digits_price, state.digits_amount
            if category == "spot":
                ticker = {
                    "symbol": ticker["symbol"],
                    "bid1Price": price(bids[0][0]) if bids else "",
                    "bid1Size": amount(bids[0][1]) if bids else "",
                    "ask1Price": price(asks[0][0]) if asks else "",
                    "ask1Size": amount(asks[0][1]) if asks else "",
                    **{k: v for k, v in ticker.items() if k != "symbol"},
                }
            else:
                for key in (
                    "tickDirection",
                    "fundingIntervalHour",
                    "fundingCap",
                    "preOpenPrice",
                    "preQty",
                    "curPreListingPhase",
                ):
                    ticker.pop(key, None)
                ticker.update(
                    predictedDeliveryPrice="",
                    basisRate="",
                    deliveryFeeRate="",
                    deliveryTime="0",
                    basis="",
                )
            rows.append(ticker)
        return {"category": category, "list": rows}
