"""Benchmark client: the bare-Python floor - receive, JSON-decode, apply levels into dicts.

No framework: the ``websockets`` package's asyncio client on the combined
stream URL, orjson, and per symbol two dicts (price string -> amount
string).  The REST snapshot is fetched (blocking, with urllib) on a symbol's
first diff, then Binance's rule is applied (skip ``u <= lastUpdateId``).
No gap handling, no resync, no snapshots handed out, no ordering of levels:
the least work that still ends with the right book, as a lower bound on the
cost per message.  Prints one JSON result line (:mod:`client_report`).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from client_report import Meter, client_args, emit, rss_mb


async def run(args: Any) -> None:
    from websockets.asyncio.client import connect

    meter = Meter(args, "floor")
    ids = meter.ids
    streams = "/".join(m.lower() + "@depth@100ms" for m in ids)
    context = None
    if args.ca_file:
        context = ssl.create_default_context(cafile=args.ca_file)
    books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    last: dict[str, int] = {}
    update = meter.update
    loads = orjson.loads
    url = f"{args.ws}/stream?streams={streams}"
    kwargs: dict[str, Any] = {"max_size": 2**24, "compression": None}
    if context is not None:
        kwargs["ssl"] = context
    async with connect(url, **kwargs) as ws:
        async for raw in ws:
            data = loads(raw)["data"]
            market_id = data["s"]
            book = books.get(market_id)
            if book is None:
                with urllib.request.urlopen(
                    f"{args.rest}/api/v3/depth?symbol={market_id}&limit=5000", context=context
                ) as answer:
                    snap = loads(answer.read())
                book = books[market_id] = (dict(snap["bids"]), dict(snap["asks"]))
                last[market_id] = snap["lastUpdateId"]
            if data["u"] <= last[market_id]:
                continue
            last[market_id] = data["u"]
            for side, levels in ((book[0], data["b"]), (book[1], data["a"])):
                for price, amount in levels:
                    if float(amount) == 0:
                        side.pop(price, None)
                    else:
                        side[price] = amount
            update(market_id, data["u"], data["E"])
            if meter.done:
                break
    result = meter.report(
        [(m, books[m][0].items(), books[m][1].items()) for m in ids], rss_end_mb=rss_mb()
    )
    emit(result)


def main() -> None:
    args = client_args(__doc__.splitlines()[0])
    try:
        asyncio.run(run(args))
    except Exception:  # noqa: BLE001 - reported as the result line
        import traceback

        emit({"client": "floor", "error": traceback.format_exc()})


if __name__ == "__main__":
    main()
