"""OKX private API end to end: the real client over loopback against FakeOkx.

The fake checks every signed REST request and every WebSocket login on its
own (key, passphrase, timestamp within 30 s, Base64 HMAC-SHA256 over the
request as sent), keeps balances and orders in its ledger and pushes
``orders``/``account`` events on fills; the client loads balances and open
orders once over REST, then keeps them from the private WebSocket.
"""

from __future__ import annotations

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
from txexchange.adapters import okx_account as acct
from txexchange.adapters.okx_signing import (
    OkxSigner,
    hmac_sha256_base64,
    iso_timestamp,
    login_prehash,
    rest_prehash,
)
from txexchange.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DuplicateOrderId,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    OrderNotFound,
)
from txexchange.testing.okx import FakeOkx
from txexchange.transport import TransportOptions

KEY = "0kxKeY-7c1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"
SECRET = "0KXS3CR3T22582BD0CFF14C41EDBF1AB98506286D"
PASSPHRASE = "pa55-Phrase!okx"
FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.0, close_timeout=1.0)
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"


@pytest.fixture
def logs():
    with logs_without(secret=SECRET, passphrase=PASSPHRASE) as capture:
        yield capture


async def start_fake(**kw: Any) -> FakeOkx:
    fake = FakeOkx(("BTC/USDT", "ETH/USDT"), reactor=reactor,
                   api_keys={KEY: (SECRET, PASSPHRASE)}, **kw)  # fmt: skip
    await fake.start()
    fake.ledger.fund(KEY, "USDT", "100000")
    fake.ledger.fund(KEY, "BTC", "2")
    return fake


def client_for(fake: FakeOkx, secret: str = SECRET, password: str = PASSPHRASE,
               key: str = KEY, **kw: Any) -> Any:  # fmt: skip
    return txexchange.exchange(
        "okx", reactor=reactor, urls=fake.urls, api_key=key, secret=secret, password=password,
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


# -- signing ------------------------------------------------------------------------------


def test_login_signature_reproduces_the_vector():
    vectors = json.loads(VECTORS.read_text())
    (vector,) = [v for v in vectors["signatures"] if v["id"] == "okx.ws.login_sign.SELF_COMPUTED"]
    assert login_prehash(vector["timestamp"]) == vector["signed_payload"]
    assert hmac_sha256_base64(vector["secret"], vector["signed_payload"]) == vector["expected"]
    args = OkxSigner("k", vector["secret"], "p").login_args(vector["timestamp"])
    assert args == {"apiKey": "k", "passphrase": "p", "timestamp": vector["timestamp"],
                    "sign": vector["expected"]}  # fmt: skip


def test_rest_signature_by_the_documented_algorithm():
    # OKX's own example timestamp; the prehash is timestamp + METHOD + path?query + body
    assert iso_timestamp(1607418537715) == "2020-12-08T09:08:57.715Z"
    assert iso_timestamp(1538054050000) == "2018-09-27T13:14:10.000Z"
    pre = rest_prehash("2020-12-08T09:08:57.715Z", "get", "/api/v5/account/balance?ccy=BTC")
    assert pre == "2020-12-08T09:08:57.715ZGET/api/v5/account/balance?ccy=BTC"
    signer = OkxSigner("key", "22582BD0CFF14C41EDBF1AB98506286D", "pass")
    body = '{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"market","sz":"1"}'
    headers = signer.rest_headers(1607418537715, "POST", "/api/v5/trade/order", body)
    expected = hmac_sha256_base64(
        b"22582BD0CFF14C41EDBF1AB98506286D",
        b"2020-12-08T09:08:57.715ZPOST/api/v5/trade/order" + body.encode(),
    )
    assert headers == {"OK-ACCESS-KEY": "key", "OK-ACCESS-SIGN": expected,
                       "OK-ACCESS-TIMESTAMP": "2020-12-08T09:08:57.715Z",
                       "OK-ACCESS-PASSPHRASE": "pass"}  # fmt: skip
    # regression value of the algorithm above (computed once, independently of this module)
    assert expected == "poarYWqXwajP4hvrGG8YJJiau4gezJPSzNAUZz/FhQY="
    assert "22582BD0" not in repr(signer) and "pass" not in repr(signer)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(signer)


def test_parsers_on_documented_shapes():
    from txexchange.markets import Market, MarketIndex

    index = MarketIndex.from_markets(
        [Market(symbol="BTC/USDT", id="BTC-USDT", base="BTC", quote="USDT")], "okx"
    )
    push = {"arg": {"channel": "orders", "instType": "SPOT"}, "data": [{
        "instType": "SPOT", "instId": "BTC-USDT", "ordId": "312269865356374016",
        "clOrdId": "b1", "px": "30000", "sz": "0.5", "ordType": "limit", "side": "buy",
        "state": "partially_filled", "accFillSz": "0.2", "avgPx": "29999.5",
        "fillPx": "29999.5", "fillSz": "0.2", "fillTime": "1597026383085", "tradeId": "42",
        "execType": "M", "fillFee": "-0.0002", "fillFeeCcy": "BTC", "fee": "-0.0002",
        "feeCcy": "BTC", "cTime": "1597026383000", "uTime": "1597026383085"}]}  # fmt: skip
    order, fill = acct.parse_private_push(push, index)  # type: ignore[misc]
    assert (order.status, order.filled, order.cost, order.fee_cost) == (
        "open",
        "0.2",
        "5999.9",
        "0.0002",
    )
    assert (fill.id, fill.amount, fill.taker_or_maker, fill.fee_cost, fill.timestamp) == (
        "42",
        "0.2",
        "maker",
        "0.0002",
        1597026383085,
    )
    account = {"arg": {"channel": "account"}, "eventType": "event_update", "data": [{
        "uTime": "1597026383085", "details": [
            {"ccy": "USDT", "availBal": "100", "frozenBal": "5", "cashBal": "105",
             "uTime": "1597026383086"}]}]}  # fmt: skip
    (snap,) = acct.parse_private_push(account, index)  # type: ignore[misc]
    assert snap.balances == {"USDT": ("100", "5")} and snap.timestamp == 1597026383086
    assert acct.parse_private_push({"event": "login", "code": "0"}, index) is None
    with pytest.raises(InsufficientFunds):
        acct.check_ack({"code": "1", "msg": "", "data": [{"sCode": "51008", "sMsg": "no"}]})
    with pytest.raises(BadRequest):
        acct.create_order_body("BTC-USDT", "limit", "buy", "1", "1", "has-hyphen")


# -- end to end ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_balance_loaded_once_then_kept_by_the_stream(client, fake, logs):
    balance = await client.fetch_balance()
    assert dec(balance["USDT"]["free"]) == 100000
    assert dec(balance["BTC"]["total"]) == 2
    assert ("GET", "/api/v5/account/balance") in fake.private.signed_requests
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
    assert dec(trade["fee"]["cost"]) > 0
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
        {"clientOrderId": "mySell1"},
    )  # fmt: skip
    assert resting["clientOrderId"] == "mySell1"
    fake.ledger.fill(resting["id"], amount="0.4")
    await wait_for(lambda: client.private.account.order(resting["id"]).filled == "0.4",
                   what="partial fill")  # fmt: skip
    canceled = await client.cancel_order(resting["id"], "BTC/USDT")
    assert canceled["status"] == "canceled" and dec(canceled["filled"]) == Decimal("0.4")
    assert canceled["clientOrderId"] == "mySell1"
    history = await client.fetch_orders("BTC/USDT")
    assert [o["status"] for o in history] == ["canceled"]
    closed = await client.fetch_closed_orders("ETH/USDT")
    assert [o["id"] for o in closed] == [filled["id"]]
    mine = await client.fetch_my_trades("BTC/USDT")
    assert [dec(t["amount"]) for t in mine] == [Decimal("0.4")]
    one = await client.fetch_order(resting["id"], "BTC/USDT")
    assert one["status"] == "canceled"
    await wait_for(lambda: client.private.account.balance("BTC")[1] == "0", what="lock released")
    assert_balances_true(await client.fetch_balance(), fake, KEY)


@pytest_twisted.ensureDeferred
async def test_cancel_all_orders_in_batches(client, fake):
    bid = best(fake, "BTC/USDT", "bid")
    for i in range(23):  # more than one batch of 20
        await client.create_order("BTC/USDT", "limit", "buy", "0.01", str(bid - 10 - i))
    await client.create_order("ETH/USDT", "limit", "buy", "0.01", "1")
    assert len(await client.fetch_open_orders()) == 24
    canceled = await client.cancel_all_orders("BTC/USDT")
    assert sorted(o["status"] for o in canceled) == ["canceled"] * 23
    await wait_for(lambda: len(client.private.account.open_orders()) == 1, what="cancels pushed")
    assert [o["symbol"] for o in await client.fetch_open_orders()] == ["ETH/USDT"]
    assert len(fake.ledger.open_orders(KEY)) == 1
    assert await client.cancel_all_orders() != []
    assert fake.ledger.open_orders(KEY) == []


@pytest_twisted.ensureDeferred
async def test_typed_errors(client, fake):
    await client.fetch_balance()
    ask = best(fake, "BTC/USDT", "ask")
    with pytest.raises(InsufficientFunds):
        await client.create_order("BTC/USDT", "limit", "buy", "100", str(ask))
    with pytest.raises(OrderNotFound):
        await client.cancel_order("999999", "BTC/USDT")
    with pytest.raises(OrderNotFound):
        await client.fetch_order("999999", "BTC/USDT")
    params = {"clientOrderId": "dup1"}
    await client.create_order("BTC/USDT", "limit", "buy", "0.01", str(ask - 500), params)
    with pytest.raises(DuplicateOrderId):
        await client.create_order("BTC/USDT", "limit", "buy", "0.01", str(ask - 500), params)
    with pytest.raises(BadSymbol):
        await client.create_order("NOPE/USDT", "limit", "buy", "1", "1")
    with pytest.raises(BadRequest):
        await client.create_order("BTC/USDT", "limit", "buy", 0.1, "1")
    with pytest.raises(BadRequest):
        await client.create_order("BTC/USDT", "limit", "buy", "0.1", "1", {"clientOrderId": "a-b"})
    with pytest.raises(InvalidOrder):
        await client.create_order("BTC/USDT", "limit", "buy", "0.1")
    with pytest.raises(BadRequest):
        await client.fetch_orders("BTC/USDT", since="yesterday")


@pytest_twisted.ensureDeferred
async def test_wrong_secret_passphrase_or_key_is_authentication_error(fake, logs):
    for kw, code in (({"secret": "not-the-secret"}, "60007"),
                     ({"password": "wrong-pass"}, "60024"),
                     ({"key": "nobody"}, "60005")):  # fmt: skip
        wrong = client_for(fake, **kw)
        try:
            with pytest.raises(AuthenticationError) as info:
                await wrong.fetch_balance()
            assert code in str(info.value)
            assert "not-the-secret" not in str(info.value) and PASSPHRASE not in str(info.value)
            logins = len(fake.private.logins)
            # refused: the stream is closed, not retried in a loop; a later call fails again
            await sleep(0.3)
            assert len(fake.private.logins) == logins
            with pytest.raises(AuthenticationError):
                await wrong.fetch_balance()
        finally:
            await wrong.close()
    # signed REST with a wrong secret is refused by the fake too (50113, HTTP 401)
    rest_only = client_for(fake, secret="not-the-secret")
    try:
        with pytest.raises(AuthenticationError) as info:
            await rest_only.fetch_deposits()
        assert "50113" in str(info.value)
    finally:
        await rest_only.close()
    assert fake.ledger.history(KEY) == []


@pytest_twisted.ensureDeferred
async def test_missing_passphrase(fake):
    c = client_for(fake, password=None)
    try:
        with pytest.raises(AuthenticationError, match="password"):
            await c.fetch_balance()
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_server_time_offset_measured_and_remeasured(logs):
    clock = ShiftedClock(45.0)  # the exchange is 45 s ahead: unsigned-as-is would fail
    fake = await start_fake(clock=clock)
    c = client_for(fake)
    try:
        balance = await c.fetch_balance()
        assert dec(balance["USDT"]["free"]) == 100000
        backend = c.private.backend
        assert 44_000 < backend.time_offset_ms < 46_000
        clock.offset = -40.0  # the exchange's clock steps back: the next request gets 50102
        order = await c.create_order("BTC/USDT", "market", "buy", "0.1", params=None)
        assert order["status"] in ("open", "closed")
        deposits = await c.fetch_deposits()
        assert deposits == []
        assert -41_000 < backend.time_offset_ms < -39_000
        assert any(code == "50102" for code, _ in fake.private.refused)
    finally:
        await c.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_stale_login_timestamp_is_invalid_nonce(logs):
    fake = await start_fake()
    c = client_for(fake)
    try:
        backend = c.private.backend
        backend._offset_known = True  # pretend it was measured, wrongly
        backend._offset_ms = -120_000
        with pytest.raises(InvalidNonce) as info:
            await c.fetch_balance()
        assert "60006" in str(info.value)
    finally:
        await c.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_reconnect_reauthenticates_and_loses_no_private_event(client, fake, logs):
    await client.fetch_balance()
    bid = best(fake, "BTC/USDT", "bid")
    a = await client.create_order("BTC/USDT", "limit", "buy", "0.2", str(bid - 20))
    b = await client.create_order("BTC/USDT", "limit", "buy", "0.3", str(bid - 30))
    logins = len(fake.private.logins)
    for session in list(fake.private.sessions):
        session.drop()
    # while the private stream is down: a fill, a deposit; events pushed now are lost
    fake.ledger.fill(a["id"])
    fake.ledger.fill(b["id"], amount="0.1")
    fake.ledger.deposit(KEY, "ETH", "7")
    await wait_for(lambda: len(fake.private.logins) > logins, what="login again")
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
    # the channels were subscribed only after each login was accepted
    frames = [m for s, m in fake.server.received if s in fake.private.logins[-1][:1]]
    ops = [m.get("op") for m in frames if isinstance(m, dict)]
    assert ops[:2] == ["login", "subscribe"]


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
        assert await c.fetch_deposits("BTC") == []
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_relogin_refused_after_reconnect_is_not_retried_in_a_loop(fake, logs):
    c = client_for(fake)
    try:
        await c.fetch_balance()
        del fake.private.api_keys[KEY]  # the key is revoked while the socket is down
        logins = len(fake.private.logins)
        for session in list(fake.private.sessions):
            session.drop()
        await wait_for(lambda: len(fake.private.logins) == logins + 1, what="one re-login")
        await sleep(0.5)  # reconnects are 0.05 s apart: a loop would log in many times
        assert len(fake.private.logins) == logins + 1
        assert fake.private.refused[-1][0] == "60005"
    finally:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_relogin_with_a_stale_clock_measures_again_and_retries(logs):
    clock = ShiftedClock(0.0)
    fake = await start_fake(clock=clock)
    c = client_for(fake)
    try:
        await c.fetch_balance()
        backend = c.private.backend
        backend.stream.retry_delay = 0.1
        clock.offset = 90.0  # the exchange's clock jumps: the next login is 60006
        logins = len(fake.private.logins)
        for session in list(fake.private.sessions):
            session.drop()
        await wait_for(lambda: client_gaps(c) >= 1 and len(fake.private.logins) >= logins + 2,
                       what="login refused, then accepted")  # fmt: skip
        assert ("60006", "Timestamp request expired") in fake.private.refused
        assert 89_000 < backend.time_offset_ms < 91_000
        d = c.watch_balance()
        fake.ledger.deposit(KEY, "ETH", "1")
        await d
    finally:
        await c.close()
        await fake.stop()


def client_gaps(c: Any) -> int:
    return c.private.stats.gaps
