"""Read what ``twistd exchangefeed --sink redis://...`` writes, with XREAD on its streams.

Each record is in the stream ``PREFIX:EXCHANGE:TYPE:SYMBOL`` as one field,
``data``, holding the JSON record (see docs/service.rst).  This follows the
streams named on the command line from now on (or from their start with
``--from-start``) and prints one line per record; ``--count N`` stops after
N records.

    twistd -n --pidfile= exchangefeed --demo --channels book,trades \\
        --sink redis://127.0.0.1:6379/0
    python examples/redis_consumer.py --symbols BTC/USDT,ETH/USDT --types book,trade
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from txexchange.service.config import parse_sink
from txexchange.service.sinks.resp import RedisProtocol


def describe(record: dict[str, Any]) -> str:
    kind, symbol = record["type"], record["symbol"]
    if kind == "book":
        bid = record["bids"][0] if record["bids"] else ["-", "-"]
        ask = record["asks"][0] if record["asks"] else ["-", "-"]
        return f"book   {symbol} #{record['nonce']} {bid[0]} x {bid[1]} / {ask[0]} x {ask[1]}"
    if kind == "trade":
        return f"trade  {symbol} {record['side']} {record['amount']} @ {record['price']}"
    if kind == "ticker":
        return f"ticker {symbol} last {record['last']} bid {record['bid']} ask {record['ask']}"
    return f"ohlcv  {symbol} {record['timeframe']} {record['ts']} {record['ohlcv']}"


async def consume(reactor: Any, args: argparse.Namespace) -> None:
    host, port, db, password = parse_sink(args.redis, "--redis").target
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), RedisProtocol())
    if password:
        await proto.execute("AUTH", password)
    if db:
        await proto.execute("SELECT", db)
    keys = [
        f"{args.prefix}:{args.exchange}:{kind}:{symbol}"
        for symbol in args.symbols.split(",")
        for kind in args.types.split(",")
    ]
    # "$": only entries added from now on; "0": from the start of each stream
    last = {key: "0" if args.from_start else "$" for key in keys}
    seen = 0
    try:
        while args.count is None or seen < args.count:
            reply = await proto.execute(
                "XREAD", "COUNT", 100, "BLOCK", 1000, "STREAMS", *last, *last.values()
            )
            for key, entries in reply or []:
                for entry_id, fields in entries:
                    last[key.decode()] = entry_id.decode()
                    data = dict(zip(fields[::2], fields[1::2], strict=True))[b"data"]
                    print(describe(json.loads(data)), flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        return
    finally:
        proto.transport.loseConnection()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="txexchange")
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbols", default="BTC/USDT,ETH/USDT")
    parser.add_argument("--types", default="book,trade", help="book, trade, ticker, ohlcv")
    parser.add_argument("--from-start", action="store_true", help="read each stream from 0")
    parser.add_argument("--count", type=int, default=None, help="stop after N records")
    args = parser.parse_args(argv)
    task.react(lambda reactor: ensureDeferred(consume(reactor, args)))


if __name__ == "__main__":
    main(sys.argv[1:])
