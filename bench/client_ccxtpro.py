"""Benchmark client: ccxt.pro's ``binance().watch_order_book`` against the fake.

ccxt's spot URLs (REST and WebSocket) are pointed at the fake; over wss:// /
https:// its aiohttp session gets an SSL context trusting only the fake's CA
(``cafile``), with verification on.  One watcher task per symbol loops on
``watch_order_book``; each return is a book-updated callback.  Prints one
JSON result line (:mod:`client_report`).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client_report import Meter, client_args, emit, rss_mb


async def run(args: Any) -> None:
    import ccxt.pro

    meter = Meter(args, "ccxt.pro")
    config: dict[str, Any] = {"options": {"fetchMarkets": {"types": ["spot"]}}}
    if args.ca_file:
        config["cafile"] = args.ca_file
    exchange = ccxt.pro.binance(config)
    exchange.options["fetchMarkets"] = ["spot"]
    exchange.options["fetchCurrencies"] = False
    rest = {"public": "/api/v3", "private": "/api/v3", "v1": "/api/v1"}
    for section, path in rest.items():
        exchange.urls["api"][section] = args.rest + path
    exchange.urls["api"]["ws"]["spot"] = f"{args.ws}/ws"
    await exchange.load_markets()
    ids = meter.ids
    symbols = {m: f"{m[:-4]}/USDT" for m in ids}
    done = asyncio.Event()
    meter.on_done = done.set
    books: dict[str, Any] = {}

    async def watch(market_id: str) -> None:
        symbol = symbols[market_id]
        while not done.is_set():
            book = await exchange.watch_order_book(symbol)
            books[market_id] = book
            meter.update(market_id, book["nonce"], book["timestamp"])
            if meter.final[market_id] <= (book["nonce"] or 0):
                return

    tasks = [asyncio.ensure_future(watch(m)) for m in ids]
    await asyncio.gather(*tasks)
    result = meter.report(
        [(m, books[m]["bids"], books[m]["asks"]) for m in ids], rss_end_mb=rss_mb()
    )
    await exchange.close()
    emit(result)


def main() -> None:
    args = client_args(__doc__.splitlines()[0])
    try:
        asyncio.run(run(args))
    except Exception:  # noqa: BLE001 - reported as the result line
        import traceback

        emit({"client": "ccxt.pro", "error": traceback.format_exc()})


if __name__ == "__main__":
    main()
