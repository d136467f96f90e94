"""Binance private API end to end: the real client over loopback against FakeBinance.

The fake checks every signed request on its own (key, timestamp window,
HMAC over the query as sent), keeps balances and orders in its ledger and
pushes user data events on fills; the client loads balances and open orders
once over REST, then keeps them from the user data stream.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

import txexchange
from helpers import sleep, wait_for
from private_helpers import ShiftedClock, assert_balances_true, best, dec, logs_without
from txexchange import Credentials
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DuplicateOrderId,
    InsufficientFunds,
    InvalidOrder,
    NotSupported,
    OrderNotFound,
)
from txexchange.testing.binance import FakeBinance
from txexchange.transport import TransportOptions

KEY = "pRiVaTeKeY0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ012345"
SECRET = "tOpSeCrEt-9f8e7d6c5b4a3210ZYXWVUTSRQPONMLKJIHGFEDCBA0123456789"
FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.0, close_timeout=1.0)


@pytest.fixture
def logs():
    with logs_without(secret=SECRET) as capture:
        yield capture


async def start_fake(**kw: Any) -> FakeBinance:
    fake = FakeBinance(("BTC/USDT", "ETH/USDT"), reactor=reactor, api_keys={KEY: SECRET}, **kw)
    await fake.start()
    fake.ledger.fund(KEY, "USDT", "100000")
    fake.ledger.fund(KEY, "BTC", "2")
    return fake


def client_for(fake: FakeBinance, secret: str = SECRET, **kw: Any) -> Any:
    return txexchange.exchange(
        "binance", reactor=reactor, urls=fake.urls, api_key=KEY, secret=secret,
        transport=FAST, **kw,
    )  # fmt: skip


@pytest_twisted.async_yield_fixture
async def fake():
    f = await start_fake()
    yield f
    await f.stop()


@pytest_twisted.async_yield_fixture(params=["ws", "rest"])
async def client(request, fake):
    c = client_for(fake, trade_over=request.param)
    yield c
    await c.close()


@pytest_twisted.ensureDeferred
async def test_balance_loaded_once_then_kept_by_the_stream(client, fake, logs):
    balance = await client.fetch_balance()
    assert dec(balance["USDT"]["free"]) == 100000
    assert dec(balance["BTC"]["total"]) == 2
    assert balance["free"]["BTC"] == balance["BTC"]["free"]
    assert ("GET", "/api/v3/account") in fake.private.signed_requests
    loads = len(fake.private.signed_requests)
    watched = client.watch_balance()
    fake.ledger.deposit(KEY, "ETH", "3.5")
    after = await watched
    await wait_for(lambda: "ETH" in client.private.account.balances(), what="ETH balance")
    balance = await client.fetch_balance()
    assert dec(balance["ETH"]["free"]) == Decimal("3.5")
    assert "ETH" in after
    assert len(fake.private.signed_requests) == loads, "a stream update made a REST call"
    assert_balances_true(balance, fake, KEY)
    backend = client.private.backend
    for obj in (client, client.private, backend, backend.stream, client.credentials):
        assert SECRET not in repr(obj) and KEY not in repr(obj), type(obj)


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
    assert dec(trade["cost"]) == Decimal("0.5") * Decimal(price)
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
    await wait_for(
        lambda: client.private.account.order(resting["id"]).filled == "0.40000000",
        what="partial fill",
    )
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
    await wait_for(lambda: client.private.account.balance("BTC")[1] in ("0", "0.00000000"),
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


@pytest_twisted.ensureDeferred
async def test_wrong_secret_and_unknown_key(fake, logs):
    wrong = client_for(fake, secret="not-the-secret")
    try:
        with pytest.raises(AuthenticationError) as info:
            await wrong.fetch_balance()
        assert "-1022" in str(info.value)
        assert "not-the-secret" not in str(info.value)
    finally:
        await wrong.close()
    stranger = txexchange.exchange("binance", reactor=reactor, urls=fake.urls,
                                   api_key="nobody", secret=SECRET, transport=FAST)  # fmt: skip
    try:
        with pytest.raises(AuthenticationError) as info:
            await stranger.create_order("BTC/USDT", "market", "buy", "0.1")
        assert "-2015" in str(info.value)
    finally:
        await stranger.close()
    assert fake.ledger.history(KEY) == []


@pytest_twisted.ensureDeferred
async def test_missing_credentials_and_unsupported_exchange(fake):
    anon = txexchange.exchange("binance", reactor=reactor, urls=fake.urls, transport=FAST)
    try:
        with pytest.raises(AuthenticationError, match="api_key and secret"):
            await anon.fetch_balance()
        with pytest.raises(AuthenticationError):
            anon.subscribe("orders", None, lambda o: None)
    finally:
        await anon.close()
    kraken = txexchange.exchange("kraken", reactor=reactor, api_key="k", secret="s")
    try:
        with pytest.raises(NotSupported):
            await kraken.fetch_balance()
    finally:
        await kraken.close()


@pytest_twisted.ensureDeferred
async def test_server_time_offset_measured_and_remeasured_on_1021(logs):
    clock = ShiftedClock(20.0)  # the exchange is 20 s ahead: unsigned-as-is would fail
    fake = await start_fake(clock=clock)
    c = client_for(fake)
    try:
        balance = await c.fetch_balance()
        assert dec(balance["USDT"]["free"]) == 100000
        backend = c.private.backend
        assert 19_000 < backend.time_offset_ms < 21_000
        clock.offset = -30.0  # the exchange's clock steps back: the next request gets -1021
        order = await c.create_order("BTC/USDT", "market", "buy", "0.1")
        assert order["status"] == "closed"
        assert -31_000 < backend.time_offset_ms < -29_000
        assert any(code == -1021 for code, _ in fake.private.refused)
    finally:
        await c.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_reconnect_reauthenticates_and_loses_no_private_event(client, fake, logs):
    await client.fetch_balance()
    bid = best(fake, "BTC/USDT", "bid")
    a = await client.create_order("BTC/USDT", "limit", "buy", "0.2", str(bid - 20))
    b = await client.create_order("BTC/USDT", "limit", "buy", "0.3", str(bid - 30))
    subscribed = len(fake.user_subscribe_requests)
    for session in fake.user_sessions(KEY):
        session.drop()
    # while the private stream is down: a fill, a deposit; events pushed now are lost
    fake.ledger.fill(a["id"])
    fake.ledger.fill(b["id"], amount="0.1")
    fake.ledger.deposit(KEY, "ETH", "7")
    await wait_for(lambda: len(fake.user_subscribe_requests) > subscribed,
                   what="re-subscription")  # fmt: skip
    await wait_for(lambda: client.private.stats.gaps >= 1 and not client.private._reloading
                   and client.private.account.order(a["id"]).status == "closed",
                   what="recovery")  # fmt: skip
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
        assert withdrawals[0]["timestamp"] is not None
        both = await c.fetch_transactions()
        # Binance gives withdrawal times to the second: order by time, not by insertion
        assert sorted(t["type"] for t in both) == ["deposit", "withdrawal"]
        assert [t["timestamp"] for t in both] == sorted(t["timestamp"] for t in both)
    finally:
        await c.close()


def test_credentials_from_env_and_file(tmp_path):
    creds = Credentials.from_env("binance", {"BINANCE_API_KEY": KEY, "BINANCE_SECRET": SECRET})
    assert creds.api_key == KEY and creds.secret == SECRET
    assert SECRET not in repr(creds) and KEY not in repr(creds)
    path = tmp_path / "keys.toml"
    path.write_text(f'[binance]\napi_key = "{KEY}"\nsecret = "{SECRET}"\n')
    path.chmod(0o600)
    from_file = Credentials.from_file(path, section="binance")
    assert (from_file.api_key, from_file.secret) == (KEY, SECRET)
    client = txexchange.exchange("binance", reactor=reactor, credentials=from_file)
    assert client.credentials is from_file
    assert SECRET not in repr(client.credentials)
    with pytest.raises(BadRequest):
        txexchange.exchange("binance", credentials=from_file, api_key="x")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'secret = "{SECRET}"\nnot toml at all\n')
    with pytest.raises(BadRequest) as info:
        Credentials.from_file(bad)
    assert SECRET not in str(info.value)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(creds)
