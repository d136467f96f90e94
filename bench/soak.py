"""Soak: a million diff-depth messages through the real Binance client, with faults.

Runs :class:`txexchange.testing.soak.SoakRun`: a fake Binance on 127.0.0.1 (same
process) steps a simulated market as fast as the client keeps up; every
``--fault-every`` messages a fault is injected in turn (sequence gap -> REST
resync, dropped connection -> reconnect + resync, stalled connection -> the
stall watchdog reconnects).  Every ``--window`` messages a row is printed:
resident memory of the process (client and fake together), callback latency
(fake writes the frame -> the client's book observer runs) p50/p99/max,
messages per second, and the live objects of library types (txexchange,
Twisted's reactor, Autobahn; the fake's own excluded): RSS holds the fake too,
whose bounded histories (candles, ticker windows, sent-frame logs) fill over
the first part of the run, so the object count is the client's own figure.
At the end every book must equal the market's true book.

    .venv/bin/python bench/soak.py                      # 1,000,000 messages
    .venv/bin/python bench/soak.py --messages 200000    # shorter
    .venv/bin/python bench/soak.py --json soak.json     # results file (default: soak-results.json)

Flat memory and no latency growth from the first rows to the last are the goal;
the summary compares the second half of the run with the first.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task

from txexchange.testing.soak import SoakResult, SoakRun, SoakSample

HEADER = (
    f"{'messages':>10} {'elapsed s':>9} {'msgs/s':>8} {'RSS MiB':>8} "
    f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'resyncs':>7} {'reconn':>6} {'faults':>6} "
    f"{'lib objs':>8}"
)


def row(s: SoakSample) -> str:
    rss = f"{s.rss_kib / 1024:8.1f}" if s.rss_kib is not None else f"{'n/a':>8}"
    return (
        f"{s.messages:>10,} {s.elapsed:9.1f} {s.rate:8,.0f} {rss} "
        f"{s.p50_ms:7.2f} {s.p99_ms:7.2f} {s.max_ms:7.1f} {s.resyncs:7} {s.reconnects:6} "
        f"{s.faults:6} {s.objects if s.objects is not None else 'n/a':>8}"
    )


def summary(result: SoakResult) -> dict[str, object]:
    samples = list(result.samples)
    # the first window includes warm-up (caches, allocator arenas): compare halves after it
    steady = samples[1:] if len(samples) > 2 else samples
    half = len(steady) // 2
    first, second = steady[:half], steady[half:]

    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    rss = [s.rss_kib for s in steady if s.rss_kib is not None]
    objs = [s.objects for s in steady if s.objects is not None]
    return {
        "messages": result.messages,
        "frames": result.frames,
        "elapsed_s": round(result.elapsed, 2),
        "msgs_per_s": round(result.messages / result.elapsed) if result.elapsed else None,
        "faults": result.faults,
        "resyncs": result.resyncs,
        "reconnects": result.reconnects,
        "books_true": result.books_true,
        "mismatches": list(result.mismatches),
        "rss_mib_first_steady_window": round(rss[0] / 1024, 1) if rss else None,
        "rss_mib_last_window": round(rss[-1] / 1024, 1) if rss else None,
        "rss_mib_growth_after_warmup": round((rss[-1] - rss[0]) / 1024, 1) if rss else None,
        "library_objects_first_steady_window": objs[0] if objs else None,
        "library_objects_last_window": objs[-1] if objs else None,
        "library_objects_max": max(objs) if objs else None,
        "p50_ms_median_first_half": med([s.p50_ms for s in first]),
        "p50_ms_median_second_half": med([s.p50_ms for s in second]),
        "p99_ms_median_first_half": med([s.p99_ms for s in first]),
        "p99_ms_median_second_half": med([s.p99_ms for s in second]),
        "rate_median_first_half": med([s.rate for s in first]),
        "rate_median_second_half": med([s.rate for s in second]),
    }


async def main(reactor, args: argparse.Namespace) -> None:
    print(
        f"soak: {args.messages:,} messages, {args.symbols} symbols, a fault every "
        f"{args.fault_every:,} messages (gap, drop, stall in turn)"
    )
    print(HEADER, flush=True)
    run = SoakRun(
        reactor,
        messages=args.messages,
        symbols=args.symbols,
        window=args.window,
        fault_every=args.fault_every,
        in_flight=args.in_flight,
        batch=args.batch,
        seed=args.seed,
        on_sample=lambda s: print(row(s), flush=True),
        count_objects=not args.no_object_count,
    )
    result = await run.run()
    info = summary(result)
    print()
    for key, value in info.items():
        print(f"{key:32} {value}")
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "settings": vars(args),
        "summary": info,
        "samples": [
            {
                "messages": s.messages,
                "elapsed_s": round(s.elapsed, 3),
                "msgs_per_s": round(s.rate),
                "rss_kib": s.rss_kib,
                "p50_ms": round(s.p50_ms, 3),
                "p99_ms": round(s.p99_ms, 3),
                "max_ms": round(s.max_ms, 3),
                "resyncs": s.resyncs,
                "reconnects": s.reconnects,
                "faults": s.faults,
                "library_objects": s.objects,
            }
            for s in result.samples
        ],
    }
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults written to {args.json}")
    if not result.books_true:
        raise SystemExit(f"books differ from the truth: {result.mismatches}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--window", type=int, default=50_000)
    p.add_argument("--fault-every", type=int, default=100_000)
    p.add_argument("--in-flight", type=int, default=400)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default="soak-results.json")
    p.add_argument(
        "--no-object-count", action="store_true", help="skip the gc walk counting library objects"
    )
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
