"""Bybit v5 public market-data adapter (spot and linear): URLs, topics, wire rules, parsing, REST.

Sits between the transport (which hands over decoded JSON and sends the
control frames built here) and the state layer (which receives the typed
events from :mod:`txexchange.events`).  Everything is pure: requests are
described as :class:`~txexchange.adapters.rest.RestRequest` values and
responses are parsed from already-decoded JSON; the client layer does the I/O.
Book integrity (``u`` ids, snapshot resets, crossed-book check) lives in
:mod:`txexchange.adapters.bybit_book`.

Bybit serves each product *category* on its own public URL (``spot``,
``linear``), and its topics (``orderbook.50.BTCUSDT``, ``publicTrade.BTCUSDT``,
``tickers.BTCUSDT``, ``kline.5.BTCUSDT``) name the symbol but not the
category, and the same id (``BTCUSDT``) exists in both.  So markets are
indexed per category (one :class:`~txexchange.markets.MarketIndex` each) and
a :class:`BybitParser` is made for the index of the connection's category.
Unified symbols follow ccxt: spot ``BTC/USDT``, linear perpetual
``BTC/USDT:USDT``, linear future ``BTC/USDT:USDT-251226``.

Prices and sizes arrive as JSON strings and are passed on unchanged; values
decoded as :class:`~decimal.Decimal` or ``int`` (a decoder such as
:func:`txexchange.codec.loads_exact`) are accepted too and rendered as plain
decimal strings.  JSON floats are refused: they cannot be exact.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable, Hashable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from weakref import WeakKeyDictionary

import attrs

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters.bybit_book import (
    BOOK_DEPTHS,
    ApplyDelta,
    ApplySnapshot,
    BybitBookMessage,
    BybitBookSync,
    Ignore,
    Resync,
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
    MalformedMessage,
    OrderNotFound,
    PermissionDenied,
    RateLimitExceeded,
    RequestTimeout,
    SubscriptionError,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.transport.rules import Compression, ControlReply, Heartbeat

__all__ = [
    "BOOK_DEPTHS",
    "CATEGORIES",
    "DEFAULT_URLS",
    "ERROR_CODES",
    "EXCHANGE",
    "HEARTBEAT",
    "INTERVALS",
    "PONG",
    "SYSTEM_STATUS_TOPIC",
    "TESTNET_URLS",
    "TIMEFRAMES",
    "ApplyDelta",
    "ApplySnapshot",
    "BybitBookMessage",
    "BybitBookSync",
    "BybitError",
    "BybitParser",
    "BybitTickerMerger",
    "BybitTickerMessage",
    "BybitWireRules",
    "Category",
    "Ignore",
    "Maintenance",
    "ParseResult",
    "Pong",
    "Resync",
    "SyncAction",
    "UrlKind",
    "book_snapshot_request",
    "candles_request",
    "category_of",
    "error_class",
    "instruments_request",
    "interval_of",
    "kline_topic",
    "market_index",
    "next_cursor",
    "orderbook_topic",
    "parse_candles",
    "parse_markets",
    "parse_message",
    "parse_order_book",
    "parse_rest_error",
    "parse_rest_trades",
    "parse_system_status",
    "parse_tickers",
    "resolve_urls",
    "retry_after",
    "system_status_request",
    "ticker_from_fields",
    "ticker_request",
    "ticker_topic",
    "tickers_request",
    "trade_topic",
    "trades_request",
    "url_kind",
]

EXCHANGE = "bybit"

Category = Literal["spot", "linear"]
#: The product categories this adapter covers.
CATEGORIES: tuple[str, ...] = ("spot", "linear")

# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------

UrlKind = Literal["spot", "linear", "status"]

#: Production endpoints: ``spot`` and ``linear`` public streams (USDT/USDC
#: perpetuals and futures are ``linear``), ``status`` (the ``system.status``
#: maintenance stream), ``private`` (the authenticated account stream) and ``rest``.
DEFAULT_URLS: Mapping[str, str] = {
    "spot": "wss://stream.bybit.com/v5/public/spot",
    "linear": "wss://stream.bybit.com/v5/public/linear",
    "status": "wss://stream.bybit.com/v5/public/misc/status",
    "private": "wss://stream.bybit.com/v5/private",
    "rest": "https://api.bybit.com",
}

#: Testnet endpoints, for ``urls=TESTNET_URLS``.
TESTNET_URLS: Mapping[str, str] = {
    "spot": "wss://stream-testnet.bybit.com/v5/public/spot",
    "linear": "wss://stream-testnet.bybit.com/v5/public/linear",
    "status": "wss://stream-testnet.bybit.com/v5/public/misc/status",
    "private": "wss://stream-testnet.bybit.com/v5/private",
    "rest": "https://api-testnet.bybit.com",
}

_WS = ("ws://", "wss://")
_URL_SCHEMES = {"spot": _WS, "linear": _WS, "status": _WS, "private": _WS,
                "rest": ("http://", "https://")}  # fmt: skip


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
            raise BadRequest(f"unknown Bybit URL key {key!r}; valid keys are {valid}")
        if not isinstance(value, str) or not value.lower().startswith(_URL_SCHEMES[key]):
            schemes = " or ".join(_URL_SCHEMES[key])
            raise BadRequest(f"Bybit URL {key!r} must start with {schemes}, got {value!r}")
        resolved[key] = value.rstrip("/")
    return resolved


# ---------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------

#: Unified timeframe -> Bybit kline interval.
TIMEFRAMES: Mapping[str, str] = {
    "1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30",
    "1h": "60", "2h": "120", "4h": "240", "6h": "360", "12h": "720",
    "1d": "D", "1w": "W", "1M": "M",
}  # fmt: skip
#: Bybit kline interval -> unified timeframe.
INTERVALS: Mapping[str, str] = {interval: tf for tf, interval in TIMEFRAMES.items()}
_INTERVAL_MS: Mapping[str, int] = {
    "1": 60_000, "3": 180_000, "5": 300_000, "15": 900_000, "30": 1_800_000,
    "60": 3_600_000, "120": 7_200_000, "240": 14_400_000, "360": 21_600_000,
    "720": 43_200_000, "D": 86_400_000, "W": 604_800_000,
}  # fmt: skip

#: The maintenance topic of the ``status`` URL.
SYSTEM_STATUS_TOPIC = "system.status"

_BAD_ID_CHARS = frozenset(' ."\\\t\r\n/:')


def _market_id(market_id: Any) -> str:
    if (
        not isinstance(market_id, str)
        or not market_id
        or len(market_id) > 40
        or not market_id.isascii()
        or any(c in _BAD_ID_CHARS for c in market_id)
    ):
        raise BadRequest(f"invalid Bybit symbol {market_id!r}")
    return market_id


def orderbook_topic(market_id: str, depth: int = 50) -> str:
    """``orderbook.{depth}.{symbol}``; ``depth``: one of :data:`BOOK_DEPTHS` (1, 50, 200, 1000)."""
    if type(depth) is not int or depth not in BOOK_DEPTHS:
        raise BadRequest(
            f"unsupported Bybit book depth {depth!r}; valid: {', '.join(map(str, BOOK_DEPTHS))}"
        )
    return f"orderbook.{depth}.{_market_id(market_id)}"


def trade_topic(market_id: str) -> str:
    """``publicTrade.{symbol}``."""
    return f"publicTrade.{_market_id(market_id)}"


def ticker_topic(market_id: str) -> str:
    """``tickers.{symbol}``."""
    return f"tickers.{_market_id(market_id)}"


def interval_of(timeframe: str) -> str:
    """Bybit kline interval for a unified timeframe (``"1h"`` -> ``"60"``)."""
    interval = TIMEFRAMES.get(timeframe)
    if interval is None:
        raise BadRequest(
            f"unsupported Bybit timeframe {timeframe!r}; valid: {' '.join(TIMEFRAMES)}"
        )
    return interval


def kline_topic(market_id: str, timeframe: str) -> str:
    """``kline.{interval}.{symbol}``; ``timeframe`` is unified (``"1m"``, ``"1h"``, ``"1d"``...)."""
    return f"kline.{interval_of(timeframe)}.{_market_id(market_id)}"


def _topic_parts(topic: Any) -> tuple[str, str | None, str] | None:
    """``(channel, param, symbol)`` of a market topic, ``None`` if not one."""
    if type(topic) is not str:
        return None
    channel, _, rest = topic.partition(".")
    if channel in ("orderbook", "kline"):
        param, sep, symbol = rest.partition(".")
        if not sep or not symbol:
            return None
        return channel, param, symbol
    if channel in ("publicTrade", "tickers") and rest:
        return channel, None, rest
    return None


def _depth_ok(param: str | None) -> bool:
    return param is not None and param.isascii() and param.isdigit() and int(param) in BOOK_DEPTHS


def url_kind(topic: str) -> Literal["market", "status"]:
    """``"status"`` for :data:`SYSTEM_STATUS_TOPIC`, ``"market"`` for a market topic.

    Market topics are served on the URL of their symbol's category (``spot``
    or ``linear``), which the topic itself does not say.
    """
    if topic == SYSTEM_STATUS_TOPIC:
        return "status"
    parts = _topic_parts(topic)
    if parts is None:
        raise BadRequest(f"invalid Bybit topic {topic!r}")
    channel, param, symbol = parts
    _market_id(symbol)
    if channel == "orderbook" and not _depth_ok(param):
        raise BadRequest(f"invalid Bybit topic {topic!r} (depth must be 1, 50, 200 or 1000)")
    if channel == "kline" and param not in INTERVALS:
        raise BadRequest(f"invalid Bybit topic {topic!r} (unknown kline interval)")
    return "market"


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------

#: ``{"op": "ping"}`` after 20 s without traffic, answered by a JSON pong.
HEARTBEAT = Heartbeat(b'{"op":"ping"}', idle_interval=20.0, pong=None)
#: Bybit refuses a public connection whose ``args`` total more than 21,000 characters.
ARGS_CHARS_PER_CONNECTION = 21_000
_TOPICS_PER_MESSAGE: Mapping[str, int] = {"spot": 10, "linear": 100, "status": 1}


def _request_id_in(value: Any) -> int | str | None:
    # The transport numbers requests with ints; Bybit echoes req_id as a string.
    if type(value) is str:
        if not value:
            return None
        return int(value) if value.isascii() and value.isdigit() else value
    if type(value) is int:
        return value
    return None


@attrs.frozen
class BybitWireRules:
    """:class:`~txexchange.transport.rules.WireRules` for one Bybit connection kind.

    ``kind`` is ``"spot"``, ``"linear"`` (public market data of that category)
    or ``"status"`` (``system.status``).  Subscribe: ``{"req_id": "<n>", "op":
    "subscribe", "args": [topic, ...]}``; Bybit echoes ``req_id`` in its
    answer ``{"success": bool, "ret_msg", "conn_id", "req_id", "op"}``, so
    replies are matched by it (the transport's integer id is sent as its
    decimal string and read back as an int).  One answer covers the whole
    request; a failure fails all its topics.

    Limits: spot takes at most 10 args per request (Bybit's limit); linear
    has none documented and 100 is used.  A public connection's args may not
    total more than 21,000 characters: ``max_topics_per_connection`` (500)
    assumes topics of up to ~40 characters.  Bybit documents no rate for
    subscribe requests; ``control_rate`` is a modest 5 per second (the
    transport batches what queues meanwhile).

    Heartbeat: ``{"op": "ping"}`` when nothing was sent or received for 20 s
    (Bybit asks for a ping every 20 s and cuts a connection after 10 minutes
    with neither pings nor data).  The pong is ordinary JSON
    (``{"success": true, "ret_msg": "pong", "op": "ping"}`` or ``{"op":
    "pong", "args": [...]}``); the parser returns :data:`PONG` for it.  No
    compression, no maximum connection age.
    """

    kind: UrlKind = "spot"
    control_rate: float = 5.0
    max_topics_per_message: int = attrs.field(
        default=attrs.Factory(lambda self: _TOPICS_PER_MESSAGE.get(self.kind, 10), takes_self=True)
    )
    max_topics_per_connection: int | None = attrs.field(
        default=attrs.Factory(lambda self: 1 if self.kind == "status" else 500, takes_self=True)
    )
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = HEARTBEAT
    max_connection_age: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("spot", "linear", "status"):
            raise BadRequest(f"Bybit connection kind must be spot, linear or status: {self.kind!r}")

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"req_id": "<n>", "op": "subscribe", "args": [...]}``."""
        return self._control("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"req_id": "<n>", "op": "unsubscribe", "args": [...]}``."""
        return self._control("unsubscribe", topics, request_id)

    def _control(self, op: str, topics: Sequence[str], request_id: int) -> bytes:
        if not topics:
            raise BadRequest(f"Bybit {op} needs at least one topic")
        if len(topics) > self.max_topics_per_message:
            raise BadRequest(
                f"Bybit {op} of {len(topics)} topics exceeds "
                f"{self.max_topics_per_message} per message on {self.kind!r}"
            )
        wanted = "status" if self.kind == "status" else "market"
        for topic in topics:
            if url_kind(topic) != wanted:
                raise BadRequest(f"Bybit topic {topic!r} is not served on the {self.kind!r} URL")
        args = list(topics)
        if sum(len(t) + 3 for t in args) > ARGS_CHARS_PER_CONNECTION:
            raise BadRequest(f"Bybit {op} args exceed {ARGS_CHARS_PER_CONNECTION} characters")
        return dumps({"req_id": str(request_id), "op": op, "args": args})

    def control_reply(self, message: Any) -> ControlReply | None:
        """A :class:`ControlReply` if ``message`` answers a (un)subscribe by ``req_id``."""
        if type(message) is not dict:
            return None
        op = message.get("op")
        if op != "subscribe" and op != "unsubscribe":
            return None
        request_id = _request_id_in(message.get("req_id"))
        success = message.get("success")
        if request_id is None or type(success) is not bool:
            return None
        if success:
            return ControlReply(request_id, True)
        return ControlReply(request_id, False, _ret_text(message))

    def overlap_key(self, raw: bytes) -> Hashable:
        """Bybit pushes the same event as the same bytes on every connection (assumed)."""
        return raw


def _ret_text(message: Mapping[str, Any]) -> str:
    text = message.get("ret_msg")
    return text if isinstance(text, str) and text else "refused"


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


def _bad(what: str, data: Any) -> MalformedMessage:
    return MalformedMessage(f"Bybit {what}: {data!r:.300}")


def _num(value: Any, what: str, d: Any) -> str:
    """A price or size as its decimal string (``Decimal``/``int`` rendered plainly)."""
    if type(value) is str:
        return value
    if type(value) is Decimal and value.is_finite():
        return format(value, "f")
    if type(value) is int:
        return str(value)
    raise _bad(f"{what} is not a decimal string", d)


def _opt_num(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    return _num(value, key, d)


def _ms(value: Any, what: str, d: Any) -> int:
    """A millisecond timestamp sent as an int (or a decimal string)."""
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    raise _bad(f"bad {what}", d)


def _opt_int(d: Mapping[str, Any], key: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is int:
        return value
    raise _bad(f"bad {key}", d)


def _levels(raw: Any, d: Any) -> list[Any]:
    """``[[price, size], ...]`` -> the same lists (strings untouched, others rendered)."""
    if type(raw) is not list:
        raise _bad("book side is not a list", d)
    for level in raw:
        if type(level) is not list or len(level) != 2:
            raise _bad("book level is not a [price, size] pair", d)
        if type(level[0]) is not str or type(level[1]) is not str:
            # Decimal/int values (an exact decoder): a new list, the input untouched
            return [(_num(p, "price", d), _num(s, "size", d)) for p, s in raw]
    return raw


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def _result(payload: Any) -> dict[str, Any]:
    """``result`` of a REST answer; a non-zero ``retCode`` raises its typed error."""
    if type(payload) is not dict:
        raise _bad("REST answer is not a JSON object", payload)
    code = payload.get("retCode")
    if type(code) is not int:
        raise _bad("REST answer without an integer retCode", payload)
    if code != 0:
        raise parse_rest_error(200, None, payload)
    result = payload.get("result")
    if type(result) is not dict:
        raise _bad("REST answer without a 'result' object", payload)
    return result


def _result_list(payload: Any) -> list[Any]:
    result = _result(payload)
    items = result.get("list")
    if type(items) is not list:
        raise _bad("REST answer without a 'list'", payload)
    return items


def _expiry(delivery_ms: Any) -> str | None:
    try:
        ms = int(delivery_ms)
    except (TypeError, ValueError):
        return None
    if ms <= 0:
        return None
    day = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return day.strftime("%y%m%d")


def _unified(entry: Mapping[str, Any], category: str, base: str, quote: str) -> str | None:
    if category == "spot":
        return f"{base}/{quote}"
    settle = entry.get("settleCoin")
    if not isinstance(settle, str) or not settle:
        settle = quote
    contract = entry.get("contractType")
    if contract == "LinearPerpetual":
        return f"{base}/{quote}:{settle}"
    if contract == "LinearFutures":
        expiry = _expiry(entry.get("deliveryTime"))
        return f"{base}/{quote}:{settle}-{expiry}" if expiry else None
    return None  # inverse or unknown contract types are not linear markets


def _filter_value(entry: Mapping[str, Any], name: str, key: str) -> str | None:
    section = entry.get(name)
    if not isinstance(section, dict):
        return None
    value = section.get(key)
    return value if isinstance(value, str) and value else None


def parse_markets(payload: Any, category: str | None = None) -> dict[str, Market]:
    """Unified markets from one page of ``GET /v5/market/instruments-info``.

    ``category`` defaults to the answer's ``result.category``.  Spot: symbol
    ``BASE/QUOTE``, ``amount_step`` = ``lotSizeFilter.basePrecision``.
    Linear: ``BASE/QUOTE:SETTLE`` for perpetuals and
    ``BASE/QUOTE:SETTLE-YYMMDD`` for futures (delivery date, UTC),
    ``amount_step`` = ``lotSizeFilter.qtyStep``.  ``id`` is Bybit's
    ``symbol``; ``tick_size`` is ``priceFilter.tickSize``; ``active`` is
    ``status == "Trading"``.  Linear answers are paged: see
    :func:`next_cursor`.
    """
    result = _result(payload)
    cat = result.get("category") if category is None else category
    if cat not in CATEGORIES:
        raise _bad(f"instruments answer for unsupported category {cat!r}", payload)
    items = result.get("list")
    if type(items) is not list:
        raise _bad("instruments answer without a 'list'", payload)
    markets: dict[str, Market] = {}
    for entry in items:
        if type(entry) is not dict:
            raise _bad("instrument entry is not an object", entry)
        market_id = entry.get("symbol")
        base = entry.get("baseCoin")
        quote = entry.get("quoteCoin")
        if not isinstance(market_id, str) or not market_id:
            raise _bad("instrument entry without symbol", entry)
        if not isinstance(base, str) or not isinstance(quote, str) or not base or not quote:
            raise _bad("instrument entry with bad baseCoin/quoteCoin", entry)
        symbol = _unified(entry, cat, base, quote)
        if symbol is None or symbol in markets:
            continue
        step_key = "basePrecision" if cat == "spot" else "qtyStep"
        markets[symbol] = Market(
            symbol=symbol,
            id=market_id,
            base=base,
            quote=quote,
            active=entry.get("status") == "Trading",
            tick_size=_filter_value(entry, "priceFilter", "tickSize"),
            amount_step=_filter_value(entry, "lotSizeFilter", step_key),
            info=entry,
        )
    return markets


def next_cursor(payload: Any) -> str | None:
    """``result.nextPageCursor`` of an instruments answer (``None`` on the last page)."""
    cursor = _result(payload).get("nextPageCursor")
    return cursor if isinstance(cursor, str) and cursor else None


def market_index(*payloads: Any, category: str | None = None) -> MarketIndex:
    """One category's markets (all pages of its instruments answer) as a :class:`MarketIndex`.

    Pages of different categories raise :class:`~txexchange.errors.BadRequest`:
    ids repeat across categories, so each category gets its own index.
    """
    markets: dict[str, Market] = {}
    seen: set[Any] = set()
    for payload in payloads:
        cat = category if category is not None else _result(payload).get("category")
        seen.add(cat)
        if len(seen) > 1:
            raise BadRequest(f"instrument pages of several categories: {sorted(map(str, seen))}")
        for symbol, market in parse_markets(payload, cat).items():
            markets.setdefault(symbol, market)
    return MarketIndex.from_markets(markets.values(), EXCHANGE)


def category_of(symbol: str) -> Category:
    """The category of a unified symbol: ``"linear"`` for ``BASE/QUOTE:SETTLE``, else ``"spot"``."""
    return "linear" if ":" in symbol else "spot"


# ---------------------------------------------------------------------------
# Outcomes besides events
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class BybitError:
    """A refused request (``{"success": false, "ret_msg", "op"}``) not consumed as a reply.

    :meth:`exception` gives the typed error.
    """

    op: str
    message: str
    request_id: Any = None
    conn_id: str | None = None

    def exception(self) -> ExchangeError:
        """:class:`BadSymbol` when the message names a bad symbol or topic, else
        :class:`SubscriptionError` (:class:`AuthenticationError` for ``auth``)."""
        text = f"Bybit {self.op} refused: {self.message}"
        lowered = self.message.lower()
        if self.op == "auth":
            return AuthenticationError(text)
        if "symbol" in lowered or "topic" in lowered or "handler not found" in lowered:
            return BadSymbol(text)
        return SubscriptionError(text)


@attrs.frozen(slots=True)
class Pong:
    """Bybit's answer to ``{"op": "ping"}`` (either documented shape)."""


PONG = Pong()


@attrs.frozen(slots=True)
class BybitTickerMessage:
    """One ``tickers.{symbol}`` push: the fields sent (a delta omits unchanged ones).

    ``fields`` maps Bybit's names (``lastPrice``, ``bid1Price``...) to their
    strings (``None`` for ``""``).  ``cs`` is the cross sequence.  Merge with
    a :class:`BybitTickerMerger` to get :class:`~txexchange.events.Ticker` values.
    """

    symbol: str
    snapshot: bool
    fields: Mapping[str, str | None] = attrs.field(eq=True, hash=False)
    timestamp: int | None = None
    cs: int | None = None


@attrs.frozen(slots=True)
class Maintenance:
    """One entry of the ``system.status`` stream (platform maintenance or incident).

    ``state``: ``scheduled``, ``ongoing``, ``completed`` or ``canceled``;
    ``service_types``: 1 trading, 2 trading over HTTP, 3 trading over
    WebSocket, 4 private stream, 5 market data; ``products``: 1 futures,
    2 spot, 3 option, 4 spread.  ``begin``/``end`` in ms.
    """

    id: str
    title: str
    state: str
    begin: int | None = None
    end: int | None = None
    href: str = ""
    service_types: tuple[int, ...] = ()
    products: tuple[int, ...] = ()
    maintain_type: Any = None
    env: Any = None
    timestamp: int | None = None

    def affects_market_data(self, category: str) -> bool:
        """Whether this (ongoing or scheduled) entry concerns ``category``'s market data."""
        product = {"spot": 2, "linear": 1}.get(category)
        if self.state not in ("ongoing", "scheduled"):
            return False
        if self.service_types and 5 not in self.service_types:
            return False
        return not self.products or product in self.products


# ---------------------------------------------------------------------------
# Tickers
# ---------------------------------------------------------------------------

_TICKER_FIELDS = (
    "lastPrice", "prevPrice24h", "highPrice24h", "lowPrice24h", "volume24h", "turnover24h",
    "price24hPcnt", "bid1Price", "bid1Size", "ask1Price", "ask1Size", "markPrice", "indexPrice",
)  # fmt: skip


def _ticker_fields(d: Mapping[str, Any]) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    for key in _TICKER_FIELDS:
        if key in d:
            fields[key] = _opt_num(d, key)
    return fields


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return "0" if text in ("-0", "0") else text


def ticker_from_fields(
    symbol: str, fields: Mapping[str, str | None], timestamp: int | None = None
) -> Ticker:
    """A :class:`~txexchange.events.Ticker` from Bybit ticker fields.

    ``open`` is ``prevPrice24h``, ``base_volume`` ``volume24h``,
    ``quote_volume`` ``turnover24h``; ``percentage`` is ``price24hPcnt`` x 100
    and ``change`` is ``last - open``, both computed exactly in decimal.
    """
    last = fields.get("lastPrice")
    open_ = fields.get("prevPrice24h")
    change = percentage = None
    try:
        if last is not None and open_ is not None:
            change = _plain(Decimal(last) - Decimal(open_))
        pcnt = fields.get("price24hPcnt")
        if pcnt is not None:
            percentage = _plain(Decimal(pcnt).scaleb(2))
    except (InvalidOperation, ValueError):
        raise _bad("ticker with a non-decimal price", dict(fields)) from None
    return Ticker(
        symbol,
        timestamp=timestamp,
        bid=fields.get("bid1Price"),
        bid_volume=fields.get("bid1Size"),
        ask=fields.get("ask1Price"),
        ask_volume=fields.get("ask1Size"),
        last=last,
        open=open_,
        high=fields.get("highPrice24h"),
        low=fields.get("lowPrice24h"),
        close=last,
        base_volume=fields.get("volume24h"),
        quote_volume=fields.get("turnover24h"),
        change=change,
        percentage=percentage,
    )


class BybitTickerMerger:
    """Merges ``tickers`` pushes into whole tickers, per symbol.

    Linear tickers come as a snapshot then deltas holding only the changed
    fields; spot tickers are snapshots only.  :meth:`on_message` returns the
    merged :class:`~txexchange.events.Ticker`, or ``None`` for a delta before
    any snapshot of its symbol or one older (by ``cs``) than the last applied.
    """

    __slots__ = ("_cs", "_fields")

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, str | None]] = {}
        self._cs: dict[str, int] = {}

    def on_message(self, message: BybitTickerMessage) -> Ticker | None:
        symbol = message.symbol
        last_cs = self._cs.get(symbol)
        cs = message.cs
        if cs is not None and last_cs is not None and cs < last_cs and not message.snapshot:
            return None
        if message.snapshot:
            fields = self._fields[symbol] = dict(message.fields)
        else:
            held = self._fields.get(symbol)
            if held is None:
                return None
            held.update(message.fields)
            fields = held
        if cs is not None:
            self._cs[symbol] = cs
        return ticker_from_fields(symbol, fields, message.timestamp)

    def reset(self, symbol: str | None = None) -> None:
        """Forget one symbol (or all, e.g. after a reconnect)."""
        if symbol is None:
            self._fields.clear()
            self._cs.clear()
        else:
            self._fields.pop(symbol, None)
            self._cs.pop(symbol, None)


# ---------------------------------------------------------------------------
# Messages (the per-message hot path)
# ---------------------------------------------------------------------------

Event = BybitBookMessage | Trade | Candle | BybitTickerMessage | Maintenance
#: What :meth:`BybitParser.parse` returns.
ParseResult = list[Event] | ControlReply | ServerShutdown | BybitError | Pong | Unknown

#: Handlers take (message, symbol, extra); ``extra`` is the depth or timeframe.
_Handler = Callable[[dict[str, Any], str, Any], list[Any]]


def _book(message: dict[str, Any], symbol: str, depth: int) -> list[BybitBookMessage]:
    kind = message.get("type")
    if kind != "snapshot" and kind != "delta":
        raise _bad(f"orderbook push with bad type {kind!r}", message)
    d = message.get("data")
    if type(d) is not dict:
        raise _bad("orderbook data is not an object", message)
    bids = _levels(d.get("b"), d)
    asks = _levels(d.get("a"), d)
    u = d.get("u")
    if type(u) is not int or u < 0:
        raise _bad("orderbook push with bad u", d)
    seq = _opt_int(d, "seq")
    ts = _ms(message["ts"], "ts", message) if "ts" in message else None
    cts = _opt_int(message, "cts")
    event: BookSnapshot | BookDelta
    if kind == "snapshot":
        event = BookSnapshot(symbol, bids, asks, u, ts)
    else:
        event = BookDelta(symbol, bids, asks, u, None, None, ts)
    return [BybitBookMessage(event, depth, seq, cts)]


def _trade(d: Any, symbol: str) -> Trade:
    if type(d) is not dict:
        raise _bad("trade is not an object", d)
    trade_id = d.get("i")
    side = d.get("S")
    if type(trade_id) is not str or not trade_id:
        raise _bad("trade without an id", d)
    if side == "Buy":
        taker = "buy"
    elif side == "Sell":
        taker = "sell"
    else:
        raise _bad("trade with bad side", d)
    # ``S`` is the taker's side.
    return Trade(
        symbol,
        trade_id,
        _ms(d.get("T"), "T", d),
        _num(d.get("p"), "p", d),
        _num(d.get("v"), "v", d),
        taker,  # type: ignore[arg-type]
        "taker",
    )


def _trades(message: dict[str, Any], symbol: str, _extra: Any) -> list[Trade]:
    data = message.get("data")
    if type(data) is not list:
        raise _bad("publicTrade data is not a list", message)
    return [_trade(d, symbol) for d in data]


def _tickers(message: dict[str, Any], symbol: str, _extra: Any) -> list[BybitTickerMessage]:
    kind = message.get("type")
    if kind != "snapshot" and kind != "delta":
        raise _bad(f"tickers push with bad type {kind!r}", message)
    d = message.get("data")
    if type(d) is not dict:
        raise _bad("tickers data is not an object", message)
    ts = _ms(message["ts"], "ts", message) if "ts" in message else None
    return [
        BybitTickerMessage(
            symbol, kind == "snapshot", _ticker_fields(d), ts, _opt_int(message, "cs")
        )
    ]


def _candle(d: Any, symbol: str, timeframe: str) -> Candle:
    if type(d) is not dict:
        raise _bad("kline is not an object", d)
    confirm = d.get("confirm")
    if type(confirm) is not bool:
        raise _bad("kline with bad confirm", d)
    return Candle(
        symbol,
        timeframe,
        _ms(d.get("start"), "start", d),
        _num(d.get("open"), "open", d),
        _num(d.get("high"), "high", d),
        _num(d.get("low"), "low", d),
        _num(d.get("close"), "close", d),
        _num(d.get("volume"), "volume", d),
        confirm,
    )


def _klines(message: dict[str, Any], symbol: str, timeframe: str) -> list[Candle]:
    data = message.get("data")
    if type(data) is not list:
        raise _bad("kline data is not a list", message)
    return [_candle(d, symbol, timeframe) for d in data]


def _maintenance(d: Any, ts: int | None) -> Maintenance:
    if type(d) is not dict:
        raise _bad("system.status entry is not an object", d)
    ident = d.get("id")
    title = d.get("title", "")
    state = d.get("state")
    href = d.get("href", "")
    if type(ident) is not str or type(state) is not str:
        raise _bad("system.status entry without id/state", d)
    if type(title) is not str or type(href) is not str:
        raise _bad("system.status entry with bad title/href", d)

    def ints(key: str) -> tuple[int, ...]:
        raw = d.get(key, [])
        if type(raw) is not list or any(type(x) is not int for x in raw):
            raise _bad(f"system.status entry with bad {key}", d)
        return tuple(raw)

    begin = _ms(d["begin"], "begin", d) if d.get("begin") not in (None, "") else None
    end = _ms(d["end"], "end", d) if d.get("end") not in (None, "") else None
    return Maintenance(
        ident,
        title,
        state,
        begin,
        end,
        href,
        ints("serviceTypes"),
        ints("product"),
        d.get("maintainType"),
        d.get("env"),
        ts,
    )


_MAX_ROUTES = 8192


class BybitParser:
    """Turns decoded Bybit v5 public messages into typed outcomes.

    One parser per :class:`MarketIndex`, i.e. per category (the topics do not
    say which category they belong to).  Data pushes are routed by ``topic``;
    the route of each topic is worked out once and cached.

    :meth:`parse` returns a list of events (:class:`BybitBookMessage` -- feed
    those to a :class:`BybitBookSync` --, :class:`~txexchange.events.Trade`,
    :class:`~txexchange.events.Candle`, :class:`BybitTickerMessage` -- merge
    those with a :class:`BybitTickerMerger` --, :class:`Maintenance`), a
    :class:`~txexchange.transport.rules.ControlReply` (an acknowledgement
    the transport did not consume), a :class:`BybitError` (a refused
    request), :data:`PONG`, or an :class:`~txexchange.adapters.Unknown`.  A
    message of the wrong shape raises
    :class:`~txexchange.errors.MalformedMessage` and nothing else.
    """

    __slots__ = ("_routes", "index")

    def __init__(self, index: MarketIndex) -> None:
        self.index = index
        self._routes: dict[str, tuple[_Handler, str, Any] | Unknown] = {}

    def parse(self, message: Any) -> ParseResult:
        """Parse one decoded message (see the class docstring)."""
        if type(message) is not dict:
            raise _bad("message is not a JSON object", message)
        topic = message.get("topic")
        if topic is not None:
            if type(topic) is not str:
                raise _bad("topic is not a string", message)
            if "data" not in message:
                raise _bad("push without data", message)
            return self._push(message, topic)
        if "op" in message:
            return self._op(message)
        return Unknown("Bybit message without topic or op", message)

    def _push(self, message: dict[str, Any], topic: str) -> ParseResult:
        if topic == SYSTEM_STATUS_TOPIC:
            data = message["data"]
            if type(data) is not list:
                raise _bad("system.status data is not a list", message)
            ts = _ms(message["ts"], "ts", message) if "ts" in message else None
            return [_maintenance(d, ts) for d in data]
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
        if type(route) is Unknown:
            return Unknown(route.reason, message)
        handler, symbol, extra = route  # type: ignore[misc]
        try:
            return handler(message, symbol, extra)
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise _bad(f"{topic} push missing or bad {e}", message) from None

    def _route(self, topic: str) -> tuple[_Handler, str, Any] | Unknown:
        route = self._compute_route(topic)
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _compute_route(self, topic: str) -> tuple[_Handler, str, Any] | Unknown:
        parts = _topic_parts(topic)
        if parts is None:
            return Unknown(f"no parser for Bybit topic {topic!r}")
        channel, param, market_id = parts
        market = self.index.by_id.get(market_id)
        if market is None:
            return Unknown(f"{channel} push for {market_id!r}, not in the market list")
        symbol = market.symbol
        if channel == "orderbook":
            if not _depth_ok(param):
                return Unknown(f"Bybit book topic {topic!r} with unknown depth")
            return (_book, symbol, int(param))  # type: ignore[return-value]
        if channel == "publicTrade":
            return (_trades, symbol, None)
        if channel == "tickers":
            return (_tickers, symbol, None)
        timeframe = INTERVALS.get(param or "")
        if timeframe is None:
            return Unknown(f"Bybit kline topic {topic!r} with unknown interval")
        return (_klines, symbol, timeframe)  # type: ignore[return-value]

    def _op(self, message: dict[str, Any]) -> ParseResult:
        op = message["op"]
        if op == "pong":
            return PONG
        success = message.get("success")
        if op == "ping":
            if success is True or message.get("ret_msg") == "pong":
                return PONG
            return Unknown("Bybit ping answer without success", message)
        if type(op) is not str:
            raise _bad("op is not a string", message)
        if type(success) is not bool:
            if op in ("subscribe", "unsubscribe", "auth"):
                raise _bad(f"{op} answer without a boolean success", message)
            return Unknown(f"Bybit op {op!r}", message)
        ret_msg = message.get("ret_msg", "")
        if ret_msg is not None and type(ret_msg) is not str:
            raise _bad("ret_msg is not a string", message)
        request_id = _request_id_in(message.get("req_id"))
        if success:
            return ControlReply(request_id, True)
        conn = message.get("conn_id")
        return BybitError(op, ret_msg or "refused", request_id, conn if type(conn) is str else None)


_parsers: WeakKeyDictionary[MarketIndex, BybitParser] = WeakKeyDictionary()


def parse_message(message: Any, index: MarketIndex) -> ParseResult:
    """Parse one decoded message with the (cached) :class:`BybitParser` for ``index``."""
    parser = _parsers.get(index)
    if parser is None:
        parser = _parsers[index] = BybitParser(index)
    return parser.parse(message)


# ---------------------------------------------------------------------------
# REST: request descriptions
# ---------------------------------------------------------------------------


def _category(category: Any) -> str:
    if category not in CATEGORIES:
        raise BadRequest(f"Bybit category must be 'spot' or 'linear', not {category!r}")
    return category  # type: ignore[no-any-return]


def _check_limit(limit: Any, low: int, high: int, what: str) -> None:
    if type(limit) is not int or not low <= limit <= high:
        raise BadRequest(f"{what} must be an integer in {low}..{high}, got {limit!r}")


def instruments_request(
    category: str, *, cursor: str | None = None, limit: int = 1000
) -> RestRequest:
    """``GET /v5/market/instruments-info?category=..`` (answer: :func:`parse_markets`).

    Spot answers in one page; linear is paged (``limit`` 1..1000, follow
    :func:`next_cursor` with ``cursor``).  Only ``Trading`` symbols are listed
    by default.
    """
    params: dict[str, Any] = {"category": _category(category)}
    if category == "linear":
        _check_limit(limit, 1, 1000, "Bybit instruments limit")
        params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
    return RestRequest("GET", "/v5/market/instruments-info", params)


def book_snapshot_request(category: str, market_id: str, limit: int = 200) -> RestRequest:
    """``GET /v5/market/orderbook`` (answer: :func:`parse_order_book`); ``limit`` 1..1000.

    The answer's ``u`` is the 1000-level stream's: it can be compared only
    with ``orderbook.1000`` (the sync never needs it: WebSocket snapshots
    resync the streams).
    """
    _check_limit(limit, 1, 1000, "Bybit orderbook limit")
    return RestRequest(
        "GET",
        "/v5/market/orderbook",
        {"category": _category(category), "symbol": _market_id(market_id), "limit": limit},
    )


def trades_request(category: str, market_id: str, limit: int | None = None) -> RestRequest:
    """``GET /v5/market/recent-trade`` (answer: :func:`parse_rest_trades`).

    ``limit``: spot 1..60 (default 60), linear 1..1000 (default 500).
    """
    cat = _category(category)
    high = 60 if cat == "spot" else 1000
    params: dict[str, Any] = {"category": cat, "symbol": _market_id(market_id)}
    if limit is not None:
        _check_limit(limit, 1, high, f"Bybit {cat} trades limit")
        params["limit"] = limit
    return RestRequest("GET", "/v5/market/recent-trade", params)


def candles_request(
    category: str,
    market_id: str,
    timeframe: str,
    *,
    start: int | None = None,
    end: int | None = None,
    limit: int = 200,
) -> RestRequest:
    """``GET /v5/market/kline`` (answer: :func:`parse_candles`); ``limit`` 1..1000, times in ms."""
    _check_limit(limit, 1, 1000, "Bybit kline limit")
    params: dict[str, Any] = {
        "category": _category(category),
        "symbol": _market_id(market_id),
        "interval": interval_of(timeframe),
    }
    if start is not None:
        params["start"] = start
    if end is not None:
        params["end"] = end
    params["limit"] = limit
    return RestRequest("GET", "/v5/market/kline", params)


def ticker_request(category: str, market_id: str) -> RestRequest:
    """``GET /v5/market/tickers?category=..&symbol=..`` (answer: :func:`parse_tickers`)."""
    return RestRequest(
        "GET",
        "/v5/market/tickers",
        {"category": _category(category), "symbol": _market_id(market_id)},
    )


def tickers_request(category: str) -> RestRequest:
    """``GET /v5/market/tickers?category=..`` (every symbol; answer: :func:`parse_tickers`)."""
    return RestRequest("GET", "/v5/market/tickers", {"category": _category(category)})


def system_status_request() -> RestRequest:
    """``GET /v5/system/status`` (maintenance records; answer: :func:`parse_system_status`)."""
    return RestRequest("GET", "/v5/system/status", {})


# ---------------------------------------------------------------------------
# REST: answers
# ---------------------------------------------------------------------------


def parse_order_book(symbol: str, payload: Any) -> BookSnapshot:
    """``GET /v5/market/orderbook`` answer -> :class:`BookSnapshot` (``nonce`` = ``u``)."""
    d = _result(payload)
    u = d.get("u")
    if u is not None and type(u) is not int:
        raise _bad("orderbook answer with bad u", payload)
    ts = _ms(d["ts"], "ts", d) if "ts" in d else None
    return BookSnapshot(symbol, _levels(d.get("b"), d), _levels(d.get("a"), d), u, ts)


def _month_end(start_ms: int) -> int:
    day = datetime.datetime.fromtimestamp(start_ms / 1000, tz=datetime.UTC)
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def parse_candles(
    symbol: str, timeframe: str, payload: Any, now_ms: int | None = None
) -> list[Candle]:
    """``GET /v5/market/kline`` answer -> candles, oldest first (Bybit sends newest first).

    Every candle but the newest is ``closed``; the newest is closed when
    ``now_ms`` is given and is at or past its end.
    """
    interval = interval_of(timeframe)
    rows = _result_list(payload)
    candles: list[Candle] = []
    for row in reversed(rows):
        if type(row) is not list or len(row) < 6:
            raise _bad("kline row is not a [start, o, h, l, c, volume, ...] list", row)
        start = _ms(row[0], "kline start", row)
        values = [_num(v, "kline value", row) for v in row[1:6]]
        candles.append(Candle(symbol, timeframe, start, *values, closed=True))
    if candles:
        newest = candles[-1]
        if interval == "M":
            end = _month_end(newest.timestamp)
        else:
            end = newest.timestamp + _INTERVAL_MS[interval]
        candles[-1] = attrs.evolve(newest, closed=now_ms is not None and now_ms >= end)
    candles.sort(key=lambda c: c.timestamp)
    return candles


def parse_rest_trades(symbol: str, payload: Any) -> list[Trade]:
    """``GET /v5/market/recent-trade`` answer -> trades, oldest first (Bybit sends newest first)."""
    trades: list[Trade] = []
    for d in reversed(_result_list(payload)):
        if type(d) is not dict:
            raise _bad("trade is not an object", d)
        trade_id = d.get("execId")
        side = d.get("side")
        if type(trade_id) is not str or not trade_id:
            raise _bad("trade without execId", d)
        if side not in ("Buy", "Sell"):
            raise _bad("trade with bad side", d)
        trades.append(
            Trade(
                symbol,
                trade_id,
                _ms(d.get("time"), "time", d),
                _num(d.get("price"), "price", d),
                _num(d.get("size"), "size", d),
                "buy" if side == "Buy" else "sell",
                "taker",
            )
        )
    trades.sort(key=lambda t: t.timestamp)  # stable: ties keep Bybit's order
    return trades


def parse_tickers(payload: Any, index: MarketIndex) -> list[Ticker]:
    """``GET /v5/market/tickers`` answer -> tickers (symbols not in ``index`` skipped).

    The timestamp is the answer's ``time``.
    """
    ts = payload.get("time") if type(payload) is dict else None
    timestamp = ts if type(ts) is int else None
    tickers: list[Ticker] = []
    by_id = index.by_id
    for d in _result_list(payload):
        if type(d) is not dict:
            raise _bad("ticker is not an object", d)
        market_id = d.get("symbol")
        if type(market_id) is not str:
            raise _bad("ticker without symbol", d)
        market = by_id.get(market_id)
        if market is not None:
            tickers.append(ticker_from_fields(market.symbol, _ticker_fields(d), timestamp))
    return tickers


def parse_system_status(payload: Any) -> list[Maintenance]:
    """``GET /v5/system/status`` answer -> :class:`Maintenance` records (as ``system.status``)."""
    ts = payload.get("time") if type(payload) is dict else None
    return [_maintenance(d, ts if type(ts) is int else None) for d in _result_list(payload)]


# ---------------------------------------------------------------------------
# REST: errors
# ---------------------------------------------------------------------------

#: Bybit ``retCode`` -> error class (Bybit v5 error-code page).
ERROR_CODES: Mapping[int, type[ExchangeError]] = {
    10000: RequestTimeout,  # server timeout
    10001: BadRequest,  # request parameter error (BadSymbol if about the symbol)
    10002: InvalidNonce,  # request time outside the recv window
    10003: AuthenticationError,  # API key invalid
    10004: AuthenticationError,  # signature error
    10005: PermissionDenied,  # permission denied
    10006: RateLimitExceeded,  # too many visits (API rate limit)
    10007: AuthenticationError,  # user not logged in / authentication failed
    10008: PermissionDenied,  # user banned
    10009: PermissionDenied,  # IP banned
    10010: PermissionDenied,  # unmatched IP
    10016: ExchangeNotAvailable,  # internal server error / service restarting
    10017: BadRequest,  # route not found
    10018: RateLimitExceeded,  # IP rate limit exceeded
    10027: PermissionDenied,  # transactions banned
    10029: PermissionDenied,  # symbol not in the key's whitelist
    10429: RateLimitExceeded,  # system-level frequency protection
    170121: BadSymbol,  # (spot) invalid symbol
    # account and trading
    110001: OrderNotFound,  # order does not exist
    110007: InsufficientFunds,  # available balance insufficient
    110072: DuplicateOrderId,  # orderLinkId is duplicate
    170131: InsufficientFunds,  # (spot) balance insufficient
    170141: DuplicateOrderId,  # (spot) duplicate clientOrderId
    170213: OrderNotFound,  # (spot) order does not exist
}

#: What Bybit says to wait after an HTTP 403 "access too frequent" (10 minutes).
IP_BAN_WAIT = 600.0


def error_class(code: Any, default: type[ExchangeError] = ExchangeError) -> type[ExchangeError]:
    """The error class for a Bybit ``retCode`` (int or string), ``default`` if unknown."""
    try:
        return ERROR_CODES.get(int(code), default)
    except (TypeError, ValueError):
        return default


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    values: Any = None
    if hasattr(headers, "getRawHeaders"):
        values = headers.getRawHeaders(name)
    else:
        wanted = name.lower()
        for key, value in headers.items():
            text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
            if text.lower() == wanted:
                values = value
                break
    if isinstance(values, (list, tuple)):
        values = values[0] if values else None
    if isinstance(values, bytes):
        values = values.decode("latin-1")
    return values if isinstance(values, str) else None


def retry_after(headers: Any, now_ms: int | None = None) -> float | None:
    """Seconds to wait: ``Retry-After``, else ``X-Bapi-Limit-Reset-Timestamp`` - ``now_ms``.

    ``now_ms`` is the time of the answer (Bybit's ``time`` field, or the
    local clock); without it only ``Retry-After`` is used.
    """
    value = _header(headers, "Retry-After")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = _header(headers, "X-Bapi-Limit-Reset-Timestamp")
    if reset is not None and now_ms is not None:
        try:
            return max(0.0, (int(reset) - now_ms) / 1000.0)
        except ValueError:
            return None
    return None


def parse_rest_error(
    status: int, headers: Any, body: Any, now_ms: int | None = None
) -> ExchangeError:
    """The typed error for a failed REST answer (``body``: bytes, str or decoded JSON).

    A known non-zero ``retCode`` decides (``10006``/``10018``/``10429``
    :class:`RateLimitExceeded`, ``10001`` :class:`BadRequest` -- or
    :class:`BadSymbol` when ``retMsg`` is about the symbol --, ``10016``
    :class:`ExchangeNotAvailable`, ...); otherwise HTTP 403 (Bybit's IP ban,
    "access too frequent") -> :class:`DDoSProtection` with ``retry_after``
    600 s unless the headers say otherwise, 429 -> :class:`RateLimitExceeded`,
    5xx -> :class:`ExchangeNotAvailable`, 401 -> :class:`AuthenticationError`,
    other 4xx -> :class:`BadRequest`.  Rate-limit errors carry ``retry_after``
    (``Retry-After`` or ``X-Bapi-Limit-Reset-Timestamp`` against the answer's
    ``time`` or ``now_ms``); every error carries ``status`` and ``code``.
    """
    payload = body
    if isinstance(body, (bytes, str)):
        try:
            payload = loads(body) if body else None
        except DecodeError:
            payload = None
    code: int | None = None
    msg: str | None = None
    server_time: int | None = None
    if isinstance(payload, dict):
        raw_code = payload.get("retCode")
        if type(raw_code) is str and raw_code.lstrip("-").isdigit():
            raw_code = int(raw_code)
        code = raw_code if type(raw_code) is int and raw_code != 0 else None
        raw_msg = payload.get("retMsg", payload.get("ret_msg"))
        msg = raw_msg if isinstance(raw_msg, str) and raw_msg else None
        raw_time = payload.get("time")
        server_time = raw_time if type(raw_time) is int else None
    if msg is None and isinstance(body, (bytes, str)) and body and payload is None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        msg = text[:200]
    text = f"Bybit HTTP {status}"
    if code is not None:
        text += f" retCode {code}"
    if msg:
        text += f": {msg}"
    cls = ERROR_CODES.get(code) if code is not None else None
    if cls is BadRequest and code == 10001 and msg and "symbol" in msg.lower():
        cls = BadSymbol
    if cls is None:
        if status == 403:
            cls = DDoSProtection
        elif status == 429:
            cls = RateLimitExceeded
        elif status >= 500:
            cls = ExchangeNotAvailable
        elif status == 401:
            cls = AuthenticationError
        elif 400 <= status < 500:
            cls = BadRequest
        else:
            cls = ExchangeError
    error: ExchangeError
    if issubclass(cls, RateLimitExceeded):
        wait = retry_after(headers, server_time if server_time is not None else now_ms)
        if wait is None and cls is DDoSProtection:
            wait = IP_BAN_WAIT
        error = cls(text, wait)
    else:
        error = cls(text)
    error.status = status  # type: ignore[attr-defined]
    error.code = code  # type: ignore[attr-defined]
    return error
