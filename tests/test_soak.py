"""A short soak: the real client over loopback through gaps, drops and stalls, nothing lost.

The same driver as ``bench/soak.py`` (:class:`txexchange.testing.soak.SoakRun`)
with tens of thousands of messages instead of a million.  Checked: every book
ends equal to the true book; every fault kind happened and was recovered
from; and nothing the client holds keeps growing -- memory allocated by the
library (tracemalloc, the fake excluded) and the number of live objects of
each library type (gc) are compared between a checkpoint after warm-up and
the end of the run.  No timing is asserted.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from txexchange.testing.soak import SoakRun, SoakSample, library_objects

MESSAGES = 24_000
WINDOW = 4_000
CHECKPOINT = 12_000  # after four faults: warm-up, first resyncs and reconnects done

# Allocations made by the library itself (the fake and this driver excluded).
_LIBRARY = [
    tracemalloc.Filter(True, "*/txexchange/*"),
    tracemalloc.Filter(False, "*/txexchange/testing/*"),
]


class Checkpoints:
    """At the checkpoint: count objects, start tracing; at the end: count again, measure.

    Tracing starts only at the checkpoint, so what tracemalloc reports at the
    end is exactly what the library allocated since then and still holds.
    """

    def __init__(self) -> None:
        self.retained = 0
        self.objects: dict[int, Counter[str]] = {}

    def __call__(self, sample: SoakSample) -> None:
        if sample.messages == CHECKPOINT:
            gc.collect()
            self.objects[CHECKPOINT] = library_objects()
            tracemalloc.start()
        elif sample.messages == MESSAGES:
            gc.collect()
            snapshot = tracemalloc.take_snapshot().filter_traces(_LIBRARY)
            tracemalloc.stop()
            self.retained = sum(s.size for s in snapshot.statistics("filename"))
            self.objects[MESSAGES] = library_objects()


@pytest_twisted.ensureDeferred
async def test_short_soak_keeps_books_true_and_nothing_grows() -> None:
    checkpoints = Checkpoints()
    run = SoakRun(
        reactor,
        messages=MESSAGES,
        symbols=5,
        window=WINDOW,
        fault_every=3_000,
        seed=4,
        on_sample=checkpoints,
    )
    try:
        result = await run.run()
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()

    assert result.books_true, result.mismatches
    assert result.messages >= MESSAGES
    assert all(n >= 2 for n in result.faults.values()), result.faults
    assert result.resyncs >= result.faults["gap"]
    assert result.reconnects >= result.faults["drop"] + result.faults["stall"]

    # what the library allocated after the checkpoint and still holds at the end is
    # the books' current levels and the like (tens of KiB), not a growing backlog
    assert checkpoints.retained < 1024 * 1024, f"{checkpoints.retained} bytes retained"
    # nor does the number of live objects of any library (or reactor) type
    first, last = checkpoints.objects[CHECKPOINT], checkpoints.objects[MESSAGES]
    grown: dict[str, Any] = {
        name: (first[name], count)
        for name, count in last.items()
        if count > first[name] + max(20, first[name] // 10)
    }
    assert not grown, f"live objects grew (checkpoint, end): {grown}"
