"""OKX v5 public market-data adapter: URLs, topics, wire rules, message parsing, REST descriptions.

Sits between the transport (which hands over decoded JSON and sends the
control frames built here) and the state layer (which receives the typed
events from :mod:`txexchange.events`).  Everything is pure: requests are
described as :class:`~txexchange.adapters.rest.RestRequest` values and
responses are parsed from already-decoded JSON; the client layer does the I/O.
Book integrity (``seqId`` chain, checksum, REST-snapshot procedure) lives in
:mod:`txexchange.adapters.okx_book`.

Topics are the adapter's own strings ``"<channel>:<instId>"`` (e.g.
``"books:BTC-USDT"``, ``"candle1m:BTC-USDT"``); :func:`topic_arg` turns one
into OKX's ``{"channel", "instId"}`` argument.  Channels live on two URLs:
books, ``bbo-tbt``, ``trades`` and ``tickers`` on ``public``; candles and
``trades-all`` on ``business`` (:func:`url_kind`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal
from weakref import WeakKeyDictionary

import attrs

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters.okx_book import (
    CHECKSUM_DEPTH,
    ApplyDelta,
    ApplySnapshot,
    Buffer,
    Ignore,
    NeedSnapshot,
    OkxBookMessage,
    OkxBookSync,
    Resync,
    SnapshotTooOld,
    SyncAction,
    okx_checksum,
    okx_checksum_string,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import DecodeError, dumps, loads
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
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
    SubscriptionError,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.transport.rules import Compression, ControlReply, Heartbeat

__all__ = [
    "BOOK_CHANNELS",
    "BOOK_SNAPSHOT_DEPTH",
    "CHECKSUM_DEPTH",
    "CONTROL_PER_HOUR",
    "DEFAULT_URLS",
    "ERROR_CODES",
    "EXCHANGE",
    "HEARTBEAT",
    "INCREMENTAL_BOOK_CHANNELS",
    "PONG",
    "PUBLIC_TOPICS_PER_CONNECTION",
    "TIMEFRAMES",
    "ApplyDelta",
    "ApplySnapshot",
    "Buffer",
    "Ignore",
    "NeedSnapshot",
    "OkxBookMessage",
    "OkxBookSync",
    "OkxError",
    "OkxParser",
    "OkxWireRules",
    "ParseResult",
    "Pong",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
    "UrlKind",
    "bar_of",
    "book_snapshot_request",
    "books_topic",
    "candle_topic",
    "candles_request",
    "error_class",
    "instruments_request",
    "market_index",
    "okx_checksum",
    "okx_checksum_string",
    "parse_candles",
    "parse_markets",
    "parse_message",
    "parse_order_book",
    "parse_rest_error",
    "parse_rest_trades",
    "parse_tickers",
    "resolve_urls",
    "retry_after",
    "ticker_request",
    "tickers_request",
    "tickers_topic",
    "topic_arg",
    "topic_of",
    "trades_request",
    "trades_topic",
    "url_kind",
]

EXCHANGE = "okx"

# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------

UrlKind = Literal["public", "business", "private"]

#: Production endpoints.  ``public``: books, bbo-tbt, trades, tickers;
#: ``business``: candles and trades-all; ``private``: login-only channels;
#: ``rest``: the REST API.  Demo trading uses ``wss://wspap.okx.com:8443``.
DEFAULT_URLS: Mapping[str, str] = {
    "public": "wss://ws.okx.com:8443/ws/v5/public",
    "business": "wss://ws.okx.com:8443/ws/v5/business",
    "private": "wss://ws.okx.com:8443/ws/v5/private",
    "rest": "https://www.okx.com",
}

_URL_SCHEMES = {
    "public": ("ws://", "wss://"),
    "business": ("ws://", "wss://"),
    "private": ("ws://", "wss://"),
    "rest": ("http://", "https://"),
}


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
            raise BadRequest(f"unknown OKX URL key {key!r}; valid keys are {valid}")
        if not isinstance(value, str) or not value.lower().startswith(_URL_SCHEMES[key]):
            schemes = " or ".join(_URL_SCHEMES[key])
            raise BadRequest(f"OKX URL {key!r} must start with {schemes}, got {value!r}")
        resolved[key] = value.rstrip("/")
    return resolved


# ---------------------------------------------------------------------------
# Channels and topics
# ---------------------------------------------------------------------------

#: Book channels that send ``action`` snapshot/update with ``seqId``/``prevSeqId``.
#: ``*-l2-tbt`` need a logged-in VIP4+ connection (error 64003 otherwise).
INCREMENTAL_BOOK_CHANNELS = frozenset({"books", "books-l2-tbt", "books50-l2-tbt", "books-elp"})
#: Every book channel; ``books5`` and ``bbo-tbt`` push whole (top-N) books.
BOOK_CHANNELS = INCREMENTAL_BOOK_CHANNELS | {"books5", "bbo-tbt"}
#: Levels per side the channel keeps: the ``sz`` to ask REST for when syncing.
BOOK_SNAPSHOT_DEPTH: Mapping[str, int] = {
    "books": 400,
    "books-l2-tbt": 400,
    "books50-l2-tbt": 50,
    "books-elp": 400,
    "books5": 5,
    "bbo-tbt": 1,
}
_TRADE_CHANNELS = frozenset({"trades", "trades-all"})

#: Unified timeframe -> OKX bar.  Bars of 6 hours and longer exist aligned to
#: UTC (``...utc``) and to UTC+8 (no suffix); the unified names are UTC, as
#: Binance's, and the UTC+8 bars get their own ``@+08:00`` timeframes so the
#: two never merge.  Hours up to 4H align the same way in both.
TIMEFRAMES: Mapping[str, str] = {
    "1s": "1s", "1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m",
    "1h": "1H", "2h": "2H", "4h": "4H",
    "6h": "6Hutc", "12h": "12Hutc", "1d": "1Dutc", "2d": "2Dutc", "3d": "3Dutc",
    "5d": "5Dutc", "1w": "1Wutc", "1M": "1Mutc", "3M": "3Mutc",
    "6h@+08:00": "6H", "12h@+08:00": "12H", "1d@+08:00": "1D", "2d@+08:00": "2D",
    "3d@+08:00": "3D", "5d@+08:00": "5D", "1w@+08:00": "1W", "1M@+08:00": "1M",
    "3M@+08:00": "3M",
}  # fmt: skip
_BAR_TIMEFRAME: Mapping[str, str] = {bar: tf for tf, bar in TIMEFRAMES.items()}

_BAD_ID_CHARS = frozenset(' :/\t\r\n"\\')


def _inst_id(inst_id: Any) -> str:
    if not isinstance(inst_id, str) or not inst_id or any(c in _BAD_ID_CHARS for c in inst_id):
        raise BadRequest(f"invalid OKX instrument id {inst_id!r}")
    return inst_id


def books_topic(inst_id: str, channel: str = "books") -> str:
    """A book topic: ``books:BTC-USDT`` (or ``books5``, ``bbo-tbt``, ``books50-l2-tbt``, ...)."""
    if channel not in BOOK_CHANNELS:
        raise BadRequest(
            f"unsupported OKX book channel {channel!r}; valid: {' '.join(sorted(BOOK_CHANNELS))}"
        )
    return f"{channel}:{_inst_id(inst_id)}"


def trades_topic(inst_id: str, *, every_fill: bool = False) -> str:
    """Trades: ``trades:BTC-USDT`` (public, aggregated per taker order and price) or,
    with ``every_fill``, ``trades-all:BTC-USDT`` (business, one message per fill)."""
    return f"{'trades-all' if every_fill else 'trades'}:{_inst_id(inst_id)}"


def tickers_topic(inst_id: str) -> str:
    """Ticker: ``tickers:BTC-USDT``."""
    return f"tickers:{_inst_id(inst_id)}"


def bar_of(timeframe: str) -> str:
    """OKX bar for a unified timeframe (``"1h"`` -> ``"1H"``, ``"1d"`` -> ``"1Dutc"``)."""
    bar = TIMEFRAMES.get(timeframe)
    if bar is None:
        raise BadRequest(f"unsupported OKX timeframe {timeframe!r}; valid: {' '.join(TIMEFRAMES)}")
    return bar


def candle_topic(inst_id: str, timeframe: str) -> str:
    """Candles (business URL): ``candle1m:BTC-USDT``; ``timeframe`` is unified.

    See :data:`TIMEFRAMES`.
    """
    return f"candle{bar_of(timeframe)}:{_inst_id(inst_id)}"


def _channel_known(channel: str) -> bool:
    return (
        channel in BOOK_CHANNELS
        or channel in _TRADE_CHANNELS
        or channel == "tickers"
        or (channel.startswith("candle") and channel[6:] in _BAR_TIMEFRAME)
    )


def topic_arg(topic: str) -> dict[str, str]:
    """``"books:BTC-USDT"`` -> ``{"channel": "books", "instId": "BTC-USDT"}``."""
    if not isinstance(topic, str):
        raise BadRequest(f"invalid OKX topic {topic!r}")
    channel, sep, inst_id = topic.partition(":")
    if not sep or not _channel_known(channel):
        raise BadRequest(f"invalid OKX topic {topic!r} (expected '<channel>:<instId>')")
    return {"channel": channel, "instId": _inst_id(inst_id)}


def topic_of(arg: Mapping[str, Any]) -> str:
    """The topic for an OKX ``arg`` object (the inverse of :func:`topic_arg`)."""
    return f"{arg['channel']}:{arg['instId']}"


def url_kind(topic: str) -> UrlKind:
    """Which URL serves ``topic``: ``"business"`` for candles and trades-all, else ``"public"``."""
    channel = topic_arg(topic)["channel"]
    if channel.startswith("candle") or channel == "trades-all":
        return "business"
    return "public"


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------

#: Subscribe/unsubscribe/login requests OKX accepts per connection per hour.
CONTROL_PER_HOUR = 480
#: Text ``ping`` after 25 s without traffic (OKX cuts silent connections at 30 s).
HEARTBEAT = Heartbeat("ping", idle_interval=25.0, pong="pong")
#: OKX advises under about 30 50/400-level book subscriptions per connection.
PUBLIC_TOPICS_PER_CONNECTION = 30


def _request_id_out(request_id: Any) -> str:
    # OKX: optional id, up to 32 alphanumerics, echoed in the replies.
    text = str(request_id)
    if not text.isascii() or not text.isalnum() or len(text) > 32:
        raise BadRequest(f"OKX request id must be 1-32 alphanumerics, got {request_id!r}")
    return text


def _request_id_in(value: Any) -> int | str | None:
    # The transport numbers requests with ints; OKX echoes them as strings.
    if type(value) is str:
        return int(value) if value.isascii() and value.isdigit() else value
    if type(value) is int:
        return value
    return None  # absent, or not something a request could have carried


@attrs.frozen
class OkxWireRules:
    """:class:`~txexchange.transport.rules.WireRules` for one OKX connection kind.

    Subscribe: ``{"id": "<n>", "op": "subscribe", "args": [{"channel", "instId"}, ...]}``.
    OKX echoes ``id`` in every reply (``{"id", "event": "subscribe", "arg",
    "connId"}``, ``{"id", "event": "error", "code", "msg", "connId"}``), so
    replies are matched by it: the transport's integer id is sent as its
    decimal string and read back as an int.  OKX acknowledges each argument
    separately; the first reply with the id settles the request, the rest
    reach the parser as :class:`ControlReply` / :class:`OkxError` values.  An
    error reply does not name the argument it refuses, so an error fails the
    whole request.

    Heartbeat: text ``ping`` when nothing was received for 25 s (OKX drops
    connections silent for 30 s), answered by text ``pong``.  Control rate:
    OKX allows 480 subscribe/unsubscribe/login requests per connection per
    hour, so requests leave at most every 7.5 s (the first at once; the
    transport batches what queues meanwhile).  ``max_topics_per_connection``
    on ``public`` follows OKX's advice to keep 50/400-level book
    subscriptions under about 30 per connection.  permessage-deflate is
    negotiated by the transport; frames are JSON text, never binary.
    """

    kind: UrlKind = "public"
    control_rate: float = CONTROL_PER_HOUR / 3600.0
    max_topics_per_message: int = 100
    max_topics_per_connection: int | None = attrs.field(
        default=attrs.Factory(
            lambda self: PUBLIC_TOPICS_PER_CONNECTION if self.kind == "public" else None,
            takes_self=True,
        )
    )
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = HEARTBEAT
    max_connection_age: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("public", "business", "private"):
            raise BadRequest(
                f"OKX connection kind must be public, business or private: {self.kind!r}"
            )

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"id": "<n>", "op": "subscribe", "args": [...]}``."""
        return self._control("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"id": "<n>", "op": "unsubscribe", "args": [...]}``."""
        return self._control("unsubscribe", topics, request_id)

    def _control(self, op: str, topics: Sequence[str], request_id: int) -> bytes:
        if not topics:
            raise BadRequest(f"OKX {op} needs at least one topic")
        if len(topics) > self.max_topics_per_message:
            raise BadRequest(
                f"OKX {op} of {len(topics)} topics exceeds "
                f"{self.max_topics_per_message} per message"
            )
        args = []
        for topic in topics:
            if self.kind != "private" and url_kind(topic) != self.kind:
                raise BadRequest(
                    f"OKX topic {topic!r} is served on the {url_kind(topic)!r} URL, "
                    f"not {self.kind!r}"
                )
            args.append(topic_arg(topic))
        payload = dumps({"id": _request_id_out(request_id), "op": op, "args": args})
        if len(payload) > 64 * 1024:
            raise BadRequest(f"OKX {op} request exceeds 64 KB")
        return payload

    def control_reply(self, message: Any) -> ControlReply | None:
        """A :class:`ControlReply` if ``message`` answers a request by id, else ``None``."""
        return _control_reply(message)

    def overlap_key(self, raw: bytes) -> Hashable:
        """OKX pushes the same bytes for the same public event on every connection."""
        return raw


def _control_reply(message: Any) -> ControlReply | None:
    if type(message) is not dict or "id" not in message:
        return None
    event = message.get("event")
    if event in ("subscribe", "unsubscribe"):
        return ControlReply(_request_id_in(message["id"]), True)
    if event == "error":
        return ControlReply(_request_id_in(message["id"]), False, _error_text(message))
    return None


def _error_text(message: Mapping[str, Any]) -> str:
    return f"{message.get('msg') or 'error'} (code {message.get('code')})"


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def _rest_data(payload: Any) -> list[Any]:
    """``data`` of a REST answer; an answer with a non-zero ``code`` raises its typed error."""
    if type(payload) is not dict:
        raise _bad("REST answer is not a JSON object", payload)
    code = payload.get("code")
    if code is None:
        raise _bad("REST answer without a 'code'", payload)
    if code != "0" and code != 0:
        raise parse_rest_error(200, None, payload)
    data = payload.get("data")
    if type(data) is not list:
        raise _bad("REST answer without a 'data' list", payload)
    return data


def parse_markets(payload: Any) -> dict[str, Market]:
    """Unified markets from ``GET /api/v5/public/instruments``, keyed by ``BASE/QUOTE``.

    ``id`` is ``instId`` (``BTC-USDT``); ``active`` is ``state == "live"``;
    ``tick_size`` is ``tickSz`` and ``amount_step`` is ``lotSz``.  Entries
    without a base and quote currency (derivatives) are skipped.
    """
    markets: dict[str, Market] = {}
    for entry in _rest_data(payload):
        if type(entry) is not dict:
            raise _bad("instrument entry is not an object", entry)
        inst_id = entry.get("instId")
        base = entry.get("baseCcy")
        quote = entry.get("quoteCcy")
        if not isinstance(inst_id, str) or not inst_id:
            raise _bad("instrument entry without instId", entry)
        if not isinstance(base, str) or not isinstance(quote, str):
            raise _bad("instrument entry with bad baseCcy/quoteCcy", entry)
        if not base or not quote:
            continue
        tick = entry.get("tickSz")
        step = entry.get("lotSz")
        symbol = f"{base}/{quote}"
        if symbol in markets:
            continue
        markets[symbol] = Market(
            symbol=symbol,
            id=inst_id,
            base=base,
            quote=quote,
            active=entry.get("state") == "live",
            tick_size=tick if isinstance(tick, str) and tick else None,
            amount_step=step if isinstance(step, str) and step else None,
            info=entry,
        )
    return markets


def market_index(payload: Any) -> MarketIndex:
    """:func:`parse_markets` wrapped in a :class:`MarketIndex`."""
    return MarketIndex.from_markets(parse_markets(payload).values(), EXCHANGE)


# ---------------------------------------------------------------------------
# Outcomes besides events
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class OkxError:
    """An ``{"event": "error", "code", "msg"}`` message not consumed as a request's reply.

    ``request_id`` is the echoed ``id`` (an int when it was one of the
    transport's), ``None`` when OKX sent none.  :meth:`exception` gives the
    typed error.
    """

    code: str
    message: str
    request_id: Any = None
    conn_id: str | None = None

    def exception(self) -> ExchangeError:
        """The typed error for this code (unknown codes: :class:`SubscriptionError`)."""
        cls = error_class(self.code, default=SubscriptionError)
        error = cls(f"OKX error {self.code}: {self.message}")
        error.code = self.code  # type: ignore[attr-defined]
        return error


@attrs.frozen(slots=True)
class Pong:
    """OKX's text ``pong`` answer to a ``ping`` (the transport normally swallows it)."""


PONG = Pong()

# ---------------------------------------------------------------------------
# Messages (the per-message hot path)
# ---------------------------------------------------------------------------

Event = BookSnapshot | OkxBookMessage | Trade | Candle | Ticker
#: What :meth:`OkxParser.parse` returns: events (usually one), a reply to a
#: control request, a shutdown notice (64008), an error, a pong or an
#: :class:`Unknown` marker.
ParseResult = list[Event] | ControlReply | ServerShutdown | OkxError | Pong | Unknown

#: Handlers take (data, symbol, extra, action); ``extra`` is the channel or timeframe.
_Handler = Callable[[Any, str, Any, Any], list[Any]]


def _bad(what: str, data: Any) -> MalformedMessage:
    return MalformedMessage(f"OKX {what}: {data!r:.300}")


def _ms(value: Any, what: str, d: Any) -> int:
    """A millisecond timestamp sent as a decimal string (or an int)."""
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is int:
        return value
    raise _bad(f"bad {what}", d)


def _seq(value: Any, what: str, d: Any) -> int:
    if type(value) is int:
        return value
    raise _bad(f"bad {what}", d)


def _levels(raw: Any, d: Any) -> list[tuple[str, str]]:
    """OKX ``[px, sz, "0", numOrders]`` levels -> ``(px, sz)`` pairs, strings untouched."""
    if type(raw) is not list:
        raise _bad("book side is not a list", d)
    out: list[tuple[str, str]] = []
    append = out.append
    for level in raw:
        if type(level) is not list or len(level) < 2:
            raise _bad("book level is not a [px, sz, ...] list", d)
        price = level[0]
        size = level[1]
        if type(price) is not str or type(size) is not str:
            raise _bad("book level with non-string px/sz", d)
        append((price, size))
    return out


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if type(value) is str:
        return value
    raise _bad(f"field {key!r} is not a string", d)


def _incremental_book(
    data: list[Any], symbol: str, channel: str, action: Any
) -> list[OkxBookMessage]:
    if action == "snapshot":
        snapshot = True
    elif action == "update":
        snapshot = False
    else:
        raise _bad(f"{channel} push with bad action {action!r}", data)
    out: list[OkxBookMessage] = []
    for d in data:
        if type(d) is not dict:
            raise _bad(f"{channel} data item is not an object", d)
        bids = _levels(d.get("bids"), d)
        asks = _levels(d.get("asks"), d)
        seq = _seq(d.get("seqId"), "seqId", d)
        ts = _ms(d.get("ts"), "ts", d) if "ts" in d else None
        checksum = d.get("checksum", 0)
        if type(checksum) is not int:
            raise _bad("bad checksum", d)
        event: BookSnapshot | BookDelta
        if snapshot:
            event = BookSnapshot(symbol, bids, asks, seq, ts)
        else:
            prev = _seq(d.get("prevSeqId"), "prevSeqId", d)
            event = BookDelta(symbol, bids, asks, seq, None, prev, ts)
        out.append(OkxBookMessage(event, checksum, channel))
    return out


def _whole_book(data: list[Any], symbol: str, channel: str, _action: Any) -> list[BookSnapshot]:
    out: list[BookSnapshot] = []
    for d in data:
        if type(d) is not dict:
            raise _bad(f"{channel} data item is not an object", d)
        seq = d.get("seqId")
        if seq is not None and type(seq) is not int:
            raise _bad("bad seqId", d)
        ts = _ms(d.get("ts"), "ts", d) if "ts" in d else None
        out.append(
            BookSnapshot(symbol, _levels(d.get("bids"), d), _levels(d.get("asks"), d), seq, ts)
        )
    return out


def _trade(d: Any, symbol: str) -> Trade:
    if type(d) is not dict:
        raise _bad("trade is not an object", d)
    trade_id = d.get("tradeId")
    price = d.get("px")
    size = d.get("sz")
    side = d.get("side")
    if type(trade_id) is not str or type(price) is not str or type(size) is not str:
        raise _bad("trade with bad tradeId/px/sz", d)
    if side != "buy" and side != "sell":
        raise _bad("trade with bad side", d)
    # ``side`` is the taker's side.
    return Trade(symbol, trade_id, _ms(d.get("ts"), "ts", d), price, size, side, "taker")


def _trades(data: list[Any], symbol: str, _channel: str, _action: Any) -> list[Trade]:
    return [_trade(d, symbol) for d in data]


def _ticker(d: Any, symbol: str) -> Ticker:
    if type(d) is not dict:
        raise _bad("ticker is not an object", d)
    ts = _ms(d.get("ts"), "ts", d) if d.get("ts") not in (None, "") else None
    last = _opt_str(d, "last")
    # Spot: vol24h is in the base currency, volCcy24h in the quote currency.
    return Ticker(
        symbol,
        timestamp=ts,
        bid=_opt_str(d, "bidPx"),
        bid_volume=_opt_str(d, "bidSz"),
        ask=_opt_str(d, "askPx"),
        ask_volume=_opt_str(d, "askSz"),
        last=last,
        open=_opt_str(d, "open24h"),
        high=_opt_str(d, "high24h"),
        low=_opt_str(d, "low24h"),
        close=last,
        base_volume=_opt_str(d, "vol24h"),
        quote_volume=_opt_str(d, "volCcy24h"),
    )


def _tickers(data: list[Any], symbol: str, _channel: str, _action: Any) -> list[Ticker]:
    return [_ticker(d, symbol) for d in data]


def _candle(row: Any, symbol: str, timeframe: str) -> Candle:
    if type(row) is not list or len(row) < 6:
        raise _bad("candle is not a [ts, o, h, l, c, vol, ...] list", row)
    ts = _ms(row[0], "candle ts", row)
    o, h, lo, c, vol = row[1], row[2], row[3], row[4], row[5]
    if not (type(o) is type(h) is type(lo) is type(c) is type(vol) is str):
        raise _bad("candle with non-string values", row)
    confirm = row[8] if len(row) > 8 else "0"
    if confirm != "0" and confirm != "1":
        raise _bad("candle with bad confirm", row)
    return Candle(symbol, timeframe, ts, o, h, lo, c, vol, confirm == "1")


def _candles(data: list[Any], symbol: str, timeframe: str, _action: Any) -> list[Candle]:
    return [_candle(row, symbol, timeframe) for row in data]


_MAX_ROUTES = 8192


class OkxParser:
    """Turns decoded OKX v5 messages into typed outcomes.

    One parser per :class:`MarketIndex`.  Data pushes are routed by their
    ``arg`` (channel and instrument); the route of each pair is worked out
    once and cached.

    :meth:`parse` returns a list of events (:class:`OkxBookMessage` for the
    incremental book channels -- feed those to an :class:`OkxBookSync` --,
    :class:`~txexchange.events.BookSnapshot` for ``books5`` and ``bbo-tbt``,
    :class:`~txexchange.events.Trade`, :class:`~txexchange.events.Ticker`,
    :class:`~txexchange.events.Candle`), a
    :class:`~txexchange.transport.rules.ControlReply` (subscribe/unsubscribe
    and login acknowledgements), an :class:`OkxError`, a
    :class:`~txexchange.adapters.ServerShutdown` (notice 64008: the
    connection closes for a service upgrade in 60 s), :data:`PONG`, or an
    :class:`~txexchange.adapters.Unknown`.  A message of the wrong shape
    raises :class:`~txexchange.errors.MalformedMessage` and nothing else.
    Book levels become ``(price, size)`` tuples of the exchange's strings.
    """

    __slots__ = ("_routes", "index")

    def __init__(self, index: MarketIndex) -> None:
        self.index = index
        self._routes: dict[tuple[Any, Any], tuple[_Handler, str, Any] | Unknown] = {}

    def parse(self, message: Any) -> ParseResult:
        """Parse one decoded message (see the class docstring)."""
        if type(message) is dict:
            arg = message.get("arg")
            data = message.get("data")
            if arg is not None and data is not None and "event" not in message:
                return self._push(message, arg, data)
            if "event" in message:
                return self._event(message)
            return Unknown("OKX message without arg/data or event", message)
        if message == "pong" or message == b"pong":
            return PONG
        raise _bad("message is not a JSON object", message)

    def _push(self, message: dict[str, Any], arg: Any, data: Any) -> ParseResult:
        if type(arg) is not dict:
            raise _bad("arg is not an object", message)
        key = (arg.get("channel"), arg.get("instId"))
        try:
            route = self._routes.get(key)
        except TypeError:  # unhashable channel/instId
            raise _bad("arg with bad channel/instId", message) from None
        if route is None:
            route = self._route(key)
        if type(route) is Unknown:
            return Unknown(route.reason, message)
        if type(data) is not list:
            raise _bad("data is not a list", message)
        handler, symbol, extra = route  # type: ignore[misc]
        try:
            return handler(data, symbol, extra, message.get("action"))
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise _bad(f"{key[0]} push missing or bad {e}", message) from None

    def _route(self, key: tuple[Any, Any]) -> tuple[_Handler, str, Any] | Unknown:
        route = self._compute_route(*key)
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[key] = route
        return route

    def _compute_route(self, channel: Any, inst_id: Any) -> tuple[_Handler, str, Any] | Unknown:
        if type(channel) is not str:
            raise _bad("arg without a channel", channel)
        if type(inst_id) is not str:
            return Unknown(f"{channel} push without instId")
        market = self.index.by_id.get(inst_id)
        if market is None:
            return Unknown(f"{channel} push for {inst_id!r}, not in the market list")
        symbol = market.symbol
        if channel in INCREMENTAL_BOOK_CHANNELS:
            return (_incremental_book, symbol, channel)
        if channel in ("books5", "bbo-tbt"):
            return (_whole_book, symbol, channel)
        if channel in _TRADE_CHANNELS:
            return (_trades, symbol, channel)
        if channel == "tickers":
            return (_tickers, symbol, channel)
        if channel.startswith("candle"):
            timeframe = _BAR_TIMEFRAME.get(channel[6:])
            if timeframe is not None:
                return (_candles, symbol, timeframe)
        return Unknown(f"no parser for OKX channel {channel!r}")

    def _event(self, message: dict[str, Any]) -> ParseResult:
        event = message["event"]
        if event in ("subscribe", "unsubscribe", "login"):
            return ControlReply(_request_id_in(message.get("id")), True)
        code = message.get("code")
        msg = message.get("msg")
        if code is not None and type(code) is not str:
            raise _bad(f"{event} with a non-string code", message)
        if msg is not None and type(msg) is not str:
            raise _bad(f"{event} with a non-string msg", message)
        conn = message.get("connId")
        conn_id = conn if type(conn) is str else None
        if event == "error":
            return OkxError(code or "", msg or "", _request_id_in(message.get("id")), conn_id)
        if event == "notice":
            if code == "64008":
                return ServerShutdown(EXCHANGE, None, f"64008: {msg or 'service upgrade'}")
            return Unknown(f"OKX notice {code}: {msg}", message)
        return Unknown(f"OKX event {event!r}", message)


_parsers: WeakKeyDictionary[MarketIndex, OkxParser] = WeakKeyDictionary()


def parse_message(message: Any, index: MarketIndex) -> ParseResult:
    """Parse one decoded message with the (cached) :class:`OkxParser` for ``index``."""
    parser = _parsers.get(index)
    if parser is None:
        parser = _parsers[index] = OkxParser(index)
    return parser.parse(message)


# ---------------------------------------------------------------------------
# REST: request descriptions
# ---------------------------------------------------------------------------


def _check_limit(limit: Any, low: int, high: int, what: str) -> None:
    if type(limit) is not int or not low <= limit <= high:
        raise BadRequest(f"{what} must be an integer in {low}..{high}, got {limit!r}")


def instruments_request(inst_type: str = "SPOT") -> RestRequest:
    """``GET /api/v5/public/instruments?instType=SPOT`` (answer: :func:`parse_markets`)."""
    return RestRequest("GET", "/api/v5/public/instruments", {"instType": inst_type})


def book_snapshot_request(inst_id: str, sz: int = 400, *, source: int | None = None) -> RestRequest:
    """``GET /api/v5/market/books?instId=..&sz=..`` (answer: :func:`parse_order_book`).

    ``sz`` is 1..400 levels per side (use :data:`BOOK_SNAPSHOT_DEPTH` for the
    channel being synced); ``source`` is sent only when given (OKX's sync
    procedure mentions ``source=0``).  Limit: 40 requests per 2 s per IP.
    """
    _check_limit(sz, 1, 400, "OKX books sz")
    params: dict[str, Any] = {"instId": _inst_id(inst_id), "sz": sz}
    if source is not None:
        params["source"] = source
    return RestRequest("GET", "/api/v5/market/books", params)


def candles_request(
    inst_id: str,
    timeframe: str,
    *,
    after: int | None = None,
    before: int | None = None,
    limit: int = 100,
) -> RestRequest:
    """``GET /api/v5/market/candles`` (answer: :func:`parse_candles`).

    ``after``: candles older than this ts (ms); ``before``: newer.  ``limit`` 1..300.
    """
    _check_limit(limit, 1, 300, "OKX candles limit")
    params: dict[str, Any] = {"instId": _inst_id(inst_id), "bar": bar_of(timeframe)}
    if after is not None:
        params["after"] = after
    if before is not None:
        params["before"] = before
    params["limit"] = limit
    return RestRequest("GET", "/api/v5/market/candles", params)


def trades_request(inst_id: str, limit: int = 100) -> RestRequest:
    """``GET /api/v5/market/trades`` (recent trades, 1..500; answer: :func:`parse_rest_trades`)."""
    _check_limit(limit, 1, 500, "OKX trades limit")
    return RestRequest(
        "GET", "/api/v5/market/trades", {"instId": _inst_id(inst_id), "limit": limit}
    )


def ticker_request(inst_id: str) -> RestRequest:
    """``GET /api/v5/market/ticker?instId=..`` (answer: :func:`parse_tickers`)."""
    return RestRequest("GET", "/api/v5/market/ticker", {"instId": _inst_id(inst_id)})


def tickers_request(inst_type: str = "SPOT") -> RestRequest:
    """``GET /api/v5/market/tickers?instType=SPOT`` (all; answer: :func:`parse_tickers`)."""
    return RestRequest("GET", "/api/v5/market/tickers", {"instType": inst_type})


# ---------------------------------------------------------------------------
# REST: answers
# ---------------------------------------------------------------------------


def parse_order_book(symbol: str, payload: Any) -> BookSnapshot:
    """``GET /api/v5/market/books`` answer -> :class:`BookSnapshot` (``nonce`` = ``seqId``).

    ``nonce`` is ``None`` if the answer has no ``seqId`` (such a snapshot
    can be shown but not joined to the stream).
    """
    data = _rest_data(payload)
    if not data or type(data[0]) is not dict:
        raise _bad("books answer without a book", payload)
    d = data[0]
    seq = d.get("seqId")
    if seq is not None and type(seq) is not int:
        raise _bad("books answer with bad seqId", payload)
    ts = _ms(d.get("ts"), "ts", d) if "ts" in d else None
    return BookSnapshot(symbol, _levels(d.get("bids"), d), _levels(d.get("asks"), d), seq, ts)


def parse_candles(symbol: str, timeframe: str, payload: Any) -> list[Candle]:
    """``GET /api/v5/market/candles`` answer -> candles, oldest first (OKX sends newest first)."""
    candles = [_candle(row, symbol, timeframe) for row in _rest_data(payload)]
    candles.sort(key=lambda c: c.timestamp)
    return candles


def _trade_order(trade: Trade) -> tuple[int, int, str]:
    tid = trade.id
    return (trade.timestamp, int(tid) if tid.isascii() and tid.isdigit() else 0, tid)


def parse_rest_trades(symbol: str, payload: Any) -> list[Trade]:
    """``GET /api/v5/market/trades`` answer -> trades, oldest first (OKX sends newest first)."""
    trades = [_trade(d, symbol) for d in _rest_data(payload)]
    trades.sort(key=_trade_order)
    return trades


def parse_tickers(payload: Any, index: MarketIndex) -> list[Ticker]:
    """``GET /api/v5/market/ticker(s)`` answer -> tickers (markets not in ``index`` skipped)."""
    tickers: list[Ticker] = []
    by_id = index.by_id
    for d in _rest_data(payload):
        if type(d) is not dict:
            raise _bad("ticker is not an object", d)
        inst_id = d.get("instId")
        if type(inst_id) is not str:
            raise _bad("ticker without instId", d)
        market = by_id.get(inst_id)
        if market is not None:
            tickers.append(_ticker(d, market.symbol))
    return tickers


# ---------------------------------------------------------------------------
# REST: errors
# ---------------------------------------------------------------------------

#: OKX error codes (REST ``{"code": "50011", "msg": ...}`` and WebSocket
#: ``event: error``) -> error class.  From OKX's v5 error-code tables.
ERROR_CODES: Mapping[str, type[ExchangeError]] = {
    "50001": ExchangeNotAvailable,  # service temporarily unavailable
    "50004": RequestTimeout,  # endpoint request timeout (outcome unknown)
    "50011": RateLimitExceeded,  # rate limit reached (HTTP 429)
    "50013": ExchangeNotAvailable,  # systems are busy
    "50014": BadRequest,  # parameter cannot be empty
    "50026": ExchangeNotAvailable,  # system error
    "50061": RateLimitExceeded,  # sub-account rate limit exceeded
    "50102": InvalidNonce,  # timestamp request expired
    "50103": AuthenticationError,  # OK-ACCESS-KEY header missing
    "50104": AuthenticationError,  # OK-ACCESS-PASSPHRASE header missing
    "50105": AuthenticationError,  # OK-ACCESS-PASSPHRASE incorrect
    "50106": AuthenticationError,  # OK-ACCESS-SIGN header missing
    "50107": AuthenticationError,  # OK-ACCESS-TIMESTAMP header missing
    "50110": PermissionDenied,  # IP not in the key's whitelist
    "50111": AuthenticationError,  # invalid OK-ACCESS-KEY
    "50112": InvalidNonce,  # invalid OK-ACCESS-TIMESTAMP
    "50113": AuthenticationError,  # invalid signature
    "51000": BadRequest,  # parameter error
    "51001": BadSymbol,  # instrument id does not exist
    "51006": InvalidOrder,  # order price out of the limit
    "51008": InsufficientFunds,  # insufficient balance
    "51016": DuplicateOrderId,  # duplicated clOrdId
    "51020": InvalidOrder,  # order amount below the minimum
    "51119": InsufficientFunds,  # insufficient balance (margin)
    "51131": InsufficientFunds,  # insufficient balance
    "51400": OrderNotFound,  # cancel failed: filled, canceled or does not exist
    "51401": OrderNotFound,  # cancel failed: order already canceled
    "51402": OrderNotFound,  # cancel failed: order already filled
    "51603": OrderNotFound,  # order does not exist
    "60004": InvalidNonce,  # WebSocket login: invalid timestamp
    "60005": AuthenticationError,  # WebSocket login: invalid apiKey
    "60006": InvalidNonce,  # WebSocket login: timestamp request expired
    "60007": AuthenticationError,  # WebSocket login: invalid sign
    "60009": AuthenticationError,  # WebSocket login failed
    "60011": AuthenticationError,  # please log in
    "60012": BadRequest,  # invalid request
    "60014": RateLimitExceeded,  # requests too frequent
    "60024": AuthenticationError,  # WebSocket login: wrong passphrase
    "60018": BadSymbol,  # wrong URL, channel or instId
    "64003": PermissionDenied,  # channel needs a higher VIP level
    "64008": ExchangeNotAvailable,  # connection closes for a service upgrade
}


def error_class(code: Any, default: type[ExchangeError] = ExchangeError) -> type[ExchangeError]:
    """The error class for an OKX code (string or int), ``default`` if unknown."""
    return ERROR_CODES.get(str(code), default) if code is not None else default


def retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (mapping or Twisted ``Headers``), else ``None``."""
    if headers is None:
        return None
    values: Any = None
    if hasattr(headers, "getRawHeaders"):
        values = headers.getRawHeaders("Retry-After")
    else:
        for key, value in headers.items():
            name = key.decode("latin-1") if isinstance(key, bytes) else str(key)
            if name.lower() == "retry-after":
                values = value
                break
    if isinstance(values, (list, tuple)):
        values = values[0] if values else None
    if isinstance(values, bytes):
        values = values.decode("latin-1")
    try:
        return float(values) if values is not None else None
    except (TypeError, ValueError):
        return None


def parse_rest_error(status: int, headers: Any, body: Any) -> ExchangeError:
    """The typed error for a failed REST answer (``body``: bytes, str or decoded JSON).

    A known OKX ``code`` decides (``50011`` -> :class:`RateLimitExceeded`,
    ``51001`` -> :class:`BadSymbol`, ...); otherwise 429 ->
    :class:`RateLimitExceeded`, 5xx -> :class:`ExchangeNotAvailable`, 401 ->
    :class:`AuthenticationError`, 403 -> :class:`PermissionDenied`, other 4xx
    -> :class:`BadRequest`.  Rate-limit errors carry ``retry_after`` from the
    ``Retry-After`` header; every error carries ``status`` and ``code``
    attributes (``code`` is OKX's string).
    """
    payload = body
    if isinstance(body, (bytes, str)):
        try:
            payload = loads(body) if body else None
        except DecodeError:
            payload = None
    code: str | None = None
    msg: str | None = None
    if isinstance(payload, dict):
        raw_code = payload.get("code")
        if type(raw_code) is int:
            raw_code = str(raw_code)
        code = raw_code if isinstance(raw_code, str) and raw_code else None
        raw_msg = payload.get("msg")
        msg = raw_msg if isinstance(raw_msg, str) and raw_msg else None
        if msg is None:
            # order endpoints put the reason in data[0].sMsg
            data = payload.get("data")
            if isinstance(data, list) and data and isinstance(data[0], dict):
                s_msg = data[0].get("sMsg")
                msg = s_msg if isinstance(s_msg, str) and s_msg else None
    if msg is None and isinstance(body, (bytes, str)) and body and payload is None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        msg = text[:200]
    text = f"OKX HTTP {status}"
    if code is not None:
        text += f" code {code}"
    if msg:
        text += f": {msg}"
    cls = ERROR_CODES.get(code) if code is not None else None
    if cls is None:
        if status == 429:
            cls = RateLimitExceeded
        elif status >= 500:
            cls = ExchangeNotAvailable
        elif status == 401:
            cls = AuthenticationError
        elif status == 403:
            cls = PermissionDenied
        elif 400 <= status < 500:
            cls = BadRequest
        else:
            cls = ExchangeError
    limited = issubclass(cls, RateLimitExceeded)
    error = cls(text, retry_after(headers)) if limited else cls(text)  # type: ignore[call-arg]
    error.status = status  # type: ignore[attr-defined]
    error.code = code  # type: ignore[attr-defined]
    return error
