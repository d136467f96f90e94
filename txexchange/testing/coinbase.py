"""A fake Coinbase Exchange on 127.0.0.1: the ws-feed WebSocket and REST market data.

Part of the test toolkit (:mod:`txexchange.testing`), in the exchange's place
in the flow: a :class:`FakeCoinbase` drives a
:class:`~txexchange.testing.market.SimulatedMarket` and turns every
:class:`~txexchange.testing.market.MarketUpdate` into the messages Coinbase
Exchange documents for its ws-feed (``PROTOCOLS.md`` section 4):
``level2_batch`` (``snapshot`` then ``l2update``), ``ticker``, ``ticker_batch``,
``matches`` (``last_match`` then ``match``), ``heartbeat`` and ``status``,
answers ``{"type": "subscribe"|"unsubscribe", ...}`` with ``subscriptions`` or
``error`` messages, closes a connection that has not subscribed within 5 s,
and serves the public REST endpoints (``/products``, ``/products/{id}/book``,
``/trades``, ``/candles``, ``/ticker``, ``/stats``, ``/time``) behind Coinbase's
public rate limit (HTTP 429, ``{"message": "Public rate limit exceeded"}``).
It is written from the Coinbase documentation, not from the client adapter,
so the two check each other.

Coinbase's level-2 channels carry no sequence number and no checksum; the
integrity fields are the per-product ``sequence`` of ``ticker``/``match``/
``heartbeat`` messages and of the REST book, and the consecutive ``trade_id``
that ``heartbeat``'s ``last_trade_id`` lets a client check.  Every event is
encoded once and the same bytes go to every subscribed session.  Nothing here
imports a reactor at import time.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from txexchange.codec import dumps
from txexchange.testing.market import VIRTUAL_EPOCH_MS, MarketUpdate, SimTrade, SimulatedMarket
from txexchange.testing.rest import FakeRest, RecordedRequest, Response
from txexchange.testing.server import FakeExchangeServer, FakeSession
from txexchange.testing.tls import ServerCertificate

__all__ = ["FakeCoinbase", "coinbase_time"]

log = Logger()

#: WebSocket paths: the public feed and the direct feed (served alike here)
FEED_PATH = "/ws-feed"
DIRECT_PATH = "/ws-direct"

#: public channels the fake serves -> what they carry
_CHANNELS: dict[str, str] = {
    "level2_batch": "l2",
    "level2_50": "l2",
    "ticker": "ticker",
    "ticker_batch": "ticker_batch",
    "ticker_1000": "ticker_batch",
    "matches": "matches",
    "heartbeat": "heartbeat",
    "status": "status",
}
#: channels Coinbase only serves to authenticated subscribers (refused here)
_AUTH_CHANNELS = frozenset({"level2", "level3", "full", "user", "balance"})
_AUTH_REASON = (
    "level2, level3, and full channels now require authentication. "
    "https://docs.cloud.coinbase.com/exchange/docs/websocket-auth"
)
#: REST candle granularities (seconds)
_GRANULARITIES = frozenset({60, 300, 900, 3600, 21600, 86400})
_MAX_CANDLES = 300
_DAY_MS = 86_400_000
_MONTH_MS = 30 * _DAY_MS

Level = tuple[str, str]


def coinbase_time(ms: int) -> str:
    """Coinbase's timestamp form, ``"2022-10-19T23:28:22.061000Z"``, from epoch ms."""
    seconds, millis = divmod(ms, 1000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{millis:03d}000Z"


def _order_id(*parts: Any) -> str:
    """A deterministic UUID (version 4 layout) for ``parts``."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))


def _decimals(step: str) -> int:
    return len(step.split(".", 1)[1].rstrip("0")) if "." in step else 0


class _Cut:
    """Fixed-decimal strings of the market -> ``places`` decimals (``"10101.10"``)."""

    __slots__ = ("_cache", "_places")

    def __init__(self, places: int) -> None:
        self._places = places
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        out = self._cache.get(text)
        if out is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            whole, _dot, frac = text.partition(".")
            frac = (frac + "0" * self._places)[: self._places]
            out = f"{whole}.{frac}" if self._places else whole
            self._cache[text] = out
        return out


def _dec8(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.00000001')):f}"


class _Stats:
    """Rolling 24 h (high/low/open/volume) and 30 d (volume) figures of one product."""

    __slots__ = ("day", "high", "last", "low", "month", "seq", "vol24", "vol30")

    def __init__(self) -> None:
        self.day: deque[tuple[int, int, str, Decimal]] = deque()  # seq, ts, price, size
        self.month: deque[tuple[int, Decimal]] = deque()
        self.high: deque[tuple[int, Decimal, str]] = deque()
        self.low: deque[tuple[int, Decimal, str]] = deque()
        self.vol24 = Decimal(0)
        self.vol30 = Decimal(0)
        self.seq = 0
        self.last: tuple[str, str] | None = None  # (price, size)

    def add(self, ts: int, price_text: str, size_text: str) -> None:
        self.seq += 1
        price, size = Decimal(price_text), Decimal(size_text)
        self.day.append((self.seq, ts, price_text, size))
        self.month.append((ts, size))
        self.vol24 += size
        self.vol30 += size
        while self.high and self.high[-1][1] <= price:
            self.high.pop()
        self.high.append((self.seq, price, price_text))
        while self.low and self.low[-1][1] >= price:
            self.low.pop()
        self.low.append((self.seq, price, price_text))
        self.last = (price_text, size_text)

    def expire(self, now: int) -> None:
        while self.day and self.day[0][1] <= now - _DAY_MS:
            seq, _ts, _text, size = self.day.popleft()
            self.vol24 -= size
            if self.high and self.high[0][0] == seq:
                self.high.popleft()
            if self.low and self.low[0][0] == seq:
                self.low.popleft()
        while self.month and self.month[0][0] <= now - _MONTH_MS:
            self.vol30 -= self.month.popleft()[1]

    def figures(self, now: int) -> tuple[str, str, str, str, str]:
        """``(open_24h, high_24h, low_24h, volume_24h, volume_30d)``."""
        self.expire(now)
        last = self.last[0] if self.last else "0"
        if self.day:
            opening, high, low = self.day[0][2], self.high[0][2], self.low[0][2]
        else:
            opening = high = low = last
        return opening, high, low, _dec8(self.vol24), _dec8(self.vol30)


class _Product:
    """Per-product state: sequence numbering, trades, statistics, faults."""

    __slots__ = (
        "dirty_ticker", "drop_l2", "drop_matches", "id", "info", "last_match",
        "last_ticker", "seq", "seq_ends", "seq_ids", "stale_rest", "stale_ws", "stats",
        "status", "symbol", "trades", "ts",
    )  # fmt: skip

    def __init__(self, symbol: str, product_id: str, info: Any, seq: int, market_id: int) -> None:
        self.symbol = symbol
        self.id = product_id
        self.info = info
        #: the product's feed sequence now
        self.seq = seq
        #: sequence at the end of each kept update, and the market update id it maps to
        self.seq_ends: list[int] = [seq]
        self.seq_ids: list[int] = [market_id]
        self.ts = VIRTUAL_EPOCH_MS
        self.last_match: dict[str, Any] | None = None
        self.last_ticker: dict[str, Any] | None = None
        self.dirty_ticker = False
        #: newest last: ``(trade, maker side, price text, size text)``
        self.trades: deque[tuple[SimTrade, str, str, str]] = deque(maxlen=10_000)
        self.stats = _Stats()
        self.status = "online"
        self.drop_matches = 0
        self.drop_l2 = 0
        #: pending stale-snapshot faults: updates behind, per next snapshot
        self.stale_ws: deque[int] = deque()
        self.stale_rest: deque[int] = deque()

    @property
    def last_trade_id(self) -> int:
        return self.trades[-1][0].id if self.trades else 0


class _SessionInfo:
    __slots__ = ("channels", "inbound", "subscribed", "timer", "violated")

    def __init__(self) -> None:
        #: channel name -> product ids, in subscription order
        self.channels: dict[str, list[str]] = {}
        self.subscribed = False
        self.timer: Any = None
        self.inbound: deque[float] = deque()
        self.violated = False


class _Refused(Exception):
    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class _RestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _CoinbaseRest(FakeRest):
    """:class:`FakeRest` answering unknown paths the way Coinbase does:
    404 ``{"message": "NotFound"}`` (the toolkit's default body is Binance-like)."""

    def _dispatch(self, request: Request, method: str, path: str, gone: list[Failure]) -> None:
        if not any(p == path for (_m, p) in self._routes):
            self._write(request, Response(404, {"message": "NotFound"}), gone)
            return
        super()._dispatch(request, method, path, gone)


class FakeCoinbase:
    """A fake Coinbase Exchange: the ws-feed (and ws-direct) WebSocket, public REST, faults.

    ``symbols`` are unified ``BASE/QUOTE`` names (``"BTC/USD"`` is product
    ``"BTC-USD"``); with ``market`` given its symbols are used.  ``seed`` and
    ``levels`` make the default :class:`SimulatedMarket` (tick 0.01, size step
    0.00000001).  ``subscribe_timeout`` (s, ``None`` = never) closes a
    connection that has not subscribed successfully in that time.
    ``heartbeat_interval`` and ``ticker_batch_interval`` (s of reactor time,
    ``None`` = only on demand) pace the ``heartbeat`` and ``ticker_batch``
    channels.  ``message_rate`` client messages per second per connection are
    allowed; one more gets the ``ErrSlowRead`` error and a close.  REST is a
    token bucket of ``rest_rate`` requests a second with bursts of
    ``rest_burst`` for all clients together (they share 127.0.0.1).
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
        subscribe_timeout: float | None = 5.0,
        heartbeat_interval: float | None = 1.0,
        ticker_batch_interval: float | None = 5.0,
        message_rate: int = 100,
        rest_rate: float = 10.0,
        rest_burst: int = 15,
        permessage_deflate: bool = True,
        clock: Any = None,
    ) -> None:
        if subscribe_timeout is not None and subscribe_timeout <= 0:
            raise ValueError("subscribe_timeout must be positive (or None)")
        for name, value in (("heartbeat_interval", heartbeat_interval),
                            ("ticker_batch_interval", ticker_batch_interval)):  # fmt: skip
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None)")
        if message_rate < 1 or rest_rate <= 0 or rest_burst < 1:
            raise ValueError("message_rate, rest_rate and rest_burst must be positive")
        if market is None:
            market = SimulatedMarket(
                tuple(symbols), seed=seed, levels=levels, amount_step="0.00000001"
            )
        #: the simulated market behind the fake
        self.market = market
        self.seed = seed
        self.subscribe_timeout = subscribe_timeout
        self.heartbeat_interval = heartbeat_interval
        self.ticker_batch_interval = ticker_batch_interval
        self.message_rate = message_rate
        self.rest_rate = rest_rate
        self.rest_burst = rest_burst
        self._reactor = reactor
        self._clock = clock
        #: the WebSocket + REST server, for the toolkit's faults (drop, stall, ...)
        self.server = FakeExchangeServer(
            reactor=reactor,
            tls=tls,
            ws_paths=(FEED_PATH, DIRECT_PATH),
            permessage_deflate=permessage_deflate,
        )
        self.server.rest = _CoinbaseRest(reactor=reactor)
        self.server.on_session = self._on_session
        self.server.on_text = self._on_text
        self.server.on_binary = self._on_binary
        self._products: dict[str, _Product] = {}
        self._by_id: dict[str, _Product] = {}
        self._price: dict[str, _Cut] = {}
        for symbol in market.symbols:
            info = market.info(symbol)
            uid = market.last_update_id(symbol)
            product = _Product(symbol, f"{info.base}-{info.quote}", info, uid, uid)
            self._products[symbol] = product
            self._by_id[product.id] = product
            self._price[symbol] = _Cut(_decimals(info.tick_size))
        self._size = _Cut(8)
        self._sessions: dict[FakeSession, _SessionInfo] = {}
        #: topic (``"channel:PRODUCT"`` or ``"status"``) -> subscribed sessions
        self._subs: dict[str, dict[FakeSession, None]] = {}
        self._calls: set[Any] = set()
        self._loops: list[Any] = []
        self._tokens = float(rest_burst)
        self._tokens_at: float | None = None
        #: REST requests answered 429 by the rate limit
        self.rejected_429 = 0
        #: connections closed for not subscribing in time
        self.subscribe_timeouts = 0
        #: connections closed for sending too many messages
        self.message_rate_violations = 0
        #: ``match`` and ``l2update`` messages withheld by the faults
        self.dropped_matches = 0
        self.dropped_l2updates = 0
        self._loop: Any = None
        self._run_done: Deferred[None] | None = None
        self._run_left: int | None = None
        self._register_routes()

    def __repr__(self) -> str:
        return f"<FakeCoinbase {len(self._products)} products {self.server!r}>"

    # -- life cycle ------------------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def clock(self) -> Any:
        """What REST rate limits, heartbeat times and ``/time`` use (default: the reactor)."""
        return self._clock if self._clock is not None else self.reactor

    def start(self) -> Deferred[FakeCoinbase]:
        """Listen on 127.0.0.1 (ephemeral port), start the heartbeat and
        ticker_batch timers; fires with this fake."""
        from twisted.internet.task import LoopingCall

        for interval, tick in ((self.heartbeat_interval, self.send_heartbeats),
                               (self.ticker_batch_interval, self.send_ticker_batch)):  # fmt: skip
            if interval is None:
                continue
            loop = LoopingCall(tick)
            loop.clock = self.reactor
            loop.start(interval, now=False).addErrback(
                lambda f: log.failure("FakeCoinbase: a timer failed", f)
            )
            self._loops.append(loop)
        return self.server.start().addCallback(lambda _: self)

    def stop(self) -> Deferred[None]:
        """Stop stepping and the timers, drop every connection, stop listening."""
        self.stop_running()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        for info in self._sessions.values():
            self._cancel_timer(info)
        return self.server.stop()

    @property
    def urls(self) -> dict[str, str]:
        """``urls=`` for the client: ``ws`` (the ws-feed, full URL), ``ws_direct``
        (the direct feed, served alike) and ``rest`` (``http://127.0.0.1:P``)."""
        return {
            "ws": self.server.ws_url(FEED_PATH),
            "ws_direct": self.server.ws_url(DIRECT_PATH),
            "rest": self.server.rest_url,
        }

    @property
    def rest_log(self) -> list[RecordedRequest]:
        """Every REST request that arrived (faulted and rejected ones included)."""
        return self.server.rest.requests

    def product_id(self, symbol: str) -> str:
        """Coinbase's product id of ``symbol`` (``"BTC/USD"`` -> ``"BTC-USD"``)."""
        return self._product(symbol).id

    def sequence(self, symbol: str) -> int:
        """``symbol``'s feed ``sequence`` now (what a heartbeat would say)."""
        return self._product(symbol).seq

    def last_trade_id(self, symbol: str) -> int:
        """The id of ``symbol``'s last trade (0 before the first)."""
        return self._product(symbol).last_trade_id

    def _product(self, symbol: str) -> _Product:
        try:
            return self._products[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not a symbol of this FakeCoinbase") from None

    # -- the market ------------------------------------------------------------------------------

    def true_book(
        self, symbol: str, nonce: int | None = None, limit: int | None = None
    ) -> tuple[list[Level], list[Level], int]:
        """``(bids, asks, sequence)`` best first in Coinbase's strings: now, or as of
        feed ``sequence`` ``nonce`` (a sequence inside an update's range gives the
        book before that update).  Too old or future sequences raise :class:`LookupError`."""
        product = self._product(symbol)
        if nonce is None:
            bids, asks, _uid = self.market.book(symbol, limit)
            nonce = product.seq
        else:
            bids, asks = self.market.book_at(symbol, self._market_id(product, nonce), limit)
        return self._levels(product, bids), self._levels(product, asks), nonce

    def _market_id(self, product: _Product, seq: int) -> int:
        if seq > product.seq:
            raise LookupError(f"{product.id}: sequence {seq} is in the future ({product.seq})")
        i = bisect.bisect_right(product.seq_ends, seq) - 1
        if i < 0:
            raise LookupError(
                f"{product.id}: sequence {seq} is older than the kept history "
                f"(from {product.seq_ends[0]})"
            )
        return product.seq_ids[i]

    def _levels(self, product: _Product, levels: Sequence[Level]) -> list[Level]:
        price, size = self._price[product.symbol], self._size
        return [(price(p), size(a)) for p, a in levels]

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

    def _run_failed(self, failure: Failure) -> None:
        log.failure("FakeCoinbase.run: a step failed", failure)
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

    # -- faults ------------------------------------------------------------------------------

    def skip_matches(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` ``match`` messages of ``symbol`` from everyone (the
        documented "messages can be dropped"): the next one has a ``trade_id`` and
        ``sequence`` beyond the last seen + 1, and ``heartbeat``'s ``last_trade_id``
        is ahead of the last ``match`` a client saw."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._product(symbol).drop_matches += n

    def skip_l2updates(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` ``l2update`` messages of ``symbol``.  Level 2
        carries no sequence, so a client cannot see this; its book silently
        differs from :meth:`true_book` until it resubscribes."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._product(symbol).drop_l2 += n

    def resend_last_match(self, symbol: str) -> int:
        """Send ``symbol``'s last ``match`` again (a late message: its ``sequence`` is
        not above the last one seen).  Returns how many sessions got it."""
        product = self._product(symbol)
        if product.last_match is None:
            return 0
        return self._send(f"matches:{product.id}", product.last_match)

    def stale_snapshot_next(self, symbol: str, updates_behind: int = 5, count: int = 1) -> None:
        """The next ``count`` ``level2_batch`` snapshots of ``symbol`` show the book as
        it was ``updates_behind`` market updates ago; the ``l2update`` messages after
        them are the live ones, so a client's book ends up wrong."""
        self._stale(self._product(symbol).stale_ws, updates_behind, count)

    def stale_book_next(self, symbol: str, updates_behind: int = 5, count: int = 1) -> None:
        """The next ``count`` REST ``/products/{id}/book`` answers for ``symbol`` hold
        the book and ``sequence`` of ``updates_behind`` market updates ago (a stale
        snapshot: its ``sequence`` is below what the feed already showed)."""
        self._stale(self._product(symbol).stale_rest, updates_behind, count)

    @staticmethod
    def _stale(queue: deque[int], behind: int, count: int) -> None:
        if behind < 1 or count < 1:
            raise ValueError("updates_behind and count must be at least 1")
        queue.extend([behind] * count)

    def send_error(
        self, message: str, reason: str | None = None, session: FakeSession | None = None
    ) -> int:
        """Send ``{"type": "error", "message", "reason"?}`` to ``session`` (or every open
        session); returns how many got it.  Nothing else changes."""
        error: dict[str, Any] = {"type": "error", "message": message}
        if reason is not None:
            error["reason"] = reason
        raw = dumps(error)
        targets = [session] if session is not None else list(self._sessions)
        return sum(1 for s in targets if s._send_encoded(raw, raw, False))

    def set_status(self, symbol: str, status: str) -> int:
        """Set ``symbol``'s product ``status`` (``"online"``, ``"delisted"``, ...), shown by
        REST ``/products`` and pushed at once to ``status`` subscribers (how Coinbase
        announces trading halts); returns how many sessions got the message."""
        self._product(symbol).status = status
        return self.send_status()

    def fail_rest_next(self, status: int = 429, *, count: int = 1, path: str | None = None) -> None:
        """The next ``count`` REST requests (to ``path``, if given) get ``status`` with
        Coinbase's error body (429: ``{"message": "Public rate limit exceeded"}``)."""
        text = "Public rate limit exceeded" if status == 429 else "Internal server error"
        self.server.rest.fail_next(status, count=count, path=path, body={"message": text})

    # -- pushing ---------------------------------------------------------------------------

    def _send(self, topic: str, message: Any) -> int:
        """Encode ``message`` once, send the bytes to ``topic``'s subscribers."""
        subscribers = self._subs.get(topic)
        if not subscribers:
            return 0
        raw = dumps(message)
        sent = 0
        for session in tuple(subscribers):
            if session._send_encoded(raw, raw, False):
                sent += 1
        return sent

    def _has(self, topic: str) -> bool:
        return bool(self._subs.get(topic))

    def send_heartbeats(self) -> int:
        """One ``heartbeat`` per product to its subscribers now (the timer calls this
        every ``heartbeat_interval``); returns how many messages went out."""
        sent = 0
        now = coinbase_time(int(self.clock.seconds() * 1000))
        for product in self._products.values():
            topic = f"heartbeat:{product.id}"
            if self._has(topic):
                sent += self._send(topic, {
                    "type": "heartbeat", "sequence": product.seq,
                    "last_trade_id": product.last_trade_id, "product_id": product.id,
                    "time": now,
                })  # fmt: skip
        return sent

    def send_ticker_batch(self) -> int:
        """The ``ticker_batch`` push: the latest ticker of each product that traded
        since the last push (the timer calls this every ``ticker_batch_interval``)."""
        sent = 0
        for product in self._products.values():
            if product.dirty_ticker and product.last_ticker is not None:
                product.dirty_ticker = False
                for name in ("ticker_batch", "ticker_1000"):
                    sent += self._send(f"{name}:{product.id}", product.last_ticker)
        return sent

    def send_status(self) -> int:
        """A ``status`` message (products and currencies) to ``status`` subscribers."""
        if not self._has("status"):
            return 0
        return self._send("status", self._status_message())

    def _status_message(self) -> dict[str, Any]:
        currencies: dict[str, None] = {}
        for product in self._products.values():
            currencies[product.info.base] = None
            currencies[product.info.quote] = None
        return {
            "type": "status",
            "products": [self._product_row(p) for p in self._products.values()],
            "currencies": [
                {"id": c, "name": c, "min_size": "0.00000001", "status": "online",
                 "status_message": "", "max_precision": "0.00000001", "convertible_to": [],
                 "details": {}}
                for c in currencies
            ],
        }  # fmt: skip

    def _snapshot(self, product: _Product) -> dict[str, Any]:
        if product.stale_ws:
            behind = product.stale_ws.popleft()
            uid = product.seq_ids[max(0, len(product.seq_ids) - 1 - behind)]
            bids, asks = self.market.book_at(product.symbol, uid)
        else:
            bids, asks, _uid = self.market.book(product.symbol)
        return {
            "type": "snapshot", "product_id": product.id,
            "bids": [list(x) for x in self._levels(product, bids)],
            "asks": [list(x) for x in self._levels(product, asks)],
        }  # fmt: skip

    def _publish(self, update: MarketUpdate) -> None:
        product = self._products[update.symbol]
        product.ts = ts = update.timestamp
        time = coinbase_time(ts)
        price, size = self._price[product.symbol], self._size
        # order-book messages of the full channel (received/open/done/change)
        # take sequence numbers too; one per market update id
        seq = product.seq + update.last_id - update.first_id + 1
        changes = [["buy", price(p), size(a)] for p, a in update.bids]
        changes += [["sell", price(p), size(a)] for p, a in update.asks]
        if changes:
            if product.drop_l2:
                product.drop_l2 -= 1
                self.dropped_l2updates += 1
            else:
                message = {"type": "l2update", "product_id": product.id,
                           "changes": changes, "time": time}  # fmt: skip
                for name in ("level2_batch", "level2_50"):
                    self._send(f"{name}:{product.id}", message)
        topic = f"matches:{product.id}"
        last: tuple[SimTrade, dict[str, Any]] | None = None
        for trade in update.trades:
            seq += 1
            maker = "sell" if trade.side == "buy" else "buy"
            px, sz = price(trade.price), size(trade.amount)
            product.trades.append((trade, maker, px, sz))
            product.stats.add(trade.timestamp, px, sz)
            match = {
                "type": "match", "trade_id": trade.id, "sequence": seq,
                "maker_order_id": _order_id(self.seed, product.id, trade.id, "maker"),
                "taker_order_id": _order_id(self.seed, product.id, trade.id, "taker"),
                "time": coinbase_time(trade.timestamp), "product_id": product.id,
                "size": sz, "price": px, "side": maker,
            }  # fmt: skip
            product.last_match = match
            last = (trade, match)
            if product.drop_matches:
                product.drop_matches -= 1
                self.dropped_matches += 1
            else:
                self._send(topic, match)
        product.seq = seq
        product.seq_ends.append(seq)
        product.seq_ids.append(update.last_id)
        if len(product.seq_ends) > 20_000:
            del product.seq_ends[:10_000]
            del product.seq_ids[:10_000]
        if last is not None:
            trade, match = last
            product.last_ticker = self._ticker(product, trade, match)
            product.dirty_ticker = True
            self._send(f"ticker:{product.id}", product.last_ticker)

    def _ticker(self, product: _Product, trade: SimTrade, match: dict[str, Any]) -> dict[str, Any]:
        opening, high, low, vol24, vol30 = product.stats.figures(product.ts)
        bids, asks, _uid = self.market.book(product.symbol, 1)
        bid, bid_size = self._levels(product, bids)[0] if bids else ("", "")
        ask, ask_size = self._levels(product, asks)[0] if asks else ("", "")
        return {
            "type": "ticker", "sequence": match["sequence"], "product_id": product.id,
            "price": match["price"], "open_24h": opening, "volume_24h": vol24,
            "low_24h": low, "high_24h": high, "volume_30d": vol30, "best_bid": bid,
            "best_bid_size": bid_size, "best_ask": ask, "best_ask_size": ask_size,
            "side": trade.side, "time": match["time"], "trade_id": trade.id,
            "last_size": match["size"],
        }  # fmt: skip

    # -- WebSocket sessions --------------------------------------------------------------------

    def _on_session(self, session: FakeSession) -> None:
        info = _SessionInfo()
        self._sessions[session] = info
        if self.subscribe_timeout is not None:

            def check() -> None:
                self._calls.discard(info.timer)
                info.timer = None
                if session.is_open and not info.subscribed:
                    self.subscribe_timeouts += 1
                    log.info("FakeCoinbase: {session} sent no subscribe in {s}s; closing",
                             session=session, s=self.subscribe_timeout)  # fmt: skip
                    session.close(1000, "no subscribe message within 5 seconds")

            info.timer = self.reactor.callLater(self.subscribe_timeout, check)
            self._calls.add(info.timer)

        def gone(result: Any) -> Any:
            self._cancel_timer(info)
            for topic in list(session.subscriptions):
                self._subs.get(topic, {}).pop(session, None)
            info.channels.clear()
            self._sessions.pop(session, None)
            return result

        session.closed.addBoth(gone)

    def _cancel_timer(self, info: _SessionInfo) -> None:
        call, info.timer = info.timer, None
        if call is not None:
            self._calls.discard(call)
            if call.active():
                call.cancel()

    def _on_binary(self, session: FakeSession, payload: bytes) -> None:
        info = self._sessions.get(session)
        if info is not None and self._count(session, info):
            self._error(session, "Malformed JSON", "binary frames are not accepted")

    def _error(self, session: FakeSession, message: str, reason: str | None = None) -> None:
        error: dict[str, Any] = {"type": "error", "message": message}
        if reason is not None:
            error["reason"] = reason
        self.server.reply(session, dumps(error))

    def _count(self, session: FakeSession, info: _SessionInfo) -> bool:
        """Count one client message; over ``message_rate`` a second: ErrSlowRead, close."""
        if info.violated:
            return False
        now = self.reactor.seconds()
        inbound = info.inbound
        while inbound and inbound[0] <= now - 1.0:
            inbound.popleft()
        inbound.append(now)
        if len(inbound) <= self.message_rate:
            return True
        info.violated = True
        self.message_rate_violations += 1
        session.send(dumps({"type": "error", "message": "ErrSlowRead"}))
        session.close(1008, "ErrSlowRead")
        return False

    def _on_text(self, session: FakeSession, message: Any) -> None:
        info = self._sessions.get(session)
        if info is None or not self._count(session, info):
            return
        if not isinstance(message, dict):
            self._error(session, "Malformed JSON", "the message is not a JSON object")
            return
        kind = message.get("type")
        if kind not in ("subscribe", "unsubscribe"):
            if isinstance(kind, str):
                self._error(session, "Unknown message type", f"{kind} is not a valid type")
            else:
                self._error(session, "Malformed JSON", "the message has no type")
            return
        try:
            wanted = self._parse(message, kind)
        except _Refused as e:
            self._error(session, e.message, e.reason)
            return
        if kind == "subscribe":
            info.subscribed = True
            self._cancel_timer(info)
        self._later(lambda: self._apply(session, info, kind, wanted))

    def _parse(self, message: dict[str, Any], kind: str) -> list[tuple[str, list[str] | None]]:
        """``[(channel, product ids or None for "all of them")]``, or :class:`_Refused`."""
        failed = f"Failed to {kind}"
        channels = message.get("channels")
        top = message.get("product_ids")
        if top is not None and not (isinstance(top, list) and all(isinstance(p, str) for p in top)):
            raise _Refused(failed, "product_ids must be a list of strings")
        if not channels:
            raise _Refused(failed, "No channels provided")
        if not isinstance(channels, list):
            raise _Refused(failed, "channels must be a list")
        out: list[tuple[str, list[str] | None]] = []
        for entry in channels:
            if isinstance(entry, str):
                name, products = entry, top
            elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
                name, products = entry["name"], entry.get("product_ids", top)
                if products is not None and not (
                    isinstance(products, list) and all(isinstance(p, str) for p in products)
                ):
                    raise _Refused(failed, "product_ids must be a list of strings")
            else:
                raise _Refused(failed, "channels must be names or {name, product_ids} objects")
            if name in _AUTH_CHANNELS:
                raise _Refused(failed, _AUTH_REASON)
            if name not in _CHANNELS:
                raise _Refused(failed, f"{name} is not a valid channel")
            if name == "status":
                out.append((name, []))
                continue
            if not products:
                if kind == "subscribe":
                    raise _Refused(failed, "No product ids provided")
                out.append((name, None))
                continue
            for pid in products:
                if pid not in self._by_id:
                    raise _Refused(failed, f"{pid} is not a valid product")
            out.append((name, list(dict.fromkeys(products))))
        return out

    def _later(self, action: Callable[[], None]) -> None:
        """Run ``action`` now, or :attr:`server.reply_delay` seconds later."""
        delay = self.server.reply_delay
        if delay <= 0:
            action()
            return

        def fire() -> None:
            self._calls.discard(call)
            action()

        call = self.reactor.callLater(delay, fire)
        self._calls.add(call)

    def _apply(
        self,
        session: FakeSession,
        info: _SessionInfo,
        kind: str,
        wanted: list[tuple[str, list[str] | None]],
    ) -> None:
        if not session.is_open:
            return
        added: list[tuple[str, str]] = []
        for name, products in wanted:
            current = info.channels.setdefault(name, [])
            if name == "status":
                topics = {"status": ""}
            elif products is None:
                topics = {f"{name}:{p}": p for p in current}
            else:
                topics = {f"{name}:{p}": p for p in products}
            for topic, pid in topics.items():
                if kind == "subscribe":
                    if topic in session.subscriptions:
                        continue
                    session.subscriptions.add(topic)
                    self._subs.setdefault(topic, {})[session] = None
                    if pid:
                        current.append(pid)
                    added.append((name, pid))
                else:
                    session.subscriptions.discard(topic)
                    self._subs.get(topic, {}).pop(session, None)
                    if pid in current:
                        current.remove(pid)
            if kind == "unsubscribe" and (not current or name == "status"):
                info.channels.pop(name, None)
        session.send(dumps({
            "type": "subscriptions",
            "channels": [{"name": n, "product_ids": list(p)} for n, p in info.channels.items()],
        }))  # fmt: skip
        for name, pid in added:
            self._initial_push(session, name, pid)

    def _initial_push(self, session: FakeSession, name: str, product_id: str) -> None:
        kind = _CHANNELS[name]
        if kind == "status":
            session.send(dumps(self._status_message()))
            return
        product = self._by_id[product_id]
        message: Any = None
        if kind == "l2":
            message = self._snapshot(product)
        elif kind == "matches" and product.last_match is not None:
            message = dict(product.last_match, type="last_match")
        elif kind in ("ticker", "ticker_batch"):
            message = product.last_ticker
        if message is not None:
            session.send(dumps(message))

    # -- REST ------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        rest = self.server.rest
        rest.route("GET", "/products", self._endpoint(self._rest_products))
        rest.route("GET", "/time", self._endpoint(self._rest_time))
        for product in self._products.values():
            base = f"/products/{product.id}"
            for suffix, handler in (
                ("", self._rest_product), ("/book", self._rest_book),
                ("/ticker", self._rest_ticker), ("/trades", self._rest_trades),
                ("/candles", self._rest_candles), ("/stats", self._rest_stats),
            ):  # fmt: skip
                rest.route("GET", base + suffix, self._endpoint(handler, product))

    def _endpoint(self, handler: Callable[..., Any], product: _Product | None = None) -> Any:
        def serve(request: Request) -> Response:
            if not self._allow():
                self.rejected_429 += 1
                return Response(429, {"message": "Public rate limit exceeded"})
            args = {
                k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                for k, v in (request.args or {}).items()
                if v
            }
            try:
                result = handler(args) if product is None else handler(product, args)
            except _RestError as e:
                return Response(e.status, {"message": e.message})
            if isinstance(result, Response):
                return result
            return Response(200, result)

        return serve

    def _allow(self) -> bool:
        now = self.clock.seconds()
        if self._tokens_at is not None:
            self._tokens = min(
                float(self.rest_burst), self._tokens + (now - self._tokens_at) * self.rest_rate
            )
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _product_row(self, product: _Product) -> dict[str, Any]:
        info = product.info
        return {
            "id": product.id, "base_currency": info.base, "quote_currency": info.quote,
            "quote_increment": info.tick_size, "base_increment": info.amount_step,
            "display_name": f"{info.base}-{info.quote}", "min_market_funds": "1",
            "margin_enabled": False, "post_only": False, "limit_only": False,
            "cancel_only": False, "status": product.status, "status_message": "",
            "auction_mode": False, "trading_disabled": product.status != "online",
            "fx_stablecoin": False, "max_slippage_percentage": "0.02000000",
            "high_bid_limit_percentage": "",
        }  # fmt: skip

    def _rest_products(self, args: dict[str, str]) -> Any:
        return [self._product_row(p) for p in self._products.values()]

    def _rest_product(self, product: _Product, args: dict[str, str]) -> Any:
        return self._product_row(product)

    def _rest_time(self, args: dict[str, str]) -> Any:
        now = self.clock.seconds()
        return {"iso": coinbase_time(int(now * 1000)), "epoch": round(now, 3)}

    def _rest_book(self, product: _Product, args: dict[str, str]) -> Any:
        level = args.get("level", "1")
        if level not in ("1", "2", "3"):
            raise _RestError(400, "Invalid level")
        seq = product.seq
        if product.stale_rest:
            behind = product.stale_rest.popleft()
            i = max(0, len(product.seq_ids) - 1 - behind)
            seq = product.seq_ends[i]
            bids, asks = self.market.book_at(product.symbol, product.seq_ids[i])
        else:
            bids, asks, _uid = self.market.book(product.symbol)
        if level == "1":
            bids, asks = bids[:1], asks[:1]
        out: dict[str, Any] = {}
        for key, levels in (("bids", bids), ("asks", asks)):
            rows: list[list[Any]] = []
            for p, a in self._levels(product, levels):
                if level == "3":
                    rows.append([p, a, _order_id(self.seed, product.id, p, "order")])
                else:
                    rows.append([p, a, 1 + (len(a) + int(a[-1])) % 5])
            out[key] = rows
        out.update(sequence=seq, auction_mode=False, auction=None, time=coinbase_time(product.ts))
        return out

    def _rest_ticker(self, product: _Product, args: dict[str, str]) -> Any:
        _o, _h, _l, vol24, _v30 = product.stats.figures(product.ts)
        bids, asks, _uid = self.market.book(product.symbol, 1)
        bid = self._levels(product, bids)[0][0] if bids else ""
        ask = self._levels(product, asks)[0][0] if asks else ""
        if product.trades:
            trade, _maker, px, sz = product.trades[-1]
            trade_id, time = trade.id, coinbase_time(trade.timestamp)
        else:
            trade_id, px, sz, time = 0, bid, "0.00000000", coinbase_time(product.ts)
        return {"ask": ask, "bid": bid, "volume": vol24, "trade_id": trade_id, "price": px,
                "size": sz, "time": time, "rfq_volume": "0.00000000"}  # fmt: skip

    def _rest_stats(self, product: _Product, args: dict[str, str]) -> Any:
        opening, high, low, vol24, vol30 = product.stats.figures(product.ts)
        last = product.stats.last[0] if product.stats.last else opening
        return {"open": opening, "high": high, "low": low, "last": last, "volume": vol24,
                "volume_30day": vol30}  # fmt: skip

    @staticmethod
    def _int_arg(args: dict[str, str], name: str) -> int | None:
        value = args.get(name)
        if value is None or value == "":
            return None
        if not value.isdigit():
            raise _RestError(400, f"Invalid {name}")
        return int(value)

    def _rest_trades(self, product: _Product, args: dict[str, str]) -> Any:
        limit = self._int_arg(args, "limit") or 100
        limit = min(limit, 1000)
        after = self._int_arg(args, "after")  # older than this trade id
        before = self._int_arg(args, "before")  # newer than this trade id
        trades = list(product.trades)  # oldest first
        if after is not None:
            trades = [t for t in trades if t[0].id < after][-limit:]
        elif before is not None:
            trades = [t for t in trades if t[0].id > before][:limit]
        else:
            trades = trades[-limit:]
        rows = [
            {"time": coinbase_time(t.timestamp), "trade_id": t.id, "price": px, "size": sz,
             "side": maker}
            for t, maker, px, sz in reversed(trades)
        ]  # fmt: skip
        headers = {}
        if rows:
            headers = {"CB-BEFORE": str(rows[0]["trade_id"]), "CB-AFTER": str(rows[-1]["trade_id"])}
        return Response(200, rows, headers)

    def _rest_candles(self, product: _Product, args: dict[str, str]) -> Any:
        granularity = self._int_arg(args, "granularity") or 60
        if granularity not in _GRANULARITIES:
            raise _RestError(400, "Unsupported granularity")
        end = self._time_arg(args, "end")
        start = self._time_arg(args, "start")
        if end is None:
            end = product.ts // 1000
        if start is None:
            start = end - granularity * _MAX_CANDLES
        if start > end:
            raise _RestError(400, "start must be before end")
        if (end - start) // granularity > _MAX_CANDLES:
            raise _RestError(
                400,
                "granularity too small for the requested time range. "
                "Count of aggregations requested exceeds 300",
            )
        first = start // granularity * granularity
        buckets: dict[int, list[Decimal]] = {}
        for trade, _maker, px, sz in product.trades:
            t = trade.timestamp // 1000
            if t < first or t > end:
                continue
            bucket = t // granularity * granularity
            price, size = Decimal(px), Decimal(sz)
            row = buckets.get(bucket)
            if row is None:
                buckets[bucket] = [price, price, price, price, size]  # low high open close vol
            else:
                row[0] = min(row[0], price)
                row[1] = max(row[1], price)
                row[3] = price
                row[4] += size
        return [
            [bucket, float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4])]
            for bucket, r in sorted(buckets.items(), reverse=True)
        ]

    @staticmethod
    def _time_arg(args: dict[str, str], name: str) -> int | None:
        """``start``/``end``: ISO 8601 or epoch seconds -> epoch seconds."""
        value = args.get(name)
        if not value:
            return None
        try:
            return int(float(value))
        except ValueError:
            pass
        try:
            stamp = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _RestError(400, f"Invalid {name}") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=datetime.UTC)
        return int(stamp.timestamp())
