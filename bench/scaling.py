"""Scaling curves, cold start, memory per book and a long run, for txexchange (push mode).

* symbols: 1 -> 1,000 books over one connection, and over several;
* depth: books of 100 -> 5,000 levels a side;
* memory: RSS of 1,000 books x 1,000 levels a side, loaded from decoded
  REST snapshots (a child process per measurement);
* cold start: 1,000 symbols against the fake's REST weight limit (6,000 a
  minute): time until every book is synced, and 429 answers (must be 0);
* long run: 1,000,000 diffs at 10,000 msg/s: p99 latency per 100,000
  messages (drift) and RSS growth.

``--quick`` scales every one of them down.  Run alone or from ``bench/run.py``::

    .venv/bin/python bench/scaling.py --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import run_one

CLIENT = "txexchange-push"


def _line(res: dict[str, Any], what: str) -> str:
    if not res.get("valid"):
        return f"| {what} | INVALID ({str(res.get('error', 'book hash differs'))[:80]}) | | |"
    return (
        f"| {what} | {res['msgs_per_s']:,.0f} | {res['cpu_us_per_msg']:.1f} "
        f"| {res['peak_rss_mb']:.0f} |"
    )


def symbol_curve(quick: bool, log: Callable[[str], None]) -> list[str]:
    rows = ["| books, connections | msg/s (wall) | CPU µs/msg | peak RSS MB |", "|---|---|---|---|"]
    counts = (1, 10, 100) if quick else (1, 10, 100, 1000)
    for n in counts:
        for conns in (1, 4) if n >= 100 else (1,):
            messages = max(20_000 if quick else 100_000, n * 20)
            res = run_one(
                CLIENT, tls=True, symbols=n, messages=messages,
                extra=["--connections", str(conns)],
            )  # fmt: skip
            log(f"  symbols {n} over {conns} connection(s): {_line(res, '')}")
            rows.append(_line(res, f"{n}, {conns}"))
    return rows


def depth_curve(quick: bool, log: Callable[[str], None]) -> list[str]:
    rows = ["| levels a side | msg/s (wall) | CPU µs/msg | peak RSS MB |", "|---|---|---|---|"]
    for levels in (100, 1000) if quick else (100, 1000, 5000):
        res = run_one(
            CLIENT, tls=True, symbols=10, messages=20_000 if quick else 100_000, levels=levels
        )
        log(f"  depth {levels}: {_line(res, '')}")
        rows.append(_line(res, str(levels)))
    return rows


_MEMORY_CHILD = r"""
import gc, json, sys, orjson, resource
sys.path.insert(0, sys.argv[3])
from txexchange.events import BookSnapshot
from txexchange.state.book import OrderBook
books_n, levels = int(sys.argv[1]), int(sys.argv[2])
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
def answer(s):
    mid = 100_000 + 37 * s
    return orjson.dumps({"lastUpdateId": 1, "bids": [[f"{(mid - i) / 100:.2f}", f"{i + 1}.12345678"]
        for i in range(levels)], "asks": [[f"{(mid + 1 + i) / 100:.2f}", f"{i + 1}.87654321"]
        for i in range(levels)]})
gc.collect()
before = rss()
books = []
for s in range(books_n):
    d = orjson.loads(answer(s))  # the strings are the decoder's, as from the wire
    book = OrderBook(f"S{s}/USDT")
    book.apply_snapshot(BookSnapshot(book.symbol, d["bids"], d["asks"], 1))
    books.append(book)
    del d
gc.collect()
print(json.dumps({"mb": rss() - before}))
"""


def memory(quick: bool, log: Callable[[str], None]) -> list[str]:
    rows = ["| books x levels a side | RSS MB | KB per book |", "|---|---|---|"]
    root = str(Path(__file__).resolve().parent.parent)
    for books, levels in ((100, 1000), (1000, 1000)) if not quick else ((100, 1000),):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, str(books), str(levels), root],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        mb = json.loads(out.stdout)["mb"]
        log(f"  memory {books} x {levels}: {mb:.0f} MB")
        rows.append(f"| {books:,} x {levels:,} | {mb:.0f} | {mb * 1024 / books:.0f} |")
    return rows


def cold_start(quick: bool, log: Callable[[str], None]) -> list[str]:
    n = 200 if quick else 1000
    res = run_one(CLIENT, tls=True, symbols=n, messages=n * 3, levels=100, timeout=900)
    stats = res.get("server_stats", {})
    log(f"  cold start {n}: {res.get('cold_start_s')} s, 429s {stats.get('http_429')}")
    return [
        "| symbols | valid | time to all books synced s | depth requests | HTTP 429 |",
        "|---|---|---|---|---|",
        f"| {n:,} | {res.get('valid')} | {_f(res.get('cold_start_s'), '.1f')} "
        f"| {stats.get('depth_requests')} | {stats.get('http_429')} |",
    ]


def long_run(quick: bool, log: Callable[[str], None]) -> list[str]:
    n = 100_000 if quick else 1_000_000
    window = n // 10
    res = run_one(
        CLIENT, tls=True, symbols=10, messages=n, rate=10_000, timeout=n / 10_000 + 600,
        extra=["--window", str(window)],
    )  # fmt: skip
    windows = res.get("p99_windows_us") or []
    growth = None
    if res.get("rss_start_mb"):
        growth = (res["rss_end_mb"] - res["rss_start_mb"]) / res["rss_start_mb"] * 100
    log(f"  long run {n}: valid {res.get('valid')} p99 windows {windows} RSS growth {growth}")
    return [
        f"{n:,} diffs at 10,000 msg/s over wss:// (valid: {res.get('valid')}): "
        f"p50 {_f(res.get('p50_us'), '.0f')} µs, p99 {_f(res.get('p99_us'), '.0f')} µs; "
        f"RSS {_f(res.get('rss_start_mb'), '.1f')} MB at the start of the window, "
        f"{_f(res.get('rss_end_mb'), '.1f')} MB at the end ({_f(growth, '+.1f')} %).",
        "",
        f"p99 per {window:,} messages, µs: " + ", ".join(_f(w, ".0f") for w in windows),
    ]


def _f(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def run_all(quick: bool, log: Callable[[str], None]) -> str:
    parts = []
    for title, fn in (
        ("Books per process (wss://)", symbol_curve),
        ("Book depth (10 books, wss://)", depth_curve),
        ("Memory of the books", memory),
        ("Cold start under the REST weight limit (wss://)", cold_start),
        ("Long run: latency drift and memory", long_run),
    ):
        log(title)
        parts += [f"### {title}", "", *fn(quick, log), ""]
    return "\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    print(run_all(args.quick, lambda text: print(text, file=sys.stderr, flush=True)))


if __name__ == "__main__":
    main()
