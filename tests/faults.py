"""Per-exchange knowledge and fault injectors for the fault matrix (tests/test_fault_matrix.py).

A :class:`Venue` knows how to start one exchange's fake and client for a
fault run, how to recognise that exchange's book messages on the wire, and
how to tell whether a book handed out is the fake's true book.  A
:class:`Run` is one started fake plus client, with every status event,
every book handed to an observer and every pull checked against the truth.
The fault injectors (:data:`FAULTS`) act on a :class:`Run`; each says which
exchanges it applies to, and :data:`NOT_APPLICABLE` says why it does not
apply to the others.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred

import txexchange
from helpers import sleep
from txexchange.delivery import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.errors import ExchangeError
from txexchange.testing import DEMO_SYMBOLS, TestCA, fake_exchange
from txexchange.transport import (
    Connected,
    ControlFailed,
    Disconnected,
    FrameRejected,
    ReconnectScheduled,
    Stalled,
    TLSFailure,
    TransportOptions,
)

EXCHANGES = ("binance", "okx", "bybit", "kraken", "coinbase", "gemini")

#: largest message the client accepts in these runs (oversized frames and bombs exceed it)
MAX_MESSAGE = 1 << 20
#: fast reconnects, a short stall watchdog, a small message cap
FAST = TransportOptions(
    initial_delay=0.05,
    max_delay=0.2,
    jitter=0.1,
    stall_timeout=0.8,
    max_message_size=MAX_MESSAGE,
    max_decompressed_size=MAX_MESSAGE,
)
#: a fault must be recovered from within this many seconds
RECOVERY_BOUND = 15.0


def decode(payload: Any) -> Any:
    if isinstance(payload, bytes | str):
        try:
            return json.loads(payload)
        except ValueError:
            return None
    return payload


# -- what each exchange looks like ------------------------------------------------------


class Venue:
    """One exchange's fake and client, as the fault matrix uses them."""

    name = ""
    fake_kwargs: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = {}
    #: whether book messages carry a number the true book can be looked up by
    checks_every_book = True

    @property
    def symbols(self) -> tuple[str, ...]:
        return DEMO_SYMBOLS[self.name]

    def is_book_update(self, message: Any, market_id: str) -> bool:
        raise NotImplementedError

    def unknown_message(self, market_id: str) -> Any:
        raise NotImplementedError

    def truth(self, run: Run, book: Any) -> tuple[list[Any], list[Any]]:
        """The fake's true book as of ``book``'s nonce, rendered as the client renders it."""
        bids, asks, nonce = run.fake.true_book(book.symbol, nonce=book.nonce)
        assert nonce == book.nonce
        return [tuple(lv) for lv in bids], [tuple(lv) for lv in asks]

    def current(self, run: Run, symbol: str) -> bool:
        """Whether the client's book of ``symbol`` has caught up with the market."""
        book = run.client.books.get(symbol)
        return book is not None and book.synced and not book.stale and self._latest(run, book)

    def _latest(self, run: Run, book: Any) -> bool:
        return bool(book.nonce == run.fake.true_book(book.symbol)[2])

    async def flush(self, run: Run) -> None:
        """Make sure everything the fake sent has reached the client."""


class Binance(Venue):
    name = "binance"

    def is_book_update(self, message: Any, market_id: str) -> bool:
        data = message.get("data") if isinstance(message, dict) else None
        return (
            isinstance(data, dict) and data.get("e") == "depthUpdate" and data.get("s") == market_id
        )

    def unknown_message(self, market_id: str) -> Any:
        stream = f"{market_id.lower()}@brandNewStream"
        return {"stream": stream, "data": {"e": "brandNewEvent", "s": market_id}}

    def _latest(self, run: Run, book: Any) -> bool:
        return bool(book.nonce == run.fake.market.last_update_id(book.symbol))


class Okx(Venue):
    name = "okx"

    def is_book_update(self, message: Any, market_id: str) -> bool:
        return (
            isinstance(message, dict)
            and message.get("action") == "update"
            and message.get("arg", {}).get("channel", "").startswith("books")
            and message.get("arg", {}).get("instId") == market_id
        )

    def unknown_message(self, market_id: str) -> Any:
        return {"arg": {"channel": "brand-new-channel", "instId": market_id}, "data": [{}]}

    def _latest(self, run: Run, book: Any) -> bool:
        return bool(book.nonce == run.fake.seq_id(book.symbol))


class Bybit(Venue):
    name = "bybit"
    depth = 200

    def is_book_update(self, message: Any, market_id: str) -> bool:
        return (
            isinstance(message, dict)
            and message.get("type") == "delta"
            and str(message.get("topic", "")).startswith("orderbook.")
            and str(message.get("topic", "")).endswith("." + market_id)
        )

    def unknown_message(self, market_id: str) -> Any:
        return {"topic": f"brandnew.{market_id}", "type": "snapshot", "ts": 1, "data": {}}

    def truth(self, run: Run, book: Any) -> tuple[list[Any], list[Any]]:
        bids, asks, u = run.fake.true_book(book.symbol, nonce=book.nonce, limit=self.depth)
        assert u == book.nonce
        return [tuple(lv) for lv in bids], [tuple(lv) for lv in asks]

    def _latest(self, run: Run, book: Any) -> bool:
        return bool(book.nonce == run.fake.update_id(book.symbol))


class Kraken(Venue):
    name = "kraken"
    depth = 10
    client_kwargs = {"book_depth": 10}

    def is_book_update(self, message: Any, market_id: str) -> bool:
        if not isinstance(message, dict) or message.get("channel") != "book":
            return False
        data = message.get("data") or [{}]
        return message.get("type") == "update" and data[0].get("symbol") == market_id

    def unknown_message(self, market_id: str) -> Any:
        return {"channel": "brand_new_channel", "type": "update", "data": [{"symbol": market_id}]}

    def truth(self, run: Run, book: Any) -> tuple[list[Any], list[Any]]:
        # no sequence number: the book's timestamp names the market update
        nonce = run.fake.update_id(book.symbol, book.timestamp)
        bids, asks, _ = run.fake.true_book(book.symbol, nonce=nonce, limit=self.depth, fixed=True)
        return [tuple(lv) for lv in bids], [tuple(lv) for lv in asks]

    def _latest(self, run: Run, book: Any) -> bool:
        bids, asks, _ = run.fake.true_book(book.symbol, limit=self.depth, fixed=True)
        snap = book.snapshot()
        return list(snap.bids) == [tuple(x) for x in bids] and list(snap.asks) == [
            tuple(x) for x in asks
        ]


class Coinbase(Venue):
    name = "coinbase"
    # heartbeats on demand (flush), no ticker batches: the truth is "now" after a flush
    fake_kwargs = {"heartbeat_interval": None, "ticker_batch_interval": None}
    checks_every_book = False  # level2 carries no sequence: only books "now" can be checked

    def is_book_update(self, message: Any, market_id: str) -> bool:
        return (
            isinstance(message, dict)
            and message.get("type") == "l2update"
            and message.get("product_id") == market_id
        )

    def unknown_message(self, market_id: str) -> Any:
        return {"type": "brand_new_type", "product_id": market_id}

    def truth(self, run: Run, book: Any) -> tuple[list[Any], list[Any]]:
        bids, asks, _ = run.fake.true_book(book.symbol)
        return [tuple(lv) for lv in bids], [tuple(lv) for lv in asks]

    def _latest(self, run: Run, book: Any) -> bool:
        return True  # checked after flush(), against the book now

    async def flush(self, run: Run) -> None:
        """Wait until a heartbeat sent after the last update reached the client."""
        fake, client = run.fake, run.client
        deadline = time.monotonic() + 5
        while not all(client.heard.get(s) == fake.sequence(s) for s in run.symbols):
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for heartbeats")
            fake.send_heartbeats()
            await sleep(0.02)

    def instrument(self, client: Any) -> None:
        client.heard = {}
        handle = client._on_heartbeat

        def on_heartbeat(hb: Any) -> None:
            client.heard[hb.symbol] = hb.sequence
            handle(hb)

        client._on_heartbeat = on_heartbeat


class Gemini(Venue):
    name = "gemini"

    def is_book_update(self, message: Any, market_id: str) -> bool:
        return (
            isinstance(message, dict)
            and message.get("e") == "depthUpdate"
            and str(message.get("s", "")).lower() == market_id.lower()
        )

    def unknown_message(self, market_id: str) -> Any:
        return {"e": "somethingNew", "s": market_id}

    def _latest(self, run: Run, book: Any) -> bool:
        return bool(book.nonce == run.fake.update_id(book.symbol))


VENUES: dict[str, Venue] = {
    v.name: v for v in (Binance(), Okx(), Bybit(), Kraken(), Coinbase(), Gemini())
}


# -- one run: a fake, a client, and everything they did ------------------------------------


@attrs.define
class Run:
    venue: Venue
    fake: Any
    client: Any
    ca: TestCA | None = None
    status: list[Any] = attrs.field(factory=list)
    wrong: list[tuple[str, int | None, bool]] = attrs.field(factory=list)
    pull_errors: list[Exception] = attrs.field(factory=list)
    books_seen: int = 0
    books_checked: int = 0
    #: a book handed out that may be wrong, with why (a documented limitation)
    allowed_wrong: set[str] = attrs.field(factory=set)
    #: what an injector leaves for its check
    notes: dict[str, Any] = attrs.field(factory=dict)

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.venue.symbols

    @property
    def target(self) -> str:
        """The symbol a per-book fault hits (the other one is a bystander)."""
        return self.symbols[0]

    def market_id(self, symbol: str) -> str:
        return str(self.client.market(symbol).id)

    @classmethod
    async def open(
        cls, venue: Venue, *, seed: int = 1, tls: bool = False, **client_kwargs: Any
    ) -> Run:
        fake_kwargs: dict[str, Any] = {"reactor": reactor, "seed": seed, **venue.fake_kwargs}
        ca = None
        transport = client_kwargs.pop("transport", FAST)
        if tls:
            ca = TestCA.generate()
            fake_kwargs["tls"] = ca.issue()
            transport = transport.replace(trust_root=ca.trust_root())
        fake = fake_exchange(venue.name, **fake_kwargs)
        before_start = client_kwargs.pop("before_start", None)
        after_create = client_kwargs.pop("after_create", None)
        if before_start is not None:
            before_start(fake)
        await fake.start()
        kwargs = {**venue.client_kwargs, **client_kwargs}
        client = txexchange.exchange(
            venue.name, reactor=reactor, urls=fake.urls, transport=transport, **kwargs
        )
        if isinstance(venue, Coinbase):
            venue.instrument(client)
        if after_create is not None:
            after_create(client)
        run = cls(venue, fake, client, ca)
        client.subscribe("status", None, run.status.append)
        return run

    async def sync(self) -> None:
        """Every book subscribed, synced, equal to the truth; observers checking every update."""
        self.fake.step(20)
        books = await self.client.fetch_order_books(list(self.symbols))
        for book in books.values():
            self.check(book, snapshot=True, now=not self.venue.checks_every_book)
        for symbol in self.symbols:
            self.client.subscribe("book", symbol, self.observe)
        await self.drive(60)

    def observe(self, update: BookUpdate) -> None:
        self.books_seen += 1
        if self.venue.checks_every_book:
            self.check(update.book(), snapshot=update.snapshot)

    def check(self, book: Any, *, snapshot: bool = False, now: bool = False) -> None:
        if not self.venue.checks_every_book and not now:
            return
        bids, asks = self.venue.truth(self, book)
        self.books_checked += 1
        if (list(book.bids), list(book.asks)) != (bids, asks):
            self.wrong.append((book.symbol, book.nonce, snapshot))

    def pull(self) -> None:
        """Ask for the books; whenever they come, they must be the true books."""
        for symbol in self.symbols:
            if symbol not in self.client.books:
                continue
            d = self.client.fetch_order_book(symbol)
            d.addCallbacks(lambda book: self.check(book), self.pull_errors.append)

    async def drive(self, steps: int, batch: int = 10, pause: float = 0.003) -> None:
        for i in range(0, steps, batch):
            self.fake.step(batch)
            if i % (batch * 5) == 0:
                self.pull()
            await sleep(pause)

    async def drive_until(
        self, predicate: Callable[[], Any], what: str, timeout: float = RECOVERY_BOUND
    ) -> float:
        """Keep the market moving until ``predicate()``; returns the seconds it took."""
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{self.venue.name}: timed out after {timeout}s: {what}")
            self.fake.step(2)
            await sleep(0.005)
        return time.monotonic() - start

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.status if isinstance(e, kind)]

    def resyncing(self, symbol: str | None = None) -> list[BookResyncing]:
        return [e for e in self.of(BookResyncing) if symbol is None or e.symbol == symbol]

    def settled(self) -> bool:
        books = self.client.books
        return all(
            s in books and books[s].synced and not books[s].stale for s in self.symbols
        )

    async def recover(self, timeout: float = RECOVERY_BOUND) -> float:
        """Drive until every book is synced and caught up; the books must be true then."""
        try:
            took = await self.drive_until(self.settled, "books synced again", timeout)
        except AssertionError:
            books = {s: (b.synced, b.stale, b.nonce) for s, b in self.client.books.items()}
            raise AssertionError(
                f"not synced: {books}; {self.counters()}; last events {self.status[-8:]}"
            ) from None
        await self.drive(40)
        await self.venue.flush(self)
        took += await self.drive_until(
            lambda: all(self.venue.current(self, s) for s in self.symbols),
            "books caught up with the market",
            timeout,
        )
        return took

    async def assert_true(self) -> None:
        """Every book handed out (pushed or pulled) was true; the books now are true."""
        await self.venue.flush(self)
        books = await self.client.fetch_order_books(list(self.symbols))
        for book in books.values():
            bids, asks = self.venue.truth(self, book)
            assert list(book.bids) == bids, f"{book.symbol} bids differ from the truth"
            assert list(book.asks) == asks, f"{book.symbol} asks differ from the truth"
        await sleep(0.01)  # pending pulls answered
        unexpected = [w for w in self.wrong if w[0] not in self.allowed_wrong]
        assert unexpected == [], f"{self.venue.name}: books differing from the truth: {self.wrong}"
        assert self.pull_errors == [], self.pull_errors
        assert self.books_seen > 0

    async def close(self) -> None:
        try:
            await self.client.close()
        finally:
            await self.fake.stop()

    def sessions(self) -> list[Any]:
        """The fake's open market-data sessions (not Bybit's system-status socket)."""
        return [s for s in self.fake.server.sessions if s.is_open and "status" not in s.path]

    def book_session(self, symbol: str) -> Any:
        market_id = self.market_id(symbol)
        for session in self.sessions():
            if any(self.venue.is_book_update(decode(m), market_id) for m in session.sent):
                return session
        raise AssertionError(f"no session carries {symbol}'s book")

    def book_updates_sent(self, symbol: str) -> tuple[Any, list[Any]]:
        session = self.book_session(symbol)
        market_id = self.market_id(symbol)
        found = [m for m in session.sent if self.venue.is_book_update(decode(m), market_id)]
        return session, found

    def counters(self) -> dict[str, int]:
        stats = dict(self.client.stats.as_dict())
        rest = getattr(self.client, "rest", None)
        if rest is not None:
            stats.update({f"rest_{k}": v for k, v in rest.stats.as_dict().items()})
        return stats


# -- the faults ---------------------------------------------------------------------------


Inject = Callable[[Run], Awaitable[Any]]
Check = Callable[[Run, dict[str, int]], Any]


@attrs.frozen
class Fault:
    """A fault: how to inject it, what the client must have done, where it applies."""

    name: str
    inject: Inject
    check: Check
    #: exchanges it applies to (None: all)
    only: tuple[str, ...] | None = None
    #: the run needs TLS
    tls: bool = False
    #: extra keyword arguments for Run.open
    open_kwargs: Callable[[Venue], dict[str, Any]] = lambda venue: {}

    def applies(self, exchange: str) -> bool:
        return self.only is None or exchange in self.only


def _reconnected(run: Run, before: dict[str, int], *, code: int | None = None) -> None:
    """A connection was lost, a reconnect scheduled and made, every book resynced."""
    lost = run.of(Disconnected)
    assert lost, "no Disconnected event"
    if code is not None:
        assert any(e.code == code for e in lost), [e.code for e in lost]
    assert run.of(ReconnectScheduled), "no ReconnectScheduled event"
    assert len(run.of(Connected)) >= 1
    for symbol in run.symbols:
        assert any("disconnect" in e.reason for e in run.resyncing(symbol)), run.resyncing(symbol)
        assert any(e.symbol == symbol for e in run.of(BookSynced))


async def drop_mid_frame(run: Run) -> None:
    for session in run.sessions():
        session.send_truncated_frame(announced=4096, actual=100)
        session.drop()


async def half_open_stall(run: Run) -> None:
    for session in run.sessions():
        session.stall()


def check_stall(run: Run, before: dict[str, int]) -> None:
    assert run.of(Stalled), "no Stalled event"
    assert run.of(Stalled)[0].silence >= FAST.stall_timeout
    _reconnected(run, before)


def close_with(code: int) -> Inject:
    async def inject(run: Run) -> None:
        for session in run.sessions():
            session.close(code, "fault injected")

    return inject


async def drop(run: Run) -> None:
    for session in run.sessions():
        session.drop()


async def refuse_then_503(run: Run) -> None:
    """TCP connections refused, then WebSocket handshakes refused (HTTP 503), then served."""
    server = run.fake.server
    await server.refuse_connections()
    await drop(run)
    n = len(run.of(ReconnectScheduled))
    await run.drive_until(
        lambda: len(run.of(ReconnectScheduled)) >= n + 3, "three refused attempts", 5
    )
    server.reject_handshakes = True
    server.accept_connections()
    n = len(run.of(ReconnectScheduled))
    await run.drive_until(
        lambda: len(run.of(ReconnectScheduled)) >= n + 1, "a refused handshake", 5
    )
    server.reject_handshakes = False


def check_refused(run: Run, before: dict[str, int]) -> None:
    _reconnected(run, before)
    # the refused attempts backed off: the delays grow (jitter aside) up to max_delay
    delays = [e.delay for e in run.of(ReconnectScheduled)]
    assert len(delays) >= 4
    assert max(delays) <= FAST.max_delay * (1 + FAST.jitter)
    assert max(delays) > 2 * FAST.initial_delay


async def untrusted_certificate(run: Run) -> None:
    """The server's certificate is replaced by one from a CA the client does not trust,
    the connections drop; later the trusted certificate is back."""
    server = run.fake.server
    good = server.tls
    server.tls = TestCA.generate("rogue CA").issue()
    await server.refuse_connections()
    server.accept_connections()
    await drop(run)
    await run.drive_until(lambda: len(run.of(TLSFailure)) >= 2, "two TLS failures", 5)
    assert not run.settled()  # nothing was handed out over the untrusted connection
    server.tls = good
    await server.refuse_connections()
    server.accept_connections()


def check_tls(run: Run, before: dict[str, int]) -> None:
    failures = run.of(TLSFailure)
    assert failures and all("not trusted" in e.detail for e in failures), failures
    _reconnected(run, before)


# sequence gaps, checksums, stale snapshots: the fakes' own hooks


async def gap(run: Run) -> None:
    run.fake.skip_next(run.target, 2 if run.venue.name == "kraken" else 1)


def check_resynced(*words: str) -> Check:
    def check(run: Run, before: dict[str, int]) -> None:
        found = run.resyncing(run.target)
        assert found, f"no BookResyncing for {run.target}"
        assert any(any(w in e.reason for w in words) for e in found), [e.reason for e in found]
        assert [e for e in run.of(BookSynced) if e.symbol == run.target]
        assert run.client.stats.book_resyncs > before["book_resyncs"]
        assert not run.resyncing(run.symbols[1]), "the bystander book resynced too"

    return check


def check_gap(run: Run, before: dict[str, int]) -> None:
    words = ("checksum",) if run.venue.name == "kraken" else ("gap", "sequence", "prevSeqId")
    check_resynced(*words)(run, before)


async def bad_checksum(run: Run) -> None:
    run.fake.corrupt_checksum_next(run.target)


def check_checksum(run: Run, before: dict[str, int]) -> None:
    check_resynced("checksum")(run, before)
    assert run.client.stats.checksum_failures > before["checksum_failures"]


async def stale_snapshot(run: Run) -> None:
    fake, target, name = run.fake, run.target, run.venue.name
    if name == "binance":
        fake.stale_snapshot_next(target, updates_behind=40)  # the resync's REST answer ...
        fake.skip_next(target)  # ... after a gap
    elif name == "kraken":
        fake.stale_snapshot_next(target, 8)  # the resync's snapshot is 8 updates old ...
        fake.corrupt_checksum_next(target)  # ... after a checksum failure
        run.allowed_wrong.add(target)  # nothing can tell until the next update's checksum
    elif name == "gemini":
        fake.stale_snapshot_next(target, updates_behind=20)
        fake.skip_next(target, 3)
    elif name == "bybit":
        # Only a synced book has a u and seq to judge a snapshot by: while one waits for
        # its resubscription's snapshot, Bybit's protocol gives nothing to tell a stale one
        # from the fresh one (the real exchange does not send stale snapshots then).
        book = run.client.books.get(target)
        assert book is not None and book.synced and not book.stale, "not synced now"
        assert fake.send_stale_snapshot(target, back=4) >= 1  # older u and seq: ignored


def check_stale(run: Run, before: dict[str, int]) -> None:
    name, stats = run.venue.name, run.client.stats
    if name == "bybit":
        assert not run.resyncing(), "a stale snapshot (older u) must be ignored, not applied"
        return
    found = run.resyncing(run.target)
    assert found
    if name == "binance":
        # the stale REST answer was refused (too old) and asked for again
        assert stats.snapshot_requests >= before["snapshot_requests"] + 2
    elif name == "gemini":
        assert stats.snapshot_requests >= before["snapshot_requests"] + 2
    elif name == "kraken":
        assert stats.checksum_failures >= before["checksum_failures"] + 1


# duplicates and messages out of order: book updates sent again


async def duplicate(run: Run) -> None:
    await run.drive(20)
    session, updates = run.book_updates_sent(run.target)
    session.send(updates[-1])


async def out_of_order(run: Run) -> None:
    await run.drive(20)
    session, updates = run.book_updates_sent(run.target)
    assert len(updates) >= 6
    session.send(updates[-6])  # an update from a while ago arrives late


#: exchange -> what the client does with a repeated / a late book update
DUPLICATE_OUTCOME = {
    "binance": "ignored",  # u <= the book's update id
    "okx": "ignored",  # seqId <= the book's
    "bybit": "resync",  # same u twice: Bybit's u never repeats, so the stream is broken
    "kraken": "ignored",  # levels are absolute: applying one twice changes nothing
    "coinbase": "ignored",  # the same (absolute) changes at the same time
    "gemini": "ignored",  # u <= the book's update id
}
LATE_OUTCOME = {
    "binance": "ignored",
    "okx": "ignored",
    "bybit": "resync",  # an older u
    "kraken": "checksum",  # old levels re-applied: the next checksum fails (or they match)
    "coinbase": "resync",  # time going backwards
    "gemini": "ignored",
}


def check_repeat(table: dict[str, str]) -> Check:
    def check(run: Run, before: dict[str, int]) -> None:
        outcome = table[run.venue.name]
        if outcome == "ignored":
            assert not run.resyncing(), [e.reason for e in run.resyncing()]
        elif outcome == "resync":
            assert run.resyncing(run.target)
            assert not run.resyncing(run.symbols[1])
        # "checksum": resynced if (and only if) the old levels differ from the book's;
        # either way the books are checked against the truth afterwards

    return check


# bad input


async def garbage(run: Run) -> None:
    for session in run.sessions():
        session.send_garbage()
        session.send(b'{"truncated": [1, 2')


def check_garbage(run: Run, before: dict[str, int]) -> None:
    rejected = run.of(FrameRejected)
    assert len(rejected) >= 2, rejected
    assert not run.of(Disconnected) and not run.resyncing()


async def unknown_type(run: Run) -> None:
    message = run.venue.unknown_message(run.market_id(run.target))
    run.book_session(run.target).send(message)


def check_unknown(run: Run, before: dict[str, int]) -> None:
    assert run.client.stats.unknown_messages > before["unknown_messages"]
    assert not run.of(FrameRejected) and not run.of(Disconnected) and not run.resyncing()


async def oversized(run: Run) -> None:
    blob = os.urandom(MAX_MESSAGE).hex().encode()  # 2 MiB that does not compress away
    run.book_session(run.target).send(b'{"blob":"' + blob + b'"}')


async def bomb(run: Run) -> None:
    # 32 MiB of one byte: deflates to a few tens of KiB on the wire
    session = run.book_session(run.target)
    assert session.compression_in_use, "permessage-deflate was not negotiated"
    session.send(b'{"blob":"' + b"0" * (32 << 20) + b'"}')


def check_too_large(run: Run, before: dict[str, int]) -> None:
    rejected = run.of(FrameRejected)
    assert rejected and "FrameTooLarge" in type(rejected[0].error).__name__, rejected
    _reconnected(run, before)


# a subscribe the exchange refuses


async def refused_subscribe(run: Run) -> None:
    """The client knows a market the exchange does not serve; subscribing to it is
    refused.  A good stream asked for in the same turn shares the subscribe message."""
    client = run.client
    real = client.market(run.target)
    base = real.base
    fake_id = real.id.replace(base, "ZZZ").replace(base.lower(), "zzz")
    extra = attrs.evolve(real, symbol=run.target.replace(base, "ZZZ"), id=fake_id, base="ZZZ")
    client.load_markets(markets=[*client.markets.values(), extra])
    good = client.fetch_trades(run.target)
    d = client.fetch_order_book(extra.symbol)
    errors: list[Any] = []
    d.addErrback(lambda f: errors.append(f.value))
    await run.drive_until(lambda: d.called and good.called, "the subscribe answers", 10)
    assert errors and isinstance(errors[0], ExchangeError), errors
    trades = await good  # not failed with the refused topic
    assert isinstance(trades, list)
    run.notes["refused"] = (extra.symbol, errors[0])


def _fast_okx_control(client: Any) -> None:
    # OKX allows 480 control messages an hour per connection (one per 7.5 s when
    # spread evenly); this fault needs four in a row, so it runs at 10 a second
    client.public_rules = attrs.evolve(client.public_rules, control_rate=10.0)


def check_refused_subscribe(run: Run, before: dict[str, int]) -> None:
    symbol, error = run.notes["refused"]
    assert symbol in str(error) or "ZZZ" in str(error).upper(), error
    failed = run.of(StreamFailed)
    assert [(e.channel, e.symbol) for e in failed] == [("book", symbol)], failed
    assert symbol not in run.client.books
    assert not run.resyncing() and not run.of(Disconnected)
    refusals = run.of(ControlFailed)
    if refusals:  # (Kraken and Coinbase answer per topic; the others refuse whole messages)
        # the last refusal names the bad topic alone: the good one was asked for again
        assert len(refusals[-1].topics) == 1, refusals


# REST snapshot faults (Binance: the only exchange here whose books need REST snapshots)

DEPTH = "/api/v3/depth"


def rest_fault(status: int | None, **kw: Any) -> Inject:
    async def inject(run: Run) -> None:
        rest = run.fake.server.rest
        if status is None:
            run.client.rest._timeout = 0.5  # as exchange(..., rest_timeout=0.5) sets it
            rest.hang_next(path=DEPTH)
        else:
            rest.fail_next(status, path=DEPTH, **kw)
        run.fake.skip_next(run.target)  # a gap: the resync needs a REST snapshot

    return inject


def check_rest(kind: str) -> Check:
    def check(run: Run, before: dict[str, int]) -> None:
        check_resynced("gap", "sequence")(run, before)
        stats = run.counters()
        depth = [r for r in run.fake.rest_log if r.path == DEPTH]
        assert stats["rest_retries"] > before["rest_retries"]
        if kind in ("429", "418"):
            assert stats["rest_rate_limited"] == before["rest_rate_limited"] + 1
            # the retry waited for Retry-After (1 s)
            assert depth[-1].time - depth[-2].time >= 0.95
        assert run.fake.rejected_429 == 0 and run.fake.banned_418 == 0  # none earned

    return check


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("tcp_drop_mid_frame", drop_mid_frame, lambda r, b: _reconnected(r, b, code=1006)),
        Fault("half_open_stall", half_open_stall, check_stall),
        Fault("close_1001", close_with(1001), lambda r, b: _reconnected(r, b, code=1001)),
        Fault("close_1006", drop, lambda r, b: _reconnected(r, b, code=1006)),
        Fault("close_1011", close_with(1011), lambda r, b: _reconnected(r, b, code=1011)),
        Fault("connection_refused", refuse_then_503, check_refused),
        Fault("tls_untrusted_ca", untrusted_certificate, check_tls, tls=True),
        Fault("sequence_gap", gap, check_gap, only=("binance", "okx", "kraken", "gemini")),
        Fault("checksum_mismatch", bad_checksum, check_checksum, only=("okx", "kraken")),
        Fault(
            "stale_snapshot",
            stale_snapshot,
            check_stale,
            only=("binance", "bybit", "kraken", "gemini"),
        ),
        Fault("duplicate_message", duplicate, check_repeat(DUPLICATE_OUTCOME)),
        Fault("out_of_order_message", out_of_order, check_repeat(LATE_OUTCOME)),
        Fault("malformed_json", garbage, check_garbage),
        Fault("unknown_message_type", unknown_type, check_unknown),
        Fault("oversized_frame", oversized, check_too_large),
        Fault(
            "compression_bomb",
            bomb,
            check_too_large,
            only=("okx", "coinbase"),
            open_kwargs=lambda venue: {"before_start": _deflate},
        ),
        Fault(
            "subscribe_error_reply",
            refused_subscribe,
            check_refused_subscribe,
            open_kwargs=lambda venue: {"after_create": _fast_okx_control}
            if venue.name == "okx"
            else {},
        ),
        Fault(
            "rest_429_retry_after",
            rest_fault(429, retry_after=1),
            check_rest("429"),
            only=("binance",),
        ),
        Fault(
            "rest_418_retry_after",
            rest_fault(418, retry_after=1),
            check_rest("418"),
            only=("binance",),
        ),
        Fault("rest_5xx", rest_fault(503), check_rest("5xx"), only=("binance",)),
        Fault("rest_timeout", rest_fault(None), check_rest("timeout"), only=("binance",)),
    )
}


def _deflate(fake: Any) -> None:
    fake.server.permessage_deflate = True  # OKX offers permessage-deflate (v5 guide)


#: (exchange, fault) pairs the matrix does not generate, and why
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("bybit", "sequence_gap"): "Bybit's u is not contiguous: a withheld delta cannot be seen "
    "in the stream; the exchange's next snapshot repairs the book",
    ("coinbase", "sequence_gap"): "level2 carries no sequence: a withheld l2update cannot be "
    "seen; a reconnect or resubscribe repairs the book",
    ("binance", "checksum_mismatch"): "Binance books carry no checksum",
    ("bybit", "checksum_mismatch"): "Bybit books carry no checksum",
    ("coinbase", "checksum_mismatch"): "Coinbase level2 carries no checksum",
    ("gemini", "checksum_mismatch"): "Gemini books carry no checksum",
    ("okx", "stale_snapshot"): "OKX pushes the snapshot on subscribe with its seqId; the "
    "prevSeqId chain of the next update catches any mismatch (as a sequence gap)",
    ("coinbase", "stale_snapshot"): "level2 carries no sequence: a stale snapshot is seen "
    "only if the live updates leave it crossed (tests/test_coinbase_e2e.py); otherwise no "
    "client can tell",
    ("binance", "compression_bomb"): "Binance does not compress market streams",
    ("bybit", "compression_bomb"): "Bybit does not compress",
    ("kraken", "compression_bomb"): "Kraken v2 does not compress",
    ("gemini", "compression_bomb"): "Gemini does not compress",
    **{
        (ex, f): f"{ex} books are built from the socket alone (no REST snapshot)"
        for ex in ("okx", "bybit", "kraken", "coinbase", "gemini")
        for f in ("rest_429_retry_after", "rest_418_retry_after", "rest_5xx", "rest_timeout")
    },
}


def matrix() -> list[tuple[str, str]]:
    return [(ex, f.name) for f in FAULTS.values() for ex in EXCHANGES if f.applies(ex)]


async def within(d: Deferred[Any], seconds: float) -> Any:
    return await d.addTimeout(seconds, reactor)
