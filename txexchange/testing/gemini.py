"""A fake Gemini exchange on 127.0.0.1: the current WebSocket API, legacy market data v1, REST.

Part of the test toolkit (:mod:`txexchange.testing`), in the exchange's place
in the flow: a :class:`FakeGemini` drives a
:class:`~txexchange.testing.market.SimulatedMarket` and turns every
:class:`~txexchange.testing.market.MarketUpdate` into the messages Gemini
documents (``PROTOCOLS.md`` section 3):

* the current API (``wss://ws.gemini.com``): ``{"id", "method", "params"}``
  requests (``subscribe``, ``unsubscribe``, ``list_subscriptions``, ``ping``,
  ``time``, ``conninfo``, ``depth``), the streams ``{sym}@depth`` /
  ``{sym}@depth@100ms`` (``depthUpdate`` diffs chained by ``U``/``u``),
  ``{sym}@depth5|10|20`` (partial books), ``{sym}@bookTicker`` and
  ``{sym}@trade``, and the book snapshot on subscribe that the
  ``?snapshot=-1`` (full) or ``?snapshot=N`` (top N) connection parameter asks for;
* the legacy market data v1 socket (``wss://api.gemini.com/v1/marketdata/{symbol}``):
  one symbol per connection, an ``initial`` book, ``change`` and ``trade``
  events in ``update`` messages numbered by ``socket_sequence``, the
  ``heartbeat=true`` heartbeat and the ``bids``/``offers``/``trades``/
  ``top_of_book`` filters;
* the public REST endpoints a client uses (``/v1/symbols``,
  ``/v1/symbols/details/{symbol}``, ``/v1/book/{symbol}``, ``/v1/trades/{symbol}``,
  ``/v1/pubticker/{symbol}``, ``/v2/ticker/{symbol}``, ``/v2/candles/{symbol}/{frame}``)
  with the public rate limit (HTTP 429, reason ``RateLimit``).

It is written from the Gemini documentation, not from the client adapter, so
the two check each other.  Shapes the captured documentation does not show
(request replies and errors, the subscribe snapshot) are marked *guess* in
the docstrings below.  Each event is encoded once and the same bytes go to
every subscriber; v1 messages differ per socket only in ``socket_sequence``,
so their events are encoded once and only the number is spliced in.
Nothing here imports a reactor at import time.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Literal

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from txexchange.codec import dumps
from txexchange.testing.market import MarketUpdate, SimTrade, SimulatedMarket
from txexchange.testing.rest import RecordedRequest, Response
from txexchange.testing.server import FakeExchangeServer, FakeSession
from txexchange.testing.tls import ServerCertificate

__all__ = ["FakeGemini"]

log = Logger()

#: the path the fake serves the current API on (Gemini's is the root of ws.gemini.com)
CURRENT_PATH = "/ws"
#: the legacy market data v1 prefix; a socket is ``/v1/marketdata/{symbol}``
V1_PATH = "/v1/marketdata"
#: seconds between v1 heartbeats (``heartbeat=true``)
HEARTBEAT_INTERVAL = 5.0
#: public REST requests allowed per :attr:`FakeGemini.rest_window` (Gemini: 120 a minute)
REST_LIMIT = 120
#: levels per side ``/v1/book`` gives when no limit is asked for
BOOK_DEFAULT_LIMIT = 50

_STREAM_RE = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?P<kind>depth(?P<levels>5|10|20)?(?:@100ms)?|bookTicker|trade)$"
)
_V1_FLAGS = ("bids", "offers", "trades", "auctions")
_CANDLE_MS: dict[str, int] = {
    "1m": 60_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1hr": 3_600_000, "6hr": 21_600_000, "1day": 86_400_000,
}  # fmt: skip
_DAY_MS = 86_400_000

Level = tuple[str, str]
Style = Literal["ws", "v1"]


def _trim(value: Decimal) -> str:
    """A decimal as Gemini's v1 socket prints it: no exponent, no trailing zeros."""
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("", "-", "-0"):
        return "0"
    return text


class _Symbol:
    """Per-symbol state: wire names, the v1 mirror, faults, trades, candles."""

    __slots__ = (
        "asks", "bids", "candles", "cut", "id", "low", "partial", "recent", "skip",
        "skip_v1", "stale", "symbol", "top", "trades", "ts",
    )  # fmt: skip

    def __init__(self, symbol: str, market_id: str, cut: int) -> None:
        self.symbol = symbol
        #: Gemini's symbol, upper case (``BTCUSD``; REST paths take either case)
        self.id = market_id
        #: the lower-case form streams use (``btcusd``)
        self.low = market_id.lower()
        #: characters to cut from the market's 8-decimal prices (tick decimals)
        self.cut = cut
        #: the book as the fake last published it (price text -> amount), for v1 deltas
        self.bids: dict[str, Decimal] = {}
        self.asks: dict[str, Decimal] = {}
        self.skip = 0
        self.skip_v1 = 0
        self.stale: deque[int] = deque()
        #: last update ids of recent updates (for stale snapshots)
        self.recent: deque[int] = deque(maxlen=1000)
        self.trades: deque[SimTrade] = deque(maxlen=1000)
        #: 1m candle open time -> [open, high, low, close, volume]
        self.candles: dict[int, list[Decimal]] = {}
        self.top: Any = None
        #: levels -> the (bids, asks) a partial-depth stream last sent
        self.partial: dict[int, Any] = {}
        self.ts = 0


class _Current:
    """One session on the current API."""

    __slots__ = ("conn_id", "snapshot", "streams")

    def __init__(self, conn_id: str, snapshot: int) -> None:
        self.conn_id = conn_id
        #: the ``snapshot`` connection parameter (0: none, <0: full, N: top N)
        self.snapshot = snapshot
        self.streams: dict[str, None] = {}


class _V1:
    """One legacy v1 socket: its symbol, filters and ``socket_sequence``."""

    __slots__ = ("hb_call", "heartbeat", "seq", "state", "variant")

    def __init__(self, state: _Symbol, variant: tuple[bool, bool, bool, bool], hb: bool) -> None:
        self.state = state
        #: (bids, offers, trades, top_of_book)
        self.variant = variant
        self.heartbeat = hb
        self.seq = 0
        self.hb_call: Any = None


class _RestError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _flag(value: list[str] | None) -> bool | None:
    if not value:
        return None
    return value[-1].strip().lower() == "true"


class FakeGemini:
    """A fake Gemini: current WebSocket API, legacy market data v1, public REST, faults.

    ``symbols`` are unified ``BASE/QUOTE`` names (``"BTC/USD"`` is Gemini's
    ``BTCUSD``); with ``market`` given its symbols are used.  ``seed`` and
    ``levels`` make the default :class:`SimulatedMarket` (tick 0.01, amount
    step 0.00001).  ``tls`` serves ``wss``/``https``.  ``heartbeat_interval``
    is the v1 heartbeat period (Gemini: 5 s).  ``rest_limit`` public REST
    requests are allowed per ``rest_window`` seconds of ``clock`` time (the
    reactor unless given); more get HTTP 429.  ``update_id_offset`` is added to
    every update id on the wire (``2**53`` tests that clients parse ids as
    integers); :meth:`true_book` takes and gives ids with the offset.
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
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        rest_limit: int = REST_LIMIT,
        rest_window: float = 60.0,
        clock: Any = None,
        update_id_offset: int = 0,
    ) -> None:
        if not 0 <= update_id_offset < 2**63 - 2**40:
            raise ValueError("update_id_offset must be >= 0 and keep ids within 64 bits")
        if heartbeat_interval <= 0 or rest_limit < 1 or rest_window <= 0:
            raise ValueError("heartbeat_interval, rest_limit and rest_window must be positive")
        if market is None:
            market = SimulatedMarket(tuple(symbols), seed=seed, levels=levels)
        #: the simulated market behind the fake
        self.market = market
        self.seed = seed
        self.heartbeat_interval = heartbeat_interval
        #: added to every update id on the wire (``U``, ``u``, ``lastUpdateId``),
        #: e.g. ``2**53`` to exercise ids a float cannot hold
        self.update_id_offset = update_id_offset
        self.rest_limit = rest_limit
        self.rest_window = rest_window
        self._reactor = reactor
        self._clock = clock
        self._symbols: dict[str, _Symbol] = {}
        self._by_id: dict[str, _Symbol] = {}
        for symbol in market.symbols:
            info = market.info(symbol)
            tick = Decimal(info.tick_size).normalize().as_tuple().exponent
            assert isinstance(tick, int)
            state = _Symbol(symbol, info.id.upper(), 8 - max(0, -tick))
            self._symbols[symbol] = state
            self._by_id[state.low] = state
            bids, asks, uid = market.book(symbol)
            state.bids = {self._price(state, p): Decimal(a) for p, a in bids}
            state.asks = {self._price(state, p): Decimal(a) for p, a in asks}
            state.recent.append(uid)
        v1_paths = []
        for state in self._symbols.values():
            v1_paths += [f"{V1_PATH}/{state.low}", f"{V1_PATH}/{state.id}"]
        #: the WebSocket + REST server, for the toolkit's faults (drop, stall, 503 ...)
        self.server = FakeExchangeServer(
            reactor=reactor, tls=tls, ws_paths=(CURRENT_PATH, *v1_paths)
        )
        self.server.on_session = self._on_session
        self.server.on_text = self._on_text
        self.server.on_binary = self._on_binary
        self._current: dict[FakeSession, _Current] = {}
        self._v1: dict[FakeSession, _V1] = {}
        self._streams: dict[str, dict[FakeSession, None]] = {}
        self._calls: set[Any] = set()
        self._rest_stamps: deque[float] = deque()
        #: v1 ``eventId``: one counter shared by every connection
        self._event_id = 1_000_000_000 + zlib.crc32(f"gemini:{seed}".encode()) % 1_000_000_000
        #: REST requests answered 429
        self.rejected_429 = 0
        #: ``depthUpdate`` messages withheld by :meth:`skip_next`
        self.skipped_updates = 0
        self._loop: Any = None
        self._run_done: Deferred[None] | None = None
        self._run_left: int | None = None
        self._register_routes()

    def __repr__(self) -> str:
        return f"<FakeGemini {len(self._symbols)} symbols {self.server!r}>"

    # -- life cycle ------------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def clock(self) -> Any:
        """What the REST rate window and ``time`` use (the reactor unless ``clock``)."""
        return self._clock if self._clock is not None else self.reactor

    def start(self) -> Deferred[FakeGemini]:
        """Listen on 127.0.0.1 (ephemeral port); fires with this fake."""
        return self.server.start().addCallback(lambda _: self)

    def stop(self) -> Deferred[None]:
        """Stop stepping, cancel every timer, drop every connection, stop listening."""
        self.stop_running()
        for info in self._v1.values():
            info.hb_call = None
        for call in list(self._calls):
            if call.active():
                call.cancel()
        self._calls.clear()
        return self.server.stop()

    def update_id(self, symbol: str) -> int:
        """The update id (as on the wire) of ``symbol``'s book now."""
        return self.market.last_update_id(symbol) + self.update_id_offset

    @property
    def urls(self) -> dict[str, str]:
        """``urls=`` for the client.

        ``ws``: the current API (``wss://ws.gemini.com``; the client appends
        ``?snapshot=...``), ``marketdata_v1``: the legacy v1 base
        (``wss://api.gemini.com/v1/marketdata``; the client appends
        ``/{symbol}`` and its flags), ``rest``: the REST base
        (``https://api.gemini.com``, no trailing slash).
        """
        scheme = "wss" if self.server.tls is not None else "ws"
        return {
            "ws": self.server.ws_url(CURRENT_PATH),
            "marketdata_v1": f"{scheme}://127.0.0.1:{self.server.port}{V1_PATH}",
            "rest": self.server.rest_url,
        }

    def ws_url(self, snapshot: int | None = None) -> str:
        """The current API's URL, with ``?snapshot=`` when given."""
        url = self.server.ws_url(CURRENT_PATH)
        return url if snapshot is None else f"{url}?snapshot={snapshot}"

    def v1_url(self, symbol: str, **flags: bool) -> str:
        """The v1 socket URL of ``symbol`` with query flags (``heartbeat=True`` ...)."""
        path = f"{V1_PATH}/{self._state(symbol).low}"
        if flags:
            path += "?" + "&".join(f"{k}={'true' if v else 'false'}" for k, v in flags.items())
        return self.server.ws_url(path)

    @property
    def rest_log(self) -> list[RecordedRequest]:
        """Every REST request that arrived (faulted and rejected ones included)."""
        return self.server.rest.requests

    def market_id(self, symbol: str) -> str:
        """Gemini's symbol for ``symbol`` (``"BTC/USD"`` -> ``"BTCUSD"``)."""
        return self._state(symbol).id

    def current_sessions(self) -> list[FakeSession]:
        """Open sessions on the current API."""
        return [s for s in self._current if s.is_open]

    def v1_sessions(self, symbol: str | None = None) -> list[FakeSession]:
        """Open legacy v1 sockets (of ``symbol``, if given)."""
        state = None if symbol is None else self._state(symbol)
        return [s for s, i in self._v1.items() if s.is_open and state in (None, i.state)]

    def socket_sequence(self, session: FakeSession) -> int:
        """The ``socket_sequence`` the next message on v1 ``session`` will carry."""
        return self._v1[session].seq

    # -- the market ------------------------------------------------------------------

    def true_book(
        self, symbol: str, nonce: int | None = None, limit: int | None = None,
        *, style: Style = "ws",
    ) -> tuple[list[Level], list[Level], int]:  # fmt: skip
        """``(bids, asks, update_id)`` best first: now, or as of update id ``nonce``
        (the ``u`` of a ``depthUpdate``, the ``lastUpdateId`` of a snapshot).

        ``style="ws"`` gives the current API's strings (amounts with 8
        decimals), ``"v1"`` the legacy socket's (trailing zeros trimmed).
        """
        state = self._state(symbol)
        if nonce is None:
            bids, asks, nonce = self.market.book(symbol, limit)
            nonce += self.update_id_offset
        else:
            bids, asks = self.market.book_at(symbol, nonce - self.update_id_offset, limit)
        amount: Callable[[str], str] = (
            (lambda a: a) if style == "ws" else (lambda a: _trim(Decimal(a)))
        )
        return (
            [(self._price(state, p), amount(a)) for p, a in bids],
            [(self._price(state, p), amount(a)) for p, a in asks],
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
        log.failure("FakeGemini.run: a step failed", failure)
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
            raise KeyError(f"{symbol!r} is not a symbol of this FakeGemini") from None

    @staticmethod
    def _price(state: _Symbol, text: str) -> str:
        return text[: len(text) - state.cut] if state.cut else text

    # -- faults ----------------------------------------------------------------------

    def skip_next(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` ``depthUpdate`` messages of ``symbol`` from every
        diff subscriber, so the one after has a ``U`` that is not the last ``u`` + 1."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).skip += n

    def skip_next_v1(self, symbol: str, n: int = 1) -> None:
        """Withhold the next ``n`` v1 ``update`` messages of ``symbol`` while counting
        them in ``socket_sequence``: the next message's number jumps (a v1 gap)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        self._state(symbol).skip_v1 += n

    def stale_snapshot_next(self, symbol: str, updates_behind: int = 5, count: int = 1) -> None:
        """The next ``count`` snapshots of ``symbol`` (subscribe snapshot, ``depth``
        method) are the book and ``lastUpdateId`` of ``updates_behind`` updates ago:
        consistent in themselves but older than the diffs that follow them."""
        if updates_behind < 1 or count < 1:
            raise ValueError("updates_behind and count must be at least 1")
        self._state(symbol).stale.extend([updates_behind] * count)

    def rate_limit_next(self, count: int = 1, *, retry_after: float = 3) -> None:
        """Answer the next ``count`` REST requests with Gemini's 429."""
        self.server.rest.fail_next(
            429, count=count, retry_after=retry_after,
            body={"result": "error", "reason": "RateLimit", "message": "Rate limit exceeded"},
        )  # fmt: skip

    def send_v1_heartbeats(self) -> int:
        """Send a heartbeat now on every v1 socket that asked for them; how many got one."""
        sent = 0
        for session, info in list(self._v1.items()):
            if info.heartbeat and self._v1_heartbeat(session, info):
                sent += 1
        return sent

    # -- publishing -----------------------------------------------------------------

    def _broadcast(self, stream: str, raw: bytes) -> int:
        subscribers = self._streams.get(stream)
        if not subscribers:
            return 0
        sent = 0
        for session in tuple(subscribers):
            if session._send_encoded(raw, raw, False):
                sent += 1
        return sent

    def _has(self, stream: str) -> bool:
        return bool(self._streams.get(stream))

    def _levels(self, state: _Symbol, levels: Sequence[Level]) -> list[list[str]]:
        return [[self._price(state, p), a] for p, a in levels]

    def _publish(self, update: MarketUpdate) -> None:
        state = self._symbols[update.symbol]
        ts = update.timestamp
        state.ts = ts
        state.recent.append(update.last_id)
        for trade in update.trades:
            state.trades.append(trade)
            self._candle(state, trade)
        e_ns = ts * 1_000_000
        low = state.low
        off = self.update_id_offset
        # diff depth
        if self._has(low + "@depth") or self._has(low + "@depth@100ms"):
            if state.skip:
                state.skip -= 1
                self.skipped_updates += 1
            else:
                raw = dumps({
                    "e": "depthUpdate", "E": e_ns, "s": low, "U": update.first_id + off,
                    "u": update.last_id + off, "b": self._levels(state, update.bids),
                    "a": self._levels(state, update.asks),
                })  # fmt: skip
                self._broadcast(low + "@depth", raw)
                self._broadcast(low + "@depth@100ms", raw)
        elif state.skip:
            state.skip -= 1
            self.skipped_updates += 1
        # partial depth
        for n in (5, 10, 20):
            names = (f"{low}@depth{n}", f"{low}@depth{n}@100ms")
            if any(self._has(name) for name in names):
                message = self._partial(state, n)
                key = (message["bids"], message["asks"])
                if key == state.partial.get(n):
                    continue  # sent when the top N changed
                state.partial[n] = key
                raw = dumps(message)
                for name in names:
                    self._broadcast(name, raw)
        # book ticker
        if self._has(low + "@bookTicker"):
            message = self._book_ticker(state, e_ns, update.last_id + off)
            if message is not None:
                self._broadcast(low + "@bookTicker", dumps(message))
        # trades
        if update.trades and self._has(low + "@trade"):
            for t in update.trades:
                raw = dumps({
                    "e": "trade", "E": e_ns, "s": low, "t": t.id,
                    "p": self._price(state, t.price), "q": t.amount, "m": t.side == "sell",
                })  # fmt: skip
                self._broadcast(low + "@trade", raw)
        self._publish_v1(state, update)

    def _partial(self, state: _Symbol, n: int, uid: int | None = None) -> dict[str, Any]:
        if uid is None:
            bids, asks, uid = self.market.book(state.symbol, n)
        else:
            bids, asks = self.market.book_at(state.symbol, uid, n)
        return {"lastUpdateId": uid + self.update_id_offset, "bids": self._levels(state, bids),
                "asks": self._levels(state, asks)}  # fmt: skip

    def _book_ticker(
        self, state: _Symbol, e_ns: int, uid: int, force: bool = False
    ) -> dict[str, Any] | None:
        bids, asks, _ = self.market.book(state.symbol, 1)
        top = (tuple(bids), tuple(asks))
        if top == state.top and not force:
            return None
        state.top = top
        bid = bids[0] if bids else ("0", "0")
        ask = asks[0] if asks else ("0", "0")
        return {
            "u": uid, "E": e_ns, "s": state.low, "b": self._price(state, bid[0]), "B": bid[1],
            "a": self._price(state, ask[0]), "A": ask[1],
        }  # fmt: skip

    # -- legacy v1 -------------------------------------------------------------------

    def _v1_change(
        self, state: _Symbol, side: str, price: str, amount: str, trade_prices: set[str]
    ) -> dict[str, Any]:
        book = state.bids if side == "bid" else state.asks
        new = Decimal(amount)
        old = book.get(price, Decimal(0))
        if new:
            book[price] = new
        else:
            book.pop(price, None)
        delta = new - old
        if price in trade_prices and delta < 0:
            reason = "trade"
        else:
            reason = "place" if delta > 0 else "cancel"
        return {"type": "change", "side": side, "price": price, "remaining": _trim(new),
                "delta": _trim(delta), "reason": reason}  # fmt: skip

    def _publish_v1(self, state: _Symbol, update: MarketUpdate) -> None:
        trade_prices = {self._price(state, t.price) for t in update.trades}
        any_top = any(i.variant[3] for i in self._v1.values() if i.state is state)
        old_top = self._v1_top(state) if any_top else (None, None)
        changes = [
            self._v1_change(state, "bid", self._price(state, p), a, trade_prices)
            for p, a in update.bids
        ] + [
            self._v1_change(state, "ask", self._price(state, p), a, trade_prices)
            for p, a in update.asks
        ]
        sessions = [(s, i) for s, i in self._v1.items() if i.state is state]
        if not sessions:
            return
        self._event_id += 1
        skip = False
        if state.skip_v1:
            state.skip_v1 -= 1
            skip = True
        trades = [
            {"type": "trade", "tid": t.id, "price": self._price(state, t.price),
             "amount": _trim(Decimal(t.amount)), "makerSide": "bid" if t.side == "sell" else "ask"}
            for t in update.trades
        ]  # fmt: skip
        new_top = self._v1_top(state) if any_top else (None, None)
        head = (
            b'{"type":"update","eventId":%d,"timestamp":%d,"timestampms":%d,"socket_sequence":'
            % (self._event_id, update.timestamp // 1000, update.timestamp)
        )
        tails: dict[tuple[bool, bool, bool, bool], bytes | None] = {}
        for session, info in sessions:
            variant = info.variant
            if variant not in tails:
                tails[variant] = self._v1_tail(variant, changes, trades, old_top, new_top)
            tail = tails[variant]
            if tail is None:
                continue
            seq = info.seq
            info.seq += 1
            if skip:
                continue
            data = head + str(seq).encode() + tail
            session._send_encoded(data, data, False)

    @staticmethod
    def _v1_top(state: _Symbol) -> tuple[tuple[str, Decimal] | None, tuple[str, Decimal] | None]:
        bid = max(state.bids, key=Decimal, default=None)
        ask = min(state.asks, key=Decimal, default=None)
        return (
            None if bid is None else (bid, state.bids[bid]),
            None if ask is None else (ask, state.asks[ask]),
        )

    @staticmethod
    def _v1_tail(
        variant: tuple[bool, bool, bool, bool],
        changes: list[dict[str, Any]],
        trades: list[dict[str, Any]],
        old_top: Any,
        new_top: Any,
    ) -> bytes | None:
        bids, offers, with_trades, top = variant
        events: list[dict[str, Any]] = list(trades) if with_trades else []
        if top:
            for side, wanted, old, new in (
                ("bid", bids, old_top[0], new_top[0]),
                ("ask", offers, old_top[1], new_top[1]),
            ):
                if wanted and new is not None and new != old:
                    before = old[1] if old is not None and old[0] == new[0] else Decimal(0)
                    events.append({
                        "type": "change", "side": side, "price": new[0],
                        "remaining": _trim(new[1]), "delta": _trim(new[1] - before),
                        "reason": "top-of-book",
                    })  # fmt: skip
        else:
            events += [c for c in changes if (bids if c["side"] == "bid" else offers)]
        if not events:
            return None
        return b',"events":' + dumps(events) + b"}"

    def _v1_open(self, session: FakeSession, state: _Symbol) -> None:
        query = session.query
        flags = {name: _flag(query.get(name)) for name in _V1_FLAGS}
        any_given = any(v is not None for v in flags.values())

        def wanted(name: str) -> bool:
            value = flags[name]
            return bool(value) if any_given else value is not False

        top = bool(_flag(query.get("top_of_book")))
        variant = (wanted("bids"), wanted("offers"), wanted("trades"), top)
        info = _V1(state, variant, bool(_flag(query.get("heartbeat"))))
        self._v1[session] = info
        # the initial book: every level with reason "initial" (top only with top_of_book)
        events: list[dict[str, Any]] = []
        for side, book, on in (("bid", state.bids, variant[0]), ("ask", state.asks, variant[1])):
            if not on:
                continue
            prices = sorted(book, key=Decimal, reverse=side == "bid")
            for price in prices[:1] if top else prices:
                amount = _trim(book[price])
                events.append({
                    "type": "change", "side": side, "price": price,
                    "remaining": amount, "delta": amount, "reason": "initial",
                })  # fmt: skip
        self._event_id += 1
        message = {"type": "update", "eventId": self._event_id, "socket_sequence": info.seq,
                   "events": events}  # fmt: skip
        info.seq += 1
        session.send(dumps(message))
        if info.heartbeat:
            self._arm_heartbeat(session, info)

    def _arm_heartbeat(self, session: FakeSession, info: _V1) -> None:
        def beat() -> None:
            self._calls.discard(call)
            info.hb_call = None
            if session.is_open and session in self._v1:
                self._v1_heartbeat(session, info)
                self._arm_heartbeat(session, info)

        call = self.reactor.callLater(self.heartbeat_interval, beat)
        info.hb_call = call
        self._calls.add(call)

    def _v1_heartbeat(self, session: FakeSession, info: _V1) -> bool:
        data = b'{"type":"heartbeat","socket_sequence":%d}' % info.seq
        if session._send_encoded(data, data, False):
            info.seq += 1
            return True
        return False

    # -- sessions --------------------------------------------------------------------

    def _on_session(self, session: FakeSession) -> None:
        path = session.path.rstrip("/")
        if path.startswith(V1_PATH + "/"):
            state = self._by_id[path[len(V1_PATH) + 1 :].split("/")[0].lower()]
            self._v1_open(session, state)
        else:
            raw = (session.query.get("snapshot") or ["0"])[-1]
            try:
                snapshot = int(raw)
            except ValueError:
                snapshot = 0
            conn_id = format(zlib.crc32(f"gemini:{self.seed}:{session.number}".encode()), "08x")
            self._current[session] = _Current(conn_id, snapshot)

        def gone(result: Any) -> Any:
            info = self._current.pop(session, None)
            if info is not None:
                for stream in info.streams:
                    self._streams.get(stream, {}).pop(session, None)
            v1 = self._v1.pop(session, None)
            if v1 is not None and v1.hb_call is not None:
                self._calls.discard(v1.hb_call)
                if v1.hb_call.active():
                    v1.hb_call.cancel()
            return result

        session.closed.addBoth(gone)

    def _on_binary(self, session: FakeSession, payload: bytes) -> None:
        if session in self._current:
            self.server.reply(session, self._error(None, "Invalid request: binary frame"))

    @staticmethod
    def _error(request_id: Any, msg: str, code: int = 400) -> dict[str, Any]:
        """An error reply (*guess*: ``{"id", "error": {"code", "msg"}}``)."""
        return {"id": request_id, "error": {"code": code, "msg": msg}}

    def _on_text(self, session: FakeSession, message: Any) -> None:
        info = self._current.get(session)
        if info is None:
            return  # the v1 socket takes no requests
        if not isinstance(message, dict):
            self.server.reply(session, self._error(None, "Invalid JSON"))
            return
        request_id = message.get("id")
        method = message.get("method")
        params = message.get("params")
        if not isinstance(method, str):
            self.server.reply(session, self._error(request_id, "Missing method"))
            return
        method = method.lower()
        if method in ("subscribe", "unsubscribe"):
            self._subscription(session, info, request_id, method, params)
        elif method == "list_subscriptions":
            self.server.reply(session, {"id": request_id, "result": list(info.streams)})
        elif method == "ping":
            self.server.reply(session, {"id": request_id, "result": {}})
        elif method == "time":
            now_ms = int(self.clock.seconds() * 1000)
            self.server.reply(session, {"id": request_id, "result": {"serverTime": now_ms}})
        elif method == "conninfo":
            self.server.reply(session, {"id": request_id, "result": {
                "connectionId": info.conn_id, "subscriptions": len(info.streams),
                "snapshot": info.snapshot,
            }})  # fmt: skip
        elif method == "depth":
            self._depth_request(session, request_id, params)
        else:
            self.server.reply(session, self._error(request_id, f"Unknown method: {method}"))

    def _subscription(
        self, session: FakeSession, info: _Current, request_id: Any, method: str, params: Any
    ) -> None:
        if (
            not isinstance(params, list)
            or not params
            or not all(isinstance(p, str) for p in params)
        ):
            self.server.reply(session, self._error(request_id, "Invalid params"))
            return
        for stream in params:
            match = _STREAM_RE.match(stream)
            if match is None or match["sym"] not in self._by_id:
                self.server.reply(session, self._error(request_id, f"Invalid stream: {stream}"))
                return
        if method == "unsubscribe":
            for stream in params:
                info.streams.pop(stream, None)
                session.subscriptions.discard(stream)
                self._streams.get(stream, {}).pop(session, None)
            self.server.reply(session, {"id": request_id, "result": None})
            return

        def activate() -> None:
            if not session.is_open:
                return
            session.send(dumps({"id": request_id, "result": None}))
            for stream in params:
                if stream in info.streams:
                    continue
                info.streams[stream] = None
                session.subscriptions.add(stream)
                self._streams.setdefault(stream, {})[session] = None
                self._initial_push(session, info, stream)

        delay = self.server.reply_delay
        if delay > 0:

            def fire() -> None:
                self._calls.discard(call)
                activate()

            call = self.reactor.callLater(delay, fire)
            self._calls.add(call)
        else:
            activate()

    def _snapshot_id(self, state: _Symbol) -> int | None:
        """The update id a snapshot is taken at: ``None`` (now) unless a stale fault waits."""
        if not state.stale:
            return None
        behind = state.stale.popleft()
        recent = state.recent
        return recent[max(0, len(recent) - 1 - behind)]

    def _initial_push(self, session: FakeSession, info: _Current, stream: str) -> None:
        match = _STREAM_RE.match(stream)
        assert match is not None
        state = self._by_id[match["sym"]]
        kind = match["kind"]
        if kind.startswith("depth") and match["levels"] is None:
            if info.snapshot == 0:
                return
            limit = None if info.snapshot < 0 else info.snapshot
            uid = self._snapshot_id(state)
            if uid is None:
                bids, asks, uid = self.market.book(state.symbol, limit)
            else:
                bids, asks = self.market.book_at(state.symbol, uid, limit)
            # *guess*: the partial-depth shape plus the stream's symbol
            session.send(dumps({
                "lastUpdateId": uid + self.update_id_offset, "s": state.low,
                "bids": self._levels(state, bids),
                "asks": self._levels(state, asks),
            }))  # fmt: skip

    def _depth_request(self, session: FakeSession, request_id: Any, params: Any) -> None:
        """``depth``: ``params`` ``{"symbol": "btcusd", "limit": N}`` (or ``[symbol, N]``)."""
        symbol: Any = None
        limit: Any = None
        if isinstance(params, dict):
            symbol, limit = params.get("symbol"), params.get("limit")
        elif isinstance(params, list) and params:
            symbol = params[0]
            limit = params[1] if len(params) > 1 else None
        state = self._by_id.get(symbol.lower()) if isinstance(symbol, str) else None
        if state is None:
            self.server.reply(session, self._error(request_id, f"Invalid symbol: {symbol}"))
            return
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 1):  # fmt: skip
            self.server.reply(session, self._error(request_id, f"Invalid limit: {limit}"))
            return
        uid = self._snapshot_id(state)
        if uid is None:
            bids, asks, uid = self.market.book(state.symbol, limit)
        else:
            bids, asks = self.market.book_at(state.symbol, uid, limit)
        self.server.reply(session, {"id": request_id, "result": {
            "lastUpdateId": uid + self.update_id_offset, "bids": self._levels(state, bids),
            "asks": self._levels(state, asks),
        }})  # fmt: skip

    # -- REST ------------------------------------------------------------------------

    def _register_routes(self) -> None:
        rest = self.server.rest
        rest.route("GET", "/v1/symbols", self._endpoint(lambda s, a: self._rest_symbols()))
        per_symbol: dict[str, Callable[[_Symbol, dict[str, str]], Any]] = {
            "/v1/symbols/details/{}": self._rest_details,
            "/v1/book/{}": self._rest_book,
            "/v1/trades/{}": self._rest_trades,
            "/v1/pubticker/{}": self._rest_pubticker,
            "/v2/ticker/{}": self._rest_ticker_v2,
        }
        for state in self._symbols.values():
            for name in {state.low, state.id}:
                for template, handler in per_symbol.items():
                    rest.route("GET", template.format(name), self._endpoint(handler, state))
                for frame in _CANDLE_MS:
                    rest.route(
                        "GET", f"/v2/candles/{name}/{frame}",
                        self._endpoint(self._candle_handler(frame), state),
                    )  # fmt: skip

    def _endpoint(
        self, handler: Callable[[Any, dict[str, str]], Any], state: _Symbol | None = None
    ) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            if not self._allow():
                self.rejected_429 += 1
                return Response(
                    429, {"result": "error", "reason": "RateLimit",
                          "message": "Rate limit exceeded"},
                    {"Retry-After": str(max(1, int(self.rest_window)))},
                )  # fmt: skip
            args = {
                k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                for k, v in (request.args or {}).items()
                if v
            }
            try:
                return Response(200, handler(state, args))
            except _RestError as e:
                return Response(
                    e.status, {"result": "error", "reason": e.reason, "message": e.message}
                )

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

    @staticmethod
    def _int_arg(args: dict[str, str], name: str, default: int) -> int:
        value = args.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise _RestError(400, "InvalidParameter", f"Invalid {name}: {value}") from None
        if number < 0:
            raise _RestError(400, "InvalidParameter", f"Invalid {name}: {value}")
        return number

    def _rest_symbols(self) -> Any:
        return [s.low for s in self._symbols.values()]

    def _rest_details(self, state: _Symbol, args: dict[str, str]) -> Any:
        info = self.market.info(state.symbol)
        return {
            "symbol": state.id, "base_currency": info.base, "quote_currency": info.quote,
            "tick_size": float(info.amount_step), "quote_increment": float(info.tick_size),
            "min_order_size": info.amount_step, "status": "open", "wrap_enabled": False,
            "product_type": "spot", "contract_type": "vanilla",
            "contract_price_currency": info.quote,
        }  # fmt: skip

    def _rest_book(self, state: _Symbol, args: dict[str, str]) -> Any:
        """``/v1/book``: ``limit_bids``/``limit_asks`` (default 50, 0 = all); no update id."""
        limit_bids = self._int_arg(args, "limit_bids", BOOK_DEFAULT_LIMIT) or None
        limit_asks = self._int_arg(args, "limit_asks", BOOK_DEFAULT_LIMIT) or None
        bids, _asks, _ = self.market.book(state.symbol, limit_bids)
        _bids, asks, _ = self.market.book(state.symbol, limit_asks)
        stamp = str(state.ts // 1000)

        def rows(levels: Sequence[Level]) -> list[dict[str, str]]:
            return [{"price": self._price(state, p), "amount": _trim(Decimal(a)),
                     "timestamp": stamp} for p, a in levels]  # fmt: skip

        return {"bids": rows(bids), "asks": rows(asks)}

    def _rest_trades(self, state: _Symbol, args: dict[str, str]) -> Any:
        """``/v1/trades``: newest first; ``limit_trades`` (default 50, most 500),
        ``since_tid``, ``timestamp`` (s or ms)."""
        limit = min(self._int_arg(args, "limit_trades", 50) or 50, 500)
        since_tid = self._int_arg(args, "since_tid", -1)
        since = self._int_arg(args, "timestamp", 0)
        if since and since < 10**11:
            since *= 1000
        rows = [t for t in state.trades if t.id > since_tid and t.timestamp >= since]
        rows.reverse()
        return [
            {"timestamp": t.timestamp // 1000, "timestampms": t.timestamp, "tid": t.id,
             "price": self._price(state, t.price), "amount": _trim(Decimal(t.amount)),
             "exchange": "gemini", "type": t.side}
            for t in rows[:limit]
        ]  # fmt: skip

    def _day_trades(self, state: _Symbol) -> list[SimTrade]:
        cutoff = state.ts - _DAY_MS
        return [t for t in state.trades if t.timestamp > cutoff]

    def _rest_pubticker(self, state: _Symbol, args: dict[str, str]) -> Any:
        bids, asks, _ = self.market.book(state.symbol, 1)
        trades = self._day_trades(state)
        info = self.market.info(state.symbol)
        base = sum((Decimal(t.amount) for t in trades), Decimal(0))
        quote = sum((Decimal(t.amount) * Decimal(t.price) for t in trades), Decimal(0))
        last = (
            self._price(state, trades[-1].price)
            if trades
            else (self._price(state, bids[0][0]) if bids else "0")
        )
        return {
            "bid": self._price(state, bids[0][0]) if bids else "0",
            "ask": self._price(state, asks[0][0]) if asks else "0",
            "volume": {info.base: _trim(base), info.quote: _trim(quote), "timestamp": state.ts},
            "last": last,
        }

    def _rest_ticker_v2(self, state: _Symbol, args: dict[str, str]) -> Any:
        bids, asks, _ = self.market.book(state.symbol, 1)
        trades = self._day_trades(state)
        prices = [Decimal(t.price) for t in trades]
        bid = self._price(state, bids[0][0]) if bids else "0"
        first = trades[0].price if trades else None
        close = trades[-1].price if trades else None
        hourly: list[str] = []
        for hour in range(24):
            end = state.ts - hour * 3_600_000
            inside = [t for t in trades if t.timestamp <= end]
            hourly.append(self._price(state, inside[-1].price) if inside else bid)
        return {
            "symbol": state.id,
            "open": self._price(state, first) if first else bid,
            "high": _trim(max(prices)) if prices else bid,
            "low": _trim(min(prices)) if prices else bid,
            "close": self._price(state, close) if close else bid,
            "changes": hourly,
            "bid": bid,
            "ask": self._price(state, asks[0][0]) if asks else "0",
        }

    def _candle(self, state: _Symbol, trade: SimTrade) -> None:
        start = trade.timestamp // 60_000 * 60_000
        price, amount = Decimal(trade.price), Decimal(trade.amount)
        row = state.candles.get(start)
        if row is None:
            state.candles[start] = [price, price, price, price, amount]
            if len(state.candles) > 10_000:
                del state.candles[min(state.candles)]
        else:
            row[1] = max(row[1], price)
            row[2] = min(row[2], price)
            row[3] = price
            row[4] += amount

    def _candle_handler(self, frame: str) -> Callable[[_Symbol, dict[str, str]], Any]:
        length = _CANDLE_MS[frame]

        def handler(state: _Symbol, args: dict[str, str]) -> Any:
            """``/v2/candles``: rows ``[time_ms, open, high, low, close, volume]`` as
            numbers, newest first, built from the fake's trades."""
            merged: dict[int, list[Decimal]] = {}
            for start in sorted(state.candles):
                o, h, lo, c, v = state.candles[start]
                bucket = start // length * length
                row = merged.get(bucket)
                if row is None:
                    merged[bucket] = [o, h, lo, c, v]
                else:
                    row[1], row[2], row[3] = max(row[1], h), min(row[2], lo), c
                    row[4] += v
            return [[t, *(float(x) for x in merged[t])] for t in sorted(merged, reverse=True)]

        return handler
