"""Unit tests for the pure OKX v5 adapter (no reactor, no sockets).

Payloads and checksum vectors come from ``../shared/protocols/vectors.json``
(OKX's own documented examples); the rest is written in the shapes the OKX
docs show, and book sequences are built by hand or from a simulated market.
"""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from txexchange.adapters import ServerShutdown, Unknown, okx
from txexchange.adapters.okx import (
    ApplyDelta,
    ApplySnapshot,
    Buffer,
    Ignore,
    NeedSnapshot,
    OkxBookMessage,
    OkxBookSync,
    OkxError,
    Pong,
    Resync,
    SnapshotTooOld,
    okx_checksum,
    okx_checksum_string,
)
from txexchange.adapters.rest import RestRequest
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    ExchangeError,
    ExchangeNotAvailable,
    MalformedMessage,
    PermissionDenied,
    ProtocolViolation,
    RateLimitExceeded,
)
from txexchange.events import BookDelta, BookSnapshot, Candle, Ticker, Trade
from txexchange.markets import MarketIndex
from txexchange.state.book import OrderBook
from txexchange.testing.market import SimulatedMarket
from txexchange.transport.rules import ControlReply, WireRules

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _load() -> dict[str, Any]:
    if not VECTORS.exists():  # pragma: no cover - the repo is checked out beside ../shared
        pytest.skip(f"{VECTORS} not found", allow_module_level=True)
    return json.loads(VECTORS.read_text(encoding="utf-8"))


_DATA = _load()
FIX = {f["name"]: f for f in _DATA["fixtures"]["okx"]}
CHECKSUMS = {c["id"]: c for c in _DATA["checksums"] if c.get("exchange") == "okx"}


def fixture_message(name: str) -> Any:
    return copy.deepcopy(FIX[name]["message"])


def _instrument(inst_id: str, base: str, quote: str, **extra: Any) -> dict[str, Any]:
    entry = {
        "instType": "SPOT",
        "instId": inst_id,
        "baseCcy": base,
        "quoteCcy": quote,
        "settleCcy": "",
        "tickSz": "0.1",
        "lotSz": "0.00000001",
        "minSz": "0.00001",
        "state": "live",
    }
    entry.update(extra)
    return entry


# A recorded-style instruments answer (abridged: OKX sends many more fields).
INSTRUMENTS: dict[str, Any] = {
    "code": "0",
    "msg": "",
    "data": [
        _instrument("BTC-USDT", "BTC", "USDT"),
        _instrument("ETH-USDT", "ETH", "USDT", tickSz="0.01", lotSz="0.000001"),
        _instrument("OLD-USDT", "OLD", "USDT", state="suspend"),
        # the book fixtures use a swap id; give it a spot-shaped entry for the parser
        _instrument("BCH-USDT-SWAP", "BCHSWAP", "USDT", tickSz="0.01", lotSz="1"),
        _instrument("BTC-USD-SWAP", "", ""),  # a derivative: no base/quote, skipped
    ],
}


@pytest.fixture
def index() -> MarketIndex:
    return okx.market_index(INSTRUMENTS)


@pytest.fixture
def parser(index: MarketIndex) -> okx.OkxParser:
    return okx.OkxParser(index)


# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------


def test_default_urls() -> None:
    assert okx.resolve_urls() == {
        "public": "wss://ws.okx.com:8443/ws/v5/public",
        "business": "wss://ws.okx.com:8443/ws/v5/business",
        "private": "wss://ws.okx.com:8443/ws/v5/private",
        "rest": "https://www.okx.com",
    }
    assert okx.resolve_urls() is not okx.DEFAULT_URLS  # a fresh dict every time


def test_url_overrides() -> None:
    urls = okx.resolve_urls(
        {"public": "ws://127.0.0.1:9000/ws/v5/public/", "rest": "http://127.0.0.1:9001"}
    )
    assert urls["public"] == "ws://127.0.0.1:9000/ws/v5/public"
    assert urls["rest"] == "http://127.0.0.1:9001"
    assert urls["business"] == okx.DEFAULT_URLS["business"]


def test_unknown_url_key_names_the_valid_keys() -> None:
    with pytest.raises(BadRequest) as info:
        okx.resolve_urls({"ws": "wss://x"})
    text = str(info.value)
    for key in ("'public'", "'business'", "'private'", "'rest'"):
        assert key in text


@pytest.mark.parametrize(
    "urls",
    [{"public": "https://ws.okx.com"}, {"rest": "wss://www.okx.com"}, {"business": 5}],
)
def test_url_with_wrong_scheme_is_refused(urls: Any) -> None:
    with pytest.raises(BadRequest):
        okx.resolve_urls(urls)


# ---------------------------------------------------------------------------
# Topics and wire rules
# ---------------------------------------------------------------------------


def test_topic_builders() -> None:
    assert okx.books_topic("BTC-USDT") == "books:BTC-USDT"
    assert okx.books_topic("BTC-USDT", "books5") == "books5:BTC-USDT"
    assert okx.books_topic("BTC-USDT", "bbo-tbt") == "bbo-tbt:BTC-USDT"
    assert okx.trades_topic("BTC-USDT") == "trades:BTC-USDT"
    assert okx.trades_topic("BTC-USDT", every_fill=True) == "trades-all:BTC-USDT"
    assert okx.tickers_topic("BTC-USDT") == "tickers:BTC-USDT"
    assert okx.candle_topic("BTC-USDT", "1m") == "candle1m:BTC-USDT"
    assert okx.candle_topic("BTC-USDT", "1h") == "candle1H:BTC-USDT"
    assert okx.candle_topic("BTC-USDT", "1d") == "candle1Dutc:BTC-USDT"
    assert okx.candle_topic("BTC-USDT", "1d@+08:00") == "candle1D:BTC-USDT"
    assert okx.candle_topic("BTC-USDT", "1M") == "candle1Mutc:BTC-USDT"
    assert okx.topic_arg("candle1m:BTC-USDT") == {"channel": "candle1m", "instId": "BTC-USDT"}
    assert okx.topic_of({"channel": "books", "instId": "ETH-USDT"}) == "books:ETH-USDT"


def test_url_kind_places_channels() -> None:
    assert okx.url_kind("books:BTC-USDT") == "public"
    assert okx.url_kind("bbo-tbt:BTC-USDT") == "public"
    assert okx.url_kind("trades:BTC-USDT") == "public"
    assert okx.url_kind("tickers:BTC-USDT") == "public"
    assert okx.url_kind("trades-all:BTC-USDT") == "business"
    assert okx.url_kind("candle1D:BTC-USDT") == "business"


@pytest.mark.parametrize(
    "call",
    [
        lambda: okx.books_topic("BTC-USDT", "books7"),
        lambda: okx.books_topic("BTC:USDT"),
        lambda: okx.books_topic(""),
        lambda: okx.candle_topic("BTC-USDT", "7m"),
        lambda: okx.candle_topic("BTC-USDT", "1H"),  # OKX's own bar name is not a timeframe
        lambda: okx.topic_arg("books"),
        lambda: okx.topic_arg("nonsense:BTC-USDT"),
        lambda: okx.topic_arg("candle7m:BTC-USDT"),
        lambda: okx.tickers_topic('BTC"USDT'),
    ],
)
def test_bad_topic_arguments(call: Any) -> None:
    with pytest.raises(BadRequest):
        call()


def test_wire_rules_satisfy_protocol_and_limits() -> None:
    public = okx.OkxWireRules()
    business = okx.OkxWireRules("business")
    for rules in (public, business):
        assert isinstance(rules, WireRules)
        assert rules.replies_to_control
        assert rules.max_connection_age is None
        assert rules.binary_compression is None
        assert rules.heartbeat is not None
        assert rules.heartbeat.payload == "ping"
        assert rules.heartbeat.pong == "pong"
        assert rules.heartbeat.idle_interval < 30
        # at most 480 subscribe/unsubscribe requests per hour per connection
        assert rules.control_rate * 3600 <= 480
    assert public.max_topics_per_connection == 30
    assert business.max_topics_per_connection is None
    with pytest.raises(BadRequest):
        okx.OkxWireRules("spot")  # type: ignore[arg-type]


def test_subscribe_matches_documented_request() -> None:
    rules = okx.OkxWireRules()
    documented = fixture_message("subscribe_request")
    assert json.loads(rules.subscribe_message(["tickers:BTC-USDT"], 1512)) == documented
    unsub = json.loads(rules.unsubscribe_message(["tickers:BTC-USDT"], 3))
    expected = dict(fixture_message("unsubscribe_request"), id="3")
    assert unsub == expected
    several = json.loads(rules.subscribe_message(["books:BTC-USDT", "trades:ETH-USDT"], 9))
    assert several["args"] == [
        {"channel": "books", "instId": "BTC-USDT"},
        {"channel": "trades", "instId": "ETH-USDT"},
    ]


def test_subscribe_refuses_wrong_url_and_oversized_requests() -> None:
    public = okx.OkxWireRules()
    business = okx.OkxWireRules("business")
    with pytest.raises(BadRequest, match="business"):
        public.subscribe_message(["candle1m:BTC-USDT"], 1)
    with pytest.raises(BadRequest, match="public"):
        business.subscribe_message(["books:BTC-USDT"], 1)
    assert business.subscribe_message(["candle1m:BTC-USDT", "trades-all:BTC-USDT"], 1)
    with pytest.raises(BadRequest):
        public.subscribe_message([], 1)
    with pytest.raises(BadRequest):
        public.subscribe_message([f"books:X{i}-USDT" for i in range(101)], 1)
    with pytest.raises(BadRequest):
        public.subscribe_message(["books:BTC-USDT"], "x" * 33)  # type: ignore[arg-type]


def test_control_replies_are_matched_by_echoed_id() -> None:
    rules = okx.OkxWireRules()
    ok = rules.control_reply(fixture_message("subscribe_response"))
    assert ok == ControlReply(1512, True)
    refused = rules.control_reply(fixture_message("error_response"))
    assert isinstance(refused, ControlReply)
    assert refused.request_id == 1512 and not refused.ok
    assert refused.error is not None and "60012" in refused.error
    unsub = {"id": "7", "event": "unsubscribe", "arg": {"channel": "books", "instId": "X"}}
    assert rules.control_reply(unsub) == ControlReply(7, True)
    assert rules.control_reply({"id": "abc", "event": "subscribe"}) == ControlReply("abc", True)
    # no id, or not a reply: not for the transport
    assert rules.control_reply(fixture_message("login_failure")) is None
    assert rules.control_reply(fixture_message("books_snapshot")) is None
    assert rules.control_reply(fixture_message("notice_service_upgrade")) is None
    assert rules.control_reply("pong") is None
    # an id no request could have carried is never handed to the transport as a key
    assert rules.control_reply({"id": ["1"], "event": "subscribe"}) == ControlReply(None, True)
    assert rules.control_reply([1]) is None
    # the id round-trips: what subscribe_message sends is what control_reply gives back
    sent = json.loads(rules.subscribe_message(["books:BTC-USDT"], 42))
    assert rules.control_reply({"id": sent["id"], "event": "subscribe"}) == ControlReply(42, True)


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def test_parse_markets(index: MarketIndex) -> None:
    markets = okx.parse_markets(INSTRUMENTS)
    assert set(markets) == {"BTC/USDT", "ETH/USDT", "OLD/USDT", "BCHSWAP/USDT"}
    btc = markets["BTC/USDT"]
    assert (btc.id, btc.base, btc.quote, btc.active) == ("BTC-USDT", "BTC", "USDT", True)
    assert (btc.tick_size, btc.amount_step) == ("0.1", "0.00000001")
    assert btc.price_precision == 1 and btc.amount_precision == 8
    assert markets["OLD/USDT"].active is False
    assert index.id_of("ETH/USDT") == "ETH-USDT"
    assert index.symbol_of("BTC-USDT") == "BTC/USDT"
    assert index.exchange == "okx"


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"code": "0", "data": "x"},
        {"data": []},
        {"code": "0", "data": [5]},
        {"code": "0", "data": [{"baseCcy": "BTC", "quoteCcy": "USDT"}]},
        {"code": "0", "data": [{"instId": "A-B", "baseCcy": 1, "quoteCcy": "B"}]},
    ],
)
def test_parse_markets_malformed(doc: Any) -> None:
    with pytest.raises(MalformedMessage):
        okx.parse_markets(doc)


def test_rest_answer_with_error_code_raises_typed_error() -> None:
    with pytest.raises(BadSymbol):
        okx.parse_markets({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
    with pytest.raises(RateLimitExceeded):
        okx.parse_order_book("BTC/USDT", {"code": "50011", "msg": "Too Many Requests"})


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def _pairs(levels: list[list[str]]) -> list[tuple[str, str]]:
    return [(lv[0], lv[1]) for lv in levels]


def test_books_snapshot_and_update(parser: okx.OkxParser) -> None:
    raw = fixture_message("books_snapshot")
    [msg] = parser.parse(raw)  # type: ignore[misc]
    assert isinstance(msg, OkxBookMessage)
    assert msg.channel == "books" and msg.checksum == 0 and msg.symbol == "BTC/USDT"
    snap = msg.event
    assert type(snap) is BookSnapshot
    assert snap.nonce == 123456 and snap.timestamp == 1597026383085
    assert snap.bids == _pairs(raw["data"][0]["bids"])
    assert snap.asks == _pairs(raw["data"][0]["asks"])
    assert snap.bids[0] == ("8476.97", "256")  # strings exactly as sent

    [upd] = parser.parse(fixture_message("books_update"))  # type: ignore[misc]
    assert isinstance(upd, OkxBookMessage)
    delta = upd.event
    assert type(delta) is BookDelta
    assert (delta.nonce, delta.prev_id, delta.first_id) == (123457, 123456, None)
    assert delta.timestamp == 1597026383085


def test_books_checksum_field_is_kept(parser: okx.OkxParser) -> None:
    raw = fixture_message("books_update")
    raw["data"][0]["checksum"] = -1881014294
    [msg] = parser.parse(raw)  # type: ignore[misc]
    assert msg.checksum == -1881014294  # type: ignore[union-attr]
    raw["arg"]["channel"] = "books50-l2-tbt"
    [msg] = parser.parse(raw)  # type: ignore[misc]
    assert msg.channel == "books50-l2-tbt"  # type: ignore[union-attr]


def test_books5_and_bbo_tbt_are_whole_books(parser: okx.OkxParser) -> None:
    [five] = parser.parse(fixture_message("books5"))  # type: ignore[misc]
    assert type(five) is BookSnapshot
    assert five.symbol == "BCHSWAP/USDT" and five.nonce == 363996337
    assert len(five.bids) == len(five.asks) == 5
    assert five.asks[0] == ("111.06", "55154") and five.bids[-1] == ("111.01", "65090")
    [bbo] = parser.parse(fixture_message("bbo_tbt"))  # type: ignore[misc]
    assert bbo == BookSnapshot(
        "BCHSWAP/USDT", [("111.05", "57745")], [("111.06", "55154")], 363996337, 1670324386802
    )


def test_trades(parser: okx.OkxParser) -> None:
    [trade] = parser.parse(fixture_message("trades"))  # type: ignore[misc]
    assert trade == Trade(
        "BTC/USDT", "130639474", 1630048897897, "42219.9", "0.12060306", "buy", "taker"
    )
    raw = fixture_message("trades")
    raw["arg"]["channel"] = "trades-all"
    raw["data"].append(dict(raw["data"][0], tradeId="130639475", side="sell"))
    trades = parser.parse(raw)
    assert [t.side for t in trades] == ["buy", "sell"]  # type: ignore[union-attr]


def test_tickers(parser: okx.OkxParser) -> None:
    [ticker] = parser.parse(fixture_message("tickers"))  # type: ignore[misc]
    assert ticker == Ticker(
        "BTC/USDT",
        timestamp=1597026383085,
        bid="8888.88",
        bid_volume="5",
        ask="9999.99",
        ask_volume="11",
        last="9999.99",
        open="9000",
        high="10000",
        low="8888.88",
        close="9999.99",
        base_volume="2222",
        quote_volume="2222",
    )
    raw = fixture_message("tickers")
    raw["data"][0]["bidPx"] = ""  # OKX sends "" when a side is empty
    [ticker] = parser.parse(raw)  # type: ignore[misc]
    assert ticker.bid is None  # type: ignore[union-attr]


def test_candles(parser: okx.OkxParser) -> None:
    [candle] = parser.parse(fixture_message("candle1D"))  # type: ignore[misc]
    # candle1D is aligned to UTC+8, so it is not the unified (UTC) "1d"
    assert candle == Candle(
        "BTC/USDT", "1d@+08:00", 1597026383085, "8533.02", "8553.74", "8527.17", "8548.26",
        "45247", False,
    )  # fmt: skip
    raw = fixture_message("candle1D")
    raw["arg"]["channel"] = "candle1m"
    raw["data"][0][8] = "1"
    [candle] = parser.parse(raw)  # type: ignore[misc]
    assert candle.timeframe == "1m" and candle.closed  # type: ignore[union-attr]
    raw["arg"]["channel"] = "candle1Dutc"
    [candle] = parser.parse(raw)  # type: ignore[misc]
    assert candle.timeframe == "1d"  # type: ignore[union-attr]


def test_control_events_notice_error_and_pong(parser: okx.OkxParser) -> None:
    assert parser.parse(fixture_message("subscribe_response")) == ControlReply(1512, True)
    assert parser.parse(fixture_message("login_success")) == ControlReply(None, True)
    notice = parser.parse(fixture_message("notice_service_upgrade"))
    assert isinstance(notice, ServerShutdown)
    assert notice.exchange == "okx" and "64008" in notice.reason
    error = parser.parse(fixture_message("error_response"))
    assert isinstance(error, OkxError)
    assert (error.code, error.request_id, error.conn_id) == ("60012", 1512, "a4d3ae55")
    assert isinstance(error.exception(), BadRequest)
    login = parser.parse(fixture_message("login_failure"))
    assert isinstance(login, OkxError) and login.request_id is None
    assert isinstance(login.exception(), AuthenticationError)
    vip = OkxError("64003", "not allowed")
    assert isinstance(vip.exception(), PermissionDenied)
    assert isinstance(OkxError("69999", "?").exception(), ExchangeError)
    assert isinstance(parser.parse("pong"), Pong)
    assert isinstance(parser.parse(b"pong"), Pong)


@pytest.mark.parametrize(
    "message,reason",
    [
        ({"event": "notice", "code": "12345", "msg": "x"}, "notice"),
        ({"event": "channel-conn-count", "channel": "orders", "connCount": "2"}, "event"),
        ({"arg": {"channel": "books", "instId": "NOPE-USDT"}, "data": []}, "market list"),
        ({"arg": {"channel": "mark-price", "instId": "BTC-USDT"}, "data": []}, "no parser"),
        ({"arg": {"channel": "candle7m", "instId": "BTC-USDT"}, "data": []}, "no parser"),
        ({"arg": {"channel": "books"}, "data": []}, "instId"),
        ({"hello": "world"}, "without"),
    ],
)
def test_unknown_messages(parser: okx.OkxParser, message: Any, reason: str) -> None:
    outcome = parser.parse(message)
    assert isinstance(outcome, Unknown)
    assert reason in outcome.reason


def test_unknown_route_is_cached_but_keeps_its_message(parser: okx.OkxParser) -> None:
    a = {"arg": {"channel": "books", "instId": "NOPE-USDT"}, "data": [1]}
    b = {"arg": {"channel": "books", "instId": "NOPE-USDT"}, "data": [2]}
    assert parser.parse(a).message is a  # type: ignore[union-attr]
    assert parser.parse(b).message is b  # type: ignore[union-attr]


def _book_push(channel: str = "books", action: Any = "update", **item: Any) -> dict[str, Any]:
    data = {"asks": [], "bids": [], "ts": "1", "checksum": 0, "prevSeqId": 1, "seqId": 2}
    data.update(item)
    return {"arg": {"channel": channel, "instId": "BTC-USDT"}, "action": action, "data": [data]}


@pytest.mark.parametrize(
    "message",
    [
        5,
        "ping",
        [1, 2],
        None,
        {"arg": "books", "data": []},
        {"arg": {"channel": ["books"], "instId": "BTC-USDT"}, "data": []},
        {"arg": {"channel": 5, "instId": "BTC-USDT"}, "data": []},
        {"arg": {"channel": "books", "instId": "BTC-USDT"}, "data": {"x": 1}},
        _book_push(action=None),
        _book_push(action="partial"),
        _book_push(seqId="2"),
        _book_push(prevSeqId=None),
        _book_push(seqId=True),
        _book_push(checksum="0"),
        _book_push(ts="12a"),
        _book_push(asks=[["1", 2, "0", "1"]]),
        _book_push(asks=[["1"]]),
        _book_push(asks=["1", "2"]),
        _book_push(bids=None),
        _book_push("books5", seqId="x"),
        _book_push("bbo-tbt", asks=[[1, 2]]),
        {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update", "data": [5]},
        {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [{"tradeId": 1}]},
        {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [[]]},
        {
            "arg": {"channel": "trades", "instId": "BTC-USDT"},
            "data": [{"tradeId": "1", "px": "1", "sz": "1", "side": "up", "ts": "1"}],
        },
        {"arg": {"channel": "tickers", "instId": "BTC-USDT"}, "data": [{"last": 5}]},
        {"arg": {"channel": "tickers", "instId": "BTC-USDT"}, "data": ["x"]},
        {"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": [["1", "2"]]},
        {"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": [[1, 2, 3, 4, 5, 6]]},
        {
            "arg": {"channel": "candle1m", "instId": "BTC-USDT"},
            "data": [["1", "1", "1", "1", "1", "1", "1", "1", "2"]],
        },
        {"event": "error", "code": 60012, "msg": "x"},
        {"event": "error", "code": "60012", "msg": ["x"]},
    ],
)
def test_malformed_messages_raise_malformed_message(parser: okx.OkxParser, message: Any) -> None:
    with pytest.raises(MalformedMessage):
        parser.parse(message)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_channels = st.sampled_from(
    ["books", "books5", "bbo-tbt", "books-l2-tbt", "trades", "trades-all", "tickers",
     "candle1m", "candle1D", "mark-price"]
)  # fmt: skip
_item_keys = st.sampled_from(
    ["asks", "bids", "ts", "seqId", "prevSeqId", "checksum", "tradeId", "px", "sz", "side",
     "last", "bidPx"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    channel=_channels,
    action=st.sampled_from(["snapshot", "update", None, 5]),
    item=st.dictionaries(_item_keys, _json, max_size=6),
    data=_json,
    raw=_json,
)
def test_fuzz_only_typed_outcomes(
    channel: str, action: Any, item: dict[str, Any], data: Any, raw: Any
) -> None:
    parser = okx.OkxParser(okx.market_index(INSTRUMENTS))
    pushes = [
        {"arg": {"channel": channel, "instId": "BTC-USDT"}, "action": action, "data": [item]},
        {"arg": {"channel": channel, "instId": "BTC-USDT"}, "data": data},
        {"event": data, "code": data, "msg": data, "id": data},
        raw,
    ]
    for message in pushes:
        try:
            outcome = parser.parse(message)
        except MalformedMessage:
            continue
        assert isinstance(outcome, (list, ControlReply, ServerShutdown, OkxError, Pong, Unknown))


def test_parser_is_cached_per_index(index: MarketIndex) -> None:
    message = fixture_message("trades")
    assert okx.parse_message(message, index) == okx.OkxParser(index).parse(message)
    assert okx._parsers[index] is okx._parsers[index]


# ---------------------------------------------------------------------------
# Checksum
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector_id",
    ["okx.book.checksum.example1_both_sides", "okx.book.checksum.example2_uneven_sides"],
)
def test_checksum_vectors(vector_id: str) -> None:
    v = CHECKSUMS[vector_id]
    assert okx_checksum_string(v["bids"], v["asks"]) == v["check_string"]
    assert okx_checksum(v["bids"], v["asks"]) == v["expected_signed"] == v["published_expected"]
    # the same levels as (price, amount) pairs, and read back from a real book
    bids, asks = _pairs(v["bids"]), _pairs(v["asks"])
    assert okx_checksum(bids, asks) == v["expected_signed"]
    book = OrderBook("X/Y")
    book.apply_snapshot(BookSnapshot("X/Y", list(reversed(bids)), list(reversed(asks))))
    assert okx_checksum(book.top("bids", 25), book.top("asks", 25)) == v["expected_signed"]


def test_inconsistent_docs_snapshot_vector_computes_documented_value() -> None:
    v = CHECKSUMS["okx.book.checksum.snapshot_example_NOT_CONSISTENT"]
    assert okx_checksum_string(v["bids"], v["asks"]) == v["check_string"]
    assert okx_checksum(v["bids"], v["asks"]) == v["expected_signed"] == -2102840145
    assert okx_checksum(v["bids"], v["asks"]) != v["published_value_in_docs"]


def test_checksum_is_signed_and_covers_25_levels() -> None:
    bids = [(str(1000 - i), "1") for i in range(30)]
    asks = [(str(1001 + i), "2") for i in range(30)]
    text = okx_checksum_string(bids, asks)
    assert text.count(":") == 25 * 4 - 1
    fields = text.split(":")
    assert fields[-4:] == ["976", "1", "1025", "2"]  # the 25th levels
    assert "975" not in fields and "1026" not in fields
    unsigned = zlib.crc32(text.encode())
    expected = unsigned - 2**32 if unsigned >= 2**31 else unsigned
    assert okx_checksum(bids, asks) == expected
    assert okx_checksum(bids[:25], asks[:25]) == expected  # deeper levels do not count
    assert okx_checksum([], []) == 0
    # find a book whose CRC is above 2**31 and check it comes out negative
    for n in range(1, 50):
        levels = [(str(n), "1")]
        if zlib.crc32(okx_checksum_string(levels, []).encode()) >= 2**31:
            assert okx_checksum(levels, []) < 0
            break
    else:  # pragma: no cover
        pytest.fail("no negative checksum found")


# ---------------------------------------------------------------------------
# Book sync: the seqId chain
# ---------------------------------------------------------------------------

SYM = "BTC/USDT"


def snap(seq: int, bids: Any = (), asks: Any = (), checksum: int = 0) -> OkxBookMessage:
    return OkxBookMessage(BookSnapshot(SYM, list(bids), list(asks), seq, 1), checksum)


def upd(
    prev: int, seq: int, bids: Any = (("1", "1"),), asks: Any = (), checksum: int = 0
) -> OkxBookMessage:
    return OkxBookMessage(BookDelta(SYM, list(bids), list(asks), seq, None, prev, 1), checksum)


def keepalive(seq: int) -> OkxBookMessage:
    return upd(seq, seq, bids=())


def rest(seq: int | None, bids: Any = (), asks: Any = ()) -> BookSnapshot:
    return BookSnapshot(SYM, list(bids), list(asks), seq, 1)


def test_documented_sequence_example_is_accepted_through_parser(parser: okx.OkxParser) -> None:
    """Snapshot 10, update 10->15, keep-alive 15->15, reset 15->3, update 3->5."""
    sync = OkxBookSync(SYM)
    actions = []
    for i, step in enumerate(fixture_message("books_seq_example_sequence")):
        item = {"asks": [["2", "1", "0", "1"]], "bids": [["1", "1", "0", "1"]], "ts": "1"}
        item.update(step)
        message = _book_push(action="snapshot" if i == 0 else "update", **item)
        [push] = parser.parse(message)  # type: ignore[misc]
        actions.append(sync.on_message(push))  # type: ignore[arg-type]
    assert [type(a) for a in actions] == [ApplySnapshot, ApplyDelta, Ignore, ApplyDelta, ApplyDelta]
    assert actions[2] == Ignore("keep-alive: no change")
    assert sync.state == "synced" and sync.seq_id == 5


def test_gap_resyncs_and_rest_snapshot_recovers() -> None:
    sync = OkxBookSync(SYM)
    assert isinstance(sync.on_message(snap(100)), ApplySnapshot)
    assert isinstance(sync.on_message(upd(100, 105)), ApplyDelta)
    gap = sync.on_message(upd(110, 120))  # 105..110 missed
    assert isinstance(gap, Resync) and gap.first_prev_seq_id == 110
    assert "gap" in gap.reason
    assert sync.state == "waiting" and sync.fetching
    assert sync.on_message(upd(120, 125)) == Buffer(110, 2)
    assert sync.on_snapshot(rest(108)) == SnapshotTooOld(108, 110)
    assert sync.on_message(upd(125, 130)) == Buffer(110, 3)
    result = sync.on_snapshot(rest(122))
    assert isinstance(result, ApplySnapshot)
    # 110->120 is older than the snapshot; 120->125 straddles it; 125->130 follows
    assert [d.nonce for d in result.deltas] == [125, 130]
    assert result.seq_id == 130 and result.checksum is None
    assert sync.state == "synced" and not sync.fetching
    assert isinstance(sync.on_message(upd(130, 131)), ApplyDelta)


def test_stale_duplicates_are_ignored_not_gaps() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(snap(10))
    sync.on_message(upd(10, 15))
    sync.on_message(upd(15, 20))
    assert isinstance(sync.on_message(upd(10, 15)), Ignore)
    assert isinstance(sync.on_message(keepalive(15)), Ignore)
    assert sync.seq_id == 20 and sync.state == "synced"
    assert isinstance(sync.on_message(upd(20, 21)), ApplyDelta)


def test_keepalive_that_does_not_chain_is_a_gap() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(snap(10))
    assert isinstance(sync.on_message(keepalive(12)), Resync)


def test_sequence_reset_must_chain() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(snap(1000))
    assert isinstance(sync.on_message(upd(1000, 7)), ApplyDelta)  # documented reset
    assert sync.seq_id == 7
    assert isinstance(sync.on_message(upd(7, 9)), ApplyDelta)
    # a reset that does not follow the last seqId: updates before it were missed
    action = sync.on_message(upd(12, 2))
    assert isinstance(action, Resync) and action.first_prev_seq_id is None
    assert sync.buffered == ()
    # the next update starts the new buffer; a fetch is already under way
    assert sync.on_message(upd(2, 4)) == Buffer(2, 1, restarted=True)


def test_channel_snapshot_replaces_the_book_at_any_time() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(snap(10))
    sync.on_message(upd(10, 11))
    again = sync.on_message(snap(500))
    assert isinstance(again, ApplySnapshot) and again.seq_id == 500
    assert isinstance(sync.on_message(upd(500, 501)), ApplyDelta)
    assert isinstance(sync.on_message(upd(11, 12)), Ignore)  # from before the snapshot
    assert isinstance(sync.on_message(upd(600, 601)), Resync)


def test_bad_input_to_sync() -> None:
    sync = OkxBookSync(SYM)
    with pytest.raises(ProtocolViolation):
        sync.on_message(OkxBookMessage(BookDelta(SYM, [], [], 5, None, None)))
    with pytest.raises(ProtocolViolation):
        sync.on_snapshot(rest(None))
    with pytest.raises(BadRequest):
        sync.on_message(OkxBookMessage(BookSnapshot("ETH/USDT", [], [], 1)))
    with pytest.raises(BadRequest):
        sync.on_snapshot(BookSnapshot("ETH/USDT", [], [], 1))
    with pytest.raises(BadRequest):
        OkxBookSync(SYM, snapshots="never")  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        OkxBookSync(SYM, max_buffer=0)


# ---------------------------------------------------------------------------
# Book sync: REST snapshot mode (no snapshot push)
# ---------------------------------------------------------------------------


def test_rest_mode_buffers_and_joins() -> None:
    sync = OkxBookSync(SYM)  # "auto": the first message is an update, so REST it is
    assert sync.on_message(upd(50, 55)) == NeedSnapshot(50)
    assert sync.on_message(keepalive(55)) == Buffer(50, 1)  # not buffered, still chains
    assert sync.on_message(upd(55, 60)) == Buffer(50, 2)
    assert sync.on_message(upd(55, 60)).reason.startswith("old duplicate")  # type: ignore[union-attr]
    assert sync.first_prev_seq_id == 50 and len(sync.buffered) == 2
    result = sync.on_snapshot(rest(57))
    assert isinstance(result, ApplySnapshot)
    assert [d.nonce for d in result.deltas] == [60] and result.seq_id == 60
    assert sync.seq_id == 60 and sync.state == "synced"


def test_rest_snapshot_newer_than_every_buffered_update_joins_the_next_one() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(upd(50, 55))
    result = sync.on_snapshot(rest(58))
    assert isinstance(result, ApplySnapshot) and result.deltas == () and result.seq_id == 58
    assert isinstance(sync.on_message(upd(55, 57)), Ignore)  # older than the snapshot
    assert isinstance(sync.on_message(upd(57, 61)), ApplyDelta)  # straddles 58
    assert isinstance(sync.on_message(upd(61, 62)), ApplyDelta)  # then the strict chain
    assert isinstance(sync.on_message(upd(63, 64)), Resync)


def test_rest_snapshot_then_update_after_a_hole_is_a_gap() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(upd(50, 55))
    sync.on_snapshot(rest(58))
    action = sync.on_message(upd(59, 61))
    assert isinstance(action, Resync) and action.first_prev_seq_id == 59


def test_rest_mode_ignores_snapshot_pushes() -> None:
    sync = OkxBookSync(SYM, snapshots="rest")
    assert isinstance(sync.on_message(snap(40)), Ignore)
    assert sync.on_message(upd(40, 45)) == NeedSnapshot(40)
    result = sync.on_snapshot(rest(40))
    assert isinstance(result, ApplySnapshot) and [d.nonce for d in result.deltas] == [45]
    assert isinstance(sync.on_message(snap(99)), Ignore)
    assert sync.seq_id == 45


def test_auto_mode_takes_a_snapshot_push_while_fetching() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(upd(50, 55))  # NeedSnapshot
    assert isinstance(sync.on_message(snap(60)), ApplySnapshot)
    assert isinstance(sync.on_snapshot(rest(70)), Ignore)  # late: already synced
    assert not sync.fetching


def test_gap_inside_the_buffer_restarts_it() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(upd(50, 55))
    assert sync.on_message(upd(58, 60)) == Buffer(58, 1, restarted=True)
    assert sync.on_snapshot(rest(56)) == SnapshotTooOld(56, 58)
    assert isinstance(sync.on_snapshot(rest(59)), ApplySnapshot)


def test_buffer_limit_restarts_the_buffer() -> None:
    sync = OkxBookSync(SYM, max_buffer=3)
    sync.on_message(upd(1, 2))
    sync.on_message(upd(2, 3))
    sync.on_message(upd(3, 4))
    assert sync.on_message(upd(4, 5)) == Buffer(4, 1, restarted=True)


def test_reset_while_fetching_refuses_the_snapshot_in_flight() -> None:
    sync = OkxBookSync(SYM)
    assert sync.on_message(upd(900, 905)) == NeedSnapshot(900)
    assert sync.on_message(upd(905, 3)) == Buffer(None, 0, restarted=True)  # reset
    assert sync.on_message(upd(3, 6)) == Buffer(3, 1, restarted=True)
    # the snapshot asked for before the reset is numbered the old way: refuse it
    refused = sync.on_snapshot(rest(950))
    assert isinstance(refused, SnapshotTooOld) and "reset" in refused.reason
    assert sync.fetching
    result = sync.on_snapshot(rest(4))
    assert isinstance(result, ApplySnapshot) and [d.nonce for d in result.deltas] == [6]


def test_reset_before_anything_was_buffered_is_skipped() -> None:
    sync = OkxBookSync(SYM)
    assert isinstance(sync.on_message(upd(905, 3)), Ignore)
    assert sync.on_message(upd(3, 6)) == NeedSnapshot(3)


def test_reset_right_after_a_rest_snapshot_resyncs() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(upd(50, 55))
    sync.on_snapshot(rest(58))
    assert isinstance(sync.on_message(upd(58, 2)), Resync)


def test_reset_clears_everything() -> None:
    sync = OkxBookSync(SYM)
    sync.on_message(upd(50, 55))
    sync.reset()
    assert sync.state == "waiting" and not sync.fetching and sync.buffered == ()
    assert sync.on_message(upd(70, 71)) == NeedSnapshot(70)
    assert "waiting" in repr(sync)
    sync.on_snapshot(rest(71))
    assert "synced at 71" in repr(sync)


# ---------------------------------------------------------------------------
# Book sync: checksums against a real OrderBook
# ---------------------------------------------------------------------------

BIDS = [("3366.1", "7"), ("3366", "6")]
ASKS = [("3366.8", "9"), ("3368", "8")]


def _run(sync: OkxBookSync, book: OrderBook, message: OkxBookMessage) -> Any:
    action = sync.on_message(message)
    if isinstance(action, ApplySnapshot):
        book.apply_snapshot(action.snapshot)
        for delta in action.deltas:
            book.apply_delta(delta)
    elif isinstance(action, ApplyDelta):
        book.apply_delta(action.delta)
    else:
        return action
    return sync.verify(book.top) or action


def test_checksum_verified_after_applying() -> None:
    sync = OkxBookSync(SYM)
    book = OrderBook(SYM)
    first = _run(sync, book, snap(1, BIDS, ASKS, checksum=-1881014294))
    assert isinstance(first, ApplySnapshot)  # example 1 of the docs matches
    # delete bid 3366 and add ask 3372: the book becomes example 2 of the docs
    second = _run(sync, book, upd(1, 2, [("3366", "0")], [("3372", "8")], checksum=831078360))
    assert isinstance(second, ApplyDelta)
    assert okx_checksum_string(book.top("bids", 25), book.top("asks", 25)) == (
        "3366.1:7:3366.8:9:3368:8:3372:8"
    )


def test_checksum_mismatch_is_detected_and_resyncs() -> None:
    sync = OkxBookSync(SYM)
    book = OrderBook(SYM)
    _run(sync, book, snap(1, BIDS, ASKS, checksum=-1881014294))
    # OKX says the book is example 2, but the update we got changes something else
    action = _run(sync, book, upd(1, 2, [("3366", "5")], checksum=831078360))
    assert isinstance(action, Resync) and "checksum mismatch" in action.reason
    assert sync.state == "waiting" and sync.fetching
    # recovery: the next update is buffered, a REST snapshot joins it
    assert sync.on_message(upd(2, 3)) == Buffer(2, 1, restarted=True)
    assert isinstance(sync.on_snapshot(rest(2, BIDS, ASKS)), ApplySnapshot)


def test_bad_snapshot_checksum_is_detected() -> None:
    sync = OkxBookSync(SYM)
    book = OrderBook(SYM)
    assert isinstance(_run(sync, book, snap(1, BIDS, ASKS, checksum=12345)), Resync)


def test_zero_checksum_and_disabled_verification_skip_the_check() -> None:
    for sync, checksum in ((OkxBookSync(SYM), 0), (OkxBookSync(SYM, verify_checksum=False), 5)):
        book = OrderBook(SYM)
        action = _run(sync, book, snap(1, BIDS, ASKS, checksum=checksum))
        assert isinstance(action, ApplySnapshot) and action.checksum is None
        calls: list[Any] = []

        def top(side: Any, n: int, calls: list[Any] = calls) -> list[Any]:
            calls.append(side)
            return []

        assert sync.verify(top) is None
        assert calls == []


def test_rest_join_verifies_the_last_buffered_checksum() -> None:
    sync = OkxBookSync(SYM)
    book = OrderBook(SYM)
    sync.on_message(upd(1, 2, [("3366", "0")], [("3372", "8")], checksum=831078360))
    result = sync.on_snapshot(rest(1, BIDS, ASKS))
    assert isinstance(result, ApplySnapshot) and result.checksum == 831078360
    book.apply_snapshot(result.snapshot)
    for delta in result.deltas:
        book.apply_delta(delta)
    assert sync.verify(book.top) is None


# ---------------------------------------------------------------------------
# Book sync against a simulated market (gaps, REST joins, checksums)
# ---------------------------------------------------------------------------


def test_sync_against_simulated_market() -> None:
    market = SimulatedMarket([SYM], seed=7, levels=40, ids_per_update=3)
    parser = okx.OkxParser(okx.market_index(INSTRUMENTS))
    sync = OkxBookSync(SYM)
    book = OrderBook(SYM)
    fetch_at: int | None = None
    fetch_seq: int | None = None
    verified = resyncs = 0

    def wire(update: Any, action: str = "update") -> dict[str, Any]:
        true_bids, true_asks = market.book_at(SYM, update.last_id)
        return _book_push(
            action=action,
            bids=[[p, a, "0", "1"] for p, a in update.bids],
            asks=[[p, a, "0", "1"] for p, a in update.asks],
            ts=str(update.timestamp),
            seqId=update.last_id,
            prevSeqId=update.first_id - 1,
            checksum=okx_checksum(true_bids[:25], true_asks[:25]),
        )

    for n in range(1200):
        update = market.step_symbol(SYM)
        if n in (300, 800):
            continue  # the client never sees these: gaps
        [push] = parser.parse(wire(update))  # type: ignore[misc]
        action = sync.on_message(push)  # type: ignore[arg-type]
        if isinstance(action, ApplyDelta):
            book.apply_delta(action.delta)
            assert sync.verify(book.top) is None
        elif isinstance(action, (NeedSnapshot, Resync)):
            if isinstance(action, Resync):
                resyncs += 1
                book.mark_stale(action.reason)
            # REST answers a few updates later, at an id that may fall inside an update
            fetch_at = n + 4
            fetch_seq = market.last_update_id(SYM) + 5
        if fetch_at == n:
            assert fetch_seq is not None
            bids, asks = market.book_at(SYM, fetch_seq)
            payload = {
                "code": "0",
                "msg": "",
                "data": [
                    {
                        "asks": [[p, a, "0", "1"] for p, a in asks],
                        "bids": [[p, a, "0", "1"] for p, a in bids],
                        "ts": "1",
                        "seqId": fetch_seq,
                    }
                ],
            }
            result = sync.on_snapshot(okx.parse_order_book(SYM, payload))
            assert isinstance(result, ApplySnapshot)
            book.apply_snapshot(result.snapshot)
            for delta in result.deltas:
                book.apply_delta(delta)
            assert sync.verify(book.top) is None
            fetch_at = None
        if sync.state == "synced" and n % 25 == 0 and sync.seq_id is not None:
            true_bids, true_asks = market.book_at(SYM, sync.seq_id)
            snapshot = book.snapshot()
            assert list(snapshot.bids) == [tuple(b) for b in true_bids]
            assert list(snapshot.asks) == [tuple(a) for a in true_asks]
            verified += 1
    assert resyncs == 2
    assert verified >= 30
    assert sync.state == "synced"


def test_simulated_divergence_is_caught_by_checksum() -> None:
    market = SimulatedMarket([SYM], seed=3, levels=30)
    parser = okx.OkxParser(okx.market_index(INSTRUMENTS))
    sync = OkxBookSync(SYM)
    book = OrderBook(SYM)
    bids, asks, last = market.book(SYM)
    first = sync.on_message(snap(last, bids, asks, okx_checksum(bids[:25], asks[:25])))
    assert isinstance(first, ApplySnapshot)
    book.apply_snapshot(first.snapshot)
    assert sync.verify(book.top) is None
    # corrupt our copy of the best bid: the next checksum must catch it
    best = book.top("bids", 1)[0]
    book.apply_delta(BookDelta(SYM, [(best[0], best[1] + "1")], []))
    update = market.step_symbol(SYM)
    tb, ta = market.book_at(SYM, update.last_id)
    message = _book_push(
        bids=[[p, a, "0", "1"] for p, a in update.bids],
        asks=[[p, a, "0", "1"] for p, a in update.asks],
        seqId=update.last_id,
        prevSeqId=update.first_id - 1,
        checksum=okx_checksum(tb[:25], ta[:25]),
    )
    [push] = parser.parse(message)  # type: ignore[misc]
    action = sync.on_message(push)  # type: ignore[arg-type]
    assert isinstance(action, ApplyDelta)
    book.apply_delta(action.delta)
    if best[0] not in {p for p, _ in update.bids}:
        assert isinstance(sync.verify(book.top), Resync)


# ---------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------


def test_rest_requests() -> None:
    assert okx.instruments_request() == RestRequest(
        "GET", "/api/v5/public/instruments", {"instType": "SPOT"}
    )
    books = okx.book_snapshot_request("BTC-USDT", 400)
    assert books.url("https://www.okx.com") == (
        "https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400"
    )
    assert okx.book_snapshot_request("BTC-USDT", 50, source=0).params == {
        "instId": "BTC-USDT",
        "sz": 50,
        "source": 0,
    }
    assert okx.BOOK_SNAPSHOT_DEPTH["books50-l2-tbt"] == 50
    candles = okx.candles_request("BTC-USDT", "1h", after=1700000000000, limit=300)
    assert candles.path == "/api/v5/market/candles"
    assert candles.query_string() == "instId=BTC-USDT&bar=1H&after=1700000000000&limit=300"
    assert okx.trades_request("BTC-USDT", 500).query_string() == "instId=BTC-USDT&limit=500"
    assert okx.ticker_request("BTC-USDT").path == "/api/v5/market/ticker"
    assert okx.tickers_request().params == {"instType": "SPOT"}
    for call in (
        lambda: okx.book_snapshot_request("BTC-USDT", 401),
        lambda: okx.book_snapshot_request("BTC-USDT", 0),
        lambda: okx.candles_request("BTC-USDT", "1m", limit=301),
        lambda: okx.candles_request("BTC-USDT", "2m"),
        lambda: okx.trades_request("BTC-USDT", 501),
        lambda: okx.ticker_request(""),
    ):
        with pytest.raises(BadRequest):
            call()


def test_parse_order_book_documented_example() -> None:
    snapshot = okx.parse_order_book(SYM, fixture_message("rest_books_snapshot"))
    assert snapshot == BookSnapshot(
        SYM, [("41006.3", "0.30178218")], [("41006.8", "0.60038921")], 3235851742, 1629966436396
    )
    no_seq = fixture_message("rest_books_snapshot")
    del no_seq["data"][0]["seqId"]
    assert okx.parse_order_book(SYM, no_seq).nonce is None
    for bad in ({"code": "0", "data": []}, {"code": "0", "data": [{"bids": [], "asks": 5}]}):
        with pytest.raises(MalformedMessage):
            okx.parse_order_book(SYM, bad)


def test_parse_candles_oldest_first() -> None:
    payload = {
        "code": "0",
        "msg": "",
        "data": [
            ["1700000120000", "3", "4", "2", "3.5", "10", "35", "35", "0"],
            ["1700000060000", "2", "3", "1", "3", "11", "33", "33", "1"],
        ],
    }
    candles = okx.parse_candles(SYM, "1m", payload)
    assert [c.timestamp for c in candles] == [1700000060000, 1700000120000]
    assert candles[0] == Candle(SYM, "1m", 1700000060000, "2", "3", "1", "3", "11", True)
    assert candles[1].closed is False


def test_parse_rest_trades_oldest_first() -> None:
    row = {"instId": "BTC-USDT", "px": "1", "sz": "2", "side": "sell", "ts": "10"}
    payload = {
        "code": "0",
        "data": [
            dict(row, tradeId="12", ts="11"),
            dict(row, tradeId="11"),
            dict(row, tradeId="10"),
        ],
    }
    trades = okx.parse_rest_trades(SYM, payload)
    assert [t.id for t in trades] == ["10", "11", "12"]
    assert trades[0] == Trade(SYM, "10", 10, "1", "2", "sell", "taker")


def test_parse_tickers(index: MarketIndex) -> None:
    row = fixture_message("tickers")["data"][0]
    payload = {"code": "0", "data": [row, dict(row, instId="NOPE-USDT")]}
    [ticker] = okx.parse_tickers(payload, index)
    assert ticker.symbol == SYM and ticker.last == "9999.99"
    with pytest.raises(MalformedMessage):
        okx.parse_tickers({"code": "0", "data": [{"last": "1"}]}, index)


def test_rest_errors() -> None:
    limited = okx.parse_rest_error(
        429, Headers({b"Retry-After": [b"2"]}), b'{"code":"50011","msg":"Too Many Requests"}'
    )
    assert isinstance(limited, RateLimitExceeded)
    assert limited.retry_after == 2.0
    assert limited.code == "50011" and limited.status == 429  # type: ignore[attr-defined]
    assert "50011" in str(limited) and "Too Many Requests" in str(limited)
    plain_429 = okx.parse_rest_error(429, {"retry-after": "1.5"}, b"")
    assert isinstance(plain_429, RateLimitExceeded) and plain_429.retry_after == 1.5
    assert isinstance(okx.parse_rest_error(400, None, {"code": "51001", "msg": "x"}), BadSymbol)
    assert isinstance(
        okx.parse_rest_error(401, None, {"code": "50113", "msg": "x"}), AuthenticationError
    )
    assert isinstance(okx.parse_rest_error(503, None, "<html>down</html>"), ExchangeNotAvailable)
    assert isinstance(okx.parse_rest_error(400, None, {"code": "50026"}), ExchangeNotAvailable)
    assert isinstance(okx.parse_rest_error(403, None, b""), PermissionDenied)
    assert isinstance(okx.parse_rest_error(404, None, b"not json"), BadRequest)
    assert isinstance(okx.parse_rest_error(200, None, {"code": 50011}), RateLimitExceeded)
    order = okx.parse_rest_error(
        200, None, {"code": "1", "msg": "", "data": [{"sCode": "51008", "sMsg": "Insufficient"}]}
    )
    assert type(order) is ExchangeError and "Insufficient" in str(order)
    assert okx.error_class("60018") is BadSymbol
    assert okx.error_class(None) is ExchangeError
