"""Reconnect discipline: a fleet of Binance books losing every connection at once.

200 diff books (REST snapshots) over four connections all drop together.
The client must come back without a storm: reconnects spread by jittered
backoff, one reconnect per connection, snapshot requests paced within the
exchange's request-weight budget (no 429, no 418), and every book true again.

Time is scaled: the fake and the client count weight per 1-second window
instead of per minute, so a full resync that needs two windows' budget runs in
seconds.  The budget logic is the same; only the window length differs.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import pytest_twisted
from twisted.internet import reactor

import txexchange
from helpers import sleep
from txexchange.client.pool import StreamPool
from txexchange.delivery import BookResyncing, BookSynced
from txexchange.testing.binance import FakeBinance
from txexchange.transport import Connected, Disconnected, ReconnectScheduled, TransportOptions

SYMBOLS = [f"C{i:03d}/USDT" for i in range(200)]
WINDOW = 1.0  # seconds standing in for Binance's one-minute weight window
LIMIT = 6000  # Binance's published request weight per window
SNAPSHOT_LIMIT = 1000  # weight 50 a snapshot: 200 books = 10 000 > one window's budget
PER_CONNECTION = 50


def depth_weight(limit: str | None) -> int:
    n = int(limit or 100)
    return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250


def weight_per_window(fake: FakeBinance) -> Counter[int]:
    """REST weight the fake charged, per weight window (by arrival time)."""
    weights = {"/api/v3/exchangeInfo": 20}
    used: Counter[int] = Counter()
    for r in fake.rest_log:
        w = depth_weight(r.args.get("limit", [None])[-1]) if r.path == "/api/v3/depth" else 0
        used[math.floor(r.time / WINDOW)] += w or weights.get(r.path, 1)
    return used


async def drive_until(fake: FakeBinance, predicate: Any, what: str, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        fake.step(40)
        await sleep(0.01)
    return time.monotonic() - start


def all_true(fake: FakeBinance, client: Any) -> bool:
    for symbol in SYMBOLS:
        book = client.books[symbol]
        if not book.synced or book.stale:
            return False
    return True


@pytest_twisted.ensureDeferred
async def test_fleet_reconnects_spread_out_within_the_weight_budget() -> None:
    fake = FakeBinance(SYMBOLS, reactor=reactor, seed=11, levels=20, weight_limit=LIMIT)
    fake.weight_window = WINDOW
    await fake.start()
    transport = TransportOptions(initial_delay=0.3, max_delay=2.0, jitter=0.5)
    client = txexchange.exchange(
        "binance",
        reactor=reactor,
        urls=fake.urls,
        transport=transport,
        snapshot_limit=SNAPSHOT_LIMIT,
        weight_limit=LIMIT,
        resync_timeout=30,
    )
    # several connections for the fleet (Binance allows 1024 streams on one)
    client.pool = StreamPool(client._new_connection, PER_CONNECTION)
    client.rest._window = WINDOW  # the same scaled window as the fake's
    times: dict[type, list[float]] = {Connected: [], Disconnected: []}
    status: list[Any] = []

    def on_status(event: Any) -> None:
        status.append(event)
        if type(event) in times:
            times[type(event)].append(reactor.seconds())

    client.subscribe("status", None, on_status)
    try:
        fake.step(400)
        books = client.fetch_order_books(SYMBOLS)
        await drive_until(fake, lambda: books.called, "the first sync", 20)
        books = await books
        for book in books.values():
            bids, asks, _ = fake.true_book(book.symbol, nonce=book.nonce)
            assert (list(book.bids), list(book.asks)) == (bids, asks)
        sessions = list(fake.server.sessions)
        assert len(sessions) == len(SYMBOLS) // PER_CONNECTION
        first_sync_snapshots = client.stats.snapshot_requests
        assert first_sync_snapshots == len(SYMBOLS)

        # every connection is lost at once
        status.clear()
        dropped_at = reactor.seconds()
        for session in sessions:
            session.drop()
        await drive_until(fake, lambda: len(times[Disconnected]) == len(sessions), "drops", 5)
        took = await drive_until(fake, lambda: all_true(fake, client), "every book resynced", 30)
        assert took < 30

        # reconnects: one per connection, at jittered (distinct, spread) delays
        delays = [e.delay for e in status if isinstance(e, ReconnectScheduled)]
        assert len(delays) == len(sessions)
        assert len(set(delays)) == len(delays)
        assert all(0.15 <= d <= 0.45 for d in delays), delays
        reconnected = sorted(t - dropped_at for t in times[Connected][-len(sessions) :])
        assert reconnected[-1] - reconnected[0] >= 0.02, reconnected
        assert fake.server.connections_accepted == 2 * len(sessions)
        # every book went stale and came back; one snapshot each, no storm
        assert {e.symbol for e in status if isinstance(e, BookResyncing)} == set(SYMBOLS)
        assert {e.symbol for e in status if isinstance(e, BookSynced)} == set(SYMBOLS)
        resync_snapshots = client.stats.snapshot_requests - first_sync_snapshots
        assert len(SYMBOLS) <= resync_snapshots <= len(SYMBOLS) + 10
        # the weight budget held in every window, so the exchange refused nothing
        used = weight_per_window(fake)
        assert max(used.values()) <= LIMIT, used
        assert len([w for w in used.values() if w > 0]) >= 4  # two syncs of two windows each
        assert fake.rejected_429 == 0 and fake.banned_418 == 0
        assert client.rest.stats.rate_limited == 0
        # and the books are the true books
        for book in (await client.fetch_order_books(SYMBOLS)).values():
            bids, asks, _ = fake.true_book(book.symbol, nonce=book.nonce)
            assert (list(book.bids), list(book.asks)) == (bids, asks), book.symbol
    finally:
        await client.close()
        await fake.stop()
