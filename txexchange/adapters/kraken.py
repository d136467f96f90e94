"""Kraken Spot WebSocket v2 public market-data adapter: URLs, topics, wire rules, parsing, REST.

Sits between the transport (which hands over decoded JSON and sends the
control frames built here) and the state layer (which receives the typed
events from :mod:`txexchange.events`).  Everything is pure: requests are
described as :class:`~txexchange.adapters.rest.RestRequest` values and
responses are parsed from already-decoded JSON; the client layer does the I/O.
Book integrity (CRC32 checksum over the top 10 levels, truncation to the
subscribed depth) lives in :mod:`txexchange.adapters.kraken_book`.

Numbers: Kraken v2 sends prices and quantities as JSON *numbers*.  Decoded
with orjson they would become floats (and lose trailing zeros and, past 15-17
digits, exactness), so :class:`KrakenWireRules` has a ``decode`` hook
(:func:`decode`, ``json`` with ``parse_float=Decimal``) that the transport
uses instead of orjson.  The parser accepts :class:`~decimal.Decimal`, int
(and, for hand-built messages, float and numeric strings) and renders every
price and quantity as the exchange's canonical string: padded to the pair's
``price_precision`` / ``qty_precision`` (``0.566`` -> ``"0.5660"``), which is
also what the book checksum is computed over.

Topics are the adapter's own strings: ``"book.10:BTC/USD"``,
``"ticker:BTC/USD"`` (``"ticker.bbo:BTC/USD"`` for the BBO trigger),
``"trade:BTC/USD"``, ``"ohlc.5:BTC/USD"`` (interval in minutes) and
``"instrument"``; the part after ``:`` is Kraken's v2 symbol (``Market.id``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from weakref import WeakKeyDictionary

import attrs

from txexchange.adapters import Unknown
from txexchange.adapters.kraken_book import (
    BOOK_DEPTHS,
    CHECKSUM_DEPTH,
    ApplyDelta,
    ApplySnapshot,
    Ignore,
    KrakenBookMessage,
    KrakenBookSync,
    Resync,
    SnapshotTooOld,
    SyncAction,
    kraken_checksum,
    kraken_checksum_string,
    render_decimal,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import DecodeError, dumps
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DDoSProtection,
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
    "BOOK_DEPTHS",
    "CHECKSUM_DEPTH",
    "DEFAULT_URLS",
    "ERROR_MESSAGES",
    "EXCHANGE",
    "HEARTBEAT",
    "STALL_TIMEOUT",
    "TIMEFRAMES",
    "ApplyDelta",
    "ApplySnapshot",
    "Ignore",
    "Instruments",
    "KrakenBookMessage",
    "KrakenBookSync",
    "KrakenError",
    "KrakenHeartbeat",
    "KrakenParser",
    "KrakenWireRules",
    "ParseResult",
    "Pong",
    "Resync",
    "SnapshotTooOld",
    "SyncAction",
    "SystemStatus",
    "asset_pairs_request",
    "book_snapshot_request",
    "book_sync",
    "book_topic",
    "candles_request",
    "decode",
    "error_class",
    "instrument_topic",
    "interval_of",
    "kraken_checksum",
    "kraken_checksum_string",
    "market_index",
    "ohlc_topic",
    "parse_candles",
    "parse_instruments",
    "parse_markets",
    "parse_message",
    "parse_order_book",
    "parse_rest_error",
    "parse_rest_ticker",
    "parse_rest_trades",
    "parse_tickers",
    "precisions",
    "render_decimal",
    "resolve_urls",
    "rest_pair",
    "retry_after",
    "ticker_request",
    "ticker_topic",
    "tickers_request",
    "topic_params",
    "trade_topic",
    "trades_request",
]

EXCHANGE = "kraken"

# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------

#: Production endpoints.  ``ws``: public WebSocket v2; ``ws_auth``: the
#: authenticated v2 endpoint (private channels, token from REST); ``rest``:
#: the Spot REST API.  Beta: ``wss://beta-ws.kraken.com/v2``.
DEFAULT_URLS: Mapping[str, str] = {
    "ws": "wss://ws.kraken.com/v2",
    "ws_auth": "wss://ws-auth.kraken.com/v2",
    "rest": "https://api.kraken.com",
}

_URL_SCHEMES = {
    "ws": ("ws://", "wss://"),
    "ws_auth": ("ws://", "wss://"),
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
            raise BadRequest(f"unknown Kraken URL key {key!r}; valid keys are {valid}")
        if not isinstance(value, str) or not value.lower().startswith(_URL_SCHEMES[key]):
            schemes = " or ".join(_URL_SCHEMES[key])
            raise BadRequest(f"Kraken URL {key!r} must start with {schemes}, got {value!r}")
        resolved[key] = value.rstrip("/")
    return resolved


# ---------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------

#: Unified timeframe -> Kraken ``ohlc`` interval in minutes.  21600 minutes
#: is 15 days (named for what it is; ccxt calls it ``2w``).
TIMEFRAMES: Mapping[str, int] = {
    "1m": 1, "5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240,
    "1d": 1440, "1w": 10080, "15d": 21600,
}  # fmt: skip
_INTERVAL_TIMEFRAME: Mapping[int, str] = {m: tf for tf, m in TIMEFRAMES.items()}
_TICKER_TRIGGERS = ("trades", "bbo")
_BAD_SYMBOL_CHARS = frozenset(' :\t\r\n"\\')


def _symbol(symbol: Any) -> str:
    if (
        not isinstance(symbol, str)
        or "/" not in symbol
        or len(symbol) > 64
        or any(c in _BAD_SYMBOL_CHARS for c in symbol)
    ):
        raise BadRequest(f"invalid Kraken v2 symbol {symbol!r} (expected e.g. 'BTC/USD')")
    return symbol


def interval_of(timeframe: str) -> int:
    """Kraken ``ohlc`` interval (minutes) for a unified timeframe (``"1h"`` -> ``60``)."""
    interval = TIMEFRAMES.get(timeframe)
    if interval is None:
        raise BadRequest(
            f"unsupported Kraken timeframe {timeframe!r}; valid: {' '.join(TIMEFRAMES)}"
        )
    return interval


def book_topic(symbol: str, depth: int = 10) -> str:
    """Book: ``book.10:BTC/USD``; ``depth`` is one of :data:`BOOK_DEPTHS`."""
    if depth not in BOOK_DEPTHS:
        raise BadRequest(
            f"Kraken book depth must be one of {', '.join(map(str, BOOK_DEPTHS))}, not {depth!r}"
        )
    return f"book.{depth}:{_symbol(symbol)}"


def ticker_topic(symbol: str, event_trigger: Literal["trades", "bbo"] = "trades") -> str:
    """Ticker: ``ticker:BTC/USD`` (on trades, the default) or ``ticker.bbo:BTC/USD``."""
    if event_trigger not in _TICKER_TRIGGERS:
        raise BadRequest(
            f"Kraken ticker event_trigger must be 'trades' or 'bbo': {event_trigger!r}"
        )
    suffix = "" if event_trigger == "trades" else ".bbo"
    return f"ticker{suffix}:{_symbol(symbol)}"


def trade_topic(symbol: str) -> str:
    """Trades: ``trade:BTC/USD`` (subscribed with ``snapshot: true``: the last 50 trades)."""
    return f"trade:{_symbol(symbol)}"


def ohlc_topic(symbol: str, timeframe: str) -> str:
    """Candles: ``ohlc.5:BTC/USD``; ``timeframe`` is unified (see :data:`TIMEFRAMES`)."""
    return f"ohlc.{interval_of(timeframe)}:{_symbol(symbol)}"


def instrument_topic() -> str:
    """Reference data of every pair (precisions for the checksum): ``instrument``."""
    return "instrument"


def topic_params(topic: str) -> tuple[dict[str, Any], str | None]:
    """``"book.25:BTC/USD"`` -> ``({"channel": "book", "depth": 25}, "BTC/USD")``.

    The first item is the request ``params`` without ``symbol``; the second
    the symbol (``None`` for ``instrument``).
    """
    if topic == "instrument":
        return {"channel": "instrument"}, None
    if not isinstance(topic, str):
        raise BadRequest(f"invalid Kraken topic {topic!r}")
    head, sep, symbol = topic.partition(":")
    if not sep:
        raise BadRequest(f"invalid Kraken topic {topic!r} (expected '<channel>:<symbol>')")
    channel, _, arg = head.partition(".")
    params: dict[str, Any] = {"channel": channel}
    if channel == "book":
        if not arg.isdigit() or int(arg) not in BOOK_DEPTHS:
            raise BadRequest(f"invalid Kraken book topic {topic!r}")
        params["depth"] = int(arg)
    elif channel == "ohlc":
        if not arg.isdigit() or int(arg) not in _INTERVAL_TIMEFRAME:
            raise BadRequest(f"invalid Kraken ohlc topic {topic!r}")
        params["interval"] = int(arg)
    elif channel == "ticker":
        if arg not in ("", "bbo"):
            raise BadRequest(f"invalid Kraken ticker topic {topic!r}")
        if arg:
            params["event_trigger"] = arg
    elif channel == "trade":
        if arg:
            raise BadRequest(f"invalid Kraken trade topic {topic!r}")
        params["snapshot"] = True
    else:
        raise BadRequest(f"unsupported Kraken channel in topic {topic!r}")
    return params, _symbol(symbol)


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------

#: ``{"method": "ping"}`` after 5 s without traffic; Kraken answers with a
#: JSON ``pong`` the parser turns into :class:`Pong`.  (The ``heartbeat``
#: channel runs about once a second once anything is subscribed.)
HEARTBEAT = Heartbeat(b'{"method":"ping"}', idle_interval=5.0, pong=None)
#: Suggested ``TransportOptions.stall_timeout``: heartbeats come about every
#: second, so 10 s of silence (a ping unanswered too) means a dead link.
STALL_TIMEOUT = 10.0


def decode(raw: bytes | str) -> Any:
    """Decode a frame keeping every non-integer number exact as :class:`~decimal.Decimal`.

    ``NaN``/``Infinity`` are refused and nesting too deep for the decoder is
    reported as a decode error, so every failure is one of
    :data:`txexchange.codec.DecodeError`.
    """
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite JSON number {name}")


def _request_id_in(value: Any) -> int | None:
    return value if type(value) is int else None


@attrs.frozen
class KrakenWireRules:
    """:class:`~txexchange.transport.rules.WireRules` for the public v2 connection.

    Subscribe: ``{"method": "subscribe", "params": {"channel", "symbol": [...],
    ...}, "req_id": n}``.  One request carries one channel with one set of
    parameters (depth, interval, trigger), and Kraken acknowledges *each
    symbol* separately with the same ``req_id``; since the transport settles
    a request on its first reply, ``max_topics_per_message`` is 1 by default
    so that every topic's ack (or refusal) is its own.  (With a larger value
    the topics of one message must share channel and parameters.)

    Heartbeat: ``{"method": "ping"}`` after 5 s of silence (see
    :data:`HEARTBEAT`); use :data:`STALL_TIMEOUT` for the transport's stall
    watchdog.  Kraken publishes no fixed per-connection control rate (it
    refuses with "Exceeded msg rate"), so ``control_rate`` is a conservative
    default.  :meth:`decode` keeps JSON numbers exact.
    """

    control_rate: float = 5.0
    max_topics_per_message: int = 1
    max_topics_per_connection: int | None = None
    replies_to_control: bool = True
    binary_compression: Compression = None
    heartbeat: Heartbeat | None = HEARTBEAT
    max_connection_age: float | None = None

    def subscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"method": "subscribe", "params": {...}, "req_id": n}``."""
        return self._control("subscribe", topics, request_id)

    def unsubscribe_message(self, topics: Sequence[str], request_id: int) -> bytes:
        """``{"method": "unsubscribe", "params": {...}, "req_id": n}``."""
        return self._control("unsubscribe", topics, request_id)

    def _control(self, method: str, topics: Sequence[str], request_id: int) -> bytes:
        if not topics:
            raise BadRequest(f"Kraken {method} needs at least one topic")
        if len(topics) > self.max_topics_per_message:
            raise BadRequest(
                f"Kraken {method} of {len(topics)} topics exceeds "
                f"{self.max_topics_per_message} per message"
            )
        if type(request_id) is not int:
            raise BadRequest(f"Kraken req_id must be an integer, not {request_id!r}")
        params: dict[str, Any] | None = None
        symbols: list[str] = []
        for topic in topics:
            p, symbol = topic_params(topic)
            if method == "unsubscribe":
                p.pop("snapshot", None)
            if params is None:
                params = p
            elif p != params:
                raise BadRequest(
                    f"Kraken {method} topics must share channel and parameters: {list(topics)!r}"
                )
            if symbol is not None:
                symbols.append(symbol)
        assert params is not None
        if symbols:
            params["symbol"] = symbols
        return dumps({"method": method, "params": params, "req_id": request_id})

    def control_reply(self, message: Any) -> ControlReply | None:
        """A :class:`ControlReply` for a subscribe/unsubscribe ack naming a ``req_id``."""
        if type(message) is not dict or message.get("method") not in ("subscribe", "unsubscribe"):
            return None
        request_id = _request_id_in(message.get("req_id"))
        success = message.get("success")
        if request_id is None or type(success) is not bool:
            return None
        return ControlReply(request_id, success, None if success else _ack_error_text(message))

    def overlap_key(self, raw: bytes) -> Hashable:
        """The frame itself for data; heartbeats (all alike) never match each other."""
        if raw.startswith(b'{"channel":"heartbeat"'):
            return object()
        return raw

    def decode(self, raw: bytes) -> Any:
        """:func:`decode`: JSON numbers kept exact as :class:`~decimal.Decimal`."""
        return decode(raw)


def _ack_error_text(message: Mapping[str, Any]) -> str:
    error = message.get("error")
    text = error if isinstance(error, str) and error else "refused"
    symbol = message.get("symbol")
    if isinstance(symbol, str):
        text += f" ({symbol})"
    return text


# ---------------------------------------------------------------------------
# Numbers and times
# ---------------------------------------------------------------------------


def _bad(what: str, data: Any) -> MalformedMessage:
    return MalformedMessage(f"Kraken {what}: {data!r:.300}")


def _dec(value: Any, what: str, d: Any) -> Decimal:
    """A JSON number (Decimal, int, float) or numeric string as a finite Decimal."""
    t = type(value)
    try:
        if t is Decimal:
            dec = value
        elif t is int:
            dec = Decimal(value)
        elif t is float:
            dec = Decimal(repr(value))
        elif t is str and value:
            dec = Decimal(value)
        else:
            raise _bad(f"bad {what}", d)
    except (InvalidOperation, ValueError):
        raise _bad(f"bad {what}", d) from None
    if not dec.is_finite() or not -40 < dec.adjusted() < 40:
        raise _bad(f"bad {what}", d)
    return dec


def _num(d: Mapping[str, Any], key: str, places: int | None) -> str:
    return render_decimal(_dec(d.get(key), key, d), places)


def _opt_num(d: Mapping[str, Any], key: str, places: int | None) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    return render_decimal(_dec(value, key, d), places)


def _digits(text: str, start: int, end: int) -> int:
    part = text[start:end]
    if len(part) != end - start or not part.isascii() or not part.isdigit():
        raise ValueError(part)
    return int(part)


_SECONDS_CACHE: dict[str, int] = {}


def _seconds_ms(head: str, value: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS`` -> ms since the epoch (cached: many events share a second)."""
    base = _SECONDS_CACHE.get(head)
    if base is None:
        s = head
        if s[4] != "-" or s[7] != "-" or s[10] not in "Tt " or s[13] != ":" or s[16] != ":":
            raise ValueError(f"not an RFC 3339 time: {value!r}")
        stamp = datetime(
            _digits(s, 0, 4),
            _digits(s, 5, 7),
            _digits(s, 8, 10),
            _digits(s, 11, 13),
            _digits(s, 14, 16),
            _digits(s, 17, 19),
            tzinfo=UTC,
        )
        base = int(stamp.timestamp()) * 1000
        if len(_SECONDS_CACHE) >= 4096:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[head] = base
    return base


def rfc3339_ms(value: Any) -> int:
    """``"2023-10-06T17:35:55.440295Z"`` -> ms since the epoch (``ValueError`` if bad).

    Fractions of any length (Kraken sends 6 or 9 digits) are truncated to
    milliseconds; ``Z`` or a ``±HH:MM`` offset.
    """
    if type(value) is not str or len(value) < 20:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    s = value
    base = _seconds_ms(s[:19], value)
    i = 19
    ms = 0
    if s[i] == ".":
        j = i + 1
        while j < len(s) and "0" <= s[j] <= "9":
            j += 1
        if j == i + 1:
            raise ValueError(f"not an RFC 3339 time: {value!r}")
        ms = int((s[i + 1 : j] + "00")[:3])
        i = j
    tz = s[i:]
    offset = 0
    if tz not in ("Z", "z"):
        if len(tz) != 6 or tz[0] not in "+-" or tz[3] != ":":
            raise ValueError(f"not an RFC 3339 time: {value!r}")
        offset = (_digits(tz, 1, 3) * 60 + _digits(tz, 4, 6)) * 60_000
        if tz[0] == "-":
            offset = -offset
    return base + ms - offset


def _ts(d: Mapping[str, Any], key: str) -> int:
    try:
        return rfc3339_ms(d.get(key))
    except ValueError:
        raise _bad(f"bad {key}", d) from None


def _opt_ts(d: Mapping[str, Any], key: str) -> int | None:
    return None if d.get(key) is None else _ts(d, key)


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------

#: Kraken's legacy asset codes (REST ``AssetPairs``, v1) -> the v2/unified names.
_LEGACY_ASSETS: Mapping[str, str] = {"XBT": "BTC", "XDG": "DOGE"}


def precisions(market: Market) -> tuple[int, int]:
    """``(price_precision, qty_precision)`` of a Kraken market, as the checksum needs them.

    From the instrument channel's ``price_precision``/``qty_precision``, else
    REST's ``pair_decimals``/``lot_decimals``, else the decimals of the
    market's tick and step sizes.  :class:`BadRequest` if none is known.
    """
    info = market.info
    for price_key, qty_key in (
        ("price_precision", "qty_precision"),
        ("pair_decimals", "lot_decimals"),
    ):
        pp = info.get(price_key)
        qp = info.get(qty_key)
        if type(pp) is int and type(qp) is int:
            return pp, qp
    pp2 = market.price_precision
    qp2 = market.amount_precision
    if pp2 is None or qp2 is None:
        raise BadRequest(f"Kraken market {market.symbol!r} has no known price/qty precision")
    return pp2, qp2


def book_sync(market: Market, depth: int = 10, **options: Any) -> KrakenBookSync:
    """A :class:`KrakenBookSync` for ``market`` with its precisions."""
    pp, qp = precisions(market)
    return KrakenBookSync(market.id, depth, price_precision=pp, qty_precision=qp, **options)


def _increment(value: Any, d: Any) -> str | None:
    if value is None:
        return None
    dec = _dec(value, "increment", d)
    return None if dec <= 0 else render_decimal(dec, None)


def _pair_market(pair: Any) -> Market | None:
    """One ``instrument`` pair -> Market (``None`` for a pair without base/quote)."""
    if type(pair) is not dict:
        raise _bad("instrument pair is not an object", pair)
    symbol = pair.get("symbol")
    base = pair.get("base")
    quote = pair.get("quote")
    if type(symbol) is not str or not symbol:
        raise _bad("instrument pair without symbol", pair)
    if type(base) is not str or type(quote) is not str:
        raise _bad("instrument pair with bad base/quote", pair)
    if not base or not quote:
        return None
    for key in ("price_precision", "qty_precision"):
        value = pair.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= 30):
            raise _bad(f"instrument pair with bad {key}", pair)
    tick = _increment(pair.get("price_increment", pair.get("tick_size")), pair)
    step = _increment(pair.get("qty_increment"), pair)
    return Market(
        symbol=f"{base}/{quote}",
        id=symbol,
        base=base,
        quote=quote,
        active=pair.get("status") == "online",
        tick_size=tick,
        amount_step=step,
        info=pair,
    )


def parse_instruments(data: Any) -> list[Market]:
    """Markets from an ``instrument`` channel ``data`` object (its ``pairs``)."""
    if type(data) is not dict:
        raise _bad("instrument data is not an object", data)
    pairs = data.get("pairs", [])
    if type(pairs) is not list:
        raise _bad("instrument pairs is not a list", data)
    out: list[Market] = []
    for pair in pairs:
        market = _pair_market(pair)
        if market is not None:
            out.append(market)
    return out


def _rest_result(payload: Any) -> Any:
    """``result`` of a REST answer; a non-empty ``error`` list raises its typed error."""
    if type(payload) is not dict:
        raise _bad("REST answer is not a JSON object", payload)
    errors = payload.get("error")
    if errors is None:
        errors = []
    if type(errors) is not list:
        raise _bad("REST answer with a bad 'error'", payload)
    if any(isinstance(e, str) and e.startswith("E") for e in errors):
        raise parse_rest_error(200, None, payload)
    if "result" not in payload:
        raise _bad("REST answer without 'result'", payload)
    return payload["result"]


def _unified_asset(code: str) -> str:
    return _LEGACY_ASSETS.get(code, code)


def parse_markets(payload: Any) -> dict[str, Market]:
    """Unified markets from ``GET /0/public/AssetPairs``, keyed by ``BASE/QUOTE``.

    The unified symbol and ``Market.id`` (the v2 WebSocket symbol) come from
    ``wsname`` with Kraken's legacy asset codes renamed (``XBT`` -> ``BTC``,
    ``XDG`` -> ``DOGE``); ``tick_size`` is ``tick_size`` (else
    ``10**-pair_decimals``), ``amount_step`` is ``10**-lot_decimals``;
    ``active`` is ``status == "online"``.  ``info`` is the raw entry plus
    ``rest_key`` (the answer's key, e.g. ``XXBTZUSD``).  Pairs without a
    ``wsname`` (dark pools) are skipped.  The ``instrument`` channel
    (:func:`parse_instruments`) is the authoritative v2 list.
    """
    result = _rest_result(payload)
    if type(result) is not dict:
        raise _bad("AssetPairs result is not an object", payload)
    markets: dict[str, Market] = {}
    for key, entry in result.items():
        if type(entry) is not dict:
            raise _bad("asset pair is not an object", entry)
        wsname = entry.get("wsname")
        if wsname is None:
            continue
        if type(wsname) is not str or wsname.count("/") != 1:
            raise _bad("asset pair with bad wsname", entry)
        raw_base, raw_quote = wsname.split("/")
        if not raw_base or not raw_quote:
            raise _bad("asset pair with bad wsname", entry)
        base = _unified_asset(raw_base)
        quote = _unified_asset(raw_quote)
        symbol = f"{base}/{quote}"
        if symbol in markets:
            continue
        pair_decimals = entry.get("pair_decimals")
        lot_decimals = entry.get("lot_decimals")
        for name, value in (("pair_decimals", pair_decimals), ("lot_decimals", lot_decimals)):
            if value is not None and (type(value) is not int or not 0 <= value <= 30):
                raise _bad(f"asset pair with bad {name}", entry)
        tick = entry.get("tick_size")
        if not (isinstance(tick, str) and tick):
            tick = _increment(entry.get("tick_size"), entry) if tick is not None else None
        if tick is None and pair_decimals is not None:
            tick = render_decimal(Decimal(1).scaleb(-pair_decimals), None)
        step = (
            render_decimal(Decimal(1).scaleb(-lot_decimals), None)
            if lot_decimals is not None
            else None
        )
        markets[symbol] = Market(
            symbol=symbol,
            id=symbol,
            base=base,
            quote=quote,
            active=entry.get("status", "online") == "online",
            tick_size=tick,
            amount_step=step,
            info={**entry, "rest_key": key},
        )
    return markets


def market_index(markets: Any) -> MarketIndex:
    """A :class:`MarketIndex` from an ``AssetPairs`` answer, an ``instrument``
    ``data`` object, or an iterable of :class:`Market`."""
    if type(markets) is dict and "pairs" in markets and "result" not in markets:
        values: Iterable[Market] = parse_instruments(markets)
    elif type(markets) is dict:
        values = parse_markets(markets).values()
    else:
        values = markets
    return MarketIndex.from_markets(values, EXCHANGE)


def rest_pair(market: Market) -> str:
    """The REST ``pair`` argument for ``market``: ``altname`` if known (``XBTUSD``).

    Markets from the instrument channel carry no REST name; their v2 symbol
    without the slash is used (``BTCUSD``) -- Kraken resolves such aliases,
    but prefer markets loaded from ``AssetPairs`` for REST calls.
    """
    altname = market.info.get("altname")
    if isinstance(altname, str) and altname:
        return altname
    return market.id.replace("/", "")


# ---------------------------------------------------------------------------
# Outcomes besides events
# ---------------------------------------------------------------------------


@attrs.frozen(slots=True)
class KrakenError:
    """A refused request (``success: false``) not consumed as a request's reply.

    ``method`` is the request's (``subscribe``, ...), ``symbol`` the one it
    names (acks are per symbol), ``request_id`` the echoed ``req_id``.
    :meth:`exception` gives the typed error.
    """

    message: str
    method: str | None = None
    symbol: str | None = None
    request_id: int | None = None

    def exception(self) -> ExchangeError:
        """The typed error (rate limit, unknown pair, else :class:`SubscriptionError`)."""
        cls = error_class(self.message, default=SubscriptionError)
        text = f"Kraken {self.method or 'request'} refused: {self.message}"
        if self.symbol:
            text += f" ({self.symbol})"
        return cls(text)


@attrs.frozen(slots=True)
class Pong:
    """Kraken's answer to ``{"method": "ping"}``."""

    request_id: int | None = None


@attrs.frozen(slots=True)
class KrakenHeartbeat:
    """``{"channel": "heartbeat"}``: the connection is alive (about once a second)."""


@attrs.frozen(slots=True)
class SystemStatus:
    """``status`` channel: the trading engine's state, sent on connect and on every change.

    ``system`` is ``online``, ``maintenance``, ``cancel_only`` or
    ``post_only``; outside ``online`` no matching happens (books freeze).
    """

    system: str
    api_version: str | None = None
    version: str | None = None
    connection_id: int | None = None

    @property
    def online(self) -> bool:
        return self.system == "online"


@attrs.frozen(slots=True)
class Instruments:
    """``instrument`` channel: markets (``snapshot``: the full list, else changed pairs)."""

    markets: tuple[Market, ...]
    snapshot: bool


_HEARTBEAT = KrakenHeartbeat()

# ---------------------------------------------------------------------------
# Messages (the per-message hot path)
# ---------------------------------------------------------------------------

Event = KrakenBookMessage | Trade | Candle | Ticker
#: What :meth:`KrakenParser.parse` returns: events (usually one), an
#: :class:`Instruments` list, a reply to a control request, an error, a pong,
#: a heartbeat, a system status or an :class:`Unknown` marker.  (Kraken
#: documents no shutdown notice; ``status`` ``maintenance`` is the nearest.)
ParseResult = (
    list[Event]
    | Instruments
    | ControlReply
    | KrakenError
    | Pong
    | KrakenHeartbeat
    | SystemStatus
    | Unknown
)

_Handler = Callable[["KrakenParser", Any, bool, Mapping[str, Any]], Any]


class KrakenParser:
    """Turns decoded Kraken v2 messages into typed outcomes.

    One parser per :class:`MarketIndex`: data items are matched to markets
    by their ``symbol`` (``Market.id``) and rendered with the market's
    precisions (:func:`precisions`).  Items for symbols not in the index are
    skipped; a message with none left is :class:`Unknown`.

    :meth:`parse` returns a list of events (:class:`KrakenBookMessage` for
    ``book`` -- feed those to a :class:`KrakenBookSync` --,
    :class:`~txexchange.events.Trade`, :class:`~txexchange.events.Ticker`,
    :class:`~txexchange.events.Candle`), :class:`Instruments`,
    :class:`~txexchange.transport.rules.ControlReply` (successful acks),
    :class:`KrakenError` (refusals), :class:`Pong`, :class:`KrakenHeartbeat`,
    :class:`SystemStatus` or :class:`~txexchange.adapters.Unknown`.  A
    message of the wrong shape raises
    :class:`~txexchange.errors.MalformedMessage` and nothing else.
    """

    __slots__ = ("_prec", "index")

    def __init__(self, index: MarketIndex) -> None:
        self.index = index
        self._prec: dict[str, tuple[Market, int | None, int | None]] = {}

    def _market(self, symbol: Any) -> tuple[Market, int | None, int | None] | None:
        if type(symbol) is not str:
            return None
        hit = self._prec.get(symbol)
        if hit is None:
            market = self.index.by_id.get(symbol)
            if market is None:
                return None
            try:
                pp, qp = precisions(market)
                hit = (market, pp, qp)
            except BadRequest:
                hit = (market, None, None)
            if len(self._prec) > 8192:
                self._prec.clear()
            self._prec[symbol] = hit
        return hit

    def parse(self, message: Any) -> ParseResult:
        """Parse one decoded message (see the class docstring)."""
        if type(message) is not dict:
            raise _bad("message is not a JSON object", message)
        channel = message.get("channel")
        if channel is not None:
            return self._channel(channel, message)
        method = message.get("method")
        if method is not None:
            return self._method(method, message)
        if message.get("success") is False or "error" in message:
            return self._refusal(message)
        return Unknown("Kraken message without channel or method", message)

    # -- channels ----------------------------------------------------------

    def _channel(self, channel: Any, message: dict[str, Any]) -> ParseResult:
        if channel == "heartbeat":
            return _HEARTBEAT
        handler = _HANDLERS.get(channel) if type(channel) is str else None
        if handler is None:
            if type(channel) is not str:
                raise _bad("bad channel", message)
            return Unknown(f"no parser for Kraken channel {channel!r}", message)
        kind = message.get("type")
        if kind != "snapshot" and kind != "update":
            raise _bad(f"{channel} message with bad type {kind!r}", message)
        data = message.get("data")
        try:
            result = handler(self, data, kind == "snapshot", message)
        except MalformedMessage:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, InvalidOperation) as e:
            raise _bad(f"{channel} message missing or bad {e}", message) from None
        if type(result) is list and not result and data:
            return Unknown(f"{channel} message for markets not in the market list", message)
        return result

    def _items(self, data: Any, channel: str) -> list[dict[str, Any]]:
        if type(data) is not list:
            raise _bad(f"{channel} data is not a list", data)
        for d in data:
            if type(d) is not dict:
                raise _bad(f"{channel} item is not an object", d)
        return data

    def _levels(self, raw: Any, pp: int | None, qp: int | None, d: Any) -> list[tuple[str, str]]:
        if type(raw) is not list:
            raise _bad("book side is not a list", d)
        out: list[tuple[str, str]] = []
        append = out.append
        for level in raw:
            if type(level) is not dict:
                raise _bad("book level is not an object", d)
            append((_num(level, "price", pp), _num(level, "qty", qp)))
        return out

    def _book(self, data: Any, snapshot: bool, message: Any) -> list[KrakenBookMessage]:
        out: list[KrakenBookMessage] = []
        for d in self._items(data, "book"):
            hit = self._market(d.get("symbol"))
            if hit is None:
                continue
            market, pp, qp = hit
            bids = self._levels(d.get("bids", []), pp, qp, d)
            asks = self._levels(d.get("asks", []), pp, qp, d)
            checksum = d.get("checksum")
            if type(checksum) is not int or not 0 <= checksum <= 0xFFFF_FFFF:
                raise _bad("book item with bad checksum", d)
            ts = _opt_ts(d, "timestamp")
            event: BookSnapshot | BookDelta
            if snapshot:
                event = BookSnapshot(market.id, bids, asks, None, ts)
            else:
                event = BookDelta(market.id, bids, asks, None, None, None, ts)
            out.append(KrakenBookMessage(event, checksum))
        return out

    def _trade(self, data: Any, snapshot: bool, message: Any) -> list[Trade]:
        out: list[Trade] = []
        for d in self._items(data, "trade"):
            hit = self._market(d.get("symbol"))
            if hit is None:
                continue
            market, pp, qp = hit
            trade_id = d.get("trade_id")
            if type(trade_id) is not int:
                raise _bad("trade with bad trade_id", d)
            side = d.get("side")
            if side != "buy" and side != "sell":
                raise _bad("trade with bad side", d)
            out.append(
                Trade(
                    market.symbol,
                    str(trade_id),
                    _ts(d, "timestamp"),
                    _num(d, "price", pp),
                    _num(d, "qty", qp),
                    side,
                    "taker",  # ``side`` is the taker's
                )
            )
        return out

    def _ticker(self, data: Any, snapshot: bool, message: Any) -> list[Ticker]:
        out: list[Ticker] = []
        for d in self._items(data, "ticker"):
            hit = self._market(d.get("symbol"))
            if hit is None:
                continue
            market, pp, qp = hit
            last = _opt_num(d, "last", pp)
            change = d.get("change")
            open_: str | None = None
            if last is not None and change is not None:
                open_ = render_decimal(Decimal(last) - _dec(change, "change", d), pp)
            out.append(
                Ticker(
                    market.symbol,
                    timestamp=_opt_ts(d, "timestamp"),
                    bid=_opt_num(d, "bid", pp),
                    bid_volume=_opt_num(d, "bid_qty", qp),
                    ask=_opt_num(d, "ask", pp),
                    ask_volume=_opt_num(d, "ask_qty", qp),
                    last=last,
                    open=open_,
                    high=_opt_num(d, "high", pp),
                    low=_opt_num(d, "low", pp),
                    close=last,
                    base_volume=_opt_num(d, "volume", qp),
                    change=_opt_num(d, "change", pp),
                    percentage=_opt_num(d, "change_pct", None),
                    vwap=_opt_num(d, "vwap", pp),
                )
            )
        return out

    def _ohlc(self, data: Any, snapshot: bool, message: Any) -> list[Candle]:
        out: list[Candle] = []
        for d in self._items(data, "ohlc"):
            hit = self._market(d.get("symbol"))
            if hit is None:
                continue
            market, pp, qp = hit
            interval = d.get("interval")
            timeframe = _INTERVAL_TIMEFRAME.get(interval) if type(interval) is int else None
            if timeframe is None:
                raise _bad("ohlc item with bad interval", d)
            out.append(
                Candle(
                    market.symbol,
                    timeframe,
                    _ts(d, "interval_begin"),
                    _num(d, "open", pp),
                    _num(d, "high", pp),
                    _num(d, "low", pp),
                    _num(d, "close", pp),
                    _num(d, "volume", qp),
                    False,  # Kraken updates a candle on every trade; a newer one closes it
                )
            )
        return out

    def _instrument(self, data: Any, snapshot: bool, message: Any) -> Instruments:
        return Instruments(tuple(parse_instruments(data)), snapshot)

    def _status(self, data: Any, snapshot: bool, message: Any) -> SystemStatus:
        items = self._items(data, "status")
        if not items:
            raise _bad("status without data", message)
        d = items[0]
        system = d.get("system")
        if type(system) is not str:
            raise _bad("status without system", d)
        api = d.get("api_version")
        version = d.get("version")
        conn = d.get("connection_id")
        return SystemStatus(
            system,
            api if type(api) is str else None,
            version if type(version) is str else None,
            conn if type(conn) is int else None,
        )

    # -- methods -----------------------------------------------------------

    def _method(self, method: Any, message: dict[str, Any]) -> ParseResult:
        if method == "pong":
            return Pong(_request_id_in(message.get("req_id")))
        if type(method) is not str:
            raise _bad("bad method", message)
        success = message.get("success")
        if success is True:
            return ControlReply(_request_id_in(message.get("req_id")), True)
        if success is False:
            return self._refusal(message)
        if success is None:
            return Unknown(f"Kraken {method!r} message without success", message)
        raise _bad("bad success flag", message)

    def _refusal(self, message: dict[str, Any]) -> KrakenError:
        error = message.get("error")
        if error is not None and type(error) is not str:
            raise _bad("error is not a string", message)
        method = message.get("method")
        symbol = message.get("symbol")
        return KrakenError(
            error or "request refused",
            method if type(method) is str else None,
            symbol if type(symbol) is str else None,
            _request_id_in(message.get("req_id")),
        )


_HANDLERS: Mapping[str, _Handler] = {
    "book": KrakenParser._book,
    "trade": KrakenParser._trade,
    "ticker": KrakenParser._ticker,
    "ohlc": KrakenParser._ohlc,
    "instrument": KrakenParser._instrument,
    "status": KrakenParser._status,
}

_parsers: WeakKeyDictionary[MarketIndex, KrakenParser] = WeakKeyDictionary()


def parse_message(message: Any, index: MarketIndex) -> ParseResult:
    """Parse one decoded message with the (cached) :class:`KrakenParser` for ``index``."""
    parser = _parsers.get(index)
    if parser is None:
        parser = _parsers[index] = KrakenParser(index)
    return parser.parse(message)


# ---------------------------------------------------------------------------
# REST: request descriptions
# ---------------------------------------------------------------------------


def _check_limit(limit: Any, low: int, high: int, what: str) -> None:
    if type(limit) is not int or not low <= limit <= high:
        raise BadRequest(f"{what} must be an integer in {low}..{high}, got {limit!r}")


def _pair(pair: Any) -> str:
    if not isinstance(pair, str) or not pair or any(c in _BAD_SYMBOL_CHARS for c in pair):
        raise BadRequest(f"invalid Kraken REST pair {pair!r}")
    return pair


def asset_pairs_request() -> RestRequest:
    """``GET /0/public/AssetPairs`` (answer: :func:`parse_markets`)."""
    return RestRequest("GET", "/0/public/AssetPairs")


def book_snapshot_request(pair: str, count: int = 100) -> RestRequest:
    """``GET /0/public/Depth?pair=..&count=..`` (1..500 levels; answer: :func:`parse_order_book`).

    A REST book cannot be joined to the WebSocket stream (no sequence
    numbers): use it for one-off reads; the stream resyncs by resubscribing.
    """
    _check_limit(count, 1, 500, "Kraken Depth count")
    return RestRequest("GET", "/0/public/Depth", {"pair": _pair(pair), "count": count})


def trades_request(pair: str, *, since: int | None = None, count: int = 1000) -> RestRequest:
    """``GET /0/public/Trades`` (``since``: ns/s cursor; answer: :func:`parse_rest_trades`)."""
    _check_limit(count, 1, 1000, "Kraken Trades count")
    params: dict[str, Any] = {"pair": _pair(pair)}
    if since is not None:
        params["since"] = since
    params["count"] = count
    return RestRequest("GET", "/0/public/Trades", params)


def candles_request(pair: str, timeframe: str, *, since: int | None = None) -> RestRequest:
    """``GET /0/public/OHLC?pair=..&interval=..`` (``since`` in seconds).

    Answer: :func:`parse_candles`.
    """
    params: dict[str, Any] = {"pair": _pair(pair), "interval": interval_of(timeframe)}
    if since is not None:
        params["since"] = since
    return RestRequest("GET", "/0/public/OHLC", params)


def ticker_request(pair: str) -> RestRequest:
    """``GET /0/public/Ticker?pair=..`` (answer: :func:`parse_rest_ticker`)."""
    return RestRequest("GET", "/0/public/Ticker", {"pair": _pair(pair)})


def tickers_request() -> RestRequest:
    """``GET /0/public/Ticker`` for every pair (answer: :func:`parse_tickers`)."""
    return RestRequest("GET", "/0/public/Ticker")


# ---------------------------------------------------------------------------
# REST: answers
# ---------------------------------------------------------------------------


def _single(payload: Any, what: str) -> Any:
    """The one per-pair entry of a REST result (keyed by Kraken's pair name)."""
    result = _rest_result(payload)
    if type(result) is not dict:
        raise _bad(f"{what} result is not an object", payload)
    entries = [v for k, v in result.items() if k != "last"]
    if len(entries) != 1:
        raise _bad(f"{what} result should hold exactly one pair", payload)
    return entries[0]


def _str(value: Any, what: str, d: Any) -> str:
    if type(value) is str and value:
        return value
    if type(value) in (int, Decimal, float):
        return render_decimal(_dec(value, what, d), None)
    raise _bad(f"bad {what}", d)


def _rest_levels(raw: Any, d: Any) -> list[tuple[str, str]]:
    if type(raw) is not list:
        raise _bad("book side is not a list", d)
    out: list[tuple[str, str]] = []
    for level in raw:
        if type(level) is not list or len(level) < 2:
            raise _bad("book level is not a [price, volume, ts] list", d)
        out.append((_str(level[0], "price", d), _str(level[1], "volume", d)))
    return out


def _epoch_ms(value: Any, d: Any) -> int:
    """Seconds (int, float, Decimal or numeric string) -> ms, truncated."""
    return int(_dec(value, "time", d).scaleb(3).to_integral_value(rounding="ROUND_FLOOR"))


def parse_order_book(symbol: str, payload: Any) -> BookSnapshot:
    """``GET /0/public/Depth`` answer -> :class:`BookSnapshot` (``nonce`` ``None``).

    ``timestamp`` is the newest level's time.  Levels keep the REST strings
    (which may show more decimals than the WebSocket book).
    """
    d = _single(payload, "Depth")
    if type(d) is not dict:
        raise _bad("Depth entry is not an object", d)
    bids = _rest_levels(d.get("bids"), d)
    asks = _rest_levels(d.get("asks"), d)
    times = [
        level[2] for level in (*d["bids"], *d["asks"]) if len(level) > 2 and level[2] is not None
    ]
    ts = max(_epoch_ms(t, d) for t in times) if times else None
    return BookSnapshot(symbol, bids, asks, None, ts)


def parse_rest_trades(symbol: str, payload: Any) -> list[Trade]:
    """``GET /0/public/Trades`` answer -> trades, oldest first.

    Rows are ``[price, volume, time, "b"|"s", "m"|"l", misc, trade_id]``;
    ``b``/``s`` is the taker's side.
    """
    rows = _single(payload, "Trades")
    if type(rows) is not list:
        raise _bad("Trades entry is not a list", rows)
    trades: list[Trade] = []
    for row in rows:
        if type(row) is not list or len(row) < 4:
            raise _bad("trade is not a [price, volume, time, side, ...] list", row)
        side = {"b": "buy", "s": "sell"}.get(row[3]) if type(row[3]) is str else None
        if side is None:
            raise _bad("trade with bad side", row)
        ts = _epoch_ms(row[2], row)
        trade_id = row[6] if len(row) > 6 else None
        if type(trade_id) is int:
            tid = str(trade_id)
        elif trade_id is None:
            tid = _str(row[2], "time", row)
        else:
            raise _bad("trade with bad trade_id", row)
        trades.append(
            Trade(
                symbol,
                tid,
                ts,
                _str(row[0], "price", row),
                _str(row[1], "volume", row),
                side,  # type: ignore[arg-type]
                "taker",
            )
        )
    trades.sort(key=lambda t: t.timestamp)
    return trades


def parse_candles(symbol: str, timeframe: str, payload: Any) -> list[Candle]:
    """``GET /0/public/OHLC`` answer -> candles, oldest first.

    Rows are ``[time, open, high, low, close, vwap, volume, count]``; the
    last row is the current, not yet committed candle (``closed=False``).
    """
    interval_of(timeframe)
    rows = _single(payload, "OHLC")
    if type(rows) is not list:
        raise _bad("OHLC entry is not a list", rows)
    candles: list[Candle] = []
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) < 7:
            raise _bad("candle is not a [time, o, h, l, c, vwap, volume, count] list", row)
        t = row[0]
        if type(t) is not int:
            raise _bad("candle with bad time", row)
        candles.append(
            Candle(
                symbol,
                timeframe,
                t * 1000,
                _str(row[1], "open", row),
                _str(row[2], "high", row),
                _str(row[3], "low", row),
                _str(row[4], "close", row),
                _str(row[6], "volume", row),
                i < len(rows) - 1,
            )
        )
    candles.sort(key=lambda c: c.timestamp)
    return candles


def _rest_ticker(d: Any, symbol: str) -> Ticker:
    if type(d) is not dict:
        raise _bad("ticker is not an object", d)

    def pick(key: str, i: int) -> str | None:
        v = d.get(key)
        if v is None:
            return None
        if type(v) is not list or len(v) <= i:
            raise _bad(f"ticker field {key!r} is not a list", d)
        return _str(v[i], key, d)

    opening = d.get("o")
    last = pick("c", 0)
    return Ticker(
        symbol,
        bid=pick("b", 0),
        bid_volume=pick("b", 2),
        ask=pick("a", 0),
        ask_volume=pick("a", 2),
        last=last,
        open=_str(opening, "o", d) if opening is not None else None,
        high=pick("h", 1),
        low=pick("l", 1),
        close=last,
        base_volume=pick("v", 1),
        vwap=pick("p", 1),
    )


def parse_rest_ticker(symbol: str, payload: Any) -> Ticker:
    """``GET /0/public/Ticker?pair=..`` answer -> :class:`Ticker` (24 h values)."""
    return _rest_ticker(_single(payload, "Ticker"), symbol)


def parse_tickers(payload: Any, index: MarketIndex) -> list[Ticker]:
    """``GET /0/public/Ticker`` answer -> tickers of the markets in ``index``.

    Entries are keyed by REST names, matched against each market's
    ``rest_key`` and ``altname`` (markets loaded with :func:`parse_markets`);
    others are skipped.
    """
    result = _rest_result(payload)
    if type(result) is not dict:
        raise _bad("Ticker result is not an object", payload)
    names: dict[str, str] = {}
    for market in index:
        for key in ("rest_key", "altname"):
            name = market.info.get(key)
            if isinstance(name, str):
                names[name] = market.symbol
    tickers: list[Ticker] = []
    for key, d in result.items():
        symbol = names.get(key)
        if symbol is not None:
            tickers.append(_rest_ticker(d, symbol))
    return tickers


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

#: Kraken error strings (REST ``error`` list ``"<E|W><Category>:<message>"``,
#: and WebSocket ``error`` texts) -> error class; matched on the longest
#: known prefix.  From Kraken's "API error messages" support pages.
ERROR_MESSAGES: Mapping[str, type[ExchangeError]] = {
    "EGeneral:Invalid arguments": BadRequest,
    "EGeneral:Permission denied": PermissionDenied,
    "EGeneral:Temporary lockout": DDoSProtection,
    "EGeneral:Too many requests": RateLimitExceeded,
    "EGeneral:Internal error": ExchangeNotAvailable,
    "EAPI:Invalid key": AuthenticationError,
    "EAPI:Invalid signature": AuthenticationError,
    "EAPI:Invalid nonce": InvalidNonce,
    "EAPI:Bad request": BadRequest,
    "EAPI:Rate limit exceeded": RateLimitExceeded,
    "EAPI:Feature disabled": PermissionDenied,
    "EQuery:Unknown asset pair": BadSymbol,
    "EQuery:Unknown asset": BadSymbol,
    "EOrder:Rate limit exceeded": RateLimitExceeded,
    "EService:Unavailable": ExchangeNotAvailable,
    "EService:Busy": ExchangeNotAvailable,
    "EService:Market in cancel_only mode": ExchangeNotAvailable,
    "EService:Market in post_only mode": ExchangeNotAvailable,
    "EService:Deadline elapsed": RequestTimeout,
    "EService:Timeout": RequestTimeout,
    "EDatabase:Internal error": ExchangeNotAvailable,
    # WebSocket v2 refusals
    "Exceeded msg rate": RateLimitExceeded,
    "Currency pair not supported": BadSymbol,
    "Currency pair not in ISO 4217-A3 format": BadSymbol,
}
_ERROR_PREFIXES = sorted(ERROR_MESSAGES, key=len, reverse=True)

#: "Temporary lockouts typically last approximately 15 minutes" (Kraken support).
LOCKOUT_SECONDS = 15 * 60.0


def error_class(message: Any, default: type[ExchangeError] = ExchangeError) -> type[ExchangeError]:
    """The error class for a Kraken error string, ``default`` if unknown."""
    if not isinstance(message, str):
        return default
    for prefix in _ERROR_PREFIXES:
        if message.startswith(prefix):
            return ERROR_MESSAGES[prefix]
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
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None


def parse_rest_error(status: int, headers: Any, body: Any) -> ExchangeError:
    """The typed error for a failed REST answer (``body``: bytes, str or decoded JSON).

    Kraken answers errors with HTTP 200 and ``{"error": ["EQuery:Unknown
    asset pair"]}``; the first ``E`` entry decides (see
    :data:`ERROR_MESSAGES`).  Otherwise 429 -> :class:`RateLimitExceeded`,
    5xx (Cloudflare's 52x included) -> :class:`ExchangeNotAvailable`, 401 ->
    :class:`AuthenticationError`, 403 -> :class:`PermissionDenied`, other 4xx
    -> :class:`BadRequest`.  Rate-limit errors carry ``retry_after`` (the
    ``Retry-After`` header; a temporary lockout defaults to 15 minutes).
    Every error carries ``status`` and ``code`` (the Kraken error string).
    """
    payload = body
    if isinstance(body, (bytes, str)):
        try:
            payload = decode(body) if body else None
        except DecodeError:
            payload = None
    code: str | None = None
    if isinstance(payload, dict):
        errors = payload.get("error")
        if isinstance(errors, list):
            for e in errors:
                if isinstance(e, str) and e.startswith("E"):
                    code = e
                    break
        elif isinstance(errors, str) and errors:
            code = errors
    text = f"Kraken HTTP {status}"
    if code is not None:
        text += f": {code[:200]}"
    elif isinstance(body, (bytes, str)) and body and payload is None:
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        text += f": {raw[:200]}"
    cls = error_class(code, default=ExchangeError) if code is not None else ExchangeError
    if cls is ExchangeError:
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
    if issubclass(cls, RateLimitExceeded):
        wait = retry_after(headers)
        if wait is None and cls is DDoSProtection:
            wait = LOCKOUT_SECONDS
        error: ExchangeError = cls(text, wait)
    else:
        error = cls(text)
    error.status = status  # type: ignore[attr-defined]
    error.code = code  # type: ignore[attr-defined]
    return error
