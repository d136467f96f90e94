"""What the web view costs the service: building and encoding its messages, and streaming.

Runs a demo FeedService (the simulated Binance on 127.0.0.1) with 20 books and
trades at 200 market steps a second, and its web view.  Prints the time to
build and encode one push-channel message (all feeds plus one book at depth
50) and ``/api/state``, their sizes, and then what 20 SSE readers on loopback
receive in 5 s (messages a second each) and the CPU time the whole process
(service, fake exchange and the readers) spent meanwhile, and without readers.

    .venv/bin/python bench/bench_web.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from twisted.internet import defer, task

from txexchange.codec import dumps
from txexchange.service.web.snapshot import service_state, stream_message
from txexchange.service.web.stream import encode_event

SYMBOLS = tuple(f"C{i}/USDT" for i in range(20))


def per_call(fn, n: int = 2000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


async def main(reactor) -> None:
    from web_helpers import sse_connect, start_web, stop_web

    from helpers import sleep, wait_for

    feeds, web = await start_web(rate=200, symbols=SYMBOLS)
    try:
        await wait_for(lambda: feeds.books_synced() == (20, 20), timeout=30, what="synced")
        await sleep(2)
        selected = ("binance", "C0/USDT")
        message = encode_event(stream_message(feeds, web.rates, selected, 50))
        state = dumps(service_state(feeds, web.rates))
        t_msg = per_call(lambda: encode_event(stream_message(feeds, web.rates, selected, 50)))
        t_state = per_call(lambda: dumps(service_state(feeds, web.rates)))
        print(f"push message (20 books, 1 at depth 50): {len(message)} bytes, "
              f"{t_msg * 1e6:.0f} us to build and encode")  # fmt: skip
        print(f"/api/state (20 books): {len(state)} bytes, {t_state * 1e6:.0f} us")
        cpu, wall = time.process_time(), time.perf_counter()
        await sleep(5)
        idle = (time.process_time() - cpu) / (time.perf_counter() - wall)
        print(f"without readers, 5 s: process CPU {idle:.0%} of one core")
        readers = [await sse_connect(web, f"/api/events?exchange=binance&symbol={s}")
                   for s in SYMBOLS]  # fmt: skip
        await sleep(1)
        counts = [len(r.messages) for r in readers]
        cpu, wall = time.process_time(), time.perf_counter()
        await sleep(5)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rates = [(len(r.messages) - c) / wall for r, c in zip(readers, counts, strict=True)]
        print(f"20 SSE readers, 5 s: {min(rates):.1f}-{max(rates):.1f} messages/s each; "
              f"process CPU {cpu / wall:.0%} of one core (service, fake exchange at "
              f"200 steps/s and readers together)")  # fmt: skip
        for r in readers:
            r.transport.loseConnection()
    finally:
        await stop_web(feeds, web)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
