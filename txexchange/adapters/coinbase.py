"""Coinbase Exchange public market-data adapter: URLs, topics, wire rules, message parsing, REST.

Sits between the transport (which hands over decoded JSON and sends the
control frames built here) and the state layer (which receives the typed
events from :mod:`txexchange.events`).  Everything is pure: requests are
described as :class:`~txexchange.adapters.rest.RestRequest` values and
responses are parsed from already-decoded JSON; the client layer does the I/O.
Book and trade integrity (level2 resubscribe rules, trade-id gaps found by
``matches`` and ``heartbeat``) live in :mod:`txexchange.adapters.coinbase_book`.

This is Coinbase *Exchange* (``wss://ws-feed.exchange.coinbase.com``,
``https://api.exchange.coinbase.com``), not Advanced Trade.  Topics are the
adapter's own strings ``"<channel>:<product_id>"`` (``"level2_batch:BTC-USD"``,
``"ticker:BTC-USD"``, ``"matches:BTC-USD"``, ``"heartbeat:BTC-USD"``).  One
subscribe message carries any mix of them; Coinbase answers with a
``subscriptions`` message listing *everything* the connection is subscribed to
(no request id), so control requests are not matched to replies: the parser
returns :class:`CoinbaseSubscriptions` and :class:`CoinbaseError` values for
the client to compare with what it asked for.

Coinbase closes a connection that has not subscribed within 5 s of opening
(:data:`SUBSCRIBE_DEADLINE`): a connection is opened only with topics to send.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from weakref import WeakKeyDictionary

import attrs

from txexchange.adapters import Unknown
from txexchange.adapters.coinbase_book import (
    ApplyDelta,
    ApplySnapshot,
    BookAction,
    CoinbaseBookSync,
    CoinbaseHeartbeat,
    CoinbaseMatch,
    CoinbaseTradeSync,
    EmitTrade,
    Ignore,
    MissedTrades,
    Resync,
    TradeAction,
    is_crossed,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import DecodeError, dumps, loads
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    ExchangeError,
    ExchangeNotAvailable,
    InvalidNonce,
    MalformedMessage,
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
    "CHANNELS",
    "DEFAULT_URLS",
    "EXCHANGE",
    "GRANULARITIES",
    "HEARTBEAT_INTERVAL",
    "SANDBOX_URLS",
    "SUBSCRIBE_DEADLINE",
    "ApplyDelta",
    "ApplySnapshot",
    "BookAction",
    "CoinbaseBookSync",
    "CoinbaseError",
    "CoinbaseHeartbeat",
    "CoinbaseMatch",
    "CoinbaseParser",
    "CoinbaseSubscriptions",
    "CoinbaseTradeSync",
    "CoinbaseWireRules",
    "EmitTrade",
    "Ignore",
    "MissedTrades",
    "ParseResult",
    "Resync",
    "TradeAction",
    "book_request",
    "candles_request",
    "error_class",
    "granularity_of",
    "heartbeat_topic",
    "is_crossed",
    "level2_topic",
    "market_index",
    "matches_topic",
    "missed_trades_request",
    "parse_candles",
    "parse_markets",
    "parse_message",
    "parse_order_book",
    "parse_rest_error",
    "parse_rest_trades",
    "parse_subscribe",
    "parse_ticker",
    "products_request",
    "render_number",
    "resolve_urls",
    "retry_after",
    "stats_request",
    "subscribe_payload",
    "ticker_request",
    "ticker_topic",
    "topic_parts",
    "trades_in",
    "trades_request",
    "with_heartbeats",
]

EXCHANGE = "coinbase"

# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------

#: Production endpoints.  ``ws``: the public feed; ``ws_direct``: the
#: lower-latency feed (authenticated subscribes only; ``ws`` is its
#: fail-over); ``rest``: the REST API.
DEFAULT_URLS: Mapping[str, str] = {
    "ws": "wss://ws-feed.exchange.coinbase.com",
    "ws_direct": "wss://ws-direct.exchange.coinbase.com",
    "rest": "https://api.exchange.coinbase.com",
}

#: The sandbox, for ``urls=SANDBOX_URLS``.
SANDBOX_URLS: Mapping[str, str] = {
    "ws": "wss://ws-feed-public.sandbox.exchange.coinbase.com",
    "ws_direct": "wss://ws-direct.sandbox.exchange.coinbase.com",
    "rest": "https://api-public.sandbox.exchange.coinbase.com",
}

_URL_SCHEMES = {
    "ws": ("ws://", "wss://"),
    "ws_direct": ("ws://", "wss://"),
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
            raise BadRequest(f"unknown Coinbase URL key {key!r}; valid keys are {valid}")
        if not isinstance(value, str) or not value.lower().startswith(_URL_SCHEMES[key]):
            schemes = " or ".join(_URL_SCHEMES[key])
            raise BadRequest(f"Coinbase URL {key!r} must start with {schemes}, got {value!r}")
        resolved[key] = value.rstrip("/")
    return resolved


# ---------------------------------------------------------------------------
# Channels and topics
# ---------------------------------------------------------------------------

#: Book channels: ``level2_batch`` (public, 50 ms batches; documented alias
#: ``level2_50``) and ``level2`` (needs an authenticated subscribe).  All send
#: ``snapshot`` + ``l2update``.
BOOK_CHANNELS = frozenset({"level2_batch", "level2_50", "level2"})
#: Every per-product channel this adapter subscribes to and parses.
#: ``ticker_batch`` (alias ``ticker_1000``) sends ``ticker`` messages every 5 s
#: instead of on every match.
CHANNELS = BOOK_CHANNELS | {"ticker", "ticker_batch", "ticker_1000", "matches", "heartbeat"}
#: Coinbase closes a connection with no subscribe this many seconds after opening.
SUBSCRIBE_DEADLINE = 5.0
#: The ``heartbeat`` channel sends one message per product this often (s).
HEARTBEAT_INTERVAL = 1.0

_BAD_ID_CHARS = frozenset(' :/\t\r\n"\\')


def _product_id(product_id: Any) -> str:
    if (
        not isinstance(product_id, str)
        or not product_id
        or len(product_id) > 64
        or any(c in _BAD_ID_CHARS for c in product_id)
    ):
        raise BadRequest(f"invalid Coinbase product id {product_id!r}")
    return product_id


def level2_topic(product_id: str, channel: str = "level2_batch") -> str:
    """A book topic: ``level2_batch:BTC-USD`` (``level2`` needs an authenticated subscribe)."""
    if channel not in BOOK_CHANNELS:
        raise BadRequest(
            f"unsupported Coinbase book channel {channel!r}; "
            f"valid: {' '.join(sorted(BOOK_CHANNELS))}"
        )
    return f"{channel}:{_product_id(product_id)}"


def ticker_topic(product_id: str, *, batch: bool = False) -> str:
    """Ticker: ``ticker:BTC-USD`` (every match) or ``ticker_batch:BTC-USD`` (every 5 s)."""
    return f"{'ticker_batch' if batch else 'ticker'}:{_product_id(product_id)}"


def matches_topic(product_id: str) -> str:
    """Trades: ``matches:BTC-USD`` (first a ``last_match``, then every ``match``)."""
    return f"matches:{_product_id(product_id)}"


def heartbeat_topic(product_id: str) -> str:
    """Heartbeat: ``heartbeat:BTC-USD`` (``sequence`` and ``last_trade_id`` every second)."""
    return f"heartbeat:{_product_id(product_id)}"


def topic_parts(topic: Any) -> tuple[str, str]:
    """``"level2_batch:BTC-USD"`` -> ``("level2_batch", "BTC-USD")``."""
    if not isinstance(topic, str):
        raise BadRequest(f"invalid Coinbase topic {topic!r}")
    channel, sep, product_id = topic.partition(":")
    if not sep or channel not in CHANNELS:
        raise BadRequest(
            f"invalid Coinbase topic {topic!r} (expected '<channel>:<product_id>' with channel "
            f"one of {' '.join(sorted(CHANNELS))})"
        )
    return channel, _product_id(product_id)


def with_heartbeats(topics: Iterable[str]) -> list[str]:
    """``topics`` plus ``heartbeat:<product>`` for every product among them (order kept).

    Heartbeats keep a quiet product's connection busy (so a stall watchdog
    can tell silence from death) and carry the ``last_trade_id`` that
    :class:`CoinbaseTradeSync` checks ``matches`` against.
    """
    out: list[str] = []
    seen: set[str] = set()
    for topic in topics:
        _, product_id = topic_parts(topic)
        if topic not in seen:
            seen.add(topic)
            out.append(topic)
        hb = f"heartbeat:{product_id}"
        if hb not in seen:
            seen.add(hb)
            out.append(hb)
    return out


def subscribe_payload(
    op: Literal["subscribe", "unsubscribe"],
    topics: Sequence[str],
    form: Literal["auto", "flat", "objects"] = "auto",
) -> dict[str, Any]:
    """The (un)subscribe message for ``topics`` as a dict.

    ``"flat"``: ``{"type", "product_ids": [...], "channels": ["name", ...]}``,
    possible only when the topics are every channel for every product;
    ``"objects"``: ``{"type", "channels": [{"name", "product_ids"}, ...]}``
    (any mix); ``"auto"``: flat when possible, else objects.  Products and
    channels keep their first-seen order.
    """
    if op not in ("subscribe", "unsubscribe"):
        raise BadRequest(f"Coinbase control type must be subscribe or unsubscribe, not {op!r}")
    if form not in ("auto", "flat", "objects"):
        raise BadRequest(f"form must be 'auto', 'flat' or 'objects', not {form!r}")
    if not topics:
        raise BadRequest(f"Coinbase {op} needs at least one topic")
    by_channel: dict[str, list[str]] = {}
    products: dict[str, None] = {}
    unique: set[tuple[str, str]] = set()
    for topic in topics:
        channel, product_id = topic_parts(topic)
        if (channel, product_id) in unique:
            continue
        unique.add((channel, product_id))
        by_channel.setdefault(channel, []).append(product_id)
        products[product_id] = None
    rectangular = len(unique) == len(by_channel) * len(products)
    if form == "flat" and not rectangular:
        raise BadRequest(
            "Coinbase flat subscribe needs every channel for every product; use form='objects'"
        )
    if form == "flat" or (form == "auto" and rectangular):
        return {"type": op, "product_ids": list(products), "channels": list(by_channel)}
    return {
        "type": op,
        "channels": [{"name": name, "product_ids": ids} for name, ids in by_channel.items()],
    }


def parse_subscribe(message: Any) -> tuple[str, list[str]]:
    """The type and topics of a client's (un)subscribe message, in either form.

    For fake servers and recorders.  Top-level ``product_ids`` apply to
    channels given by name; a channel object's own ``product_ids`` to it.
    Topics with channels this adapter does not know are kept as
    ``"<channel>:<product>"`` all the same.
    """
    if type(message) is not dict:
        raise MalformedMessage(f"Coinbase subscribe is not an object: {message!r:.200}")
    op = message.get("type")
    if op not in ("subscribe", "unsubscribe"):
        raise MalformedMessage(f"Coinbase control message with type {op!r}")
    top = message.get("product_ids", [])
    channels = message.get("channels")
    if type(top) is not list or not all(type(p) is str for p in top):
        raise MalformedMessage("Coinbase subscribe with bad product_ids")
    if type(channels) is not list:
        raise MalformedMessage("Coinbase subscribe without a channels list")
    topics: list[str] = []
    for entry in channels:
        if type(entry) is str:
            name, ids = entry, top
        elif type(entry) is dict:
            name = entry.get("name")
            ids = entry.get("product_ids", top)
            if type(name) is not str or type(ids) is not list:
                raise MalformedMessage(f"Coinbase subscribe channel of wrong shape: {entry!r:.200}")
            if not all(type(p) is str for p in ids):
                raise MalformedMessage("Coinbase subscribe channel with bad product_ids")
        else:
            raise MalformedMessage(f"Coinbase subscribe channel of wrong shape: {entry!r:.200}")
        topics.extend(f"{name}:{p}" for p in ids)
    return op, topics


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------


@attrs.frozen
class CoinbaseWireRules:
    """:class:`~txexchange.transport.rules.WireRules` for the ``ws`` (or ``ws_direct``) feed.

    Subscribe: ``{"type": "subscribe", "product_ids": [...], "channels": [...]}``
    or the per-channel object form (:func:`subscribe_payload`, ``form``).
    Coinbase carries no request id and answers every (un)subscribe with a
    ``subscriptions`` message listing the connection's whole state, so
    ``replies_to_control`` is false: a request counts as done when sent, and
    the parser hands :class:`CoinbaseSubscriptions` / :class:`CoinbaseError`
    to the client.  The transport must send the first subscribe as soon as
    the connection opens (Coinbase disconnects after 5 s without one).

    Heartbeat: none at the application level (the server pings at the
    WebSocket level and Autobahn answers); subscribe ``heartbeat:<product>``
    (:func:`with_heartbeats`) to keep quiet products' connections busy.
    Control rate: the documented limits are per IP (100 client messages/s;
    10 subscribe/unsubscribe per s, bursts to 1000); 5 per s per connection
    leaves room for a few connections.  No documented cap on topics per
    connection; a slow reader is disconnected (``ErrSlowConsume``), so the
    client should spread busy books over connections.
    """

    kind: Literal["ws", "ws_direct"] = "ws"
    form: Literal["auto", "flat", "objects"] = "auto"
    control_rate: float = 5.0
    max_topics_per_message: int = 100
    max_topics_per_connection: int | None = None
    replies_to_control: bool = False
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = None
    max_connection_age: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("ws", "ws_direct"):
            raise BadRequest(f"Coinbase connection kind must be ws or ws_direct: {self.kind!r}")
        if self.form not in ("auto", "flat", "objects"):
            raise BadRequest(f"form must be 'auto', 'flat' or 'objects', not {self.form!r}")

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"type": "subscribe", ...}`` (``request_id`` is not sent: Coinbase has none)."""
        return self._control("subscribe", topics)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"type": "unsubscribe", ...}``."""
        return self._control("unsubscribe", topics)

    def _control(self, op: Literal["subscribe", "unsubscribe"], topics: Sequence[str]) -> bytes:
        if len(topics) > self.max_topics_per_message:
            raise BadRequest(
                f"Coinbase {op} of {len(topics)} topics exceeds "
                f"{self.max_topics_per_message} per message"
            )
        return dumps(subscribe_payload(op, topics, self.form))

    def control_reply(self, message: Any) -> ControlReply | None:
        """Always ``None``: Coinbase's replies name no request."""
        return None

    def overlap_key(self, raw: bytes) -> Hashable:
        """Coinbase sends the same bytes for the same event on every connection."""
        return raw


# ---------------------------------------------------------------------------
# Numbers and times
# ---------------------------------------------------------------------------


def render_number(value: Any) -> str:
    """The exchange's decimal string for ``value``.

    Strings pass through unchanged.  :class:`~decimal.Decimal` (what
    :func:`txexchange.codec.loads_exact` makes of a JSON number) renders
    exactly as sent, never in exponent form (``1E-8`` -> ``"0.00000001"``);
    ``int`` as its digits.  ``float`` (orjson's reading of a JSON number) is
    rendered from its shortest repr, which equals the wire text for numbers
    of up to 15 significant digits -- decode with ``loads_exact`` to be exact
    for longer ones.  Anything else raises ``ValueError``.
    """
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is Decimal:
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return format(value, "f")
    if t is int:
        return str(value)
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite number: {value!r}")
        return format(Decimal(repr(value)), "f")
    raise ValueError(f"not a number: {value!r}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _iso_ms(text: Any) -> int:
    """``"2014-11-07T08:19:28.464459Z"`` -> milliseconds since the epoch (floored)."""
    if type(text) is not str:
        raise ValueError(f"time is not a string: {text!r}")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


# ---------------------------------------------------------------------------
# Outcomes besides events
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class CoinbaseSubscriptions:
    """A ``subscriptions`` message: every topic the connection is now subscribed to."""

    topics: frozenset[str]


@attrs.frozen(slots=True)
class CoinbaseError:
    """An ``{"type": "error", "message", "reason"?}`` message.

    Coinbase names no request; :meth:`exception` gives the typed error.
    """

    message: str
    reason: str = ""

    def exception(self) -> ExchangeError:
        """The typed error (see :func:`error_class`; default :class:`SubscriptionError`)."""
        text = f"Coinbase error: {self.message}"
        if self.reason:
            text += f" ({self.reason})"
        cls = error_class(f"{self.message} {self.reason}", default=SubscriptionError)
        if issubclass(cls, RateLimitExceeded):
            return cls(text, None)
        return cls(text)


Event = BookSnapshot | BookDelta | CoinbaseMatch | Ticker | CoinbaseHeartbeat
#: What :meth:`CoinbaseParser.parse` returns: events (one per message), the
#: subscription state, an error, or an :class:`Unknown` marker.
ParseResult = list[Event] | CoinbaseSubscriptions | CoinbaseError | Unknown


def _bad(what: str, data: Any) -> MalformedMessage:
    return MalformedMessage(f"Coinbase {what}: {data!r:.300}")


def _str(d: Mapping[str, Any], key: str) -> str:
    value = d[key]
    if type(value) is str:
        return value  # type: ignore[no-any-return]
    return render_number(value)


def _opt(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    if type(value) is str:
        return value  # type: ignore[no-any-return]
    return render_number(value)


def _int(value: Any, what: str, d: Any) -> int:
    if type(value) is int:
        return value  # type: ignore[no-any-return]
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    raise _bad(f"bad {what}", d)


def _snapshot_levels(raw: Any, d: Any) -> list[tuple[str, str]]:
    if type(raw) is not list:
        raise _bad("book side is not a list", d)
    out: list[tuple[str, str]] = []
    append = out.append
    for level in raw:
        if type(level) is not list or len(level) < 2:
            raise _bad("book level is not a [price, size, ...] list", d)
        price = level[0]
        size = level[1]
        if type(price) is not str or type(size) is not str:
            price = render_number(price)
            size = render_number(size)
        append((price, size))
    return out


def _snapshot(d: dict[str, Any], symbol: str) -> list[Event]:
    ts = _iso_ms(d["time"]) if d.get("time") is not None else None
    bids = _snapshot_levels(d.get("bids"), d)
    asks = _snapshot_levels(d.get("asks"), d)
    return [BookSnapshot(symbol, bids, asks, None, ts)]


def _l2update(d: dict[str, Any], symbol: str) -> list[Event]:
    changes = d["changes"]
    if type(changes) is not list:
        raise _bad("l2update changes is not a list", d)
    bids: list[tuple[str, str]] = []
    asks: list[tuple[str, str]] = []
    for change in changes:
        if type(change) is not list or len(change) < 3:
            raise _bad("l2update change is not a [side, price, size] list", d)
        side, price, size = change[0], change[1], change[2]
        if type(price) is not str or type(size) is not str:
            price = render_number(price)
            size = render_number(size)
        if side == "buy":
            bids.append((price, size))
        elif side == "sell":
            asks.append((price, size))
        else:
            raise _bad(f"l2update change with side {side!r}", d)
    ts = _iso_ms(d["time"]) if d.get("time") is not None else None
    return [BookDelta(symbol, bids, asks, None, None, None, ts)]


_TAKER_SIDE: Mapping[Any, Literal["buy", "sell"]] = {"buy": "sell", "sell": "buy"}


def _match_trade(d: Mapping[str, Any], symbol: str, trade_id: int) -> Trade:
    # Coinbase's ``side`` is the maker's; the unified trade carries the taker's.
    side = _TAKER_SIDE.get(d.get("side"))
    if side is None:
        raise _bad("trade with bad side", d)
    return Trade(
        symbol, str(trade_id), _iso_ms(d["time"]), _str(d, "price"), _str(d, "size"), side, "taker"
    )


def _match(d: dict[str, Any], symbol: str) -> list[Event]:
    trade_id = _int(d.get("trade_id"), "trade_id", d)
    seq = d.get("sequence")
    sequence = _int(seq, "sequence", d) if seq is not None else None
    trade = _match_trade(d, symbol, trade_id)
    return [CoinbaseMatch(trade, trade_id, sequence, d["type"] == "last_match")]


def _ticker(d: dict[str, Any], symbol: str) -> list[Event]:
    ts = _iso_ms(d["time"]) if d.get("time") is not None else None
    last = _opt(d, "price")
    return [
        Ticker(
            symbol,
            timestamp=ts,
            bid=_opt(d, "best_bid"),
            bid_volume=_opt(d, "best_bid_size"),
            ask=_opt(d, "best_ask"),
            ask_volume=_opt(d, "best_ask_size"),
            last=last,
            open=_opt(d, "open_24h"),
            high=_opt(d, "high_24h"),
            low=_opt(d, "low_24h"),
            close=last,
            base_volume=_opt(d, "volume_24h"),
        )
    ]


def _heartbeat(d: dict[str, Any], symbol: str) -> list[Event]:
    ts = _iso_ms(d["time"]) if d.get("time") is not None else None
    return [
        CoinbaseHeartbeat(
            symbol,
            _int(d.get("sequence"), "sequence", d),
            _int(d.get("last_trade_id"), "last_trade_id", d),
            ts,
        )
    ]


_Handler = Callable[[dict[str, Any], str], list[Event]]

_HANDLERS: Mapping[str, _Handler] = {
    "snapshot": _snapshot,
    "l2update": _l2update,
    "match": _match,
    "last_match": _match,
    "ticker": _ticker,
    "heartbeat": _heartbeat,
}

#: ``full``/``level3``/``user``/``status`` messages: well-formed, not parsed here.
_KNOWN_UNPARSED = frozenset(
    {"received", "open", "done", "change", "activate", "status", "balance", "auction"}
)


class CoinbaseParser:
    """Turns decoded Coinbase Exchange feed messages into typed outcomes.

    One parser per :class:`MarketIndex`.  :meth:`parse` returns a list with
    one event -- :class:`~txexchange.events.BookSnapshot` (``snapshot``) or
    :class:`~txexchange.events.BookDelta` (``l2update``; feed both to a
    :class:`CoinbaseBookSync`), :class:`CoinbaseMatch` (``match`` /
    ``last_match``), :class:`~txexchange.events.Ticker`,
    :class:`CoinbaseHeartbeat` (feed those two to a
    :class:`CoinbaseTradeSync`) --, a :class:`CoinbaseSubscriptions`, a
    :class:`CoinbaseError`, or an :class:`~txexchange.adapters.Unknown`
    (``full``-channel and ``status`` messages, new message types -- which
    Coinbase says clients must ignore --, products not in the market list).
    A message of the wrong shape raises
    :class:`~txexchange.errors.MalformedMessage` and nothing else.  Book
    levels become ``(price, size)`` tuples of the exchange's strings;
    timestamps are milliseconds.  Coinbase announces no maintenance on the
    feed, so there is no :class:`~txexchange.adapters.ServerShutdown`.
    """

    __slots__ = ("index",)

    def __init__(self, index: MarketIndex) -> None:
        self.index = index

    def parse(self, message: Any) -> ParseResult:
        """Parse one decoded message (see the class docstring)."""
        if type(message) is not dict:
            raise _bad("message is not a JSON object", message)
        kind = message.get("type")
        handler = _HANDLERS.get(kind) if type(kind) is str else None
        if handler is None:
            return self._other(kind, message)
        product_id = message.get("product_id")
        if type(product_id) is not str:
            raise _bad(f"{kind} without product_id", message)
        market = self.index.by_id.get(product_id)
        if market is None:
            return Unknown(f"Coinbase {kind} for {product_id!r}, not in the market list", message)
        try:
            return handler(message, market.symbol)
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
            raise _bad(f"{kind} missing or bad {e}", message) from None

    def _other(self, kind: Any, message: dict[str, Any]) -> ParseResult:
        if kind == "subscriptions":
            return CoinbaseSubscriptions(frozenset(_subscribed_topics(message)))
        if kind == "error":
            text = message.get("message")
            reason = message.get("reason", "")
            if type(text) is not str or type(reason) is not str:
                raise _bad("error with non-string message/reason", message)
            return CoinbaseError(text, reason)
        if type(kind) is not str:
            raise _bad("message without a string 'type'", message)
        if kind in _KNOWN_UNPARSED:
            return Unknown(f"Coinbase {kind} message (channel not parsed)", message)
        return Unknown(f"unknown Coinbase message type {kind!r}", message)


def _subscribed_topics(message: dict[str, Any]) -> list[str]:
    channels = message.get("channels")
    if type(channels) is not list:
        raise _bad("subscriptions without a channels list", message)
    topics: list[str] = []
    for entry in channels:
        if type(entry) is not dict:
            raise _bad("subscriptions channel is not an object", message)
        name = entry.get("name")
        ids = entry.get("product_ids", [])
        if type(name) is not str or type(ids) is not list:
            raise _bad("subscriptions channel of wrong shape", message)
        for p in ids:
            if type(p) is not str:
                raise _bad("subscriptions with a non-string product id", message)
            topics.append(f"{name}:{p}")
    return topics


_parsers: WeakKeyDictionary[MarketIndex, CoinbaseParser] = WeakKeyDictionary()


def parse_message(message: Any, index: MarketIndex) -> ParseResult:
    """Parse one decoded message with the (cached) :class:`CoinbaseParser` for ``index``."""
    parser = _parsers.get(index)
    if parser is None:
        parser = _parsers[index] = CoinbaseParser(index)
    return parser.parse(message)


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def products_request() -> RestRequest:
    """``GET /products`` (answer: :func:`parse_markets`)."""
    return RestRequest("GET", "/products")


def parse_markets(payload: Any) -> dict[str, Market]:
    """Unified markets from ``GET /products``, keyed by ``BASE/QUOTE``.

    ``id`` is the product id (``BTC-USD``); ``base``/``quote`` are
    ``base_currency``/``quote_currency``; ``tick_size`` is
    ``quote_increment`` and ``amount_step`` is ``base_increment``; ``active``
    is ``status == "online"`` and not ``trading_disabled``.
    """
    if type(payload) is not list:
        raise _bad("products answer is not a list", payload)
    markets: dict[str, Market] = {}
    for entry in payload:
        if type(entry) is not dict:
            raise _bad("product entry is not an object", entry)
        product_id = entry.get("id")
        base = entry.get("base_currency")
        quote = entry.get("quote_currency")
        if type(product_id) is not str or not product_id:
            raise _bad("product entry without id", entry)
        if type(base) is not str or type(quote) is not str or not base or not quote:
            raise _bad("product entry with bad base_currency/quote_currency", entry)
        symbol = f"{base}/{quote}"
        if symbol in markets:
            continue
        tick = entry.get("quote_increment")
        step = entry.get("base_increment")
        markets[symbol] = Market(
            symbol=symbol,
            id=product_id,
            base=base,
            quote=quote,
            active=entry.get("status") == "online" and not entry.get("trading_disabled", False),
            tick_size=tick if isinstance(tick, str) and tick else None,
            amount_step=step if isinstance(step, str) and step else None,
            info=entry,
        )
    return markets


def market_index(payload: Any) -> MarketIndex:
    """:func:`parse_markets` wrapped in a :class:`MarketIndex`."""
    return MarketIndex.from_markets(parse_markets(payload).values(), EXCHANGE)


# ---------------------------------------------------------------------------
# REST: request descriptions
# ---------------------------------------------------------------------------

#: Unified timeframe -> candle ``granularity`` in seconds (the only ones Coinbase accepts).
GRANULARITIES: Mapping[str, int] = {
    "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400,
}  # fmt: skip
_MAX_CANDLES = 300


def granularity_of(timeframe: str) -> int:
    """Coinbase ``granularity`` (seconds) for a unified timeframe (``"1h"`` -> 3600)."""
    g = GRANULARITIES.get(timeframe)
    if g is None:
        raise BadRequest(
            f"unsupported Coinbase timeframe {timeframe!r}; valid: {' '.join(GRANULARITIES)}"
        )
    return g


def _check_limit(limit: Any, low: int, high: int, what: str) -> None:
    if type(limit) is not int or not low <= limit <= high:
        raise BadRequest(f"{what} must be an integer in {low}..{high}, got {limit!r}")


def book_request(product_id: str, level: int = 2) -> RestRequest:
    """``GET /products/{id}/book?level=..`` (answer: :func:`parse_order_book`).

    ``level`` 1 (best bid and ask) or 2 (the whole book, aggregated).  The
    answer's ``sequence`` cannot be joined to the level2 channel (which has
    none): it is a point-in-time book for REST-only callers.
    """
    if level not in (1, 2) or type(level) is not int:
        raise BadRequest(
            f"Coinbase book level must be 1 or 2 (level 3 is not aggregated), got {level!r}"
        )
    return RestRequest("GET", f"/products/{_product_id(product_id)}/book", {"level": level})


def trades_request(
    product_id: str, limit: int = 100, *, before: int | None = None, after: int | None = None
) -> RestRequest:
    """``GET /products/{id}/trades`` (newest first; answer: :func:`parse_rest_trades`).

    Pagination is by trade id: ``after=n`` gives trades older than ``n``,
    ``before=n`` newer ones.  ``limit`` 1..1000.
    """
    _check_limit(limit, 1, 1000, "Coinbase trades limit")
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        _check_limit(before, 0, 2**63 - 1, "Coinbase trades before")
        params["before"] = before
    if after is not None:
        _check_limit(after, 0, 2**63 - 1, "Coinbase trades after")
        params["after"] = after
    return RestRequest("GET", f"/products/{_product_id(product_id)}/trades", params)


def missed_trades_request(product_id: str, missed: MissedTrades) -> RestRequest:
    """The first page of ``missed`` trades: ``after = last_id + 1``, at most 1000.

    Keep the answer's trades inside the range with :func:`trades_in`; when
    ``missed.count`` exceeds 1000, page on with ``after`` = the oldest id got.
    """
    return trades_request(product_id, min(missed.count, 1000), after=missed.last_id + 1)


def trades_in(trades: Iterable[Trade], missed: MissedTrades) -> list[Trade]:
    """The trades whose id lies in ``missed`` (oldest first, as given)."""
    out = []
    for trade in trades:
        tid = trade.id
        if tid.isascii() and tid.isdigit() and int(tid) in missed:
            out.append(trade)
    return out


def _iso_seconds(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def candles_request(
    product_id: str, timeframe: str, *, start: int | None = None, end: int | None = None
) -> RestRequest:
    """``GET /products/{id}/candles?granularity=..`` (answer: :func:`parse_candles`).

    ``start``/``end`` are milliseconds (sent as ISO 8601, whole seconds); give
    both or neither (Coinbase ignores one alone).  At most 300 candles per
    request: a wider range raises :class:`BadRequest` here rather than at
    Coinbase.
    """
    granularity = granularity_of(timeframe)
    params: dict[str, Any] = {"granularity": granularity}
    if (start is None) != (end is None):
        raise BadRequest("Coinbase candles need both start and end, or neither")
    if start is not None and end is not None:
        if type(start) is not int or type(end) is not int or start < 0 or end < start:
            raise BadRequest(f"bad Coinbase candle range start={start!r} end={end!r}")
        if (end - start) // (granularity * 1000) > _MAX_CANDLES:
            raise BadRequest(f"Coinbase returns at most {_MAX_CANDLES} candles per request")
        params["start"] = _iso_seconds(start)
        params["end"] = _iso_seconds(end)
    return RestRequest("GET", f"/products/{_product_id(product_id)}/candles", params)


def ticker_request(product_id: str) -> RestRequest:
    """``GET /products/{id}/ticker`` (best bid/ask, last trade, 24 h volume)."""
    return RestRequest("GET", f"/products/{_product_id(product_id)}/ticker")


def stats_request(product_id: str) -> RestRequest:
    """``GET /products/{id}/stats`` (24 h open/high/low/last/volume)."""
    return RestRequest("GET", f"/products/{_product_id(product_id)}/stats")


# ---------------------------------------------------------------------------
# REST: answers
# ---------------------------------------------------------------------------


def _object(payload: Any, what: str) -> dict[str, Any]:
    if type(payload) is not dict:
        raise _bad(f"{what} answer is not a JSON object", payload)
    if "message" in payload and len(payload) == 1:
        raise parse_rest_error(200, None, payload)
    return payload  # type: ignore[no-any-return]


def parse_order_book(symbol: str, payload: Any) -> BookSnapshot:
    """``GET /products/{id}/book`` answer -> :class:`BookSnapshot` (``nonce`` = ``sequence``).

    Levels ``[price, size, num_orders]`` become ``(price, size)``.
    """
    d = _object(payload, "book")
    try:
        seq = d.get("sequence")
        nonce = _int(seq, "sequence", d) if seq is not None else None
        ts = _iso_ms(d["time"]) if d.get("time") is not None else None
        return BookSnapshot(
            symbol,
            _snapshot_levels(d.get("bids"), d),
            _snapshot_levels(d.get("asks"), d),
            nonce,
            ts,
        )
    except MalformedMessage:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise _bad(f"book answer with bad {e}", payload) from None


def parse_rest_trades(symbol: str, payload: Any) -> list[Trade]:
    """``GET /products/{id}/trades`` answer -> trades, oldest first (Coinbase sends newest first).

    ``side`` is the taker's (Coinbase's ``side`` is the maker order's).
    """
    if type(payload) is not list:
        _object(payload, "trades")  # raises the typed error for {"message": ...}
        raise _bad("trades answer is not a list", payload)
    keyed: list[tuple[int, Trade]] = []
    for d in payload:
        if type(d) is not dict:
            raise _bad("trade is not an object", d)
        try:
            trade_id = _int(d.get("trade_id"), "trade_id", d)
            keyed.append((trade_id, _match_trade(d, symbol, trade_id)))
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise _bad(f"trade with bad {e}", d) from None
    keyed.sort(key=lambda kt: kt[0])
    return [t for _, t in keyed]


def parse_candles(
    symbol: str, timeframe: str, payload: Any, now_ms: int | None = None
) -> list[Candle]:
    """``GET /products/{id}/candles`` rows ``[time, low, high, open, close, volume]`` -> candles.

    Oldest first (Coinbase sends newest first); ``time`` is the bucket start
    in seconds.  Coinbase sends the prices as JSON *numbers*: decode the body
    with :func:`txexchange.codec.loads_exact` so they arrive as
    :class:`~decimal.Decimal` and render exactly (see :func:`render_number`).
    A candle is ``closed`` when its bucket ended before ``now_ms``; without
    ``now_ms`` every candle but the newest is.
    """
    period = granularity_of(timeframe) * 1000
    if type(payload) is not list:
        _object(payload, "candles")
        raise _bad("candles answer is not a list", payload)
    rows: list[tuple[int, list[Any]]] = []
    for row in payload:
        if type(row) is not list or len(row) < 6:
            raise _bad("candle is not a [time, low, high, open, close, volume] list", row)
        t = row[0]
        if type(t) is not int:
            if type(t) is Decimal and t == t.to_integral_value():
                t = int(t)
            else:
                raise _bad("candle with bad time", row)
        rows.append((t * 1000, row))
    rows.sort(key=lambda r: r[0])
    candles: list[Candle] = []
    last = len(rows) - 1
    try:
        for i, (ts, row) in enumerate(rows):
            low, high, o, c, vol = (render_number(v) for v in row[1:6])
            closed = ts + period <= now_ms if now_ms is not None else i < last
            candles.append(Candle(symbol, timeframe, ts, o, high, low, c, vol, closed))
    except (TypeError, ValueError, InvalidOperation) as e:
        raise _bad(f"candle with bad values ({e})", payload) from None
    return candles


def parse_ticker(symbol: str, ticker: Any, stats: Any = None) -> Ticker:
    """``GET /products/{id}/ticker`` (and optionally ``/stats``) answers -> :class:`Ticker`.

    The ticker gives bid/ask (with sizes when present), the last price and
    the 24 h base volume; ``stats`` adds the 24 h open, high and low.
    """
    d = _object(ticker, "ticker")
    s = _object(stats, "stats") if stats is not None else {}
    try:
        ts = _iso_ms(d["time"]) if d.get("time") is not None else None
        last = _opt(d, "price") or _opt(s, "last")
        return Ticker(
            symbol,
            timestamp=ts,
            bid=_opt(d, "bid"),
            bid_volume=_opt(d, "bid_size"),
            ask=_opt(d, "ask"),
            ask_volume=_opt(d, "ask_size"),
            last=last,
            open=_opt(s, "open"),
            high=_opt(s, "high"),
            low=_opt(s, "low"),
            close=last,
            base_volume=_opt(d, "volume") or _opt(s, "volume"),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise _bad(f"ticker answer with bad {e}", ticker) from None


# ---------------------------------------------------------------------------
# REST: errors
# ---------------------------------------------------------------------------

#: Lower-case fragments of Coinbase error messages -> error class, first match wins.
_MESSAGE_CLASSES: tuple[tuple[str, type[ExchangeError]], ...] = (
    ("rate limit", RateLimitExceeded),
    ("too many", RateLimitExceeded),
    ("timestamp", InvalidNonce),
    ("not a valid product", BadSymbol),
    ("product not found", BadSymbol),
    ("requires authentication", AuthenticationError),
    ("invalid signature", AuthenticationError),
    ("invalid api key", AuthenticationError),
    ("invalid passphrase", AuthenticationError),
    ("forbidden", PermissionDenied),
)


def error_class(text: Any, default: type[ExchangeError] = ExchangeError) -> type[ExchangeError]:
    """The error class for a Coinbase error message (``default`` if nothing matches)."""
    if not isinstance(text, str):
        return default
    low = text.lower()
    for fragment, cls in _MESSAGE_CLASSES:
        if fragment in low:
            return cls
    return default


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
        seconds = float(values) if values is not None else None
    except (TypeError, ValueError):
        return None
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def parse_rest_error(
    status: int, headers: Any, body: Any, path: str | None = None
) -> ExchangeError:
    """The typed error for a failed REST answer (``body``: bytes, str or decoded JSON).

    Coinbase answers ``{"message": "..."}``.  429 -> :class:`RateLimitExceeded`
    (``retry_after`` from ``Retry-After`` if sent); 404 on a ``/products/{id}``
    path (give ``path``) or a message naming an unknown product ->
    :class:`BadSymbol`; 401 -> :class:`AuthenticationError` (a message about
    the timestamp -> :class:`InvalidNonce`); 403 -> :class:`PermissionDenied`;
    504 -> :class:`RequestTimeout`; other 5xx -> :class:`ExchangeNotAvailable`;
    other 4xx -> :class:`BadRequest`.  Every error carries ``status`` and
    ``message`` attributes.
    """
    payload = body
    if isinstance(body, (bytes, str)):
        try:
            payload = loads(body) if body else None
        except DecodeError:
            payload = None
    msg: str | None = None
    if isinstance(payload, dict):
        raw = payload.get("message")
        msg = raw if isinstance(raw, str) and raw else None
        reason = payload.get("reason")
        if isinstance(reason, str) and reason:
            msg = f"{msg}: {reason}" if msg else reason
    if msg is None and isinstance(body, (bytes, str)) and body and payload is None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        msg = text[:200]
    text = f"Coinbase HTTP {status}"
    if msg:
        text += f": {msg}"
    by_message = error_class(msg, default=ExchangeError) if msg else ExchangeError
    cls: type[ExchangeError]
    if status == 429:
        cls = RateLimitExceeded
    elif status == 504:
        cls = RequestTimeout
    elif status >= 500:
        cls = ExchangeNotAvailable
    elif by_message is not ExchangeError:
        cls = by_message
    elif status == 404 and path is not None and path.startswith("/products/"):
        cls = BadSymbol
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDenied
    elif 400 <= status < 500:
        cls = BadRequest
    else:
        cls = ExchangeError
    if issubclass(cls, RateLimitExceeded):
        error: ExchangeError = cls(text, retry_after(headers))  # type: ignore[call-arg]
    else:
        error = cls(text)
    error.status = status  # type: ignore[attr-defined]
    error.message = msg  # type: ignore[attr-defined]
    return error
