"""``twistd exchangefeed``: command-line options and the service they make.

Sits at the very end of the flow; imported lazily by the plugin in
``twisted/plugins/exchangefeed.py`` (so listing plugins imports no reactor).
Bad options fail before any connection is made, naming the valid choices.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from txexchange._registry import PLANNED, SUPPORTED
from txexchange.errors import BadRequest
from txexchange.service.feed import FeedService, FeedSpec, check_channel
from txexchange.service.sinks import JsonLinesSink

__all__ = ["Options", "makeService"]

DEMO_SYMBOLS = "BTC/USDT,ETH/USDT"


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be > 0")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be > 0")
    return number


class Options(usage.Options):
    """``twistd -n exchangefeed [options]``"""

    synopsis = "[--demo] [--exchange NAME] [--symbols A/B,C/D] [--channels book,trades]"
    longdesc = (
        "Collects live exchange market data into a JSON lines file.  --demo runs "
        "against a built-in simulated exchange on 127.0.0.1 (no network needed)."
    )
    optFlags = [["demo", None, "use the built-in simulated exchange (offline)"]]
    optParameters = [
        ["exchange", "e", "binance", f"exchange: {', '.join(SUPPORTED)}"],
        [
            "symbols",
            "s",
            None,
            "comma-separated unified symbols (demo default: " + DEMO_SYMBOLS + ")",
        ],
        ["channels", "c", "book", "comma-separated: book, trades, ticker, ohlcv:<timeframe>"],
        ["depth", "d", 10, "book levels per side written per update", _positive_int],
        ["out", "o", "exchangefeed.jsonl", "JSON lines file to append to"],
        ["duration", None, None, "stop cleanly after this many seconds", _positive_float],
        ["rate", None, 20.0, "demo market updates per second", _positive_float],
    ]

    def postOptions(self) -> None:
        exchange = self["exchange"].lower()
        if exchange in PLANNED:
            raise usage.UsageError(
                f"--exchange {exchange!r} is planned but not implemented yet; "
                f"valid: {', '.join(SUPPORTED)}"
            )
        if exchange not in SUPPORTED:
            raise usage.UsageError(
                f"--exchange {self['exchange']!r} is unknown; valid: {', '.join(SUPPORTED)}"
            )
        self["exchange"] = exchange
        if self["symbols"] is None:
            if not self["demo"]:
                raise usage.UsageError("--symbols is required (or use --demo)")
            self["symbols"] = DEMO_SYMBOLS
        symbols = [s.strip() for s in self["symbols"].split(",") if s.strip()]
        bad = [s for s in symbols if s.count("/") != 1]
        if bad or not symbols:
            raise usage.UsageError(
                f"--symbols must be unified BASE/QUOTE symbols like BTC/USDT, got {bad or '-'}"
            )
        self["symbols"] = symbols
        channels = [c.strip() for c in self["channels"].split(",") if c.strip()]
        try:
            for channel in channels:
                check_channel(channel)
        except BadRequest as e:
            raise usage.UsageError(f"--channels: {e}") from None
        self["channels"] = channels


def makeService(options: Options | dict[str, Any]) -> IService:
    """The ``exchangefeed`` service tree for ``options``."""
    from twisted.internet import reactor

    top = MultiService()
    feed = FeedSpec(options["exchange"], options["symbols"], options["channels"])
    sink = JsonLinesSink(options["out"], depth=options["depth"])
    service = FeedService(
        feed, [sink], reactor=reactor, demo=bool(options["demo"]), demo_rate=options["rate"]
    )
    service.setServiceParent(top)
    if options["duration"]:
        reactor.callWhenRunning(reactor.callLater, options["duration"], reactor.stop)
    return top
