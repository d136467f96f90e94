"""``twistd exchangefeed``: command-line options and the service they make.

Sits at the very end of the flow; imported lazily by the plugin in
``twisted/plugins/exchangefeed.py`` (so listing plugins imports no reactor).
Options and the ``--config`` TOML file become one
:class:`~txexchange.service.config.ServiceConfig`; anything bad fails in
``postOptions`` (twistd prints the message and exits non-zero) before any
connection is made, naming the bad key and the valid choices.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import attrs
from twisted.application.service import IService, MultiService
from twisted.python import usage

from txexchange._registry import SUPPORTED
from txexchange.errors import BadRequest
from txexchange.service.config import (
    ConfigError,
    FeedSpec,
    ServiceConfig,
    Shard,
    check_channel,
    check_exchange,
    check_symbols,
    load_config,
    parse_metrics,
    parse_shard,
    parse_sink,
    parse_web,
)

__all__ = ["Options", "makeService"]

DEMO_SYMBOLS = "BTC/USDT,ETH/USDT"
DEFAULT_OUT = "exchangefeed.jsonl"


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

    synopsis = (
        "[--config FILE] [--demo] [--exchange NAME --symbols A/B,C/D --channels book,trades] "
        "[--sink URI ...] [--metrics tcp:9100] [--web tcp:8080] [--shard i/n] "
        "[--record FILE | --replay FILE [--replay-speed max|recorded]]"
    )
    longdesc = (
        "Collects live exchange market data into sinks (JSON lines files, SQLite, "
        "Redis Streams).  --demo runs against a built-in simulated exchange on "
        "127.0.0.1 (no network needed).  Sink URIs: jsonl:PATH[?rotate_mb=N&rotate_s=N], "
        "sqlite:PATH[?batch=N], redis://HOST:PORT/DB[?maxlen=N&prefix=P]; each also takes "
        "queue=N and depth=N.  See docs/service.rst for the TOML config format."
    )
    optFlags = [["demo", None, "use the built-in simulated exchange (offline)"]]
    optParameters = [
        ["config", None, None, "TOML configuration file (feeds, exchanges, sinks, metrics)"],
        ["exchange", "e", None, f"exchange: {', '.join(SUPPORTED)} (default binance)"],
        [
            "symbols",
            "s",
            None,
            "comma-separated unified symbols (demo default: the exchange's BTC and ETH "
            "markets, e.g. " + DEMO_SYMBOLS + ")",
        ],
        ["channels", "c", None, "comma-separated: book, trades, ticker, ohlcv:<timeframe>"],
        ["depth", "d", None, "book levels per side written per update (default 10)", _positive_int],
        ["out", "o", None, f"JSON lines file (same as --sink jsonl:PATH; default {DEFAULT_OUT})"],
        ["metrics", None, None, "serve /metrics and /health, e.g. tcp:9100:interface=127.0.0.1"],
        [
            "web",
            None,
            None,
            "serve a live read-only web view and JSON API, e.g. tcp:8080 or 8080 "
            "(127.0.0.1 unless interface= says otherwise)",
        ],
        ["shard", None, None, "take shard i of n of the configured symbols (0-based), e.g. 0/3"],
        ["duration", None, None, "stop cleanly after this many seconds", _positive_float],
        ["rate", None, None, "demo market updates per second (default 20)", _positive_float],
        [
            "record",
            None,
            None,
            "write every raw frame and REST answer received, with receive times, to FILE "
            "(gzip JSON lines)",
        ],
        [
            "replay",
            None,
            None,
            "feed the recording FILE through the same client and sinks instead of the network",
        ],
        ["replay-speed", None, None, "max (as fast as possible; default) or recorded"],
        [
            "status-interval",
            None,
            None,
            "seconds between status log lines (default 10)",
            _positive_float,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["sinks"] = []

    def opt_sink(self, uri: str) -> None:
        """a sink URI (repeatable): jsonl:PATH, sqlite:PATH, redis://HOST:PORT/DB"""
        try:
            self["sinks"].append(parse_sink(uri))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def postOptions(self) -> None:
        try:
            self["service_config"] = self._build()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def _build(self) -> ServiceConfig:
        if self["replay"] is not None:
            return self._build_replay()
        if self["replay-speed"] is not None:
            raise ConfigError("--replay-speed needs --replay FILE")
        config = self._build_live()
        if self["record"] is not None:
            config = attrs.evolve(config, record=_check_record_path(self["record"]))
        return config

    def _build_replay(self) -> ServiceConfig:
        from txexchange.service.recording import header_feeds, read_header
        from txexchange.service.replay import SPEEDS

        for opt in ("config", "exchange", "symbols", "channels", "shard", "rate", "record"):
            if self[opt] is not None:
                raise ConfigError(
                    f"--{opt} cannot be combined with --replay: the feeds, exchanges and "
                    "client options come from the recording"
                )
        if self["demo"]:
            raise ConfigError(
                "--demo cannot be combined with --replay (a replay needs no exchange)"
            )
        speed = self["replay-speed"] or "max"
        if speed not in SPEEDS:
            raise ConfigError(f"--replay-speed must be one of: {', '.join(SPEEDS)}; got {speed!r}")
        header = read_header(self["replay"])  # a bad file fails here, before anything starts
        self["replay_header"] = header
        config = ServiceConfig(
            feeds=tuple(header_feeds(header)), replay=self["replay"], replay_speed=speed
        )
        return self._apply_common(config)

    def _build_live(self) -> ServiceConfig:
        if self["config"]:
            config = load_config(self["config"])
            for opt in ("exchange", "symbols", "channels"):
                if self[opt] is not None:
                    raise ConfigError(
                        f"--{opt} cannot be combined with --config; put feeds in the "
                        "config's [[feeds]] tables"
                    )
        else:
            config = ServiceConfig(feeds=(self._cli_feed(),))
        changes: dict[str, Any] = {}
        if self["demo"]:
            changes["demo"] = True
        if self["rate"] is not None:
            changes["demo_rate"] = self["rate"]
        if self["shard"] is not None:
            changes["shard"] = parse_shard(self["shard"])
        return self._apply_common(attrs.evolve(config, **changes))

    def _apply_common(self, config: ServiceConfig) -> ServiceConfig:
        changes: dict[str, Any] = {}
        if self["depth"] is not None:
            changes["depth"] = self["depth"]
        if self["status-interval"] is not None:
            changes["status_interval"] = self["status-interval"]
        if self["duration"] is not None:
            changes["duration"] = self["duration"]
        if self["metrics"] is not None:
            changes["metrics"] = parse_metrics(self["metrics"])
        if self["web"] is not None:
            changes["web"] = parse_web(self["web"])
        sinks = list(config.sinks) + list(self["sinks"])
        if self["out"] is not None:
            sinks.append(parse_sink("jsonl:" + self["out"], "--out"))
        if not sinks:
            sinks.append(parse_sink("jsonl:" + DEFAULT_OUT))
        changes["sinks"] = tuple(sinks)
        return attrs.evolve(config, **changes)

    def _cli_feed(self) -> FeedSpec:
        exchange = check_exchange(self["exchange"] or "binance")
        symbols = self["symbols"]
        if symbols is None:
            if not self["demo"]:
                raise ConfigError("--symbols is required (or use --demo, or --config FILE)")
            from txexchange.testing.fakes import DEMO_SYMBOLS as PER_EXCHANGE

            symbols = ",".join(PER_EXCHANGE.get(exchange, DEMO_SYMBOLS.split(",")))
        parsed = check_symbols(symbols.split(","))
        channels = [c.strip() for c in (self["channels"] or "book").split(",") if c.strip()]
        try:
            for channel in channels:
                check_channel(channel)
        except BadRequest as e:
            raise ConfigError(f"--channels: {e}") from None
        return FeedSpec(exchange, parsed, tuple(channels))


def _check_record_path(path: str) -> str:
    """``--record FILE`` must be creatable (checked before anything starts)."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"--record {path!r} is a directory")
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ConfigError(
            f"--record {path!r}: directory {parent!r} does not exist or is not writable"
        )
    return path


def build_service(config: ServiceConfig, reactor: Any) -> tuple[MultiService, Any]:
    """The service tree for ``config``: ``(top, feed service)``."""
    from twisted.logger import Logger

    from txexchange.service.feed import FeedService
    from txexchange.service.sinks import make_sink

    log = Logger()
    top = MultiService()
    feeds = config.sharded()
    if config.shard != Shard():
        n = sum(len(f.symbols) for f in feeds)
        total = sum(len(f.symbols) for f in config.feeds)
        log.info(
            "shard {shard}: {n} of {total} symbols: {symbols}",
            shard=str(config.shard),
            n=n,
            total=total,
            symbols=", ".join(f"{f.exchange}:{s}" for f in feeds for s in f.symbols),
        )
        if not feeds:
            log.warn(
                "shard {shard} holds none of the configured symbols; running idle",
                shard=str(config.shard),
            )
    sinks = [make_sink(spec, config.depth, reactor) for spec in config.sinks]
    service: FeedService
    if config.replay is not None:
        from txexchange.service.replay import ReplayFeedService

        service = ReplayFeedService(
            config.replay,
            sinks,
            reactor=reactor,
            speed=config.replay_speed,
            status_interval=config.status_interval,
        )
    else:
        service = FeedService(
            feeds,
            sinks,
            reactor=reactor,
            demo=config.demo,
            demo_rate=config.demo_rate,
            exchanges=config.exchanges,
            status_interval=config.status_interval,
            record=config.record,
        )
    service.setServiceParent(top)
    if config.metrics:
        from twisted.application import strports

        from txexchange.service.metrics import metrics_site

        strports.service(config.metrics, metrics_site(service)).setServiceParent(top)
    if config.web:
        from txexchange.service.web import WebViewService

        WebViewService(service, config.web, reactor=reactor).setServiceParent(top)
    return top, service


def makeService(options: Options | dict[str, Any]) -> IService:
    """The ``exchangefeed`` service tree for ``options``."""
    from twisted.internet import reactor

    config = options["service_config"]
    top, service = build_service(config, reactor)
    if config.duration:
        reactor.callWhenRunning(reactor.callLater, config.duration, reactor.stop)
    if config.replay is not None:
        # a replay stops (cleanly, flushing the sinks) once the recording is through
        def replayed(_: Any) -> None:
            from twisted.internet.error import ReactorNotRunning

            with contextlib.suppress(ReactorNotRunning):  # already stopping (SIGTERM, --duration)
                reactor.stop()

        reactor.callWhenRunning(lambda: service.when_replayed().addBoth(replayed))
    return top
