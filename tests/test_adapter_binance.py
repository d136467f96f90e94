"""Unit tests for the pure Binance spot adapter (no reactor, no sockets).

Payloads come from ``../shared/protocols/vectors.json`` (Binance's own
documented examples) where available, and otherwise are written in the shape
the Binance docs show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from txexchange.adapters import ServerShutdown, Unknown
from txexchange.adapters import binance as bn
from txexchange.adapters.binance import (
    ApplyDelta,
    ApplySnapshot,
    BinanceBookSync,
    Buffer,
    Ignore,
    NeedSnapshot,
    Resync,
    SnapshotTooOld,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import loads
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DDoSProtection,
    ExchangeError,
    ExchangeNotAvailable,
    MalformedMessage,
    ProtocolViolation,
    RateLimitExceeded,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.testing.market import SimulatedMarket
from txexchange.transport.rules import ControlReply, WireRules

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _load_fixtures() -> dict[str, dict[str, Any]]:
    if not VECTORS.exists():  # pragma: no cover - the repo is checked out beside ../shared
        pytest.skip(f"{VECTORS} not found", allow_module_level=True)
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    return {f["name"]: f for f in data["fixtures"]["binance"]}


FIX = _load_fixtures()


def fixture_message(name: str) -> Any:
    return json.loads(json.dumps(FIX[name]["message"]))  # a fresh copy per test


# A recorded-style exchangeInfo (abridged: Binance sends many more fields and filters).
EXCHANGE_INFO: dict[str, Any] = {
    "timezone": "UTC",
    "serverTime": 1765432100000,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
    ],
    "exchangeFilters": [],
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "baseAssetPrecision": 8,
            "quoteAsset": "USDT",
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.01000000",
                    "maxPrice": "1000000.00000000",
                    "tickSize": "0.01000000",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00001000",
                    "maxQty": "9000.00000000",
                    "stepSize": "0.00001000",
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
            ],
            "permissionSets": [["SPOT", "MARGIN"]],
        },
        {
            "symbol": "BNBBTC",
            "status": "TRADING",
            "baseAsset": "BNB",
            "quoteAsset": "BTC",
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.00000100"},
                {"filterType": "LOT_SIZE", "stepSize": "0.00100000"},
            ],
        },
        {
            "symbol": "BNBUSDT",
            "status": "TRADING",
            "baseAsset": "BNB",
            "quoteAsset": "USDT",
            "filters": [],
        },
        {
            "symbol": "ETHBTC",
            "status": "BREAK",
            "baseAsset": "ETH",
            "quoteAsset": "BTC",
            "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.00001000"}],
        },
    ],
}


@pytest.fixture
def index() -> MarketIndex:
    return bn.market_index(EXCHANGE_INFO)


def combined(stream: str, data: Any) -> dict[str, Any]:
    return {"stream": stream, "data": data}


# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------


def test_default_urls() -> None:
    assert bn.DEFAULT_URLS == {
        "ws": "wss://stream.binance.com:9443",
        "rest": "https://api.binance.com",
        "ws_api": "wss://ws-api.binance.com:443/ws-api/v3",
    }
    assert bn.resolve_urls() == dict(bn.DEFAULT_URLS)


def test_url_overrides() -> None:
    urls = bn.resolve_urls({"ws": "ws://127.0.0.1:9001/", "rest": "http://127.0.0.1:9002"})
    assert urls == {
        "ws": "ws://127.0.0.1:9001",
        "rest": "http://127.0.0.1:9002",
        "ws_api": "wss://ws-api.binance.com:443/ws-api/v3",
    }
    assert bn.combined_stream_url(urls["ws"]) == "ws://127.0.0.1:9001/stream"
    assert (
        bn.combined_stream_url(urls["ws"], ["btcusdt@depth", "btcusdt@trade"])
        == "ws://127.0.0.1:9001/stream?streams=btcusdt@depth/btcusdt@trade"
    )


def test_unknown_url_key_names_the_valid_keys() -> None:
    with pytest.raises(BadRequest) as info:
        bn.resolve_urls({"websocket": "wss://x"})
    text = str(info.value)
    assert "'websocket'" in text
    for key in ("'ws'", "'rest'", "'ws_api'"):
        assert key in text


def test_url_with_wrong_scheme_is_refused() -> None:
    with pytest.raises(BadRequest, match="rest"):
        bn.resolve_urls({"rest": "wss://api.binance.com"})
    with pytest.raises(BadRequest):
        bn.resolve_urls({"ws": "https://stream.binance.com"})


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------


def test_wire_rules_satisfy_protocol_and_limits() -> None:
    rules = bn.BinanceWireRules()
    assert isinstance(rules, WireRules)
    assert 0 < rules.control_rate < 5
    assert rules.max_topics_per_connection == 1024
    assert 1 <= rules.max_topics_per_message <= 200
    assert rules.replies_to_control is True
    assert rules.binary_compression is None
    assert rules.heartbeat is None
    assert rules.max_connection_age == 24 * 3600
    assert rules.path == "/stream"
    assert rules.overlap_key(b'{"stream":"x"}') == b'{"stream":"x"}'


def test_subscribe_and_unsubscribe_match_documented_requests() -> None:
    rules = bn.BinanceWireRules()
    sub = loads(rules.subscribe_message(["btcusdt@aggTrade", "btcusdt@depth"], 1))
    assert sub == fixture_message("subscribe_request")
    unsub = loads(rules.unsubscribe_message(("btcusdt@depth",), 312))
    assert unsub == fixture_message("unsubscribe_request")
    assert loads(rules.list_subscriptions_message(3)) == {"method": "LIST_SUBSCRIPTIONS", "id": 3}


def test_subscribe_refuses_retired_and_oversized_requests() -> None:
    rules = bn.BinanceWireRules()
    with pytest.raises(BadRequest, match="miniTicker@arr"):
        rules.subscribe_message(["!ticker@arr"], 1)
    with pytest.raises(BadRequest, match="exceeds"):
        rules.subscribe_message([f"s{i}usdt@trade" for i in range(101)], 1)
    with pytest.raises(BadRequest):
        rules.subscribe_message([], 1)


def test_control_replies() -> None:
    rules = bn.BinanceWireRules()
    assert rules.control_reply(fixture_message("subscribe_response")) == ControlReply(1, True)
    assert rules.control_reply(fixture_message("list_subscriptions_response")) == ControlReply(
        3, True
    )
    error = rules.control_reply(
        {"error": {"code": 2, "msg": "Invalid request: unknown variant `SUBSCRIBEE`"}, "id": 7}
    )
    assert error is not None and error.request_id == 7 and not error.ok
    assert "Invalid request" in (error.error or "") and "code 2" in (error.error or "")
    data = combined("btcusdt@depth", fixture_message("diff_depth"))
    assert rules.control_reply(data) is None
    assert rules.control_reply(fixture_message("trade")) is None
    assert rules.control_reply([1, 2]) is None
    assert bn.parse_list_subscriptions(fixture_message("list_subscriptions_response")) == [
        "btcusdt@aggTrade"
    ]
    with pytest.raises(MalformedMessage):
        bn.parse_list_subscriptions({"result": None, "id": 1})


# ---------------------------------------------------------------------------
# Stream names
# ---------------------------------------------------------------------------


def test_topic_names() -> None:
    assert bn.depth_topic("BTCUSDT") == "btcusdt@depth@100ms"
    assert bn.depth_topic("BTCUSDT", 1000) == "btcusdt@depth"
    assert bn.partial_depth_topic("BTCUSDT", 5) == "btcusdt@depth5"
    assert bn.partial_depth_topic("BTCUSDT", 20, 100) == "btcusdt@depth20@100ms"
    assert bn.trade_topic("BNBBTC") == "bnbbtc@trade"
    assert bn.agg_trade_topic("BNBBTC") == "bnbbtc@aggTrade"
    assert bn.kline_topic("BNBBTC", "1m") == "bnbbtc@kline_1m"
    assert bn.kline_topic("BNBBTC", "1M") == "bnbbtc@kline_1M"
    assert bn.kline_topic("BNBBTC", "1d", utc_offset="+08:00") == "bnbbtc@kline_1d@+08:00"
    assert bn.ticker_topic("BNBBTC") == "bnbbtc@ticker"
    assert bn.mini_ticker_topic("BNBBTC") == "bnbbtc@miniTicker"
    assert bn.book_ticker_topic("BNBUSDT") == "bnbusdt@bookTicker"
    assert bn.all_mini_tickers_topic() == "!miniTicker@arr"


@pytest.mark.parametrize(
    "call",
    [
        lambda: bn.depth_topic("BTCUSDT", 250),
        lambda: bn.partial_depth_topic("BTCUSDT", 50),
        lambda: bn.partial_depth_topic("BTCUSDT", 5, 10),
        lambda: bn.kline_topic("BTCUSDT", "2m"),
        lambda: bn.kline_topic("BTCUSDT", "1h", utc_offset="+05:30"),
        lambda: bn.trade_topic(""),
        lambda: bn.trade_topic("btc@usdt"),
    ],
)
def test_bad_topic_arguments(call: Any) -> None:
    with pytest.raises(BadRequest):
        call()


def test_retired_all_tickers_stream_names_replacement() -> None:
    with pytest.raises(BadRequest) as info:
        bn.all_tickers_topic()
    text = str(info.value)
    assert "!ticker@arr" in text and "retired" in text
    assert "@ticker" in text and "!miniTicker@arr" in text
    with pytest.raises(BadRequest):
        bn.check_stream_name("!ticker@arr")
    assert bn.check_stream_name("btcusdt@ticker") == "btcusdt@ticker"


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def test_parse_markets() -> None:
    markets = bn.parse_markets(EXCHANGE_INFO)
    assert list(markets) == ["BTC/USDT", "BNB/BTC", "BNB/USDT", "ETH/BTC"]
    btc = markets["BTC/USDT"]
    assert (btc.id, btc.base, btc.quote, btc.active) == ("BTCUSDT", "BTC", "USDT", True)
    assert btc.tick_size == "0.01000000" and btc.price_precision == 2
    assert btc.amount_step == "0.00001000" and btc.amount_precision == 5
    assert btc.info is EXCHANGE_INFO["symbols"][0]
    assert markets["ETH/BTC"].active is False
    assert markets["BNB/USDT"].tick_size is None and markets["BNB/USDT"].price_precision is None
    assert markets["BNB/BTC"].price_precision == 6


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"symbols": None},
        {"symbols": [{"symbol": "X"}]},
        {"symbols": [{"symbol": 1, "baseAsset": "A", "quoteAsset": "B"}]},
    ],
)
def test_parse_markets_malformed(doc: Any) -> None:
    with pytest.raises(MalformedMessage):
        bn.parse_markets(doc)


def test_market_index_lookups(index: MarketIndex) -> None:
    assert index.id_of("BTC/USDT") == "BTCUSDT"
    assert index.symbol_of("BNBBTC") == "BNB/BTC"
    assert index.market("ETH/BTC").active is False
    assert "BTC/USDT" in index and len(index) == 4
    assert index.symbols == ["BTC/USDT", "BNB/BTC", "BNB/USDT", "ETH/BTC"]
    with pytest.raises(BadSymbol, match="did you mean 'BTC/USDT'"):
        index.market("BTCUSDT")
    with pytest.raises(BadSymbol, match="did you mean 'BTC/USDT'"):
        index.market("btc/usdt")
    with pytest.raises(BadSymbol, match="does not list 'DOGE/EUR'"):
        index.market("DOGE/EUR")
    with pytest.raises(BadSymbol, match="XRPUSDT"):
        index.symbol_of("XRPUSDT")
    with pytest.raises(BadSymbol, match="not loaded"):
        MarketIndex.from_markets([]).market("BTC/USDT")


def test_market_is_frozen_and_info_not_compared() -> None:
    a = Market("BTC/USDT", "BTCUSDT", "BTC", "USDT", info={"x": 1})
    b = Market("BTC/USDT", "BTCUSDT", "BTC", "USDT", info={"x": 2})
    assert a == b
    with pytest.raises(AttributeError):
        a.symbol = "ETH/USDT"  # type: ignore[misc]


# ---------------------------------------------------------------------------
# Messages: the documented payloads
# ---------------------------------------------------------------------------


def test_diff_depth_becomes_book_delta_without_copying(index: MarketIndex) -> None:
    data = fixture_message("diff_depth")
    [delta] = bn.parse_message(combined("bnbbtc@depth@100ms", data), index)  # type: ignore[misc]
    assert delta == BookDelta(
        "BNB/BTC",
        [["0.0024", "10"]],
        [["0.0026", "100"]],
        nonce=160,
        first_id=157,
        timestamp=1672515782136,
    )
    assert delta.bids is data["b"] and delta.asks is data["a"]
    # the 1000 ms stream (no speed suffix) parses the same way
    [slow] = bn.parse_message(combined("bnbbtc@depth", data), index)  # type: ignore[misc]
    assert slow == delta


def test_partial_depth_becomes_snapshot(index: MarketIndex) -> None:
    data = fixture_message("partial_depth")
    for stream in ("bnbbtc@depth5", "bnbbtc@depth10@100ms", "bnbbtc@depth20"):
        [snap] = bn.parse_message(combined(stream, data), index)  # type: ignore[misc]
        assert snap == BookSnapshot("BNB/BTC", [["0.0024", "10"]], [["0.0026", "100"]], nonce=160)
        assert snap.bids is data["bids"]


@pytest.mark.parametrize(
    "name,stream,trade_id",
    [("trade", "bnbbtc@trade", "12345"), ("aggTrade", "bnbbtc@aggTrade", "12345")],
)
def test_trades(index: MarketIndex, name: str, stream: str, trade_id: str) -> None:
    data = fixture_message(name)
    [trade] = bn.parse_message(combined(stream, data), index)  # type: ignore[misc]
    # m=true: the buyer is the maker, so the aggressor sold
    assert trade == Trade("BNB/BTC", trade_id, 1672515782136, "0.001", "100", "sell", "taker")
    data["m"] = False
    [trade] = bn.parse_message(combined(stream, data), index)  # type: ignore[misc]
    assert trade.side == "buy"


def test_agg_trade_uses_aggregate_id(index: MarketIndex) -> None:
    data = fixture_message("aggTrade")
    data["a"] = 999
    [trade] = bn.parse_message(combined("bnbbtc@aggTrade", data), index)  # type: ignore[misc]
    assert trade.id == "999"


def test_kline(index: MarketIndex) -> None:
    data = fixture_message("kline")
    [candle] = bn.parse_message(combined("bnbbtc@kline_1m", data), index)  # type: ignore[misc]
    assert candle == Candle(
        "BNB/BTC", "1m", 1672515780000, "0.0010", "0.0025", "0.0015", "0.0020", "1000", False
    )
    data["k"]["x"] = True
    [candle] = bn.parse_message(combined("bnbbtc@kline_1m", data), index)  # type: ignore[misc]
    assert candle.closed is True
    [utc8] = bn.parse_message(combined("bnbbtc@kline_1m@+08:00", data), index)  # type: ignore[misc]
    assert utc8.timeframe == "1m@+08:00"


def test_tickers(index: MarketIndex) -> None:
    [full] = bn.parse_message(combined("bnbbtc@ticker", fixture_message("ticker_24h")), index)  # type: ignore[misc]
    assert full == Ticker(
        "BNB/BTC",
        timestamp=1672515782136,
        bid="0.0024",
        bid_volume="10",
        ask="0.0026",
        ask_volume="100",
        last="0.0025",
        open="0.0010",
        high="0.0025",
        low="0.0010",
        close="0.0025",
        base_volume="10000",
        quote_volume="18",
        change="0.0015",
        percentage="250.00",
        vwap="0.0018",
    )
    [mini] = bn.parse_message(combined("bnbbtc@miniTicker", fixture_message("miniTicker")), index)  # type: ignore[misc]
    assert mini == Ticker(
        "BNB/BTC",
        timestamp=1672515782136,
        last="0.0025",
        open="0.0010",
        high="0.0025",
        low="0.0010",
        close="0.0025",
        base_volume="10000",
        quote_volume="18",
    )
    [book] = bn.parse_message(combined("bnbusdt@bookTicker", fixture_message("bookTicker")), index)  # type: ignore[misc]
    assert book == Ticker(
        "BNB/USDT",
        bid="25.35190000",
        bid_volume="31.21000000",
        ask="25.36520000",
        ask_volume="40.66000000",
    )


def test_all_mini_tickers_array(index: MarketIndex) -> None:
    one = fixture_message("miniTicker")
    other = dict(one, s="XRPUSDT")  # not in the market list: skipped
    third = dict(one, s="BTCUSDT", c="90000.00")
    events = bn.parse_message(combined("!miniTicker@arr", [one, other, third]), index)
    assert [(t.symbol, t.last) for t in events] == [("BNB/BTC", "0.0025"), ("BTC/USDT", "90000.00")]  # type: ignore[union-attr]
    # the raw (/ws) form is a bare array
    assert bn.parse_message([one, third], index) == events


def test_control_replies_and_shutdown(index: MarketIndex) -> None:
    assert bn.parse_message(fixture_message("subscribe_response"), index) == ControlReply(1, True)
    error = bn.parse_message({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}, index)
    assert isinstance(error, ControlReply) and not error.ok
    for name in ("server_shutdown_raw", "server_shutdown_combined"):
        notice = bn.parse_message(fixture_message(name), index)
        assert notice == ServerShutdown("binance", 1770123456789, "serverShutdown")


def test_raw_stream_events_use_their_symbol(index: MarketIndex) -> None:
    [trade] = bn.parse_message(fixture_message("trade"), index)  # type: ignore[misc]
    assert trade.symbol == "BNB/BTC"
    [delta] = bn.parse_message(fixture_message("diff_depth"), index)  # type: ignore[misc]
    assert isinstance(delta, BookDelta) and delta.nonce == 160
    [candle] = bn.parse_message(fixture_message("kline"), index)  # type: ignore[misc]
    assert candle.timeframe == "1m"
    [ticker] = bn.parse_message(fixture_message("bookTicker"), index)  # type: ignore[misc]
    assert ticker.symbol == "BNB/USDT" and ticker.bid == "25.35190000"
    [ticker] = bn.parse_message(fixture_message("ticker_24h"), index)  # type: ignore[misc]
    assert ticker.vwap == "0.0018"
    # partial depth carries no symbol: only usable on combined streams
    outcome = bn.parse_message(fixture_message("partial_depth"), index)
    assert isinstance(outcome, Unknown) and "/stream" in outcome.reason


@pytest.mark.parametrize(
    "message,reason",
    [
        (combined("bnbbtc@avgPrice", {"e": "avgPrice", "w": "5m", "p": "1.0"}), "no parser"),
        (combined("xrpusdt@trade", {"e": "trade"}), "not in the market list"),
        (combined("!ticker@arr", []), "retired"),
        (combined("bnbbtc@kline_2m", {}), "no parser"),
        (combined("weird", {}), "unrecognised"),
        ({"e": "listenKeyExpired", "E": 1, "listenKey": "x"}, "no parser"),
        ({"e": "trade", "s": "XRPUSDT", "t": 1}, "not in the market list"),
        ({"hello": "world"}, "without event type"),
        ([{"e": "somethingElse"}], "unknown events"),
    ],
)
def test_unknown_messages(index: MarketIndex, message: Any, reason: str) -> None:
    outcome = bn.parse_message(message, index)
    assert isinstance(outcome, Unknown)
    assert reason in outcome.reason


@pytest.mark.parametrize(
    "message",
    [
        "not json object",
        42,
        None,
        combined("bnbbtc@depth", None),
        {"stream": "bnbbtc@depth"},
        {"stream": 12, "data": {}},
        combined("bnbbtc@depth", {"e": "depthUpdate", "U": "157", "u": 160, "b": [], "a": []}),
        combined("bnbbtc@depth", {"e": "depthUpdate", "U": 161, "u": 160, "b": [], "a": []}),
        combined("bnbbtc@depth", {"e": "depthUpdate", "U": 157, "u": 160, "b": {}, "a": []}),
        combined("bnbbtc@depth5", {"lastUpdateId": 1.5, "bids": [], "asks": []}),
        combined("bnbbtc@trade", {"t": 1, "p": "1", "q": "1", "T": 1, "m": "true"}),
        combined("bnbbtc@trade", {"t": 1, "p": 1.0, "q": "1", "T": 1, "m": True}),
        combined("bnbbtc@aggTrade", {"t": 1, "p": "1", "q": "1", "T": 1, "m": True}),
        combined("bnbbtc@kline_1m", {"e": "kline"}),
        combined(
            "bnbbtc@kline_1m",
            {"k": {"t": 1, "x": False, "o": 1, "h": "", "l": "", "c": "", "v": ""}},
        ),
        combined("bnbbtc@ticker", {"E": "soon", "c": "1"}),
        combined("bnbbtc@ticker", {"E": 1, "c": 1.5}),
        combined("bnbusdt@bookTicker", {"u": 1, "b": "1"}),
        combined("!miniTicker@arr", {"not": "a list"}),
        combined("!miniTicker@arr", [{"no": "symbol"}]),
        {"e": "kline", "s": "BNBBTC"},
        {"e": "trade"},
    ],
)
def test_malformed_messages_raise_malformed_message(index: MarketIndex, message: Any) -> None:
    with pytest.raises(MalformedMessage):
        bn.parse_message(message, index)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["e", "E", "s", "U", "u", "b", "a", "k", "x", "t", "m", "p", "q", "T"]),
            children,
            max_size=8,
        )
    ),
    max_leaves=20,
)
_streams = st.sampled_from(
    [
        "bnbbtc@depth",
        "bnbbtc@depth5",
        "bnbbtc@trade",
        "bnbbtc@aggTrade",
        "bnbbtc@kline_1m",
        "bnbbtc@ticker",
        "bnbbtc@miniTicker",
        "bnbusdt@bookTicker",
        "!miniTicker@arr",
        "!serverShutdown",
        "nope@x",
    ]
)


@settings(max_examples=400, deadline=None)
@given(stream=_streams, data=_json, raw=_json)
def test_fuzz_only_typed_outcomes(stream: str, data: Any, raw: Any) -> None:
    index = bn.market_index(EXCHANGE_INFO)
    for message in (combined(stream, data), raw):
        try:
            outcome = bn.parse_message(message, index)
        except MalformedMessage:
            continue
        assert isinstance(outcome, (list, ControlReply, ServerShutdown, Unknown))


def test_parser_is_cached_per_index(index: MarketIndex) -> None:
    parser = bn.BinanceParser(index)
    message = combined("bnbbtc@trade", fixture_message("trade"))
    assert parser.parse(message) == parser.parse(message) == bn.parse_message(message, index)
    assert bn._parsers[index] is bn._parsers[index]  # one parser kept per index


# ---------------------------------------------------------------------------
# Local book procedure
# ---------------------------------------------------------------------------

SYM = "BNB/BTC"


def d(first: int, last: int, sym: str = SYM) -> BookDelta:
    return BookDelta(sym, [], [], nonce=last, first_id=first)


def snap(last_update_id: int, sym: str = SYM) -> BookSnapshot:
    return BookSnapshot(sym, [], [], nonce=last_update_id)


def buffered(sync: BinanceBookSync) -> list[tuple[int, int]]:
    return [(x.first_id, x.nonce) for x in sync.buffered]  # type: ignore[misc]


def test_first_delta_asks_for_snapshot_then_buffers() -> None:
    sync = BinanceBookSync(SYM)
    assert sync.state == "waiting" and sync.book_id is None
    assert sync.on_delta(d(100, 105)) == NeedSnapshot(100)
    assert sync.first_update_id == 100
    assert sync.on_delta(d(106, 110)) == Buffer(100, 2)
    assert sync.on_delta(d(111, 115)) == Buffer(100, 3)
    assert buffered(sync) == [(100, 105), (106, 110), (111, 115)]


def test_snapshot_older_than_first_buffered_event_is_refetched() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(100, 105))
    assert sync.on_snapshot(snap(90)) == SnapshotTooOld(90, 100)
    assert sync.on_snapshot(snap(98)) == SnapshotTooOld(98, 100)
    assert sync.state == "waiting" and buffered(sync) == [(100, 105)]


def test_snapshot_joining_the_first_event_exactly() -> None:
    # lastUpdateId = 99 and the first event starts at 100 = lastUpdateId + 1
    sync = BinanceBookSync(SYM)
    first = d(100, 105)
    sync.on_delta(first)
    second = d(106, 110)
    sync.on_delta(second)
    action = sync.on_snapshot(snap(99))
    assert action == ApplySnapshot(snap(99), (first, second), 110)
    assert sync.state == "synced" and sync.book_id == 110 and sync.buffered == ()


def test_snapshot_straddled_by_a_buffered_event() -> None:
    sync = BinanceBookSync(SYM)
    events = [d(100, 105), d(106, 110), d(111, 115)]
    for e in events:
        sync.on_delta(e)
    action = sync.on_snapshot(snap(107))  # 106 <= 107 <= 110
    assert isinstance(action, ApplySnapshot)
    assert action.deltas == (events[1], events[2]) and action.book_id == 115


def test_snapshot_at_a_buffered_event_end_keeps_the_next_one() -> None:
    sync = BinanceBookSync(SYM)
    events = [d(100, 105), d(106, 110), d(111, 115)]
    for e in events:
        sync.on_delta(e)
    action = sync.on_snapshot(snap(105))  # next event starts exactly at 106
    assert isinstance(action, ApplySnapshot)
    assert action.deltas == (events[1], events[2])


def test_snapshot_newer_than_every_buffered_event() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(100, 105))
    sync.on_delta(d(106, 110))
    assert sync.on_snapshot(snap(200)) == ApplySnapshot(snap(200), (), 200)
    assert sync.on_delta(d(111, 115)) == Ignore("stale: u <= book id")
    assert sync.on_delta(d(190, 200)) == Ignore("stale: u <= book id")  # u == book id
    straddling = d(195, 205)
    assert sync.on_delta(straddling) == ApplyDelta(straddling)
    assert sync.book_id == 205


def test_steady_state_duplicates_and_out_of_order() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(100, 105))
    sync.on_snapshot(snap(104))
    assert sync.book_id == 105
    nxt = d(106, 110)
    assert sync.on_delta(nxt) == ApplyDelta(nxt)
    assert isinstance(sync.on_delta(nxt), Ignore)  # duplicate
    assert isinstance(sync.on_delta(d(101, 103)), Ignore)  # old, out of order
    assert sync.on_delta(d(111, 111)) == ApplyDelta(d(111, 111))
    assert sync.book_id == 111


def test_gap_mid_stream_resyncs_and_recovers() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(100, 105))
    sync.on_snapshot(snap(100))
    sync.on_delta(d(106, 110))
    action = sync.on_delta(d(112, 115))  # 111 missing: U > book id + 1
    assert action == Resync("gap: U=112 > book id 110 + 1", 112)
    assert sync.state == "waiting" and sync.book_id is None
    assert buffered(sync) == [(112, 115)]  # the gap event starts the new attempt
    assert sync.on_delta(d(116, 120)) == Buffer(112, 2)
    assert sync.on_snapshot(snap(108)) == SnapshotTooOld(108, 112)  # a late answer
    action = sync.on_snapshot(snap(117))
    assert isinstance(action, ApplySnapshot) and action.deltas == (d(116, 120),)
    assert sync.book_id == 120


def test_gap_of_exactly_one_boundary() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(10, 10))
    sync.on_snapshot(snap(10))
    assert isinstance(sync.on_delta(d(11, 11)), ApplyDelta)  # U == book id + 1: fine
    assert isinstance(sync.on_delta(d(13, 13)), Resync)  # U == book id + 2: gap


def test_late_snapshot_when_synced_is_ignored() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(100, 105))
    sync.on_snapshot(snap(101))
    assert isinstance(sync.on_snapshot(snap(150)), Ignore)
    assert sync.book_id == 105


def test_gap_and_duplicates_while_buffering() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(100, 105))
    sync.on_delta(d(106, 110))
    assert isinstance(sync.on_delta(d(106, 110)), Ignore)  # duplicate
    assert isinstance(sync.on_delta(d(101, 104)), Ignore)  # out of order
    assert sync.on_delta(d(120, 125)) == Buffer(120, 1, restarted=True)
    assert sync.first_update_id == 120
    assert sync.on_snapshot(snap(110)) == SnapshotTooOld(110, 120)
    action = sync.on_snapshot(snap(122))
    assert isinstance(action, ApplySnapshot) and action.book_id == 125


def test_buffer_limit_restarts_the_buffer() -> None:
    sync = BinanceBookSync(SYM, max_buffer=3)
    sync.on_delta(d(1, 1))
    sync.on_delta(d(2, 2))
    sync.on_delta(d(3, 3))
    assert sync.on_delta(d(4, 4)) == Buffer(4, 1, restarted=True)
    assert buffered(sync) == [(4, 4)]
    with pytest.raises(BadRequest):
        BinanceBookSync(SYM, max_buffer=0)


def test_snapshot_before_any_delta() -> None:
    sync = BinanceBookSync(SYM)
    assert sync.on_snapshot(snap(50)) == ApplySnapshot(snap(50), (), 50)
    assert sync.on_delta(d(51, 52)) == ApplyDelta(d(51, 52))
    other = BinanceBookSync(SYM)
    other.on_snapshot(snap(50))
    assert isinstance(other.on_delta(d(53, 54)), Resync)


def test_reset_and_bad_input() -> None:
    sync = BinanceBookSync(SYM)
    sync.on_delta(d(1, 2))
    sync.on_snapshot(snap(1))
    sync.reset()
    assert sync.state == "waiting" and sync.buffered == () and sync.first_update_id is None
    assert sync.on_delta(d(9, 9)) == NeedSnapshot(9)
    with pytest.raises(BadRequest):
        sync.on_delta(d(10, 10, sym="BTC/USDT"))
    with pytest.raises(BadRequest):
        sync.on_snapshot(snap(10, sym="BTC/USDT"))
    with pytest.raises(ProtocolViolation):
        sync.on_delta(BookDelta(SYM, [], [], nonce=5))
    with pytest.raises(ProtocolViolation):
        sync.on_snapshot(BookSnapshot(SYM, [], []))
    assert "waiting" in repr(sync)


def _apply_levels(book: dict[str, dict[str, str]], bids: Any, asks: Any) -> None:
    for side, levels in (("bids", bids), ("asks", asks)):
        for price, amount in levels:
            if float(amount) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = amount


def test_procedure_against_simulated_market() -> None:
    """Diff events + a mid-stream snapshot + a dropped event rebuild the true book."""
    market = SimulatedMarket(["BNB/BTC"], seed=21, levels=25)
    index = bn.market_index(EXCHANGE_INFO)
    parser = bn.BinanceParser(index)
    sync = BinanceBookSync(SYM)
    book: dict[str, dict[str, str]] = {"bids": {}, "asks": {}}
    fetch_at: int | None = None
    verified = 0

    def wire(update: Any) -> dict[str, Any]:
        return combined(
            "bnbbtc@depth@100ms",
            {
                "e": "depthUpdate",
                "E": update.timestamp,
                "s": "BNBBTC",
                "U": update.first_id,
                "u": update.last_id,
                "b": [list(lv) for lv in update.bids],
                "a": [list(lv) for lv in update.asks],
            },
        )

    for n in range(1500):
        update = market.step_symbol("BNB/BTC")
        if n == 700:
            continue  # the client never sees this one: a gap
        [delta] = parser.parse(wire(update))  # type: ignore[misc]
        action = sync.on_delta(delta)
        if isinstance(action, (NeedSnapshot, Resync)):
            fetch_at = n + 5  # the REST answer arrives a few events later
        elif isinstance(action, ApplyDelta):
            _apply_levels(book, delta.bids, delta.asks)
        if fetch_at == n:
            bids, asks, last_id = market.book("BNB/BTC")
            snapshot = bn.parse_depth_snapshot(
                SYM,
                {
                    "lastUpdateId": last_id,
                    "bids": [list(b) for b in bids],
                    "asks": [list(a) for a in asks],
                },
            )
            result = sync.on_snapshot(snapshot)
            assert isinstance(result, ApplySnapshot)
            book = {
                "bids": dict(map(tuple, snapshot.bids)),
                "asks": dict(map(tuple, snapshot.asks)),
            }  # type: ignore[arg-type]
            for buffered_delta in result.deltas:
                _apply_levels(book, buffered_delta.bids, buffered_delta.asks)
            fetch_at = None
        if sync.state == "synced" and n % 50 == 0:
            true_bids, true_asks = market.book_at("BNB/BTC", sync.book_id)  # type: ignore[arg-type]
            assert book["bids"] == dict(true_bids)
            assert book["asks"] == dict(true_asks)
            verified += 1
    assert verified >= 20
    assert sync.state == "synced"


# ---------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit,weight",
    [(1, 5), (100, 5), (101, 25), (500, 25), (501, 50), (1000, 50), (1001, 250), (5000, 250)],
)
def test_depth_request_weights(limit: int, weight: int) -> None:
    request = bn.depth_request("BTCUSDT", limit)
    assert request == RestRequest(
        "GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": limit}, weight
    )


def test_depth_request_default_and_bad_limits() -> None:
    request = bn.depth_request("BNBBTC")
    assert request.params == {"symbol": "BNBBTC", "limit": 5000} and request.weight == 250
    assert request.url("https://api.binance.com/") == (
        "https://api.binance.com/api/v3/depth?symbol=BNBBTC&limit=5000"
    )
    for bad in (0, 5001, "100"):
        with pytest.raises(BadRequest):
            bn.depth_request("BNBBTC", bad)  # type: ignore[arg-type]


def test_other_requests() -> None:
    info = bn.exchange_info_request()
    assert (info.method, info.path, info.weight, dict(info.params)) == (
        "GET",
        "/api/v3/exchangeInfo",
        20,
        {},
    )
    klines = bn.klines_request("BTCUSDT", "1h", start_time=1, limit=10)
    assert klines.path == "/api/v3/klines" and klines.weight == 2
    assert klines.params == {"symbol": "BTCUSDT", "interval": "1h", "startTime": 1, "limit": 10}
    with pytest.raises(BadRequest):
        bn.klines_request("BTCUSDT", "7m")
    with pytest.raises(BadRequest):
        bn.klines_request("BTCUSDT", "1m", limit=1001)
    trades = bn.trades_request("BTCUSDT", 1000)
    assert (trades.path, trades.weight, trades.params["limit"]) == ("/api/v3/trades", 25, 1000)
    agg = bn.agg_trades_request("BTCUSDT", from_id=7)
    assert agg.path == "/api/v3/aggTrades" and agg.params["fromId"] == 7 and agg.weight == 4
    assert bn.ticker_24hr_request("BTCUSDT").weight == 2
    assert bn.ticker_24hr_request().weight == 80
    assert bn.ticker_24hr_request(["A"] * 20).weight == 2
    assert bn.ticker_24hr_request(["A"] * 21).weight == 40
    assert bn.ticker_24hr_request(["A"] * 101).weight == 80
    many = bn.ticker_24hr_request(["BTCUSDT", "BNBBTC"], mini=True)
    assert many.params == {"symbols": '["BTCUSDT","BNBBTC"]', "type": "MINI"}
    assert "symbols=%5B%22BTCUSDT%22%2C%22BNBBTC%22%5D" in many.url("https://x")


def test_parse_depth_snapshot_documented_example() -> None:
    payload = fixture_message("rest_depth_snapshot")
    snapshot = bn.parse_depth_snapshot("BNB/BTC", payload)
    assert snapshot == BookSnapshot(
        "BNB/BTC", [["4.00000000", "431.00000000"]], [["4.00000200", "12.00000000"]], nonce=1027024
    )
    for bad in ([], {"bids": [], "asks": []}, {"lastUpdateId": "1", "bids": [], "asks": []}):
        with pytest.raises(MalformedMessage):
            bn.parse_depth_snapshot("BNB/BTC", bad)


KLINE_ROWS = [
    [
        1499040000000,
        "0.01634790",
        "0.80000000",
        "0.01575800",
        "0.01577100",
        "148976.11427815",
        1499644799999,
        "2434.19055334",
        308,
        "1756.87402397",
        "28.46694368",
        "0",
    ],
    [
        1499644800000,
        "0.01577100",
        "0.02000000",
        "0.01500000",
        "0.01900000",
        "100.00000000",
        1500249599999,
        "2.0",
        3,
        "1.0",
        "0.1",
        "0",
    ],
]


def test_parse_klines() -> None:
    candles = bn.parse_klines("BNB/BTC", "1w", KLINE_ROWS)
    assert candles[0] == Candle(
        "BNB/BTC",
        "1w",
        1499040000000,
        "0.01634790",
        "0.80000000",
        "0.01575800",
        "0.01577100",
        "148976.11427815",
        True,
    )
    assert candles[1].closed is False  # the last one may still be forming
    assert [
        c.closed for c in bn.parse_klines("BNB/BTC", "1w", KLINE_ROWS, now_ms=1500249600000)
    ] == [True, True]
    assert [
        c.closed for c in bn.parse_klines("BNB/BTC", "1w", KLINE_ROWS, now_ms=1499644799999)
    ] == [False, False]
    for bad in ({}, [[1, "a"]], [[1, 2, 3, 4, 5, 6, 7]]):
        with pytest.raises(MalformedMessage):
            bn.parse_klines("BNB/BTC", "1w", bad)


def test_parse_rest_trades_both_shapes() -> None:
    recent = [
        {
            "id": 28457,
            "price": "4.00000100",
            "qty": "12.00000000",
            "quoteQty": "48.000012",
            "time": 1499865549590,
            "isBuyerMaker": True,
            "isBestMatch": True,
        }
    ]
    assert bn.parse_rest_trades("BNB/BTC", recent) == [
        Trade("BNB/BTC", "28457", 1499865549590, "4.00000100", "12.00000000", "sell", "taker")
    ]
    agg = [
        {
            "a": 26129,
            "p": "0.01633102",
            "q": "4.70443515",
            "f": 27781,
            "l": 27781,
            "T": 1498793709153,
            "m": False,
            "M": True,
        }
    ]
    assert bn.parse_rest_trades("BNB/BTC", agg) == [
        Trade("BNB/BTC", "26129", 1498793709153, "0.01633102", "4.70443515", "buy", "taker")
    ]
    for bad in (
        {},
        [{"id": 1}],
        [{"id": "1", "price": "1", "qty": "1", "time": 1, "isBuyerMaker": True}],
    ):
        with pytest.raises(MalformedMessage):
            bn.parse_rest_trades("BNB/BTC", bad)


TICKER_24HR = {
    "symbol": "BNBBTC",
    "priceChange": "-94.99999800",
    "priceChangePercent": "-95.960",
    "weightedAvgPrice": "0.29628482",
    "prevClosePrice": "0.10002000",
    "lastPrice": "4.00000200",
    "lastQty": "200.00000000",
    "bidPrice": "4.00000000",
    "bidQty": "100.00000000",
    "askPrice": "4.00000200",
    "askQty": "100.00000000",
    "openPrice": "99.00000000",
    "highPrice": "100.00000000",
    "lowPrice": "0.10000000",
    "volume": "8913.30000000",
    "quoteVolume": "15.30000000",
    "openTime": 1499783499040,
    "closeTime": 1499869899040,
    "firstId": 28385,
    "lastId": 28460,
    "count": 76,
}


def test_parse_ticker_24hr(index: MarketIndex) -> None:
    [ticker] = bn.parse_ticker_24hr(TICKER_24HR, index)
    assert ticker == Ticker(
        "BNB/BTC",
        timestamp=1499869899040,
        bid="4.00000000",
        bid_volume="100.00000000",
        ask="4.00000200",
        ask_volume="100.00000000",
        last="4.00000200",
        open="99.00000000",
        high="100.00000000",
        low="0.10000000",
        close="4.00000200",
        base_volume="8913.30000000",
        quote_volume="15.30000000",
        change="-94.99999800",
        percentage="-95.960",
        vwap="0.29628482",
    )
    unknown = dict(TICKER_24HR, symbol="XRPUSDT")
    assert len(bn.parse_ticker_24hr([TICKER_24HR, unknown], index)) == 1
    with pytest.raises(MalformedMessage):
        bn.parse_ticker_24hr([{"no": "symbol"}], index)
    with pytest.raises(MalformedMessage):
        bn.parse_ticker_24hr([dict(TICKER_24HR, lastPrice=4.0)], index)


def test_rest_errors() -> None:
    err = bn.parse_rest_error(
        429, {"Retry-After": "7"}, b'{"code":-1003,"msg":"Too much request weight used"}'
    )
    assert type(err) is RateLimitExceeded and err.retry_after == 7.0
    assert "-1003" in str(err) and err.code == -1003 and err.status == 429  # type: ignore[attr-defined]
    banned = bn.parse_rest_error(418, Headers({b"retry-after": [b"120"]}), b"")
    assert isinstance(banned, DDoSProtection) and banned.retry_after == 120.0
    waf = bn.parse_rest_error(403, {}, b"<html>Forbidden</html>")
    assert isinstance(waf, DDoSProtection) and "WAF" in str(waf)
    down = bn.parse_rest_error(503, {}, b"Service Unavailable")
    assert isinstance(down, ExchangeNotAvailable) and "Service Unavailable" in str(down)
    bad_symbol = bn.parse_rest_error(400, {}, '{"code":-1121,"msg":"Invalid symbol."}')
    assert type(bad_symbol) is BadSymbol and "Invalid symbol." in str(bad_symbol)
    weight = bn.parse_rest_error(400, {"retry-after": "3"}, {"code": -1003, "msg": "Too many"})
    assert type(weight) is RateLimitExceeded and weight.retry_after == 3.0
    param = bn.parse_rest_error(400, {}, b'{"code":-1102,"msg":"Mandatory parameter"}')
    assert type(param) is BadRequest
    auth = bn.parse_rest_error(401, {}, b'{"code":-2015,"msg":"Invalid API-key"}')
    assert type(auth) is AuthenticationError
    unknown_code = bn.parse_rest_error(400, {}, b'{"code":-9999,"msg":"something new"}')
    assert type(unknown_code) is BadRequest
    odd = bn.parse_rest_error(302, {}, b"garbage{")
    assert type(odd) is ExchangeError
    assert not isinstance(bn.parse_rest_error(404, {}, b""), (RateLimitExceeded, BadSymbol))


def test_used_weight_and_retry_after_headers() -> None:
    assert bn.used_weight({"x-mbx-used-weight-1m": "1234"}) == 1234
    assert bn.used_weight({"X-MBX-USED-WEIGHT-1M": ["55"]}) == 55
    assert bn.used_weight({b"X-MBX-USED-WEIGHT-1M": b"9"}) == 9
    assert bn.used_weight(Headers({b"X-MBX-USED-WEIGHT-1M": [b"42"]})) == 42
    assert bn.used_weight(Headers({b"X-MBX-USED-WEIGHT-1S": [b"3"]}), "1s") == 3
    assert bn.used_weight({}) is None
    assert bn.used_weight({"X-MBX-USED-WEIGHT-1M": "lots"}) is None
    assert bn.used_weight(None) is None
    assert bn.retry_after({"Retry-After": "2.5"}) == 2.5
    assert bn.retry_after({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None


def test_actions_drive_the_state_layer_order_book() -> None:
    """The actions map one-to-one onto OrderBook calls and rebuild the true book."""
    from txexchange.state.book import OrderBook

    market = SimulatedMarket(["BNB/BTC"], seed=33, levels=30)
    parser = bn.BinanceParser(bn.market_index(EXCHANGE_INFO))
    sync = BinanceBookSync(SYM)
    book = OrderBook(SYM)
    pending = False
    checked = 0
    for n in range(2000):
        update = market.step_symbol("BNB/BTC")
        if n in (400, 401, 1200):
            continue  # lost events: gaps
        message = {
            "stream": "bnbbtc@depth@100ms",
            "data": {
                "e": "depthUpdate",
                "E": update.timestamp,
                "s": "BNBBTC",
                "U": update.first_id,
                "u": update.last_id,
                "b": [list(lv) for lv in update.bids],
                "a": [list(lv) for lv in update.asks],
            },
        }
        [delta] = parser.parse(message)  # type: ignore[misc]
        action = sync.on_delta(delta)
        if isinstance(action, ApplyDelta):
            book.apply_delta(action.delta)
        elif isinstance(action, Resync):
            book.mark_stale(action.reason)
            pending = True
        elif isinstance(action, NeedSnapshot):
            pending = True
        if pending and n % 7 == 0:  # the REST answer arrives later
            bids, asks, last_id = market.book("BNB/BTC")
            payload = {"lastUpdateId": last_id, "bids": bids, "asks": asks}
            result = sync.on_snapshot(bn.parse_depth_snapshot(SYM, payload))
            assert isinstance(result, ApplySnapshot)
            book.apply_snapshot(result.snapshot)
            for buffered_delta in result.deltas:
                book.apply_delta(buffered_delta)
            pending = False
        if not book.stale and book.synced and n % 25 == 0:
            assert book.nonce == sync.book_id
            true_bids, true_asks = market.book_at("BNB/BTC", book.nonce)  # type: ignore[arg-type]
            got = book.snapshot()
            assert list(got.bids) == true_bids
            assert list(got.asks) == true_asks
            checked += 1
    assert checked >= 40
