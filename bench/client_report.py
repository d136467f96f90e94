"""What every benchmark client measures and prints, whatever library it drives.

Each client process (``bench/client_*.py``) parses :func:`client_args`, calls
:meth:`Meter.update` from its book-updated callback (or poll), and prints
:meth:`Meter.report` as one JSON line when every book has reached its last
update id.  The measuring window starts at the first update after the one
priming diff per symbol (see ``fake_binance_proc.py``), so market loading,
snapshots and connection set-up are not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from feed_data import FIRST_ID, book_hash, market_ids

__all__ = ["Meter", "client_args", "emit"]

#: ``u`` of each symbol's priming diff; updates past it are measured.
PRIME_U = FIRST_ID + 3


def client_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--ws", required=True, help="ws:// or wss:// base URL of the fake")
    p.add_argument("--rest", required=True, help="http:// or https:// base URL of the fake")
    p.add_argument("--ca-file", default="", help="PEM of the CA to trust (wss/https)")
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--levels", type=int, default=100)
    p.add_argument("--latency", action="store_true", help="record send-to-callback latency")
    p.add_argument("--mode", default="push", help="txexchange: push or pull")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--window", type=int, default=0, help="latency p99 per this many messages")
    return p.parse_args()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _pct(sorted_values: list[int], q: float) -> float | None:
    if not sorted_values:
        return None
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


class Meter:
    """Counts updates per book, times the window, keeps latency samples."""

    def __init__(self, args: argparse.Namespace, client: str) -> None:
        self.client = client
        self.ids = market_ids(args.symbols)
        n = args.symbols
        per_symbol = [args.messages // n + (1 if s < args.messages % n else 0) for s in range(n)]
        #: the final ``u`` of every symbol
        self.final = {m: FIRST_ID + 3 * k for m, k in zip(self.ids, per_symbol, strict=True)}
        self.remaining = set(self.ids)
        self.measured = args.messages - n - 1
        self.latency = args.latency
        self.window = args.window
        self.samples = array("q")
        self.t0 = 0.0
        self.cpu0 = 0.0
        self.t1 = 0.0
        self.cpu1 = 0.0
        self.on_done: Callable[[], None] | None = None
        self.callbacks = 0
        self.started = time.perf_counter()
        self.synced_at = 0.0
        self.unsynced = set(self.ids)
        self.rss0 = 0.0

    def update(self, market_id: str, nonce: int | None, sent_us: int | float | None) -> None:
        """One book update seen by the client (``sent_us``: the event's ``E``, µs)."""
        self.callbacks += 1
        if self.unsynced and market_id in self.unsynced:
            self.unsynced.discard(market_id)
            if not self.unsynced:
                self.synced_at = time.perf_counter()
        if nonce is None or nonce <= PRIME_U:
            return
        if not self.t0:
            self.t0 = time.perf_counter()
            self.cpu0 = time.process_time()
            self.rss0 = rss_mb()
        elif self.latency and sent_us:
            self.samples.append(time.time_ns() // 1000 - int(sent_us))
        if nonce >= self.final[market_id] and market_id in self.remaining:
            self.remaining.discard(market_id)
            if not self.remaining:
                self.t1 = time.perf_counter()
                self.cpu1 = time.process_time()
                if self.on_done is not None:
                    self.on_done()

    @property
    def done(self) -> bool:
        return not self.remaining

    def report(self, books: Any, **extra: Any) -> dict[str, Any]:
        """The result line; ``books`` yields ``(market id, bids, asks)`` of the final books."""
        wall = self.t1 - self.t0
        cpu = self.cpu1 - self.cpu0
        samples = sorted(self.samples)
        out: dict[str, Any] = {
            "client": self.client,
            "messages": self.measured,
            "wall_s": wall,
            "cpu_s": cpu,
            "msgs_per_s": self.measured / wall if wall > 0 else None,
            "cpu_us_per_msg": cpu / self.measured * 1e6 if self.measured else None,
            "p50_us": _pct(samples, 0.50),
            "p99_us": _pct(samples, 0.99),
            "latency_samples": len(samples),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "callbacks": self.callbacks,
            "rss_start_mb": self.rss0,
            "cold_start_s": self.synced_at - self.started if self.synced_at else None,
            "hash": book_hash(books),
        }
        if self.window and samples:
            raw = list(self.samples)
            out["p99_windows_us"] = [
                _pct(sorted(raw[i : i + self.window]), 0.99)
                for i in range(0, len(raw), self.window)
            ]
        out.update(extra)
        return out


def rss_mb() -> float:
    """Current resident set size, MB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20
