"""Unit tests for the pure Gemini adapter (no reactor, no sockets).

Payloads and the signing vector come from ``../shared/protocols/vectors.json``
(Gemini's own documented examples and conformance frames); the rest is written
in the shapes Gemini documents, and book sequences are built by hand or from a
small simulated market.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from txexchange.adapters import Unknown, gemini
from txexchange.adapters.gemini import (
    ApplyDelta,
    ApplySnapshot,
    Buffer,
    GeminiBookSync,
    GeminiParser,
    GeminiReply,
    GeminiV1Parser,
    GeminiV1Sync,
    GeminiV1WireRules,
    GeminiWireRules,
    Ignore,
    NeedSnapshot,
    Pong,
    Reconnect,
    Resync,
    SnapshotTooOld,
    V1Heartbeat,
    V1Update,
)
from txexchange.adapters.rest import RestRequest
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    ExchangeNotAvailable,
    InvalidNonce,
    MalformedMessage,
    NotSupported,
    PermissionDenied,
    ProtocolViolation,
    RateLimitExceeded,
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
    return json.loads(VECTORS.read_text())


_V = _load()
FIXTURES: dict[str, Any] = {f["name"]: f["message"] for f in _V["fixtures"]["gemini"]}
SIGNATURE = next(s for s in _V["signatures"] if s["id"] == "gemini.rest.hmac_sha384")

BTC_DETAILS = {
    "symbol": "BTCUSD",
    "base_currency": "BTC",
    "quote_currency": "USD",
    "tick_size": 1e-8,
    "quote_increment": 0.01,
    "min_order_size": "0.00001",
    "status": "open",
    "wrap_enabled": False,
    "product_type": "spot",
    "contract_type": "vanilla",
    "contract_price_currency": "USD",
}
ETH_DETAILS = {**BTC_DETAILS, "symbol": "ETHUSD", "base_currency": "ETH", "tick_size": 1e-6}
PERP_DETAILS = {
    **BTC_DETAILS,
    "symbol": "BTCGUSDPERP",
    "quote_currency": "GUSD",
    "product_type": "swap",
    "contract_type": "linear",
    "contract_price_currency": "GUSD",
    "status": "closed",
}


@pytest.fixture(scope="module")
def index() -> MarketIndex:
    return gemini.market_index([BTC_DETAILS, ETH_DETAILS, PERP_DETAILS])


@pytest.fixture
def parser(index: MarketIndex) -> GeminiParser:
    return GeminiParser(index)


def wire(message: Any) -> Any:
    """Round-trip through the bytes the transport sees and orjson, as in production."""
    return orjson.loads(json.dumps(message).encode())


# ---------------------------------------------------------------------------
# Fixtures from the docs parse to the right events
# ---------------------------------------------------------------------------


def test_book_ticker_fixture(parser: GeminiParser) -> None:
    [t] = parser.parse(wire(FIXTURES["new_bookTicker"]))  # type: ignore[misc]
    assert t == Ticker(
        "BTC/USD",
        timestamp=1751508438600,  # E is nanoseconds
        bid="45000.50",
        bid_volume="1.25000000",
        ask="45001.00",
        ask_volume="0.75000000",
    )


def test_depth_update_fixture(parser: GeminiParser) -> None:
    msg = wire(FIXTURES["new_depth_update"])
    [d] = parser.parse(msg)  # type: ignore[misc]
    assert isinstance(d, BookDelta)
    assert (d.symbol, d.first_id, d.nonce, d.timestamp) == (
        "BTC/USD",
        12345677,
        12345678,
        1751508260659,
    )
    assert d.bids == [["45000.50", "1.25000000"], ["45000.25", "0.00000000"]]
    assert d.asks is msg["a"]  # passed through without copying


def test_trade_fixture(parser: GeminiParser) -> None:
    [t] = parser.parse(wire(FIXTURES["new_trade_conformance_frame"]))  # type: ignore[misc]
    # m=true: the buyer was the maker, so the taker sold
    assert t == Trade("BTC/USD", "123456789", 1700000000000, "1000.00", "0.25", "sell", "taker")
    frame = dict(FIXTURES["new_trade_conformance_frame"], m=False)
    [t] = parser.parse(wire(frame))  # type: ignore[misc]
    assert t.side == "buy"


def test_large_update_ids_stay_exact(parser: GeminiParser) -> None:
    raw = json.dumps(FIXTURES["new_depth_update_large_ids"]).encode()
    assert b"9007199254740993" in raw
    for decoded in (orjson.loads(raw), gemini.decode(raw)):
        [d] = parser.parse(decoded)  # type: ignore[misc]
        # upper-case 's' (allowed by Gemini's conformance suite) maps too
        assert d.symbol == "BTC/USD"
        assert (d.first_id, d.nonce) == (9007199254740993, 9007199254740994)
        assert type(d.nonce) is int and str(d.nonce) == "9007199254740994"


def test_ids_beyond_orjson_range_are_refused_not_rounded(parser: GeminiParser) -> None:
    big = 2**64 + 1
    raw = json.dumps(dict(FIXTURES["new_depth_update_large_ids"], U=big, u=big)).encode()
    assert isinstance(orjson.loads(raw)["u"], float)  # orjson's silent fallback
    with pytest.raises(MalformedMessage):
        parser.parse(orjson.loads(raw))
    [d] = parser.parse(gemini.decode(raw))  # type: ignore[misc]
    assert d.nonce == big


def test_partial_depth_fixture(parser: GeminiParser) -> None:
    msg = wire(FIXTURES["new_partial_depth"])
    assert isinstance(parser.parse(msg), Unknown)  # names no symbol
    snap = gemini.parse_depth_reply("BTC/USD", msg)
    assert snap == BookSnapshot(
        "BTC/USD",
        [["45000.50", "1.25000000"], ["45000.25", "0.50000000"]],
        [["45001.00", "0.75000000"], ["45001.25", "2.00000000"]],
        12345678,
        None,
    )
    # a book frame that names its symbol (a subscribe-snapshot shape) is routed
    assert parser.parse(dict(msg, s="btcusd")) == [snap]
    assert isinstance(parser.parse(dict(msg, s="dogeusd")), Unknown)
    wrapped = {"stream": "btcusd@depth10@100ms", "data": msg}
    assert parser.parse(wrapped) == [snap]
    reply = {"id": 7, "status": 200, "result": msg}
    parsed = parser.parse(reply)
    assert isinstance(parsed, GeminiReply) and parsed.ok
    assert gemini.parse_depth_reply("BTC/USD", reply) == snap
    assert gemini.parse_depth_reply("BTC/USD", parsed) == snap


def test_subscribe_fixture_shape() -> None:
    fixture = FIXTURES["new_subscribe"]
    sent = json.loads(GeminiWireRules().subscribe_message(fixture["params"], 1))
    assert sent == {"id": 1, "method": "subscribe", "params": ["btcusd@bookTicker"]}
    assert sent["method"].lower() == fixture["method"]


def test_v1_fixtures() -> None:
    p = GeminiV1Parser("BTC/USD")
    upd = p.parse(wire(FIXTURES["v1_update_change"]))
    assert isinstance(upd, V1Update)
    assert (upd.socket_sequence, upd.event_id, upd.timestamp) == (661, 36902233362, 1619769673527)
    assert upd.snapshot is None
    assert upd.delta == BookDelta(
        "BTC/USD", [("54350.40", "0.002")], [], 36902233362, None, None, 1619769673527
    )
    assert p.parse(wire(FIXTURES["v1_heartbeat"])) == V1Heartbeat(1656)


def test_v1_numbers_rendered_exactly() -> None:
    # Gemini's AsyncAPI rendering shows the v1 decimals as numbers
    msg = copy.deepcopy(FIXTURES["v1_update_change"])
    ev = msg["events"][0]
    ev["price"], ev["remaining"] = 54350.4, 2e-8
    upd = GeminiV1Parser("BTC/USD").parse(gemini.decode(json.dumps(msg)))
    assert isinstance(upd, V1Update) and upd.delta is not None
    assert upd.delta.bids == [("54350.4", "0.00000002")]


def test_v1_trade_and_initial_events() -> None:
    p = GeminiV1Parser("BTC/USD")
    initial = {
        "type": "update",
        "eventId": 5375461993,
        "socket_sequence": 0,
        "events": [
            {"type": "change", "reason": "initial", "price": "3641.61", "delta": "0.83372051",
             "remaining": "0.83372051", "side": "bid"},
            {"type": "change", "reason": "initial", "price": "3641.62", "delta": "4.072",
             "remaining": "4.072", "side": "ask"},
        ],
    }  # fmt: skip
    upd = p.parse(initial)
    assert isinstance(upd, V1Update) and upd.delta is None and upd.timestamp is None
    assert upd.snapshot == BookSnapshot(
        "BTC/USD", [("3641.61", "0.83372051")], [("3641.62", "4.072")], 5375461993, None
    )
    trade = {
        "type": "update", "eventId": 5375547515, "timestamp": 1547760288,
        "timestampms": 1547760288001, "socket_sequence": 15,
        "events": [
            {"type": "trade", "tid": 5375547515, "price": "3632.54", "amount": "0.1362819142",
             "makerSide": "ask"},
            {"type": "change", "side": "ask", "price": "3632.54", "remaining": "0",
             "delta": "-0.1362819142", "reason": "trade"},
            {"type": "auction_indicative", "eid": 1},
        ],
    }  # fmt: skip
    upd = p.parse(trade)
    assert isinstance(upd, V1Update)
    assert upd.trades == (
        Trade("BTC/USD", "5375547515", 1547760288001, "3632.54", "0.1362819142", "buy", "taker"),
    )
    assert upd.delta is not None and upd.delta.asks == [("3632.54", "0")]
    assert upd.other == 1
    trade["events"][0]["makerSide"] = "bid"
    assert p.parse(trade).trades[0].side == "sell"  # type: ignore[union-attr]
    trade["events"][0]["makerSide"] = "auction"
    assert p.parse(trade).trades[0].side is None  # type: ignore[union-attr]


# ---------------------------------------------------------------------------
# Signing vector
# ---------------------------------------------------------------------------


def test_rest_signature_vector() -> None:
    headers = gemini.private_headers(
        SIGNATURE["api_key"], SIGNATURE["secret"], SIGNATURE["payload_json"]
    )
    assert headers["X-GEMINI-PAYLOAD"] == SIGNATURE["payload_base64"]
    assert headers["X-GEMINI-SIGNATURE"] == SIGNATURE["expected"] == SIGNATURE["published_expected"]
    assert headers["X-GEMINI-APIKEY"] == "mykey"
    assert SIGNATURE["secret"] not in "".join(headers.values())
    assert gemini.sign(SIGNATURE["secret"], SIGNATURE["payload_base64"]) == SIGNATURE["expected"]
    # one changed character of the payload text changes the signature
    assert (
        gemini.sign(SIGNATURE["secret"], SIGNATURE["payload_base64"][:-1] + "A")
        != SIGNATURE["expected"]
    )


def test_ws_auth_headers() -> None:
    h = gemini.ws_auth_headers("account-abc", "secret", 1700000000)
    assert h["X-GEMINI-NONCE"] == "1700000000"
    assert h["X-GEMINI-PAYLOAD"] == "MTcwMDAwMDAwMA=="
    assert h["X-GEMINI-SIGNATURE"] == gemini.sign("secret", "MTcwMDAwMDAwMA==")
    with pytest.raises(BadRequest):
        gemini.ws_auth_headers("k", "s", 1700000000000.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# URLs and topics
# ---------------------------------------------------------------------------


def test_resolve_urls() -> None:
    assert gemini.resolve_urls() == dict(gemini.DEFAULT_URLS)
    urls = gemini.resolve_urls({"ws": "ws://127.0.0.1:9000/", "rest": "http://127.0.0.1:9001"})
    assert urls["ws"] == "ws://127.0.0.1:9000"
    assert urls["rest"] == "http://127.0.0.1:9001"
    assert urls["v1"] == gemini.DEFAULT_URLS["v1"]
    assert gemini.resolve_urls(gemini.SANDBOX_URLS)["rest"] == "https://api.sandbox.gemini.com"
    with pytest.raises(BadRequest, match="'ws', 'v1', 'rest'"):
        gemini.resolve_urls({"stream": "wss://x"})
    with pytest.raises(BadRequest, match="must start with"):
        gemini.resolve_urls({"ws": "https://x"})
    with pytest.raises(BadRequest):
        gemini.resolve_urls({"rest": "wss://x"})


def test_ws_and_v1_urls() -> None:
    assert gemini.ws_url("wss://ws.gemini.com") == "wss://ws.gemini.com?snapshot=-1"
    assert gemini.ws_url("ws://127.0.0.1:1/", snapshot=100) == "ws://127.0.0.1:1?snapshot=100"
    assert gemini.ws_url("wss://ws.gemini.com", snapshot=None) == "wss://ws.gemini.com"
    base = gemini.DEFAULT_URLS["v1"]
    assert gemini.v1_url(base, "btcusd") == f"{base}/BTCUSD?heartbeat=true"
    assert gemini.v1_url(base, "BTCUSD", heartbeat=False) == f"{base}/BTCUSD"
    assert gemini.v1_url(base, "btcusd", trades=True, bids=True) == (
        f"{base}/BTCUSD?heartbeat=true&bids=true&offers=false&trades=true&auctions=false"
    )
    with pytest.raises(BadRequest):
        gemini.v1_url(base, "btc/usd")


def test_topics_follow_conformance() -> None:
    assert gemini.trade_topic(" BTCUSD ") == "btcusd@trade"
    assert gemini.book_ticker_topic("BTCUSD") == "btcusd@bookTicker"
    assert gemini.depth_topic("BTCUSD", 1000) == "btcusd@depth"
    assert gemini.depth_topic("BTCUSD") == "btcusd@depth@100ms"
    assert gemini.partial_depth_topic("BTCUSD") == "btcusd@depth20"
    assert gemini.partial_depth_topic("ethusd", 5, 100) == "ethusd@depth5@100ms"
    for bad in (lambda: gemini.depth_topic("BTCUSD", 250),
                lambda: gemini.partial_depth_topic("x", 7),
                lambda: gemini.trade_topic("btc usd"), lambda: gemini.trade_topic("")):  # fmt: skip
        with pytest.raises(BadRequest):
            bad()


# ---------------------------------------------------------------------------
# Wire rules
# ---------------------------------------------------------------------------


def test_wire_rules() -> None:
    rules = GeminiWireRules()
    assert isinstance(rules, WireRules)
    assert isinstance(GeminiV1WireRules(), WireRules)
    msg = json.loads(rules.unsubscribe_message(["btcusd@trade", "ethusd@depth"], 9))
    assert msg == {"id": 9, "method": "unsubscribe", "params": ["btcusd@trade", "ethusd@depth"]}
    with pytest.raises(BadRequest):
        rules.subscribe_message([], 1)
    with pytest.raises(BadRequest):
        rules.subscribe_message(["not a stream"], 1)
    with pytest.raises(BadRequest):
        rules.subscribe_message([f"s{i}@trade" for i in range(101)], 1)
    assert rules.control_reply({"id": 3, "status": 200, "result": None}) == ControlReply(3, True)
    refused = rules.control_reply(
        {"id": 4, "status": 400, "error": {"code": -1, "msg": "bad stream"}}
    )
    assert refused is not None and not refused.ok and "bad stream" in (refused.error or "")
    assert rules.control_reply({"id": "5", "status": 200}) == ControlReply(5, True)
    assert rules.control_reply(FIXTURES["new_depth_update"]) is None
    assert rules.control_reply([1, 2]) is None
    hb = rules.heartbeat
    assert hb is not None and json.loads(hb.payload) == {"id": "ping", "method": "ping"}
    assert rules.decode is None
    assert GeminiWireRules(decode=gemini.decode).decode is gemini.decode


def test_v1_wire_rules_have_no_control() -> None:
    rules = GeminiV1WireRules()
    with pytest.raises(NotSupported):
        rules.subscribe_message(["x@y"], 1)
    with pytest.raises(NotSupported):
        rules.unsubscribe_message(["x@y"], 1)
    assert rules.heartbeat is None and rules.control_reply({"id": 1, "result": 1}) is None


def test_replies_and_pong(parser: GeminiParser) -> None:
    assert isinstance(parser.parse({"id": "ping", "status": 200, "result": {}}), Pong)
    reply = parser.parse({"id": 12, "status": 429, "error": {"code": 429, "msg": "slow down"}})
    assert isinstance(reply, GeminiReply) and not reply.ok
    err = reply.exception()
    assert isinstance(err, RateLimitExceeded) and "slow down" in str(err)
    bad = parser.parse({"id": 13, "status": 400, "error": {"code": 2, "msg": "unknown stream"}})
    assert isinstance(bad, GeminiReply) and isinstance(bad.exception(), SubscriptionError)
    subs = parser.parse({"id": 14, "status": 200, "result": ["btcusd@trade"]})
    assert isinstance(subs, GeminiReply) and subs.ok and subs.result == ["btcusd@trade"]
    assert json.loads(gemini.depth_message("BTCUSD", 15, 50)) == {
        "id": 15, "method": "depth", "params": {"symbol": "btcusd", "limit": 50},
    }  # fmt: skip
    assert json.loads(gemini.list_subscriptions_message(16))["method"] == "list_subscriptions"
    with pytest.raises(RateLimitExceeded):
        gemini.parse_depth_reply("BTC/USD", reply)


def test_unknown_outcomes(parser: GeminiParser) -> None:
    assert isinstance(parser.parse({"e": "orderUpdate", "s": "btcusd"}), Unknown)
    other = dict(FIXTURES["new_depth_update"], s="dogeusd")
    assert isinstance(parser.parse(other), Unknown)
    assert isinstance(parser.parse({"hello": 1}), Unknown)
    assert isinstance(parser.parse({"stream": "dogeusd@trade", "data": {}}), Unknown)


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def test_markets_from_symbol_details(index: MarketIndex) -> None:
    btc = index.market("BTC/USD")
    assert (btc.id, btc.base, btc.quote, btc.active) == ("BTCUSD", "BTC", "USD", True)
    # Gemini's quote_increment is the price tick, its tick_size the amount step
    assert (btc.tick_size, btc.amount_step) == ("0.01", "0.00000001")
    assert (btc.price_precision, btc.amount_precision) == (2, 8)
    assert index.market("ETH/USD").amount_step == "0.000001"
    perp = index.market("BTC/GUSD:GUSD")
    assert perp.id == "BTCGUSDPERP" and not perp.active
    assert index.id_of("BTC/USD") == "BTCUSD"
    with pytest.raises(BadSymbol):
        index.market("DOGE/USD")


def test_symbol_details_json_numbers_exact() -> None:
    raw = json.dumps(BTC_DETAILS).replace("1e-08", "1e-8").encode()
    for decoded in (orjson.loads(raw), gemini.decode(raw)):
        m = gemini.parse_symbol_details(decoded)
        assert (m.tick_size, m.amount_step) == ("0.01", "0.00000001")
    assert type(gemini.decode(raw)["tick_size"]) is Decimal
    assert gemini.parse_symbols(["btcusd", "ethusd"]) == ["BTCUSD", "ETHUSD"]
    for bad in ([1], {"symbols": []}, [""]):
        with pytest.raises(MalformedMessage):
            gemini.parse_symbols(bad)
    with pytest.raises(MalformedMessage):
        gemini.parse_symbol_details({"symbol": "BTCUSD"})
    with pytest.raises(MalformedMessage):
        gemini.parse_symbol_details(dict(BTC_DETAILS, quote_increment="abc"))


def test_conformance_json_decoding() -> None:
    assert gemini.plain_decimal(gemini.decode('{"v":0.00000001}')["v"]) == "0.00000001"
    assert gemini.decode('{"v":9007199254740993}')["v"] == 9007199254740993
    assert gemini.plain_decimal(Decimal("1E+2")) == "100"
    assert gemini.plain_decimal("45000.50") == "45000.50"
    assert gemini.plain_decimal("1e-8") == "0.00000001"
    assert gemini.plain_decimal(0.1) == "0.1"
    for bad in ("NaN", True, None, "abc", Decimal("Infinity")):
        with pytest.raises(ValueError):
            gemini.plain_decimal(bad)
    with pytest.raises(ValueError):
        gemini.decode('{"v": NaN}')


# ---------------------------------------------------------------------------
# REST requests and answers
# ---------------------------------------------------------------------------


def test_rest_requests() -> None:
    assert gemini.symbols_request() == RestRequest("GET", "/v1/symbols")
    assert gemini.symbol_details_request("BTCUSD").path == "/v1/symbols/details/btcusd"
    book = gemini.book_request("BTCUSD", limit_bids=1, limit_asks=1)
    assert book.url("https://api.gemini.com") == (
        "https://api.gemini.com/v1/book/btcusd?limit_bids=1&limit_asks=1"
    )
    assert gemini.book_request("BTCUSD").params == {}
    assert gemini.pubticker_request("btcusd").path == "/v1/pubticker/BTCUSD"
    assert gemini.ticker_request("BTCUSD").path == "/v2/ticker/btcusd"
    assert gemini.candles_request("BTCUSD", "1h").path == "/v2/candles/btcusd/1hr"
    assert gemini.candles_request("BTCUSD", "1d").path == "/v2/candles/btcusd/1day"
    trades = gemini.trades_request("BTCUSD", 500, since_tid=7, include_breaks=True)
    assert trades.query_string() == "since_tid=7&limit_trades=500&include_breaks=true"
    for bad in (lambda: gemini.trades_request("BTCUSD", 501),
                lambda: gemini.candles_request("BTCUSD", "4h"),
                lambda: gemini.book_request("BTCUSD", limit_bids=-1)):  # fmt: skip
        with pytest.raises(BadRequest):
            bad()


def test_rest_book_and_trades() -> None:
    book = gemini.parse_order_book(
        "BTC/USD",
        {
            "bids": [{"price": "3607.85", "amount": "6.643373", "timestamp": "1547147541"}],
            "asks": [{"price": "3609.31", "amount": "2.5", "timestamp": "1547147541"}],
        },
    )
    assert book == BookSnapshot(
        "BTC/USD", [("3607.85", "6.643373")], [("3609.31", "2.5")], None, None
    )
    rows = [
        {"timestamp": 1547146812, "timestampms": 1547146812000, "tid": 5335307669,
         "price": "3610.85", "amount": "0.1", "exchange": "gemini", "type": "sell"},
        {"timestamp": 1547146811, "timestampms": 1547146811357, "tid": 5335307668,
         "price": "3610.85", "amount": "0.27413495", "exchange": "gemini", "type": "buy"},
        {"timestamp": 1547146811, "tid": 5335307667, "price": "3610.80", "amount": "1",
         "exchange": "gemini", "type": "auction"},
        {"timestamp": 1547146813, "timestampms": 1547146813000, "tid": 5335307670,
         "price": "3611", "amount": "1", "exchange": "gemini", "type": "buy", "broken": True},
    ]  # fmt: skip
    trades = gemini.parse_rest_trades("BTC/USD", rows)
    assert [t.id for t in trades] == ["5335307667", "5335307668", "5335307669"]
    assert [t.side for t in trades] == [None, "buy", "sell"]
    assert trades[0].timestamp == 1547146811000 and trades[0].taker_or_maker is None
    assert len(gemini.parse_rest_trades("BTC/USD", rows, keep_broken=True)) == 4
    with pytest.raises(MalformedMessage):
        gemini.parse_rest_trades("BTC/USD", [dict(rows[0], type="swap")])


def test_rest_candles_exact() -> None:
    raw = (
        b"[[1559755800000,7781.6,7820.23,7776.56,7819.39,34.7624802159],"
        b"[1559755500000,7779.14,7786.34,7770,7781.6,13.1]]"
    )
    candles = gemini.parse_candles("BTC/USD", "5m", gemini.decode(raw))
    assert candles == [
        Candle("BTC/USD", "5m", 1559755500000, "7779.14", "7786.34", "7770", "7781.6", "13.1",
               True),
        Candle("BTC/USD", "5m", 1559755800000, "7781.6", "7820.23", "7776.56", "7819.39",
               "34.7624802159", False),
    ]  # fmt: skip
    assert gemini.parse_candles("BTC/USD", "5m", orjson.loads(raw)) == candles
    later = gemini.parse_candles("BTC/USD", "5m", gemini.decode(raw), now_ms=1559756100000)
    assert all(c.closed for c in later)
    with pytest.raises(MalformedMessage):
        gemini.parse_candles("BTC/USD", "5m", [[1, 2, 3]])


def test_rest_tickers(index: MarketIndex) -> None:
    t = gemini.parse_ticker(
        "BTC/USD",
        {"symbol": "BTCUSD", "open": "9121.76", "high": "9440.66", "low": "9106.51",
         "close": "9347.66", "changes": ["9365.1"], "bid": "9345.70", "ask": "9347.67"},
    )  # fmt: skip
    assert (t.open, t.high, t.low, t.close, t.last, t.bid, t.ask) == (
        "9121.76", "9440.66", "9106.51", "9347.66", "9347.66", "9345.70", "9347.67",
    )  # fmt: skip
    p = gemini.parse_pubticker(
        index.market("BTC/USD"),
        {"ask": "977.59", "bid": "977.35", "last": "977.65",
         "volume": {"BTC": "2210.505328803", "USD": "2135477.463379586263",
                    "timestamp": 1483018200000}},
    )  # fmt: skip
    assert (p.base_volume, p.quote_volume, p.timestamp, p.last) == (
        "2210.505328803", "2135477.463379586263", 1483018200000, "977.65",
    )  # fmt: skip


# ---------------------------------------------------------------------------
# REST errors
# ---------------------------------------------------------------------------


def test_rate_limit_with_retry_after() -> None:
    # conformance/http/errors/rate-limited-429-retry-after.json
    body = '{"result":"error","reason":"RateLimit","message":"Rate limit exceeded"}'
    for headers in ({"content-type": "application/json", "retry-after": "3"},
                    Headers({b"Retry-After": [b"3"]})):  # fmt: skip
        err = gemini.parse_rest_error(429, headers, body)
        assert isinstance(err, RateLimitExceeded)
        assert err.retry_after == 3.0
        assert err.reason == "RateLimit" and err.status == 429  # type: ignore[attr-defined]
    assert gemini.parse_rest_error(429, {"retry-after": "soon"}, b"").retry_after is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (500, "upstream unavailable", ExchangeNotAvailable),
        (503, '{"result":"error","reason":"Maintenance","message":"down"}', ExchangeNotAvailable),
        (502, b"", ExchangeNotAvailable),
        (400, '{"result":"error","reason":"InvalidSymbol","message":"no such symbol"}', BadSymbol),
        (400, '{"result":"error","reason":"InvalidNonce","message":"nonce"}', InvalidNonce),
        (400, '{"result":"error","reason":"InvalidSignature"}', AuthenticationError),
        (403, '{"result":"error","reason":"MissingRole"}', PermissionDenied),
        (403, '{"error":{"reason":"MissingRole"}}', PermissionDenied),
        (404, b"", BadRequest),
        (400, '{"result":"error","reason":"SomethingNew"}', BadRequest),
        (401, "", AuthenticationError),
    ],
)
def test_rest_error_mapping(status: int, body: Any, cls: type[Exception]) -> None:
    err = gemini.parse_rest_error(status, None, body)
    assert type(err) is cls
    assert f"HTTP {status}" in str(err)


# ---------------------------------------------------------------------------
# Current-API book sync
# ---------------------------------------------------------------------------


def delta(
    first: int, last: int, bids: Any = (), asks: Any = (), symbol: str = "BTC/USD"
) -> BookDelta:
    return BookDelta(symbol, list(bids), list(asks), last, first)


def snap(last: int, bids: Any = (), asks: Any = ()) -> BookSnapshot:
    return BookSnapshot("BTC/USD", list(bids), list(asks), last)


def test_snapshot_on_subscribe_then_overlapping_chain() -> None:
    s = GeminiBookSync("BTC/USD")
    s.expect_snapshot()
    a = s.on_delta(delta(100, 100, [("10", "1"), ("9", "0")], [("11", "2")]))
    assert isinstance(a, ApplySnapshot) and a.book_id == 100 and a.deltas == ()
    assert a.snapshot.bids == [("10", "1")]  # zero levels are not part of a snapshot
    assert s.state == "synced" and s.book_id == 100 and not s.expecting_snapshot
    # Gemini's stream overlaps: the next U equals the previous u
    assert isinstance(s.on_delta(delta(100, 103)), ApplyDelta)
    assert isinstance(s.on_delta(delta(103, 103 + 1)), ApplyDelta)
    assert s.on_delta(delta(90, 104)) == Ignore("stale: u <= book id")
    # a diff reaching back before the book id but past it is applied
    assert isinstance(s.on_delta(delta(101, 110)), ApplyDelta)
    r = s.on_delta(delta(111, 112))  # U > book id: a diff was missed
    assert isinstance(r, Resync) and r.first_update_id == 111
    assert s.state == "waiting" and s.fetching and s.buffered == (delta(111, 112),)


def test_binance_style_chain_is_optional() -> None:
    strict = GeminiBookSync("BTC/USD")
    loose = GeminiBookSync("BTC/USD", contiguous=True)
    for s in (strict, loose):
        s.expect_snapshot()
        s.on_delta(delta(50, 50))
    assert isinstance(strict.on_delta(delta(51, 52)), Resync)
    assert isinstance(loose.on_delta(delta(51, 52)), ApplyDelta)
    assert isinstance(loose.on_delta(delta(54, 55)), Resync)


def test_no_snapshot_on_subscribe_falls_back_to_depth_request() -> None:
    s = GeminiBookSync("BTC/USD")
    s.expect_snapshot()
    a = s.on_delta(delta(200, 205))  # U != u: no ?snapshot= on this connection
    assert a == NeedSnapshot(200) and s.fetching
    assert s.on_delta(delta(205, 207)) == Buffer(200, 2)
    assert s.on_delta(delta(206, 207)) == Ignore(
        "duplicate or out of order while buffering: u <= last buffered u"
    )
    assert s.on_delta(delta(207, 209)) == Buffer(200, 3)
    # a snapshot older than the first buffered diff cannot be joined
    assert s.on_snapshot(snap(150)) == SnapshotTooOld(150, 200)
    # a joinable one: diffs it covers are dropped, the rest replayed in order
    a = s.on_snapshot(snap(206, [("10", "1")]))
    assert isinstance(a, ApplySnapshot)
    assert [d.nonce for d in a.deltas] == [207, 209] and a.book_id == 209
    assert s.book_id == 209 and not s.fetching
    # a snapshot arriving afterwards: stale (older than the book) or just late
    assert s.on_snapshot(snap(100)).reason.startswith("stale snapshot")  # type: ignore[union-attr]
    assert s.on_snapshot(snap(300)) == Ignore("book already synced; snapshot not needed")


def test_expected_snapshot_may_come_as_a_book_frame() -> None:
    s = GeminiBookSync("BTC/USD")
    s.expect_snapshot()
    a = s.on_snapshot(snap(40, [("10", "1")]))
    assert isinstance(a, ApplySnapshot) and a.book_id == 40 and not s.expecting_snapshot
    # the next diff is a diff, not taken for a snapshot
    assert isinstance(s.on_delta(delta(40, 41)), ApplyDelta)


def test_snapshot_first_then_diffs() -> None:
    s = GeminiBookSync("BTC/USD")
    a = s.on_snapshot(snap(10))
    assert isinstance(a, ApplySnapshot) and a.book_id == 10
    assert isinstance(s.on_delta(delta(10, 12)), ApplyDelta)
    assert isinstance(s.on_delta(delta(13, 14)), Resync)


def test_buffer_restarts_on_gap_and_limit() -> None:
    s = GeminiBookSync("BTC/USD", max_buffer=2)
    assert s.on_delta(delta(1, 2)) == NeedSnapshot(1)
    assert s.on_delta(delta(5, 6)) == Buffer(5, 1, restarted=True)  # gap between buffered diffs
    assert s.on_delta(delta(6, 7)) == Buffer(5, 2)
    assert s.on_delta(delta(7, 8)) == Buffer(7, 1, restarted=True)  # limit
    with pytest.raises(BadRequest):
        GeminiBookSync("x", max_buffer=0)


def test_sync_rejects_wrong_inputs() -> None:
    s = GeminiBookSync("BTC/USD")
    with pytest.raises(ProtocolViolation):
        s.on_delta(BookDelta("BTC/USD", [], [], 5, None))
    with pytest.raises(ProtocolViolation):
        s.on_delta(delta(9, 5))
    with pytest.raises(BadRequest):
        s.on_delta(delta(1, 2, symbol="ETH/USD"))
    with pytest.raises(ProtocolViolation):
        s.on_snapshot(BookSnapshot("BTC/USD", [], [], None))
    with pytest.raises(BadRequest):
        s.on_snapshot(BookSnapshot("ETH/USD", [], [], 1))


def test_verify_flags_a_crossed_book() -> None:
    s = GeminiBookSync("BTC/USD")
    book = OrderBook("BTC/USD")
    s.expect_snapshot()
    a = s.on_delta(delta(1, 1, [("100", "1")], [("101", "1")]))
    assert isinstance(a, ApplySnapshot)
    book.apply_snapshot(a.snapshot)
    assert s.verify(book.top) is None
    d = s.on_delta(delta(1, 2, [("102", "1")]))
    assert isinstance(d, ApplyDelta)
    book.apply_delta(d.delta)
    r = s.verify(book.top)
    assert isinstance(r, Resync) and "crossed" in r.reason
    assert s.state == "waiting" and s.fetching
    assert s.verify(book.top) is None  # nothing to verify while waiting


def test_unknown_level_delete_is_tolerated() -> None:
    s = GeminiBookSync("BTC/USD")
    book = OrderBook("BTC/USD")
    s.expect_snapshot()
    a = s.on_delta(delta(1, 1, [("100", "1")], [("101", "1")]))
    assert isinstance(a, ApplySnapshot)
    book.apply_snapshot(a.snapshot)
    d = s.on_delta(delta(1, 2, [("99.5", "0"), ("100", "2")], [("150", "0.000")]))
    assert isinstance(d, ApplyDelta)
    book.apply_delta(d.delta)
    out = book.snapshot()
    assert out.bids == (("100", "2"),) and out.asks == (("101", "1"),) and not book.stale


def _simulate(
    rng: random.Random, steps: int
) -> tuple[dict[str, str], dict[str, str], list[BookDelta]]:
    """A random market: each diff covers (U, u] with U = previous u (Gemini's overlap)."""
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    diffs = []
    uid = 1000
    for _ in range(steps):
        db: dict[str, str] = {}
        da: dict[str, str] = {}
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.5:
                price = f"{rng.randint(90, 99)}.{rng.randint(0, 9)}"
                side, target = bids, db
            else:
                price = f"{rng.randint(101, 110)}.{rng.randint(0, 9)}"
                side, target = asks, da
            amount = "0" if rng.random() < 0.3 else f"{rng.randint(1, 50)}.{rng.randint(0, 99):02d}"
            target[price] = amount
            if amount == "0":
                side.pop(price, None)
            else:
                side[price] = amount
        first = uid
        uid += rng.randint(1, 3)
        diffs.append(BookDelta("BTC/USD", sorted(db.items()), sorted(da.items()), uid, first))
    return bids, asks, diffs


@pytest.mark.parametrize("seed", range(5))
def test_simulated_stream_rebuilds_the_book(seed: int) -> None:
    rng = random.Random(seed)
    bids, asks, diffs = _simulate(rng, 300)
    s = GeminiBookSync("BTC/USD")
    book = OrderBook("BTC/USD")
    s.expect_snapshot()
    start = s.on_delta(BookDelta("BTC/USD", [], [], 1000, 1000))
    assert isinstance(start, ApplySnapshot)
    book.apply_snapshot(start.snapshot)
    for d in diffs:
        action = s.on_delta(d)
        assert isinstance(action, ApplyDelta)
        book.apply_delta(action.delta)
        assert s.verify(book.top) is None
    out = book.snapshot()
    assert dict(out.bids) == bids and dict(out.asks) == asks
    assert out.nonce == diffs[-1].nonce


@pytest.mark.parametrize("seed", range(5))
def test_simulated_stream_with_a_lost_diff_resyncs(seed: int) -> None:
    rng = random.Random(100 + seed)
    _, _, diffs = _simulate(rng, 50)
    lost = rng.randrange(1, 49)
    s = GeminiBookSync("BTC/USD")
    s.on_snapshot(BookSnapshot("BTC/USD", [], [], 1000))
    verdicts = [s.on_delta(d) for i, d in enumerate(diffs) if i != lost]
    assert isinstance(verdicts[lost], Resync)
    assert all(isinstance(v, ApplyDelta) for v in verdicts[:lost])


# ---------------------------------------------------------------------------
# Legacy v1 sync
# ---------------------------------------------------------------------------


def v1(seq: int, events: list[dict[str, Any]], event_id: int = 1) -> dict[str, Any]:
    return {"type": "update", "eventId": event_id, "timestamp": 1, "timestampms": 1000,
            "socket_sequence": seq, "events": events}  # fmt: skip


def change(side: str, price: str, remaining: str, reason: str = "place") -> dict[str, Any]:
    return {"type": "change", "side": side, "price": price, "remaining": remaining,
            "delta": remaining, "reason": reason}  # fmt: skip


def test_v1_sequence_and_book() -> None:
    p = GeminiV1Parser("BTC/USD")
    s = GeminiV1Sync("BTC/USD")
    book = OrderBook("BTC/USD")
    first = s.on_message(p.parse(v1(0, [change("bid", "10", "1", "initial"),  # type: ignore[arg-type]
                                        change("ask", "11", "2", "initial")], 7)))  # fmt: skip
    assert isinstance(first, ApplySnapshot) and first.book_id == 7
    book.apply_snapshot(first.snapshot)
    assert s.on_message(p.parse({"type": "heartbeat", "socket_sequence": 1})) == Ignore("heartbeat")  # type: ignore[arg-type]
    a = s.on_message(
        p.parse(v1(2, [change("bid", "10", "0", "cancel"), change("bid", "9", "3")], 8))
    )  # type: ignore[arg-type]
    assert isinstance(a, ApplyDelta)
    book.apply_delta(a.delta)
    assert book.snapshot().bids == (("9", "3"),) and book.nonce == 8
    # trade-only update: no book change
    trade = {"type": "trade", "tid": 1, "price": "11", "amount": "1", "makerSide": "ask"}
    assert s.on_message(p.parse(v1(3, [trade]))) == Ignore("no book change")  # type: ignore[arg-type]
    # a skipped socket_sequence means missed data: reconnect
    r = s.on_message(p.parse(v1(5, [change("ask", "12", "1")])))  # type: ignore[arg-type]
    assert isinstance(r, Reconnect) and "expected 4" in r.reason
    assert s.state == "waiting" and s.expected_sequence == 0


def test_v1_change_before_initial_reconnects() -> None:
    p = GeminiV1Parser("BTC/USD")
    s = GeminiV1Sync("BTC/USD")
    r = s.on_message(p.parse(v1(0, [change("bid", "10", "1")])))  # type: ignore[arg-type]
    assert isinstance(r, Reconnect)
    s.reset()
    assert isinstance(
        s.on_message(p.parse(v1(0, [change("bid", "10", "1", "initial")]))), ApplySnapshot
    )  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        GeminiV1Sync("ETH/USD").on_message(p.parse(v1(0, [change("bid", "1", "1", "initial")])))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Fuzz: malformed input raises only MalformedMessage
# ---------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.sampled_from(["btcusd", "BTCUSD", "depthUpdate", "trade", "update",
                                            "heartbeat", "change", "initial", "bid", "ask"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["e", "s", "U", "u", "b", "a", "E", "t", "p", "q", "m", "B", "A", "id",
                         "status", "result", "error", "stream", "data", "lastUpdateId", "bids",
                         "asks", "type", "events", "socket_sequence", "eventId", "timestampms",
                         "side", "price", "remaining", "reason", "tid", "amount", "makerSide"]),
        children,
        max_size=8,
    ),
    max_leaves=20,
)  # fmt: skip


def _mutations() -> list[Any]:
    out: list[Any] = []
    for name in ("new_depth_update", "new_trade_conformance_frame", "new_bookTicker",
                 "v1_update_change", "v1_heartbeat"):  # fmt: skip
        base = FIXTURES[name]
        for key in base:
            for value in (None, "x", -1, 1.5, [], {}, [["1"]], True, 2**70):
                out.append(dict(base, **{key: value}))
            out.append({k: v for k, v in base.items() if k != key})
    return out


@settings(max_examples=400, deadline=None)
@given(_json)
def test_fuzz_only_malformed(value: Any) -> None:
    index = gemini.market_index([BTC_DETAILS])
    for call in (
        lambda: GeminiParser(index).parse(value),
        lambda: GeminiV1Parser("BTC/USD").parse(value),
        lambda: gemini.parse_depth_reply("BTC/USD", value),
        lambda: gemini.parse_order_book("BTC/USD", value),
        lambda: gemini.parse_rest_trades("BTC/USD", value),
        lambda: gemini.parse_candles("BTC/USD", "1m", value),
        lambda: gemini.parse_symbol_details(value),
        lambda: gemini.parse_ticker("BTC/USD", value),
    ):
        try:
            call()
        except MalformedMessage:
            pass
        except (RateLimitExceeded, SubscriptionError, BadRequest, ExchangeNotAvailable,
                AuthenticationError) as e:  # fmt: skip
            # a well-formed *error reply* fed to parse_depth_reply raises its typed error
            assert isinstance(value, dict) and ("error" in value or "status" in value), e


@pytest.mark.parametrize("message", _mutations())
def test_mutated_fixtures_only_malformed(message: Any, parser: GeminiParser) -> None:
    for p in (parser, GeminiV1Parser("BTC/USD")):
        with contextlib.suppress(MalformedMessage):
            p.parse(message)


def test_fuzz_can_fail() -> None:
    # the guard above is not vacuous: a bad id really is rejected
    with pytest.raises(MalformedMessage):
        GeminiParser(gemini.market_index([BTC_DETAILS])).parse(
            dict(FIXTURES["new_depth_update"], u="12")
        )
    with pytest.raises(MalformedMessage):
        GeminiV1Parser("BTC/USD").parse({"type": "heartbeat", "socket_sequence": True})
    with pytest.raises(MalformedMessage):
        GeminiParser(gemini.market_index([BTC_DETAILS])).parse([])
