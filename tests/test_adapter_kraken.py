"""Unit tests for the pure Kraken Spot WebSocket v2 adapter (no reactor, no sockets).

Payloads and checksum vectors come from ``../shared/protocols/vectors.json``
(Kraken's own documented examples); the rest is written in the shapes the
Kraken docs show, and book streams are built by hand or by a small model of
Kraken's depth-limited book (deltas inside the subscribed depth only, CRC32
of the top 10 after truncation).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from txexchange.adapters import ServerShutdown, Unknown, kraken
from txexchange.adapters.kraken import (
    ApplyDelta,
    ApplySnapshot,
    Ignore,
    Instruments,
    KrakenBookMessage,
    KrakenBookSync,
    KrakenError,
    KrakenHeartbeat,
    Pong,
    Resync,
    SnapshotTooOld,
    SystemStatus,
    kraken_checksum,
    kraken_checksum_string,
    render_decimal,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import DecodeError
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
    SubscriptionError,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import Market, MarketIndex
from txexchange.state.book import OrderBook
from txexchange.transport.rules import ControlReply, WireRules

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _load() -> dict[str, Any]:
    if not VECTORS.exists():  # pragma: no cover - the repo is checked out beside ../shared
        pytest.skip(f"{VECTORS} not found", allow_module_level=True)
    # Kraken sends JSON numbers: read the vectors the way the adapter decodes frames.
    return kraken.decode(VECTORS.read_bytes())


_DATA = _load()
FIX = {f["name"]: f for f in _DATA["fixtures"]["kraken_v2"]}
CHECKSUMS = {c["id"]: c for c in _DATA["checksums"] if c.get("exchange") == "kraken"}


def fixture_message(name: str) -> Any:
    return copy.deepcopy(FIX[name]["message"])


def _num(value: Decimal | int | str) -> str:
    """A JSON number the way Kraken writes it: no trailing zeros."""
    dec = Decimal(value)
    text = format(dec.normalize(), "f") if dec else "0"
    return text


def to_json(obj: Any) -> bytes:
    """JSON with Decimal values as bare numbers (like Kraken's wire format)."""
    if isinstance(obj, Decimal):
        return _num(obj).encode()
    if isinstance(obj, dict):
        inner = b",".join(json.dumps(k).encode() + b":" + to_json(v) for k, v in obj.items())
        return b"{" + inner + b"}"
    if isinstance(obj, (list, tuple)):
        return b"[" + b",".join(to_json(v) for v in obj) + b"]"
    return json.dumps(obj).encode()


def wire(obj: Any) -> Any:
    """Round-trip through the adapter's decoder, as the transport would."""
    return kraken.decode(to_json(obj))


# Instrument channel snapshot in the documented shape (abridged).
INSTRUMENT_MESSAGE = b"""{"channel":"instrument","type":"snapshot","data":{
 "assets":[{"id":"USD","status":"enabled","precision":4,"precision_display":2,
            "borrowable":true,"collateral_value":1.0,"margin_rate":0.015}],
 "pairs":[
  {"symbol":"BTC/USD","base":"BTC","quote":"USD","status":"online","qty_precision":8,
   "qty_increment":1e-08,"price_precision":1,"cost_precision":5,"marginable":true,
   "has_index":true,"cost_min":0.5,"tick_size":0.1,"price_increment":0.1,"qty_min":0.0001},
  {"symbol":"MATIC/USD","base":"MATIC","quote":"USD","status":"online","qty_precision":8,
   "qty_increment":1e-08,"price_precision":4,"price_increment":0.0001,"qty_min":5},
  {"symbol":"ALGO/USD","base":"ALGO","quote":"USD","status":"online","qty_precision":8,
   "qty_increment":1e-08,"price_precision":5,"price_increment":0.00001,"qty_min":5},
  {"symbol":"OLD/USD","base":"OLD","quote":"USD","status":"delisted","qty_precision":2,
   "qty_increment":0.01,"price_precision":2,"price_increment":0.01}
 ]}}"""


@pytest.fixture
def index() -> MarketIndex:
    message = kraken.decode(INSTRUMENT_MESSAGE)
    return kraken.market_index(message["data"])


@pytest.fixture
def parser(index: MarketIndex) -> kraken.KrakenParser:
    return kraken.KrakenParser(index)


# A REST AssetPairs answer in the documented shape (abridged).
ASSET_PAIRS: dict[str, Any] = {
    "error": [],
    "result": {
        "XXBTZUSD": {
            "altname": "XBTUSD",
            "wsname": "XBT/USD",
            "aclass_base": "currency",
            "base": "XXBT",
            "aclass_quote": "currency",
            "quote": "ZUSD",
            "pair_decimals": 1,
            "cost_decimals": 5,
            "lot_decimals": 8,
            "ordermin": "0.0001",
            "costmin": "0.5",
            "tick_size": "0.1",
            "status": "online",
        },
        "XDGUSD": {
            "altname": "XDGUSD",
            "wsname": "XDG/USD",
            "base": "XXDG",
            "quote": "ZUSD",
            "pair_decimals": 7,
            "lot_decimals": 8,
            "tick_size": "0.0000001",
            "status": "online",
        },
        "MATICUSD": {
            "altname": "MATICUSD",
            "wsname": "MATIC/USD",
            "base": "MATIC",
            "quote": "ZUSD",
            "pair_decimals": 4,
            "lot_decimals": 8,
            "status": "cancel_only",
        },
        "XXBTZUSD.d": {"altname": "XBTUSD.d", "base": "XXBT", "quote": "ZUSD"},
    },
}


# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------


def test_default_urls() -> None:
    urls = kraken.resolve_urls()
    assert urls == {
        "ws": "wss://ws.kraken.com/v2",
        "ws_auth": "wss://ws-auth.kraken.com/v2",
        "rest": "https://api.kraken.com",
    }
    assert urls is not kraken.DEFAULT_URLS


def test_url_overrides() -> None:
    urls = kraken.resolve_urls({"ws": "ws://127.0.0.1:9000/v2/", "rest": "http://127.0.0.1:9001"})
    assert urls["ws"] == "ws://127.0.0.1:9000/v2"
    assert urls["rest"] == "http://127.0.0.1:9001"
    assert urls["ws_auth"] == kraken.DEFAULT_URLS["ws_auth"]


def test_unknown_url_key_names_the_valid_keys() -> None:
    with pytest.raises(BadRequest) as e:
        kraken.resolve_urls({"public": "wss://x"})
    assert "'ws', 'ws_auth', 'rest'" in str(e.value)


@pytest.mark.parametrize(
    "urls",
    [{"ws": "https://ws.kraken.com/v2"}, {"rest": "wss://api.kraken.com"}, {"ws": 5}],
)
def test_url_with_wrong_scheme_is_refused(urls: Any) -> None:
    with pytest.raises(BadRequest):
        kraken.resolve_urls(urls)


# ---------------------------------------------------------------------------
# Topics and wire rules
# ---------------------------------------------------------------------------


def test_topic_builders() -> None:
    assert kraken.book_topic("BTC/USD") == "book.10:BTC/USD"
    assert kraken.book_topic("BTC/USD", 1000) == "book.1000:BTC/USD"
    assert kraken.ticker_topic("BTC/USD") == "ticker:BTC/USD"
    assert kraken.ticker_topic("BTC/USD", "bbo") == "ticker.bbo:BTC/USD"
    assert kraken.trade_topic("BTC/USD") == "trade:BTC/USD"
    assert kraken.ohlc_topic("BTC/USD", "1h") == "ohlc.60:BTC/USD"
    assert kraken.ohlc_topic("BTC/USD", "15d") == "ohlc.21600:BTC/USD"
    assert kraken.instrument_topic() == "instrument"
    assert kraken.topic_params("book.25:ETH/USD") == ({"channel": "book", "depth": 25}, "ETH/USD")
    assert kraken.topic_params("trade:ETH/USD") == (
        {"channel": "trade", "snapshot": True},
        "ETH/USD",
    )
    assert kraken.topic_params("ticker.bbo:ETH/USD") == (
        {"channel": "ticker", "event_trigger": "bbo"},
        "ETH/USD",
    )
    assert kraken.topic_params("instrument") == ({"channel": "instrument"}, None)


@pytest.mark.parametrize(
    "call",
    [
        lambda: kraken.book_topic("BTC/USD", 20),
        lambda: kraken.book_topic("BTCUSD"),
        lambda: kraken.book_topic("BTC/USD:x"),
        lambda: kraken.ticker_topic("BTC/USD", "quotes"),  # type: ignore[arg-type]
        lambda: kraken.ohlc_topic("BTC/USD", "2h"),
        lambda: kraken.topic_params("book.20:BTC/USD"),
        lambda: kraken.topic_params("ohlc.7:BTC/USD"),
        lambda: kraken.topic_params("spread:BTC/USD"),
        lambda: kraken.topic_params("trade.x:BTC/USD"),
        lambda: kraken.topic_params("book"),
        lambda: kraken.topic_params(5),  # type: ignore[arg-type]
    ],
)
def test_bad_topic_arguments(call: Any) -> None:
    with pytest.raises(BadRequest):
        call()


def test_wire_rules_satisfy_protocol() -> None:
    rules = kraken.KrakenWireRules()
    assert isinstance(rules, WireRules)
    assert rules.max_topics_per_message == 1  # one ack per symbol: one topic per request
    assert rules.replies_to_control
    assert rules.heartbeat is not None
    assert json.loads(rules.heartbeat.payload) == {"method": "ping"}
    assert rules.heartbeat.pong is None  # the JSON pong reaches the parser
    assert rules.heartbeat.idle_interval < kraken.STALL_TIMEOUT


def test_subscribe_matches_documented_requests() -> None:
    rules = kraken.KrakenWireRules(max_topics_per_message=10)
    book = json.loads(
        rules.subscribe_message(["book.10:ALGO/USD", "book.10:MATIC/USD"], request_id=7)
    )
    documented = FIX["book_subscribe"]["message"]
    assert book["method"] == documented["method"]
    assert book["params"]["channel"] == "book"
    assert book["params"]["symbol"] == documented["params"]["symbol"]
    assert book["params"]["depth"] == 10
    assert book["req_id"] == 7
    ohlc = json.loads(rules.subscribe_message(["ohlc.5:ALGO/USD", "ohlc.5:MATIC/USD"], 8))
    assert ohlc == {**FIX["ohlc_subscribe"]["message"], "req_id": 8}
    trade = json.loads(rules.subscribe_message(["trade:BTC/USD"], 9))
    assert trade["params"] == {"channel": "trade", "snapshot": True, "symbol": ["BTC/USD"]}
    unsub = json.loads(rules.unsubscribe_message(["trade:BTC/USD"], 10))
    assert unsub == {
        "method": "unsubscribe",
        "params": {"channel": "trade", "symbol": ["BTC/USD"]},
        "req_id": 10,
    }
    instrument = json.loads(rules.subscribe_message(["instrument"], 11))
    assert instrument == {"method": "subscribe", "params": {"channel": "instrument"}, "req_id": 11}
    unsub_book = json.loads(rules.unsubscribe_message(["book.100:BTC/USD"], 12))
    assert unsub_book["params"] == {"channel": "book", "depth": 100, "symbol": ["BTC/USD"]}


def test_subscribe_refuses_mixed_and_oversized_requests() -> None:
    rules = kraken.KrakenWireRules(max_topics_per_message=5)
    with pytest.raises(BadRequest):
        rules.subscribe_message(["book.10:BTC/USD", "book.25:ETH/USD"], 1)
    with pytest.raises(BadRequest):
        rules.subscribe_message(["book.10:BTC/USD", "trade:ETH/USD"], 1)
    with pytest.raises(BadRequest):
        rules.subscribe_message([], 1)
    with pytest.raises(BadRequest):
        kraken.KrakenWireRules().subscribe_message(["trade:BTC/USD", "trade:ETH/USD"], 1)
    with pytest.raises(BadRequest):
        rules.subscribe_message(["trade:BTC/USD"], "1")  # type: ignore[arg-type]


def test_control_replies_are_matched_by_req_id() -> None:
    rules = kraken.KrakenWireRules()
    ack = {**fixture_message("book_subscribe_ack"), "req_id": 4}
    assert rules.control_reply(ack) == ControlReply(4, True)
    refused = {
        "method": "subscribe",
        "error": "Currency pair not supported",
        "success": False,
        "symbol": "XYZ/USD",
        "req_id": 5,
        "time_in": "2023-10-06T17:35:55.219022Z",
        "time_out": "2023-10-06T17:35:55.219067Z",
    }
    assert rules.control_reply(refused) == ControlReply(
        5, False, "Currency pair not supported (XYZ/USD)"
    )
    # no req_id (the documented ack), pongs and data are not replies
    assert rules.control_reply(fixture_message("book_subscribe_ack")) is None
    assert rules.control_reply(fixture_message("pong")) is None
    assert rules.control_reply(fixture_message("heartbeat")) is None
    assert rules.control_reply([1]) is None


def test_decode_keeps_numbers_exact_and_fails_only_with_decode_errors() -> None:
    rules = kraken.KrakenWireRules()
    msg = rules.decode(b'{"price": 0.5660, "qty": 12345678901234567.123456789, "n": 3}')
    assert msg["price"] == Decimal("0.5660") and str(msg["price"]) == "0.5660"
    assert msg["qty"] == Decimal("12345678901234567.123456789")
    assert type(msg["n"]) is int
    for bad in (b"{", b'{"a": NaN}', b'{"a": Infinity}', b"[" * 100_000, b"\xff\xfe{", b""):
        with pytest.raises(DecodeError):
            kraken.decode(bad)


def test_overlap_key() -> None:
    rules = kraken.KrakenWireRules()
    hb = b'{"channel":"heartbeat"}'
    assert rules.overlap_key(hb) != rules.overlap_key(hb)
    data = b'{"channel":"trade","type":"update","data":[]}'
    assert rules.overlap_key(data) == rules.overlap_key(bytes(data))


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def test_instrument_channel_markets(index: MarketIndex) -> None:
    btc = index.market("BTC/USD")
    assert btc.id == "BTC/USD"
    assert (btc.base, btc.quote) == ("BTC", "USD")
    assert btc.tick_size == "0.1"
    assert btc.amount_step == "0.00000001"  # 1e-08 on the wire
    assert kraken.precisions(btc) == (1, 8)
    assert kraken.precisions(index.market("MATIC/USD")) == (4, 8)
    assert not index.market("OLD/USD").active


def test_instrument_message_through_parser(parser: kraken.KrakenParser) -> None:
    outcome = parser.parse(kraken.decode(INSTRUMENT_MESSAGE))
    assert isinstance(outcome, Instruments)
    assert outcome.snapshot
    assert [m.symbol for m in outcome.markets] == ["BTC/USD", "MATIC/USD", "ALGO/USD", "OLD/USD"]


def test_asset_pairs_markets() -> None:
    markets = kraken.parse_markets(ASSET_PAIRS)
    assert list(markets) == ["BTC/USD", "DOGE/USD", "MATIC/USD"]  # dark pool skipped
    btc = markets["BTC/USD"]
    assert btc.id == "BTC/USD"
    assert btc.tick_size == "0.1"
    assert btc.amount_step == "0.00000001"
    assert btc.info["rest_key"] == "XXBTZUSD"
    assert kraken.precisions(btc) == (1, 8)
    assert kraken.rest_pair(btc) == "XBTUSD"
    matic = markets["MATIC/USD"]
    assert matic.tick_size == "0.0001"  # from pair_decimals
    assert not matic.active
    assert markets["DOGE/USD"].info["altname"] == "XDGUSD"
    index = kraken.market_index(ASSET_PAIRS)
    assert index.id_of("DOGE/USD") == "DOGE/USD"


def test_precisions_fall_back_to_sizes_and_refuse_unknown() -> None:
    market = Market("A/B", "A/B", "A", "B", tick_size="0.001", amount_step="0.01")
    assert kraken.precisions(market) == (3, 2)
    with pytest.raises(BadRequest):
        kraken.precisions(Market("A/B", "A/B", "A", "B"))
    sync = kraken.book_sync(market, 25)
    assert (sync.depth, sync.price_precision, sync.qty_precision) == (25, 3, 2)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"error": [], "result": []},
        {"error": [], "result": {"X": {"wsname": "XBTUSD"}}},
        {"error": [], "result": {"X": {"wsname": "XBT/USD", "pair_decimals": "1"}}},
        {"error": [], "result": {"X": 5}},
        {"error": "x"},
        {"error": []},
    ],
)
def test_parse_markets_malformed(payload: Any) -> None:
    with pytest.raises(MalformedMessage):
        kraken.parse_markets(payload)


def test_rest_answer_with_error_raises_typed_error() -> None:
    with pytest.raises(BadSymbol):
        kraken.parse_markets({"error": ["EQuery:Unknown asset pair"]})
    # warnings alone are not errors
    assert kraken.parse_markets({"error": ["WGeneral:Something"], "result": {}}) == {}


# ---------------------------------------------------------------------------
# Parsing the documented fixtures
# ---------------------------------------------------------------------------


def test_book_snapshot_fixture(parser: kraken.KrakenParser) -> None:
    [msg] = parser.parse(fixture_message("book_snapshot"))  # type: ignore[misc]
    assert isinstance(msg, KrakenBookMessage)
    assert msg.checksum == 2439117997
    event = msg.event
    assert isinstance(event, BookSnapshot)
    assert event.symbol == "MATIC/USD"
    assert event.nonce is None
    assert event.timestamp == 1696613755440
    # JSON numbers re-rendered with the pair's precision (4 / 8)
    assert event.bids[0] == ("0.5666", "4831.75496356")
    assert event.bids[6] == ("0.5660", "18097.15470000")
    assert event.asks[2] == ("0.5670", "49844.89424998")
    assert len(event.bids) == len(event.asks) == 10
    assert kraken_checksum(event.bids, event.asks) == msg.checksum


def test_book_update_fixture(parser: kraken.KrakenParser) -> None:
    [msg] = parser.parse(fixture_message("book_update"))  # type: ignore[misc]
    assert isinstance(msg, KrakenBookMessage)
    assert isinstance(msg.event, BookDelta)
    assert msg.event.bids == [("0.5657", "1098.39475580")]
    assert msg.event.asks == []
    assert msg.checksum == 2114181697


def test_book_from_float_decoding_renders_the_same(parser: kraken.KrakenParser) -> None:
    # A frame decoded with orjson (floats): short values render identically.
    message = json.loads(json.dumps(fixture_message("book_snapshot"), default=float))
    [msg] = parser.parse(message)  # type: ignore[misc]
    [exact] = parser.parse(fixture_message("book_snapshot"))  # type: ignore[misc]
    assert msg == exact


def test_trade_fixtures(parser: kraken.KrakenParser) -> None:
    trades = parser.parse(fixture_message("trade_snapshot"))
    assert trades == [
        Trade("MATIC/USD", "4665846", 1695628116925, "0.5147", "6423.46326000", "buy", "taker"),
        Trade("MATIC/USD", "4665847", 1695628176925, "0.5147", "1136.19677815", "buy", "taker"),
    ]
    [trade] = parser.parse(fixture_message("trade_update"))  # type: ignore[misc]
    assert trade == Trade(
        "MATIC/USD", "4665906", 1695628177708, "0.5117", "40.00000000", "sell", "taker"
    )


def test_ticker_fixture(parser: kraken.KrakenParser) -> None:
    [ticker] = parser.parse(fixture_message("ticker_snapshot"))  # type: ignore[misc]
    assert ticker == Ticker(
        "ALGO/USD",
        timestamp=1695632671742,
        bid="0.10025",
        bid_volume="740.00000000",
        ask="0.10036",
        ask_volume="1361.44813783",
        last="0.10035",
        open="0.10052",  # last - change, exactly
        high="0.10285",
        low="0.09979",
        close="0.10035",
        base_volume="997038.98383185",
        change="-0.00017",
        percentage="-0.17",
        vwap="0.10148",
    )


def test_ohlc_fixture(parser: kraken.KrakenParser) -> None:
    [candle] = parser.parse(fixture_message("ohlc_update"))  # type: ignore[misc]
    assert candle == Candle(
        "MATIC/USD",
        "5m",
        1696436700000,  # interval_begin, nanosecond fraction
        "0.5624",
        "0.5628",
        "0.5622",
        "0.5627",
        "30927.68066226",
        False,
    )


def test_control_heartbeat_status_and_pong(parser: kraken.KrakenParser) -> None:
    assert parser.parse(fixture_message("pong")) == Pong(101)
    assert parser.parse(fixture_message("heartbeat")) == KrakenHeartbeat()
    assert parser.parse(fixture_message("book_subscribe_ack")) == ControlReply(None, True)
    status = parser.parse(
        kraken.decode(
            b'{"channel":"status","data":[{"api_version":"v2","connection_id":'
            b'13834774380200032777,"system":"maintenance","version":"2.0.0"}],"type":"update"}'
        )
    )
    assert status == SystemStatus("maintenance", "v2", "2.0.0", 13834774380200032777)
    assert isinstance(status, SystemStatus) and not status.online
    refused = parser.parse(
        {
            "method": "subscribe",
            "error": "Exceeded msg rate",
            "success": False,
            "req_id": 3,
            "time_in": "2023-10-06T17:35:55.219022Z",
            "time_out": "2023-10-06T17:35:55.219067Z",
        }
    )
    assert refused == KrakenError("Exceeded msg rate", "subscribe", None, 3)
    assert isinstance(refused, KrakenError)
    assert isinstance(refused.exception(), RateLimitExceeded)
    bad_pair = KrakenError("Currency pair not supported", "subscribe", "XYZ/USD")
    assert isinstance(bad_pair.exception(), BadSymbol)
    assert "XYZ/USD" in str(bad_pair.exception())
    assert type(KrakenError("Already subscribed").exception()) is SubscriptionError


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"channel": "level3", "type": "update", "data": []}, "no parser"),
        ({"channel": "executions", "type": "update", "data": []}, "no parser"),
        ({"method": "add_order", "req_id": 1}, "without success"),
        ({"foo": 1}, "without channel or method"),
        (
            {
                "channel": "trade",
                "type": "update",
                "data": [
                    {
                        "symbol": "NOPE/USD",
                        "side": "buy",
                        "price": 1,
                        "qty": 1,
                        "ord_type": "limit",
                        "trade_id": 1,
                        "timestamp": "2023-09-25T07:49:37.708706Z",
                    }
                ],
            },
            "not in the market list",
        ),
    ],
)
def test_unknown_messages(parser: kraken.KrakenParser, message: Any, reason: str) -> None:
    outcome = parser.parse(message)
    assert isinstance(outcome, Unknown)
    assert reason in outcome.reason
    assert outcome.message is message


def test_items_for_unknown_symbols_are_skipped(parser: kraken.KrakenParser) -> None:
    message = fixture_message("trade_update")
    other = copy.deepcopy(message["data"][0])
    other["symbol"] = "NOPE/USD"
    message["data"].insert(0, other)
    [trade] = parser.parse(message)  # type: ignore[misc]
    assert trade.symbol == "MATIC/USD"


def _book_item(**changes: Any) -> dict[str, Any]:
    item = {
        "symbol": "MATIC/USD",
        "bids": [{"price": Decimal("0.5"), "qty": Decimal("1")}],
        "asks": [],
        "checksum": 1,
        "timestamp": "2023-10-06T17:35:55.440295Z",
    }
    item.update(changes)
    return {"channel": "book", "type": "update", "data": [item]}


@pytest.mark.parametrize(
    "message",
    [
        [],
        "pong",
        None,
        {"channel": 5, "type": "update", "data": []},
        {"channel": "book", "type": "delta", "data": []},
        {"channel": "book", "type": "update", "data": {}},
        {"channel": "book", "type": "update", "data": [5]},
        _book_item(checksum=None),
        _book_item(checksum=-1),
        _book_item(checksum=2**32),
        _book_item(checksum="12"),
        _book_item(bids={"price": 1}),
        _book_item(bids=[[1, 2]]),
        _book_item(bids=[{"price": Decimal("NaN"), "qty": 1}]),
        _book_item(bids=[{"price": Decimal("1E+100"), "qty": 1}]),
        _book_item(bids=[{"price": True, "qty": 1}]),
        _book_item(bids=[{"price": "x", "qty": 1}]),
        _book_item(bids=[{"qty": 1}]),
        _book_item(timestamp="2023-10-06 17:35"),
        _book_item(timestamp="2023-13-06T17:35:55Z"),
        _book_item(timestamp="2023-10-06T17:35:55.Z"),
        _book_item(timestamp="2023-10-06T17:35:55+0100"),
        _book_item(timestamp=1696613755),
        {
            "channel": "trade",
            "type": "update",
            "data": [{"symbol": "MATIC/USD", "side": "buy", "price": 1, "qty": 1}],
        },
        {
            "channel": "trade",
            "type": "update",
            "data": [
                {
                    "symbol": "MATIC/USD",
                    "side": "up",
                    "price": 1,
                    "qty": 1,
                    "trade_id": 1,
                    "timestamp": "2023-09-25T07:49:37.708706Z",
                }
            ],
        },
        {"channel": "ticker", "type": "snapshot", "data": [{"symbol": "ALGO/USD", "bid": []}]},
        {
            "channel": "ohlc",
            "type": "update",
            "data": [{"symbol": "MATIC/USD", "interval": 7, "open": 1}],
        },
        {"channel": "instrument", "type": "snapshot", "data": []},
        {"channel": "instrument", "type": "snapshot", "data": {"pairs": [{"symbol": 1}]}},
        {"channel": "status", "type": "update", "data": []},
        {"channel": "status", "type": "update", "data": [{"system": 1}]},
        {"method": 5},
        {"method": "subscribe", "success": "yes"},
        {"method": "subscribe", "success": False, "error": ["x"]},
    ],
)
def test_malformed_messages_raise_malformed_message(
    parser: kraken.KrakenParser, message: Any
) -> None:
    with pytest.raises(MalformedMessage):
        parser.parse(message)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_channels = st.sampled_from(
    ["book", "trade", "ticker", "ohlc", "instrument", "status", "heartbeat", "level3", None, 3]
)
_item_keys = st.sampled_from(
    ["symbol", "bids", "asks", "checksum", "timestamp", "price", "qty", "side", "trade_id",
     "interval", "interval_begin", "open", "last", "change", "pairs", "system"]
)  # fmt: skip
_symbols = st.sampled_from(["MATIC/USD", "BTC/USD", "ALGO/USD", "NOPE/USD", 5])


_FUZZ_PARSER = kraken.KrakenParser(kraken.market_index(kraken.decode(INSTRUMENT_MESSAGE)["data"]))


@settings(max_examples=250, deadline=None)
@given(
    channel=_channels,
    kind=st.sampled_from(["snapshot", "update", None, 5]),
    item=st.dictionaries(_item_keys, _json, max_size=7),
    symbol=_symbols,
    data=_json,
    raw=_json,
)
def test_fuzz_only_typed_outcomes(
    channel: Any, kind: Any, item: dict[str, Any], symbol: Any, data: Any, raw: Any
) -> None:
    parser = _FUZZ_PARSER
    messages = [
        {"channel": channel, "type": kind, "data": [{**item, "symbol": symbol}]},
        {"channel": channel, "type": kind, "data": data},
        {"method": data, "success": data, "error": data, "req_id": data},
        raw,
    ]
    for message in messages:
        try:
            outcome = parser.parse(message)
        except MalformedMessage:
            continue
        assert isinstance(
            outcome,
            (
                list,
                Instruments,
                ControlReply,
                KrakenError,
                Pong,
                KrakenHeartbeat,
                SystemStatus,
                ServerShutdown,
                Unknown,
            ),
        )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_fuzz_decode_raises_only_decode_errors(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        kraken.decode(raw)


def test_parser_is_cached_per_index(index: MarketIndex) -> None:
    message = fixture_message("trade_update")
    assert kraken.parse_message(message, index) == kraken.KrakenParser(index).parse(message)
    assert kraken._parsers[index] is kraken._parsers[index]


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2023-10-06T17:35:55.440295Z", 1696613755440),
        ("2023-10-04T16:25:00.000000000Z", 1696436700000),
        ("2023-10-04T16:25:00.999999999Z", 1696436700999),
        ("2023-10-04T18:25:00.5+02:00", 1696436700500),
        ("2023-10-04T14:25:00-02:00", 1696436700000),
    ],
)
def test_rfc3339(text: str, ms: int) -> None:
    assert kraken.rfc3339_ms(text) == ms


# ---------------------------------------------------------------------------
# Checksum vectors
# ---------------------------------------------------------------------------


def _levels(raw: Any) -> list[tuple[str, str]]:
    return [(str(p), str(q)) for p, q in raw]


@pytest.mark.parametrize(
    "vector_id",
    [
        "kraken.v2.book.checksum.guide_example_BTCUSD",
        "kraken.v2.book.checksum.reference_page_MATICUSD_snapshot",
    ],
)
def test_checksum_vectors(vector_id: str) -> None:
    v = CHECKSUMS[vector_id]
    pp, qp = v.get("price_precision"), v.get("qty_precision")
    bids, asks = _levels(v["bids"]), _levels(v["asks"])
    assert kraken_checksum_string(bids, asks, pp, qp) == v["check_string"]
    assert kraken_checksum(bids, asks, pp, qp) == v["expected"] == v["published_expected"]


def test_checksum_needs_the_precision_for_json_numbers() -> None:
    v = CHECKSUMS["kraken.v2.book.checksum.reference_page_MATICUSD_snapshot"]
    bids, asks = _levels(v["bids"]), _levels(v["asks"])
    assert ("0.566", "18097.1547") in bids  # as it came off the wire
    assert kraken_checksum(bids, asks) != v["expected"]  # shortest repr: wrong CRC
    assert kraken_checksum(bids, asks, 4, 8) == v["expected"]


def test_checksum_update_vector_through_parser_sync_and_book(parser: kraken.KrakenParser) -> None:
    v = CHECKSUMS["kraken.v2.book.checksum.reference_page_MATICUSD_update"]
    sync = kraken.book_sync(parser.index.market("MATIC/USD"), 10)
    book = OrderBook("MATIC/USD")
    for name in ("book_snapshot", "book_update"):
        [msg] = parser.parse(fixture_message(name))  # type: ignore[misc]
        action = sync.on_message(msg)  # type: ignore[arg-type]
        assert isinstance(action, (ApplySnapshot, ApplyDelta))
        _apply(book, action)
        assert sync.verify(book.top) is None
    assert sync.state == "synced"
    assert book.snapshot().bids[-1] == ("0.5657", "1098.39475580")
    top = book.top("bids", 10), book.top("asks", 10)
    assert kraken_checksum_string(*top) == v["check_string"]
    assert kraken_checksum(*top) == v["expected"] == 2114181697


def test_checksum_is_unsigned_and_covers_ten_levels_asks_first() -> None:
    bids = [(f"{100 - i}.0", "1.0") for i in range(15)]
    asks = [(f"{101 + i}.0", "2.0") for i in range(15)]
    s = kraken_checksum_string(bids, asks)
    assert s.startswith("101020102020")  # asks first: "101.0" -> "1010", "2.0" -> "20"
    assert s.endswith("91010")  # the 10th bid is 91.0 x 1.0
    assert "1110" not in s  # the 11th ask (111.0) is not covered
    assert kraken_checksum(bids, asks) == zlib.crc32(s.encode())
    assert kraken_checksum(bids, asks) == kraken_checksum(bids[:10], asks[:10])
    assert kraken_checksum(bids, asks) >= 0


def test_render_decimal() -> None:
    assert render_decimal(Decimal("0.566"), 4) == "0.5660"
    assert render_decimal(Decimal("40.0"), 8) == "40.00000000"
    assert render_decimal(Decimal("1E-8"), None) == "0.00000001"
    assert render_decimal(Decimal("1E+2"), 1) == "100.0"
    assert render_decimal(Decimal("0.123456"), 2) == "0.123456"  # digits never dropped
    assert render_decimal(Decimal("-0.00017"), 5) == "-0.00017"


# ---------------------------------------------------------------------------
# The book sync: rules and edge cases
# ---------------------------------------------------------------------------

SYM = "MATIC/USD"


def _apply(book: OrderBook, action: ApplySnapshot | ApplyDelta) -> None:
    if isinstance(action, ApplySnapshot):
        book.apply_snapshot(action.snapshot)
    else:
        book.apply_delta(action.delta)
    book.truncate(action.depth)


def _bids(*prices: str, qty: str = "1.00000000") -> list[tuple[str, str]]:
    return [(p, qty) for p in prices]


def _snap(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], ts: int = 1000, checksum: Any = None
) -> KrakenBookMessage:
    if checksum is None:
        checksum = kraken_checksum(bids[:10], asks[:10])
    return KrakenBookMessage(BookSnapshot(SYM, bids, asks, None, ts), checksum)


def _delta(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], checksum: int, ts: int = 2000
) -> KrakenBookMessage:
    return KrakenBookMessage(BookDelta(SYM, bids, asks, None, None, None, ts), checksum)


BIDS = [(f"0.{5666 - i}", f"{i + 1}.00000000") for i in range(10)]
ASKS = [(f"0.{5668 + i}", f"{i + 1}.50000000") for i in range(10)]


def _sync(depth: int = 10) -> KrakenBookSync:
    return KrakenBookSync(SYM, depth, price_precision=4, qty_precision=8)


def test_updates_before_the_first_snapshot_are_ignored() -> None:
    sync = _sync()
    action = sync.on_message(_delta(BIDS[:1], [], 1))
    assert isinstance(action, Ignore)
    assert sync.state == "waiting"
    assert sync.verify(lambda side, n: []) is None  # nothing to verify


def test_snapshot_then_updates_verify() -> None:
    sync, book = _sync(), OrderBook(SYM)
    action = sync.on_message(_snap(BIDS, ASKS))
    assert action == ApplySnapshot(_snap(BIDS, ASKS).event, 10, _snap(BIDS, ASKS).checksum)
    _apply(book, action)  # type: ignore[arg-type]
    assert sync.verify(book.top) is None
    # change one ask, delete one bid; Kraken sends the bid entering at the bottom
    new_bids = [*BIDS[1:], ("0.5656", "7.00000000")]
    new_asks = [("0.5668", "9.00000000"), *ASKS[1:]]
    checksum = kraken_checksum(new_bids, new_asks)
    delta = _delta([(BIDS[0][0], "0.00000000"), ("0.5656", "7.00000000")], new_asks[:1], checksum)
    action = sync.on_message(delta)
    assert isinstance(action, ApplyDelta) and action.checksum == checksum
    _apply(book, action)
    assert sync.verify(book.top) is None
    assert list(book.snapshot().bids) == new_bids
    assert sync.last_timestamp == 2000


def test_checksum_mismatch_resyncs_until_the_next_snapshot() -> None:
    sync, book = _sync(), OrderBook(SYM)
    _apply(book, sync.on_message(_snap(BIDS, ASKS)))  # type: ignore[arg-type]
    assert sync.verify(book.top) is None
    action = sync.on_message(_delta([("0.5666", "5.00000000")], [], checksum=12345))
    _apply(book, action)  # type: ignore[arg-type]
    resync = sync.verify(book.top)
    assert isinstance(resync, Resync)
    assert "12345" in resync.reason
    assert sync.state == "resyncing"
    book.mark_stale(resync.reason)
    # updates of the old subscription are dropped
    assert isinstance(sync.on_message(_delta(BIDS[:1], [], 1, ts=2500)), Ignore)
    # a snapshot older than what the book reached is refused while resyncing
    too_old = sync.on_message(_snap(BIDS, ASKS, ts=1500))
    assert isinstance(too_old, SnapshotTooOld)
    assert sync.state == "resyncing"
    fresh = sync.on_message(_snap(BIDS, ASKS, ts=3000))
    assert isinstance(fresh, ApplySnapshot)
    _apply(book, fresh)
    assert sync.verify(book.top) is None
    assert sync.state == "synced"
    assert not book.stale


def test_old_snapshot_while_synced_is_ignored_and_a_newer_one_replaces() -> None:
    sync, book = _sync(), OrderBook(SYM)
    _apply(book, sync.on_message(_snap(BIDS, ASKS, ts=5000)))  # type: ignore[arg-type]
    assert isinstance(sync.on_message(_snap(BIDS[:3], ASKS, ts=4999)), Ignore)
    replace = sync.on_message(_snap(BIDS[:3], ASKS, ts=5000))  # same time: not older
    assert isinstance(replace, ApplySnapshot)
    _apply(book, replace)
    assert sync.verify(book.top) is None
    assert len(book.snapshot().bids) == 3


def test_bad_snapshot_checksum_is_detected() -> None:
    sync, book = _sync(), OrderBook(SYM)
    _apply(book, sync.on_message(_snap(BIDS, ASKS, checksum=7)))  # type: ignore[arg-type]
    assert isinstance(sync.verify(book.top), Resync)


def test_truncation_to_depth_drops_levels_kraken_stops_reporting() -> None:
    sync, book = _sync(10), OrderBook(SYM)
    _apply(book, sync.on_message(_snap(BIDS, ASKS)))  # type: ignore[arg-type]
    # a better bid pushes 0.5657 out of the top 10: Kraken sends no delete for it
    top1 = [("0.5667", "3.00000000"), *BIDS[:9]]
    _apply(book, sync.on_message(_delta([top1[0]], [], kraken_checksum(top1, ASKS))))  # type: ignore[arg-type]
    assert sync.verify(book.top) is None
    assert book.level_count("bids") == 10
    # (meanwhile 0.5657 went away on Kraken's side, unseen.)  The best bid is
    # deleted and 0.5655 enters at the bottom.
    top2 = [*top1[1:], ("0.5655", "2.00000000")]
    delta = _delta([("0.5667", "0"), ("0.5655", "2.00000000")], [], kraken_checksum(top2, ASKS))
    _apply(book, sync.on_message(delta))  # type: ignore[arg-type]
    assert sync.verify(book.top) is None
    assert list(book.snapshot().bids) == top2


def test_without_truncation_the_same_stream_diverges() -> None:
    # the control experiment for the test above: the checksum catches it
    sync, book = _sync(10), OrderBook(SYM)
    book.apply_snapshot(_snap(BIDS, ASKS).event)
    sync.on_message(_snap(BIDS, ASKS))
    top1 = [("0.5667", "3.00000000"), *BIDS[:9]]
    book.apply_delta(_delta([top1[0]], [], 0).event)  # type: ignore[arg-type]
    sync.on_message(_delta([top1[0]], [], kraken_checksum(top1, ASKS)))
    assert sync.verify(book.top) is None  # top 10 is still right
    top2 = [*top1[1:], ("0.5655", "2.00000000")]
    msg = _delta([("0.5667", "0"), ("0.5655", "2.00000000")], [], kraken_checksum(top2, ASKS))
    sync.on_message(msg)
    book.apply_delta(msg.event)  # type: ignore[arg-type]
    assert isinstance(sync.verify(book.top), Resync)


def test_delete_of_an_unknown_level_is_tolerated() -> None:
    sync, book = _sync(), OrderBook(SYM)
    _apply(book, sync.on_message(_snap(BIDS, ASKS)))  # type: ignore[arg-type]
    msg = _delta([("0.1234", "0.00000000")], [("0.9999", "0")], kraken_checksum(BIDS, ASKS))
    action = sync.on_message(msg)
    _apply(book, action)  # type: ignore[arg-type]
    assert sync.verify(book.top) is None
    assert list(book.snapshot().bids) == BIDS


def test_several_changes_to_one_price_apply_in_order() -> None:
    sync, book = _sync(), OrderBook(SYM)
    _apply(book, sync.on_message(_snap(BIDS, ASKS)))  # type: ignore[arg-type]
    final = [("0.5666", "2.00000000"), *BIDS[1:]]
    changes = [("0.5666", "0"), ("0.5666", "5.00000000"), ("0.5666", "2.00000000")]
    _apply(book, sync.on_message(_delta(changes, [], kraken_checksum(final, ASKS))))  # type: ignore[arg-type]
    assert sync.verify(book.top) is None


def test_invalidate_reset_and_disabled_verification() -> None:
    sync = _sync()
    sync.on_message(_snap(BIDS, ASKS))
    resync = sync.invalidate("bad level")
    assert resync == Resync("bad level") and sync.state == "resyncing"
    assert sync.verify(lambda side, n: []) is None
    sync.reset()
    assert sync.state == "waiting" and sync.last_timestamp is None
    lax = KrakenBookSync(SYM, price_precision=4, qty_precision=8, verify_checksum=False)
    action = lax.on_message(_snap(BIDS, ASKS, checksum=1))
    assert isinstance(action, ApplySnapshot) and action.checksum is None
    assert lax.verify(lambda side, n: []) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 20, "price_precision": 1, "qty_precision": 1},
        {"depth": 10, "price_precision": -1, "qty_precision": 1},
        {"depth": 10, "price_precision": 1, "qty_precision": "8"},
    ],
)
def test_bad_sync_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        KrakenBookSync(SYM, **kwargs)


def test_message_for_another_symbol_is_refused() -> None:
    msg = KrakenBookMessage(BookSnapshot("BTC/USD", [], [], None, 1), 0)
    with pytest.raises(BadRequest):
        _sync().on_message(msg)


# ---------------------------------------------------------------------------
# A model of Kraken's depth-limited book stream
# ---------------------------------------------------------------------------


class KrakenModel:
    """The exchange side: a full book, and the depth-limited stream Kraken sends of it."""

    def __init__(self, seed: int, depth: int) -> None:
        self.rng = random.Random(seed)
        self.depth = depth
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        for i in range(1, depth * 2):
            self.bids[Decimal("0.5000") - Decimal(i) / 10000] = self._qty()
            self.asks[Decimal("0.5000") + Decimal(i) / 10000] = self._qty()
        self.ts = 1_700_000_000_000

    def _qty(self) -> Decimal:
        # JSON numbers without trailing zeros, e.g. 12.5 or 40
        return Decimal(self.rng.randint(1, 10**6)) / Decimal(10 ** self.rng.randint(0, 8))

    def top(self, side: str) -> list[tuple[Decimal, Decimal]]:
        levels = self.bids if side == "bids" else self.asks
        ordered = sorted(levels.items(), reverse=side == "bids")
        return ordered[: self.depth]

    def checksum(self) -> int:
        def text(levels: list[tuple[Decimal, Decimal]]) -> list[tuple[str, str]]:
            return [(f"{p:.4f}", f"{q:.8f}") for p, q in levels]

        return kraken_checksum(text(self.top("bids")[:10]), text(self.top("asks")[:10]))

    def _item(self, bids: Any, asks: Any, checksum: int | None = None) -> dict[str, Any]:
        return {
            "symbol": SYM,
            "bids": [{"price": p, "qty": q} for p, q in bids],
            "asks": [{"price": p, "qty": q} for p, q in asks],
            "checksum": self.checksum() if checksum is None else checksum,
            "timestamp": f"2023-11-14T22:13:20.{self.ts % 1000:03d}000Z",
        }

    def snapshot(self) -> dict[str, Any]:
        item = self._item(self.top("bids"), self.top("asks"))
        return {"channel": "book", "type": "snapshot", "data": [item]}

    def step(self) -> dict[str, Any]:
        """Change the full book at random; return the update Kraken would send."""
        self.ts += 1
        before = {"bids": dict(self.top("bids")), "asks": dict(self.top("asks"))}
        for _ in range(self.rng.randint(1, 4)):
            side = self.rng.choice(["bids", "asks"])
            levels = self.bids if side == "bids" else self.asks
            best = max(levels) if side == "bids" else min(levels)
            sign = -1 if side == "bids" else 1
            price = best + sign * Decimal(self.rng.randint(-2, 2 * self.depth)) / 10000
            other = self.asks if side == "bids" else self.bids
            other_best = min(other) if side == "bids" else max(other)
            if (side == "bids" and price >= other_best) or (side == "asks" and price <= other_best):
                continue
            if price in levels and self.rng.random() < 0.4 and len(levels) > self.depth + 2:
                del levels[price]
            else:
                levels[price] = self._qty()
        out: dict[str, list[tuple[Decimal, Decimal]]] = {}
        for side in ("bids", "asks"):
            after = dict(self.top(side))
            changed = [(p, q) for p, q in after.items() if before[side].get(p) != q]
            # levels gone from the top: deleted ones get qty 0, ones pushed out
            # of range by inserts get nothing (Kraken's documented behaviour)
            levels = self.bids if side == "bids" else self.asks
            gone = [(p, Decimal(0)) for p in before[side] if p not in after and p not in levels]
            out[side] = gone + changed
        item = self._item(out["bids"], out["asks"])
        return {"channel": "book", "type": "update", "data": [item]}


def _simulate(depth: int, seed: int, steps: int, drop: set[int]) -> tuple[int, int]:
    index = MarketIndex.from_markets(
        [
            Market(
                SYM,
                SYM,
                "MATIC",
                "USD",
                tick_size="0.0001",
                amount_step="0.00000001",
                info={"price_precision": 4, "qty_precision": 8},
            )
        ],
        "kraken",
    )
    parser = kraken.KrakenParser(index)
    model = KrakenModel(seed, depth)
    sync = kraken.book_sync(index.market(SYM), depth)
    book = OrderBook(SYM)
    resyncs = checked = 0
    pending: list[dict[str, Any]] = [model.snapshot()]
    for n in range(steps):
        update = model.step()
        if n not in drop:
            pending.append(update)
        for message in pending:
            [msg] = parser.parse(wire(message))  # type: ignore[misc]
            action = sync.on_message(msg)  # type: ignore[arg-type]
            if isinstance(action, (ApplySnapshot, ApplyDelta)):
                _apply(book, action)
                verdict = sync.verify(book.top)
                if verdict is not None:
                    resyncs += 1
                    book.mark_stale(verdict.reason)
        pending = []
        if sync.state == "resyncing":
            pending.append(model.snapshot())  # unsubscribe + subscribe: a fresh snapshot
        elif sync.state == "synced" and n not in drop:  # a lost update shows in the next one
            snap = book.snapshot()
            assert list(snap.bids) == [(f"{p:.4f}", f"{q:.8f}") for p, q in model.top("bids")]
            assert list(snap.asks) == [(f"{p:.4f}", f"{q:.8f}") for p, q in model.top("asks")]
            checked += 1
    return resyncs, checked


@pytest.mark.parametrize("depth", [10, 25])
def test_stream_model_stays_in_sync(depth: int) -> None:
    resyncs, checked = _simulate(depth, seed=depth, steps=600, drop=set())
    assert resyncs == 0
    assert checked == 600


def test_stream_model_lost_updates_are_caught_and_recovered() -> None:
    resyncs, checked = _simulate(10, seed=5, steps=600, drop={100, 101, 350})
    assert 1 <= resyncs <= 3  # a lost update that left the top 10 unchanged goes unnoticed
    assert checked >= 590
    assert checked < 600


# ---------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------


def test_rest_requests() -> None:
    assert kraken.asset_pairs_request() == RestRequest("GET", "/0/public/AssetPairs")
    depth = kraken.book_snapshot_request("XBTUSD", 500)
    assert depth.url("https://api.kraken.com") == (
        "https://api.kraken.com/0/public/Depth?pair=XBTUSD&count=500"
    )
    trades = kraken.trades_request("XBTUSD", since=1616663618, count=10)
    assert trades.query_string() == "pair=XBTUSD&since=1616663618&count=10"
    ohlc = kraken.candles_request("XBTUSD", "4h", since=1688669400)
    assert ohlc.params == {"pair": "XBTUSD", "interval": 240, "since": 1688669400}
    assert kraken.ticker_request("XBTUSD").params == {"pair": "XBTUSD"}
    assert kraken.tickers_request().params == {}
    for call in (
        lambda: kraken.book_snapshot_request("XBTUSD", 501),
        lambda: kraken.book_snapshot_request("XBT USD"),
        lambda: kraken.trades_request("XBTUSD", count=0),
        lambda: kraken.candles_request("XBTUSD", "3m"),
    ):
        with pytest.raises(BadRequest):
            call()


def test_parse_order_book() -> None:
    payload = {
        "error": [],
        "result": {
            "XXBTZUSD": {
                "asks": [
                    ["30384.10000", "2.059", 1688671659],
                    ["30387.90000", "1.500", 1688671380],
                ],
                "bids": [
                    ["30297.00000", "1.115", 1688671636],
                    ["30296.70000", "2.002", 1688671674],
                ],
            }
        },
    }
    book = kraken.parse_order_book("BTC/USD", payload)
    assert book == BookSnapshot(
        "BTC/USD",
        [("30297.00000", "1.115"), ("30296.70000", "2.002")],
        [("30384.10000", "2.059"), ("30387.90000", "1.500")],
        None,
        1688671674000,
    )
    with pytest.raises(MalformedMessage):
        kraken.parse_order_book("BTC/USD", {"error": [], "result": {"A": {}, "B": {}}})


def test_parse_rest_trades_oldest_first() -> None:
    payload = kraken.decode(
        b'{"error":[],"result":{"XXBTZUSD":['
        b'["30243.40000","0.34507431",1688669597.8277369,"b","m","",61044952],'
        b'["30243.30000","0.00376463",1688669598.2804112,"s","l","",61044953]],'
        b'"last":"1688671969993150842"}}'
    )
    trades = kraken.parse_rest_trades("BTC/USD", payload)
    assert trades == [
        Trade("BTC/USD", "61044952", 1688669597827, "30243.40000", "0.34507431", "buy", "taker"),
        Trade("BTC/USD", "61044953", 1688669598280, "30243.30000", "0.00376463", "sell", "taker"),
    ]
    with pytest.raises(MalformedMessage):
        kraken.parse_rest_trades("BTC/USD", {"error": [], "result": {"X": [["1", "1", 1, "x"]]}})


def test_parse_candles_marks_the_last_one_open() -> None:
    payload = {
        "error": [],
        "result": {
            "XXBTZUSD": [
                [1688671200, "30306.1", "30306.2", "30305.7", "30305.7", "30306.1", "3.39", 23],
                [1688671260, "30304.5", "30304.5", "30300.0", "30300.3", "30301.1", "4.42", 31],
            ],
            "last": 1688671200,
        },
    }
    candles = kraken.parse_candles("BTC/USD", "1m", payload)
    assert candles == [
        Candle("BTC/USD", "1m", 1688671200000, "30306.1", "30306.2", "30305.7", "30305.7",
               "3.39", True),
        Candle("BTC/USD", "1m", 1688671260000, "30304.5", "30304.5", "30300.0", "30300.3",
               "4.42", False),
    ]  # fmt: skip


TICKER_ENTRY = {
    "a": ["30300.10000", "1", "1.000"],
    "b": ["30300.00000", "1", "1.000"],
    "c": ["30303.20000", "0.00067643"],
    "v": ["4083.67001100", "4412.73601799"],
    "p": ["30706.77771", "30689.13205"],
    "t": [34619, 38907],
    "l": ["29868.30000", "29868.30000"],
    "h": ["31631.00000", "31631.00000"],
    "o": "30502.80000",
}


def test_parse_rest_ticker_and_tickers() -> None:
    ticker = kraken.parse_rest_ticker(
        "BTC/USD", {"error": [], "result": {"XXBTZUSD": TICKER_ENTRY}}
    )
    assert ticker == Ticker(
        "BTC/USD",
        bid="30300.00000",
        bid_volume="1.000",
        ask="30300.10000",
        ask_volume="1.000",
        last="30303.20000",
        open="30502.80000",
        high="31631.00000",
        low="29868.30000",
        close="30303.20000",
        base_volume="4412.73601799",
        vwap="30689.13205",
    )
    index = kraken.market_index(ASSET_PAIRS)
    all_tickers = kraken.parse_tickers(
        {"error": [], "result": {"XXBTZUSD": TICKER_ENTRY, "UNKNOWN": TICKER_ENTRY}}, index
    )
    assert [t.symbol for t in all_tickers] == ["BTC/USD"]


@pytest.mark.parametrize(
    ("status", "headers", "body", "cls", "retry"),
    [
        (200, None, b'{"error":["EQuery:Unknown asset pair"]}', BadSymbol, None),
        (200, None, {"error": ["EAPI:Rate limit exceeded"]}, RateLimitExceeded, None),
        (200, Headers({b"Retry-After": [b"7"]}), '{"error":["EAPI:Rate limit exceeded"]}',
         RateLimitExceeded, 7.0),
        (200, None, {"error": ["EGeneral:Temporary lockout"]}, DDoSProtection, 900.0),
        (200, None, {"error": ["EAPI:Invalid key"]}, AuthenticationError, None),
        (200, None, {"error": ["EAPI:Invalid nonce"]}, InvalidNonce, None),
        (200, None, {"error": ["EGeneral:Permission denied"]}, PermissionDenied, None),
        (200, None, {"error": ["EService:Unavailable"]}, ExchangeNotAvailable, None),
        (200, None, {"error": ["EService:Market in cancel_only mode"]}, ExchangeNotAvailable, None),
        (200, None, {"error": ["EGeneral:Invalid arguments:Index unavailable"]}, BadRequest, None),
        (429, {"retry-after": "3"}, b"", RateLimitExceeded, 3.0),
        (503, None, b"<html>down</html>", ExchangeNotAvailable, None),
        (520, None, None, ExchangeNotAvailable, None),
        (404, None, b"not found", BadRequest, None),
        (200, None, {"error": ["ESomething:New"]}, ExchangeError, None),
    ],
)  # fmt: skip
def test_rest_errors(
    status: int, headers: Any, body: Any, cls: type[ExchangeError], retry: float | None
) -> None:
    error = kraken.parse_rest_error(status, headers, body)
    assert type(error) is cls
    assert error.status == status  # type: ignore[attr-defined]
    if isinstance(error, RateLimitExceeded):
        assert error.retry_after == retry
    if isinstance(body, dict):
        assert error.code == body["error"][0]  # type: ignore[attr-defined]
        assert body["error"][0] in str(error)
