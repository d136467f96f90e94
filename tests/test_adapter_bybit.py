"""Unit tests for the pure Bybit v5 adapter (no reactor, no sockets).

Payloads come from ``../shared/protocols/vectors.json`` (Bybit's own
documented examples); the rest is written in the shapes the Bybit docs show,
and book sequences are built by hand or from a seeded random market.  Bybit
publishes no checksum and no verifiable signing vector, so there are none to
reproduce here.
"""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from txexchange.adapters import ServerShutdown, Unknown, bybit
from txexchange.adapters.bybit import (
    ApplyDelta,
    ApplySnapshot,
    BybitBookMessage,
    BybitBookSync,
    BybitError,
    BybitTickerMerger,
    BybitTickerMessage,
    Ignore,
    Maintenance,
    Pong,
    Resync,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import dumps, loads_exact
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DDoSProtection,
    ExchangeError,
    ExchangeNotAvailable,
    InvalidNonce,
    MalformedMessage,
    ProtocolViolation,
    RateLimitExceeded,
    RequestTimeout,
    SubscriptionError,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import MarketIndex
from txexchange.state.book import OrderBook
from txexchange.transport.rules import ControlReply, WireRules

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _load() -> dict[str, Any]:
    if not VECTORS.exists():  # pragma: no cover - the repo is checked out beside ../shared
        pytest.skip(f"{VECTORS} not found", allow_module_level=True)
    return json.loads(VECTORS.read_text(encoding="utf-8"))


_DATA = _load()
FIX = {f["name"]: f for f in _DATA["fixtures"]["bybit_v5"]}


def fixture_message(name: str) -> Any:
    return copy.deepcopy(FIX[name]["message"])


def _answer(result: Any, time: int = 1_700_000_000_000) -> dict[str, Any]:
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": time}


# Instruments answers in the shapes of Bybit's "Get Instruments Info" examples (abridged).
SPOT_INSTRUMENTS = _answer(
    {
        "category": "spot",
        "list": [
            {
                "symbol": "BTCUSDT",
                "baseCoin": "BTC",
                "quoteCoin": "USDT",
                "status": "Trading",
                "lotSizeFilter": {"basePrecision": "0.000001", "quotePrecision": "0.0000001"},
                "priceFilter": {"tickSize": "0.1"},
            },
            {
                "symbol": "ETHUSDT",
                "baseCoin": "ETH",
                "quoteCoin": "USDT",
                "status": "Trading",
                "lotSizeFilter": {"basePrecision": "0.00001"},
                "priceFilter": {"tickSize": "0.01"},
            },
        ],
    }
)
LINEAR_PAGE_1 = _answer(
    {
        "category": "linear",
        "list": [
            {
                "symbol": "BTCUSDT",
                "contractType": "LinearPerpetual",
                "status": "Trading",
                "baseCoin": "BTC",
                "quoteCoin": "USDT",
                "settleCoin": "USDT",
                "deliveryTime": "0",
                "priceFilter": {"minPrice": "0.10", "tickSize": "0.10"},
                "lotSizeFilter": {"qtyStep": "0.001", "minOrderQty": "0.001"},
            },
        ],
        "nextPageCursor": "first%3DBIOUSDT%26last%3DBIOUSDT",
    }
)
LINEAR_PAGE_2 = _answer(
    {
        "category": "linear",
        "list": [
            {
                "symbol": "BTCUSDT-26DEC25",
                "contractType": "LinearFutures",
                "status": "Trading",
                "baseCoin": "BTC",
                "quoteCoin": "USDT",
                "settleCoin": "USDT",
                "deliveryTime": "1766736000000",  # 2025-12-26T08:00:00Z
                "priceFilter": {"tickSize": "0.50"},
                "lotSizeFilter": {"qtyStep": "0.001"},
            },
            {
                "symbol": "BIOUSDT",
                "contractType": "LinearPerpetual",
                "status": "PreLaunch",
                "baseCoin": "BIO",
                "quoteCoin": "USDT",
                "settleCoin": "USDT",
                "priceFilter": {"tickSize": "0.0001"},
                "lotSizeFilter": {"qtyStep": "1"},
            },
            {  # not a linear contract type: skipped
                "symbol": "BTCUSD",
                "contractType": "InversePerpetual",
                "status": "Trading",
                "baseCoin": "BTC",
                "quoteCoin": "USD",
            },
        ],
        "nextPageCursor": "",
    }
)


@pytest.fixture
def linear() -> MarketIndex:
    return bybit.market_index(LINEAR_PAGE_1, LINEAR_PAGE_2)


@pytest.fixture
def spot() -> MarketIndex:
    return bybit.market_index(SPOT_INSTRUMENTS)


@pytest.fixture
def parser(linear: MarketIndex) -> bybit.BybitParser:
    return bybit.BybitParser(linear)


# ---------------------------------------------------------------------------
# URLs and topics
# ---------------------------------------------------------------------------


def test_default_urls() -> None:
    assert bybit.resolve_urls() == {
        "spot": "wss://stream.bybit.com/v5/public/spot",
        "linear": "wss://stream.bybit.com/v5/public/linear",
        "status": "wss://stream.bybit.com/v5/public/misc/status",
        "private": "wss://stream.bybit.com/v5/private",
        "rest": "https://api.bybit.com",
    }
    assert set(bybit.TESTNET_URLS) == set(bybit.DEFAULT_URLS)


def test_url_overrides() -> None:
    urls = bybit.resolve_urls(
        {"linear": "ws://127.0.0.1:9000/v5/public/linear/", "rest": "http://127.0.0.1:9001"}
    )
    assert urls["linear"] == "ws://127.0.0.1:9000/v5/public/linear"
    assert urls["rest"] == "http://127.0.0.1:9001"
    assert urls["spot"] == bybit.DEFAULT_URLS["spot"]
    assert bybit.resolve_urls(bybit.TESTNET_URLS)["rest"] == "https://api-testnet.bybit.com"


def test_unknown_url_key_names_the_valid_keys() -> None:
    with pytest.raises(BadRequest) as e:
        bybit.resolve_urls({"ws": "wss://x"})
    for key in ("'spot'", "'linear'", "'status'", "'rest'"):
        assert key in str(e.value)


@pytest.mark.parametrize(
    "urls",
    [{"spot": "https://x"}, {"rest": "wss://x"}, {"linear": 5}, {"status": "ftp://x"}],
)
def test_url_with_wrong_scheme_is_refused(urls: Any) -> None:
    with pytest.raises(BadRequest):
        bybit.resolve_urls(urls)


def test_topic_builders() -> None:
    assert bybit.orderbook_topic("BTCUSDT") == "orderbook.50.BTCUSDT"
    assert bybit.orderbook_topic("BTCUSDT", 1000) == "orderbook.1000.BTCUSDT"
    assert bybit.trade_topic("BTCUSDT") == "publicTrade.BTCUSDT"
    assert bybit.ticker_topic("BTCUSDT-26DEC25") == "tickers.BTCUSDT-26DEC25"
    assert bybit.kline_topic("BTCUSDT", "5m") == "kline.5.BTCUSDT"
    assert bybit.kline_topic("BTCUSDT", "1h") == "kline.60.BTCUSDT"
    assert bybit.kline_topic("BTCUSDT", "1d") == "kline.D.BTCUSDT"
    assert bybit.kline_topic("BTCUSDT", "1M") == "kline.M.BTCUSDT"
    assert bybit.url_kind("orderbook.200.BTCUSDT") == "market"
    assert bybit.url_kind("system.status") == "status"


@pytest.mark.parametrize(
    "call",
    [
        lambda: bybit.orderbook_topic("BTCUSDT", 25),
        lambda: bybit.orderbook_topic("BTCUSDT", True),
        lambda: bybit.orderbook_topic("BTC.USDT"),
        lambda: bybit.trade_topic(""),
        lambda: bybit.trade_topic("BTC USDT"),
        lambda: bybit.ticker_topic(None),  # type: ignore[arg-type]
        lambda: bybit.kline_topic("BTCUSDT", "2m"),
        lambda: bybit.url_kind("orderbook.25.BTCUSDT"),
        lambda: bybit.url_kind("kline.7.BTCUSDT"),
        lambda: bybit.url_kind("books.BTCUSDT"),
        lambda: bybit.url_kind("orderbook.50"),
    ],
)
def test_bad_topic_arguments(call: Any) -> None:
    with pytest.raises(BadRequest):
        call()


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------


def test_wire_rules_satisfy_protocol_and_limits() -> None:
    spot_rules = bybit.BybitWireRules("spot")
    linear_rules = bybit.BybitWireRules("linear")
    status_rules = bybit.BybitWireRules("status")
    for rules in (spot_rules, linear_rules, status_rules):
        assert isinstance(rules, WireRules)
        assert rules.replies_to_control
        assert rules.binary_compression is None
        assert rules.max_connection_age is None
    assert spot_rules.max_topics_per_message == 10  # Bybit: spot <= 10 args per request
    assert linear_rules.max_topics_per_message == 100
    assert spot_rules.max_topics_per_connection == 500
    with pytest.raises(BadRequest):
        bybit.BybitWireRules("inverse")  # type: ignore[arg-type]


def test_heartbeat_is_the_documented_json_ping_every_20s() -> None:
    hb = bybit.BybitWireRules("linear").heartbeat
    assert hb is not None
    assert hb.idle_interval == 20.0
    assert hb.pong is None  # the pong is JSON, handled by the parser
    documented = fixture_message("ping")
    del documented["req_id"]  # optional
    assert json.loads(hb.payload) == documented


def test_subscribe_matches_documented_request() -> None:
    documented = fixture_message("subscribe_request")
    rules = bybit.BybitWireRules("linear")
    sent = json.loads(rules.subscribe_message(documented["args"], 7))
    assert sent == {**documented, "req_id": "7"}
    unsent = json.loads(rules.unsubscribe_message(["publicTrade.BTCUSDT"], 8))
    assert unsent == {"req_id": "8", "op": "unsubscribe", "args": ["publicTrade.BTCUSDT"]}
    status = json.loads(bybit.BybitWireRules("status").subscribe_message(["system.status"], 1))
    assert status["args"] == ["system.status"]


def test_subscribe_refuses_bad_requests() -> None:
    spot_rules = bybit.BybitWireRules("spot")
    with pytest.raises(BadRequest):
        spot_rules.subscribe_message([], 1)
    with pytest.raises(BadRequest):
        spot_rules.subscribe_message([f"publicTrade.S{i}USDT" for i in range(11)], 1)
    with pytest.raises(BadRequest):
        spot_rules.subscribe_message(["system.status"], 1)  # served on the status URL
    with pytest.raises(BadRequest):
        bybit.BybitWireRules("status").subscribe_message(["publicTrade.BTCUSDT"], 1)
    with pytest.raises(BadRequest):
        spot_rules.subscribe_message(["orderbook.25.BTCUSDT"], 1)


def test_control_replies_are_matched_by_echoed_req_id() -> None:
    rules = bybit.BybitWireRules("linear")
    ok = {"success": True, "ret_msg": "", "conn_id": "c", "req_id": "12", "op": "subscribe"}
    assert rules.control_reply(ok) == ControlReply(12, True)
    spot_ok = {**ok, "ret_msg": "subscribe", "op": "unsubscribe"}
    assert rules.control_reply(spot_ok) == ControlReply(12, True)
    refused = {**ok, "success": False, "ret_msg": "error:handler not found,topic:x"}
    assert rules.control_reply(refused) == ControlReply(
        12, False, "error:handler not found,topic:x"
    )
    # the documented ack with an empty req_id, pongs and data are not replies
    assert rules.control_reply(fixture_message("subscribe_response_linear")) is None
    assert rules.control_reply(fixture_message("pong_spot")) is None
    assert rules.control_reply(fixture_message("publicTrade")) is None
    assert rules.control_reply("pong") is None
    assert rules.overlap_key(b"abc") == b"abc"


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def test_parse_spot_markets(spot: MarketIndex) -> None:
    btc = spot.market("BTC/USDT")
    assert (btc.id, btc.base, btc.quote, btc.active) == ("BTCUSDT", "BTC", "USDT", True)
    assert (btc.tick_size, btc.amount_step) == ("0.1", "0.000001")
    assert (btc.price_precision, btc.amount_precision) == (1, 6)
    assert spot.symbols == ["BTC/USDT", "ETH/USDT"]
    assert bybit.category_of("BTC/USDT") == "spot"


def test_parse_linear_markets_over_pages(linear: MarketIndex) -> None:
    assert bybit.next_cursor(LINEAR_PAGE_1) == "first%3DBIOUSDT%26last%3DBIOUSDT"
    assert bybit.next_cursor(LINEAR_PAGE_2) is None
    assert linear.symbols == ["BTC/USDT:USDT", "BTC/USDT:USDT-251226", "BIO/USDT:USDT"]
    perp = linear.market("BTC/USDT:USDT")
    assert (perp.id, perp.tick_size, perp.amount_step) == ("BTCUSDT", "0.10", "0.001")
    assert linear.symbol_of("BTCUSDT-26DEC25") == "BTC/USDT:USDT-251226"
    assert not linear.market("BIO/USDT:USDT").active  # PreLaunch
    assert "BTCUSD" not in linear.by_id
    assert bybit.category_of("BTC/USDT:USDT") == "linear"


def test_categories_are_indexed_separately() -> None:
    with pytest.raises(BadRequest):
        bybit.market_index(SPOT_INSTRUMENTS, LINEAR_PAGE_1)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"retCode": 0, "result": {"category": "spot"}},
        {"retCode": 0, "result": {"category": "option", "list": []}},
        {"retCode": "0", "result": {"category": "spot", "list": []}},
        _answer({"category": "spot", "list": ["x"]}),
        _answer({"category": "spot", "list": [{"symbol": "X", "baseCoin": 1, "quoteCoin": "Y"}]}),
        _answer({"category": "spot", "list": [{"baseCoin": "X", "quoteCoin": "Y"}]}),
    ],
)
def test_parse_markets_malformed(payload: Any) -> None:
    with pytest.raises(MalformedMessage):
        bybit.parse_markets(payload)


def test_rest_answer_with_error_code_raises_typed_error() -> None:
    with pytest.raises(RateLimitExceeded):
        bybit.parse_markets({"retCode": 10006, "retMsg": "Too many visits!", "result": {}})


# ---------------------------------------------------------------------------
# Messages: the documented fixtures
# ---------------------------------------------------------------------------


def test_orderbook_snapshot_fixture(parser: bybit.BybitParser) -> None:
    [msg] = parser.parse(fixture_message("orderbook_snapshot_excerpt"))  # type: ignore[misc]
    assert isinstance(msg, BybitBookMessage)
    assert msg.depth == 50 and msg.seq == 7961638724 and msg.cts == 1672304484976
    event = msg.event
    assert isinstance(event, BookSnapshot)
    assert event.symbol == "BTC/USDT:USDT"
    assert [tuple(b) for b in event.bids] == [("16493.50", "0.006"), ("16493.00", "0.100")]
    assert [tuple(a) for a in event.asks] == [("16611.00", "0.029"), ("16612.00", "0.213")]
    assert (event.nonce, event.timestamp) == (18521288, 1672304484978)


def test_orderbook_delta_fixture(parser: bybit.BybitParser) -> None:
    [msg] = parser.parse(fixture_message("orderbook_delta"))  # type: ignore[misc]
    assert isinstance(msg, BybitBookMessage)
    event = msg.event
    assert isinstance(event, BookDelta)
    assert event.nonce == 177400507 and event.timestamp == 1687940967466
    assert tuple(event.bids[-1]) == ("30240.00", "0")
    assert len(event.asks) == 7 and msg.seq == 66544703342


def test_public_trade_fixture(parser: bybit.BybitParser) -> None:
    assert parser.parse(fixture_message("publicTrade")) == [
        Trade(
            "BTC/USDT:USDT",
            "20f43950-d8dd-5b31-9112-a178eb6023af",
            1672304486865,
            "16578.50",
            "0.001",
            "buy",
            "taker",
        )
    ]


def test_kline_fixture(parser: bybit.BybitParser) -> None:
    assert parser.parse(fixture_message("kline")) == [
        Candle("BTC/USDT:USDT", "5m", 1672324800000, "16649.5", "16677", "16608", "16677",
               "2.081", False)
    ]  # fmt: skip
    closed = fixture_message("kline")
    closed["data"][0]["confirm"] = True
    [candle] = parser.parse(closed)  # type: ignore[misc]
    assert isinstance(candle, Candle) and candle.closed


def test_linear_ticker_fixture_and_delta_merge(parser: bybit.BybitParser) -> None:
    [snap] = parser.parse(fixture_message("tickers_linear_snapshot"))  # type: ignore[misc]
    assert isinstance(snap, BybitTickerMessage)
    assert snap.snapshot and snap.cs == 9532239429 and snap.timestamp == 1760325052630
    merger = BybitTickerMerger()
    ticker = merger.on_message(snap)
    assert ticker == Ticker(
        "BTC/USDT:USDT",
        timestamp=1760325052630,
        bid="66666.60",
        bid_volume="23789.165",
        ask="66666.70",
        ask_volume="23775.469",
        last="66666.60",
        open="79206.20",
        high="79266.30",
        low="65076.90",
        close="66666.60",
        base_volume="73191.3870",
        quote_volume="4936790807.6521",
        change="-12539.60",  # exactly 66666.60 - 79206.20
        percentage="-15.8315",  # price24hPcnt -0.158315 in percent, exactly
    )
    delta = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "data": {"symbol": "BTCUSDT", "bid1Price": "66666.50", "lastPrice": "66670.00"},
        "cs": 9532239430,
        "ts": 1760325052730,
    }
    [d] = parser.parse(delta)  # type: ignore[misc]
    merged = merger.on_message(d)  # type: ignore[arg-type]
    assert merged is not None
    assert (merged.bid, merged.last, merged.close) == ("66666.50", "66670.00", "66670.00")
    assert merged.ask == "66666.70" and merged.high == "79266.30"  # unchanged fields kept
    assert merged.timestamp == 1760325052730
    # an older delta (by cs) is refused, a delta for an unknown symbol waits
    old = BybitTickerMessage("BTC/USDT:USDT", False, {"lastPrice": "1"}, 1, 9532239000)
    assert merger.on_message(old) is None
    assert merger.on_message(BybitTickerMessage("ETH/USDT:USDT", False, {"lastPrice": "1"})) is None
    merger.reset()
    assert merger.on_message(d) is None  # type: ignore[arg-type]


def test_spot_ticker_snapshot(spot: MarketIndex) -> None:
    message = {
        "topic": "tickers.BTCUSDT",
        "ts": 1673853746003,
        "type": "snapshot",
        "cs": 2588407389,
        "data": {
            "symbol": "BTCUSDT",
            "lastPrice": "21109.77",
            "highPrice24h": "21426.99",
            "lowPrice24h": "20575",
            "prevPrice24h": "20704.93",
            "volume24h": "6780.866843",
            "turnover24h": "141946527.22907118",
            "price24hPcnt": "0.0196",
            "usdIndexPrice": "21120.2400136",
        },
    }
    [msg] = bybit.BybitParser(spot).parse(message)  # type: ignore[misc]
    ticker = BybitTickerMerger().on_message(msg)  # type: ignore[arg-type]
    assert ticker is not None and ticker.symbol == "BTC/USDT"
    assert (ticker.bid, ticker.ask, ticker.last) == (None, None, "21109.77")
    assert (ticker.change, ticker.percentage) == ("404.84", "1.96")
    assert (ticker.base_volume, ticker.quote_volume) == ("6780.866843", "141946527.22907118")


def test_control_messages_and_pongs(parser: bybit.BybitParser) -> None:
    assert parser.parse(fixture_message("subscribe_response_linear")) == ControlReply(None, True)
    assert parser.parse(fixture_message("auth_response")) == ControlReply(None, True)
    assert isinstance(parser.parse(fixture_message("pong_spot")), Pong)
    assert isinstance(parser.parse(fixture_message("pong_private")), Pong)
    linear_pong = {**fixture_message("pong_spot"), "req_id": "100001"}
    assert parser.parse(linear_pong) is bybit.PONG
    refused = {"success": False, "ret_msg": "Invalid symbol :[orderbook.50.XX]", "conn_id": "c",
               "req_id": "3", "op": "subscribe"}  # fmt: skip
    error = parser.parse(refused)
    assert error == BybitError("subscribe", "Invalid symbol :[orderbook.50.XX]", 3, "c")
    assert isinstance(error, BybitError)
    assert isinstance(error.exception(), BadSymbol)
    other = BybitError("subscribe", "args size >21000", 4)
    assert type(other.exception()) is SubscriptionError
    assert isinstance(BybitError("auth", "error sign").exception(), AuthenticationError)


def test_system_status_maintenance() -> None:
    message = {
        "topic": "system.status",
        "ts": 1751858399649,
        "data": [
            {
                "id": "4d95b2a0-587f-11f0-bcc9-56f28c94d6ea",
                "title": "t06",
                "state": "completed",
                "begin": "1751596902000",
                "end": "1751597011000",
                "href": "",
                "serviceTypes": [2, 3, 4, 5],
                "product": [1, 2],
                "uidSuffix": [],
                "maintainType": 1,
                "env": 1,
            }
        ],
    }
    parser = bybit.BybitParser(MarketIndex.from_markets([]))
    [entry] = parser.parse(message)  # type: ignore[misc]
    assert entry == Maintenance(
        "4d95b2a0-587f-11f0-bcc9-56f28c94d6ea", "t06", "completed", 1751596902000,
        1751597011000, "", (2, 3, 4, 5), (1, 2), 1, 1, 1751858399649,
    )  # fmt: skip
    assert not entry.affects_market_data("spot")  # completed
    ongoing = Maintenance("x", "t", "ongoing", service_types=(5,), products=(2,))
    assert ongoing.affects_market_data("spot") and not ongoing.affects_market_data("linear")
    assert not Maintenance("x", "t", "ongoing", service_types=(1,)).affects_market_data("spot")
    rest = _answer({"list": copy.deepcopy(message["data"])}, 1751858399700)
    assert bybit.system_status_request().url("https://api.bybit.com") == (
        "https://api.bybit.com/v5/system/status"
    )
    assert bybit.parse_system_status(rest) == [attrs.evolve(entry, timestamp=1751858399700)]
    bad = copy.deepcopy(message)
    bad["data"][0]["product"] = ["1"]
    with pytest.raises(MalformedMessage):
        parser.parse(bad)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"topic": "publicTrade.XRPUSDT", "data": []}, "not in the market list"),
        ({"topic": "liquidation.BTCUSDT", "data": {}}, "no parser"),
        ({"topic": "orderbook.25.BTCUSDT", "type": "snapshot", "data": {}}, "unknown depth"),
        ({"topic": "kline.7.BTCUSDT", "data": []}, "unknown interval"),
        ({"success": True, "conn_id": "x"}, "without topic or op"),
        ({"op": "whatever", "x": 1}, "op 'whatever'"),
    ],
)
def test_unknown_messages(parser: bybit.BybitParser, message: Any, reason: str) -> None:
    outcome = parser.parse(message)
    assert isinstance(outcome, Unknown) and reason in outcome.reason
    assert outcome.message is message


def test_parser_is_cached_per_index(linear: MarketIndex) -> None:
    message = fixture_message("publicTrade")
    assert bybit.parse_message(message, linear) == bybit.BybitParser(linear).parse(message)
    assert bybit._parsers[linear] is bybit._parsers[linear]


def test_exact_decoder_values_are_rendered_as_decimal_strings(parser: bybit.BybitParser) -> None:
    # If a frame were decoded with loads_exact (numbers kept as Decimal), the
    # adapter still hands out the exchange's canonical strings.
    raw = dumps(fixture_message("orderbook_snapshot_excerpt")).replace(b'"16493.50"', b"16493.50")
    raw = raw.replace(b'"0.100"', b"0.100").replace(b'"16611.00"', b"16611")
    message = loads_exact(raw)
    assert message["data"]["b"][0][0] == Decimal("16493.50")
    [msg] = parser.parse(message)  # type: ignore[misc]
    assert isinstance(msg, BybitBookMessage)
    assert [tuple(b) for b in msg.event.bids] == [("16493.50", "0.006"), ("16493.00", "0.100")]
    assert tuple(msg.event.asks[0]) == ("16611", "0.029")
    floats = fixture_message("orderbook_snapshot_excerpt")
    floats["data"]["b"][0][0] = 16493.5
    with pytest.raises(MalformedMessage):
        parser.parse(floats)


def _trade_push(**item: Any) -> dict[str, Any]:
    trade = {"i": "1", "T": 1, "p": "1", "v": "1", "S": "Buy"}
    trade.update(item)
    return {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": [trade]}


def _book(**data: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"s": "BTCUSDT", "b": [], "a": [], "u": 5, "seq": 9}
    base.update(data)
    return {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1, "data": base}


@pytest.mark.parametrize(
    "message",
    [
        None,
        "pong",
        [],
        {"topic": 5, "data": {}},
        {"topic": "publicTrade.BTCUSDT"},
        _book(u="5"),
        _book(u=None),
        _book(u=-1),
        _book(b=[["1"]]),
        _book(b=[["1", "2", "3"]]),
        _book(a=[[1.5, "2"]]),
        _book(a="x"),
        _book(seq="9"),
        {**_book(), "type": "update"},
        {**_book(), "data": []},
        {**_book(), "ts": "x"},
        {"topic": "publicTrade.BTCUSDT", "data": {}},
        _trade_push(S="buy"),
        _trade_push(T=1.5),
        _trade_push(i=1),
        _trade_push(p=16578.5),
        _trade_push(i=""),
        {"topic": "publicTrade.BTCUSDT", "data": ["x"]},
        {"topic": "tickers.BTCUSDT", "type": "delta", "data": {"lastPrice": 1.5}},
        {"topic": "tickers.BTCUSDT", "type": "x", "data": {}},
        {"topic": "tickers.BTCUSDT", "type": "delta", "data": []},
        {"topic": "kline.5.BTCUSDT", "data": [{"start": 1, "open": "1", "high": "1", "low": "1",
                                               "close": "1", "volume": "1", "confirm": "no"}]},
        {"topic": "kline.5.BTCUSDT", "data": {}},
        {"topic": "system.status", "data": {}},
        {"topic": "system.status", "data": [{"id": 1, "state": "ongoing"}]},
        {"op": "subscribe", "success": "yes"},
        {"op": "subscribe", "success": False, "ret_msg": ["x"]},
        {"op": ["x"], "success": True},
    ],
)  # fmt: skip
def test_malformed_messages_raise_malformed_message(
    parser: bybit.BybitParser, message: Any
) -> None:
    with pytest.raises(MalformedMessage):
        parser.parse(message)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_topics = st.sampled_from(
    ["orderbook.50.BTCUSDT", "orderbook.1.BTCUSDT", "publicTrade.BTCUSDT", "tickers.BTCUSDT",
     "kline.5.BTCUSDT", "kline.D.BTCUSDT", "system.status", "liquidation.BTCUSDT", "orderbook.50"]
)  # fmt: skip
_keys = st.sampled_from(
    ["s", "b", "a", "u", "seq", "i", "T", "p", "v", "S", "lastPrice", "start", "open", "confirm",
     "id", "state", "serviceTypes"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    topic=_topics,
    kind=st.sampled_from(["snapshot", "delta", None, 5]),
    item=st.dictionaries(_keys, _json, max_size=6),
    data=_json,
    raw=_json,
)
def test_fuzz_only_typed_outcomes(topic: str, kind: Any, item: Any, data: Any, raw: Any) -> None:
    parser = bybit.BybitParser(bybit.market_index(LINEAR_PAGE_1))
    messages = [
        {"topic": topic, "type": kind, "ts": 1, "data": item},
        {"topic": topic, "type": kind, "data": [item]},
        {"topic": topic, "data": data, "ts": data, "cs": data},
        {"op": data, "success": data, "ret_msg": data, "req_id": data},
        raw,
    ]
    for message in messages:
        try:
            outcome = parser.parse(message)
        except MalformedMessage:
            continue
        assert isinstance(outcome, (list, ControlReply, ServerShutdown, BybitError, Pong, Unknown))


# ---------------------------------------------------------------------------
# Book sync: rules
# ---------------------------------------------------------------------------

SYM = "BTC/USDT:USDT"


def snap(
    u: int, bids: Any = (), asks: Any = (), seq: int | None = None, depth: int = 50
) -> BybitBookMessage:
    return BybitBookMessage(BookSnapshot(SYM, list(bids), list(asks), u, u), depth, seq)


def delta(
    u: int, bids: Any = (), asks: Any = (), seq: int | None = None, depth: int = 50
) -> BybitBookMessage:
    return BybitBookMessage(BookDelta(SYM, list(bids), list(asks), u, timestamp=u), depth, seq)


def test_snapshot_then_increasing_deltas() -> None:
    sync = BybitBookSync(SYM, 50)
    assert sync.state == "waiting" and sync.update_id is None
    first = sync.on_message(snap(10, seq=100))
    assert isinstance(first, ApplySnapshot) and not first.restart
    assert (sync.state, sync.update_id, sync.seq) == ("synced", 10, 100)
    step = sync.on_message(delta(11, [("1", "2")], seq=101))
    assert isinstance(step, ApplyDelta) and step.depth == 50
    # Bybit documents no contiguity: a jump is accepted by default
    assert isinstance(sync.on_message(delta(15)), ApplyDelta)
    assert sync.update_id == 15 and sync.seq == 101


def test_deltas_before_the_first_snapshot_are_ignored() -> None:
    sync = BybitBookSync(SYM, 50)
    assert sync.on_message(delta(3)) == Ignore("waiting for a snapshot")
    assert isinstance(sync.on_message(snap(4)), ApplySnapshot)


@pytest.mark.parametrize(("u", "what"), [(10, "duplicate"), (9, "regression")])
def test_duplicate_or_regressing_update_id_resyncs(u: int, what: str) -> None:
    sync = BybitBookSync(SYM, 50)
    sync.on_message(snap(5))
    sync.on_message(delta(10))
    action = sync.on_message(delta(u))
    assert isinstance(action, Resync) and what in action.reason
    assert sync.state == "waiting"
    # late deltas of the old subscription are ignored until the new snapshot
    assert isinstance(sync.on_message(delta(11)), Ignore)
    assert isinstance(sync.on_message(snap(20)), ApplySnapshot)
    assert isinstance(sync.on_message(delta(21)), ApplyDelta)


def test_contiguous_mode_treats_a_jump_as_a_gap() -> None:
    sync = BybitBookSync(SYM, 50, contiguous=True)
    sync.on_message(snap(5))
    assert isinstance(sync.on_message(delta(6)), ApplyDelta)
    action = sync.on_message(delta(8))
    assert isinstance(action, Resync) and "gap: u=8 after u=6" in action.reason


def test_new_snapshot_resets_at_any_time() -> None:
    sync = BybitBookSync(SYM, 50)
    sync.on_message(snap(5, seq=50))
    sync.on_message(delta(6, seq=60))
    action = sync.on_message(snap(7, [("1", "1")], seq=70))
    assert isinstance(action, ApplySnapshot) and sync.update_id == 7


def test_u_equal_1_is_a_service_restart_snapshot() -> None:
    sync = BybitBookSync(SYM, 50)
    sync.on_message(snap(500, seq=900))
    action = sync.on_message(delta(1, [("2", "1"), ("1", "0")], [("3", "4")], seq=5))
    assert isinstance(action, ApplySnapshot) and action.restart
    assert action.snapshot == BookSnapshot(SYM, [("2", "1"), ("1", "0")], [("3", "4")], 1, 1)
    assert sync.update_id == 1
    assert isinstance(sync.on_message(delta(2)), ApplyDelta)
    book = OrderBook(SYM)
    book.apply_snapshot(action.snapshot)  # the zero-size level is not kept
    assert book.snapshot().bids == (("2", "1"),)


def test_stale_snapshot_is_ignored() -> None:
    sync = BybitBookSync(SYM, 50)
    sync.on_message(snap(100, seq=1000))
    assert sync.on_message(snap(90, seq=900)) == Ignore(
        "stale snapshot: u and seq older than the book's"
    )
    assert sync.update_id == 100
    # a lower u with a higher seq contradicts itself: Bybit says snapshots reset
    assert isinstance(sync.on_message(snap(80, seq=2000)), ApplySnapshot)
    # without seq only u decides
    sync2 = BybitBookSync(SYM, 50)
    sync2.on_message(snap(100))
    assert isinstance(sync2.on_message(snap(99)), Ignore)


def test_depth_1_resends_with_the_same_u_are_applied() -> None:
    sync = BybitBookSync(SYM, 1)
    assert sync.silence_timeout == 10.0 and BybitBookSync(SYM, 50).silence_timeout is None
    sync.on_message(snap(7, [("1", "1")], [("2", "1")], depth=1), received_at=100.0)
    again = sync.on_message(snap(7, [("1", "1")], [("2", "1")], depth=1), received_at=103.0)
    assert isinstance(again, ApplySnapshot)
    assert sync.check_silence(110.0) is None
    action = sync.check_silence(113.5)
    assert isinstance(action, Resync) and "no book message for 10.5s" in action.reason
    assert sync.check_silence(200.0) is None  # waiting: nothing to judge


def test_bad_input_to_sync() -> None:
    sync = BybitBookSync(SYM, 50)
    with pytest.raises(BadRequest):
        sync.on_message(BybitBookMessage(BookSnapshot("ETH/USDT", [], [], 1), 50))
    with pytest.raises(BadRequest):
        sync.on_message(snap(1, depth=200))
    with pytest.raises(ProtocolViolation):
        sync.on_message(BybitBookMessage(BookDelta(SYM, [], [], None), 50))
    with pytest.raises(BadRequest):
        BybitBookSync(SYM, 0)


def test_reset_forgets_everything() -> None:
    sync = BybitBookSync(SYM, 50)
    sync.on_message(snap(5, seq=5), received_at=1.0)
    sync.reset()
    assert (sync.state, sync.update_id, sync.seq) == ("waiting", None, None)
    assert isinstance(sync.on_message(delta(6)), Ignore)
    assert "waiting" in repr(sync)


# ---------------------------------------------------------------------------
# Book sync: applied to a real OrderBook (verify, truncation, unknown deletes)
# ---------------------------------------------------------------------------


def _run(sync: BybitBookSync, book: OrderBook, message: BybitBookMessage) -> Any:
    action = sync.on_message(message)
    if isinstance(action, ApplySnapshot):
        book.apply_snapshot(action.snapshot)
    elif isinstance(action, ApplyDelta):
        book.apply_delta(action.delta)
        book.truncate(action.depth)
    else:
        if isinstance(action, Resync):
            book.mark_stale(action.reason)
        return action
    problem = sync.verify(book.top)
    if problem is not None:
        book.mark_stale(problem.reason)
        return problem
    return action


def test_documented_delta_through_a_book(parser: bybit.BybitParser) -> None:
    sync = BybitBookSync(SYM, 50)
    book = OrderBook(SYM)
    first = {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1687940967400,
             "data": {"s": "BTCUSDT", "b": [["30247.20", "1"], ["30245.00", "2"]],
                      "a": [["30249.30", "1"], ["30250.00", "1"]], "u": 177400506,
                      "seq": 66544703300}}  # fmt: skip
    [msg] = parser.parse(first)  # type: ignore[misc]
    assert isinstance(_run(sync, book, msg), ApplySnapshot)  # type: ignore[arg-type]
    [documented] = parser.parse(fixture_message("orderbook_delta"))  # type: ignore[misc]
    assert isinstance(_run(sync, book, documented), ApplyDelta)  # type: ignore[arg-type]
    result = book.snapshot()
    # deletes of prices the book never held (30240.00, 30248.70, 30249.60) are harmless
    assert result.bids == (
        ("30247.20", "30.028"), ("30245.40", "0.224"), ("30245.00", "2"),
        ("30242.10", "1.593"), ("30240.30", "1.305"),
    )  # fmt: skip
    assert result.asks == (
        ("30249.30", "0.892"), ("30249.50", "1.778"), ("30250.00", "1"),
        ("30251.90", "2.947"), ("30252.20", "0.659"), ("30252.50", "4.591"),
    )  # fmt: skip
    assert not book.stale and result.nonce == 177400507 and result.timestamp == 1687940967466


def test_fixtures_of_different_days_are_caught_as_a_crossed_book(
    parser: bybit.BybitParser,
) -> None:
    # The documented snapshot (BTC at 16,5xx) and delta (BTC at 30,2xx) do not
    # belong together: joined by a forged u, the book crosses and is refused.
    sync = BybitBookSync(SYM, 50)
    book = OrderBook(SYM)
    [first] = parser.parse(fixture_message("orderbook_snapshot_excerpt"))  # type: ignore[misc]
    assert isinstance(_run(sync, book, first), ApplySnapshot)  # type: ignore[arg-type]
    message = fixture_message("orderbook_delta")
    message["data"]["u"] = 18521289
    [second] = parser.parse(message)  # type: ignore[misc]
    action = _run(sync, book, second)  # type: ignore[arg-type]
    assert isinstance(action, Resync) and "bid 30247.20 >= ask 16611.00" in action.reason
    assert book.stale


def test_crossed_book_after_a_delta_resyncs() -> None:
    sync = BybitBookSync(SYM, 50)
    book = OrderBook(SYM)
    assert isinstance(_run(sync, book, snap(1_000, [("100", "1")], [("101", "1")])), ApplySnapshot)
    assert isinstance(_run(sync, book, delta(1_001, [("100.5", "1")])), ApplyDelta)
    action = _run(sync, book, delta(1_002, [("101", "2")]))
    assert isinstance(action, Resync) and "crossed book" in action.reason
    assert book.stale and sync.state == "waiting"


def test_crossed_snapshot_disarms_the_check() -> None:
    # e.g. a pre-market contract in its call auction: resubscribing would not help
    sync = BybitBookSync(SYM, 50)
    book = OrderBook(SYM)
    _run(sync, book, snap(1_000, [("102", "1")], [("101", "1")]))
    assert isinstance(_run(sync, book, delta(1_001, [("103", "1")])), ApplyDelta)
    assert not book.stale
    # an uncrossed snapshot arms it again
    _run(sync, book, snap(1_002, [("100", "1")], [("101", "1")]))
    assert isinstance(_run(sync, book, delta(1_003, [("101.5", "1")])), Resync)


def test_crossed_check_can_be_turned_off() -> None:
    sync = BybitBookSync(SYM, 50, check_crossed=False)
    book = OrderBook(SYM)
    _run(sync, book, snap(1_000, [("100", "1")], [("101", "1")]))
    calls: list[Any] = []

    def top(side: Any, n: int) -> list[Any]:
        calls.append(side)
        return []

    sync.on_message(delta(1_001, [("102", "1")]))
    assert sync.verify(top) is None and calls == []
    assert sync.verify(book.top) is None  # nothing pending twice


def _top_n(levels: dict[int, int], n: int, reverse: bool) -> dict[int, int]:
    return dict(sorted(levels.items(), reverse=reverse)[:n])


def _wire(levels: dict[int, int]) -> list[list[str]]:
    return [[f"{p / 10:.1f}", f"{a / 1000:.3f}"] for p, a in levels.items()]


def _diff(old: dict[int, int], new: dict[int, int]) -> dict[int, int]:
    changes = {p: a for p, a in new.items() if old.get(p) != a}
    changes.update({p: 0 for p in old if p not in new})
    return changes


def test_depth_limited_stream_against_a_random_market() -> None:
    """A depth-N stream (as Bybit describes it) applied with truncation equals the true top N."""
    rng = random.Random(11)
    depth = 50
    bids = {9_900 - i: rng.randint(1, 5_000) for i in range(120)}
    asks = {10_000 + i: rng.randint(1, 5_000) for i in range(120)}
    parser = bybit.BybitParser(bybit.market_index(LINEAR_PAGE_1))
    sync = BybitBookSync(SYM, depth, contiguous=True)
    book = OrderBook(SYM)
    shown_bids = _top_n(bids, depth, True)
    shown_asks = _top_n(asks, depth, False)
    first = {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1, "cts": 1,
             "data": {"s": "BTCUSDT", "b": _wire(shown_bids), "a": _wire(shown_asks),
                      "u": 1_000, "seq": 1}}  # fmt: skip
    [msg] = parser.parse(first)  # type: ignore[misc]
    assert isinstance(_run(sync, book, msg), ApplySnapshot)  # type: ignore[arg-type]
    u = 1_000
    for step in range(600):
        for side, near_best in ((bids, -60), (asks, 60)):
            for _ in range(rng.randint(1, 4)):
                keys = sorted(side)
                price = rng.choice(keys[near_best:] if near_best < 0 else keys[:near_best])
                if rng.random() < 0.4 and len(side) > 60:
                    del side[price]  # a level disappears (possibly inside the top N)
                else:
                    side[price] = rng.randint(1, 5_000)
        # a new best level inside the spread now and then
        if step % 7 == 0:
            top_bid, top_ask = max(bids), min(asks)
            if top_ask - top_bid > 2:
                bids[top_bid + 1] = rng.randint(1, 5_000)
        new_bids = _top_n(bids, depth, True)
        new_asks = _top_n(asks, depth, False)
        u += 1
        message = {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": u,
                   "data": {"s": "BTCUSDT", "b": _wire(_diff(shown_bids, new_bids)),
                            "a": _wire(_diff(shown_asks, new_asks)), "u": u, "seq": u}}  # fmt: skip
        shown_bids, shown_asks = new_bids, new_asks
        [msg] = parser.parse(message)  # type: ignore[misc]
        assert isinstance(_run(sync, book, msg), ApplyDelta)  # type: ignore[arg-type]
        if step % 20 == 0:
            result = book.snapshot()
            assert [tuple(x) for x in result.bids] == [tuple(x) for x in _wire(new_bids)]
            assert [tuple(x) for x in result.asks] == [tuple(x) for x in _wire(new_asks)]
    assert book.level_count("bids") <= depth and book.level_count("asks") <= depth


# ---------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------


def test_rest_requests() -> None:
    assert bybit.instruments_request("spot") == RestRequest(
        "GET", "/v5/market/instruments-info", {"category": "spot"}
    )
    paged = bybit.instruments_request("linear", cursor="abc")
    assert paged.url("https://api.bybit.com") == (
        "https://api.bybit.com/v5/market/instruments-info?category=linear&limit=1000&cursor=abc"
    )
    book = bybit.book_snapshot_request("linear", "BTCUSDT", 1000)
    assert book.url("https://api.bybit.com") == (
        "https://api.bybit.com/v5/market/orderbook?category=linear&symbol=BTCUSDT&limit=1000"
    )
    assert bybit.trades_request("spot", "BTCUSDT").params == {
        "category": "spot",
        "symbol": "BTCUSDT",
    }
    assert bybit.trades_request("linear", "BTCUSDT", 1000).params["limit"] == 1000
    kline = bybit.candles_request("linear", "BTCUSDT", "1h", start=1, end=2, limit=1000)
    assert (
        kline.query_string()
        == "category=linear&symbol=BTCUSDT&interval=60&start=1&end=2&limit=1000"
    )
    assert bybit.ticker_request("spot", "BTCUSDT").params == {
        "category": "spot",
        "symbol": "BTCUSDT",
    }
    assert bybit.tickers_request("linear").path == "/v5/market/tickers"


@pytest.mark.parametrize(
    "call",
    [
        lambda: bybit.instruments_request("inverse"),
        lambda: bybit.instruments_request("linear", limit=0),
        lambda: bybit.book_snapshot_request("spot", "BTCUSDT", 1001),
        lambda: bybit.book_snapshot_request("spot", "BTC USDT"),
        lambda: bybit.trades_request("spot", "BTCUSDT", 61),
        lambda: bybit.trades_request("linear", "BTCUSDT", 1001),
        lambda: bybit.candles_request("spot", "BTCUSDT", "1m", limit=1001),
        lambda: bybit.candles_request("spot", "BTCUSDT", "7m"),
        lambda: bybit.tickers_request("option"),
    ],
)
def test_bad_rest_arguments(call: Any) -> None:
    with pytest.raises(BadRequest):
        call()


def test_parse_order_book_documented_example() -> None:
    payload = _answer(
        {"s": "BTCUSDT", "a": [["65557.7", "16.606555"]], "b": [["65485.47", "47.081829"]],
         "ts": 1716863719031, "u": 230704, "seq": 1432604333, "cts": 1716863718905},
        1716863719382,
    )  # fmt: skip
    result = bybit.parse_order_book("BTC/USDT", payload)
    assert result.nonce == 230704 and result.timestamp == 1716863719031
    assert [tuple(b) for b in result.bids] == [("65485.47", "47.081829")]
    assert [tuple(a) for a in result.asks] == [("65557.7", "16.606555")]
    with pytest.raises(MalformedMessage):
        bybit.parse_order_book("BTC/USDT", _answer({"b": [], "a": [], "u": "1"}))


def test_parse_candles_oldest_first() -> None:
    payload = _answer(
        {"symbol": "BTCUSD", "category": "inverse", "list": [
            ["1670608800000", "17071", "17073", "17027", "17055.5", "268611", "15.74462667"],
            ["1670605200000", "17071.5", "17071.5", "17061", "17071", "4177", "0.24469757"],
            ["1670601600000", "17086.5", "17088", "16978", "17071.5", "6356", "0.37288112"],
        ]}
    )  # fmt: skip
    candles = bybit.parse_candles("BTC/USD", "1h", payload)
    assert [c.timestamp for c in candles] == [1670601600000, 1670605200000, 1670608800000]
    assert candles[0] == Candle("BTC/USD", "1h", 1670601600000, "17086.5", "17088", "16978",
                                "17071.5", "6356", True)  # fmt: skip
    assert [c.closed for c in candles] == [True, True, False]
    later = bybit.parse_candles("BTC/USD", "1h", payload, now_ms=1670608800000 + 3_600_000)
    assert later[-1].closed
    almost = bybit.parse_candles("BTC/USD", "1h", payload, now_ms=1670608800000 + 3_599_999)
    assert not almost[-1].closed
    # monthly candles end at the next calendar month (Feb 2024: 29 days)
    feb = _answer({"list": [["1706745600000", "1", "1", "1", "1", "1", "1"]]})
    end_of_feb = 1709251200000  # 2024-03-01T00:00:00Z
    assert not bybit.parse_candles("X/Y", "1M", feb, now_ms=end_of_feb - 1)[0].closed
    assert bybit.parse_candles("X/Y", "1M", feb, now_ms=end_of_feb)[0].closed
    with pytest.raises(MalformedMessage):
        bybit.parse_candles("X/Y", "1m", _answer({"list": [["1", "2"]]}))


def test_parse_rest_trades_oldest_first() -> None:
    payload = _answer(
        {"category": "spot", "list": [
            {"execId": "3", "symbol": "BTCUSDT", "price": "16618.49", "size": "0.00012",
             "side": "Buy", "time": "1672052955758", "isBlockTrade": False},
            {"execId": "2", "symbol": "BTCUSDT", "price": "16618.00", "size": "0.1",
             "side": "Sell", "time": "1672052955758", "isBlockTrade": False},
            {"execId": "1", "symbol": "BTCUSDT", "price": "16617.00", "size": "0.2",
             "side": "Sell", "time": "1672052955000", "isBlockTrade": False},
        ]}
    )  # fmt: skip
    trades = bybit.parse_rest_trades("BTC/USDT", payload)
    assert [t.id for t in trades] == ["1", "2", "3"]
    assert trades[2] == Trade("BTC/USDT", "3", 1672052955758, "16618.49", "0.00012", "buy", "taker")
    with pytest.raises(MalformedMessage):
        bybit.parse_rest_trades("BTC/USDT", _answer({"list": [{"execId": "1", "side": "B"}]}))


def test_parse_tickers(spot: MarketIndex) -> None:
    payload = _answer(
        {"category": "spot", "list": [
            {"symbol": "BTCUSDT", "bid1Price": "20517.96", "bid1Size": "2", "ask1Price": "20527.77",
             "ask1Size": "1.862172", "lastPrice": "20533.13", "prevPrice24h": "20393.48",
             "price24hPcnt": "0.0068", "highPrice24h": "21128.12", "lowPrice24h": "20318.89",
             "turnover24h": "243765620.65899866", "volume24h": "11801.27771",
             "usdIndexPrice": "20784.12009279"},
            {"symbol": "DOGEUSDT", "lastPrice": "1"},
        ]},
        1673859087947,
    )  # fmt: skip
    [ticker] = bybit.parse_tickers(payload, spot)
    assert ticker.symbol == "BTC/USDT" and ticker.timestamp == 1673859087947
    assert (ticker.bid, ticker.ask, ticker.last, ticker.open) == (
        "20517.96", "20527.77", "20533.13", "20393.48"
    )  # fmt: skip
    assert (ticker.change, ticker.percentage) == ("139.65", "0.68")


def test_rest_errors() -> None:
    def err(status: int, body: Any, headers: Any = None, now_ms: int | None = None) -> Any:
        return bybit.parse_rest_error(status, headers, body, now_ms)

    limited = err(
        200,
        b'{"retCode":10006,"retMsg":"Too many visits!","result":{},"time":1672738130000}',
        {"X-Bapi-Limit-Reset-Timestamp": "1672738134824"},
    )
    assert type(limited) is RateLimitExceeded and limited.retry_after == pytest.approx(4.824)
    assert limited.code == 10006 and limited.status == 200
    headers = Headers({b"Retry-After": [b"3"]})
    assert err(429, b"", headers).retry_after == 3.0
    assert type(err(429, b"")) is RateLimitExceeded
    banned = err(403, b"access too frequent")
    assert isinstance(banned, DDoSProtection) and banned.retry_after == 600.0
    assert "access too frequent" in str(banned)
    assert type(err(200, {"retCode": 10001, "retMsg": "params error: symbol invalid"})) is BadSymbol
    assert type(err(200, {"retCode": 10001, "retMsg": "params error: limit"})) is BadRequest
    assert type(err(200, {"retCode": 170121, "retMsg": "Invalid symbol."})) is BadSymbol
    assert type(err(200, {"retCode": 10016, "retMsg": "Server error"})) is ExchangeNotAvailable
    assert type(err(200, {"retCode": 10000, "retMsg": "Server Timeout"})) is RequestTimeout
    assert type(err(200, {"retCode": 10002, "retMsg": "time"})) is InvalidNonce
    assert type(err(200, {"retCode": 10003, "retMsg": "key"})) is AuthenticationError
    assert type(err(503, b"<html>busy</html>")) is ExchangeNotAvailable
    assert type(err(404, b"")) is BadRequest
    assert type(err(401, b"")) is AuthenticationError
    assert type(err(200, {"retCode": 99999999, "retMsg": "?"})) is ExchangeError
    reset = {"x-bapi-limit-reset-timestamp": "2000"}
    assert bybit.retry_after(reset, now_ms=1000) == 1.0
    assert bybit.retry_after(reset) is None
    assert bybit.retry_after(None) is None
    assert bybit.error_class("10018") is RateLimitExceeded
    assert bybit.error_class(None) is ExchangeError
