"""Gemini legacy Market Data v1 end to end: ``GeminiClient(api="v1")`` over loopback.

Books come from the v1 sockets (one per symbol, ``initial`` change events,
``socket_sequence`` checked).  The book nonce is Gemini's ``eventId``, which
the simulated market does not know, so books are compared level for level
with :meth:`FakeGemini.true_book` (``style="v1"``: trimmed amounts) once the
market stands still.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from helpers import client_delayed_calls, sleep, wait_for
from txexchange.client import ClientOptions, GeminiClient
from txexchange.delivery import BookResyncing, BookSynced
from txexchange.errors import BadRequest
from txexchange.testing.gemini import FakeGemini
from txexchange.transport import Disconnected, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.5, jitter=0.1)
SYMBOLS = ["BTC/USD", "ETH/USD", "C01/USD", "C02/USD"]


async def start_fake(symbols: Any = ("BTC/USD", "ETH/USD"), **kw: Any) -> FakeGemini:
    return await FakeGemini(symbols, reactor=reactor, **kw).start()


def v1_client(fake: FakeGemini, **kw: Any) -> GeminiClient:
    kw.setdefault("transport", FAST)
    return GeminiClient(reactor=reactor, urls=fake.urls, api="v1", **kw)


def levels(rows: Any) -> list[tuple[str, str]]:
    return [tuple(lv) for lv in rows]  # type: ignore[misc]


def book_is_true(fake: FakeGemini, client: GeminiClient, symbol: str) -> bool:
    book = client.books.get(symbol)
    if book is None or not book.synced or book.stale:
        return False
    snap = book.snapshot()
    bids, asks, _ = fake.true_book(symbol, style="v1")
    return levels(snap.bids) == levels(bids) and levels(snap.asks) == levels(asks)


async def books_true(fake: FakeGemini, client: GeminiClient, symbols: list[str]) -> None:
    await wait_for(
        lambda: all(book_is_true(fake, client, s) for s in symbols),
        timeout=10,
        what="books equal the true books",
    )


async def drive(fake: FakeGemini, steps: int, batch: int = 20, pause: float = 0.002) -> None:
    for _ in range(0, steps, batch):
        fake.step(batch)
        await sleep(pause)


async def drive_until(fake: FakeGemini, d: Deferred, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not d.called:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        fake.step(1)
        await sleep(0.005)
    return await d


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@pytest_twisted.ensureDeferred
async def test_v1_books_through_a_gap_and_a_drop_equal_the_true_books():
    fake = await start_fake(SYMBOLS, seed=7)
    client = v1_client(fake)
    gap, dropped = "ETH/USD", "C02/USD"
    try:
        status: list[Any] = []
        client.subscribe("status", None, status.append)
        fake.step(100)
        books = await client.fetch_order_books(SYMBOLS)
        assert set(books) == set(SYMBOLS)
        for symbol, book in books.items():
            bids, asks, _ = fake.true_book(symbol, style="v1")
            assert levels(book.bids) == levels(bids) and levels(book.asks) == levels(asks)
            assert book.nonce is not None  # Gemini's eventId
        # one v1 socket per symbol, with heartbeats; nothing on the current API
        assert all(len(fake.v1_sessions(s)) == 1 for s in SYMBOLS)
        assert fake.current_sessions() == []
        assert fake.v1_sessions("BTC/USD")[0].query.get("heartbeat") == ["true"]
        await drive(fake, 1000)
        await books_true(fake, client, SYMBOLS)
        assert client.stats.v1_reconnects == 0 and not of(status, BookResyncing)

        # a socket_sequence gap: the socket is replaced and its new initial book taken
        fake.skip_next_v1(gap, 2)
        await drive(fake, 1000)
        await books_true(fake, client, SYMBOLS)
        resyncing = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(resyncing) == {gap} and "socket_sequence" in resyncing[gap], resyncing
        assert client.stats.v1_reconnects == 1
        assert gap in {e.symbol for e in of(status, BookSynced)}
        await wait_for(lambda: len(fake.v1_sessions(gap)) == 1, what="the old socket closed")

        # a dropped socket: the connection reconnects, a new initial book syncs it
        status.clear()
        fake.v1_sessions(dropped)[0].drop()
        fake.step(3)
        await drive(fake, 1000)
        await books_true(fake, client, SYMBOLS)
        assert of(status, Disconnected)
        lost = {e.symbol: e.reason for e in of(status, BookResyncing)}
        assert set(lost) == {dropped} and "disconnected" in lost[dropped], lost
        assert dropped in {e.symbol for e in of(status, BookSynced)}
        for symbol, book in (await client.fetch_order_books(SYMBOLS)).items():
            bids, asks, _ = fake.true_book(symbol, style="v1")
            assert levels(book.bids) == levels(bids) and levels(book.asks) == levels(asks)
        assert client.stats.malformed == 0 and client.stats.unknown_messages == 0
        assert client.stats.v1_reconnects == 1
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_v1_trades_fetch_and_watch_share_the_book_socket():
    fake = await start_fake(seed=2)
    client = v1_client(fake)
    try:
        await drive(fake, 300)
        book = await client.fetch_order_book("BTC/USD")
        assert book.bids and book.asks
        trades = await client.fetch_trades("BTC/USD")
        assert trades and all(t["symbol"] == "BTC/USD" for t in trades)
        ids = [t["id"] for t in trades]
        assert len(ids) == len(set(ids))
        # the book and the trades of a symbol share one v1 socket
        assert len(fake.v1_sessions("BTC/USD")) == 1
        new = await drive_until(fake, client.watch_trades("BTC/USD"), "a v1 trade")
        assert new and new[0]["id"] not in ids
        assert new[0]["price"] and new[0]["side"] in ("buy", "sell")
        sim = [t for u in fake.step(200) if u.symbol == "BTC/USD" for t in u.trades]
        assert sim, "the market traded"
        await wait_for(
            lambda: str(sim[-1].id) in {t.id for t in client.trades["BTC/USD"]},
            what="the last trade",
        )
        # a trades-only socket (no book stream) works too
        eth = await drive_until(fake, client.watch_trades("ETH/USD"), "an ETH trade")
        assert eth[0]["symbol"] == "ETH/USD"
        assert "ETH/USD" not in client.books
    finally:
        await client.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_v1_close_is_clean():
    fake = await start_fake()
    client = v1_client(fake)
    fake.step(5)
    await client.fetch_order_books(["BTC/USD", "ETH/USD"])
    await client.fetch_trades("BTC/USD")
    fake.skip_next_v1("BTC/USD")
    await drive(fake, 200)
    await books_true(fake, client, ["BTC/USD", "ETH/USD"])
    assert client.stats.v1_reconnects == 1
    await client.close()
    # the replaced socket and both live ones closed with 1000
    await wait_for(lambda: sorted(fake.server.close_codes) == [1000, 1000, 1000])
    assert client_delayed_calls() == []
    with pytest.raises(Exception, match="closed"):
        await client.fetch_order_book("BTC/USD")
    await fake.stop()


def test_v1_bad_options():
    with pytest.raises(BadRequest, match="api"):
        GeminiClient(reactor=reactor, api="v2")
    with pytest.raises(BadRequest, match="v1"):
        GeminiClient(reactor=reactor, api="v1", options=ClientOptions(book_mode="partial"))
    client = GeminiClient(reactor=reactor, urls={"marketdata_v1": "ws://127.0.0.1:1/v1"}, api="v1")
    assert client.api == "v1" and client.urls["v1"] == "ws://127.0.0.1:1/v1"


def test_exchange_factory_passes_the_api_choice_to_gemini_only():
    import txexchange
    from txexchange.errors import BadRequest

    client = txexchange.exchange("gemini", reactor=reactor, api="v1")
    assert isinstance(client, GeminiClient) and client.api == "v1"
    with pytest.raises(BadRequest, match="unknown option"):
        txexchange.exchange("binance", reactor=reactor, api="v1")
