"""A fake Kraken Spot exchange on 127.0.0.1: WebSocket v2 market data and public REST.

Part of the test toolkit (:mod:`txexchange.testing`), in the exchange's place
in the flow: a :class:`FakeKraken` drives a
:class:`~txexchange.testing.market.SimulatedMarket` and turns every
:class:`~txexchange.testing.market.MarketUpdate` into the messages Kraken
documents for its Spot WebSocket v2 API (``book`` snapshots and updates with
the CRC32 ``checksum`` over the top 10 levels, truncated to the subscribed
depth; ``ticker``, ``trade``, ``ohlc``, ``instrument``, ``status``,
``heartbeat``; the ``ping`` method), answers ``{"method": "subscribe" |
"unsubscribe", "params": {...}, "req_id"}`` with one acknowledgement per
symbol, and serves the public REST endpoints (``AssetPairs``, ``Depth``,
``Trades``, ``OHLC``, ``Ticker``, ``Time``, ``SystemStatus``) with a rate
limit (HTTP 429).  Prices and quantities go out as JSON *numbers* with the
exact decimal digits of the simulated market, as Kraken sends them.  It is
written from Kraken's documentation (``PROTOCOLS.md`` section 5), not from the
client adapter, so the two check each other.

Every event is encoded once and the same bytes go to every subscribed
session.  Nothing here imports a reactor at import time.
"""

from __future__ import annotations

import datetime
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from email.utils import formatdate
from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from txexchange.codec import dumps
from txexchange.testing.market import VIRTUAL_EPOCH_MS, MarketUpdate, SimTrade, SimulatedMarket
from txexchange.testing.rest import RecordedRequest, Response
from txexchange.testing.server import FakeExchangeServer, FakeSession
from txexchange.testing.tls import ServerCertificate

__all__ = [
    "FakeKraken",
    "kraken_checksum",
    "kraken_checksum_string",
    "wire_number",
]

log = Logger()

#: WebSocket paths (Kraken: ``wss://ws.kraken.com/v2`` and ``wss://ws-auth.kraken.com/v2``)
PUBLIC_PATH = "/v2"
PRIVATE_PATH = "/auth/v2"
#: levels per side the checksum covers, whatever the subscribed depth
CHECKSUM_DEPTH = 10
#: documented ``book`` depths; 10 is the default
BOOK_DEPTHS = (10, 25, 100, 500, 1000)
#: documented ``ohlc`` intervals (minutes)
OHLC_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
#: trades in a ``trade`` snapshot
TRADE_SNAPSHOT = 50
#: candles kept per interval (and most ``GET /0/public/OHLC`` returns)
OHLC_KEPT = 720
#: channels that take ``symbol``; the others do not
_SYMBOL_CHANNELS = frozenset({"book", "ticker", "trade", "ohlc"})
_OTHER_CHANNELS = frozenset({"instrument", "heartbeat", "status"})
#: documented values of the ``status`` channel's ``system`` field
SYSTEM_STATES = ("online", "maintenance", "cancel_only", "limit_only", "post_only")
#: the deprecation warning of the ``ohlc`` ack (the candle ``timestamp`` field)
OHLC_WARNING = "timestamp is deprecated, use interval_begin"

_DAY_MS = 86_400_000
_HEARTBEAT = dumps({"channel": "heartbeat"})

#: Kraken's legacy asset codes (REST keys) and alternative names (XBT, XDG)
_LEGACY_ASSETS: dict[str, tuple[str, str]] = {
    "BTC": ("XXBT", "XBT"), "ETH": ("XETH", "ETH"), "LTC": ("XLTC", "LTC"),
    "XRP": ("XXRP", "XRP"), "XLM": ("XXLM", "XLM"), "DOGE": ("XXDG", "XDG"),
    "ETC": ("XETC", "ETC"), "XMR": ("XXMR", "XMR"), "ZEC": ("XZEC", "ZEC"),
    "USD": ("ZUSD", "USD"), "EUR": ("ZEUR", "EUR"), "GBP": ("ZGBP", "GBP"),
    "JPY": ("ZJPY", "JPY"), "CAD": ("ZCAD", "CAD"), "AUD": ("ZAUD", "AUD"),
}  # fmt: skip

Level = tuple[str, str]
Number = str | Decimal | float | int


# -- numbers and the checksum ----------------------------------------------------------------


def wire_number(text: str) -> str:
    """A fixed-decimal string as Kraken prints the JSON number: trailing zeros
    dropped, at least one decimal kept (``"27000.10000000"`` -> ``"27000.1"``,
    ``"40.00000000"`` -> ``"40.0"``)."""
    if "." not in text:
        return text + ".0"
    out = text.rstrip("0")
    return out + "0" if out.endswith(".") else out


def _decimal(value: Number) -> Decimal:
    if isinstance(value, Decimal):
        return value
    # str(float) is the shortest repr, the number as it was on the wire
    return Decimal(str(value))


def _render(value: Number, precision: int) -> str:
    """``value`` with exactly ``precision`` decimals, ``.`` removed, leading zeros stripped."""
    text = f"{_decimal(value).quantize(Decimal(1).scaleb(-precision)):f}"
    return text.replace(".", "").lstrip("0")


def kraken_checksum_string(
    bids: Sequence[Sequence[Number]],
    asks: Sequence[Sequence[Number]],
    price_precision: int,
    qty_precision: int,
) -> str:
    """The documented check string: the 10 best asks (ascending), then the 10 best
    bids (descending), each price then qty rendered with the pair's precision,
    ``.`` removed and leading zeros stripped, all concatenated.

    Levels are ``(price, qty)`` as strings, :class:`~decimal.Decimal` or floats
    (as decoded from the JSON numbers); sides must be sorted best first.
    """
    parts: list[str] = []
    for side in (asks, bids):
        for price, qty, *_ in side[:CHECKSUM_DEPTH]:
            parts.append(_render(price, price_precision))
            parts.append(_render(qty, qty_precision))
    return "".join(parts)


def kraken_checksum(
    bids: Sequence[Sequence[Number]],
    asks: Sequence[Sequence[Number]],
    price_precision: int,
    qty_precision: int,
) -> int:
    """CRC32 (zlib/IEEE) of :func:`kraken_checksum_string`, as an unsigned int."""
    check = kraken_checksum_string(bids, asks, price_precision, qty_precision)
    return zlib.crc32(check.encode("ascii"))


class _Numbers:
    """Market fixed-decimal strings -> JSON number fragments (cached)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, orjson.Fragment] = {}

    def __call__(self, text: str) -> orjson.Fragment:
        out = self._cache.get(text)
        if out is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            out = self._cache[text] = orjson.Fragment(wire_number(text).encode("ascii"))
        return out


def _number(value: Decimal) -> orjson.Fragment:
    text = f"{value:f}"
    return orjson.Fragment(wire_number(text).encode("ascii"))


def _decimals(step: str) -> int:
    exponent = Decimal(step).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def rfc3339(ms: float, digits: int = 6) -> str:
    """``ms`` since the epoch as Kraken's RFC 3339 UTC string (microseconds, or
    nanoseconds with ``digits=9``)."""
    whole_ms = int(ms)
    seconds, rest_ms = divmod(whole_ms, 1000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    fraction = min(rest_ms * 1000 + round((ms - whole_ms) * 1000), 999_999)
    if digits == 9:
        return f"{stamp:%Y-%m-%dT%H:%M:%S}.{fraction * 1000:09d}Z"
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{fraction:06d}Z"


def _parse_time(text: str | int) -> int:
    """An RFC 3339 string (as in a message) or ms -> ms since the epoch."""
    if isinstance(text, int):
        return text
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    ms = int(stamp.timestamp()) * 1000
    return ms + int((frac + "000")[:3]) if frac else ms


# -- per-symbol market state -------------------------------------------------------------------


class _Candle:
    __slots__ = ("begin", "close", "cost", "high", "low", "open", "trades", "volume")

    def __init__(self, begin: int, price: Decimal) -> None:
        self.begin = begin
        self.open = self.high = self.low = self.close = price
        self.volume = Decimal(0)
        self.cost = Decimal(0)
        self.trades = 0

    def add(self, price: Decimal, qty: Decimal) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume += qty
        self.cost += price * qty
        self.trades += 1


class _Stats24h:
    """Rolling 24 h figures for ``ticker`` (running sums, monotonic min/max)."""

    __slots__ = ("cost", "high", "last", "low", "seq", "trades", "volume")

    def __init__(self) -> None:
        self.trades: deque[tuple[int, int, Decimal, Decimal]] = deque()
        self.high: deque[tuple[int, Decimal]] = deque()
        self.low: deque[tuple[int, Decimal]] = deque()
        self.volume = Decimal(0)
        self.cost = Decimal(0)
        self.seq = 0
        self.last: Decimal | None = None

    def add(self, ts: int, price: Decimal, qty: Decimal) -> None:
        self.seq += 1
        self.trades.append((self.seq, ts, price, qty))
        self.volume += qty
        self.cost += price * qty
        while self.high and self.high[-1][1] <= price:
            self.high.pop()
        self.high.append((self.seq, price))
        while self.low and self.low[-1][1] >= price:
            self.low.pop()
        self.low.append((self.seq, price))
        self.last = price

    def expire(self, now: int) -> None:
        while self.trades and self.trades[0][1] <= now - _DAY_MS:
            seq, _ts, price, qty = self.trades.popleft()
            self.volume -= qty
            self.cost -= price * qty
            if self.high and self.high[0][0] == seq:
                self.high.popleft()
            if self.low and self.low[0][0] == seq:
                self.low.popleft()


class _Stream:
    """One encode-once stream: a channel of one symbol with one set of parameters."""

    __slots__ = (
        "bbo",
        "channel",
        "key",
        "param",
        "prev_asks",
        "prev_bids",
        "subscribers",
        "symbol",
    )

    def __init__(self, channel: str, symbol: str, param: Any) -> None:
        self.channel = channel
        self.symbol = symbol
        #: depth (book), event_trigger (ticker), interval (ohlc), None (trade)
        self.param = param
        self.key = (channel, symbol, param)
        self.subscribers: dict[FakeSession, None] = {}
        #: book: the top ``depth`` levels as last published (price text -> qty text)
        self.prev_bids: dict[str, str] = {}
        self.prev_asks: dict[str, str] = {}
        #: ticker with ``event_trigger="bbo"``: the best bid and ask last published
        self.bbo: Any = None


class _Symbol:
    __slots__ = (
        "alt", "base", "candles", "checksum", "corrupt", "history", "info", "key",
        "price_precision", "qty_precision", "quote", "skip", "skip_trades", "stale",
        "stats", "streams", "symbol", "trade_log", "ts", "wsname",
    )  # fmt: skip

    def __init__(self, symbol: str, info: Any, qty_precision: int) -> None:
        self.symbol = symbol
        self.info = info
        self.base, self.quote = info.base, info.quote
        self.price_precision = _decimals(info.tick_size)
        self.qty_precision = qty_precision
        base_code, base_alt = _LEGACY_ASSETS.get(info.base, (info.base, info.base))
        quote_code, quote_alt = _LEGACY_ASSETS.get(info.quote, (info.quote, info.quote))
        #: REST names: altname ``XBTUSD``, wsname ``XBT/USD``, result key ``XXBTZUSD``
        self.alt = base_alt + quote_alt
        self.wsname = f"{base_alt}/{quote_alt}"
        legacy = info.base in _LEGACY_ASSETS and info.quote in _LEGACY_ASSETS
        self.key = base_code + quote_code if legacy else self.alt
        self.ts = VIRTUAL_EPOCH_MS
        self.streams: dict[tuple[str, str, Any], _Stream] = {}
        self.trade_log: deque[SimTrade] = deque(maxlen=1000)
        self.stats = _Stats24h()
        self.candles: dict[int, deque[_Candle]] = {
            i: deque(maxlen=OHLC_KEPT) for i in OHLC_INTERVALS
        }
        #: (update id, timestamp ms) of recent updates, for stale snapshots and lookups
        self.history: deque[tuple[int, int]] = deque(maxlen=10_000)
        self.skip = 0
        self.skip_trades = 0
        self.corrupt = 0
        self.stale = 0
        self.checksum: int | None = None


class _SessionInfo:
    __slots__ = ("connection_id", "last_sent", "live", "private", "subs")

    def __init__(self, private: bool, connection_id: int, now: float) -> None:
        self.private = private
        self.connection_id = connection_id
        #: (channel, symbol) -> stream; channels without symbols map to None
        self.subs: dict[tuple[str, str], _Stream | None] = {}
        self.last_sent = now
        #: heartbeats flow once the session subscribed to anything
        self.live = False


class _Refused(Exception):
    def __init__(self, error: str, symbol: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.symbol = symbol


class _RestError(Exception):
    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


class FakeKraken:
    """A fake Kraken Spot exchange: WebSocket v2 (``ws`` + ``ws_auth`` paths), public REST.

    ``symbols`` are Kraken v2 / unified ``BASE/QUOTE`` names (``"BTC/USD"``);
    with ``market`` given its symbols are used.  ``seed`` and ``levels`` make
    the default :class:`SimulatedMarket` (tick ``0.1``, so ``price_precision``
    1, and amounts on a ``0.00001`` grid); ``qty_precision`` is the pair's
    quantity precision (8, as on Kraken) used by the checksum and REST.
    ``heartbeat_interval`` (s, ``None`` = never) is how long a subscribed
    session may go without traffic before it gets ``{"channel": "heartbeat"}``.
    ``rest_limit`` public REST requests are allowed per ``rest_window`` seconds
    (all endpoints, one budget as for one IP); the next get HTTP 429.
    """

    def __init__(
        self,
        symbols: Sequence[str] = ("BTC/USD", "ETH/USD"),
        *,
        reactor: Any = None,
        seed: int = 0,
        tls: ServerCertificate | None = None,
        market: SimulatedMarket | None = None,
        levels: int = 50,
        qty_precision: int = 8,
        heartbeat_interval: float | None = 1.0,
        rest_limit: int = 20,
        rest_window: float = 1.0,
        clock: Any = None,
    ) -> None:
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive (or None)")
        if rest_limit < 1 or rest_window <= 0:
            raise ValueError("rest_limit and rest_window must be positive")
        if market is None:
            market = SimulatedMarket(tuple(symbols), seed=seed, levels=levels, tick_size="0.1")
        #: the simulated market behind the fake
        self.market = market
        self.seed = seed
        self.heartbeat_interval = heartbeat_interval
        self.rest_limit = rest_limit
        self.rest_window = rest_window
        self._reactor = reactor
        self._clock = clock
        #: the WebSocket + REST server, for the toolkit's faults
        self.server = FakeExchangeServer(
            reactor=reactor, tls=tls, ws_paths=(PUBLIC_PATH, PRIVATE_PATH)
        )
        self.server.on_session = self._on_session
        self.server.on_text = self._on_text
        self.server.on_binary = self._on_binary
        self._num = _Numbers()
        self._symbols: dict[str, _Symbol] = {}
        self._rest_names: dict[str, _Symbol] = {}
        for symbol in market.symbols:
            info = market.info(symbol)
            state = _Symbol(symbol, info, max(qty_precision, _decimals(info.amount_step)))
            self._symbols[symbol] = state
            for name in (symbol, state.alt, state.wsname, state.key):
                self._rest_names[name] = state
        self._sessions: dict[FakeSession, _SessionInfo] = {}
        self._calls: set[Any] = set()
        self._rest_stamps: deque[float] = deque()
        self._heartbeat_loop: Any = None
        self._loop: Any = None
        self._run_done: Deferred[None] | None = None
        self._run_left: int | None = None
        #: REST requests answered 429
        self.rejected_429 = 0
        #: ``book`` updates withheld by :meth:`skip_next`
        self.skipped_updates = 0
        #: trades withheld by :meth:`skip_trades_next`
        self.skipped_trades = 0
        #: heartbeats sent
        self.heartbeats_sent = 0
        self._register_routes()

    def __repr__(self) -> str:
        return f"<FakeKraken {len(self._symbols)} symbols {self.server!r}>"

    # -- life cycle ------------------------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def clock(self) -> Any:
        """What REST rate windows, ``time_in``/``time_out`` and ``/Time`` use."""
        return self._clock if self._clock is not None else self.reactor

    def start(self) -> Deferred[FakeKraken]:
        """Listen on 127.0.0.1 (ephemeral port); fires with this fake."""
        d = self.server.start()
        if self.heartbeat_interval is not None:
            from twisted.internet.task import LoopingCall

            loop = LoopingCall(self._heartbeats)
            loop.clock = self.reactor
            self._heartbeat_loop = loop
            loop.start(self.heartbeat_interval / 4, now=False).addErrback(
                lambda f: log.failure("FakeKraken heartbeats failed", f)
            )
        return d.addCallback(lambda _: self)

    def stop(self) -> Deferred[None]:
        """Stop stepping and heartbeats, cancel every timer, drop every connection."""
        self.stop_running()
        loop, self._heartbeat_loop = self._heartbeat_loop, None
        if loop is not None and loop.running:
            loop.stop()
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        return self.server.stop()

    @property
    def urls(self) -> dict[str, str]:
        """``urls=`` for the client: ``ws`` (Kraken's ``wss://ws.kraken.com/v2``),
        ``ws_auth`` (``wss://ws-auth.kraken.com/v2``) and ``rest``
        (``https://api.kraken.com``, no trailing slash, no ``/0``)."""
        return {
            "ws": self.server.ws_url(PUBLIC_PATH),
            "ws_auth": self.server.ws_url(PRIVATE_PATH),
            "rest": self.server.rest_url,
        }

    @property
    def rest_log(self) -> list[RecordedRequest]:
        """Every REST request that arrived (faulted and rejected ones included)."""
        return self.server.rest.requests

    def precision(self, symbol: str) -> tuple[int, int]:
        """``(price_precision, qty_precision)`` of ``symbol``, as ``instrument`` says."""
        state = self._state(symbol)
        return state.price_precision, state.qty_precision

    def rest_pair(self, symbol: str) -> tuple[str, str, str]:
        """Kraken's REST names of ``symbol``: ``(result key, altname, wsname)``,
        e.g. ``("XXBTZUSD", "XBTUSD", "XBT/USD")``."""
        state = self._state(symbol)
        return state.key, state.alt, state.wsname

    def connection_id(self, session: FakeSession) -> int:
        """The ``connection_id`` the ``status`` message gave ``session``."""
        return self._sessions[session].connection_id

    # -- the market ----------------------------------------------------------------------------

    def update_id(self, symbol: str, timestamp: str | int | None = None) -> int:
        """The market update id of ``symbol``'s book now, or of the last update at
        ``timestamp`` (a message's RFC 3339 ``timestamp`` or ms).  Kraken's book has
        no sequence number; with the default virtual clock every update has its
        own millisecond, so a ``book`` message's timestamp names its update."""
        state = self._state(symbol)
        if timestamp is None or not state.history:
            return self.market.last_update_id(symbol)
        ms = _parse_time(timestamp)
        found: int | None = None
        for uid, ts in reversed(state.history):
            if ts == ms:
                found = uid
                break
            if ts < ms:
                break
        if found is None:
            if state.history and ms > state.history[-1][1]:
                return state.history[-1][0]
            raise LookupError(f"{symbol}: no update at {timestamp!r}")
        return found

    def true_book(
        self,
        symbol: str,
        nonce: int | None = None,
        limit: int | None = None,
        *,
        fixed: bool = False,
    ) -> tuple[list[Level], list[Level], int]:
        """``(bids, asks, update id)`` best first: now, or as of market update id
        ``nonce`` (see :meth:`update_id`).  Levels are the JSON number texts the
        wire carries (``"45283.5"``, ``"0.1"``, ``"40.0"``); ``fixed=True`` renders
        them with the pair's precision instead (``"0.10000000"``)."""
        state = self._state(symbol)
        if nonce is None:
            bids, asks, nonce = self.market.book(symbol, limit)
        else:
            bids, asks = self.market.book_at(symbol, nonce, limit)
        if fixed:
            pp, qp = state.price_precision, state.qty_precision
            q_p, q_q = Decimal(1).scaleb(-pp), Decimal(1).scaleb(-qp)

            def conv(levels: list[Level]) -> list[Level]:
                return [
                    (f"{Decimal(p).quantize(q_p):f}", f"{Decimal(a).quantize(q_q):f}")
                    for p, a in levels
                ]
        else:

            def conv(levels: list[Level]) -> list[Level]:
                return [(wire_number(p), wire_number(a)) for p, a in levels]

        return conv(bids), conv(asks), nonce

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
        log.failure("FakeKraken.run: a step failed", failure)
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
            raise KeyError(f"{symbol!r} is not a symbol of this FakeKraken") from None

    # -- faults ----------------------------------------------------------------------------------

    def skip_next(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` ``book`` updates of ``symbol`` from everyone (a gap:
        Kraken's book has no sequence number, so clients see it through the
        checksum of a later update)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).skip += n

    def skip_trades_next(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` trades of ``symbol`` from ``trade`` subscribers, so
        the sequential ``trade_id`` jumps."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).skip_trades += n

    def corrupt_checksum_next(self, symbol: str, n: int = 1) -> None:
        """Put a wrong ``checksum`` (the right one plus one, mod 2**32) in the next
        ``n`` ``book`` updates of ``symbol``; the levels stay right."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).corrupt += n

    def stale_snapshot_next(self, symbol: str, updates_behind: int = 5) -> None:
        """The next ``book`` snapshot of ``symbol`` shows the book as it was
        ``updates_behind`` market updates ago (with that old book's own checksum),
        while the updates that follow are relative to the book now."""
        if updates_behind < 1:
            raise ValueError("updates_behind must be at least 1")
        self._state(symbol).stale = updates_behind

    def send_status(
        self, system: str = "maintenance", disconnect_after: float | None = None
    ) -> int:
        """Send a ``status`` update with ``system`` (``online``, ``maintenance``,
        ``cancel_only``, ``limit_only``, ``post_only``) to every open session; with
        ``disconnect_after`` seconds, drop them all then.  Returns how many got it."""
        if system not in SYSTEM_STATES:
            raise ValueError(f"system is one of {SYSTEM_STATES}, not {system!r}")
        sent = 0
        for session, info in list(self._sessions.items()):
            if session.is_open and self._send_one(session, self._status_message(info, system)):
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

    def rate_limit_next(
        self, count: int = 1, *, path: str | None = None, retry_after: float | None = None
    ) -> None:
        """Answer the next ``count`` REST requests (to ``path``, if given) with HTTP 429
        and Kraken's error body ``{"error": ["EGeneral:Too many requests"]}``."""
        self.server.rest.fail_next(
            429, count=count, path=path, retry_after=retry_after,
            body={"error": ["EGeneral:Too many requests"]},
        )  # fmt: skip

    # -- publishing ------------------------------------------------------------------------------

    def _send_one(self, session: FakeSession, message: Any) -> bool:
        raw = message if isinstance(message, bytes) else dumps(message)
        if session._send_encoded(raw, raw, False):
            info = self._sessions.get(session)
            if info is not None:
                info.last_sent = self.reactor.seconds()
            return True
        return False

    def _send(self, stream: _Stream, message: Any) -> int:
        """Encode ``message`` once, send the bytes to ``stream``'s subscribers."""
        if message is None or not stream.subscribers:
            return 0
        raw = dumps(message)
        now = self.reactor.seconds()
        sent = 0
        infos = self._sessions
        for session in tuple(stream.subscribers):
            if session._send_encoded(raw, raw, False):
                sent += 1
                info = infos.get(session)
                if info is not None:
                    info.last_sent = now
        return sent

    def _levels(self, levels: Iterable[Level]) -> list[dict[str, Any]]:
        num = self._num
        return [{"price": num(p), "qty": num(q)} for p, q in levels]

    def _checksum(self, state: _Symbol, bids: list[Level], asks: list[Level]) -> int:
        return kraken_checksum(bids, asks, state.price_precision, state.qty_precision)

    def _checksum_now(self, state: _Symbol) -> int:
        if state.checksum is None:
            bids, asks, _ = self.market.book(state.symbol, CHECKSUM_DEPTH)
            state.checksum = self._checksum(state, bids, asks)
        return state.checksum

    def _book_snapshot(self, state: _Symbol, stream: _Stream) -> dict[str, Any]:
        depth = stream.param
        stale = state.stale
        old_id: int | None = None
        if stale and state.history:
            state.stale = 0
            kept = list(state.history)
            # the book `stale` updates ago: just before the stale-th latest update
            old_id = kept[max(0, len(kept) - stale)][0] - 1
            try:
                bids, asks = self.market.book_at(state.symbol, old_id, depth)
            except LookupError:
                old_id = None
        if old_id is None:
            bids, asks, _ = self.market.book(state.symbol, depth)
            checksum = self._checksum_now(state)
        else:
            log.info("FakeKraken: stale {symbol} snapshot ({n} updates behind)",
                     symbol=state.symbol, n=stale)  # fmt: skip
            checksum = self._checksum(state, bids[:CHECKSUM_DEPTH], asks[:CHECKSUM_DEPTH])
        data = {
            "symbol": state.symbol,
            "bids": self._levels(bids),
            "asks": self._levels(asks),
            "checksum": checksum,
            "timestamp": rfc3339(state.ts),
        }
        return {"channel": "book", "type": "snapshot", "data": [data]}

    def _ticker_data(self, state: _Symbol) -> dict[str, Any]:
        stats = state.stats
        stats.expire(state.ts)
        bids, asks, _ = self.market.book(state.symbol, 1)
        num = self._num
        zero = _number(Decimal(0))
        best_bid = Decimal(bids[0][0]) if bids else Decimal(0)
        last = stats.last if stats.last is not None else best_bid
        pq = Decimal(1).scaleb(-state.price_precision)
        if stats.trades and stats.volume:
            open24 = stats.trades[0][2]
            high, low = stats.high[0][1], stats.low[0][1]
            vwap = (stats.cost / stats.volume).quantize(pq, ROUND_HALF_EVEN)
        else:
            open24 = high = low = vwap = last
        change = last - open24
        pct = (change / open24 * 100).quantize(Decimal("0.01"), ROUND_HALF_EVEN) if open24 else 0
        return {
            "symbol": state.symbol,
            "bid": num(bids[0][0]) if bids else zero,
            "bid_qty": num(bids[0][1]) if bids else zero,
            "ask": num(asks[0][0]) if asks else zero,
            "ask_qty": num(asks[0][1]) if asks else zero,
            "last": _number(last),
            "volume": _number(stats.volume),
            "vwap": _number(vwap),
            "low": _number(low),
            "high": _number(high),
            "change": _number(change),
            "change_pct": _number(Decimal(pct)),
            "timestamp": rfc3339(state.ts),
        }

    def _trade_data(self, state: _Symbol, trade: SimTrade) -> dict[str, Any]:
        num = self._num
        return {
            "symbol": state.symbol,
            "side": trade.side,
            "price": num(trade.price),
            "qty": num(trade.amount),
            "ord_type": _ord_type(trade),
            "trade_id": trade.id,
            "timestamp": rfc3339(trade.timestamp),
        }

    @staticmethod
    def _vwap(state: _Symbol, candle: _Candle) -> Decimal:
        if not candle.volume:
            return candle.close
        pq = Decimal(1).scaleb(-state.price_precision)
        return (candle.cost / candle.volume).quantize(pq, ROUND_HALF_EVEN)

    def _candle_data(self, state: _Symbol, interval: int, candle: _Candle) -> dict[str, Any]:
        vwap = self._vwap(state, candle)
        return {
            "symbol": state.symbol,
            "open": _number(candle.open),
            "high": _number(candle.high),
            "low": _number(candle.low),
            "close": _number(candle.close),
            "trades": candle.trades,
            "volume": _number(candle.volume),
            "vwap": _number(vwap),
            "interval_begin": rfc3339(candle.begin, 9),
            "interval": interval,
            "timestamp": rfc3339(candle.begin + interval * 60_000),
        }

    def _publish(self, update: MarketUpdate) -> None:
        state = self._symbols[update.symbol]
        ts = update.timestamp
        state.ts = ts
        state.checksum = None
        state.history.append((update.last_id, ts))
        # trades: ring buffer, 24 h figures, candles of every interval
        touched: set[int] = set()
        for trade in update.trades:
            state.trade_log.append(trade)
            price, qty = Decimal(trade.price), Decimal(trade.amount)
            state.stats.add(trade.timestamp, price, qty)
            for interval, series in state.candles.items():
                begin = trade.timestamp // (interval * 60_000) * interval * 60_000
                if not series or series[-1].begin != begin:
                    series.append(_Candle(begin, price))
                series[-1].add(price, qty)
                touched.add(interval)
        streams = [s for s in state.streams.values() if s.subscribers]
        if not streams:
            return
        book_messages: list[tuple[_Stream, dict[str, Any]]] = []
        zero = self.market.zero_amount
        deleted_bids = {p for p, a in update.bids if a == zero}
        deleted_asks = {p for p, a in update.asks if a == zero}
        for stream in streams:
            if stream.channel != "book":
                continue
            bids, asks, _ = self.market.book(state.symbol, stream.param)
            new_bids, new_asks = dict(bids), dict(asks)
            out_bids = _diff(stream.prev_bids, new_bids, deleted_bids, zero)
            out_asks = _diff(stream.prev_asks, new_asks, deleted_asks, zero)
            stream.prev_bids, stream.prev_asks = new_bids, new_asks
            if out_bids or out_asks:
                out_bids.sort(key=lambda lvl: Decimal(lvl[0]), reverse=True)
                out_asks.sort(key=lambda lvl: Decimal(lvl[0]))
                data = {"symbol": state.symbol, "bids": self._levels(out_bids),
                        "asks": self._levels(out_asks)}  # fmt: skip
                book_messages.append((stream, data))
        if book_messages:
            if state.skip:
                state.skip -= 1
                self.skipped_updates += 1
            else:
                checksum = self._checksum_now(state)
                if state.corrupt:
                    state.corrupt -= 1
                    checksum = (checksum + 1) % (1 << 32)
                for stream, data in book_messages:
                    data["checksum"] = checksum
                    data["timestamp"] = rfc3339(ts)
                    self._send(stream, {"channel": "book", "type": "update", "data": [data]})
        trades = list(update.trades)
        while trades and state.skip_trades:
            state.skip_trades -= 1
            self.skipped_trades += 1
            trades.pop(0)
        for stream in streams:
            channel = stream.channel
            if channel == "trade" and trades:
                data = [self._trade_data(state, t) for t in trades]
                self._send(stream, {"channel": "trade", "type": "update", "data": data})
            elif channel == "ticker":
                if stream.param == "trades" and not update.trades:
                    continue
                if stream.param == "bbo" and not self._bbo_moved(state, stream):
                    continue
                self._send(stream, {"channel": "ticker", "type": "update",
                                    "data": [self._ticker_data(state)]})  # fmt: skip
            elif channel == "ohlc" and stream.param in touched:
                candle = state.candles[stream.param][-1]
                data = [self._candle_data(state, stream.param, candle)]
                self._send(stream, {"channel": "ohlc", "type": "update",
                                    "timestamp": rfc3339(ts), "data": data})  # fmt: skip

    def _bbo_moved(self, state: _Symbol, stream: _Stream) -> bool:
        bids, asks, _ = self.market.book(state.symbol, 1)
        top = (tuple(bids), tuple(asks))
        if stream.bbo == top:
            return False
        stream.bbo = top
        return True

    def _heartbeats(self) -> None:
        interval = self.heartbeat_interval
        if interval is None:
            return
        now = self.reactor.seconds()
        for session, info in list(self._sessions.items()):
            if (
                info.live
                and now - info.last_sent >= interval - 1e-6
                and session._send_encoded(_HEARTBEAT, _HEARTBEAT, False)
            ):
                info.last_sent = now
                self.heartbeats_sent += 1

    # -- WebSocket sessions ----------------------------------------------------------------------

    def _status_message(self, info: _SessionInfo, system: str = "online") -> bytes:
        return dumps({
            "channel": "status", "type": "update",
            "data": [{"api_version": "v2", "connection_id": info.connection_id,
                      "system": system, "version": "2.0.0"}],
        })  # fmt: skip

    def _on_session(self, session: FakeSession) -> None:
        private = session.path.rstrip("/") == PRIVATE_PATH
        connection_id = zlib.crc32(f"kraken:{self.seed}:{session.number}".encode()) * 4 + 1
        info = _SessionInfo(private, connection_id, self.reactor.seconds())
        self._sessions[session] = info

        def gone(result: Any) -> Any:
            for stream in info.subs.values():
                if stream is not None:
                    self._leave(session, stream)
            info.subs.clear()
            self._sessions.pop(session, None)
            return result

        session.closed.addBoth(gone)
        self._send_one(session, self._status_message(info))

    def _leave(self, session: FakeSession, stream: _Stream) -> None:
        stream.subscribers.pop(session, None)
        session.subscriptions.discard(_topic(stream.channel, stream.symbol))
        if not stream.subscribers:
            self._symbols[stream.symbol].streams.pop(stream.key, None)

    def _times(self, time_in: float) -> dict[str, str]:
        return {
            "time_in": rfc3339(time_in * 1000),
            "time_out": rfc3339(self.clock.seconds() * 1000),
        }

    def _reply(self, session: FakeSession, message: dict[str, Any]) -> None:
        info = self._sessions.get(session)
        if info is not None:
            info.last_sent = self.reactor.seconds()
        self.server.reply(session, dumps(message))

    def _on_binary(self, session: FakeSession, payload: bytes) -> None:
        self._malformed(session, self.clock.seconds())

    def _malformed(self, session: FakeSession, time_in: float) -> None:
        self._reply(session, {"error": "Malformed request", "method": "error",
                              "success": False, **self._times(time_in)})  # fmt: skip

    def _on_text(self, session: FakeSession, message: Any) -> None:
        info = self._sessions.get(session)
        if info is None:
            return
        time_in = self.clock.seconds()
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            self._malformed(session, time_in)
            return
        method = message["method"]
        req_id = message.get("req_id")
        if req_id is not None and (type(req_id) is not int or req_id < 0):
            self._malformed(session, time_in)
            return
        tail: dict[str, Any] = {"success": True, **self._times(time_in)}
        if req_id is not None:
            tail["req_id"] = req_id
        if method == "ping":
            pong: dict[str, Any] = {"method": "pong"}
            if req_id is not None:
                pong["req_id"] = req_id
            pong.update(self._times(time_in))
            self._reply(session, pong)
            return
        if method not in ("subscribe", "unsubscribe"):
            self._reply(session, {"error": f"Method not found {method}", "method": method,
                                  **tail, "success": False})  # fmt: skip
            return
        params = message.get("params")
        try:
            if not isinstance(params, dict):
                raise _Refused("EGeneral:Invalid arguments")
            channel, symbols, param, snapshot = self._parse(info, params)
        except _Refused as e:
            self._refuse(session, method, e, tail)
            return
        if channel in _OTHER_CHANNELS:
            self._control_channel(session, info, method, channel, snapshot, tail)
            return
        for symbol in symbols:
            try:
                if symbol not in self._symbols:
                    raise _Refused(f"Currency pair not supported {symbol}", symbol)
                if method == "subscribe":
                    self._subscribe(session, info, channel, symbol, param, snapshot, tail)
                else:
                    self._unsubscribe(session, info, channel, symbol, tail)
            except _Refused as e:
                self._refuse(session, method, e, tail)

    def _refuse(
        self, session: FakeSession, method: str, error: _Refused, tail: dict[str, Any]
    ) -> None:
        reply: dict[str, Any] = {"error": error.error, "method": method}
        reply.update(tail)
        reply["success"] = False
        if error.symbol is not None:
            reply["symbol"] = error.symbol
        self._reply(session, reply)

    def _parse(
        self, info: _SessionInfo, params: dict[str, Any]
    ) -> tuple[str, list[str], Any, bool]:
        channel = params.get("channel")
        if not isinstance(channel, str):
            raise _Refused("EGeneral:Invalid arguments:channel")
        if channel not in _SYMBOL_CHANNELS and channel not in _OTHER_CHANNELS:
            raise _Refused(f"Channel {channel} not supported")
        if info.private and channel in _SYMBOL_CHANNELS | {"instrument"}:
            raise _Refused("Public market data subscriptions are unavailable on this endpoint")
        snapshot = params.get("snapshot", channel != "trade")
        if not isinstance(snapshot, bool):
            raise _Refused("EGeneral:Invalid arguments:snapshot")
        symbols: list[str] = []
        param: Any = None
        if channel in _SYMBOL_CHANNELS:
            symbols = params.get("symbol")  # type: ignore[assignment]
            if (
                not isinstance(symbols, list)
                or not symbols
                or not all(isinstance(s, str) for s in symbols)
            ):
                raise _Refused("EGeneral:Invalid arguments:symbol")
        if channel == "book":
            param = params.get("depth", 10)
            if type(param) is not int or param not in BOOK_DEPTHS:
                raise _Refused("EGeneral:Invalid arguments:depth")
        elif channel == "ticker":
            param = params.get("event_trigger", "trades")
            if param not in ("trades", "bbo"):
                raise _Refused("EGeneral:Invalid arguments:event_trigger")
        elif channel == "ohlc":
            param = params.get("interval", 1)
            if type(param) is not int or param not in OHLC_INTERVALS:
                raise _Refused("EGeneral:Invalid arguments:interval")
        return channel, symbols, param, snapshot

    def _control_channel(
        self,
        session: FakeSession,
        info: _SessionInfo,
        method: str,
        channel: str,
        snapshot: bool,
        tail: dict[str, Any],
    ) -> None:
        key = (channel, "")
        result: dict[str, Any] = {"channel": channel}
        if channel == "instrument":
            result["snapshot"] = snapshot
        if method == "unsubscribe":
            if key not in info.subs:
                self._refuse(session, method, _Refused("Subscription Not Found"), tail)
                return
            del info.subs[key]
            session.subscriptions.discard(channel)
            self._reply(session, {"method": method, "result": result, **tail})
            return

        def activate() -> None:
            if not session.is_open:
                return
            self._send_one(session, {"method": method, "result": result, **tail})
            info.subs[key] = None
            info.live = True
            session.subscriptions.add(channel)
            if channel == "instrument" and snapshot:
                self._send_one(session, self._instrument_message())
            elif channel == "status":
                self._send_one(session, self._status_message(info))

        self._later(activate)

    def _instrument_message(self) -> dict[str, Any]:
        assets: dict[str, dict[str, Any]] = {}
        pairs = []
        for state in self._symbols.values():
            for asset in (state.base, state.quote):
                assets.setdefault(asset, {
                    "id": asset, "status": "enabled", "precision": 10,
                    "precision_display": 5, "borrowable": False,
                    "collateral_value": _number(Decimal(0)), "margin_rate": _number(Decimal(0)),
                })  # fmt: skip
            info = state.info
            step = self._num(info.amount_step)
            pairs.append({
                "symbol": state.symbol, "base": state.base, "quote": state.quote,
                "status": "online", "qty_precision": state.qty_precision,
                "qty_increment": step, "price_precision": state.price_precision,
                "cost_precision": 5, "marginable": False, "has_index": True,
                "cost_min": _number(Decimal("0.5")), "tick_size": self._num(info.tick_size),
                "price_increment": self._num(info.tick_size), "qty_min": step,
            })  # fmt: skip
        return {"channel": "instrument", "type": "snapshot",
                "data": {"assets": list(assets.values()), "pairs": pairs}}  # fmt: skip

    def _later(self, activate: Callable[[], None]) -> None:
        """Run ``activate`` now, or after :attr:`server.reply_delay` (ack and snapshot
        are held back together, so data never comes before its ack)."""
        delay = self.server.reply_delay
        if delay <= 0:
            activate()
            return

        def fire() -> None:
            self._calls.discard(call)
            activate()

        call = self.reactor.callLater(delay, fire)
        self._calls.add(call)

    def _ack_result(self, channel: str, symbol: str, param: Any, snapshot: bool | None) -> Any:
        result: dict[str, Any] = {"channel": channel}
        if channel == "book":
            result["depth"] = param
        elif channel == "ohlc":
            result["interval"] = param
        elif channel == "ticker":
            result["event_trigger"] = param
        if snapshot is not None:
            result["snapshot"] = snapshot
        result["symbol"] = symbol
        if channel == "ohlc" and snapshot is not None:
            result["warnings"] = [OHLC_WARNING]
        return result

    def _subscribe(
        self,
        session: FakeSession,
        info: _SessionInfo,
        channel: str,
        symbol: str,
        param: Any,
        snapshot: bool,
        tail: dict[str, Any],
    ) -> None:
        if (channel, symbol) in info.subs:
            raise _Refused("Already subscribed", symbol)
        state = self._symbols[symbol]
        # reserve now, so a second request in the same turn is refused
        info.subs[(channel, symbol)] = None
        ack = {"method": "subscribe",
               "result": self._ack_result(channel, symbol, param, snapshot), **tail}  # fmt: skip

        def activate() -> None:
            # the reservation (None) is gone if the session closed meanwhile
            if not session.is_open or info.subs.get((channel, symbol), False) is not None:
                return
            self._send_one(session, ack)
            key = (channel, symbol, param)
            stream = state.streams.get(key)
            if stream is None:
                stream = state.streams[key] = _Stream(channel, symbol, param)
                if channel == "book":
                    bids, asks, _ = self.market.book(symbol, param)
                    stream.prev_bids, stream.prev_asks = dict(bids), dict(asks)
                elif channel == "ticker" and param == "bbo":
                    self._bbo_moved(state, stream)
            stream.subscribers[session] = None
            info.subs[(channel, symbol)] = stream
            info.live = True
            session.subscriptions.add(_topic(channel, symbol))
            if snapshot:
                message = self._snapshot(state, stream)
                if message is not None:
                    self._send_one(session, message)

        self._later(activate)

    def _snapshot(self, state: _Symbol, stream: _Stream) -> dict[str, Any] | None:
        channel = stream.channel
        if channel == "book":
            return self._book_snapshot(state, stream)
        if channel == "ticker":
            return {"channel": "ticker", "type": "snapshot", "data": [self._ticker_data(state)]}
        if channel == "trade":
            trades = list(state.trade_log)[-TRADE_SNAPSHOT:]
            data = [self._trade_data(state, t) for t in trades]
            return {"channel": "trade", "type": "snapshot", "data": data}
        series = state.candles[stream.param]
        data = [self._candle_data(state, stream.param, c) for c in series]
        return {"channel": "ohlc", "type": "snapshot", "timestamp": rfc3339(state.ts),
                "data": data}  # fmt: skip

    def _unsubscribe(
        self,
        session: FakeSession,
        info: _SessionInfo,
        channel: str,
        symbol: str,
        tail: dict[str, Any],
    ) -> None:
        stream = info.subs.get((channel, symbol))
        if stream is None:
            raise _Refused("Subscription Not Found", symbol)
        del info.subs[(channel, symbol)]
        self._leave(session, stream)
        result = self._ack_result(channel, symbol, stream.param, None)
        self._reply(session, {"method": "unsubscribe", "result": result, **tail})

    # -- REST ------------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        handlers: dict[str, Callable[[dict[str, str]], Any]] = {
            "/0/public/Time": self._rest_time,
            "/0/public/SystemStatus": self._rest_status,
            "/0/public/AssetPairs": self._rest_asset_pairs,
            "/0/public/Depth": self._rest_depth,
            "/0/public/Trades": self._rest_trades,
            "/0/public/OHLC": self._rest_ohlc,
            "/0/public/Ticker": self._rest_ticker,
        }
        for path, handler in handlers.items():
            serve = self._endpoint(handler)
            self.server.rest.route("GET", path, serve)
            self.server.rest.route("POST", path, serve)

    def _endpoint(self, handler: Callable[[dict[str, str]], Any]) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if not self._allow():
                self.rejected_429 += 1
                return Response(429, {"error": ["EGeneral:Too many requests"]})
            args = {
                k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                for k, v in (request.args or {}).items()
                if v
            }
            try:
                result = handler(args)
            except _RestError as e:
                return Response(e.status, {"error": [e.error]})
            return Response(200, {"error": [], "result": result})

        return serve

    def _allow(self) -> bool:
        now = self.clock.seconds()
        stamps = self._rest_stamps
        while stamps and stamps[0] <= now - self.rest_window:
            stamps.popleft()
        if len(stamps) >= self.rest_limit:
            return False
        stamps.append(now)
        return True

    def _pairs(self, args: dict[str, str], required: bool) -> list[_Symbol]:
        names = args.get("pair")
        if not names:
            if required:
                raise _RestError("EGeneral:Invalid arguments")
            return list(self._symbols.values())
        out = []
        for name in names.split(","):
            state = self._rest_names.get(name.strip())
            if state is None:
                raise _RestError("EQuery:Unknown asset pair")
            out.append(state)
        return out

    @staticmethod
    def _int(args: dict[str, str], name: str, default: int, most: int) -> int:
        value = args.get(name)
        if value is None or value == "":
            return default
        if not value.isdigit():
            raise _RestError(f"EGeneral:Invalid arguments:{name}")
        return max(1, min(int(value), most))

    def _rest_time(self, args: dict[str, str]) -> Any:
        now = self.clock.seconds()
        return {"unixtime": int(now), "rfc1123": formatdate(now, usegmt=True)}

    def _rest_status(self, args: dict[str, str]) -> Any:
        return {"status": "online", "timestamp": rfc3339(self.clock.seconds() * 1000)[:19] + "Z"}

    def _rest_asset_pairs(self, args: dict[str, str]) -> Any:
        out = {}
        for state in self._pairs(args, False):
            info = state.info
            base_code = _LEGACY_ASSETS.get(state.base, (state.base,))[0]
            quote_code = _LEGACY_ASSETS.get(state.quote, (state.quote,))[0]
            out[state.key] = {
                "altname": state.alt, "wsname": state.wsname, "aclass_base": "currency",
                "base": base_code, "aclass_quote": "currency", "quote": quote_code,
                "lot": "unit", "cost_decimals": 5, "pair_decimals": state.price_precision,
                "lot_decimals": state.qty_precision, "lot_multiplier": 1,
                "leverage_buy": [], "leverage_sell": [], "fee_volume_currency": "ZUSD",
                "ordermin": wire_number(info.amount_step), "costmin": "0.5",
                "tick_size": wire_number(info.tick_size), "status": "online",
            }  # fmt: skip
        return out

    def _fixed(self, state: _Symbol, price: str | Decimal, qty: str | Decimal) -> list[str]:
        pq = Decimal(1).scaleb(-state.price_precision)
        qq = Decimal(1).scaleb(-state.qty_precision)
        return [f"{Decimal(price).quantize(pq):f}", f"{Decimal(qty).quantize(qq):f}"]

    def _rest_depth(self, args: dict[str, str]) -> Any:
        (state,) = self._pairs(args, True)[:1]
        count = self._int(args, "count", 100, 500)
        bids, asks, _ = self.market.book(state.symbol, count)
        ts = state.ts // 1000
        return {state.key: {
            "asks": [[*self._fixed(state, p, q), ts] for p, q in asks],
            "bids": [[*self._fixed(state, p, q), ts] for p, q in bids],
        }}  # fmt: skip

    def _rest_trades(self, args: dict[str, str]) -> Any:
        (state,) = self._pairs(args, True)[:1]
        count = self._int(args, "count", 1000, 1000)
        since = args.get("since")
        trades = list(state.trade_log)
        if since:
            try:
                cutoff = Decimal(since)
            except ArithmeticError:
                raise _RestError("EGeneral:Invalid arguments:since") from None
            # nanoseconds (as "last" gives), or seconds (a trade's time)
            cutoff_ms = cutoff / 1_000_000 if cutoff > 10**12 else cutoff * 1000
            trades = [t for t in trades if t.timestamp > cutoff_ms]
        trades = trades[:count]
        rows = [
            [*self._fixed(state, t.price, t.amount),
             orjson.Fragment(f"{t.timestamp / 1000:.4f}".encode()),
             "b" if t.side == "buy" else "s", _ord_type(t)[0], "", t.id]
            for t in trades
        ]  # fmt: skip
        last = (trades[-1].timestamp if trades else state.ts) * 1_000_000
        return {state.key: rows, "last": str(last)}

    def _rest_ohlc(self, args: dict[str, str]) -> Any:
        (state,) = self._pairs(args, True)[:1]
        interval = self._int(args, "interval", 1, 10**9)
        if interval not in OHLC_INTERVALS:
            raise _RestError("EGeneral:Invalid arguments")
        since = args.get("since")
        candles = list(state.candles[interval])
        if since and since.isdigit():
            candles = [c for c in candles if c.begin // 1000 > int(since)]
        rows = []
        for c in candles:
            price, volume = self._fixed(state, c.close, c.volume)
            rows.append([
                c.begin // 1000, *(self._fixed(state, x, 0)[0] for x in (c.open, c.high, c.low)),
                price, self._fixed(state, self._vwap(state, c), 0)[0], volume, c.trades,
            ])  # fmt: skip
        last = candles[-1].begin // 1000 if candles else 0
        return {state.key: rows, "last": last}

    def _rest_ticker(self, args: dict[str, str]) -> Any:
        out = {}
        for state in self._pairs(args, False):
            stats = state.stats
            stats.expire(state.ts)
            bids, asks, _ = self.market.book(state.symbol, 1)
            last = stats.last if stats.last is not None else Decimal(bids[0][0])
            last_qty = state.trade_log[-1].amount if state.trade_log else "0"
            vwap = stats.cost / stats.volume if stats.volume else last
            high = stats.high[0][1] if stats.high else last
            low = stats.low[0][1] if stats.low else last
            open_ = stats.trades[0][2] if stats.trades else last
            fx = self._fixed
            bid, ask = fx(state, *bids[0]), fx(state, *asks[0])
            volume = fx(state, 0, stats.volume)[1]
            vwap_text = fx(state, vwap, 0)[0]
            out[state.key] = {
                "a": [ask[0], str(max(1, int(Decimal(ask[1])))), ask[1]],
                "b": [bid[0], str(max(1, int(Decimal(bid[1])))), bid[1]],
                "c": fx(state, last, last_qty),
                "v": [volume, volume], "p": [vwap_text, vwap_text],
                "t": [len(stats.trades), len(stats.trades)],
                "l": [fx(state, low, 0)[0]] * 2, "h": [fx(state, high, 0)[0]] * 2,
                "o": fx(state, open_, 0)[0],
            }  # fmt: skip
        return out


def _topic(channel: str, symbol: str) -> str:
    return f"{channel}:{symbol}"


def _ord_type(trade: SimTrade) -> str:
    """A deterministic taker order type for a simulated fill."""
    return "limit" if trade.id % 4 == 0 else "market"


def _diff(prev: dict[str, str], new: dict[str, str], deleted: set[str], zero: str) -> list[Level]:
    """What a depth-limited subscriber is told: every level of the new top that is
    new or changed, and a zero for every level of the old top that was deleted
    from the book.  Levels pushed out of range by better ones are not mentioned
    (the client truncates to its depth)."""
    out = [(p, q) for p, q in new.items() if prev.get(p) != q]
    out.extend((p, zero) for p in prev if p not in new and p in deleted)
    return out
