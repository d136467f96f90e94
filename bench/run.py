"""One command for the peer benchmarks: throughput and latency of txexchange vs ccxt.pro,
cryptofeed and a bare-Python floor, table printed and ``docs/performance.md`` written.

Every client runs in its own process against a fresh fake Binance process
(``fake_binance_proc.py``), in turn A B C D E, A B C D E... over several
rounds, over ws:// and wss://.  A result counts only if the client's final
books hash equal to the server's true books.  Then the same at a fixed rate
for latency, and (unless ``--skip-scaling``) ``bench/scaling.py``'s curves.

    .venv/bin/python bench/run.py --quick        # a few minutes
    .venv/bin/python bench/run.py                # the full run
    .venv/bin/python bench/run.py --no-docs      # print only

Peers come from the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import CLIENTS, run_one

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("ccxt.pro", "cryptofeed")
OURS = ("txexchange-push", "txexchange-pull")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def throughput_rounds(args: argparse.Namespace, tls: bool) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in args.clients}
    for r in range(args.rounds):
        for client in args.clients:
            res = run_one(
                client, tls=tls, symbols=args.symbols, messages=args.messages,
                levels=args.levels, timeout=args.timeout,
            )  # fmt: skip
            results[client].append(res)
            log(
                f"  round {r + 1} {'wss' if tls else 'ws '} {client:16s} "
                + (
                    f"{res['msgs_per_s']:9.0f} msg/s {res['cpu_us_per_msg']:6.1f} µs CPU/msg"
                    if res.get("valid")
                    else f"INVALID: {res.get('error', 'book hash differs')[:200]}"
                )
            )
    return results


def latency_rounds(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in args.clients}
    clients = [c for c in args.clients if c != "txexchange-pull"]  # pull mode has no callback
    for r in range(args.latency_rounds):
        for client in clients:
            res = run_one(
                client, tls=True, symbols=args.symbols, messages=args.latency_messages,
                levels=args.levels, rate=args.rate, timeout=args.timeout,
            )  # fmt: skip
            results[client].append(res)
            log(
                f"  round {r + 1} wss @ {args.rate:.0f}/s {client:16s} "
                + (
                    f"p50 {res['p50_us']:.0f} µs p99 {res['p99_us']:.0f} µs"
                    if res.get("valid") and res.get("p99_us") is not None
                    else f"INVALID: {res.get('error', 'book hash differs')[:200]}"
                )
            )
    return results


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for client, runs in results.items():
        valid = [r for r in runs if r.get("valid")]
        out[client] = {
            "runs": len(runs),
            "valid": len(valid),
            "msgs_per_s": median([r["msgs_per_s"] for r in valid]),
            "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in valid]),
            "p50_us": median([r["p50_us"] for r in valid if r.get("p50_us") is not None]),
            "p99_us": median([r["p99_us"] for r in valid if r.get("p99_us") is not None]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in valid]),
        }
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}x"


def table(summary: dict[str, dict[str, Any]], transport: str) -> list[str]:
    """Markdown rows: medians, and ratios to the best peer and to the floor.

    Ratios use messages per CPU-second (1e6 / CPU µs per message): on a shared
    machine the wall-clock rate also measures the neighbours.
    """
    def per_cpu_s(name: str) -> float | None:
        cpu = summary.get(name, {}).get("cpu_us_per_msg")
        return 1e6 / cpu if cpu else None

    best_peer = max((per_cpu_s(p) or 0 for p in PEERS), default=0) or None
    floor = per_cpu_s("floor")
    rows = [
        f"| client ({transport}) | valid runs | msg/s (wall) | CPU µs/msg | msg per CPU-s "
        "| vs best peer | vs floor | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        rate = per_cpu_s(name)
        rows.append(
            f"| {name} | {s['valid']}/{s['runs']} | {_fmt(s['msgs_per_s'], ',.0f')} "
            f"| {_fmt(s['cpu_us_per_msg'], '.1f')} | {_fmt(rate, ',.0f')} "
            f"| {_ratio(rate, best_peer)} | {_ratio(rate, floor)} "
            f"| {_fmt(s['peak_rss_mb'], '.0f')} |"
        )
    return rows


def latency_table(summary: dict[str, dict[str, Any]], rate: float) -> list[str]:
    rows = [
        f"| client (wss, {rate:,.0f} msg/s) | valid runs | p50 µs | p99 µs | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        if not s["runs"]:
            continue
        rows.append(
            f"| {name} | {s['valid']}/{s['runs']} | {_fmt(s['p50_us'], '.0f')} "
            f"| {_fmt(s['p99_us'], '.0f')} | {_fmt(s['peak_rss_mb'], '.0f')} |"
        )
    return rows


def plot(path: Path, ws: dict[str, Any], wss: dict[str, Any], lat: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ws)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(names))
    for offset, (label, summary) in enumerate((("ws://", ws), ("wss://", wss))):
        values = [
            1e6 / summary[n]["cpu_us_per_msg"] if summary[n]["cpu_us_per_msg"] else 0
            for n in names
        ]
        ax1.bar([i + offset * 0.4 - 0.2 for i in x], values, width=0.4, label=label)
    ax1.set_xticks(list(x), names, rotation=20, ha="right")
    ax1.set_ylabel("book updates applied per CPU-second")
    ax1.set_title("Throughput (higher is better)")
    ax1.legend()
    lat_names = [n for n in names if lat.get(n, {}).get("p99_us") is not None]
    lx = range(len(lat_names))
    ax2.bar([i - 0.2 for i in lx], [lat[n]["p50_us"] for n in lat_names], width=0.4, label="p50")
    ax2.bar([i + 0.2 for i in lx], [lat[n]["p99_us"] for n in lat_names], width=0.4, label="p99")
    ax2.set_xticks(list(lx), lat_names, rotation=20, ha="right")
    ax2.set_ylabel("µs, server send -> book-updated callback")
    ax2.set_yscale("log")
    ax2.set_title("Latency at a fixed rate over wss:// (lower is better)")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--levels", type=int, default=100)
    p.add_argument("--rate", type=float, default=10_000)
    p.add_argument("--latency-messages", type=int, default=100_000)
    p.add_argument("--latency-rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--clients", nargs="*", default=list(CLIENTS))
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/performance.md")
    p.add_argument("--json", default="", help="also write every raw result to this file")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.messages = 3, 50_000
        args.latency_messages, args.latency_rounds = 30_000, 1
    shown = [a for a in sys.argv[1:] if a != "--json" and a != args.json]  # output file only
    command = " ".join(["python bench/run.py", *shown])
    started = time.time()
    log(f"throughput: {args.messages:,} diffs over {args.symbols} symbols, {args.rounds} rounds")
    raw_ws = throughput_rounds(args, tls=False)
    raw_wss = throughput_rounds(args, tls=True)
    log(f"latency: {args.latency_messages:,} diffs at {args.rate:,.0f}/s over wss")
    raw_lat = latency_rounds(args)
    ws, wss, lat = summarise(raw_ws), summarise(raw_wss), summarise(raw_lat)
    scaling_md = ""
    if not args.skip_scaling:
        import scaling

        scaling_md = scaling.run_all(quick=args.quick, log=log)
    lines = [
        *table(ws, "ws://"), "", *table(wss, "wss://"), "", *latency_table(lat, args.rate),
    ]  # fmt: skip
    print("\n".join(lines))
    if scaling_md:
        print(scaling_md)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"ws": raw_ws, "wss": raw_wss, "latency": raw_lat}, indent=1)
        )
    if not args.no_docs:
        png = ROOT / "docs" / "_static" / "performance.png"
        plot(png, ws, wss, lat)
        write_docs(args, command, lines, scaling_md, time.time() - started)
        log(f"wrote docs/performance.md and {png.relative_to(ROOT)}")


def write_docs(
    args: argparse.Namespace, command: str, lines: list[str], scaling_md: str, took: float
) -> None:
    import importlib.metadata as md

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    versions = ", ".join(
        f"{n} {version(n)}"
        for n in ("txexchange", "Twisted", "autobahn", "ccxt", "cryptofeed", "websockets", "orjson")
    )
    intro = (ROOT / "bench" / "performance_intro.md").read_text(encoding="utf-8")
    text = "\n".join([
        intro.rstrip(),
        "",
        "## Results",
        "",
        f"Produced by `{command}` ({took / 60:.0f} minutes) on {platform.machine()}, "
        f"{_cpu_count()} cores, Python {platform.python_version()}; {versions}.",
        f"{args.messages:,} depth diffs over {args.symbols} symbols with {args.levels}-level "
        f"books, {args.rounds} rounds per transport; latency: {args.latency_messages:,} diffs "
        f"at {args.rate:,.0f} msg/s, {args.latency_rounds} round(s).  Medians of valid runs.",
        "",
        "![Throughput and latency per client](_static/performance.png)",
        "",
        *lines,
        "",
        scaling_md,
    ])  # fmt: skip
    (ROOT / "docs" / "performance.md").write_text(text.rstrip() + "\n", encoding="utf-8")


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
