"""Unit tests for the pure Coinbase Exchange adapter (no reactor, no sockets).

Payloads come from ``../shared/protocols/vectors.json`` (Coinbase's own
documented examples; Coinbase publishes no checksum or signing vectors for the
market-data feed); the rest is written in the shapes the Coinbase docs show,
and book sequences are built by hand or from a simulated market.
"""

from __future__ import annotations

import calendar
import contextlib
import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from txexchange.adapters import Unknown, coinbase
from txexchange.adapters.coinbase import (
    ApplyDelta,
    ApplySnapshot,
    CoinbaseBookSync,
    CoinbaseError,
    CoinbaseHeartbeat,
    CoinbaseMatch,
    CoinbaseSubscriptions,
    CoinbaseTradeSync,
    CoinbaseWireRules,
    EmitTrade,
    Ignore,
    MissedTrades,
    Resync,
)
from txexchange.adapters.rest import RestRequest
from txexchange.codec import dumps, loads, loads_exact
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
from txexchange.state.book import OrderBook
from txexchange.testing.market import SimulatedMarket
from txexchange.transport.rules import WireRules

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


def _load() -> dict[str, Any]:
    if not VECTORS.exists():  # pragma: no cover - the repo is checked out beside ../shared
        pytest.skip(f"{VECTORS} not found", allow_module_level=True)
    return json.loads(VECTORS.read_text())  # type: ignore[no-any-return]


FIXTURES: dict[str, dict[str, Any]] = {
    f["name"]: f for f in _load()["fixtures"]["coinbase_exchange"]
}


def fixture(name: str) -> Any:
    return copy.deepcopy(FIXTURES[name]["message"])


PRODUCTS = [
    {
        "id": "BTC-USD",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "quote_increment": "0.01000000",
        "base_increment": "0.00000001",
        "display_name": "BTC/USD",
        "min_market_funds": "1",
        "margin_enabled": False,
        "post_only": False,
        "limit_only": False,
        "cancel_only": False,
        "status": "online",
        "status_message": "",
        "trading_disabled": False,
        "auction_mode": False,
    },
    {
        "id": "ETH-USD",
        "base_currency": "ETH",
        "quote_currency": "USD",
        "quote_increment": "0.01",
        "base_increment": "0.00000001",
        "status": "online",
    },
    {
        "id": "ETH-EUR",
        "base_currency": "ETH",
        "quote_currency": "EUR",
        "quote_increment": "0.01",
        "base_increment": "0.00000001",
        "status": "online",
        "trading_disabled": True,
    },
    {
        "id": "OLD-USD",
        "base_currency": "OLD",
        "quote_currency": "USD",
        "quote_increment": "0.0001",
        "base_increment": "1",
        "status": "delisted",
    },
]
INDEX = coinbase.market_index(PRODUCTS)
BTC = "BTC/USD"


def _ms(text: str) -> int:
    """Independent ISO-8601 -> ms for the tests (calendar.timegm, string split)."""
    date, _, rest = text.rstrip("Z").partition("T")
    clock, _, frac = rest.partition(".")
    y, mo, d = (int(x) for x in date.split("-"))
    h, mi, s = (int(x) for x in clock.split(":"))
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1000 + int((frac + "000")[:3])


def parse(message: Any) -> Any:
    return coinbase.parse_message(message, INDEX)


def one(message: Any) -> Any:
    result = parse(message)
    assert isinstance(result, list) and len(result) == 1, result
    return result[0]


# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------


def test_default_urls() -> None:
    urls = coinbase.resolve_urls()
    assert urls == {
        "ws": "wss://ws-feed.exchange.coinbase.com",
        "ws_direct": "wss://ws-direct.exchange.coinbase.com",
        "rest": "https://api.exchange.coinbase.com",
    }
    assert coinbase.resolve_urls({}) == urls


def test_url_overrides() -> None:
    urls = coinbase.resolve_urls({"ws": "ws://127.0.0.1:9000/", "rest": "http://127.0.0.1:9001"})
    assert urls["ws"] == "ws://127.0.0.1:9000"
    assert urls["rest"] == "http://127.0.0.1:9001"
    assert urls["ws_direct"] == coinbase.DEFAULT_URLS["ws_direct"]
    assert coinbase.resolve_urls(coinbase.SANDBOX_URLS)["ws"].startswith("wss://ws-feed-public")


def test_url_override_errors_name_valid_keys() -> None:
    with pytest.raises(BadRequest, match="'ws', 'ws_direct', 'rest'"):
        coinbase.resolve_urls({"public": "wss://x"})
    with pytest.raises(BadRequest, match="must start with"):
        coinbase.resolve_urls({"ws": "https://x"})
    with pytest.raises(BadRequest, match="must start with"):
        coinbase.resolve_urls({"rest": "wss://x"})
    with pytest.raises(BadRequest):
        coinbase.resolve_urls({"rest": None})  # type: ignore[dict-item]


# ---------------------------------------------------------------------------
# Topics and subscribe messages
# ---------------------------------------------------------------------------


def test_topic_builders() -> None:
    assert coinbase.level2_topic("BTC-USD") == "level2_batch:BTC-USD"
    assert coinbase.level2_topic("BTC-USD", "level2") == "level2:BTC-USD"
    assert coinbase.ticker_topic("BTC-USD") == "ticker:BTC-USD"
    assert coinbase.ticker_topic("BTC-USD", batch=True) == "ticker_batch:BTC-USD"
    assert coinbase.matches_topic("ETH-USD") == "matches:ETH-USD"
    assert coinbase.heartbeat_topic("ETH-USD") == "heartbeat:ETH-USD"
    assert coinbase.topic_parts("matches:ETH-USD") == ("matches", "ETH-USD")
    assert coinbase.level2_topic("BTC-USD", "level2_50") == "level2_50:BTC-USD"  # alias
    assert coinbase.topic_parts("ticker_1000:BTC-USD") == ("ticker_1000", "BTC-USD")
    for bad in ("", "BTC-USD", "full:BTC-USD", "ticker:", "ticker:BTC USD", "ticker:a:b", 5):
        with pytest.raises(BadRequest):
            coinbase.topic_parts(bad)
    with pytest.raises(BadRequest):
        coinbase.level2_topic("BTC-USD", "level3")


def test_with_heartbeats() -> None:
    topics = ["level2_batch:BTC-USD", "matches:BTC-USD", "ticker:ETH-USD", "heartbeat:ETH-USD"]
    assert coinbase.with_heartbeats(topics) == [
        "level2_batch:BTC-USD",
        "heartbeat:BTC-USD",
        "matches:BTC-USD",
        "ticker:ETH-USD",
        "heartbeat:ETH-USD",
    ]


def test_subscribe_reproduces_documented_flat_form() -> None:
    expected = fixture("subscribe_level2_batch")
    topics = ["level2_batch:ETH-USD", "level2_batch:BTC-USD"]
    assert coinbase.subscribe_payload("subscribe", topics) == expected
    raw = CoinbaseWireRules().subscribe_message(topics, 7)
    assert loads(raw) == expected
    assert coinbase.parse_subscribe(expected) == ("subscribe", topics)


def test_subscribe_reproduces_documented_object_form() -> None:
    expected = fixture("subscribe_heartbeat_object_form")
    topics = ["heartbeat:ETH-EUR"]
    assert coinbase.subscribe_payload("subscribe", topics, "objects") == expected
    assert loads(CoinbaseWireRules(form="objects").subscribe_message(topics, 1)) == expected
    assert coinbase.parse_subscribe(expected) == ("subscribe", topics)


def test_subscribe_mixed_topics_use_objects_and_round_trip() -> None:
    topics = ["level2_batch:BTC-USD", "heartbeat:BTC-USD", "ticker:ETH-USD", "level2_batch:BTC-USD"]
    payload = coinbase.subscribe_payload("unsubscribe", topics)
    assert payload == {
        "type": "unsubscribe",
        "channels": [
            {"name": "level2_batch", "product_ids": ["BTC-USD"]},
            {"name": "heartbeat", "product_ids": ["BTC-USD"]},
            {"name": "ticker", "product_ids": ["ETH-USD"]},
        ],
    }
    op, back = coinbase.parse_subscribe(payload)
    assert op == "unsubscribe" and back == topics[:3]
    # every channel for every product: flat
    rect = ["ticker:A-B", "matches:A-B", "ticker:C-D", "matches:C-D"]
    assert coinbase.subscribe_payload("subscribe", rect) == {
        "type": "subscribe",
        "product_ids": ["A-B", "C-D"],
        "channels": ["ticker", "matches"],
    }
    with pytest.raises(BadRequest, match="objects"):
        coinbase.subscribe_payload("subscribe", topics, "flat")


def test_parse_subscribe_mixed_form_and_errors() -> None:
    message = {
        "type": "subscribe",
        "product_ids": ["ETH-USD", "ETH-EUR"],
        "channels": ["level2_batch", "heartbeat", {"name": "ticker", "product_ids": ["BTC-USD"]}],
    }
    assert coinbase.parse_subscribe(message) == (
        "subscribe",
        [
            "level2_batch:ETH-USD",
            "level2_batch:ETH-EUR",
            "heartbeat:ETH-USD",
            "heartbeat:ETH-EUR",
            "ticker:BTC-USD",
        ],
    )
    for bad in (
        [],
        {"type": "ping"},
        {"type": "subscribe"},
        {"type": "subscribe", "channels": [5]},
        {"type": "subscribe", "channels": ["x"], "product_ids": [1]},
        {"type": "subscribe", "channels": [{"name": "x", "product_ids": [None]}]},
    ):
        with pytest.raises(MalformedMessage):
            coinbase.parse_subscribe(bad)


def test_wire_rules() -> None:
    rules = CoinbaseWireRules()
    assert isinstance(rules, WireRules)
    assert rules.replies_to_control is False
    assert rules.heartbeat is None
    assert rules.binary_compression is None
    assert rules.control_reply({"type": "subscriptions", "channels": []}) is None
    assert rules.overlap_key(b"abc") == b"abc"
    unsub = loads(rules.unsubscribe_message(["matches:BTC-USD"], 3))
    assert unsub == {"type": "unsubscribe", "product_ids": ["BTC-USD"], "channels": ["matches"]}
    with pytest.raises(BadRequest):
        rules.subscribe_message([], 1)
    with pytest.raises(BadRequest, match="per message"):
        rules.subscribe_message([f"ticker:P{i}-USD" for i in range(101)], 1)
    with pytest.raises(BadRequest):
        rules.subscribe_message(["nope:BTC-USD"], 1)
    with pytest.raises(BadRequest):
        CoinbaseWireRules(kind="private")  # type: ignore[arg-type]
    assert coinbase.SUBSCRIBE_DEADLINE == 5.0


# ---------------------------------------------------------------------------
# Fixtures parse to the right events
# ---------------------------------------------------------------------------


def test_heartbeat_fixture() -> None:
    m = fixture("heartbeat")
    hb = one(m)
    assert hb == CoinbaseHeartbeat(BTC, 90, 20, _ms(m["time"]))
    assert hb.timestamp == 1415348368464


def test_ticker_fixture() -> None:
    m = fixture("ticker")
    t = one(m)
    assert t == Ticker(
        "ETH/USD",
        timestamp=_ms(m["time"]),
        bid="1285.04",
        bid_volume="0.46688654",
        ask="1285.27",
        ask_volume="1.56637040",
        last="1285.22",
        open="1310.79",
        high="1313.8",
        low="1280.52",
        close="1285.22",
        base_volume="245532.79269678",
    )


def test_level2_snapshot_fixture() -> None:
    snap = one(fixture("level2_snapshot"))
    assert snap == BookSnapshot(BTC, [("10101.10", "0.45054140")], [("10102.55", "0.57753524")])
    assert snap.nonce is None and snap.timestamp is None


def test_l2update_fixtures() -> None:
    m = fixture("l2update_single")
    d = one(m)
    assert d == BookDelta(BTC, [("10101.80000000", "0.162567")], [], timestamp=_ms(m["time"]))
    m = fixture("l2update_multi")
    d = one(m)
    assert list(d.bids) == [("22356.270000", "0.00000000"), ("22356.300000", "1.00000000")]
    assert list(d.asks) == []
    assert d.timestamp == _ms(m["time"]) == 1659626705010
    m["changes"].append(["sell", "22357.00", "2.5"])
    assert list(one(m).asks) == [("22357.00", "2.5")]


def test_match_fixture_side_is_the_takers() -> None:
    m = fixture("match")
    match = one(m)
    assert isinstance(match, CoinbaseMatch)
    # Coinbase sends the maker's side: a resting sell was hit by a buyer.
    assert match.trade == Trade(BTC, "10", _ms(m["time"]), "400.23", "5.23512", "buy", "taker")
    assert (match.trade_id, match.sequence, match.last) == (10, 50, False)
    m["type"] = "last_match"
    m["side"] = "buy"
    lm = one(m)
    assert lm.last is True and lm.trade.side == "sell"


@pytest.mark.parametrize(
    "name", ["full_received_limit", "full_open", "full_done", "full_change_stp"]
)
def test_full_channel_fixtures_are_unknown(name: str) -> None:
    result = parse(fixture(name))
    assert isinstance(result, Unknown)
    assert "not parsed" in result.reason


def test_other_messages() -> None:
    assert isinstance(parse({"type": "brand_new_type", "x": 1}), Unknown)
    unknown_product = fixture("ticker")
    unknown_product["product_id"] = "DOGE-USD"
    result = parse(unknown_product)
    assert isinstance(result, Unknown) and "DOGE-USD" in result.reason
    subs = parse(
        {
            "type": "subscriptions",
            "channels": [
                {"name": "level2_batch", "product_ids": ["ETH-USD", "ETH-EUR"]},
                {"name": "heartbeat", "product_ids": ["ETH-USD"]},
            ],
        }
    )
    assert subs == CoinbaseSubscriptions(
        frozenset({"level2_batch:ETH-USD", "level2_batch:ETH-EUR", "heartbeat:ETH-USD"})
    )
    err = parse(
        {"type": "error", "message": "Failed to subscribe", "reason": "x is not a valid product"}
    )
    assert err == CoinbaseError("Failed to subscribe", "x is not a valid product")
    assert isinstance(err.exception(), BadSymbol)
    plain = parse({"type": "error", "message": "error message"})
    assert isinstance(plain, CoinbaseError)
    assert type(plain.exception()) is SubscriptionError
    auth = CoinbaseError("Failed to subscribe", "level2 requires authentication").exception()
    assert isinstance(auth, AuthenticationError)
    limited = CoinbaseError("rate limit exceeded").exception()
    assert isinstance(limited, RateLimitExceeded) and limited.retry_after is None


def test_timestamps_with_nanoseconds_and_without_fraction() -> None:
    m = fixture("heartbeat")
    m["time"] = "2022-10-19T23:28:22.061769123Z"
    assert one(m).timestamp == _ms("2022-10-19T23:28:22.061Z")
    m["time"] = "2022-10-19T23:28:22Z"
    assert one(m).timestamp == _ms("2022-10-19T23:28:22.000Z")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("product_id"),
        lambda m: m.update(product_id=5),
        lambda m: m.update(changes="x"),
        lambda m: m.update(changes=[["buy", "1"]]),
        lambda m: m.update(changes=[["up", "1", "2"]]),
        lambda m: m.update(changes=[["buy", None, "2"]]),
        lambda m: m.update(changes=[["buy", "1", [2]]]),
        lambda m: m.update(time="yesterday"),
        lambda m: m.update(time=12),
        lambda m: m.pop("changes"),
    ],
)
def test_malformed_l2update(mutate: Any) -> None:
    m = fixture("l2update_single")
    mutate(m)
    with pytest.raises(MalformedMessage):
        parse(m)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("trade_id"),
        lambda m: m.update(trade_id=1.5),
        lambda m: m.update(trade_id=True),
        lambda m: m.update(side="both"),
        lambda m: m.pop("price"),
        lambda m: m.update(size=None),
        lambda m: m.update(sequence="x"),
        lambda m: m.pop("time"),
    ],
)
def test_malformed_match(mutate: Any) -> None:
    m = fixture("match")
    mutate(m)
    with pytest.raises(MalformedMessage):
        parse(m)


def test_malformed_top_level() -> None:
    for bad in ([], "pong", None, 3, {"no": "type"}, {"type": 5}, {"type": "error"}):
        with pytest.raises(MalformedMessage):
            parse(bad)
    with pytest.raises(MalformedMessage):
        parse({"type": "subscriptions", "channels": "x"})
    with pytest.raises(MalformedMessage):
        parse({"type": "heartbeat", "product_id": "BTC-USD", "sequence": 1})


# ---------------------------------------------------------------------------
# Fuzz: malformed input raises only MalformedMessage
# ---------------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = ["type", "product_id", "time", "changes", "bids", "asks", "trade_id", "sequence",
           "side", "price", "size", "last_trade_id", "channels", "message", "reason"]  # fmt: skip


def _check_outcome(result: Any) -> None:
    assert isinstance(result, (list, Unknown, CoinbaseSubscriptions, CoinbaseError))


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(sorted(n for n in FIXTURES if "subscribe" not in n)),
    field=st.sampled_from(_FIELDS),
    value=_json,
)
def test_fuzz_fixture_fields(name: str, field: str, value: Any) -> None:
    m = fixture(name)
    m[field] = value
    with contextlib.suppress(MalformedMessage):
        _check_outcome(parse(m))


@settings(max_examples=300, deadline=None)
@given(value=_json)
def test_fuzz_whole_messages(value: Any) -> None:
    for message in (value, {"type": "l2update", "product_id": "BTC-USD", "changes": value},
                    {"type": "snapshot", "product_id": "BTC-USD", "bids": value, "asks": []},
                    {"type": "subscriptions", "channels": value}):  # fmt: skip
        with contextlib.suppress(MalformedMessage):
            _check_outcome(parse(message))


@settings(max_examples=200, deadline=None)
@given(value=_json)
def test_fuzz_rest_parsers(value: Any) -> None:
    for call in (
        lambda: coinbase.parse_markets(value),
        lambda: coinbase.parse_order_book(BTC, value),
        lambda: coinbase.parse_rest_trades(BTC, value),
        lambda: coinbase.parse_candles(BTC, "1m", value),
        lambda: coinbase.parse_candles(BTC, "1m", [value]),
        lambda: coinbase.parse_ticker(BTC, value),
    ):
        try:
            call()
        except (MalformedMessage, ExchangeError) as e:
            # a {"message": ...} body is the exchange's error, typed
            assert isinstance(e, ExchangeError)
    coinbase.parse_rest_error(400, None, value)


# ---------------------------------------------------------------------------
# Book sync
# ---------------------------------------------------------------------------


def _snap(bids: Any, asks: Any, ts: int | None = None) -> BookSnapshot:
    return BookSnapshot(BTC, [tuple(x) for x in bids], [tuple(x) for x in asks], None, ts)


def _delta(bids: Any = (), asks: Any = (), ts: int | None = None) -> BookDelta:
    return BookDelta(BTC, [tuple(x) for x in bids], [tuple(x) for x in asks], timestamp=ts)


class _Driver:
    """Applies sync actions to a real OrderBook, as the client glue will."""

    def __init__(self, **kw: Any) -> None:
        self.sync = CoinbaseBookSync(BTC, **kw)
        self.book = OrderBook(BTC)

    def feed(self, event: BookSnapshot | BookDelta) -> Any:
        action = self.sync.on_event(event)
        if isinstance(action, ApplySnapshot):
            self.book.apply_snapshot(action.snapshot)
        elif isinstance(action, ApplyDelta):
            self.book.apply_delta(action.delta)
        else:
            if isinstance(action, Resync):
                self.book.mark_stale(action.reason)
            return action
        verdict = self.sync.verify(self.book.top)
        if verdict is not None:
            self.book.mark_stale(verdict.reason)
            return verdict
        return action


def test_sync_snapshot_then_deltas() -> None:
    drv = _Driver()
    assert drv.sync.state == "waiting"
    assert isinstance(drv.feed(_snap([["100", "1"], ["99", "2"]], [["101", "1"]])), ApplySnapshot)
    assert drv.sync.synced
    assert isinstance(drv.feed(_delta([["100", "0"], ["99.5", "3"]], ts=10)), ApplyDelta)
    assert drv.book.top("bids", 5) == [("99.5", "3"), ("99", "2")]
    assert drv.book.top("asks", 5) == [("101", "1")]


def test_sync_delete_of_unknown_level_is_tolerated() -> None:
    drv = _Driver()
    drv.feed(_snap([["100", "1"]], [["101", "1"]]))
    action = drv.feed(_delta([["42", "0.00000000"]], [["999", "0"]]))
    assert isinstance(action, ApplyDelta)
    assert not drv.book.stale and drv.sync.synced
    assert drv.book.top("bids", 5) == [("100", "1")]
    assert drv.book.top("asks", 5) == [("101", "1")]


def test_sync_update_before_snapshot_resyncs_then_waits() -> None:
    drv = _Driver()
    action = drv.feed(_delta([["100", "1"]]))
    assert isinstance(action, Resync) and "before any snapshot" in action.reason
    assert drv.sync.state == "resyncing"
    # the old subscription's updates still in flight are ignored
    for _ in range(3):
        assert isinstance(drv.feed(_delta([["100", "2"]])), Ignore)
    assert isinstance(drv.feed(_snap([["100", "1"]], [["101", "1"]])), ApplySnapshot)
    assert drv.sync.synced and not drv.book.stale
    assert isinstance(drv.feed(_delta([["100", "2"]])), ApplyDelta)


def test_sync_every_snapshot_replaces() -> None:
    drv = _Driver()
    drv.feed(_snap([["100", "1"]], [["101", "1"]]))
    drv.feed(_delta([["99", "1"]]))
    assert isinstance(drv.feed(_snap([["50", "1"]], [["51", "1"]])), ApplySnapshot)
    assert drv.book.top("bids", 5) == [("50", "1")]


def test_sync_time_going_backwards_resyncs() -> None:
    drv = _Driver()
    drv.feed(_snap([["100", "1"]], [["101", "1"]]))
    assert isinstance(drv.feed(_delta([["99", "1"]], ts=1000)), ApplyDelta)
    assert isinstance(drv.feed(_delta([["98", "1"]], ts=1000)), ApplyDelta)  # equal is fine
    action = drv.feed(_delta([["97", "1"]], ts=999))
    assert isinstance(action, Resync) and "backwards" in action.reason
    assert drv.book.stale
    # off: accepted
    drv = _Driver(check_time=False)
    drv.feed(_snap([["100", "1"]], [["101", "1"]]))
    drv.feed(_delta([["99", "1"]], ts=1000))
    assert isinstance(drv.feed(_delta([["97", "1"]], ts=999)), ApplyDelta)


def test_sync_update_older_than_snapshot_is_ignored() -> None:
    drv = _Driver()
    drv.feed(_snap([["100", "1"]], [["101", "1"]], ts=5000))
    assert isinstance(drv.feed(_delta([["99", "1"]], ts=4999)), Ignore)
    assert drv.book.top("bids", 5) == [("100", "1")]
    assert isinstance(drv.feed(_delta([["99", "1"]], ts=5000)), ApplyDelta)


def test_sync_crossed_book_resyncs_after_limit() -> None:
    drv = _Driver()
    drv.feed(_snap([["100", "1"]], [["101", "1"]]))
    # a bid at the ask: locked -- tolerated once ...
    assert isinstance(drv.feed(_delta([["101", "1"]])), ApplyDelta)
    # ... and resynced when the next update leaves it crossed
    action = drv.feed(_delta([["102", "1"]]))
    assert isinstance(action, Resync) and "crossed" in action.reason
    assert drv.sync.state == "resyncing" and drv.book.stale


def test_sync_crossing_that_clears_is_fine() -> None:
    drv = _Driver()
    drv.feed(_snap([["100", "1"]], [["101", "1"]]))
    drv.feed(_delta([["101.5", "1"]]))
    assert isinstance(drv.feed(_delta([], [["101", "0"], ["102", "1"]])), ApplyDelta)
    assert isinstance(drv.feed(_delta([["101.5", "0"]])), ApplyDelta)
    assert isinstance(drv.feed(_delta([["101.7", "1"]])), ApplyDelta)  # counter restarted
    assert drv.sync.synced


def test_sync_crossed_snapshot_is_tolerated_until_it_uncrosses() -> None:
    drv = _Driver(crossed_limit=1)
    # an auction: the indicative book is crossed
    assert isinstance(drv.feed(_snap([["102", "1"]], [["101", "1"]])), ApplySnapshot)
    for _ in range(5):
        assert isinstance(drv.feed(_delta([["102", "2"]])), ApplyDelta)
    assert drv.sync.synced and not drv.book.stale
    drv.feed(_delta([["102", "0"], ["100", "1"]]))  # uncrossed: checking resumes
    assert isinstance(drv.feed(_delta([["101", "1"]])), Resync)


def test_sync_crossed_check_off_and_comparisons_are_exact() -> None:
    drv = _Driver(crossed_limit=None)
    drv.feed(_snap([["100", "1"]], [["101", "1"]]))
    for _ in range(3):
        assert isinstance(drv.feed(_delta([["200", "1"]])), ApplyDelta)
    # 0.30000000000000001 > 0.3 only when compared exactly
    drv = _Driver(crossed_limit=1)
    drv.feed(_snap([["0.29", "1"]], [["0.30000000000000001", "1"]]))
    assert isinstance(drv.feed(_delta([["0.3", "1"]])), ApplyDelta)
    assert drv.sync.synced


def test_is_crossed() -> None:
    def top(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> Any:
        return lambda side, n: (bids if side == "bids" else asks)[:n]

    assert not coinbase.is_crossed(top([], [("1", "1")]))
    assert not coinbase.is_crossed(top([("0.9", "1")], [("1", "1")]))
    assert coinbase.is_crossed(top([("1.0", "1")], [("1", "1")]))
    assert coinbase.is_crossed(top([("1.1", "1")], [("1", "1")]))


def test_sync_guards_and_reset() -> None:
    sync = CoinbaseBookSync(BTC)
    with pytest.raises(BadRequest):
        sync.on_event(BookSnapshot("ETH/USD", [], []))
    with pytest.raises(BadRequest):
        CoinbaseBookSync(BTC, crossed_limit=0)
    sync.on_event(_snap([["1", "1"]], [["2", "1"]]))
    assert sync.synced
    sync.reset()
    assert sync.state == "waiting"
    assert sync.verify(lambda side, n: []) is None  # nothing to verify after reset
    assert "waiting" in repr(sync)


def test_sync_against_simulated_market() -> None:
    """l2update messages built from a simulated market keep the book exact."""
    market = SimulatedMarket(["BTC/USD"], seed=11, levels=30, tick_size="0.01", decimals=8)
    drv = _Driver()
    bids, asks, _ = market.book("BTC/USD")
    snapshot = {"type": "snapshot", "product_id": "BTC-USD", "bids": bids, "asks": asks}
    drv.feed(one(json.loads(json.dumps(snapshot))))
    t0 = 1_767_225_600_000
    for n in range(1500):
        update = market.step_symbol("BTC/USD")
        changes = [["buy", p, a] for p, a in update.bids] + [["sell", p, a] for p, a in update.asks]
        message = {
            "type": "l2update",
            "product_id": "BTC-USD",
            "time": f"2026-01-01T00:00:{n // 1000:02d}.{n % 1000:03d}Z",
            "changes": changes,
        }
        action = drv.feed(one(message))
        assert isinstance(action, ApplyDelta), action
        assert action.delta.timestamp == t0 + n
    true_bids, true_asks, _ = market.book("BTC/USD")
    assert drv.book.top("bids", 1000) == true_bids
    assert drv.book.top("asks", 1000) == true_asks
    assert drv.sync.synced and not drv.book.stale


# ---------------------------------------------------------------------------
# Trade sync (matches + heartbeat)
# ---------------------------------------------------------------------------


def _match(trade_id: int, seq: int | None, last: bool = False) -> CoinbaseMatch:
    trade = Trade(BTC, str(trade_id), 1, "1", "1", "buy", "taker")
    return CoinbaseMatch(trade, trade_id, seq, last)


def _hb(seq: int, last_trade_id: int) -> CoinbaseHeartbeat:
    return CoinbaseHeartbeat(BTC, seq, last_trade_id, 1)


def test_trade_sync_in_order() -> None:
    sync = CoinbaseTradeSync(BTC)
    assert sync.on_heartbeat(_hb(10, 5)) == Ignore("heartbeat before the first match")
    first = sync.on_match(_match(5, 10, last=True))
    assert first == EmitTrade(_match(5, 10).trade)
    assert isinstance(sync.on_match(_match(6, 14)), EmitTrade)
    assert isinstance(sync.on_heartbeat(_hb(20, 6)), Ignore)
    assert sync.last_trade_id == 6


def test_trade_sync_duplicates_and_late() -> None:
    sync = CoinbaseTradeSync(BTC)
    sync.on_match(_match(5, 10))
    sync.on_match(_match(6, 11))
    assert isinstance(sync.on_match(_match(6, 11)), Ignore)
    assert isinstance(sync.on_match(_match(4, 9)), Ignore)


def test_trade_sync_jump_reports_missed() -> None:
    sync = CoinbaseTradeSync(BTC)
    sync.on_match(_match(5, 10))
    action = sync.on_match(_match(9, 30))
    assert isinstance(action, EmitTrade)
    assert action.missed == MissedTrades(BTC, 6, 8, "trade_id jumped 5 -> 9")
    assert action.missed.count == 3 and 7 in action.missed and 9 not in action.missed
    # without the contiguity assumption only heartbeats tell
    sync = CoinbaseTradeSync(BTC, contiguous_ids=False)
    sync.on_match(_match(5, 10))
    assert sync.on_match(_match(9, 30)) == EmitTrade(_match(9, 30).trade)


def test_trade_sync_heartbeat_reveals_dropped_matches() -> None:
    sync = CoinbaseTradeSync(BTC)
    sync.on_match(_match(5, 10))
    # heartbeat newer than the last match, past its trade id: 6..8 were dropped
    missed = sync.on_heartbeat(_hb(40, 8))
    assert missed == MissedTrades(BTC, 6, 8, "heartbeat last_trade_id 8 > last match 5")
    assert sync.last_trade_id == 8
    # reported once; the dropped ones arriving late are ignored (REST fills them)
    assert isinstance(sync.on_heartbeat(_hb(41, 8)), Ignore)
    assert isinstance(sync.on_match(_match(7, 35)), Ignore)
    assert isinstance(sync.on_match(_match(9, 45)), EmitTrade)


def test_trade_sync_old_heartbeat_is_not_a_gap() -> None:
    sync = CoinbaseTradeSync(BTC)
    sync.on_match(_match(5, 50))
    # sequence says this heartbeat predates the match: no judgement
    assert sync.on_heartbeat(_hb(49, 7)) == Ignore("heartbeat older than the last match")
    sync.reset()
    assert sync.last_trade_id is None
    with pytest.raises(BadRequest):
        sync.on_heartbeat(CoinbaseHeartbeat("ETH/USD", 1, 1))
    with pytest.raises(BadRequest):
        sync.on_match(CoinbaseMatch(Trade("ETH/USD", "1", 1, "1", "1"), 1, 1))


def test_missed_trades_request_and_filter() -> None:
    missed = MissedTrades(BTC, 6, 8)
    req = coinbase.missed_trades_request("BTC-USD", missed)
    assert req == RestRequest("GET", "/products/BTC-USD/trades", {"limit": 3, "after": 9})
    assert req.url("https://x") == "https://x/products/BTC-USD/trades?limit=3&after=9"
    big = coinbase.missed_trades_request("BTC-USD", MissedTrades(BTC, 1, 5000))
    assert big.params == {"limit": 1000, "after": 5001}
    rows = [
        {
            "time": "2026-01-01T00:00:00.001Z",
            "trade_id": i,
            "price": "1",
            "size": "1",
            "side": "buy",
        }
        for i in (9, 8, 7, 6, 5)
    ]
    trades = coinbase.parse_rest_trades(BTC, rows)
    assert [t.id for t in coinbase.trades_in(trades, missed)] == ["6", "7", "8"]


# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def test_parse_markets() -> None:
    markets = coinbase.parse_markets(PRODUCTS)
    assert list(markets) == ["BTC/USD", "ETH/USD", "ETH/EUR", "OLD/USD"]
    btc = markets["BTC/USD"]
    assert (btc.id, btc.base, btc.quote, btc.active) == ("BTC-USD", "BTC", "USD", True)
    assert btc.tick_size == "0.01000000" and btc.price_precision == 2
    assert btc.amount_step == "0.00000001" and btc.amount_precision == 8
    assert btc.info["display_name"] == "BTC/USD"
    assert markets["ETH/EUR"].active is False  # trading disabled
    assert markets["OLD/USD"].active is False  # delisted
    assert INDEX.id_of("ETH/USD") == "ETH-USD" and INDEX.symbol_of("BTC-USD") == BTC
    assert INDEX.exchange == "coinbase"
    assert coinbase.products_request() == RestRequest("GET", "/products")
    for bad in (
        {"message": "x"},
        [5],
        [{"id": "A-B"}],
        [{"base_currency": "A", "quote_currency": "B"}],
    ):
        with pytest.raises(MalformedMessage):
            coinbase.parse_markets(bad)


# ---------------------------------------------------------------------------
# REST requests and answers
# ---------------------------------------------------------------------------


def test_book_request_and_answer() -> None:
    req = coinbase.book_request("BTC-USD")
    assert req.url("https://api.exchange.coinbase.com") == (
        "https://api.exchange.coinbase.com/products/BTC-USD/book?level=2"
    )
    assert coinbase.book_request("BTC-USD", 1).params == {"level": 1}
    for bad in (3, 0, "2", True):
        with pytest.raises(BadRequest):
            coinbase.book_request("BTC-USD", bad)  # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        coinbase.book_request("BTC/USD")
    payload = {
        "bids": [["295.96", "4.39088265", 2], ["295.95", "0.1", 1]],
        "asks": [["295.97", "25.23542881", 12]],
        "sequence": 3,
        "auction_mode": False,
        "auction": None,
        "time": "2026-01-01T00:00:01.5Z",
    }
    snap = coinbase.parse_order_book(BTC, payload)
    assert snap == BookSnapshot(
        BTC,
        [("295.96", "4.39088265"), ("295.95", "0.1")],
        [("295.97", "25.23542881")],
        3,
        1_767_225_601_500,
    )
    with pytest.raises(MalformedMessage):
        coinbase.parse_order_book(BTC, {"bids": [["1"]], "asks": [], "sequence": 1})
    with pytest.raises(MalformedMessage):
        coinbase.parse_order_book(BTC, {"bids": [], "asks": [], "sequence": "x"})
    with pytest.raises(BadSymbol):
        coinbase.parse_order_book(BTC, {"message": "product not found"})


def test_trades_request_and_answer() -> None:
    assert coinbase.trades_request("BTC-USD").params == {"limit": 100}
    req = coinbase.trades_request("BTC-USD", 1000, before=5, after=10)
    assert req.query_string() == "limit=1000&before=5&after=10"
    for bad in (0, 1001, "5"):
        with pytest.raises(BadRequest):
            coinbase.trades_request("BTC-USD", bad)  # type: ignore[arg-type]
    rows = [
        {
            "time": "2026-01-01T00:00:02Z",
            "trade_id": 75,
            "price": "10.00",
            "size": "0.01",
            "side": "sell",
        },
        {
            "time": "2026-01-01T00:00:01Z",
            "trade_id": 74,
            "price": "10.01",
            "size": "0.02",
            "side": "buy",
        },
    ]
    trades = coinbase.parse_rest_trades(BTC, rows)
    assert trades == [
        Trade(BTC, "74", 1_767_225_601_000, "10.01", "0.02", "sell", "taker"),
        Trade(BTC, "75", 1_767_225_602_000, "10.00", "0.01", "buy", "taker"),
    ]
    with pytest.raises(RateLimitExceeded):
        coinbase.parse_rest_trades(BTC, {"message": "Public rate limit exceeded"})
    with pytest.raises(MalformedMessage):
        coinbase.parse_rest_trades(BTC, [{"trade_id": 1}])


def test_candles_request() -> None:
    req = coinbase.candles_request("BTC-USD", "1h")
    assert req == RestRequest("GET", "/products/BTC-USD/candles", {"granularity": 3600})
    req = coinbase.candles_request("BTC-USD", "1m", start=1_767_225_600_000, end=1_767_225_660_999)
    assert req.params == {
        "granularity": 60,
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T00:01:00Z",
    }
    with pytest.raises(BadRequest, match="valid: 1m 5m 15m 1h 6h 1d"):
        coinbase.candles_request("BTC-USD", "4h")
    with pytest.raises(BadRequest, match="both"):
        coinbase.candles_request("BTC-USD", "1m", start=0)
    with pytest.raises(BadRequest, match="300"):
        coinbase.candles_request("BTC-USD", "1m", start=0, end=301 * 60_000)
    assert (
        coinbase.candles_request("BTC-USD", "1m", start=0, end=300 * 60_000).params["granularity"]
        == 60
    )


CANDLES_BODY = (
    b"[[1767225660, 0.32, 4.2, 0.35, 4.20, 12.30000001],"
    b" [1767225600, 1e-08, 0.3, 0.1, 0.2, 123456789.123456789]]"
)


def test_parse_candles_exact_with_loads_exact() -> None:
    rows = loads_exact(CANDLES_BODY)
    candles = coinbase.parse_candles(BTC, "1m", rows)
    assert candles == [
        Candle(
            BTC,
            "1m",
            1_767_225_600_000,
            "0.1",
            "0.3",
            "0.00000001",
            "0.2",
            "123456789.123456789",
            True,
        ),
        Candle(BTC, "1m", 1_767_225_660_000, "0.35", "4.2", "0.32", "4.20", "12.30000001", False),
    ]
    # with now_ms: closed once the bucket ended
    closed = [c.closed for c in coinbase.parse_candles(BTC, "1m", rows, now_ms=1_767_225_720_000)]
    assert closed == [True, True]
    closed = [c.closed for c in coinbase.parse_candles(BTC, "1m", rows, now_ms=1_767_225_719_999)]
    assert closed == [True, False]


def test_parse_candles_from_orjson_floats_loses_only_what_floats_lose() -> None:
    candles = coinbase.parse_candles(BTC, "1m", loads(CANDLES_BODY))
    # up to 15 significant digits the float repr is the wire text (less trailing zeros) ...
    assert (candles[1].open, candles[1].low, candles[1].close) == ("0.35", "0.32", "4.2")
    assert candles[0].low == "0.00000001"
    # ... beyond that only loads_exact keeps it
    assert candles[0].volume != "123456789.123456789"


def test_parse_candles_bad() -> None:
    bads: list[Any] = [[[1, None, 2, 3, 4, 5]], [[1, [1], 2, 3, 4, 5]], [[1.5, 1, 2, 3, 4, 5]]]
    bads += [[[1, 2, 3]], ["x"], {"a": 1}]
    for bad in bads:
        with pytest.raises(MalformedMessage):
            coinbase.parse_candles(BTC, "1m", bad)
    with pytest.raises(BadRequest):
        coinbase.parse_candles(BTC, "2m", [])


def test_render_number() -> None:
    assert coinbase.render_number("0.10") == "0.10"
    assert coinbase.render_number(Decimal("1E-8")) == "0.00000001"
    assert coinbase.render_number(Decimal("4.20")) == "4.20"
    assert coinbase.render_number(Decimal("1.5E+3")) == "1500"
    assert coinbase.render_number(12) == "12"
    assert coinbase.render_number(0.1) == "0.1"
    assert coinbase.render_number(1e-05) == "0.00001"
    for bad in (True, None, [], float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity")):
        with pytest.raises(ValueError):
            coinbase.render_number(bad)


def test_decimal_values_in_feed_messages_render_canonically() -> None:
    raw = json.dumps(fixture("l2update_single")).replace('"10101.80000000"', "10101.80000000")
    delta = one(loads_exact(raw))
    assert list(delta.bids) == [("10101.80000000", "0.162567")]


def test_ticker_requests_and_answer() -> None:
    assert coinbase.ticker_request("BTC-USD").path == "/products/BTC-USD/ticker"
    assert coinbase.stats_request("BTC-USD").path == "/products/BTC-USD/stats"
    ticker = {
        "ask": "6267.71", "bid": "6265.15", "volume": "53602.03940154", "trade_id": 86326522,
        "price": "6268.48", "size": "0.00698254", "time": "2020-03-20T00:22:57.833Z",
    }  # fmt: skip
    stats = {"open": "6000", "high": "6300", "low": "5900", "last": "6268.48", "volume": "53602"}
    t = coinbase.parse_ticker(BTC, ticker, stats)
    assert t == Ticker(
        BTC,
        timestamp=_ms("2020-03-20T00:22:57.833Z"),
        bid="6265.15",
        ask="6267.71",
        last="6268.48",
        open="6000",
        high="6300",
        low="5900",
        close="6268.48",
        base_volume="53602.03940154",
    )
    assert coinbase.parse_ticker(BTC, ticker).open is None
    with pytest.raises(BadSymbol):
        coinbase.parse_ticker(BTC, {"message": "NotFound: not a valid product"})


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_rest_errors() -> None:
    e = coinbase.parse_rest_error(
        429, {"Retry-After": "2"}, b'{"message":"Public rate limit exceeded"}'
    )
    assert isinstance(e, RateLimitExceeded) and e.retry_after == 2.0
    assert e.status == 429 and "rate limit" in str(e)  # type: ignore[attr-defined]
    e = coinbase.parse_rest_error(429, Headers({b"retry-after": [b"1.5"]}), b"")
    assert isinstance(e, RateLimitExceeded) and e.retry_after == 1.5
    e = coinbase.parse_rest_error(429, None, b"<html>")
    assert isinstance(e, RateLimitExceeded) and e.retry_after is None
    e = coinbase.parse_rest_error(404, None, b'{"message":"NotFound"}', "/products/XYZ-USD/book")
    assert isinstance(e, BadSymbol)
    assert type(coinbase.parse_rest_error(404, None, b'{"message":"NotFound"}')) is BadRequest
    e = coinbase.parse_rest_error(
        400, None, {"message": "Failed", "reason": "FOO-BAR is not a valid product"}
    )
    assert isinstance(e, BadSymbol)
    assert (
        type(coinbase.parse_rest_error(401, None, b'{"message":"invalid signature"}'))
        is AuthenticationError
    )
    assert isinstance(
        coinbase.parse_rest_error(401, None, b'{"message":"request timestamp expired"}'),
        InvalidNonce,
    )
    assert type(coinbase.parse_rest_error(401, None, b"")) is AuthenticationError
    assert type(coinbase.parse_rest_error(403, None, b'{"message":"no"}')) is PermissionDenied
    assert (
        type(coinbase.parse_rest_error(400, None, b'{"message":"Invalid granularity"}'))
        is BadRequest
    )
    assert (
        type(coinbase.parse_rest_error(500, None, b'{"message":"Internal server error"}'))
        is ExchangeNotAvailable
    )
    assert (
        type(coinbase.parse_rest_error(503, None, b"Service Unavailable")) is ExchangeNotAvailable
    )
    assert type(coinbase.parse_rest_error(504, None, b"")) is RequestTimeout
    assert type(coinbase.parse_rest_error(302, None, b"")) is ExchangeError
    e = coinbase.parse_rest_error(503, None, b"down for maintenance")
    assert "down for maintenance" in str(e) and e.message == "down for maintenance"  # type: ignore[attr-defined]
    assert coinbase.retry_after({"Retry-After": "-1"}) is None
    assert coinbase.retry_after({"Retry-After": "soon"}) is None


def test_json_round_trip_of_outgoing_messages_is_compact() -> None:
    raw = CoinbaseWireRules().subscribe_message(["ticker:BTC-USD"], 1)
    assert raw == dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker"]})
    assert b" " not in raw
