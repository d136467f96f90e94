"""Tests for txexchange.state trades, tickers and candles."""

from __future__ import annotations

import attrs
import pytest

from txexchange.events import Candle, Ticker, Trade
from txexchange.state import (
    CandleSeries,
    TickerStore,
    TradeBuffer,
    exact_product,
    iso8601,
    ohlcv,
    ticker_to_ccxt,
    to_ccxt,
)

SYM = "BTC/USDT"


def trade(n: int, timestamp: int | None = None, **kw) -> Trade:
    fields = {"price": "100.5", "amount": "0.1", "side": "buy"} | kw
    return Trade(SYM, str(n), 1000 * n if timestamp is None else timestamp, **fields)


def ids(trades) -> list[str]:
    return [t.id for t in trades]


# -- trades --------------------------------------------------------------------------


def test_trade_buffer_is_a_bounded_ring_oldest_first():
    buf = TradeBuffer(maxlen=3)
    for n in range(1, 6):
        assert buf.append(trade(n))
    assert len(buf) == 3
    assert ids(buf.select()) == ["3", "4", "5"]
    assert buf.latest == trade(5)
    with pytest.raises(ValueError):
        TradeBuffer(maxlen=0)


def test_select_without_since_takes_the_last_limit():
    buf = TradeBuffer()
    buf.extend(trade(n) for n in range(1, 11))
    assert ids(buf.select(limit=3)) == ["8", "9", "10"]
    assert ids(buf.select(limit=100)) == [str(n) for n in range(1, 11)]
    assert buf.select(limit=0) == []
    assert len(buf.select()) == 10


def test_select_with_since_is_inclusive_and_takes_the_first_limit():
    buf = TradeBuffer()
    buf.extend(trade(n) for n in range(1, 11))
    assert ids(buf.select(since=4000)) == [str(n) for n in range(4, 11)]
    assert ids(buf.select(since=4000, limit=2)) == ["4", "5"]
    assert ids(buf.select(since=4001, limit=2)) == ["5", "6"]
    assert buf.select(since=99_000) == []
    assert ids(buf.select(since=0, limit=1)) == ["1"]
    with pytest.raises(ValueError):
        buf.select(limit=-1)


def test_select_returns_a_new_list():
    buf = TradeBuffer()
    buf.append(trade(1))
    got = buf.select()
    got.clear()
    assert len(buf) == 1


def test_duplicate_trade_ids_are_ignored_while_buffered():
    buf = TradeBuffer(maxlen=2)
    assert buf.append(trade(1))
    assert not buf.append(trade(1))
    assert buf.extend([trade(2), trade(3)]) == 2
    # "1" has been evicted, so it is accepted again
    assert buf.append(trade(1, timestamp=5000))
    assert ids(buf) == ["3", "1"]
    # trades without ids are never deduplicated
    buf2 = TradeBuffer()
    buf2.extend([Trade(SYM, "", 1, "1", "1"), Trade(SYM, "", 1, "1", "1")])
    assert len(buf2) == 2
    buf3 = TradeBuffer(dedupe=False)
    buf3.extend([trade(1), trade(1)])
    assert len(buf3) == 2
    buf3.clear()
    assert len(buf3) == 0


def test_to_ccxt_shape_and_exact_cost():
    t = Trade(SYM, "42", 1_700_000_000_123, "0.01000000", "3.00000000", "sell", "maker")
    d = to_ccxt(t)
    assert d["id"] == "42"
    assert d["timestamp"] == 1_700_000_000_123
    assert d["datetime"] == "2023-11-14T22:13:20.123Z"
    assert d["symbol"] == SYM
    assert (d["side"], d["takerOrMaker"]) == ("sell", "maker")
    assert (d["price"], d["amount"]) == ("0.01000000", "3.00000000")
    assert d["cost"] == "0.03"
    assert {"order", "type", "fee", "fees", "info"} <= set(d)


@pytest.mark.parametrize(
    ("price", "amount", "cost"),
    [
        ("0.1", "3", "0.3"),  # 0.30000000000000004 as floats
        ("29999.99", "0.00000001", "0.0002999999"),
        ("123456789.123456789", "987654321.987654321", "121932631356500531.347203169112635269"),
        ("100", "0.5", "50"),
        ("1E+3", "2", "2000"),
        ("5", "0", "0"),
        ("0.00000000", "5", "0"),
    ],
)
def test_exact_product(price, amount, cost):
    assert exact_product(price, amount) == cost


def test_iso8601():
    assert iso8601(None) is None
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601(1_700_000_000_007) == "2023-11-14T22:13:20.007Z"
    assert iso8601(-1) == "1969-12-31T23:59:59.999Z"


# -- tickers ---------------------------------------------------------------------------


def test_ticker_partial_updates_merge():
    store = TickerStore()
    full = Ticker(SYM, timestamp=1, bid="99", ask="101", last="100", base_volume="5")
    assert store.update(full) is full
    merged = store.update(Ticker(SYM, timestamp=2, bid="99.5", bid_volume="3", ask="100.5"))
    assert merged == Ticker(
        SYM, timestamp=2, bid="99.5", bid_volume="3", ask="100.5", last="100", base_volume="5"
    )
    assert store.get(SYM) is merged
    # the ticker handed out earlier is unchanged
    assert full.bid == "99" and full.bid_volume is None
    # an update that changes nothing keeps the same object
    assert store.update(Ticker(SYM, last="100")) is merged


def test_ticker_store_lookup():
    store = TickerStore()
    assert store.get(SYM) is None
    store.update(Ticker(SYM, last="1"))
    store.update(Ticker("ETH/USDT", last="2"))
    everything = store.all()
    assert set(everything) == {SYM, "ETH/USDT"}
    everything.clear()
    assert len(store) == 2 and SYM in store
    assert sorted(store) == ["BTC/USDT", "ETH/USDT"]
    store.discard(SYM)
    assert store.get(SYM) is None
    store.clear()
    assert len(store) == 0


def test_ticker_to_ccxt():
    d = ticker_to_ccxt(Ticker(SYM, timestamp=0, bid="1", bid_volume="2", quote_volume="3"))
    assert d["symbol"] == SYM and d["datetime"] == "1970-01-01T00:00:00.000Z"
    assert (d["bid"], d["bidVolume"], d["quoteVolume"], d["ask"]) == ("1", "2", "3", None)
    assert "bid_volume" not in d and "info" in d


# -- candles -------------------------------------------------------------------------------


def candle(ts: int, close: str = "1", closed: bool = False, **kw) -> Candle:
    fields = {"open": "1", "high": "2", "low": "0.5", "volume": "10"} | kw
    return Candle(SYM, "1m", ts, close=close, closed=closed, **fields)


def test_candle_same_timestamp_replaces_forming():
    series = CandleSeries(SYM, "1m")
    assert series.update(candle(60_000, "1.1"))
    assert series.update(candle(60_000, "1.2"))
    assert len(series) == 1
    assert series.forming == candle(60_000, "1.2")
    assert series.select() == [[60_000, "1", "2", "0.5", "1.2", "10"]]


def test_newer_candle_closes_the_previous():
    series = CandleSeries(SYM, "1m")
    series.update(candle(60_000, "1.1"))
    series.update(candle(120_000, "1.3"))
    got = series.candles()
    assert got == [candle(60_000, "1.1", closed=True), candle(120_000, "1.3")]
    assert series.forming is not None and not series.forming.closed
    # the exchange may send the final version with closed=True: kept as the latest
    series.update(candle(120_000, "1.4", closed=True))
    assert series.forming == candle(120_000, "1.4", closed=True)
    series.update(candle(180_000))
    assert [c.closed for c in series.candles()] == [True, True, False]


def test_older_candles_replace_closed_ones_or_are_ignored():
    series = CandleSeries(SYM, "1m")
    for ts in (60_000, 120_000, 180_000):
        series.update(candle(ts))
    assert series.update(candle(60_000, "9"))
    assert series.candles()[0] == candle(60_000, "9", closed=True)
    assert not series.update(candle(30_000))
    assert not series.update(candle(90_000))
    assert [c.timestamp for c in series.candles()] == [60_000, 120_000, 180_000]
    assert series.forming == candle(180_000)


def test_closed_candles_are_bounded():
    series = CandleSeries(SYM, "1m", maxlen=2)
    for n in range(1, 6):
        series.update(candle(60_000 * n))
    assert [row[0] for row in series.select()] == [180_000, 240_000, 300_000]
    assert len(series) == 3
    with pytest.raises(ValueError):
        CandleSeries(SYM, "1m", maxlen=0)


def test_candle_select_since_limit():
    series = CandleSeries(SYM, "1m")
    for n in range(1, 6):
        series.update(candle(60_000 * n, str(n)))
    assert [r[0] for r in series.select(limit=2)] == [240_000, 300_000]
    assert [r[0] for r in series.select(since=120_000, limit=2)] == [120_000, 180_000]
    assert [r[0] for r in series.select(since=120_001)] == [180_000, 240_000, 300_000]
    assert series.select(limit=0) == []
    assert series.select()[-1] == ohlcv(candle(300_000, "5"))
    with pytest.raises(ValueError):
        series.select(limit=-2)
    series.clear()
    assert series.select() == [] and series.forming is None


def test_candle_for_other_series_is_refused():
    series = CandleSeries(SYM, "1m")
    with pytest.raises(ValueError):
        series.update(attrs.evolve(candle(1), timeframe="5m"))
    with pytest.raises(ValueError):
        series.update(attrs.evolve(candle(1), symbol="ETH/USDT"))
