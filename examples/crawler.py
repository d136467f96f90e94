"""A crawler: the top 10 levels of a book as one JSON line per update.

Each line is ``{"bids": [[price, amount], ...], "asks": [...], "ts": ms}`` with
the exchange's exact decimal strings.  Runs offline against the built-in fake
Binance for ``--seconds`` seconds; --live uses Binance itself.

    python examples/crawler.py OUT.jsonl [--symbol BTC/USDT] [--seconds 5] [--live]
"""

from __future__ import annotations

import argparse
import json

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

import txexchange
from txexchange.testing.binance import FakeBinance


class BookWriter:
    """Observer writing the top ``depth`` levels of every update as a JSON line."""

    def __init__(self, path: str, depth: int = 10) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._depth = depth
        self.lines = 0

    def __call__(self, update) -> None:
        book = update.book(self._depth)
        record = {
            "bids": [list(level) for level in book.bids],
            "asks": [list(level) for level in book.asks],
            "ts": book.timestamp,
        }
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        self._file.close()


async def main(reactor, args: argparse.Namespace) -> None:
    fake = None
    urls = None
    if not args.live:
        fake = FakeBinance([args.symbol], reactor=reactor)
        await fake.start()
        fake.run(rate=50)
        urls = fake.urls
    client = txexchange.exchange("binance", reactor=reactor, urls=urls)
    writer = BookWriter(args.out)
    handle = client.subscribe("book", args.symbol, writer)
    await task.deferLater(reactor, args.seconds, lambda: None)
    handle.stop()
    await client.close()
    writer.close()
    if fake is not None:
        await fake.stop()
    print(f"wrote {writer.lines} lines to {args.out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="JSON lines file to append to")
    p.add_argument("--symbol", default="BTC/USDT")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--live", action="store_true", help="connect to Binance itself")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    task.react(lambda reactor: ensureDeferred(main(reactor, arguments)))
