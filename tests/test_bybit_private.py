"""Bybit private API end to end: the real client over loopback against FakeBybit.

The fake checks every signed request on its own (key, timestamp window, HMAC
over the query string or JSON body as received), checks the private stream's
``auth``, keeps balances and orders in its ledger and pushes ``order``,
``execution`` and ``wallet`` events; the client loads balances and open
orders once over REST, then keeps them from the private stream.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

import txexchange
from helpers import sleep, wait_for
from private_helpers import ShiftedClock, assert_balances_true, best, dec, logs_without
from txexchange.adapters import bybit_account as acct
from txexchange.adapters.bybit_signing import (
    BybitSigner,
    rest_signature_payload,
    ws_auth_payload,
)
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DuplicateOrderId,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
)
from txexchange.markets import Market, MarketIndex
from txexchange.testing.bybit import FakeBybit
from txexchange.transport import TransportOptions

KEY = "bYbItKeY0123456789"
SECRET = "bYbItSeCrEt-0123456789abcdefghijklmnopqrstuv"
FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.0, close_timeout=1.0)
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


@pytest.fixture
def logs():
    with logs_without(secret=SECRET) as capture:
        yield capture


async def start_fake(**kw: Any) -> FakeBybit:
    fake = FakeBybit(("BTC/USDT", "ETH/USDT"), reactor=reactor, api_keys={KEY: SECRET}, **kw)
    await fake.start()
    fake.ledger.fund(KEY, "USDT", "100000")
    fake.ledger.fund(KEY, "BTC", "2")
    return fake


def client_for(fake: FakeBybit, secret: str = SECRET, key: str = KEY, **kw: Any) -> Any:
    return txexchange.exchange(
        "bybit", reactor=reactor, urls=fake.urls, api_key=key, secret=secret,
        transport=FAST, **kw,
    )  # fmt: skip


@pytest_twisted.async_yield_fixture
async def fake():
    f = await start_fake()
    yield f
    await f.stop()


@pytest_twisted.async_yield_fixture
async def client(fake):
    c = client_for(fake)
    yield c
    await c.close()


# -- signing: the documented algorithm ------------------------------------------------------


def test_rest_signature_by_the_documented_algorithm():
    signer = BybitSigner("XXXXXXXXXX", "test-secret")
    query = "category=option&symbol=BTC-29JUL22-25000-C"
    signed = signer.rest_headers(1658384314791, 5000, query)
    payload = "1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"
    with open(VECTORS) as f:
        vectors = json.load(f)
    (entry,) = [v for v in vectors["signatures"] if v["id"].startswith("bybit.rest")]
    # the docs' pre-sign string is reproduced exactly (their secret is not published)
    assert entry["examples"][0]["signed_payload"] == payload
    assert rest_signature_payload(1658384314791, "XXXXXXXXXX", 5000, query) == payload
    expected = hmac.new(b"test-secret", payload.encode(), hashlib.sha256).hexdigest()
    assert signed.signature == expected
    assert signed.headers == {
        "X-BAPI-API-KEY": "XXXXXXXXXX", "X-BAPI-TIMESTAMP": "1658384314791",
        "X-BAPI-RECV-WINDOW": "5000", "X-BAPI-SIGN": expected,
    }  # fmt: skip
    body = '{"category": "option"}'
    assert rest_signature_payload(1658385579423, "XXXXXXXXXX", 5000, body) == (
        entry["examples"][1]["signed_payload"]
    )
    # a known answer for the algorithm (computed once, kept as a regression check)
    assert BybitSigner("k", "s").sign("abc") == hmac.new(b"s", b"abc", hashlib.sha256).hexdigest()
    args = BybitSigner("key1", "test-secret").auth_args(1662350400000)
    assert ws_auth_payload(1662350400000) == "GET/realtime1662350400000"
    assert args == ["key1", 1662350400000, hmac.new(
        b"test-secret", b"GET/realtime1662350400000", hashlib.sha256).hexdigest()]
    assert "test-secret" not in repr(signer)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(signer)


def test_parsers_on_documented_payloads():
    index = MarketIndex.from_markets([Market("BTC/USDT", "BTCUSDT", "BTC", "USDT")], "bybit")
    order = acct.parse_order({
        "orderId": "1", "orderLinkId": "x", "symbol": "BTCUSDT", "side": "Sell",
        "orderType": "Limit", "price": "30000", "qty": "0.5",
        "orderStatus": "PartiallyFilledCanceled", "cumExecQty": "0.2",
        "cumExecValue": "6000", "avgPrice": "30000", "timeInForce": "GTC",
        "createdTime": "1700000000000", "updatedTime": "1700000001000", "category": "spot",
    }, index)  # fmt: skip
    assert (order.status, order.side, order.filled, order.last_update) == (
        "canceled", "sell", "0.2", 1700000001000)
    fill = acct.parse_fill({
        "category": "spot", "symbol": "BTCUSDT", "execId": "e1", "execPrice": "30000",
        "execQty": "0.2", "execFee": "0.0002", "orderId": "1", "orderLinkId": "x",
        "side": "Buy", "execTime": "1700000001000", "isMaker": True,
    }, index)  # fmt: skip
    # spot without feeCurrency: the fee is taken from what was received (base on a buy)
    assert (fill.fee_currency, fill.taker_or_maker, fill.timestamp) == ("BTC", "maker",
                                                                      1700000001000)
    (snap,) = acct.parse_private_message({
        "id": "1", "topic": "wallet", "creationTime": 5, "data": [{"accountType": "UNIFIED",
        "coin": [{"coin": "USDT", "walletBalance": "100.5", "locked": "0.5"}]}],
    }, index)  # fmt: skip
    assert snap.balances == {"USDT": ("100", "0.5")} and snap.timestamp == 5
    assert not snap.complete
    linear = acct.parse_private_message(
        {"topic": "order", "data": [{"category": "linear", "symbol": "BTCUSDT"}]}, index
    )
    assert linear == []


# -- end to end ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_balance_loaded_once_then_kept_by_the_stream(client, fake, logs):
    balance = await client.fetch_balance()
    assert dec(balance["USDT"]["free"]) == 100000
    assert dec(balance["BTC"]["total"]) == 2
    assert ("GET", "/v5/account/wallet-balance") in fake.private.signed_requests
    assert fake.private.auth_requests == [(KEY, True)]
    loads = len(fake.private.signed_requests)
    watched = client.watch_balance()
    fake.ledger.deposit(KEY, "ETH", "3.5")
    after = await watched
    assert "ETH" in after
    balance = await client.fetch_balance()
    assert dec(balance["ETH"]["free"]) == Decimal("3.5")
    assert len(fake.private.signed_requests) == loads, "a stream update made a REST call"
    assert_balances_true(balance, fake, KEY)


@pytest_twisted.ensureDeferred
async def test_order_placed_appears_fills_by_push_and_updates_balance(client, fake, logs):
    await client.fetch_balance()
    price = str(best(fake, "BTC/USDT", "bid") - 100)
    order = await client.create_order("BTC/USDT", "limit", "buy", "0.5", price)
    assert order["status"] == "open" and order["symbol"] == "BTC/USDT"
    assert order["clientOrderId"].startswith("tx")
    assert dec(order["amount"]) == Decimal("0.5") and dec(order["price"]) == Decimal(price)
    open_orders = await client.fetch_open_orders("BTC/USDT")
    assert [o["id"] for o in open_orders] == [order["id"]]
    await wait_for(lambda: dec(client.private.account.balance("USDT")[1]) > 0, what="locked")
    rest_calls = len(fake.private.signed_requests)
    orders_d = client.watch_orders("BTC/USDT")
    trades_d = client.watch_my_trades()
    fake.ledger.fill(order["id"])
    (changed,) = await orders_d
    (trade,) = await trades_d
    assert changed["id"] == order["id"] and changed["status"] == "closed"
    assert dec(changed["filled"]) == Decimal("0.5") and dec(changed["remaining"]) == 0
    assert trade["order"] == order["id"] and trade["side"] == "buy"
    assert trade["takerOrMaker"] == "maker" and dec(trade["amount"]) == Decimal("0.5")
    assert trade["fee"]["currency"] == "USDT"
    await wait_for(lambda: dec(client.private.account.balance("BTC")[0]) == Decimal("2.5"),
                   what="BTC credited")  # fmt: skip
    balance = await client.fetch_balance()
    assert_balances_true(balance, fake, KEY)
    assert await client.fetch_open_orders("BTC/USDT") == []
    assert len(fake.private.signed_requests) == rest_calls, "the fill needed a REST call"


@pytest_twisted.ensureDeferred
async def test_market_order_partial_fills_cancel_and_history(client, fake, logs):
    await client.fetch_balance()
    filled = await client.create_order("ETH/USDT", "market", "buy", "1.25")
    assert filled["status"] == "closed" and dec(filled["filled"]) == Decimal("1.25")
    assert dec(filled["average"]) == best(fake, "ETH/USDT", "ask")
    resting = await client.create_order(
        "BTC/USDT", "limit", "sell", "1", str(best(fake, "BTC/USDT", "ask") + 50),
        {"clientOrderId": "my-sell-1"},
    )  # fmt: skip
    assert resting["clientOrderId"] == "my-sell-1"
    fake.ledger.fill(resting["id"], amount="0.4")
    await wait_for(lambda: client.private.account.order(resting["id"]).filled == "0.4",
                   what="partial fill")  # fmt: skip
    canceled = await client.cancel_order(resting["id"], "BTC/USDT")
    assert canceled["status"] == "canceled" and dec(canceled["filled"]) == Decimal("0.4")
    assert canceled["clientOrderId"] == "my-sell-1"
    history = await client.fetch_orders("BTC/USDT")
    assert [o["status"] for o in history] == ["canceled"]
    closed = await client.fetch_closed_orders("ETH/USDT")
    assert [o["id"] for o in closed] == [filled["id"]]
    mine = await client.fetch_my_trades("BTC/USDT")
    assert [dec(t["amount"]) for t in mine] == [Decimal("0.4")]
    one = await client.fetch_order(resting["id"], "BTC/USDT")
    assert one["status"] == "canceled"
    await wait_for(lambda: client.private.account.balance("BTC")[1] == "0",
                   what="lock released")  # fmt: skip
    assert_balances_true(await client.fetch_balance(), fake, KEY)


@pytest_twisted.ensureDeferred
async def test_cancel_all_orders(client, fake):
    bid = best(fake, "BTC/USDT", "bid")
    for i in range(3):
        await client.create_order("BTC/USDT", "limit", "buy", "0.1", str(bid - 10 - i))
    assert len(await client.fetch_open_orders()) == 3
    canceled = await client.cancel_all_orders("BTC/USDT")
    assert sorted(o["status"] for o in canceled) == ["canceled"] * 3
    await wait_for(lambda: not client.private.account.open_orders(), what="stream cancels")
    assert await client.fetch_open_orders() == []
    assert fake.ledger.open_orders(KEY) == []


@pytest_twisted.ensureDeferred
async def test_typed_errors(client, fake):
    await client.fetch_balance()
    ask = best(fake, "BTC/USDT", "ask")
    with pytest.raises(InsufficientFunds):
        await client.create_order("BTC/USDT", "limit", "buy", "100", str(ask))
    with pytest.raises(OrderNotFound):
        await client.cancel_order("999999", "BTC/USDT")
    params = {"clientOrderId": "dup-1"}
    await client.create_order("BTC/USDT", "limit", "buy", "0.01", str(ask - 500), params)
    with pytest.raises(DuplicateOrderId):
        await client.create_order("BTC/USDT", "limit", "buy", "0.01", str(ask - 500), params)
    with pytest.raises(BadSymbol):
        await client.create_order("NOPE/USDT", "limit", "buy", "1", "1")
    with pytest.raises(BadRequest):
        await client.create_order("BTC/USDT", "limit", "buy", 0.1, "1")
    with pytest.raises(InvalidOrder):
        await client.create_order("BTC/USDT", "limit", "buy", "0.1")
    with pytest.raises(BadRequest):
        await client.fetch_orders("BTC/USDT", since="yesterday")
    assert {code for code, _ in fake.private.refused} >= {170131, 170213, 170141}


@pytest_twisted.ensureDeferred
async def test_wrong_secret_and_unknown_key(fake, logs):
    wrong = client_for(fake, secret="not-the-secret")
    try:
        with pytest.raises(AuthenticationError) as info:
            await wrong.fetch_balance()
        assert "not-the-secret" not in str(info.value)
        # refused once, not retried in a loop
        await sleep(0.3)
        assert fake.private.auth_requests == [(KEY, False)]
        with pytest.raises(AuthenticationError) as rest_info:
            await wrong.fetch_my_trades("BTC/USDT")
        assert "10004" in str(rest_info.value)
    finally:
        await wrong.close()
    stranger = client_for(fake, key="nobody")
    try:
        with pytest.raises(AuthenticationError) as info:
            await stranger.create_order("BTC/USDT", "market", "buy", "0.1")
        assert "Request not authorized" in str(info.value)
        with pytest.raises(AuthenticationError) as rest_info:
            await stranger.fetch_deposits()
        assert "10003" in str(rest_info.value)
    finally:
        await stranger.close()
    assert fake.ledger.history(KEY) == []


@pytest_twisted.ensureDeferred
async def test_server_time_offset_measured_and_remeasured_on_10002(logs):
    clock = ShiftedClock(20.0)  # the exchange is 20 s ahead: unsigned-as-is would fail
    fake = await start_fake(clock=clock)
    c = client_for(fake)
    try:
        balance = await c.fetch_balance()  # auth's expires is in the exchange's future too
        assert dec(balance["USDT"]["free"]) == 100000
        backend = c.private.backend
        assert 19_000 < backend.time_offset_ms < 21_000
        clock.offset = -30.0  # the exchange's clock steps back: the next request gets 10002
        order = await c.create_order("BTC/USDT", "market", "buy", "0.1")
        assert order["status"] == "closed"
        assert -31_000 < backend.time_offset_ms < -29_000
        assert any(code == 10002 for code, _ in fake.private.refused)
    finally:
        await c.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_reconnect_reauthenticates_and_loses_no_private_event(client, fake, logs):
    await client.fetch_balance()
    bid = best(fake, "BTC/USDT", "bid")
    a = await client.create_order("BTC/USDT", "limit", "buy", "0.2", str(bid - 20))
    b = await client.create_order("BTC/USDT", "limit", "buy", "0.3", str(bid - 30))
    auths = len(fake.private.auth_requests)
    (session,) = fake.private.sessions(KEY)
    session.drop()
    # while the private stream is down: a fill, a deposit; events pushed now are lost
    fake.ledger.fill(a["id"])
    fake.ledger.fill(b["id"], amount="0.1")
    fake.ledger.deposit(KEY, "ETH", "7")
    await wait_for(lambda: len(fake.private.auth_requests) > auths, what="re-authentication")
    await wait_for(lambda: client.private.stats.gaps >= 1 and not client.private._reloading
                   and client.private.account.order(a["id"]).status == "closed",
                   what="recovery")  # fmt: skip
    assert fake.private.auth_requests[-1] == (KEY, True)
    account = client.private.account
    assert account.order(b["id"]).status == "open"
    assert Decimal(account.order(b["id"]).filled) == Decimal("0.1")
    fills = {(f.order_id, Decimal(f.amount)) for f in account.fills()}
    assert fills == {(a["id"], Decimal("0.2")), (b["id"], Decimal("0.1"))}
    balance = await client.fetch_balance()
    assert_balances_true(balance, fake, KEY)
    assert dec(balance["ETH"]["free"]) == 7
    # and the re-authenticated stream carries events again
    d = client.watch_orders()
    fake.ledger.fill(b["id"])
    (done,) = await d
    assert done["id"] == b["id"] and done["status"] == "closed"


@pytest_twisted.ensureDeferred
async def test_observers_and_async_iteration(fake):
    c = client_for(fake)
    seen: list[Any] = []
    try:
        c.subscribe("orders", "BTC/USDT", seen.append)
        stream = c.stream("my_trades")
        await c.fetch_balance()
        order = await c.create_order("BTC/USDT", "market", "sell", "0.5")
        first = await stream.__anext__()
        assert first[0]["order"] == order["id"]
        await wait_for(lambda: any(o.status == "closed" for o in seen), what="observer")
        stream.close()
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_deposits_withdrawals_transactions(fake):
    c = client_for(fake)
    try:
        fake.ledger.deposit(KEY, "USDT", "250", txid="0xabc")
        await sleep(0.01)
        fake.ledger.withdraw(KEY, "BTC", "0.5", address="bc1qfake")
        deposits = await c.fetch_deposits()
        assert [(d["currency"], dec(d["amount"]), d["status"], d["txid"]) for d in deposits] == [
            ("USDT", Decimal(250), "ok", "0xabc")
        ]
        withdrawals = await c.fetch_withdrawals("BTC")
        assert [(w["type"], w["address"], w["status"]) for w in withdrawals] == [
            ("withdrawal", "bc1qfake", "ok")
        ]
        both = await c.fetch_transactions()
        assert [t["type"] for t in both] == ["deposit", "withdrawal"]
    finally:
        await c.close()
