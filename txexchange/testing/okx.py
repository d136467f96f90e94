"""A fake OKX (API v5) exchange on 127.0.0.1: public/business WebSockets and REST market data.

Part of the test toolkit (:mod:`txexchange.testing`), in the exchange's place
in the flow: a :class:`FakeOkx` drives a
:class:`~txexchange.testing.market.SimulatedMarket` and turns every
:class:`~txexchange.testing.market.MarketUpdate` into the messages OKX
documents for its v5 WebSocket API (``books`` snapshot + ``seqId``/``prevSeqId``
updates with the CRC32 ``checksum``, ``books5``, ``bbo-tbt``, ``trades``,
``trades-all``, ``tickers`` on ``/ws/v5/public``; ``candle<bar>`` on
``/ws/v5/business``), answers ``{"op": "subscribe"|"unsubscribe", "args": [...]}``
with OKX's events and error codes, the text ``ping``/``pong`` keep-alive and the
idle cut-off, and serves the REST market-data endpoints with per-endpoint rate
limits (HTTP 429, code ``50011``).  It is written from the OKX documentation
(``PROTOCOLS.md`` section 2), not from the client adapter, so the two check
each other.

Every event is encoded once and the same bytes go to every subscribed
session.  Nothing here imports a reactor at import time.
"""

from __future__ import annotations

import calendar
import datetime
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from txexchange.codec import dumps
from txexchange.testing.market import VIRTUAL_EPOCH_MS, MarketUpdate, SimTrade, SimulatedMarket
from txexchange.testing.okx_account import PRIVATE_PATH, FakeOkxPrivate
from txexchange.testing.rest import RecordedRequest, Response
from txexchange.testing.server import FakeExchangeServer, FakeSession
from txexchange.testing.tls import ServerCertificate

__all__ = ["FakeOkx", "okx_checksum", "okx_checksum_string"]

log = Logger()

#: WebSocket paths
PUBLIC_PATH = "/ws/v5/public"
BUSINESS_PATH = "/ws/v5/business"
#: how many levels per side the (deprecated) CRC32 checksum covers
CHECKSUM_DEPTH = 25
#: levels of a ``books`` snapshot (and the most ``GET /api/v5/market/books`` gives)
BOOKS_DEPTH = 400
#: subscribe/unsubscribe/login requests allowed per connection per hour
SUBSCRIBE_LIMIT = 480
#: the 64008 notice text (docs, "notice_service_upgrade" fixture)
NOTICE_64008 = "The connection will soon be closed for a service upgrade. Please reconnect."

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_UTC8_MS = 8 * _HOUR_MS
#: 1970-01-05 was a Monday: weekly candles open on Mondays
_WEEK_ALIGN_MS = 4 * _DAY_MS

_BAR_MS: dict[str, int] = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
    "30m": 1_800_000, "1H": _HOUR_MS, "2H": 2 * _HOUR_MS, "4H": 4 * _HOUR_MS,
    "6H": 6 * _HOUR_MS, "12H": 12 * _HOUR_MS, "1D": _DAY_MS, "2D": 2 * _DAY_MS,
    "3D": 3 * _DAY_MS, "5D": 5 * _DAY_MS, "1W": 7 * _DAY_MS, "1M": 0, "3M": 0,
}  # fmt: skip
_UTC_BARS = ("6H", "12H", "1D", "2D", "3D", "5D", "1W", "1M", "3M")
#: bar -> (length ms (0: calendar months), months, time-zone offset ms)
_BARS: dict[str, tuple[int, int, int]] = {}
for _bar, _ms in _BAR_MS.items():
    _months = {"1M": 1, "3M": 3}.get(_bar, 0)
    # OKX aligns 6H and longer bars to UTC+8 unless the bar ends in "utc"
    _BARS[_bar] = (_ms, _months, _UTC8_MS if _bar in _UTC_BARS else 0)
for _bar in _UTC_BARS:
    _BARS[_bar + "utc"] = (_BAR_MS[_bar], {"1M": 1, "3M": 3}.get(_bar, 0), 0)

#: channels served on /ws/v5/public and on /ws/v5/business; any other channel
#: (or one on the wrong path) is refused with 60018, as OKX does
_PUBLIC_CHANNELS = frozenset({"books", "books5", "bbo-tbt", "trades", "tickers"})
_BUSINESS_CHANNELS = frozenset({"trades-all"} | {"candle" + b for b in _BARS})
#: a request ``id``: at most 32 alphanumerics
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")

#: REST path -> requests allowed per :attr:`FakeOkx.rest_window` (2 s); books from
#: PROTOCOLS.md, the others from OKX's endpoint pages as remembered
_REST_LIMITS: dict[str, int] = {
    "/api/v5/market/books": 40,
    "/api/v5/market/candles": 40,
    "/api/v5/market/trades": 100,
    "/api/v5/market/ticker": 20,
    "/api/v5/public/instruments": 20,
    "/api/v5/public/time": 10,
}

#: OKX's text for error 50011 (HTTP 429)
_MSG_50011 = (
    "Rate limit reached. Please refer to API documentation and throttle requests accordingly."
)

Level = tuple[str, str]


# -- wire helpers ----------------------------------------------------------------------------


def okx_checksum_string(
    bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]], depth: int = CHECKSUM_DEPTH
) -> str:
    """The documented check string: ``bidPx:bidSz:askPx:askSz:...`` over the best
    ``depth`` levels per side, wire strings as sent, missing levels skipped."""
    parts: list[str] = []
    for i in range(min(depth, max(len(bids), len(asks)))):
        if i < len(bids):
            parts.append(bids[i][0])
            parts.append(bids[i][1])
        if i < len(asks):
            parts.append(asks[i][0])
            parts.append(asks[i][1])
    return ":".join(parts)


def okx_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """CRC32 (zlib/IEEE) of :func:`okx_checksum_string`, as a signed 32-bit int."""
    crc = zlib.crc32(okx_checksum_string(bids, asks).encode("ascii"))
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class _Trim:
    """Fixed-decimal strings of the market -> OKX's shortest form (``"7"``, ``"3366.1"``)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        out = self._cache.get(text)
        if out is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            out = text.rstrip("0").rstrip(".") if "." in text else text
            if out in ("", "-"):
                out = "0"
            self._cache[text] = out
        return out


def _decimal_text(value: Decimal) -> str:
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _orders(price: str, size: str) -> str:
    """A deterministic order count for a level (``"0"`` for a deleted level)."""
    if size == "0":
        return "0"
    return str(1 + (len(price) * 7 + sum(map(ord, size))) % 9)


def _bucket(ts: int, bar: str) -> int:
    """Open time (ms) of the ``bar`` candle holding ``ts``."""
    length, months, offset = _BARS[bar]
    if months:
        local = datetime.datetime.fromtimestamp((ts + offset) / 1000, datetime.UTC)
        month = (local.month - 1) // months * months + 1
        start = datetime.datetime(local.year, month, 1, tzinfo=datetime.UTC)
        return calendar.timegm(start.timetuple()) * 1000 - offset
    align = _WEEK_ALIGN_MS if bar.startswith("1W") else 0
    return (ts + offset - align) // length * length + align - offset


class _Candle:
    __slots__ = ("c", "closed", "h", "hd", "l", "ld", "n", "o", "quote", "start", "vol")

    def __init__(self, start: int, price: str) -> None:
        self.start = start
        self.o = self.h = self.l = self.c = price
        self.hd = self.ld = Decimal(price)
        self.vol = Decimal(0)
        self.quote = Decimal(0)
        self.n = 0
        self.closed = False

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
        self.vol += amount
        self.quote += price * amount

    def merge(self, other: _Candle) -> None:
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
        self.vol += other.vol
        self.quote += other.quote

    def row(self) -> list[str]:
        """``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]`` (spot: vol in base,
        volCcy and volCcyQuote in quote currency)."""
        quote = _decimal_text(self.quote)
        return [str(self.start), self.o, self.h, self.l, self.c, _decimal_text(self.vol),
                quote, quote, "1" if self.closed else "0"]  # fmt: skip


class _Candles:
    """One symbol's candles of one bar: closed history and the forming one."""

    __slots__ = ("bar", "forming", "history")

    def __init__(self, bar: str, history: int = 1440) -> None:
        self.bar = bar
        self.history: deque[_Candle] = deque(maxlen=history)
        self.forming: _Candle | None = None

    def update(
        self, ts: int, trades: Sequence[tuple[SimTrade, str, Decimal, Decimal]]
    ) -> list[_Candle]:
        """Feed one market update; the candles to publish (a closed one first)."""
        out: list[_Candle] = []
        forming = self.forming
        last_close: str | None = None
        if forming is not None and _bucket(ts, self.bar) != forming.start:
            forming.closed = True
            self.history.append(forming)
            out.append(forming)
            last_close = forming.c
            forming = self.forming = None
        if forming is None and (trades or last_close is not None):
            forming = self.forming = _Candle(_bucket(ts, self.bar), last_close or trades[0][1])
            if not trades:
                out.append(forming)
        if trades:
            assert forming is not None
            for _trade, price_text, price, amount in trades:
                forming.add(price_text, price, amount)
            out.append(forming)
        return out

    def all(self) -> list[_Candle]:
        out = list(self.history)
        if self.forming is not None:
            out.append(self.forming)
        return out


def _aggregate(candles: Iterable[_Candle], bar: str) -> list[_Candle]:
    """Merge 1m candles into ``bar`` candles."""
    out: list[_Candle] = []
    last: _Candle | None = None
    for candle in candles:
        start = _bucket(candle.start, bar)
        if not out or out[-1].start != start:
            merged = _Candle(start, candle.o)
            merged.closed = True
            out.append(merged)
        out[-1].merge(candle)
        last = candle
    if out and last is not None:
        out[-1].closed = last.closed
    return out


class _Stats24h:
    """Rolling 24 h figures of one symbol for ``tickers`` (running sums, monotonic min/max)."""

    __slots__ = ("high", "last", "low", "quote", "seq", "sod0", "sod8", "trades", "vol")

    def __init__(self) -> None:
        self.trades: deque[tuple[int, int, str, Decimal, Decimal]] = deque()
        self.high: deque[tuple[int, Decimal, str]] = deque()
        self.low: deque[tuple[int, Decimal, str]] = deque()
        self.vol = Decimal(0)
        self.quote = Decimal(0)
        self.seq = 0
        self.last: tuple[str, str] | None = None  # (px, sz)
        self.sod0: tuple[int, str] | None = None  # (day, open price)
        self.sod8: tuple[int, str] | None = None

    def add(
        self, ts: int, price_text: str, size_text: str, price: Decimal, amount: Decimal
    ) -> None:
        self.seq += 1
        self.trades.append((self.seq, ts, price_text, price, amount))
        self.vol += amount
        self.quote += price * amount
        while self.high and self.high[-1][1] <= price:
            self.high.pop()
        self.high.append((self.seq, price, price_text))
        while self.low and self.low[-1][1] >= price:
            self.low.pop()
        self.low.append((self.seq, price, price_text))
        self.last = (price_text, size_text)
        day0 = ts // _DAY_MS
        if self.sod0 is None or self.sod0[0] != day0:
            self.sod0 = (day0, price_text)
        day8 = (ts + _UTC8_MS) // _DAY_MS
        if self.sod8 is None or self.sod8[0] != day8:
            self.sod8 = (day8, price_text)

    def expire(self, now: int) -> None:
        cutoff = now - _DAY_MS
        while self.trades and self.trades[0][1] <= cutoff:
            seq, _ts, _text, price, amount = self.trades.popleft()
            self.vol -= amount
            self.quote -= price * amount
            if self.high and self.high[0][0] == seq:
                self.high.popleft()
            if self.low and self.low[0][0] == seq:
                self.low.popleft()


class _Channel:
    """One ``(channel, instId)`` with its activated subscribers."""

    __slots__ = ("arg", "bar", "channel", "inst_id", "kind", "last", "subscribers", "symbol")

    def __init__(self, channel: str, inst_id: str, symbol: str) -> None:
        self.channel = channel
        self.inst_id = inst_id
        self.symbol = symbol
        self.arg = {"channel": channel, "instId": inst_id}
        self.bar = channel[6:] if channel.startswith("candle") else ""
        self.kind = "candle" if self.bar else channel
        self.subscribers: dict[FakeSession, None] = {}
        #: what a snapshot-type channel last sent (so it only sends changes)
        self.last: Any = None


class _Symbol:
    """Per-symbol state: sequence numbering, faults, trades, candles, 24 h figures."""

    __slots__ = (
        "candles", "channels", "corrupt", "id", "info", "offset", "pending_reset",
        "seq", "skip", "stats", "symbol", "trade_log", "ts",
    )  # fmt: skip

    def __init__(self, symbol: str, inst_id: str, seq: int) -> None:
        self.symbol = symbol
        self.id = inst_id
        #: OKX seqId = market update id - offset (changed by a sequence reset)
        self.offset = 0
        #: the seqId of the book now
        self.seq = seq
        self.skip = 0
        self.corrupt = 0
        self.pending_reset = False
        self.ts = VIRTUAL_EPOCH_MS
        self.channels: dict[str, _Channel] = {}
        self.candles: dict[str, _Candles] = {"1m": _Candles("1m", 10_000)}
        self.trade_log: deque[dict[str, str]] = deque(maxlen=1000)
        self.stats = _Stats24h()
        self.info: Any = None


class _SessionInfo:
    __slots__ = ("business", "conn_id", "idle_call", "last", "ops", "topics", "violated")

    def __init__(self, business: bool, conn_id: str, now: float) -> None:
        self.business = business
        self.conn_id = conn_id
        self.topics: dict[str, _Channel] = {}
        self.ops: deque[float] = deque()
        self.violated = False
        self.last = now
        self.idle_call: Any = None


class _WsError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class _RestError(Exception):
    def __init__(self, code: str, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


SnapshotMode = Literal["ws", "rest"]


class FakeOkx:
    """A fake OKX v5 exchange: public + business WebSockets, REST market data, faults.

    ``symbols`` are unified ``BASE/QUOTE`` names (``"BTC/USDT"`` is instId
    ``"BTC-USDT"``); with ``market`` given its symbols are used.  ``seed`` and
    ``levels`` make the default :class:`SimulatedMarket`.  ``checksum``:
    ``True`` puts the documented CRC32 in ``books`` messages, ``False`` sends
    ``0`` as OKX does since 2026-06-23.  ``snapshot_mode="rest"`` is OKX's
    newer mode: a ``books`` subscription gets no snapshot push, the client
    takes ``GET /api/v5/market/books`` (which carries ``seqId``) and the
    buffered updates.  ``idle_timeout`` (s, ``None`` = never) closes a
    connection on which nothing was sent or received for that long.
    ``subscribe_limit`` requests (subscribe, unsubscribe, login) are allowed
    per connection in ``subscribe_window`` seconds; the next one closes it.
    """

    #: seconds of one REST rate-limit window (OKX: "20 requests per 2 seconds")
    rest_window: float = 2.0

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC/USDT", "ETH/USDT"),
        *,
        reactor: Any = None,
        seed: int = 0,
        tls: ServerCertificate | None = None,
        market: SimulatedMarket | None = None,
        levels: int = 50,
        checksum: bool = True,
        snapshot_mode: SnapshotMode = "ws",
        idle_timeout: float | None = 30.0,
        subscribe_limit: int = SUBSCRIBE_LIMIT,
        subscribe_window: float = 3600.0,
        clock: Any = None,
        api_keys: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        if snapshot_mode not in ("ws", "rest"):
            raise ValueError(f"snapshot_mode is 'ws' or 'rest', not {snapshot_mode!r}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        if subscribe_limit < 1 or subscribe_window <= 0:
            raise ValueError("subscribe_limit and subscribe_window must be positive")
        if market is None:
            market = SimulatedMarket(tuple(symbols), seed=seed, levels=levels)
        #: the simulated market behind the fake
        self.market = market
        self.seed = seed
        self.checksum = checksum
        self.snapshot_mode: SnapshotMode = snapshot_mode
        self.idle_timeout = idle_timeout
        self.subscribe_limit = subscribe_limit
        self.subscribe_window = subscribe_window
        self._reactor = reactor
        self._clock = clock
        #: the WebSocket + REST server, for the toolkit's faults
        self.server = FakeExchangeServer(
            reactor=reactor, tls=tls, ws_paths=(PUBLIC_PATH, BUSINESS_PATH, PRIVATE_PATH)
        )
        self.server.on_session = self._on_session
        self.server.on_text = self._on_text
        self.server.on_binary = self._on_binary
        self._trim = _Trim()
        self._symbols: dict[str, _Symbol] = {}
        self._by_id: dict[str, _Symbol] = {}
        for symbol in market.symbols:
            info = market.info(symbol)
            state = _Symbol(symbol, f"{info.base}-{info.quote}", market.last_update_id(symbol))
            state.info = info
            self._symbols[symbol] = state
            self._by_id[state.id] = state
        self._sessions: dict[FakeSession, _SessionInfo] = {}
        self._calls: set[Any] = set()
        self._rest_stamps: dict[str, deque[float]] = {p: deque() for p in _REST_LIMITS}
        #: REST requests answered 429 (code 50011)
        self.rejected_429 = 0
        #: connections closed for going over ``subscribe_limit``
        self.subscribe_rate_violations = 0
        #: connections closed by the idle cut-off
        self.idle_closes = 0
        #: ``books`` updates withheld by :meth:`skip_next`
        self.skipped_updates = 0
        self._loop: Any = None
        self._run_done: Deferred[None] | None = None
        self._run_left: int | None = None
        self._register_routes()
        #: the private side: login, signed endpoints, accounts and orders (see its module);
        #: ``api_keys`` maps API keys to ``(secret, passphrase)``
        self.private = FakeOkxPrivate(self, api_keys)
        #: balances, orders and fills of every API key (``fund``, ``fill``, ``deposit``)
        self.ledger = self.private.ledger

    def __repr__(self) -> str:
        return f"<FakeOkx {len(self._symbols)} symbols {self.server!r}>"

    # -- life cycle ------------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def clock(self) -> Any:
        """What REST rate windows and ``/public/time`` use (the reactor unless ``clock``)."""
        return self._clock if self._clock is not None else self.reactor

    def start(self) -> Deferred[FakeOkx]:
        """Listen on 127.0.0.1 (ephemeral port); fires with this fake."""
        return self.server.start().addCallback(lambda _: self)

    def stop(self) -> Deferred[None]:
        """Stop stepping, cancel every timer, drop every connection, stop listening."""
        self.stop_running()
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        for info in self._sessions.values():
            self._cancel_idle(info)
        return self.server.stop()

    @property
    def urls(self) -> dict[str, str]:
        """``urls=`` for the client: ``public``, ``business`` (full URLs) and ``rest``."""
        return {
            "public": self.server.ws_url(PUBLIC_PATH),
            "business": self.server.ws_url(BUSINESS_PATH),
            "private": self.server.ws_url(PRIVATE_PATH),
            "rest": self.server.rest_url,
        }

    @property
    def rest_log(self) -> list[RecordedRequest]:
        """Every REST request that arrived (faulted and rejected ones included)."""
        return self.server.rest.requests

    def inst_id(self, symbol: str) -> str:
        """OKX's instId of ``symbol`` (``"BTC/USDT"`` -> ``"BTC-USDT"``)."""
        return self._state(symbol).id

    def seq_id(self, symbol: str) -> int:
        """The ``seqId`` of ``symbol``'s book now."""
        return self._state(symbol).seq

    def conn_id(self, session: FakeSession) -> str:
        """The ``connId`` OKX's events carry on ``session``."""
        return self._sessions[session].conn_id

    # -- the market ----------------------------------------------------------------------

    def true_book(
        self, symbol: str, nonce: int | None = None, limit: int | None = None
    ) -> tuple[list[Level], list[Level], int]:
        """``(bids, asks, seqId)`` best first, OKX's strings: now, or as of ``seqId``
        ``nonce`` (in the numbering in use since the last sequence reset)."""
        state = self._state(symbol)
        trim = self._trim
        if nonce is None:
            bids, asks, _uid = self.market.book(symbol, limit)
            nonce = state.seq
        else:
            bids, asks = self.market.book_at(symbol, nonce + state.offset, limit)
        return (
            [(trim(p), trim(a)) for p, a in bids],
            [(trim(p), trim(a)) for p, a in asks],
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
        log.failure("FakeOkx.run: a step failed", failure)
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
            raise KeyError(f"{symbol!r} is not a symbol of this FakeOkx") from None

    # -- faults ----------------------------------------------------------------------------

    def skip_next(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` ``books`` updates of ``symbol`` from everyone, so the
        one after has a ``prevSeqId`` that is not the last ``seqId`` clients saw."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).skip += n

    def corrupt_checksum_next(self, symbol: str, n: int = 1) -> None:
        """Put a wrong ``checksum`` (the right one plus one) in the next ``n`` ``books``
        updates of ``symbol``; levels and sequence numbers stay right."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).corrupt += n

    def reset_sequence(self, symbol: str) -> None:
        """The documented sequence reset: the next ``books`` update of ``symbol`` has
        a ``seqId`` below its ``prevSeqId`` (numbering restarts near 1) and later
        updates chain on from it."""
        self._state(symbol).pending_reset = True

    def send_keepalive(self, symbol: str) -> int:
        """The documented keep-alive of a silent book: ``books`` subscribers get an
        update with empty ``asks``/``bids`` and ``prevSeqId == seqId`` (the current
        seqId); ``books5``/``bbo-tbt`` subscribers get the latest snapshot again.
        Returns how many sessions got a message."""
        state = self._state(symbol)
        sent = 0
        for channel in list(state.channels.values()):
            if not channel.subscribers:
                continue
            if channel.kind == "books":
                data: dict[str, Any] = {
                    "asks": [], "bids": [], "ts": str(state.ts),
                    "checksum": self._checksum_now(state), "prevSeqId": state.seq,
                    "seqId": state.seq,
                }  # fmt: skip
                sent += self._send(
                    channel, {"arg": channel.arg, "action": "update", "data": [data]}
                )
            elif channel.kind in ("books5", "bbo-tbt"):
                sent += self._send(channel, self._top_message(state, channel, force=True))
        return sent

    def maintenance_notice(self, disconnect_after: float | None = None) -> int:
        """Send the 64008 service-upgrade notice to every open session (public and
        business); with ``disconnect_after`` seconds, drop them all then (OKX says
        60 s).  Returns how many sessions got the notice."""
        sent = 0
        for session, info in list(self._sessions.items()):
            if session.is_open:
                session.send(
                    dumps({"event": "notice", "code": "64008", "msg": NOTICE_64008,
                           "connId": info.conn_id})
                )  # fmt: skip
                sent += 1
        if disconnect_after is not None:
            targets = [s for s in self._sessions if s.is_open]

            def drop() -> None:
                self._calls.discard(call)
                for session in targets:
                    if session.is_open:
                        session.drop()

            call = self.reactor.callLater(disconnect_after, drop)
            self._calls.add(call)
        return sent

    # -- publishing --------------------------------------------------------------------------

    def _send(self, channel: _Channel, message: Any) -> int:
        """Encode ``message`` once, send the bytes to ``channel``'s subscribers."""
        if message is None or not channel.subscribers:
            return 0
        raw = dumps(message)
        now = self.reactor.seconds()
        sent = 0
        info = self._sessions
        for session in tuple(channel.subscribers):
            if session._send_encoded(raw, raw, False):
                sent += 1
                info[session].last = now
        return sent

    def _level(self, price: str, size: str) -> list[str]:
        trim = self._trim
        p, s = trim(price), trim(size)
        return [p, s, "0", _orders(p, s)]

    def _checksum_now(self, state: _Symbol) -> int:
        if not self.checksum:
            return 0
        bids, asks, _ = self.market.book(state.symbol, CHECKSUM_DEPTH)
        trim = self._trim
        return okx_checksum(
            [(trim(p), trim(a)) for p, a in bids], [(trim(p), trim(a)) for p, a in asks]
        )

    def _books_snapshot_data(self, state: _Symbol, depth: int) -> dict[str, Any]:
        bids, asks, _uid = self.market.book(state.symbol, depth)
        level = self._level
        return {
            "asks": [level(p, a) for p, a in asks],
            "bids": [level(p, a) for p, a in bids],
            "ts": str(state.ts),
        }

    def _top_message(self, state: _Symbol, channel: _Channel, force: bool = False) -> Any:
        """A ``books5``/``bbo-tbt`` message, or ``None`` when its levels did not change."""
        depth = 5 if channel.kind == "books5" else 1
        bids, asks, _uid = self.market.book(state.symbol, depth)
        key = (tuple(bids), tuple(asks))
        if key == channel.last and not force:
            return None
        channel.last = key
        level = self._level
        data: dict[str, Any] = {
            "asks": [level(p, a) for p, a in asks],
            "bids": [level(p, a) for p, a in bids],
        }
        if depth == 5:
            data["instId"] = state.id
        data["ts"] = str(state.ts)
        data["seqId"] = state.seq
        return {"arg": channel.arg, "data": [data]}

    def _ticker_data(self, state: _Symbol) -> dict[str, Any]:
        stats = state.stats
        stats.expire(state.ts)
        bids, asks, _uid = self.market.book(state.symbol, 1)
        trim = self._trim
        bid = (trim(bids[0][0]), trim(bids[0][1])) if bids else ("", "")
        ask = (trim(asks[0][0]), trim(asks[0][1])) if asks else ("", "")
        # before the first trade, "last" is the best bid (OKX always fills it in)
        last = stats.last or (bid[0], "0")
        if stats.trades:
            open24, high, low = stats.trades[0][2], stats.high[0][2], stats.low[0][2]
        else:
            open24 = high = low = last[0]
        return {
            "instType": "SPOT", "instId": state.id, "last": last[0], "lastSz": last[1],
            "askPx": ask[0], "askSz": ask[1], "bidPx": bid[0], "bidSz": bid[1],
            "open24h": open24, "high24h": high, "low24h": low,
            "volCcy24h": _decimal_text(stats.quote), "vol24h": _decimal_text(stats.vol),
            "sodUtc0": stats.sod0[1] if stats.sod0 else last[0],
            "sodUtc8": stats.sod8[1] if stats.sod8 else last[0],
            "ts": str(state.ts),
        }  # fmt: skip

    def _publish(self, update: MarketUpdate) -> None:
        state = self._symbols[update.symbol]
        ts = update.timestamp
        state.ts = ts
        trim = self._trim
        prev_seq = update.first_id - 1 - state.offset
        if state.pending_reset:
            state.pending_reset = False
            # the numbering restarts: this update gets seqId (its id count), below prevSeqId
            prev_seq = state.seq
            state.offset = update.first_id - 1
        state.seq = update.last_id - state.offset
        trades = [(t, trim(t.price), Decimal(t.price), Decimal(t.amount)) for t in update.trades]
        rows: list[dict[str, str]] = []
        for trade, price_text, price, amount in trades:
            size_text = trim(trade.amount)
            state.stats.add(ts, price_text, size_text, price, amount)
            row = {
                "instId": state.id, "tradeId": str(trade.id), "px": price_text,
                "sz": size_text, "side": trade.side, "ts": str(trade.timestamp),
            }  # fmt: skip
            state.trade_log.append(row)
            rows.append(row)
        candles_out = {bar: c.update(ts, trades) for bar, c in state.candles.items()}
        skip = False
        if state.skip:
            state.skip -= 1
            self.skipped_updates += 1
            skip = True
        for channel in tuple(state.channels.values()):
            if not channel.subscribers:
                continue
            kind = channel.kind
            if kind == "books":
                if skip:
                    continue
                level = self._level
                checksum = self._checksum_now(state)
                if state.corrupt:
                    state.corrupt -= 1
                    checksum = checksum + 1 if checksum < (1 << 31) - 1 else -(1 << 31)
                data = {
                    "asks": [level(p, a) for p, a in update.asks],
                    "bids": [level(p, a) for p, a in update.bids],
                    "ts": str(ts), "checksum": checksum, "prevSeqId": prev_seq,
                    "seqId": state.seq,
                }  # fmt: skip
                self._send(channel, {"arg": channel.arg, "action": "update", "data": [data]})
            elif kind in ("books5", "bbo-tbt"):
                self._send(channel, self._top_message(state, channel))
            elif kind == "trades":
                # one message per taker order x price: each simulated fill is one
                for row in rows:
                    data = {**row, "count": "1", "source": "0", "seqId": state.seq}
                    self._send(channel, {"arg": channel.arg, "data": [data]})
            elif kind == "trades-all":
                for row in rows:
                    self._send(channel, {"arg": channel.arg, "data": [{**row, "source": "0"}]})
            elif kind == "tickers":
                bids, asks, _uid = self.market.book(state.symbol, 1)
                top = (bids[:1], asks[:1])
                if trades or top != channel.last:
                    channel.last = top
                    self._send(channel, {"arg": channel.arg, "data": [self._ticker_data(state)]})
            elif kind == "candle":
                for candle in candles_out.get(channel.bar, ()):
                    self._send(channel, {"arg": channel.arg, "data": [candle.row()]})

    # -- WebSocket sessions ------------------------------------------------------------------------

    def _on_session(self, session: FakeSession) -> None:
        business = session.path.rstrip("/") == BUSINESS_PATH
        conn_id = format(zlib.crc32(f"okx:{self.seed}:{session.number}".encode()), "08x")
        info = _SessionInfo(business, conn_id, self.reactor.seconds())
        self._sessions[session] = info
        self._arm_idle(session, info, self.idle_timeout)
        if session.path.rstrip("/") == PRIVATE_PATH:
            self.private.opened(session)

        def gone(result: Any) -> Any:
            self._cancel_idle(info)
            for channel in info.topics.values():
                channel.subscribers.pop(session, None)
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
            log.info("FakeOkx: {session} idle for {s}s; closing", session=session,
                     s=self.idle_timeout)  # fmt: skip
            session.close(4004, "No data received in 30s.")

        info.idle_call = self.reactor.callLater(delay, check)
        self._calls.add(info.idle_call)

    def _cancel_idle(self, info: _SessionInfo) -> None:
        call, info.idle_call = info.idle_call, None
        if call is not None:
            self._calls.discard(call)
            if call.active():
                call.cancel()

    def _reply(self, session: FakeSession, message: dict[str, Any]) -> None:
        info = self._sessions.get(session)
        if info is not None:
            info.last = self.reactor.seconds()
        self.server.reply(session, message)

    def _on_binary(self, session: FakeSession, payload: bytes) -> None:
        info = self._sessions.get(session)
        if info is None:
            return
        info.last = self.reactor.seconds()
        self._error(session, info, None, "60012", "Invalid request: binary frame")

    def _error(
        self, session: FakeSession, info: _SessionInfo, request_id: Any, code: str, msg: str
    ) -> None:
        message: dict[str, Any] = {}
        if request_id is not None:
            message["id"] = request_id
        message.update(event="error", code=code, msg=msg, connId=info.conn_id)
        self._reply(session, message)

    def _on_text(self, session: FakeSession, message: Any) -> None:
        info = self._sessions.get(session)
        if info is None or info.violated:
            return
        info.last = self.reactor.seconds()
        if message == "ping":
            session.send("pong")
            return
        raw = message if isinstance(message, str) else dumps(message).decode("utf-8")
        if not isinstance(message, dict):
            self._error(session, info, None, "60012", f"Invalid request: {raw}")
            return
        op = message.get("op")
        request_id = message.get("id")
        if request_id is not None and not (
            isinstance(request_id, str) and _ID_RE.match(request_id)
        ):
            self._error(session, info, None, "60012", f"Invalid request: {raw}")
            return
        if session in self.private.sessions:
            self.private.on_text(session, info, message)
            return
        if op in ("subscribe", "unsubscribe", "login") and not self._count_op(session, info):
            return
        try:
            if op not in ("subscribe", "unsubscribe"):
                raise _WsError("60012", f"Invalid request: {raw}")
            args = message.get("args")
            if not isinstance(args, list) or not args:
                raise _WsError("60012", f"Invalid request: {raw}")
            channels = [self._parse_arg(info, arg, raw, op) for arg in args]
        except _WsError as e:
            self._error(session, info, request_id, e.code, e.msg)
            return
        for arg, channel in zip(args, channels, strict=True):
            ack: dict[str, Any] = {}
            if request_id is not None:
                ack["id"] = request_id
            ack.update(event=op, arg=arg, connId=info.conn_id)
            if op == "subscribe":
                assert channel is not None
                self._subscribe(session, info, channel, ack)
            else:
                if channel is not None:
                    self._unsubscribe(session, info, channel)
                self._reply(session, ack)

    def _count_op(self, session: FakeSession, info: _SessionInfo) -> bool:
        now = self.reactor.seconds()
        ops = info.ops
        while ops and ops[0] <= now - self.subscribe_window:
            ops.popleft()
        ops.append(now)
        if len(ops) <= self.subscribe_limit:
            return True
        info.violated = True
        self.subscribe_rate_violations += 1
        log.info("FakeOkx: {session} went over {n} subscribe requests; closing",
                 session=session, n=self.subscribe_limit)  # fmt: skip
        session.close(1008, "Requests too frequent.")
        return False

    def _parse_arg(self, info: _SessionInfo, arg: Any, raw: str, op: str) -> _Channel | None:
        if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
            raise _WsError("60012", f"Invalid request: {raw}")
        name = arg["channel"]
        inst_id = arg.get("instId")
        if not isinstance(inst_id, str):
            raise _WsError("60012", f"Invalid request: {raw}")
        allowed = _BUSINESS_CHANNELS if info.business else _PUBLIC_CHANNELS
        state = self._by_id.get(inst_id)
        if name not in allowed or state is None:
            raise _WsError(
                "60018",
                f"Wrong URL or channel:{name},instId:{inst_id} doesn't exist. Please use the "
                "correct URL, channel and parameters referring to API document.",
            )
        key = f"{name}:{inst_id}"
        channel = state.channels.get(key)
        if channel is None:
            if op == "unsubscribe":
                return None
            channel = state.channels[key] = _Channel(name, inst_id, state.symbol)
        return channel

    def _subscribe(
        self, session: FakeSession, info: _SessionInfo, channel: _Channel, ack: dict[str, Any]
    ) -> None:
        """Acknowledge, then (as one step, after :attr:`server.reply_delay` if set)
        make the subscription live and push its initial data."""

        def activate() -> None:
            if not session.is_open:
                return
            info.last = self.reactor.seconds()
            session.send(dumps(ack))
            key = f"{channel.channel}:{channel.inst_id}"
            if key in info.topics:
                return
            info.topics[key] = channel
            session.subscriptions.add(key)
            channel.subscribers[session] = None
            self._initial_push(session, channel)

        delay = self.server.reply_delay
        if delay > 0:

            def fire() -> None:
                self._calls.discard(call)
                activate()

            call = self.reactor.callLater(delay, fire)
            self._calls.add(call)
        else:
            activate()

    def _initial_push(self, session: FakeSession, channel: _Channel) -> None:
        state = self._symbols[channel.symbol]
        kind = channel.kind
        message: Any = None
        if kind == "books":
            if self.snapshot_mode == "rest":
                return
            data = self._books_snapshot_data(state, BOOKS_DEPTH)
            data.update(checksum=self._checksum_now(state), prevSeqId=-1, seqId=state.seq)
            message = {"arg": channel.arg, "action": "snapshot", "data": [data]}
        elif kind in ("books5", "bbo-tbt"):
            message = self._top_message(state, channel, force=True)
        elif kind == "tickers":
            message = {"arg": channel.arg, "data": [self._ticker_data(state)]}
        elif kind == "candle":
            candles = state.candles.get(channel.bar)
            if candles is None:
                candles = state.candles[channel.bar] = self._new_candles(state, channel.bar)
            if candles.forming is not None:
                message = {"arg": channel.arg, "data": [candles.forming.row()]}
        if message is not None:
            session.send(dumps(message))

    @staticmethod
    def _new_candles(state: _Symbol, bar: str) -> _Candles:
        candles = _Candles(bar)
        if bar != "1s":
            merged = _aggregate(state.candles["1m"].all(), bar)
            if merged:
                candles.history.extend(merged[:-1])
                candles.forming = merged[-1]
                candles.forming.closed = False
        return candles

    def _unsubscribe(self, session: FakeSession, info: _SessionInfo, channel: _Channel) -> None:
        key = f"{channel.channel}:{channel.inst_id}"
        info.topics.pop(key, None)
        session.subscriptions.discard(key)
        channel.subscribers.pop(session, None)

    # -- REST ------------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        handlers: dict[str, Callable[[dict[str, str]], Any]] = {
            "/api/v5/public/instruments": self._rest_instruments,
            "/api/v5/public/time": self._rest_time,
            "/api/v5/market/books": self._rest_books,
            "/api/v5/market/candles": self._rest_candles,
            "/api/v5/market/trades": self._rest_trades,
            "/api/v5/market/ticker": self._rest_ticker,
        }
        for path, handler in handlers.items():
            self.server.rest.route("GET", path, self._endpoint(path, handler))

    def _endpoint(
        self, path: str, handler: Callable[[dict[str, str]], Any]
    ) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if not self._allow(path):
                self.rejected_429 += 1
                return Response(429, {"code": "50011", "msg": _MSG_50011, "data": []})
            args = {
                k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                for k, v in (request.args or {}).items()
                if v
            }
            try:
                data = handler(args)
            except _RestError as e:
                return Response(e.status, {"code": e.code, "msg": e.msg, "data": []})
            return Response(200, {"code": "0", "msg": "", "data": data})

        return serve

    def _allow(self, path: str) -> bool:
        now = self.clock.seconds()
        stamps = self._rest_stamps[path]
        while stamps and stamps[0] <= now - self.rest_window:
            stamps.popleft()
        if len(stamps) >= _REST_LIMITS[path]:
            return False
        stamps.append(now)
        return True

    def _inst(self, args: dict[str, str]) -> _Symbol:
        inst_id = args.get("instId")
        if not inst_id:
            raise _RestError("50014", "Parameter instId can not be empty.")
        state = self._by_id.get(inst_id)
        if state is None:
            raise _RestError("51001", "Instrument ID does not exist.", 200)
        return state

    @staticmethod
    def _int(args: dict[str, str], name: str, default: int, most: int) -> int:
        value = args.get(name)
        if value is None or value == "":
            return default
        if not value.isdigit() or int(value) < 1:
            raise _RestError("51000", f"Parameter {name} error")
        return min(int(value), most)

    def _rest_instruments(self, args: dict[str, str]) -> Any:
        inst_type = args.get("instType")
        if not inst_type:
            raise _RestError("50014", "Parameter instType can not be empty.")
        if inst_type != "SPOT":
            return []
        wanted = args.get("instId")
        rows = []
        for state in self._symbols.values():
            if wanted and state.id != wanted:
                continue
            info = state.info
            tick, lot = self._trim(info.tick_size), self._trim(info.amount_step)
            rows.append({
                "instType": "SPOT", "instId": state.id, "uly": "", "instFamily": "",
                "baseCcy": info.base, "quoteCcy": info.quote, "settleCcy": "", "ctVal": "",
                "ctMult": "", "ctValCcy": "", "optType": "", "stk": "",
                "listTime": str(VIRTUAL_EPOCH_MS), "expTime": "", "lever": "", "tickSz": tick,
                "lotSz": lot, "minSz": lot, "ctType": "", "alias": "", "state": "live",
                "ruleType": "normal", "maxLmtSz": "9999999999", "maxMktSz": "1000000",
            })  # fmt: skip
        return rows

    def _rest_time(self, args: dict[str, str]) -> Any:
        return [{"ts": str(int(self.clock.seconds() * 1000))}]

    def _rest_books(self, args: dict[str, str]) -> Any:
        state = self._inst(args)
        depth = self._int(args, "sz", 1, BOOKS_DEPTH)
        data = self._books_snapshot_data(state, depth)
        data["seqId"] = state.seq
        return [data]

    def _rest_trades(self, args: dict[str, str]) -> Any:
        state = self._inst(args)
        limit = self._int(args, "limit", 100, 500)
        rows = list(state.trade_log)[-limit:]
        rows.reverse()
        return [{**row, "source": "0"} for row in rows]

    def _rest_ticker(self, args: dict[str, str]) -> Any:
        return [self._ticker_data(self._inst(args))]

    def _rest_candles(self, args: dict[str, str]) -> Any:
        state = self._inst(args)
        bar = args.get("bar") or "1m"
        if bar not in _BARS:
            raise _RestError("51000", "Parameter bar error")
        limit = self._int(args, "limit", 100, 300)
        after = args.get("after")
        before = args.get("before")
        if bar in state.candles:
            candles = state.candles[bar].all()
        elif bar == "1s":
            candles = []
        else:
            candles = _aggregate(state.candles["1m"].all(), bar)
        rows = [c.row() for c in reversed(candles)]  # newest first
        if after and after.isdigit():
            rows = [r for r in rows if int(r[0]) < int(after)]
        if before and before.isdigit():
            rows = [r for r in rows if int(r[0]) > int(before)]
        return rows[:limit]
