"""Gemini market-data adapter: URLs, topics, wire rules, message parsing, REST descriptions.

Sits between the transport (which hands over decoded JSON and sends the
control frames built here) and the state layer (which receives the typed
events from :mod:`txexchange.events`).  Everything is pure: requests are
described as :class:`~txexchange.adapters.rest.RestRequest` values and
answers are parsed from already-decoded JSON; the client layer does the I/O.
Book integrity lives in :mod:`txexchange.adapters.gemini_book`.

Two WebSocket generations are spoken:

* the current API at ``wss://ws.gemini.com`` (key ``ws``): Binance-like
  ``{"id", "method": "subscribe", "params": ["btcusd@depth", ...]}``, events
  unwrapped (``depthUpdate`` with ``U``/``u``, ``trade``, ``bookTicker``),
  replies ``{"id", "status", "result"}`` / ``{"id", "status", "error": {"code",
  "msg"}}``; :class:`GeminiWireRules`, :class:`GeminiParser`;
* legacy Market Data v1 at ``wss://api.gemini.com/v1/marketdata/{symbol}``
  (key ``v1``): one socket per symbol, no subscribe message (the URL is the
  subscription), ``socket_sequence`` on every message; :func:`v1_url`,
  :class:`GeminiV1WireRules`, :class:`GeminiV1Parser`.

Numbers: the WebSocket APIs send prices and sizes as strings and ids as JSON
integers, which orjson decodes exactly up to 2**64 - 1 (beyond that orjson
returns a float, which the parsers refuse as malformed rather than use).  The
REST symbol details (``tick_size``, ``quote_increment``) and candles are JSON
*numbers*: decode REST answers with :func:`decode` (``Decimal`` for every
non-integer) to keep them exact; the parsers accept ``Decimal``, ``int``,
``float`` or strings and render Gemini's canonical plain decimal strings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import urlencode
from weakref import WeakKeyDictionary

import attrs

from txexchange.adapters import Unknown
from txexchange.adapters.gemini_book import (
    ApplyDelta,
    ApplySnapshot,
    Buffer,
    GeminiBookSync,
    GeminiV1Sync,
    Ignore,
    NeedSnapshot,
    Reconnect,
    Resync,
    SnapshotTooOld,
    SyncAction,
    V1Action,
    V1Heartbeat,
    V1Message,
    V1Update,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import dumps
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    ExchangeError,
    ExchangeNotAvailable,
    InvalidNonce,
    MalformedMessage,
    NotSupported,
    PermissionDenied,
    RateLimitExceeded,
    SubscriptionError,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.transport.rules import Compression, ControlReply, Heartbeat

__all__ = [
    "DEFAULT_URLS",
    "ERROR_REASONS",
    "EXCHANGE",
    "HEARTBEAT",
    "PING_ID",
    "PONG",
    "SANDBOX_URLS",
    "TIMEFRAMES",
    "ApplyDelta",
    "ApplySnapshot",
    "Buffer",
    "GeminiBookSync",
    "GeminiParser",
    "GeminiReply",
    "GeminiV1Parser",
    "GeminiV1Sync",
    "GeminiV1WireRules",
    "GeminiWireRules",
    "Ignore",
    "NeedSnapshot",
    "ParseResult",
    "Pong",
    "Reconnect",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
    "V1Action",
    "V1Heartbeat",
    "V1Message",
    "V1Update",
    "book_request",
    "book_ticker_topic",
    "candles_request",
    "decode",
    "depth_message",
    "depth_topic",
    "list_subscriptions_message",
    "market_index",
    "parse_candles",
    "parse_depth_reply",
    "parse_markets",
    "parse_message",
    "parse_order_book",
    "parse_pubticker",
    "parse_rest_error",
    "parse_rest_trades",
    "parse_symbol_details",
    "parse_symbols",
    "parse_ticker",
    "partial_depth_topic",
    "plain_decimal",
    "private_headers",
    "pubticker_request",
    "resolve_urls",
    "retry_after",
    "sign",
    "stream_symbol",
    "symbol_details_request",
    "symbols_request",
    "ticker_request",
    "trade_topic",
    "trades_request",
    "v1_url",
    "ws_auth_headers",
    "ws_url",
]

EXCHANGE = "gemini"

# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------

#: Production endpoints.  ``ws``: the current WebSocket API; ``v1``: legacy
#: Market Data v1 (``/{symbol}`` is appended per socket); ``rest``: REST API.
DEFAULT_URLS: Mapping[str, str] = {
    "ws": "wss://ws.gemini.com",
    "v1": "wss://api.gemini.com/v1/marketdata",
    "rest": "https://api.gemini.com",
}

#: Gemini's sandbox, to pass as ``urls=`` (``gemini.SANDBOX_URLS``).
SANDBOX_URLS: Mapping[str, str] = {
    "ws": "wss://ws.sandbox.gemini.com",
    "v1": "wss://api.sandbox.gemini.com/v1/marketdata",
    "rest": "https://api.sandbox.gemini.com",
}

_URL_SCHEMES = {
    "ws": ("ws://", "wss://"),
    "v1": ("ws://", "wss://"),
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
            raise BadRequest(f"unknown Gemini URL key {key!r}; valid keys are {valid}")
        if not isinstance(value, str) or not value.lower().startswith(_URL_SCHEMES[key]):
            schemes = " or ".join(_URL_SCHEMES[key])
            raise BadRequest(f"Gemini URL {key!r} must start with {schemes}, got {value!r}")
        resolved[key] = value.rstrip("/")
    return resolved


def ws_url(base: str, *, snapshot: int | None = -1) -> str:
    """URL of a current-API connection.

    ``snapshot``: ``-1`` (default) asks for the full book as the first frame
    after each diff-depth subscribe, ``N > 0`` for the top ``N`` levels,
    ``None``/``0`` for none (then use the ``depth`` method).
    """
    if snapshot is not None and type(snapshot) is not int:
        raise BadRequest(f"Gemini snapshot must be an integer, got {snapshot!r}")
    url = base.rstrip("/")
    if snapshot:
        url += "?" + urlencode({"snapshot": snapshot})
    return url


_V1_FLAGS = ("bids", "offers", "trades", "auctions")


def v1_url(
    base: str,
    market_id: str,
    *,
    heartbeat: bool = True,
    top_of_book: bool = False,
    bids: bool | None = None,
    offers: bool | None = None,
    trades: bool | None = None,
    auctions: bool | None = None,
) -> str:
    """URL of one legacy v1 socket: ``{base}/{SYMBOL}?heartbeat=true...``.

    ``heartbeat`` (default on) makes Gemini send a heartbeat every 5 s, which
    also advances ``socket_sequence``.  The entry-type flags follow Gemini's
    rule: if any is given, every wanted type must be set true, so giving one
    fills in the others as false.  ``top_of_book`` sends only the top level
    (not a book :class:`GeminiV1Sync` can maintain).
    """
    symbol = _market_id(market_id).upper()
    params: dict[str, str] = {}
    if heartbeat:
        params["heartbeat"] = "true"
    if top_of_book:
        params["top_of_book"] = "true"
    flags = {"bids": bids, "offers": offers, "trades": trades, "auctions": auctions}
    if any(v is not None for v in flags.values()):
        for name in _V1_FLAGS:
            params[name] = "true" if flags[name] else "false"
    url = f"{base.rstrip('/')}/{symbol}"
    return f"{url}?{urlencode(params)}" if params else url


# ---------------------------------------------------------------------------
# Topics (current API stream names)
# ---------------------------------------------------------------------------

_BAD_ID_CHARS = frozenset('@/ \t\r\n"!?&#')
_PARTIAL_LEVELS = (5, 10, 20)


def _market_id(market_id: Any) -> str:
    if not isinstance(market_id, str):
        raise BadRequest(f"invalid Gemini market id {market_id!r}")
    text = market_id.strip()
    if not text or any(c in _BAD_ID_CHARS for c in text):
        raise BadRequest(f"invalid Gemini market id {market_id!r}")
    return text


def stream_symbol(market_id: str) -> str:
    """The stream-name form of a market id: trimmed, lower case (``" BTCUSD "`` -> ``btcusd``)."""
    return _market_id(market_id).lower()


def _speed(speed_ms: int) -> str:
    if speed_ms == 1000:
        return ""
    if speed_ms == 100:
        return "@100ms"
    raise BadRequest(f"Gemini depth speed must be 100 or 1000 ms, got {speed_ms!r}")


def depth_topic(market_id: str, speed_ms: int = 100) -> str:
    """Diff depth: ``btcusd@depth@100ms`` (``speed_ms=1000``: ``btcusd@depth``)."""
    return f"{stream_symbol(market_id)}@depth{_speed(speed_ms)}"


def partial_depth_topic(market_id: str, levels: int = 20, speed_ms: int = 1000) -> str:
    """Top-N book (5, 10 or 20 levels): ``btcusd@depth20`` / ``btcusd@depth5@100ms``."""
    if levels not in _PARTIAL_LEVELS:
        raise BadRequest(f"Gemini partial depth levels must be 5, 10 or 20, got {levels!r}")
    return f"{stream_symbol(market_id)}@depth{levels}{_speed(speed_ms)}"


def trade_topic(market_id: str) -> str:
    """Trades: ``btcusd@trade``."""
    return f"{stream_symbol(market_id)}@trade"


def book_ticker_topic(market_id: str) -> str:
    """Best bid/ask in real time: ``btcusd@bookTicker``."""
    return f"{stream_symbol(market_id)}@bookTicker"


def _check_topic(topic: Any) -> str:
    if not isinstance(topic, str):
        raise BadRequest(f"invalid Gemini stream name {topic!r}")
    prefix, at, kind = topic.partition("@")
    if not at or not prefix or not kind or any(c in _BAD_ID_CHARS for c in prefix):
        raise BadRequest(f"invalid Gemini stream name {topic!r}")
    if any(c in ' \t\r\n"' for c in kind):
        raise BadRequest(f"invalid Gemini stream name {topic!r}")
    return topic


# ---------------------------------------------------------------------------
# JSON decoding
# ---------------------------------------------------------------------------


def decode(raw: bytes | str) -> Any:
    """Decode keeping every non-integer number exact as :class:`~decimal.Decimal`.

    Integers of any size stay exact ``int``.  ``NaN``/``Infinity`` and too
    deep nesting raise ``ValueError`` (one of
    :data:`txexchange.codec.DecodeError`).  Use it for REST answers (symbol
    details and candles carry JSON numbers); frames may use it too through
    ``GeminiWireRules(decode=gemini.decode)``.
    """
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite JSON number {name}")


def plain_decimal(value: Any) -> str:
    """A number as a plain decimal string: ``Decimal("1E-8")`` -> ``"0.00000001"``.

    Accepts ``Decimal``, ``int``, ``float`` (its shortest repr, i.e. what the
    JSON text said) and numeric strings (returned unchanged when already
    plain).  Raises ``ValueError`` for anything else or a non-finite number.
    """
    t = type(value)
    if t is str:
        if value and "e" not in value and "E" not in value and _plain_ok(value):
            return value
        dec = _to_decimal(value)
    elif t is Decimal:
        dec = value
    elif t is int:
        return str(value)
    elif t is float:
        dec = Decimal(repr(value))
    else:
        raise ValueError(f"not a number: {value!r}")
    if not dec.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    text = format(dec, "f")
    return "0" if text in ("-0", "-0.0") else text


def _plain_ok(text: str) -> bool:
    body = text[1:] if text[0] == "-" else text
    if not body:
        return False
    int_part, _, frac = body.partition(".")
    return (int_part.isdigit() or (not int_part and frac != "")) and (not frac or frac.isdigit())


def _to_decimal(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------

#: Id of the application ping; its answer parses to :data:`PONG`.
PING_ID = "ping"
#: ``{"id": "ping", "method": "ping"}`` after 30 s of silence (Gemini offers a
#: ``ping`` method but documents no idle cut-off; this keeps NATs open and
#: proves the session alive).
HEARTBEAT = Heartbeat(dumps({"id": PING_ID, "method": "ping"}).decode(), idle_interval=30.0)


@attrs.frozen
class GeminiWireRules:
    """:class:`~txexchange.transport.rules.WireRules` for a current-API connection.

    Connect to :func:`ws_url` (``?snapshot=-1`` by default).  Subscribe:
    ``{"id": n, "method": "subscribe", "params": [...]}``; Gemini answers
    ``{"id": n, "status": 200, "result": ...}`` or ``{"id": n, "status": 4xx,
    "error": {"code", "msg"}}``.  Heartbeat: the ``ping`` method after 30 s of
    silence.  Gemini documents no control-rate or per-connection limits for
    this API; ``control_rate`` stays at a Binance-like 5/s and topics per
    connection are not capped.  ``decode`` is ``None`` (orjson, exact for
    every id below 2**64); pass :func:`decode` for exact JSON numbers
    everywhere at some cost in speed.
    """

    control_rate: float = 5.0
    max_topics_per_message: int = 100
    max_topics_per_connection: int | None = None
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = HEARTBEAT
    max_connection_age: float | None = None
    decode: Callable[[bytes], Any] | None = None

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"id": n, "method": "subscribe", "params": [...]}``."""
        return self._control("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"id": n, "method": "unsubscribe", "params": [...]}``."""
        return self._control("unsubscribe", topics, request_id)

    def _control(self, method: str, topics: Sequence[str], request_id: int) -> bytes:
        params = [_check_topic(t) for t in topics]
        if not params:
            raise BadRequest(f"Gemini {method} needs at least one stream")
        if len(params) > self.max_topics_per_message:
            raise BadRequest(
                f"Gemini {method} of {len(params)} streams exceeds "
                f"{self.max_topics_per_message} per message"
            )
        return dumps({"id": request_id, "method": method, "params": params})

    def control_reply(self, message: Any) -> ControlReply | None:
        """A :class:`ControlReply` if ``message`` answers a request by id, else ``None``."""
        reply = _reply(message)
        if reply is None:
            return None
        return ControlReply(reply.request_id, reply.ok, None if reply.ok else reply.text())

    def overlap_key(self, raw: bytes) -> Hashable:
        """The same event has the same bytes on every connection."""
        return raw


def list_subscriptions_message(request_id: int | str) -> bytes:
    """``{"id", "method": "list_subscriptions"}`` (answer: a :class:`GeminiReply`)."""
    return dumps({"id": request_id, "method": "list_subscriptions"})


def depth_message(market_id: str, request_id: int | str, limit: int | None = None) -> bytes:
    """The ``depth`` method: an L2 snapshot with ``lastUpdateId`` over the socket.

    Its answer is a :class:`GeminiReply`; :func:`parse_depth_reply` turns it
    into a :class:`~txexchange.events.BookSnapshot` for
    :meth:`GeminiBookSync.on_snapshot`.
    """
    params: dict[str, Any] = {"symbol": stream_symbol(market_id)}
    if limit is not None:
        if type(limit) is not int or limit < 1:
            raise BadRequest(f"Gemini depth limit must be a positive integer, got {limit!r}")
        params["limit"] = limit
    return dumps({"id": request_id, "method": "depth", "params": params})


@attrs.frozen
class GeminiV1WireRules:
    """:class:`~txexchange.transport.rules.WireRules` for a legacy v1 socket.

    v1 has no control messages: the URL (:func:`v1_url`) is the subscription,
    so a v1 connection carries no topics and the subscribe methods raise
    :class:`~txexchange.errors.NotSupported`.  Keep-alive is Gemini's own
    5 s heartbeat (``heartbeat=true``); no application ping is sent.  Gemini
    limits public WebSocket requests (socket opens) to 12 per minute.
    """

    control_rate: float = 12 / 60
    max_topics_per_message: int = 1
    max_topics_per_connection: int | None = 0
    replies_to_control: bool = False
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = None
    max_connection_age: float | None = None
    decode: Callable[[bytes], Any] | None = None

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        raise NotSupported("Gemini v1 market data has no subscribe message; open v1_url()")

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        raise NotSupported("Gemini v1 market data has no unsubscribe message; close the socket")

    def control_reply(self, message: Any) -> ControlReply | None:
        return None

    def overlap_key(self, raw: bytes) -> Hashable:
        """``socket_sequence`` differs per socket, so no two sockets share bytes."""
        return raw


# ---------------------------------------------------------------------------
# Outcomes besides events
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class GeminiReply:
    """An answer to a request (``{"id", "status", "result"|"error"}``) not taken by the transport.

    E.g. the answer to ``depth`` or ``list_subscriptions``, or a late reply.
    ``ok`` is true for a 2xx ``status`` (or a ``result`` without ``status``).
    """

    request_id: Any
    status: int | None
    result: Any = attrs.field(default=None, eq=False, repr=False)
    code: Any = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        if self.code is not None or self.message is not None:
            return False
        return self.status is None or 200 <= self.status < 300

    def text(self) -> str:
        text = self.message or "error"
        if self.code is not None:
            text += f" (code {self.code})"
        if self.status is not None:
            text += f" [status {self.status}]"
        return text

    def exception(self) -> ExchangeError:
        """The typed error for a failed request (``None``-safe only when not :attr:`ok`)."""
        status = self.status or 400
        cls = _status_class(status, SubscriptionError)
        text = f"Gemini request {self.request_id!r} failed: {self.text()}"
        error = cls(text, None) if issubclass(cls, RateLimitExceeded) else cls(text)  # type: ignore[call-arg]
        error.status = status  # type: ignore[attr-defined]
        error.code = self.code  # type: ignore[attr-defined]
        return error


@attrs.frozen(slots=True)
class Pong:
    """Gemini's answer to the heartbeat ``ping``."""


PONG = Pong()


def _reply(message: Any) -> GeminiReply | None:
    if type(message) is not dict or "id" not in message:
        return None
    if "status" not in message and "result" not in message and "error" not in message:
        return None
    status = message.get("status")
    if status is not None and (type(status) is not int):
        status = None
    error = message.get("error")
    code: Any = None
    text: str | None = None
    if error is not None:
        if isinstance(error, dict):
            code = error.get("code")
            msg = error.get("msg") or error.get("message")
            text = msg if isinstance(msg, str) and msg else "error"
        else:
            text = str(error)[:200] or "error"
    elif status is not None and not 200 <= status < 300:
        text = "error"
    rid = message["id"]
    if type(rid) is str and rid.isascii() and rid.isdigit():
        rid = int(rid)
    return GeminiReply(rid, status, message.get("result"), code, text)


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def _bad(what: str, data: Any) -> MalformedMessage:
    return MalformedMessage(f"Gemini {what}: {data!r:.300}")


def parse_symbols(payload: Any) -> list[str]:
    """``GET /v1/symbols`` answer (lower-case ids) -> the ids, upper case as in details."""
    if type(payload) is not list or not all(isinstance(s, str) and s for s in payload):
        raise _bad("symbols answer is not a list of strings", payload)
    return [s.upper() for s in payload]


def _step(value: Any, what: str, entry: Any) -> str | None:
    if value is None:
        return None
    try:
        text = plain_decimal(value)
    except ValueError:
        raise _bad(f"symbol details with bad {what}", entry) from None
    return text


def parse_symbol_details(payload: Any) -> Market:
    """``GET /v1/symbols/details/{symbol}`` -> :class:`Market`.

    Careful with Gemini's names: ``quote_increment`` is the *price* tick
    (``Market.tick_size``) and ``tick_size`` the *amount* step
    (``Market.amount_step``); both are JSON numbers, rendered as plain decimal
    strings (``1e-8`` -> ``"0.00000001"``).  ``active`` is ``status ==
    "open"``.  Spot markets are ``BASE/QUOTE``; perpetual swaps
    (``product_type: "swap"``) are ``BASE/QUOTE:SETTLE`` with the settle
    currency from ``contract_price_currency``.
    """
    if type(payload) is not dict:
        raise _bad("symbol details is not an object", payload)
    market_id = payload.get("symbol")
    base = payload.get("base_currency")
    quote = payload.get("quote_currency")
    if not all(isinstance(v, str) and v for v in (market_id, base, quote)):
        raise _bad("symbol details without symbol/base_currency/quote_currency", payload)
    assert isinstance(market_id, str) and isinstance(base, str) and isinstance(quote, str)
    symbol = f"{base}/{quote}"
    if payload.get("product_type") == "swap":
        settle = payload.get("contract_price_currency")
        symbol += f":{settle if isinstance(settle, str) and settle else quote}"
    return Market(
        symbol=symbol,
        id=market_id.upper(),
        base=base,
        quote=quote,
        active=payload.get("status") == "open",
        tick_size=_step(payload.get("quote_increment"), "quote_increment", payload),
        amount_step=_step(payload.get("tick_size"), "tick_size", payload),
        info=payload,
    )


def parse_markets(details: Iterable[Any]) -> dict[str, Market]:
    """Symbol-details answers (one per symbol) -> markets keyed by unified symbol."""
    markets: dict[str, Market] = {}
    for entry in details:
        market = parse_symbol_details(entry)
        markets.setdefault(market.symbol, market)
    return markets


def market_index(details: Iterable[Any]) -> MarketIndex:
    """:func:`parse_markets` wrapped in a :class:`MarketIndex`."""
    return MarketIndex.from_markets(parse_markets(details).values(), EXCHANGE)


# ---------------------------------------------------------------------------
# Messages: current API (the per-message hot path)
# ---------------------------------------------------------------------------

Event = BookDelta | BookSnapshot | Trade | Ticker
#: What :meth:`GeminiParser.parse` returns.
ParseResult = list[Event] | GeminiReply | Pong | Unknown


def _ms(value: Any, what: str, d: Any) -> int:
    """Event time -> ms.  Gemini documents ``E`` in nanoseconds; ms/us values are accepted."""
    if type(value) is not int or value < 0:
        raise _bad(f"bad {what}", d)
    if value >= 10**17:  # nanoseconds (from 1973 on)
        return value // 1_000_000
    if value >= 10**14:  # microseconds
        return value // 1_000
    return value


def _id(value: Any, what: str, d: Any) -> int:
    # bool is an int subclass, and orjson turns ints >= 2**64 into floats: refuse both.
    if type(value) is not int:
        raise _bad(f"bad {what} (not an integer)", d)
    return value


def _levels(raw: Any, d: Any) -> list[Any]:
    if type(raw) is not list:
        raise _bad("book side is not a list", d)
    for level in raw:
        if type(level) is not list or len(level) != 2:
            break
        if type(level[0]) is not str or type(level[1]) is not str:
            break
    else:
        return raw  # the common case: Gemini's own [price, qty] string pairs
    out: list[tuple[str, str]] = []
    for level in raw:
        if type(level) is not list or len(level) != 2:
            raise _bad("book level is not a [price, qty] pair", d)
        try:
            out.append((plain_decimal(level[0]), plain_decimal(level[1])))
        except ValueError:
            raise _bad("book level with a bad number", d) from None
    return out


def _text(d: Mapping[str, Any], key: str) -> str:
    value = d[key]
    if type(value) is str:
        return value
    try:
        return plain_decimal(value)
    except ValueError:
        raise _bad(f"bad {key}", d) from None


def _depth_update(d: dict[str, Any], symbol: str) -> list[Event]:
    first = _id(d["U"], "U", d)
    last = _id(d["u"], "u", d)
    if first > last:
        raise _bad("depthUpdate with U > u", d)
    ts = _ms(d["E"], "E", d) if "E" in d else None
    return [BookDelta(symbol, _levels(d["b"], d), _levels(d["a"], d), last, first, None, ts)]


def _partial_depth(d: dict[str, Any], symbol: str) -> list[Event]:
    nonce = _id(d["lastUpdateId"], "lastUpdateId", d)
    ts = _ms(d["E"], "E", d) if "E" in d else None
    return [BookSnapshot(symbol, _levels(d["bids"], d), _levels(d["asks"], d), nonce, ts)]


def _trade(d: dict[str, Any], symbol: str) -> list[Event]:
    trade_id = _id(d["t"], "t", d)
    maker = d["m"]
    if type(maker) is not bool:
        raise _bad("trade with bad m", d)
    ts = _ms(d["E"], "E", d) if "E" in d else _ms(d["T"], "T", d)
    # m: the buyer is the maker, so the taker sold (Gemini's sample agrees).
    side: Literal["buy", "sell"] = "sell" if maker else "buy"
    return [Trade(symbol, str(trade_id), ts, _text(d, "p"), _text(d, "q"), side, "taker")]


def _book_ticker(d: dict[str, Any], symbol: str) -> list[Event]:
    _id(d["u"], "u", d)
    ts = _ms(d["E"], "E", d) if "E" in d else None
    return [
        Ticker(
            symbol,
            timestamp=ts,
            bid=_text(d, "b"),
            bid_volume=_text(d, "B"),
            ask=_text(d, "a"),
            ask_volume=_text(d, "A"),
        )
    ]


_EVENT_HANDLERS: dict[str, Callable[[dict[str, Any], str], list[Event]]] = {
    "depthUpdate": _depth_update,
    "trade": _trade,
}


class GeminiParser:
    """Turns decoded current-API messages into typed outcomes.

    One parser per :class:`MarketIndex`.  Events are matched to markets by
    their ``s`` field case-insensitively (Gemini sends ``btcusd``; its
    conformance suite allows ``BTCUSD``).  :meth:`parse` returns a list of
    events (:class:`~txexchange.events.BookDelta` for ``depthUpdate`` --
    feed those to a :class:`GeminiBookSync` --, ``BookSnapshot`` for
    ``lastUpdateId`` frames that name their stream, ``Trade``, ``Ticker``
    for ``bookTicker``), a :class:`GeminiReply`, :data:`PONG`, or an
    :class:`~txexchange.adapters.Unknown` (private events, partial depth
    without a stream name, markets not in the index).  A message of the wrong
    shape raises :class:`~txexchange.errors.MalformedMessage` and nothing else.
    """

    __slots__ = ("_by_stream_id", "index")

    def __init__(self, index: MarketIndex) -> None:
        self.index = index
        self._by_stream_id: dict[str, str] = {m.id.lower(): m.symbol for m in index}

    def parse(self, message: Any) -> ParseResult:
        """Parse one decoded message (see the class docstring)."""
        if type(message) is not dict:
            raise _bad("message is not a JSON object", message)
        kind = message.get("e")
        try:
            if kind is not None:
                handler = _EVENT_HANDLERS.get(kind)
                if handler is None:
                    if type(kind) is not str:
                        raise _bad("event type is not a string", message)
                    return Unknown(f"no parser for Gemini event {kind!r}", message)
                symbol = self._symbol(message["s"], message)
                if symbol is None:
                    return Unknown(f"{kind} for {message['s']!r}, not in the market list", message)
                return handler(message, symbol)
            if "id" in message:
                reply = _reply(message)
                if reply is not None:
                    if reply.request_id == PING_ID and reply.ok:
                        return PONG
                    return reply
            if "stream" in message and "data" in message:
                return self._wrapped(message)
            if "u" in message and "b" in message and "a" in message and "s" in message:
                symbol = self._symbol(message["s"], message)
                if symbol is None:
                    return Unknown(f"bookTicker for {message['s']!r}, not in the market list")
                return _book_ticker(message, symbol)
            if "t" in message and "p" in message and "q" in message and "s" in message:
                symbol = self._symbol(message["s"], message)
                if symbol is None:
                    return Unknown(f"trade for {message['s']!r}, not in the market list")
                return _trade(message, symbol)
            if "lastUpdateId" in message:
                if "s" in message:
                    # a book that names its symbol (e.g. the subscribe snapshot)
                    symbol = self._symbol(message["s"], message)
                    if symbol is None:
                        return Unknown(f"book for {message['s']!r}, not in the market list")
                    return _partial_depth(message, symbol)
                return Unknown("partial depth names no symbol; see parse_depth_reply", message)
            return Unknown("Gemini message of unknown shape", message)
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise _bad(f"{kind or 'message'} missing or bad {e}", message) from None

    def _symbol(self, s: Any, message: Any) -> str | None:
        if type(s) is not str:
            raise _bad("symbol 's' is not a string", message)
        symbol = self._by_stream_id.get(s)
        if symbol is None:
            symbol = self._by_stream_id.get(s.strip().lower())
        return symbol

    def _wrapped(self, message: dict[str, Any]) -> ParseResult:
        stream = message["stream"]
        data = message["data"]
        if type(stream) is not str or type(data) is not dict:
            raise _bad("wrapped message with bad stream/data", message)
        prefix, _, kind = stream.partition("@")
        symbol = self._by_stream_id.get(prefix)
        if symbol is None:
            return Unknown(f"stream {stream!r} is for a market not in the market list", message)
        if "lastUpdateId" in data:
            return _partial_depth(data, symbol)
        if kind == "bookTicker":
            return _book_ticker(data, symbol)
        event = data.get("e")
        handler = _EVENT_HANDLERS.get(event) if type(event) is str else None
        if handler is None:
            return Unknown(f"no parser for stream {stream!r}", message)
        return handler(data, symbol)


_parsers: WeakKeyDictionary[MarketIndex, GeminiParser] = WeakKeyDictionary()


def parse_message(message: Any, index: MarketIndex) -> ParseResult:
    """Parse one decoded message with the (cached) :class:`GeminiParser` for ``index``."""
    parser = _parsers.get(index)
    if parser is None:
        parser = _parsers[index] = GeminiParser(index)
    return parser.parse(message)


def parse_depth_reply(symbol: str, message: Any) -> BookSnapshot:
    """The ``depth`` method's answer (or a partial-depth frame) -> :class:`BookSnapshot`.

    ``nonce`` is ``lastUpdateId``.  Accepts the whole reply
    (``{"id", "status", "result": {...}}``), a :class:`GeminiReply`, or the
    bare ``{"lastUpdateId", "bids", "asks"}``.  A failed reply raises its
    typed error.
    """
    payload = message
    if isinstance(message, GeminiReply):
        if not message.ok:
            raise message.exception()
        payload = message.result
    elif type(message) is dict and "lastUpdateId" not in message:
        reply = _reply(message)
        if reply is None:
            raise _bad("depth answer without lastUpdateId", message)
        if not reply.ok:
            raise reply.exception()
        payload = reply.result
    if type(payload) is not dict:
        raise _bad("depth answer is not an object", message)
    try:
        return _partial_depth(payload, symbol)[0]  # type: ignore[return-value]
    except MalformedMessage:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise _bad(f"depth answer missing or bad {e}", message) from None


# ---------------------------------------------------------------------------
# Messages: legacy v1
# ---------------------------------------------------------------------------

_MAKER_SIDE_TO_TAKER: Mapping[str, Literal["buy", "sell"] | None] = {
    "bid": "sell",  # the maker was bidding: the taker sold
    "ask": "buy",
    "auction": None,
}


class GeminiV1Parser:
    """Turns decoded legacy v1 messages of one socket (one symbol) into :class:`V1Message` values.

    ``symbol`` is the unified symbol of the socket's market (v1 messages do
    not name it).  ``change`` events become book levels (``remaining`` is the
    absolute size): ``reason: "initial"`` ones the snapshot, the others a
    delta; ``trade`` events become :class:`~txexchange.events.Trade` (taker
    side from ``makerSide``: ``bid`` -> sell, ``ask`` -> buy, ``auction`` ->
    none); auction and block-trade events are counted in ``other``.  Feed the
    result to :class:`GeminiV1Sync`.  Raises only
    :class:`~txexchange.errors.MalformedMessage`.
    """

    __slots__ = ("symbol",)

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol

    def parse(self, message: Any) -> V1Message | Unknown:
        if type(message) is not dict:
            raise _bad("v1 message is not a JSON object", message)
        kind = message.get("type")
        try:
            if kind == "heartbeat":
                ts = message.get("timestampms")
                return V1Heartbeat(
                    _id(message["socket_sequence"], "socket_sequence", message),
                    ts if type(ts) is int else None,
                )
            if kind == "update":
                return self._update(message)
            return Unknown(f"Gemini v1 message of type {kind!r}", message)
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise _bad(f"v1 {kind} missing or bad {e}", message) from None

    def _update(self, m: dict[str, Any]) -> V1Update:
        seq = _id(m["socket_sequence"], "socket_sequence", m)
        event_id = m.get("eventId")
        if event_id is not None:
            event_id = _id(event_id, "eventId", m)
        ts = m.get("timestampms")
        if ts is None and m.get("timestamp") is not None:
            ts = _id(m["timestamp"], "timestamp", m) * 1000
        elif ts is not None:
            ts = _id(ts, "timestampms", m)
        events = m["events"]
        if type(events) is not list:
            raise _bad("v1 update without an events list", m)
        symbol = self.symbol
        init_bids: list[tuple[str, str]] = []
        init_asks: list[tuple[str, str]] = []
        bids: list[tuple[str, str]] = []
        asks: list[tuple[str, str]] = []
        trades: list[Trade] = []
        other = 0
        initial = False
        for ev in events:
            if type(ev) is not dict:
                raise _bad("v1 event is not an object", m)
            etype = ev.get("type")
            if etype == "change":
                level = (_text(ev, "price"), _text(ev, "remaining"))
                side = ev["side"]
                if ev.get("reason") == "initial":
                    initial = True
                    target = init_bids if side == "bid" else init_asks
                else:
                    target = bids if side == "bid" else asks
                if side not in ("bid", "ask"):
                    raise _bad("v1 change with bad side", ev)
                target.append(level)
            elif etype == "trade":
                maker = ev.get("makerSide")
                if maker not in _MAKER_SIDE_TO_TAKER:
                    raise _bad("v1 trade with bad makerSide", ev)
                tid = _id(ev["tid"], "tid", ev)
                if ts is None:
                    raise _bad("v1 trade without a timestamp", m)
                trades.append(
                    Trade(
                        symbol,
                        str(tid),
                        ts,
                        _text(ev, "price"),
                        _text(ev, "amount"),
                        _MAKER_SIDE_TO_TAKER[maker],
                        "taker" if maker != "auction" else None,
                    )
                )
            else:
                other += 1  # auction_open / auction_indicative / auction_result / block_trade
        snapshot = BookSnapshot(symbol, init_bids, init_asks, event_id, ts) if initial else None
        delta = BookDelta(symbol, bids, asks, event_id, None, None, ts) if bids or asks else None
        return V1Update(seq, event_id, ts, snapshot, delta, tuple(trades), other)


# ---------------------------------------------------------------------------
# REST: request descriptions
# ---------------------------------------------------------------------------

#: Unified timeframe -> Gemini ``time_frame`` of ``GET /v2/candles``.
TIMEFRAMES: Mapping[str, str] = {
    "1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "1hr", "6h": "6hr", "1d": "1day",
}  # fmt: skip
_TIMEFRAME_MS: Mapping[str, int] = {
    "1m": 60_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "6h": 21_600_000, "1d": 86_400_000,
}  # fmt: skip


def _path_id(market_id: str) -> str:
    return _market_id(market_id).lower()


def symbols_request() -> RestRequest:
    """``GET /v1/symbols`` (answer: :func:`parse_symbols`)."""
    return RestRequest("GET", "/v1/symbols")


def symbol_details_request(market_id: str) -> RestRequest:
    """``GET /v1/symbols/details/{symbol}`` (answer: :func:`parse_symbol_details`).

    Gemini has no bulk details endpoint: load markets with one of these per
    id from :func:`symbols_request` (public limit: 120 requests a minute).
    """
    return RestRequest("GET", f"/v1/symbols/details/{_path_id(market_id)}")


def book_request(
    market_id: str, *, limit_bids: int | None = None, limit_asks: int | None = None
) -> RestRequest:
    """``GET /v1/book/{symbol}`` (answer: :func:`parse_order_book`).

    Gemini returns 50 levels a side by default; ``0`` means all.  The answer
    has no update id, so it can be shown but never joined to a diff stream.
    """
    params: dict[str, Any] = {}
    for name, value in (("limit_bids", limit_bids), ("limit_asks", limit_asks)):
        if value is not None:
            if type(value) is not int or value < 0:
                raise BadRequest(f"Gemini {name} must be a non-negative integer, got {value!r}")
            params[name] = value
    return RestRequest("GET", f"/v1/book/{_path_id(market_id)}", params)


def trades_request(
    market_id: str,
    limit: int = 50,
    *,
    since_tid: int | None = None,
    timestamp: int | None = None,
    include_breaks: bool = False,
) -> RestRequest:
    """``GET /v1/trades/{symbol}`` (1..500 newest trades; answer: :func:`parse_rest_trades`).

    ``timestamp`` (s or ms) / ``since_tid`` return only trades after it.
    """
    if type(limit) is not int or not 1 <= limit <= 500:
        raise BadRequest(f"Gemini limit_trades must be an integer in 1..500, got {limit!r}")
    params: dict[str, Any] = {}
    if timestamp is not None:
        params["timestamp"] = timestamp
    if since_tid is not None:
        params["since_tid"] = since_tid
    params["limit_trades"] = limit
    if include_breaks:
        params["include_breaks"] = True
    return RestRequest("GET", f"/v1/trades/{_path_id(market_id)}", params)


def candles_request(market_id: str, timeframe: str) -> RestRequest:
    """``GET /v2/candles/{symbol}/{time_frame}`` (answer: :func:`parse_candles`)."""
    frame = TIMEFRAMES.get(timeframe)
    if frame is None:
        raise BadRequest(
            f"unsupported Gemini timeframe {timeframe!r}; valid: {' '.join(TIMEFRAMES)}"
        )
    return RestRequest("GET", f"/v2/candles/{_path_id(market_id)}/{frame}")


def ticker_request(market_id: str) -> RestRequest:
    """``GET /v2/ticker/{symbol}`` (24 h open/high/low/close, bid/ask; :func:`parse_ticker`)."""
    return RestRequest("GET", f"/v2/ticker/{_path_id(market_id)}")


def pubticker_request(market_id: str) -> RestRequest:
    """``GET /v1/pubticker/{symbol}`` (bid/ask/last and volumes; :func:`parse_pubticker`)."""
    return RestRequest("GET", f"/v1/pubticker/{_market_id(market_id).upper()}")


# ---------------------------------------------------------------------------
# REST: answers
# ---------------------------------------------------------------------------


def _rest_levels(raw: Any, payload: Any) -> list[tuple[str, str]]:
    if type(raw) is not list:
        raise _bad("book side is not a list", payload)
    out: list[tuple[str, str]] = []
    for level in raw:
        if type(level) is not dict:
            raise _bad("book level is not an object", payload)
        out.append((_text(level, "price"), _text(level, "amount")))
    return out


def parse_order_book(symbol: str, payload: Any) -> BookSnapshot:
    """``GET /v1/book/{symbol}`` -> :class:`BookSnapshot` (``nonce`` is ``None``: no id)."""
    if type(payload) is not dict:
        raise _bad("book answer is not an object", payload)
    try:
        bids = _rest_levels(payload["bids"], payload)
        asks = _rest_levels(payload["asks"], payload)
    except MalformedMessage:
        raise
    except (KeyError, TypeError) as e:
        raise _bad(f"book answer missing {e}", payload) from None
    return BookSnapshot(symbol, bids, asks, None, None)


_TRADE_TYPES: Mapping[str, Literal["buy", "sell"] | None] = {
    "buy": "buy",
    "sell": "sell",
    "auction": None,
    "block": None,
}


def parse_rest_trades(symbol: str, payload: Any, *, keep_broken: bool = False) -> list[Trade]:
    """``GET /v1/trades/{symbol}`` -> trades, oldest first (Gemini sends newest first).

    ``type`` is the taker's side (``buy``: an ask was taken); auction and
    block trades have no side.  Broken trades (``broken: true``, only with
    ``include_breaks``) are dropped unless ``keep_broken``.
    """
    if type(payload) is not list:
        raise _bad("trades answer is not a list", payload)
    trades: list[Trade] = []
    try:
        for row in payload:
            if type(row) is not dict:
                raise _bad("trade row is not an object", row)
            if row.get("broken") is True and not keep_broken:
                continue
            kind = row["type"]
            if kind not in _TRADE_TYPES:
                raise _bad("trade row with bad type", row)
            ts = row.get("timestampms")
            ts = (
                _id(ts, "timestampms", row)
                if ts is not None
                else _id(row["timestamp"], "timestamp", row) * 1000
            )
            side = _TRADE_TYPES[kind]
            trades.append(
                Trade(
                    symbol,
                    str(_id(row["tid"], "tid", row)),
                    ts,
                    _text(row, "price"),
                    _text(row, "amount"),
                    side,
                    "taker" if side is not None else None,
                )
            )
    except MalformedMessage:
        raise
    except (KeyError, TypeError) as e:
        raise _bad(f"trade row missing {e}", payload) from None
    trades.sort(key=lambda t: (t.timestamp, int(t.id)))
    return trades


def parse_candles(
    symbol: str, timeframe: str, payload: Any, now_ms: int | None = None
) -> list[Candle]:
    """``GET /v2/candles`` rows ``[time_ms, o, h, l, c, volume]`` -> candles, oldest first.

    Values are JSON numbers: decode the answer with :func:`decode` to keep
    them exact (floats are rendered from their shortest repr).  A candle is
    ``closed`` when it ended before ``now_ms``; without ``now_ms`` all but the
    newest are.
    """
    if timeframe not in TIMEFRAMES:
        raise BadRequest(f"unsupported Gemini timeframe {timeframe!r}")
    if type(payload) is not list:
        raise _bad("candles answer is not a list", payload)
    span = _TIMEFRAME_MS[timeframe]
    rows: list[tuple[int, tuple[str, ...]]] = []
    for row in payload:
        if type(row) is not list or len(row) < 6:
            raise _bad("candle row is not [time, o, h, l, c, v]", row)
        start = _id(row[0], "candle time", row)
        try:
            values = tuple(plain_decimal(v) for v in row[1:6])
        except ValueError:
            raise _bad("candle row with a bad number", row) from None
        rows.append((start, values))
    rows.sort(key=lambda r: r[0])
    last = len(rows) - 1
    candles = []
    for i, (start, (o, h, lo, c, v)) in enumerate(rows):
        closed = start + span <= now_ms if now_ms is not None else i < last
        candles.append(Candle(symbol, timeframe, start, o, h, lo, c, v, closed))
    return candles


def _opt_text(d: Mapping[str, Any], key: str) -> str | None:
    if d.get(key) is None:
        return None
    return _text(d, key)


def parse_ticker(symbol: str, payload: Any) -> Ticker:
    """``GET /v2/ticker/{symbol}`` -> :class:`Ticker` (``close`` is also ``last``)."""
    if type(payload) is not dict:
        raise _bad("ticker answer is not an object", payload)
    close = _opt_text(payload, "close")
    return Ticker(
        symbol,
        bid=_opt_text(payload, "bid"),
        ask=_opt_text(payload, "ask"),
        last=close,
        open=_opt_text(payload, "open"),
        high=_opt_text(payload, "high"),
        low=_opt_text(payload, "low"),
        close=close,
    )


def parse_pubticker(market: Market, payload: Any) -> Ticker:
    """``GET /v1/pubticker/{symbol}`` -> :class:`Ticker` with 24 h volumes.

    ``volume`` is keyed by currency (``{"BTC": ..., "USD": ..., "timestamp": ms}``).
    """
    if type(payload) is not dict:
        raise _bad("pubticker answer is not an object", payload)
    volume = payload.get("volume")
    base_volume = quote_volume = None
    ts = None
    if isinstance(volume, dict):
        base_volume = _opt_text(volume, market.base)
        quote_volume = _opt_text(volume, market.quote)
        raw_ts = volume.get("timestamp")
        ts = raw_ts if type(raw_ts) is int else None
    last = _opt_text(payload, "last")
    return Ticker(
        market.symbol,
        timestamp=ts,
        bid=_opt_text(payload, "bid"),
        ask=_opt_text(payload, "ask"),
        last=last,
        close=last,
        base_volume=base_volume,
        quote_volume=quote_volume,
    )


# ---------------------------------------------------------------------------
# REST: errors
# ---------------------------------------------------------------------------

#: Gemini error ``reason`` (``{"result": "error", "reason", "message"}``) -> error class.
ERROR_REASONS: Mapping[str, type[ExchangeError]] = {
    "RateLimit": RateLimitExceeded,
    "RateLimited": RateLimitExceeded,
    "InvalidSymbol": BadSymbol,
    "Maintenance": ExchangeNotAvailable,
    "System": ExchangeNotAvailable,
    "InvalidNonce": InvalidNonce,
    "MissingNonce": AuthenticationError,
    "InvalidSignature": AuthenticationError,
    "MissingApikeyHeader": AuthenticationError,
    "MissingPayloadHeader": AuthenticationError,
    "MissingSignatureHeader": AuthenticationError,
    "InvalidApiKey": AuthenticationError,
    "MissingRole": PermissionDenied,
    "EndpointNotFound": BadRequest,
    "EndpointMismatch": BadRequest,
    "InvalidJson": BadRequest,
    "InvalidPrice": BadRequest,
    "InvalidQuantity": BadRequest,
    "InvalidOrderType": BadRequest,
    "InvalidSide": BadRequest,
    "UnsupportedOption": BadRequest,
    "ConflictingOptions": BadRequest,
}


def _status_class(status: int, default: type[ExchangeError] = ExchangeError) -> type[ExchangeError]:
    if status == 429:
        return RateLimitExceeded
    if status >= 500:
        return ExchangeNotAvailable
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDenied
    if 400 <= status < 500:
        return BadRequest if default is ExchangeError else default
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


def parse_rest_error(status: int, headers: Any, body: Any) -> ExchangeError:
    """The typed error for a failed REST answer (``body``: bytes, str or decoded JSON).

    Gemini's ``reason`` decides when known (``RateLimit`` ->
    :class:`RateLimitExceeded`, ``InvalidSymbol`` -> :class:`BadSymbol`,
    ``Maintenance``/``System`` -> :class:`ExchangeNotAvailable`, ...);
    otherwise the status: 429 -> :class:`RateLimitExceeded`, 5xx (502
    technical issue, 503 maintenance) -> :class:`ExchangeNotAvailable`, 401
    -> :class:`AuthenticationError`, 403 -> :class:`PermissionDenied`, other
    4xx -> :class:`BadRequest`.  Rate-limit errors carry ``retry_after``;
    every error carries ``status`` and ``reason`` attributes.
    """
    payload = body
    if isinstance(body, (bytes, str)):
        try:
            payload = decode(body) if body else None
        except ValueError:
            payload = None
    reason: str | None = None
    msg: str | None = None
    if isinstance(payload, dict):
        raw = payload.get("reason")
        if not isinstance(raw, str):
            err = payload.get("error")
            if isinstance(err, dict):
                raw = err.get("reason") or err.get("msg")
            elif isinstance(err, str):
                raw = err
        reason = raw if isinstance(raw, str) and raw else None
        raw_msg = payload.get("message")
        msg = raw_msg if isinstance(raw_msg, str) and raw_msg else None
    if msg is None and isinstance(body, (bytes, str)) and body and payload is None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        msg = text[:200]
    text = f"Gemini HTTP {status}"
    if reason is not None:
        text += f" {reason}"
    if msg:
        text += f": {msg}"
    cls = ERROR_REASONS.get(reason) if reason is not None else None
    if cls is None:
        cls = _status_class(status)
    limited = issubclass(cls, RateLimitExceeded)
    error = cls(text, retry_after(headers)) if limited else cls(text)  # type: ignore[call-arg]
    error.status = status  # type: ignore[attr-defined]
    error.reason = reason  # type: ignore[attr-defined]
    return error


# ---------------------------------------------------------------------------
# Signing (private REST and the WebSocket handshake)
# ---------------------------------------------------------------------------


def sign(secret: str | bytes, payload_b64: str | bytes) -> str:
    """Hex HMAC-SHA384 of the base64 payload *text exactly as sent*, keyed by ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    msg = payload_b64.encode() if isinstance(payload_b64, str) else payload_b64
    return hmac.new(key, msg, hashlib.sha384).hexdigest()


def private_headers(
    api_key: str, secret: str | bytes, payload: Mapping[str, Any] | str | bytes
) -> dict[str, str]:
    """Headers of a private REST call (or a legacy v1 order-events handshake).

    ``payload`` is the JSON object (``{"request": "/v1/...", "nonce": ..., ...}``)
    or its exact JSON text; it is sent base64-encoded in
    ``X-GEMINI-PAYLOAD`` and signed as such.  The secret appears only in the
    signature.
    """
    if isinstance(payload, Mapping):
        text = json.dumps(dict(payload), separators=(",", ":")).encode()
    else:
        text = payload.encode() if isinstance(payload, str) else payload
    b64 = base64.b64encode(text).decode("ascii")
    return {
        "Content-Type": "text/plain",
        "Content-Length": "0",
        "X-GEMINI-APIKEY": api_key,
        "X-GEMINI-PAYLOAD": b64,
        "X-GEMINI-SIGNATURE": sign(secret, b64),
        "Cache-Control": "no-cache",
    }


def ws_auth_headers(api_key: str, secret: str | bytes, nonce: int) -> dict[str, str]:
    """Handshake headers of an authenticated ``wss://ws.gemini.com`` connection.

    ``nonce`` is the current time in epoch *seconds*; the payload is the
    base64 of its decimal text, signed with HMAC-SHA384.  Authentication
    happens only at the handshake.
    """
    if type(nonce) is not int or nonce <= 0:
        raise BadRequest(f"Gemini WebSocket nonce must be epoch seconds, got {nonce!r}")
    b64 = base64.b64encode(str(nonce).encode()).decode("ascii")
    return {
        "X-GEMINI-APIKEY": api_key,
        "X-GEMINI-NONCE": str(nonce),
        "X-GEMINI-PAYLOAD": b64,
        "X-GEMINI-SIGNATURE": sign(secret, b64),
    }
