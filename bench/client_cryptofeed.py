"""Benchmark client: cryptofeed's Binance feed with an L2 book callback, against the fake.

A :class:`cryptofeed.exchanges.Binance` subclass whose WebSocket and REST
endpoints are the fake's (cryptofeed accepts only wss:// addresses; for the
ws:// runs its connection class is given the plain address).  Over wss://
and https:// the process trusts only the fake's CA through ``SSL_CERT_FILE``
(websockets, aiohttp) and ``REQUESTS_CA_BUNDLE`` (requests, used for the symbol list), set by
:func:`main` before anything loads them; verification stays on.  Prints one
JSON result line (:mod:`client_report`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client_report import Meter, client_args, emit, rss_mb


async def run(args: Any) -> None:
    import cryptofeed.feed
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint, WSAsyncConn
    from cryptofeed.defines import L2_BOOK
    from cryptofeed.exchanges import Binance

    class PlainOrTLSConn(WSAsyncConn):
        """cryptofeed refuses ws:// addresses outright; let the plain-socket runs use one."""

        def __init__(self, address: str, *a: Any, **kw: Any) -> None:
            plain = address.startswith("ws://")
            super().__init__("wss://" + address[5:] if plain else address, *a, **kw)
            self.address = address

    cryptofeed.feed.WSAsyncConn = PlainOrTLSConn  # type: ignore[misc]

    class FakeBinance(Binance):
        websocket_endpoints = [WebsocketEndpoint(args.ws)]
        rest_endpoints = [
            RestEndpoint(
                args.rest,
                routes=Routes(
                    "/api/v3/exchangeInfo",
                    l2book="/api/v3/depth?symbol={}&limit={}",
                    authentication="/api/v3/userDataStream",
                ),
            )
        ]

    meter = Meter(args, "cryptofeed")
    ids = meter.ids
    by_symbol = {f"{m[:-4]}-USDT": m for m in ids}
    done = asyncio.Event()
    meter.on_done = done.set
    books: dict[str, Any] = {}

    async def on_book(book: Any, receipt_timestamp: float) -> None:
        market_id = by_symbol[book.symbol]
        books[market_id] = book
        # cryptofeed divides E by 1000 (ms -> s); the fake's E is in µs
        ts = book.timestamp
        meter.update(market_id, book.sequence_number, ts * 1000 if ts else None)

    feed = FakeBinance(symbols=list(by_symbol), channels=[L2_BOOK], callbacks={L2_BOOK: on_book})
    loop = asyncio.get_running_loop()
    feed.start(loop)
    await done.wait()
    result = meter.report(
        [(m, books[m].book.bids.to_list(), books[m].book.asks.to_list()) for m in ids],
        rss_end_mb=rss_mb(),
    )
    emit(result)
    await feed.shutdown()


def main() -> None:
    args = client_args(__doc__.splitlines()[0])
    if args.ca_file:
        os.environ["SSL_CERT_FILE"] = args.ca_file
        os.environ["REQUESTS_CA_BUNDLE"] = args.ca_file
        os.environ.pop("SSL_CERT_DIR", None)
    try:
        asyncio.run(run(args))
    except Exception:  # noqa: BLE001 - reported as the result line
        import traceback

        emit({"client": "cryptofeed", "error": traceback.format_exc()})


if __name__ == "__main__":
    main()
