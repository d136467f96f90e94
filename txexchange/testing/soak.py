"""Soak driver: the real Binance client against a fast fake over loopback, with faults.

Part of the test toolkit, beside the fakes.  :class:`SoakRun` starts a
:class:`~txexchange.testing.binance.FakeBinance` and a real client (same
process, same reactor, 127.0.0.1), subscribes diff-depth books, and steps
the simulated market as fast as the client keeps up (a bounded number of
messages in flight), injecting faults at a fixed message interval in turn: a
sequence gap (forces a resync from a REST snapshot), a dropped connection
(reconnect, resubscribe, resync) and a stalled connection (the client's stall
watchdog reconnects).  Every ``window`` delivered book updates it takes a
:class:`SoakSample`: resident memory, callback latency percentiles (from the
fake writing the message to the client's observer getting it), throughput.
At the end it waits until every book caught up and compares each with the
market's true book.  ``bench/soak.py`` runs it for a million messages;
``tests/test_soak.py`` a short version.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred

__all__ = ["FAULTS", "SoakResult", "SoakRun", "SoakSample", "library_objects", "rss_kib"]

#: the faults injected in turn
FAULTS = ("gap", "drop", "stall")


def rss_kib() -> int | None:
    """Resident set size of this process in KiB (``None`` where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def library_objects() -> Counter[str]:
    """Live objects per type, for the types of txexchange, Twisted's reactor and Autobahn.

    The test toolkit's own types (the fakes) are left out, so the count is
    what a client holds, even with a fake in the same process.
    """
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        cls = type(obj)
        module = getattr(cls, "__module__", "")
        if not isinstance(module, str) or module.startswith("txexchange.testing"):
            continue
        if module.startswith(("txexchange", "twisted.internet", "autobahn")):
            counts[f"{module}.{cls.__qualname__}"] += 1
    return counts


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@attrs.frozen
class SoakSample:
    """Figures over one window of delivered book updates (latencies in ms)."""

    messages: int
    elapsed: float
    rate: float
    rss_kib: int | None
    p50_ms: float
    p99_ms: float
    max_ms: float
    resyncs: int
    reconnects: int
    faults: int
    #: live objects of library types (see :func:`library_objects`), if counted
    objects: int | None = None


@attrs.frozen
class SoakResult:
    """The whole run: samples, totals, and whether every book ended equal to the truth."""

    samples: tuple[SoakSample, ...]
    messages: int
    frames: int
    elapsed: float
    faults: dict[str, int]
    resyncs: int
    reconnects: int
    mismatches: tuple[str, ...]

    @property
    def books_true(self) -> bool:
        return not self.mismatches


class SoakRun:
    """One soak run; :meth:`run` returns a Deferred of a :class:`SoakResult`.

    :param messages: book updates (depth diffs) to deliver to the observers.
    :param symbols: how many symbols (one diff stream each, one connection).
    :param window: take a :class:`SoakSample` every this many messages.
    :param fault_every: inject the next fault after this many messages (0: none).
    :param in_flight: most messages sent but not yet received before the
        driver waits for the client.
    :param batch: market steps (one message each) sent per reactor iteration;
        the latency of a message includes waiting for the rest of its batch.
    :param on_sample: called with each sample as it is taken.
    :param count_objects: count live library objects in each sample (a full
        :func:`gc.get_objects` walk: a fraction of a second per sample).
    """

    def __init__(
        self,
        reactor: Any,
        *,
        messages: int = 1_000_000,
        symbols: int = 10,
        window: int = 50_000,
        fault_every: int = 100_000,
        in_flight: int = 400,
        batch: int = 20,
        seed: int = 1,
        levels: int = 50,
        stall_timeout: float = 0.5,
        on_sample: Callable[[SoakSample], None] | None = None,
        count_objects: bool = False,
    ) -> None:
        self.reactor = reactor
        self.messages = messages
        self.symbols = [f"S{i:03d}/USDT" for i in range(symbols)]
        self.window = window
        self.fault_every = fault_every
        self.in_flight = in_flight
        self.batch = batch
        self.seed = seed
        self.levels = levels
        self.stall_timeout = stall_timeout
        self.on_sample = on_sample
        self.count_objects = count_objects
        self.fake: Any = None
        self.client: Any = None
        self.delivered = 0
        self.frames = 0
        self.sent = 0
        self.reconnects = 0
        self.faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.samples: list[SoakSample] = []
        self._rng = random.Random(seed)
        self._sent_at: dict[tuple[str, int], float] = {}
        self._latencies: list[float] = []
        self._started = 0.0
        self._window_started = 0.0
        self._window_from = 0
        self._last_progress = 0.0
        self._next_fault = fault_every or -1
        self._fault_count = 0
        self._done: Deferred[None] | None = None
        self._pump_call: Any = None

    # -- running -----------------------------------------------------------------

    def run(self) -> Deferred[SoakResult]:
        return Deferred.fromCoroutine(self._run())

    async def _run(self) -> SoakResult:
        import txexchange
        from txexchange.testing.binance import FakeBinance
        from txexchange.testing.market import SimulatedMarket
        from txexchange.transport import Disconnected, TransportOptions

        # The process holds the fake too, so its memory must level off early: a
        # short undo history (the final comparison is at the latest update id)
        # and a virtual minute per step, so its bounded windows (24 h ticker
        # statistics, 10 000 closed 1m candles a symbol) fill within the first
        # ~10 000 messages per symbol.
        market = SimulatedMarket(
            self.symbols,
            seed=self.seed,
            levels=self.levels,
            history=1_000,
            virtual_step_ms=60_000,
        )
        fake = self.fake = FakeBinance(self.symbols, reactor=self.reactor, market=market)
        await fake.start()
        options = TransportOptions(
            initial_delay=0.02,
            max_delay=0.2,
            jitter=0.1,
            stall_timeout=self.stall_timeout,
            close_timeout=1.0,
            frame_tap=self._tap,
        )
        client = self.client = txexchange.exchange(
            "binance", reactor=self.reactor, urls=fake.urls, transport=options
        )
        try:
            fake.step(1)
            await client.fetch_order_books(self.symbols, limit=None)

            def status(event: Any) -> None:
                if isinstance(event, Disconnected):
                    self.reconnects += 1

            client.subscribe("status", None, status)
            for symbol in self.symbols:
                client.subscribe("book", symbol, self._on_update)
            self._done = Deferred()
            self._started = self._window_started = self._last_progress = time.perf_counter()
            self._pump()
            await self._done
            elapsed = time.perf_counter() - self._started
            mismatches = await self._compare()
            return SoakResult(
                tuple(self.samples),
                self.delivered,
                self.frames,
                elapsed,
                dict(self.faults),
                client.stats.book_resyncs,
                self.reconnects,
                tuple(mismatches),
            )
        finally:
            if self._pump_call is not None and self._pump_call.active():
                self._pump_call.cancel()
            await client.close()
            await fake.stop()

    def _tap(self, url: str, received_at: float, payload: bytes, is_binary: bool) -> None:
        self.frames += 1
        self._last_progress = time.perf_counter()

    def _pump(self) -> None:
        self._pump_call = None
        if self._done is None or self._done.called:
            return
        now = time.perf_counter()
        # every message sent is one frame received, unless a fault ate it
        if self.sent - self.frames >= self.in_flight and now - self._last_progress > 0.05:
            # nothing arrives (a fault ate what was in flight): stop waiting for it
            self.sent = self.frames
        if self.sent - self.frames < self.in_flight:
            updates = self.fake.step(self.batch)
            sent_at = self._sent_at
            for update in updates:
                sent_at[(update.symbol, update.last_id)] = now
            self.sent += len(updates)
            if len(sent_at) > 4 * self.in_flight:  # lost to faults: forget the oldest
                for key in list(sent_at)[: len(sent_at) - 2 * self.in_flight]:
                    del sent_at[key]
            self._pump_call = self.reactor.callLater(0, self._pump)
        else:
            self._pump_call = self.reactor.callLater(0.001, self._pump)

    def _on_update(self, update: Any) -> None:
        if update.snapshot:
            return
        now = time.perf_counter()
        sent = self._sent_at.pop((update.symbol, update.nonce), None)
        if sent is not None:
            self._latencies.append(now - sent)
        self.delivered += 1
        n = self.delivered
        if n % self.window == 0:
            self._sample(now)
        if n >= self.messages:
            if self._done is not None and not self._done.called:
                self._done.callback(None)
        elif n == self._next_fault:
            self._fault()

    # -- faults and samples ---------------------------------------------------------

    def _fault(self) -> None:
        kind = FAULTS[self._fault_count % len(FAULTS)]
        self._fault_count += 1
        self._next_fault += self.fault_every
        self.faults[kind] += 1
        sessions = [s for s in self.fake.server.sessions if s.is_open and not s.stalled]
        if kind == "gap":
            self.fake.skip_next(self._rng.choice(self.symbols))
        elif sessions and kind == "drop":
            sessions[-1].drop()
        elif sessions:
            sessions[-1].stall()

    def _sample(self, now: float) -> None:
        ordered = sorted(self._latencies)
        self._latencies = []
        span = now - self._window_started
        sample = SoakSample(
            messages=self.delivered,
            elapsed=now - self._started,
            rate=(self.delivered - self._window_from) / span if span > 0 else float("inf"),
            rss_kib=rss_kib(),
            p50_ms=_percentile(ordered, 0.50) * 1000,
            p99_ms=_percentile(ordered, 0.99) * 1000,
            max_ms=(ordered[-1] if ordered else float("nan")) * 1000,
            resyncs=self.client.stats.book_resyncs,
            reconnects=self.reconnects,
            faults=self._fault_count,
            objects=sum(library_objects().values()) if self.count_objects else None,
        )
        self._window_started = time.perf_counter()  # the object count is not traffic time
        self._window_from = self.delivered
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)

    async def _compare(self) -> list[str]:
        """Let the books catch up with the market, then compare each with the truth."""
        from twisted.internet.task import deferLater

        fake = self.fake
        books = self.client.books
        deadline = time.monotonic() + 30

        def caught_up(s: str) -> bool:
            book = books[s]
            return book.synced and not book.stale and book.nonce == fake.market.last_update_id(s)

        while not all(caught_up(s) for s in self.symbols):
            if time.monotonic() > deadline:
                break
            await deferLater(self.reactor, 0.01, lambda: None)
        mismatches = []
        for s in self.symbols:
            book = books[s]
            if not book.synced or book.stale:
                mismatches.append(f"{s}: not synced ({book!r})")
                continue
            shown = book.snapshot()
            bids, asks, _ = fake.true_book(s, nonce=shown.nonce)
            if list(shown.bids) != [tuple(x) for x in bids] or list(shown.asks) != [
                tuple(x) for x in asks
            ]:
                mismatches.append(f"{s}: differs from the true book at {shown.nonce}")
        return mismatches
