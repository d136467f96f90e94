"""The fault matrix: every exchange's fake x every fault, against the real client.

Each case starts a fake and a client on loopback, syncs two books, injects
one fault (tests/faults.py) and asserts: no crash and no unhandled error
(no failure logged anywhere, no failed Deferred garbage-collected); the
typed, counted outcome the fault calls for (status events, stats
counters); recovery within a bound; and that every book handed out, pushed
or pulled, during and after the fault equals the fake's true book.  Pairs
that do not apply are listed with the reason in ``faults.NOT_APPLICABLE``
and are not generated.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from faults import EXCHANGES, FAULTS, NOT_APPLICABLE, RECOVERY_BOUND, VENUES, Run, matrix
from twisted.logger import globalLogPublisher

from txexchange.transport import Disconnected


@pytest.fixture
def no_unhandled_errors() -> Iterator[list[dict[str, Any]]]:
    """Every log event with a failure (log.failure, unhandled errors in Deferreds).

    The test fails if any was emitted, including failed Deferreds that were
    garbage-collected without an errback (collected before the check).
    """
    failures: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield failures
        gc.collect()
        assert [_describe(e) for e in failures] == []
    finally:
        globalLogPublisher.removeObserver(observer)


def _describe(event: dict[str, Any]) -> str:
    failure = event.get("log_failure")
    text = event.get("log_format") or ""
    return f"{text} {failure.getTraceback() if failure is not None else ''}"


def test_every_pair_is_in_the_matrix_or_not_applicable() -> None:
    generated = set(matrix())
    for exchange in EXCHANGES:
        for fault in FAULTS:
            pair = (exchange, fault)
            assert (pair in generated) != (pair in NOT_APPLICABLE), pair
    assert all(reason for reason in NOT_APPLICABLE.values())


@pytest.mark.parametrize(("exchange", "fault"), matrix())
@pytest_twisted.ensureDeferred
async def test_fault(exchange: str, fault: str, no_unhandled_errors: list[Any]) -> None:
    venue, spec = VENUES[exchange], FAULTS[fault]
    run = await Run.open(venue, tls=spec.tls, **spec.open_kwargs(venue))
    try:
        await run.sync()
        before = run.counters()
        run.status.clear()
        await spec.inject(run)
        took = await run.recover()
        assert took < RECOVERY_BOUND
        spec.check(run, before)
        await run.drive(60)
        await run.assert_true()
    finally:
        await run.close()


#: faults that can be thrown at a run at any moment, on top of each other
COMBINABLE = (
    "tcp_drop_mid_frame",
    "half_open_stall",
    "close_1001",
    "close_1006",
    "close_1011",
    "sequence_gap",
    "checksum_mismatch",
    "stale_snapshot",
    "duplicate_message",
    "out_of_order_message",
    "malformed_json",
    "unknown_message_type",
    "oversized_frame",
    # Binance's REST snapshot faults, one queued at a time (queued ones would add up
    # their Retry-After waits and backoffs past the recovery bound)
    "rest_429_retry_after",
    "rest_418_retry_after",
    "rest_5xx",
    "rest_timeout",
)


@pytest.mark.parametrize("exchange", EXCHANGES)
@pytest_twisted.ensureDeferred
async def test_random_faults_combined(exchange: str, no_unhandled_errors: list[Any]) -> None:
    """Faults at random (seeded) for a few seconds; then the books are the true books."""
    rng = random.Random(f"faults-{exchange}")
    venue = VENUES[exchange]
    faults = [FAULTS[f] for f in COMBINABLE if FAULTS[f].applies(exchange)]
    run = await Run.open(venue, seed=rng.randrange(1000))
    injected: list[str] = []
    try:
        await run.sync()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            fault = rng.choice(faults)
            if fault.name.startswith("rest_") and run.fake.server.rest.queued_faults:
                continue  # one REST fault at a time: queued ones would add up past the bound
            try:
                await fault.inject(run)
            except AssertionError:
                continue  # e.g. no session carries the book right now (reconnecting)
            injected.append(fault.name)
            await run.drive(rng.randrange(10, 80))
        took = await run.recover()
        assert took < RECOVERY_BOUND
        await run.drive(60)
        await run.assert_true()
        assert len(injected) >= 8, injected
        assert run.resyncing() and run.of(Disconnected)
    finally:
        await run.close()
