"""Binance Spot adapter: URLs, stream names, wire rules, message parsing, REST descriptions.

Sits between the transport (which hands over decoded JSON and sends the
control frames built here) and the state layer (which receives the typed
events from :mod:`txexchange.events`).  Everything is pure: requests are
described as :class:`~txexchange.adapters.rest.RestRequest` values and
responses are parsed from already-decoded JSON; the client layer does the I/O.
The local-book procedure lives in :mod:`txexchange.adapters.binance_book`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

import attrs

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters.binance_book import (
    ApplyDelta,
    ApplySnapshot,
    BinanceBookSync,
    Buffer,
    Ignore,
    NeedSnapshot,
    Resync,
    SnapshotTooOld,
    SyncAction,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import DecodeError, dumps, loads
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DDoSProtection,
    DuplicateOrderId,
    ExchangeError,
    ExchangeNotAvailable,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    MalformedMessage,
    OrderNotFound,
    PermissionDenied,
    RateLimitExceeded,
    RequestTimeout,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.transport.rules import Compression, ControlReply, Heartbeat

__all__ = [
    "DEFAULT_URLS",
    "EXCHANGE",
    "KLINE_INTERVALS",
    "MAX_STREAMS_PER_CONNECTION",
    "RETIRED_STREAMS",
    "ApplyDelta",
    "ApplySnapshot",
    "BinanceBookSync",
    "BinanceParser",
    "BinanceWireRules",
    "Buffer",
    "Ignore",
    "NeedSnapshot",
    "ParseResult",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
    "agg_trade_topic",
    "agg_trades_request",
    "all_mini_tickers_topic",
    "all_tickers_topic",
    "book_ticker_topic",
    "check_stream_name",
    "combined_stream_url",
    "depth_request",
    "depth_topic",
    "depth_weight",
    "error_class",
    "exchange_info_request",
    "kline_topic",
    "klines_request",
    "market_index",
    "mini_ticker_topic",
    "parse_depth_snapshot",
    "parse_klines",
    "parse_list_subscriptions",
    "parse_markets",
    "parse_message",
    "parse_rest_error",
    "parse_rest_trades",
    "parse_ticker_24hr",
    "partial_depth_topic",
    "resolve_urls",
    "retry_after",
    "ticker_24hr_request",
    "ticker_topic",
    "trade_topic",
    "trades_request",
    "used_weight",
]

EXCHANGE = "binance"

# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------

#: Production endpoints.  ``ws``: market streams (the combined ``/stream`` path
#: is appended); ``rest``: REST API; ``ws_api``: the WebSocket API.
DEFAULT_URLS: Mapping[str, str] = {
    "ws": "wss://stream.binance.com:9443",
    "rest": "https://api.binance.com",
    "ws_api": "wss://ws-api.binance.com:443/ws-api/v3",
}

_URL_SCHEMES = {
    "ws": ("ws://", "wss://"),
    "rest": ("http://", "https://"),
    "ws_api": ("ws://", "wss://"),
}

#: Path of the combined-stream endpoint, where every event arrives wrapped as
#: ``{"stream": name, "data": event}``.
COMBINED_PATH = "/stream"


def resolve_urls(urls: Mapping[str, str] | None = None) -> dict[str, str]:
    """:data:`DEFAULT_URLS` with the user's ``urls=`` overrides applied.

    Unknown keys and values with the wrong scheme raise
    :class:`~txexchange.errors.BadRequest` naming the valid keys.  A trailing
    ``/`` is removed.
    """
    resolved = dict(DEFAULT_URLS)
    if not urls:
        return resolved
    valid = ", ".join(repr(k) for k in DEFAULT_URLS)
    for key, value in urls.items():
        if key not in DEFAULT_URLS:
            raise BadRequest(f"unknown Binance URL key {key!r}; valid keys are {valid}")
        if not isinstance(value, str) or not value.lower().startswith(_URL_SCHEMES[key]):
            schemes = " or ".join(_URL_SCHEMES[key])
            raise BadRequest(f"Binance URL {key!r} must start with {schemes}, got {value!r}")
        resolved[key] = value.rstrip("/")
    return resolved


def combined_stream_url(ws_base: str, streams: Sequence[str] = ()) -> str:
    """URL of the combined-stream endpoint, optionally subscribing ``streams`` up front."""
    url = ws_base.rstrip("/") + COMBINED_PATH
    if streams:
        for name in streams:
            check_stream_name(name)
        url += "?streams=" + "/".join(streams)
    return url


# ---------------------------------------------------------------------------
# Stream names
# ---------------------------------------------------------------------------

KLINE_INTERVALS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
    "1d", "3d", "1w", "1M",
)  # fmt: skip
_KLINE_INTERVAL_SET = frozenset(KLINE_INTERVALS)
#: the only documented kline time-zone suffix
_KLINE_OFFSETS = frozenset({"+08:00"})
_DEPTH_SPEEDS = (100, 1000)
_PARTIAL_LEVELS = (5, 10, 20)

#: Streams Binance has retired, with what to use instead.
RETIRED_STREAMS: Mapping[str, str] = {
    "!ticker@arr": (
        "the all-market ticker stream '!ticker@arr' was retired on 2026-03-26; "
        "subscribe to per-symbol '<symbol>@ticker' streams or to '!miniTicker@arr'"
    ),
}

MAX_STREAMS_PER_CONNECTION = 1024


def check_stream_name(name: str) -> str:
    """Return ``name`` if Binance still serves it; :class:`BadRequest` otherwise."""
    retired = RETIRED_STREAMS.get(name)
    if retired is not None:
        raise BadRequest(retired)
    if not isinstance(name, str) or not name or any(c in name for c in ' /\t\r\n"'):
        raise BadRequest(f"invalid Binance stream name {name!r}")
    return name


def _stream_symbol(market_id: str) -> str:
    if not isinstance(market_id, str) or not market_id:
        raise BadRequest(f"invalid Binance market id {market_id!r}")
    if any(c in market_id for c in '@/ \t\r\n"!'):
        raise BadRequest(f"invalid Binance market id {market_id!r}")
    return market_id.lower()


def _speed_suffix(speed_ms: int) -> str:
    if speed_ms not in _DEPTH_SPEEDS:
        raise BadRequest(f"Binance depth speed must be 100 or 1000 ms, got {speed_ms!r}")
    return "@100ms" if speed_ms == 100 else ""


def depth_topic(market_id: str, speed_ms: int = 100) -> str:
    """Diff-depth stream: ``btcusdt@depth@100ms`` (``speed_ms=1000``: ``btcusdt@depth``)."""
    return f"{_stream_symbol(market_id)}@depth{_speed_suffix(speed_ms)}"


def partial_depth_topic(market_id: str, levels: int = 20, speed_ms: int = 1000) -> str:
    """Top-``levels`` book stream (5, 10 or 20): ``btcusdt@depth20`` / ``btcusdt@depth5@100ms``."""
    if levels not in _PARTIAL_LEVELS:
        raise BadRequest(f"Binance partial depth levels must be 5, 10 or 20, got {levels!r}")
    return f"{_stream_symbol(market_id)}@depth{levels}{_speed_suffix(speed_ms)}"


def trade_topic(market_id: str) -> str:
    """Raw trades: ``btcusdt@trade``."""
    return f"{_stream_symbol(market_id)}@trade"


def agg_trade_topic(market_id: str) -> str:
    """Aggregate trades: ``btcusdt@aggTrade``."""
    return f"{_stream_symbol(market_id)}@aggTrade"


def kline_topic(market_id: str, interval: str, *, utc_offset: str | None = None) -> str:
    """Candles: ``btcusdt@kline_1m``; ``utc_offset="+08:00"`` aligns buckets to UTC+8."""
    if interval not in _KLINE_INTERVAL_SET:
        raise BadRequest(
            f"unsupported Binance kline interval {interval!r}; valid: {' '.join(KLINE_INTERVALS)}"
        )
    topic = f"{_stream_symbol(market_id)}@kline_{interval}"
    if utc_offset is not None:
        if utc_offset not in _KLINE_OFFSETS:
            raise BadRequest(f"Binance kline time zone must be '+08:00', got {utc_offset!r}")
        topic += "@" + utc_offset
    return topic


def ticker_topic(market_id: str) -> str:
    """24 h rolling ticker: ``btcusdt@ticker``."""
    return f"{_stream_symbol(market_id)}@ticker"


def mini_ticker_topic(market_id: str) -> str:
    """24 h mini ticker: ``btcusdt@miniTicker``."""
    return f"{_stream_symbol(market_id)}@miniTicker"


def all_mini_tickers_topic() -> str:
    """Mini tickers of every market that changed: ``!miniTicker@arr``."""
    return "!miniTicker@arr"


def all_tickers_topic() -> str:
    """Always raises: ``!ticker@arr`` is retired (the error names the replacement)."""
    return check_stream_name("!ticker@arr")


def book_ticker_topic(market_id: str) -> str:
    """Best bid/ask in real time: ``btcusdt@bookTicker``."""
    return f"{_stream_symbol(market_id)}@bookTicker"


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------


@attrs.frozen
class BinanceWireRules:
    """:class:`~txexchange.transport.rules.WireRules` for the combined market-stream connection.

    Connect to ``combined_stream_url(urls["ws"])``; subscriptions are made with
    ``SUBSCRIBE``/``UNSUBSCRIBE`` by id and answered with
    ``{"result": null, "id": n}`` or ``{"error": {"code", "msg"}, "id": n}``.
    The server pings every 20 s and Autobahn answers, so there is no
    application heartbeat.  Binance allows 5 incoming messages per second
    (pongs included): ``control_rate`` leaves a margin.
    """

    control_rate: float = 4.5
    max_topics_per_message: int = 100
    max_topics_per_connection: int | None = MAX_STREAMS_PER_CONNECTION
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = None
    max_connection_age: float | None = 24 * 60 * 60.0
    path: str = COMBINED_PATH

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"method":"SUBSCRIBE","params":[...],"id":n}``."""
        return self._control("SUBSCRIBE", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"method":"UNSUBSCRIBE","params":[...],"id":n}``."""
        return self._control("UNSUBSCRIBE", topics, request_id)

    def list_subscriptions_message(self, request_id: int) -> bytes:
        """``{"method":"LIST_SUBSCRIPTIONS","id":n}``; see :func:`parse_list_subscriptions`."""
        return dumps({"method": "LIST_SUBSCRIPTIONS", "id": request_id})

    def _control(self, method: str, topics: Sequence[str], request_id: int) -> bytes:
        params = [check_stream_name(t) for t in topics]
        if not params:
            raise BadRequest(f"{method} needs at least one stream")
        if len(params) > self.max_topics_per_message:
            raise BadRequest(
                f"{method} of {len(params)} streams exceeds {self.max_topics_per_message} "
                "per message"
            )
        return dumps({"method": method, "params": params, "id": request_id})

    def control_reply(self, message: Any) -> ControlReply | None:
        """A :class:`ControlReply` if ``message`` answers a control request, else ``None``."""
        return _control_reply(message)

    def overlap_key(self, raw: bytes) -> Hashable:
        """Binance sends the same bytes for the same event on every connection."""
        return raw


def _control_reply(message: Any) -> ControlReply | None:
    if type(message) is not dict or "stream" in message:
        return None
    if "error" in message:
        error = message["error"]
        if isinstance(error, dict):
            text = f"{error.get('msg', 'error')} (code {error.get('code')})"
        else:
            text = str(error)
        return ControlReply(message.get("id"), False, text)
    if "result" in message and "id" in message:
        return ControlReply(message["id"], True)
    return None


def parse_list_subscriptions(message: Any) -> list[str]:
    """The stream names in a ``LIST_SUBSCRIPTIONS`` answer."""
    result = message.get("result") if isinstance(message, dict) else None
    if not isinstance(result, list) or not all(isinstance(s, str) for s in result):
        raise MalformedMessage(f"not a LIST_SUBSCRIPTIONS answer: {message!r:.200}")
    return result


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def parse_markets(exchange_info: Any) -> dict[str, Market]:
    """Unified markets from ``GET /api/v3/exchangeInfo``, keyed by ``BASE/QUOTE``.

    ``active`` is ``status == "TRADING"``; ``tick_size`` and ``amount_step``
    come from the ``PRICE_FILTER`` and ``LOT_SIZE`` filters.  A malformed
    document raises :class:`~txexchange.errors.MalformedMessage`.
    """
    symbols = exchange_info.get("symbols") if isinstance(exchange_info, dict) else None
    if not isinstance(symbols, list):
        raise MalformedMessage("exchangeInfo without a 'symbols' list")
    markets: dict[str, Market] = {}
    for entry in symbols:
        try:
            market_id = entry["symbol"]
            base = entry["baseAsset"]
            quote = entry["quoteAsset"]
            status = entry.get("status")
            filters = entry.get("filters") or ()
        except (KeyError, TypeError, AttributeError) as e:
            raise MalformedMessage(f"exchangeInfo entry without {e}: {entry!r:.200}") from None
        if not all(isinstance(v, str) and v for v in (market_id, base, quote)):
            raise MalformedMessage(f"exchangeInfo symbol entry with bad names: {entry!r:.200}")
        tick = step = None
        for f in filters:
            if not isinstance(f, dict):
                continue
            kind = f.get("filterType")
            if kind == "PRICE_FILTER":
                tick = f.get("tickSize")
            elif kind == "LOT_SIZE":
                step = f.get("stepSize")
        symbol = f"{base}/{quote}"
        if symbol in markets:
            continue
        markets[symbol] = Market(
            symbol=symbol,
            id=market_id,
            base=base,
            quote=quote,
            active=status == "TRADING",
            tick_size=tick if isinstance(tick, str) else None,
            amount_step=step if isinstance(step, str) else None,
            info=entry,
        )
    return markets


def market_index(exchange_info: Any) -> MarketIndex:
    """:func:`parse_markets` wrapped in a :class:`MarketIndex`."""
    return MarketIndex.from_markets(parse_markets(exchange_info).values(), EXCHANGE)


# ---------------------------------------------------------------------------
# Messages (the per-message hot path)
# ---------------------------------------------------------------------------

Event = BookDelta | BookSnapshot | Trade | Candle | Ticker
#: What :meth:`BinanceParser.parse` returns: events (usually one), the answer
#: to a control request, a shutdown notice, or an :class:`Unknown` marker.
ParseResult = list[Event] | ControlReply | ServerShutdown | Unknown

_Handler = Callable[[Any, Any, Any], Any]
_Route = tuple[_Handler, Any, Any]


def _bad(what: str, data: Any) -> MalformedMessage:
    return MalformedMessage(f"Binance {what}: {data!r:.300}")


def _depth_update(d: Any, symbol: str, _arg: Any) -> list[Event]:
    first = d["U"]
    last = d["u"]
    bids = d["b"]
    asks = d["a"]
    if (
        type(first) is not int
        or type(last) is not int
        or first > last
        or type(bids) is not list
        or type(asks) is not list
    ):
        raise _bad("depthUpdate with bad U/u/b/a", d)
    return [BookDelta(symbol, bids, asks, last, first, None, d.get("E"))]


def _partial_depth(d: Any, symbol: str, _arg: Any) -> list[Event]:
    nonce = d["lastUpdateId"]
    bids = d["bids"]
    asks = d["asks"]
    if type(nonce) is not int or type(bids) is not list or type(asks) is not list:
        raise _bad("partial depth with bad lastUpdateId/bids/asks", d)
    return [BookSnapshot(symbol, bids, asks, nonce, None)]


def _trade(d: Any, symbol: str, _arg: Any) -> list[Event]:
    return [_make_trade(d, symbol, d["t"])]


def _agg_trade(d: Any, symbol: str, _arg: Any) -> list[Event]:
    return [_make_trade(d, symbol, d["a"])]


def _make_trade(d: Any, symbol: str, trade_id: Any) -> Trade:
    maker = d["m"]
    price = d["p"]
    amount = d["q"]
    ts = d["T"]
    if (
        type(maker) is not bool
        or type(price) is not str
        or type(amount) is not str
        or type(ts) is not int
        or type(trade_id) is not int
    ):
        raise _bad("trade with bad fields", d)
    # m: the buyer is the maker, so the aggressor (taker) sold.
    return Trade(symbol, str(trade_id), ts, price, amount, "sell" if maker else "buy", "taker")


def _kline(d: Any, symbol: str, timeframe: str) -> list[Event]:
    k = d["k"]
    closed = k["x"]
    start = k["t"]
    if type(closed) is not bool or type(start) is not int:
        raise _bad("kline with bad t/x", d)
    values = (k["o"], k["h"], k["l"], k["c"], k["v"])
    for v in values:
        if type(v) is not str:
            raise _bad("kline with non-string prices", d)
    o, h, lo, c, v = values
    return [Candle(symbol, timeframe, start, o, h, lo, c, v, closed)]


def _str_or_none(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None or type(value) is str:
        return value
    raise _bad(f"ticker field {key!r} is not a string", d)


#: Ticker field -> key, in the ``24hrTicker`` stream event and in the REST answer.
_TICKER_STREAM_KEYS = {
    "bid": "b", "bid_volume": "B", "ask": "a", "ask_volume": "A", "last": "c",
    "open": "o", "high": "h", "low": "l", "base_volume": "v", "quote_volume": "q",
    "change": "p", "percentage": "P", "vwap": "w",
}  # fmt: skip
_TICKER_REST_KEYS = {
    "bid": "bidPrice", "bid_volume": "bidQty", "ask": "askPrice", "ask_volume": "askQty",
    "last": "lastPrice", "open": "openPrice", "high": "highPrice", "low": "lowPrice",
    "base_volume": "volume", "quote_volume": "quoteVolume", "change": "priceChange",
    "percentage": "priceChangePercent", "vwap": "weightedAvgPrice",
}  # fmt: skip


def _ticker_from(
    d: Mapping[str, Any], symbol: str, time_key: str, keys: Mapping[str, str]
) -> Ticker:
    ts = d.get(time_key)
    if ts is not None and type(ts) is not int:
        raise _bad(f"ticker with bad {time_key}", d)
    fields = {name: _str_or_none(d, key) for name, key in keys.items()}
    return Ticker(symbol, timestamp=ts, close=fields["last"], **fields)


def _ticker(d: Any, symbol: str, _arg: Any) -> list[Event]:
    return [_ticker_from(d, symbol, "E", _TICKER_STREAM_KEYS)]


def _mini_ticker(d: Any, symbol: str, _arg: Any) -> list[Event]:
    ts = d.get("E")
    if ts is not None and type(ts) is not int:
        raise _bad("miniTicker with bad E", d)
    s = _str_or_none
    last = s(d, "c")
    return [
        Ticker(
            symbol,
            timestamp=ts,
            last=last,
            open=s(d, "o"),
            high=s(d, "h"),
            low=s(d, "l"),
            close=last,
            base_volume=s(d, "v"),
            quote_volume=s(d, "q"),
        )
    ]


def _book_ticker(d: Any, symbol: str, _arg: Any) -> list[Event]:
    bid = d["b"]
    bid_qty = d["B"]
    ask = d["a"]
    ask_qty = d["A"]
    if not (type(bid) is type(bid_qty) is type(ask) is type(ask_qty) is str):
        raise _bad("bookTicker with bad b/B/a/A", d)
    return [Ticker(symbol, bid=bid, bid_volume=bid_qty, ask=ask, ask_volume=ask_qty)]


def _shutdown(d: Any, _symbol: Any, _arg: Any) -> ServerShutdown:
    ts = d.get("E") if isinstance(d, dict) else None
    return ServerShutdown(EXCHANGE, ts if type(ts) is int else None, "serverShutdown")


def _unknown(d: Any, _symbol: Any, reason: str) -> Unknown:
    return Unknown(reason, d)


# Handlers for the part of a stream name after "<symbol>@".
_KIND_HANDLERS: dict[str, _Handler] = {
    "depth": _depth_update,
    "depth@100ms": _depth_update,
    "depth@1000ms": _depth_update,
    "trade": _trade,
    "aggTrade": _agg_trade,
    "ticker": _ticker,
    "miniTicker": _mini_ticker,
    "bookTicker": _book_ticker,
}
for _levels in _PARTIAL_LEVELS:
    for _suffix in ("", "@100ms", "@1000ms"):
        _KIND_HANDLERS[f"depth{_levels}{_suffix}"] = _partial_depth

# Handlers for raw (non-combined) events, by their "e".
_EVENT_HANDLERS: dict[str, _Handler] = {
    "depthUpdate": _depth_update,
    "trade": _trade,
    "aggTrade": _agg_trade,
    "24hrTicker": _ticker,
    "24hrMiniTicker": _mini_ticker,
}

_MAX_ROUTES = 8192


class BinanceParser:
    """Turns decoded Binance stream messages into typed outcomes.

    One parser per :class:`MarketIndex`.  Combined-stream messages are routed
    by their stream name (partial depth and bookTicker carry no event type);
    the route of each stream name is worked out once and cached.  Raw
    (``/ws``) events are routed by ``e``.

    :meth:`parse` returns a list of events, a
    :class:`~txexchange.transport.rules.ControlReply`, a
    :class:`~txexchange.adapters.ServerShutdown` or an
    :class:`~txexchange.adapters.Unknown`; a message of the wrong shape raises
    :class:`~txexchange.errors.MalformedMessage` and nothing else.  Level
    lists are the exchange's own lists, passed through without copying.
    """

    __slots__ = ("_by_stream_id", "_routes", "index")

    def __init__(self, index: MarketIndex) -> None:
        self.index = index
        self._by_stream_id: dict[str, str] = {m.id.lower(): m.symbol for m in index}
        self._routes: dict[str, _Route] = {}

    def parse(self, message: Any) -> ParseResult:
        """Parse one decoded message (see the class docstring)."""
        if type(message) is dict:
            stream = message.get("stream")
            if stream is not None:
                # a stream name that is not a string (a list...) may not even hash
                route = self._routes.get(stream) if type(stream) is str else None
                if route is None:
                    route = self._route(stream)
                handler, symbol, arg = route
                try:
                    return handler(message["data"], symbol, arg)
                except MalformedMessage:
                    raise
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                    raise _bad(f"{stream} message missing or bad {e}", message) from None
            reply = _control_reply(message)
            if reply is not None:
                return reply
            return self._parse_raw(message)
        if type(message) is list:
            return self._parse_raw_list(message)
        raise _bad("message is not a JSON object", message)

    def depth_fields(self, message: Any) -> tuple[str, int, int, list[Any], list[Any], Any] | None:
        """``(symbol, U, u, bids, asks, E)`` of a well-formed combined-stream depth diff.

        The hot path's shortcut around :meth:`parse`, building no event.  For
        anything else (other streams, a stream not routed yet, a malformed
        diff) the answer is ``None`` and :meth:`parse` gives the verdict.
        """
        if type(message) is not dict:
            return None
        stream = message.get("stream")
        if type(stream) is not str:
            return None
        route = self._routes.get(stream)
        if route is None or route[0] is not _depth_update:
            return None
        d = message.get("data")
        if type(d) is not dict:
            return None
        first = d.get("U")
        last = d.get("u")
        bids = d.get("b")
        asks = d.get("a")
        if (
            type(first) is not int
            or type(last) is not int
            or first > last
            or type(bids) is not list
            or type(asks) is not list
        ):
            return None
        return (route[1], first, last, bids, asks, d.get("E"))

    # -- combined streams ----------------------------------------------------

    def _route(self, stream: Any) -> _Route:
        if type(stream) is not str:
            raise _bad("stream name is not a string", stream)
        route = self._compute_route(stream)
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[stream] = route
        return route

    def _compute_route(self, stream: str) -> _Route:
        if stream == "!serverShutdown":
            return (_shutdown, None, None)
        if stream == "!miniTicker@arr":
            return (self._mini_ticker_arr, None, None)
        if stream in RETIRED_STREAMS:
            return (_unknown, None, f"retired stream {stream}")
        prefix, at, kind = stream.partition("@")
        if not at:
            return (_unknown, None, f"unrecognised stream {stream!r}")
        symbol = self._by_stream_id.get(prefix)
        if symbol is None:
            return (_unknown, None, f"stream {stream!r} is for a market not in the market list")
        handler = _KIND_HANDLERS.get(kind)
        if handler is not None:
            return (handler, symbol, None)
        if kind.startswith("kline_"):
            interval, _, offset = kind[6:].partition("@")
            if interval in _KLINE_INTERVAL_SET and (not offset or offset in _KLINE_OFFSETS):
                # UTC+8 candles get their own timeframe so they never merge with UTC ones.
                timeframe = f"{interval}@{offset}" if offset else interval
                return (_kline, symbol, timeframe)
        return (_unknown, None, f"no parser for stream {stream!r}")

    def _mini_ticker_arr(self, data: Any, _symbol: Any, _arg: Any) -> list[Event]:
        if type(data) is not list:
            raise _bad("!miniTicker@arr data is not a list", data)
        by_id = self.index.by_id
        events: list[Event] = []
        for item in data:
            market = by_id.get(item["s"])
            if market is not None:
                events.extend(_mini_ticker(item, market.symbol, None))
        return events

    # -- raw streams -----------------------------------------------------------

    def _parse_raw(self, d: dict[str, Any]) -> ParseResult:
        kind = d.get("e")
        try:
            if kind is None:
                if "lastUpdateId" in d:
                    return Unknown("partial depth on a raw stream names no symbol; use /stream", d)
                if "u" in d and "s" in d and "b" in d and "a" in d:
                    return self._with_symbol(_book_ticker, d, None)
                return Unknown("message without event type", d)
            if kind == "serverShutdown":
                return _shutdown(d, None, None)
            if kind == "kline":
                return self._with_symbol(_kline, d, d["k"]["i"])
            handler = _EVENT_HANDLERS.get(kind)
            if handler is None:
                return Unknown(f"no parser for event {kind!r}", d)
            return self._with_symbol(handler, d, None)
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise _bad(f"{kind} event missing or bad {e}", d) from None

    def _with_symbol(self, handler: _Handler, d: dict[str, Any], arg: Any) -> ParseResult:
        market = self.index.by_id.get(d["s"])
        if market is None:
            return Unknown(f"event for market {d['s']!r} not in the market list", d)
        return handler(d, market.symbol, arg)

    def _parse_raw_list(self, items: list[Any]) -> ParseResult:
        try:
            if all(type(i) is dict and i.get("e") == "24hrMiniTicker" for i in items):
                return self._mini_ticker_arr(items, None, None)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise _bad(f"array event missing or bad {e}", items) from None
        return Unknown("array message of unknown events", items)


_parsers: WeakKeyDictionary[MarketIndex, BinanceParser] = WeakKeyDictionary()


def parse_message(message: Any, index: MarketIndex) -> ParseResult:
    """Parse one decoded message with the (cached) :class:`BinanceParser` for ``index``."""
    parser = _parsers.get(index)
    if parser is None:
        parser = _parsers[index] = BinanceParser(index)
    return parser.parse(message)


# ---------------------------------------------------------------------------
# REST: request descriptions
# ---------------------------------------------------------------------------


def _check_limit(limit: int, low: int, high: int, what: str) -> None:
    if type(limit) is not int or not low <= limit <= high:
        raise BadRequest(f"{what} limit must be an integer in {low}..{high}, got {limit!r}")


def depth_weight(limit: int) -> int:
    """Request weight of ``GET /api/v3/depth`` for ``limit``."""
    _check_limit(limit, 1, 5000, "Binance depth")
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def depth_request(market_id: str, limit: int = 5000) -> RestRequest:
    """``GET /api/v3/depth`` (book snapshot; answer: :func:`parse_depth_snapshot`)."""
    weight = depth_weight(limit)
    return RestRequest("GET", "/api/v3/depth", {"symbol": market_id, "limit": limit}, weight)


def exchange_info_request() -> RestRequest:
    """``GET /api/v3/exchangeInfo`` (market list; answer: :func:`parse_markets`)."""
    return RestRequest("GET", "/api/v3/exchangeInfo", {}, 20)


def trades_request(market_id: str, limit: int = 500) -> RestRequest:
    """``GET /api/v3/trades`` (recent trades; answer: :func:`parse_rest_trades`)."""
    _check_limit(limit, 1, 1000, "Binance trades")
    return RestRequest("GET", "/api/v3/trades", {"symbol": market_id, "limit": limit}, 25)


def agg_trades_request(
    market_id: str,
    limit: int = 500,
    *,
    start_time: int | None = None,
    end_time: int | None = None,
    from_id: int | None = None,
) -> RestRequest:
    """``GET /api/v3/aggTrades`` (answer: :func:`parse_rest_trades`)."""
    _check_limit(limit, 1, 1000, "Binance aggTrades")
    params: dict[str, Any] = {"symbol": market_id}
    if from_id is not None:
        params["fromId"] = from_id
    if start_time is not None:
        params["startTime"] = start_time
    if end_time is not None:
        params["endTime"] = end_time
    params["limit"] = limit
    return RestRequest("GET", "/api/v3/aggTrades", params, 4)


def klines_request(
    market_id: str,
    interval: str,
    *,
    start_time: int | None = None,
    end_time: int | None = None,
    limit: int = 500,
    time_zone: str | None = None,
) -> RestRequest:
    """``GET /api/v3/klines`` (answer: :func:`parse_klines`)."""
    if interval not in _KLINE_INTERVAL_SET:
        raise BadRequest(
            f"unsupported Binance kline interval {interval!r}; valid: {' '.join(KLINE_INTERVALS)}"
        )
    _check_limit(limit, 1, 1000, "Binance klines")
    params: dict[str, Any] = {"symbol": market_id, "interval": interval}
    if start_time is not None:
        params["startTime"] = start_time
    if end_time is not None:
        params["endTime"] = end_time
    params["limit"] = limit
    if time_zone is not None:
        params["timeZone"] = time_zone
    return RestRequest("GET", "/api/v3/klines", params, 2)


def ticker_24hr_request(
    market_ids: str | Sequence[str] | None = None, *, mini: bool = False
) -> RestRequest:
    """``GET /api/v3/ticker/24hr`` for one id, a list of ids, or every market (``None``).

    Weight: one symbol 2; a list of 1-20 -> 2, 21-100 -> 40, more -> 80; all 80.
    """
    params: dict[str, Any] = {}
    if market_ids is None:
        weight = 80
    elif isinstance(market_ids, str):
        params["symbol"] = market_ids
        weight = 2
    else:
        ids = list(market_ids)
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise BadRequest("ticker_24hr_request needs market id strings")
        params["symbols"] = "[" + ",".join(f'"{i}"' for i in ids) + "]"
        weight = 2 if len(ids) <= 20 else 40 if len(ids) <= 100 else 80
    if mini:
        params["type"] = "MINI"
    return RestRequest("GET", "/api/v3/ticker/24hr", params, weight)


# ---------------------------------------------------------------------------
# REST: answers
# ---------------------------------------------------------------------------


def parse_depth_snapshot(symbol: str, payload: Any) -> BookSnapshot:
    """``GET /api/v3/depth`` answer -> :class:`BookSnapshot` (``nonce`` = ``lastUpdateId``)."""
    try:
        return _partial_depth(payload, symbol, None)[0]  # type: ignore[return-value]
    except MalformedMessage:
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad(f"depth snapshot missing {e}", payload) from None


def parse_klines(symbol: str, timeframe: str, rows: Any, now_ms: int | None = None) -> list[Candle]:
    """``GET /api/v3/klines`` rows -> candles, oldest first.

    A candle is ``closed`` when its close time is before ``now_ms``; without
    ``now_ms`` every candle but the last (which may still be forming) is.
    """
    if type(rows) is not list:
        raise _bad("klines answer is not a list", rows)
    candles: list[Candle] = []
    last = len(rows) - 1
    try:
        for i, row in enumerate(rows):
            start, o, h, lo, c, v, close_time = row[:7]
            if type(start) is not int or type(close_time) is not int:
                raise _bad("kline row with bad times", row)
            for value in (o, h, lo, c, v):
                if type(value) is not str:
                    raise _bad("kline row with non-string values", row)
            closed = close_time < now_ms if now_ms is not None else i < last
            candles.append(Candle(symbol, timeframe, start, o, h, lo, c, v, closed))
    except MalformedMessage:
        raise
    except (TypeError, ValueError) as e:
        raise _bad(f"kline row of wrong shape ({e})", rows) from None
    return candles


def parse_rest_trades(symbol: str, rows: Any) -> list[Trade]:
    """``GET /api/v3/trades`` (or ``aggTrades``) rows -> trades, oldest first."""
    if type(rows) is not list:
        raise _bad("trades answer is not a list", rows)
    trades: list[Trade] = []
    try:
        for row in rows:
            if "a" in row:  # aggTrades shape
                trade_id, price, qty, ts, maker = row["a"], row["p"], row["q"], row["T"], row["m"]
            else:
                trade_id, price, qty, ts, maker = (
                    row["id"], row["price"], row["qty"], row["time"], row["isBuyerMaker"]
                )  # fmt: skip
            if not (
                type(trade_id) is int
                and type(price) is str
                and type(qty) is str
                and type(ts) is int
                and type(maker) is bool
            ):
                raise _bad("trade row with bad fields", row)
            trades.append(
                Trade(symbol, str(trade_id), ts, price, qty, "sell" if maker else "buy", "taker")
            )
    except MalformedMessage:
        raise
    except (KeyError, TypeError) as e:
        raise _bad(f"trade row missing {e}", rows) from None
    return trades


def _rest_ticker(row: Mapping[str, Any], symbol: str) -> Ticker:
    return _ticker_from(row, symbol, "closeTime", _TICKER_REST_KEYS)


def parse_ticker_24hr(payload: Any, index: MarketIndex) -> list[Ticker]:
    """``GET /api/v3/ticker/24hr`` answer (one object or a list) -> tickers.

    Entries for markets not in ``index`` are skipped.
    """
    rows = payload if type(payload) is list else [payload]
    tickers: list[Ticker] = []
    by_id = index.by_id
    try:
        for row in rows:
            market = by_id.get(row["symbol"])
            if market is not None:
                tickers.append(_rest_ticker(row, market.symbol))
    except MalformedMessage:
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad(f"ticker row missing {e}", payload) from None
    return tickers


# ---------------------------------------------------------------------------
# REST: errors and rate-limit headers
# ---------------------------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    """First value of header ``name`` from a mapping or a Twisted ``Headers``."""
    if headers is None:
        return None
    values: Any = None
    if hasattr(headers, "getRawHeaders"):
        values = headers.getRawHeaders(name)
    else:
        wanted = name.lower()
        for key, value in headers.items():
            k = key.decode("latin-1") if isinstance(key, bytes) else str(key)
            if k.lower() == wanted:
                values = value
                break
    if values is None:
        return None
    if isinstance(values, (list, tuple)):
        if not values:
            return None
        values = values[0]
    if isinstance(values, bytes):
        values = values.decode("latin-1")
    return str(values).strip()


def used_weight(headers: Any, interval: str = "1m") -> int | None:
    """Request weight used so far, from ``X-MBX-USED-WEIGHT-<interval>`` (``None`` if absent)."""
    value = _header(headers, f"X-MBX-USED-WEIGHT-{interval}")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def retry_after(headers: Any) -> float | None:
    """Seconds from the ``Retry-After`` header (``None`` if absent or not a number)."""
    value = _header(headers, "Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


#: Binance error codes (``{"code": -1121, "msg": ...}``) -> error class.
ERROR_CODES: Mapping[int, type[ExchangeError]] = {
    -1000: ExchangeNotAvailable,  # UNKNOWN
    -1001: ExchangeNotAvailable,  # DISCONNECTED
    -1003: RateLimitExceeded,  # TOO_MANY_REQUESTS
    -1006: ExchangeNotAvailable,  # UNEXPECTED_RESP
    -1007: RequestTimeout,  # TIMEOUT
    -1008: ExchangeNotAvailable,  # SERVER_BUSY
    -1015: RateLimitExceeded,  # TOO_MANY_ORDERS
    -1016: ExchangeNotAvailable,  # SERVICE_SHUTTING_DOWN
    -1100: BadRequest,  # ILLEGAL_CHARS
    -1101: BadRequest,  # TOO_MANY_PARAMETERS
    -1102: BadRequest,  # MANDATORY_PARAM_EMPTY_OR_MALFORMED
    -1103: BadRequest,  # UNKNOWN_PARAM
    -1104: BadRequest,  # UNREAD_PARAMETERS
    -1105: BadRequest,  # PARAM_EMPTY
    -1106: BadRequest,  # PARAM_NOT_REQUIRED
    -1111: BadRequest,  # BAD_PRECISION
    -1120: BadRequest,  # BAD_INTERVAL
    -1121: BadSymbol,  # BAD_SYMBOL
    -1002: PermissionDenied,  # UNAUTHORIZED
    -1013: InvalidOrder,  # filter failure (price, lot size, notional)
    -1021: InvalidNonce,  # INVALID_TIMESTAMP: outside recvWindow / ahead of server time
    -1022: AuthenticationError,  # INVALID_SIGNATURE
    -2010: InvalidOrder,  # NEW_ORDER_REJECTED (refined by message, see error_class)
    -2011: OrderNotFound,  # CANCEL_REJECTED ("Unknown order sent.")
    -2013: OrderNotFound,  # NO_SUCH_ORDER
    -2014: AuthenticationError,  # BAD_API_KEY_FMT
    -2015: AuthenticationError,  # REJECTED_MBX_KEY: invalid key, IP or permissions
}


def error_class(code: int | None, msg: str | None) -> type[ExchangeError] | None:
    """The error class for Binance ``code`` (refined by ``msg`` where Binance
    shares one code among several causes), or ``None`` if the code is unknown."""
    cls = ERROR_CODES.get(code) if code is not None else None
    if code == -2010 and isinstance(msg, str):
        text = msg.lower()
        if "insufficient balance" in text:
            return InsufficientFunds
        if "duplicate order" in text:
            return DuplicateOrderId
    return cls


def parse_rest_error(status: int, headers: Any, body: Any) -> ExchangeError:
    """The typed error for a failed REST answer (``body``: bytes, str or decoded JSON).

    429 -> :class:`RateLimitExceeded` and 418 -> :class:`DDoSProtection`, both
    with ``retry_after`` from the ``Retry-After`` header; 5xx ->
    :class:`ExchangeNotAvailable`; otherwise by Binance error code (-1121 ->
    :class:`BadSymbol`, -1003 -> :class:`RateLimitExceeded`, ...), other 4xx
    -> :class:`BadRequest`.  The error carries ``status`` and ``code``
    attributes.
    """
    payload = body
    if isinstance(body, (bytes, str)):
        try:
            payload = loads(body) if body else None
        except DecodeError:
            payload = None
    code: int | None = None
    msg: str | None = None
    if isinstance(payload, dict):
        raw_code = payload.get("code")
        code = raw_code if type(raw_code) is int else None
        raw_msg = payload.get("msg")
        msg = raw_msg if isinstance(raw_msg, str) else None
    if msg is None and isinstance(body, (bytes, str)) and body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        msg = text[:200]
    text = f"Binance HTTP {status}"
    if code is not None:
        text += f" code {code}"
    if msg:
        text += f": {msg}"
    error: ExchangeError
    if status == 429:
        error = RateLimitExceeded(text, retry_after(headers))
    elif status == 418:
        error = DDoSProtection(text, retry_after(headers))
    elif status == 403:
        error = DDoSProtection(text + " (WAF limit violated)", retry_after(headers))
    elif status >= 500:
        error = ExchangeNotAvailable(text + " (execution status unknown)")
    else:
        cls = error_class(code, msg)
        if cls is None:
            cls = BadRequest if 400 <= status < 500 else ExchangeError
        limited = issubclass(cls, RateLimitExceeded)
        error = cls(text, retry_after(headers)) if limited else cls(text)  # type: ignore[call-arg]
    error.status = status  # type: ignore[attr-defined]
    error.code = code  # type: ignore[attr-defined]
    return error
