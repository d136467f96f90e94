"""Tests for the deterministic simulated market (txexchange.testing.market)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from txexchange.testing.market import MarketUpdate, SimulatedMarket

SYMBOLS = ("BTC/USDT", "ETH/USDT", "BNB/BTC")


def _apply(replica: dict[str, dict[str, str]], update: MarketUpdate, zero: str) -> None:
    for side, levels in (("bids", update.bids), ("asks", update.asks)):
        book = replica[side]
        for price, amount in levels:
            if amount == zero:
                assert price in book, f"deletion of a level that does not exist: {price}"
                del book[price]
            else:
                book[price] = amount


def _sorted(replica: dict[str, dict[str, str]]) -> tuple[list, list]:
    bids = sorted(replica["bids"].items(), key=lambda lv: Decimal(lv[0]), reverse=True)
    asks = sorted(replica["asks"].items(), key=lambda lv: Decimal(lv[0]))
    return bids, asks


def test_same_seed_same_sequence() -> None:
    a = SimulatedMarket(SYMBOLS, seed=7).run(500)
    b = SimulatedMarket(SYMBOLS, seed=7).run(500)
    c = SimulatedMarket(SYMBOLS, seed=8).run(500)
    assert a == b
    assert a != c


def test_replica_from_updates_matches_true_book_and_history() -> None:
    market = SimulatedMarket(SYMBOLS, seed=3, levels=20)
    zero = market.zero_amount
    assert zero == "0.00000000"
    replicas = {}
    ids = {}
    for symbol in SYMBOLS:
        bids, asks, update_id = market.book(symbol)
        replicas[symbol] = {"bids": dict(bids), "asks": dict(asks)}
        ids[symbol] = update_id
    checkpoints: list[tuple[str, int, tuple[list, list]]] = []
    for n, update in enumerate(market.run(3000)):
        # ids are contiguous per symbol: U == previous u + 1
        assert update.first_id == ids[update.symbol] + 1
        assert update.last_id >= update.first_id
        ids[update.symbol] = update.last_id
        _apply(replicas[update.symbol], update, zero)
        if n % 97 == 0:
            checkpoints.append((update.symbol, update.last_id, _sorted(replicas[update.symbol])))
    for symbol in SYMBOLS:
        bids, asks, update_id = market.book(symbol)
        assert update_id == ids[symbol]
        assert (bids, asks) == _sorted(replicas[symbol])
    # every checkpoint is reproduced exactly by book_at
    assert len(checkpoints) > 20
    for symbol, update_id, expected in checkpoints:
        assert market.book_at(symbol, update_id) == expected


def test_book_is_never_crossed_and_stays_near_depth() -> None:
    market = SimulatedMarket(SYMBOLS, seed=11, levels=30)
    for _ in range(4000):
        for update in market.step():
            bids, asks, _ = market.book(update.symbol)
            assert Decimal(bids[0][0]) < Decimal(asks[0][0])
            assert 20 <= len(bids) <= 45 and 20 <= len(asks) <= 45
            prices = [Decimal(p) for p, _ in bids]
            assert prices == sorted(prices, reverse=True)


def test_formatting_is_fixed_decimal_on_the_grid() -> None:
    market = SimulatedMarket(["BTC/USDT"], seed=1, start_prices={"BTC/USDT": "27000.01"})
    bids, asks, _ = market.book("BTC/USDT")
    assert bids[0][0] == "27000.01000000"
    for price, amount in bids + asks:
        assert len(price.split(".")[1]) == 8 and len(amount.split(".")[1]) == 8
        assert Decimal(price) % Decimal("0.01") == 0
        assert Decimal(amount) % Decimal("0.00001") == 0
        assert Decimal(amount) > 0


def test_trades_are_reflected_in_the_levels() -> None:
    market = SimulatedMarket(["BTC/USDT"], seed=5, trade_probability=1.0)
    seen = 0
    for _ in range(200):
        update = market.step_symbol("BTC/USDT")
        after_bids, after_asks, _ = market.book("BTC/USDT")
        assert update.trades
        for trade in update.trades:
            seen += 1
            assert trade.timestamp == update.timestamp
            assert trade.buyer_is_maker == (trade.side == "sell")
            # a buyer took asks: what is left on the ask side is at or above its price
            if trade.side == "buy":
                assert Decimal(trade.price) <= Decimal(after_asks[0][0])
                assert Decimal(trade.price) > Decimal(after_bids[0][0])
            else:
                assert Decimal(trade.price) >= Decimal(after_bids[0][0])
                assert Decimal(trade.price) < Decimal(after_asks[0][0])
            assert Decimal(trade.amount) > 0
    assert seen >= 200
    ids = [t.id for u in [market.step_symbol("BTC/USDT") for _ in range(10)] for t in u.trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_book_at_bounds_and_limits() -> None:
    market = SimulatedMarket(["BTC/USDT"], seed=2, history=50)
    start = market.last_update_id("BTC/USDT")
    updates = [market.step_symbol("BTC/USDT") for _ in range(200)]
    now = market.last_update_id("BTC/USDT")
    with pytest.raises(LookupError):
        market.book_at("BTC/USDT", now + 1)
    with pytest.raises(LookupError):
        market.book_at("BTC/USDT", start)  # dropped from the bounded history
    oldest_kept = updates[-50]
    market.book_at("BTC/USDT", oldest_kept.first_id - 1)  # state before it is known
    with pytest.raises(LookupError):
        market.book_at("BTC/USDT", oldest_kept.first_id - 2)
    bids, asks = market.book_at("BTC/USDT", now, limit=5)
    assert len(bids) == len(asks) == 5
    assert (bids, asks) == tuple(market.book("BTC/USDT", limit=5)[:2])
    with pytest.raises(KeyError, match="not simulated"):
        market.book("XRP/USDT")


def test_injected_clock_and_virtual_clock() -> None:
    now = [1700000000.5]
    market = SimulatedMarket(["BTC/USDT"], clock=lambda: now[0])
    assert market.step()[0].timestamp == 1700000000500
    now[0] += 1.25
    assert market.step()[0].timestamp == 1700000001750
    virtual = SimulatedMarket(["BTC/USDT"], virtual_step_ms=10)
    first, second = virtual.run(2)
    assert second.timestamp - first.timestamp == 10


def test_several_symbols_per_step_and_info() -> None:
    market = SimulatedMarket(SYMBOLS, seed=4, symbols_per_step=2)
    updates = market.step()
    assert len(updates) == 2 and len({u.symbol for u in updates}) == 2
    info = market.info("BNB/BTC")
    assert (info.id, info.base, info.quote, info.tick_size) == ("BNBBTC", "BNB", "BTC", "0.01")
    with pytest.raises(ValueError):
        SimulatedMarket(["BTCUSDT"])
    with pytest.raises(ValueError):
        SimulatedMarket(["BTC/USDT"], tick_size="0.000000001")
