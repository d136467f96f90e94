"""Read the JSON API of ``twistd exchangefeed --web``: feed health and the best prices.

Prints one line per feed and one per book every ``--interval`` seconds,
``--count`` times, from ``/api/state`` and ``/api/book`` (see docs/web.md).

    twistd -n --pidfile= exchangefeed --demo --channels book,trades --web 8080
    python examples/web_state.py http://127.0.0.1:8080/ --count 5
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlencode

import treq
from twisted.internet import task
from twisted.internet.defer import ensureDeferred


async def get(base: str, path: str, **query: Any) -> Any:
    url = base + path + ("?" + urlencode(query) if query else "")
    response = await treq.get(url, timeout=10)
    if response.code != 200:
        raise SystemExit(f"{url}: HTTP {response.code}: {await response.text()}")
    return await response.json()


async def show(reactor: Any, base: str, count: int, interval: float) -> None:
    for n in range(count):
        if n:
            await task.deferLater(reactor, interval, lambda: None)
        state = await get(base, "api/state")
        print(f"status {state['status']}: {state['books_synced']}/{state['books']} books synced")
        for feed in state["feeds"]:
            rate = feed["msg_rate"]
            print(
                f"  {feed['exchange']}: {feed['state']}, "
                f"{'-' if rate is None else rate} msg/s, {feed['messages']} messages, "
                f"{feed['reconnects']} reconnects, {feed['integrity_failures']} integrity "
                f"failures, data age {feed['age']} s"
            )
            for row in feed["books"]:
                book = await get(base, "api/book", exchange=feed["exchange"],
                                 symbol=row["symbol"], depth=1)  # fmt: skip
                if not book["synced"]:
                    print(f"    {row['symbol']}: not synced ({book['stale'] or 'syncing'})")
                    continue
                (bid, bid_amount), (ask, ask_amount) = book["bids"][0], book["asks"][0]
                line = f"    {row['symbol']} #{book['nonce']}: {bid} x {bid_amount} / {ask}"
                line += f" x {ask_amount}"
                if book["trades"]:
                    last = book["trades"][0]
                    line += f", last trade {last['side']} {last['amount']} @ {last['price']}"
                print(line)


def main(reactor: Any) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8080/")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    base = args.url if args.url.endswith("/") else args.url + "/"
    return ensureDeferred(show(reactor, base, args.count, args.interval))


if __name__ == "__main__":
    task.react(main)
