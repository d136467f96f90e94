"""Benchmark client: txexchange's Binance client against the fake, push or pull mode.

Push (``--mode push``): one observer per book (``client.subscribe("book", ...)``),
called on every update.  Pull (``--mode pull``): no observer; the program
holds the books with ``fetch_order_book`` and polls them every 5 ms, as a
strategy loop reading the current state would (the books are only turned
into snapshots when read).  Prints one JSON result line
(:mod:`client_report`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client_report import Meter, client_args, emit, rss_mb


def main() -> None:
    args = client_args(__doc__.splitlines()[0])
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import defer, reactor, task
    from twisted.internet.ssl import Certificate

    import txexchange
    from txexchange import TransportOptions

    trust = None
    if args.ca_file:
        trust = Certificate.loadPEM(Path(args.ca_file).read_bytes())
    client = txexchange.exchange(
        "binance",
        reactor=reactor,
        urls={"ws": args.ws, "rest": args.rest},
        transport=TransportOptions(trust_root=trust),
        # the fake's snapshots hold exactly ``levels`` levels a side
        snapshot_limit=max(5, min(5000, args.levels)),
    )
    meter = Meter(args, f"txexchange-{args.mode}")
    if args.connections > 1:
        # spread the streams over several sockets instead of up to 1024 on one
        client.pool._max = -(-args.symbols // args.connections)
    symbols = [f"{m[:-4]}/USDT" for m in meter.ids]
    ids = {s: m for s, m in zip(symbols, meter.ids, strict=True)}
    finished: defer.Deferred[None] = defer.Deferred()
    meter.on_done = lambda: finished.callback(None)
    update = meter.update

    async def run() -> None:
        meter.started = time.perf_counter()
        await client.load_markets()
        if args.mode == "push":
            for symbol in symbols:
                market_id = ids[symbol]

                def observer(ev: Any, market_id: str = market_id) -> None:
                    update(market_id, ev.nonce, ev.timestamp)

                client.subscribe("book", symbol, observer)
        else:
            await defer.gatherResults([client.fetch_order_book(s) for s in symbols])
            last: dict[str, int | None] = {}

            def poll() -> None:
                for symbol in symbols:
                    book = client.books[symbol]
                    if book.nonce != last.get(symbol):
                        last[symbol] = book.nonce
                        snap = book.snapshot()  # what fetch_order_book hands out
                        update(ids[symbol], snap.nonce, None)

            loop = task.LoopingCall(poll)
            loop.clock = reactor
            loop.start(0.005)
        await finished
        if args.mode != "push":
            loop.stop()
        books = await client.fetch_order_books(symbols)
        result = meter.report(
            [(ids[s], b.bids, b.asks) for s, b in books.items()], rss_end_mb=rss_mb()
        )
        await client.close()
        emit(result)

    def stop(_: Any) -> None:
        reactor.stop()

    def failed(f: Any) -> None:
        emit({"client": f"txexchange-{args.mode}", "error": f.getTraceback()})

    reactor.callWhenRunning(
        lambda: defer.ensureDeferred(run()).addErrback(failed).addBoth(stop)
    )
    reactor.run()


if __name__ == "__main__":
    main()
