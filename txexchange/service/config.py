"""What the ``exchangefeed`` service runs: feeds, sinks, metrics and shard, validated.

Sits at the very end of the flow, before any service is built: a TOML file
(``--config``) and the command-line options both become one frozen
:class:`ServiceConfig`.  Every check happens here, so a bad key or value fails
with a :class:`ConfigError` naming it and the valid choices before a single
connection is made.  Nothing here imports a reactor.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from txexchange._registry import PLANNED, SUPPORTED
from txexchange.errors import BadRequest

__all__ = [
    "CHANNELS",
    "SINK_SCHEMES",
    "ConfigError",
    "FeedSpec",
    "ServiceConfig",
    "Shard",
    "SinkSpec",
    "check_channel",
    "load_config",
    "parse_config",
    "parse_metrics",
    "parse_shard",
    "parse_sink",
    "parse_web",
]

CHANNELS = ("book", "trades", "ticker", "ohlcv:<timeframe>")
SINK_SCHEMES = ("jsonl", "sqlite", "redis")


class ConfigError(BadRequest):
    """An option or configuration key is missing, unknown or has a bad value."""


def check_channel(channel: str) -> str:
    if channel in ("book", "trades", "ticker") or (
        channel.startswith("ohlcv:") and len(channel) > 6
    ):
        return channel
    raise BadRequest(f"unknown channel {channel!r}; valid: {', '.join(CHANNELS)}")


def check_exchange(name: Any, where: str = "--exchange") -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{where} must be a string; valid: {', '.join(SUPPORTED)}")
    key = name.lower()
    if key in PLANNED:
        raise ConfigError(
            f"{where} {name!r} is planned but not implemented yet; valid: {', '.join(SUPPORTED)}"
        )
    if key not in SUPPORTED:
        raise ConfigError(f"{where} {name!r} is unknown; valid: {', '.join(SUPPORTED)}")
    return key


def check_symbols(symbols: Iterable[Any], where: str = "--symbols") -> tuple[str, ...]:
    out = tuple(s.strip() for s in symbols if isinstance(s, str) and s.strip())
    bad = [s for s in symbols if not isinstance(s, str) or s.strip().count("/") != 1]
    if bad or not out:
        raise ConfigError(
            f"{where} must be unified BASE/QUOTE symbols like BTC/USDT, got {bad or '-'}"
        )
    return out


@attrs.frozen
class FeedSpec:
    """What to collect: ``channels`` of ``symbols`` on ``exchange``."""

    exchange: str
    symbols: Sequence[str]
    channels: Sequence[str] = ("book",)

    def __attrs_post_init__(self) -> None:
        if not self.symbols:
            raise BadRequest("a feed needs at least one symbol")
        for channel in self.channels:
            check_channel(channel)


@attrs.frozen
class Shard:
    """Instance ``index`` of ``count`` (0-based): it takes the symbols whose stable hash
    modulo ``count`` is ``index``."""

    index: int = 0
    count: int = 1

    @staticmethod
    def bucket(exchange: str, symbol: str, count: int) -> int:
        """The shard of ``exchange:symbol`` among ``count``: SHA-1, not Python's salted hash."""
        digest = hashlib.sha1(f"{exchange}:{symbol}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % count

    def owns(self, exchange: str, symbol: str) -> bool:
        return self.count == 1 or self.bucket(exchange, symbol, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: Any, where: str = "--shard") -> Shard:
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"{where} must be i/n with 0 <= i < n (e.g. 0/3), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"{where} must be i/n with 0 <= i < n (e.g. 0/3), got {text!r}")
    return Shard(i, n)


# -- sinks -------------------------------------------------------------------------

#: query parameters every sink takes
_COMMON_PARAMS = {"queue": int, "depth": int}
_SINK_PARAMS: dict[str, dict[str, type]] = {
    "jsonl": {"rotate_mb": float, "rotate_s": float},
    "sqlite": {"batch": int},
    "redis": {"maxlen": int, "prefix": str, "batch": int},
}


@attrs.frozen
class SinkSpec:
    """A parsed sink URI: ``kind`` (jsonl, sqlite, redis), ``target`` and parameters.

    ``target`` is the file path for jsonl and sqlite and ``(host, port, db,
    password)`` for redis; the password is never shown in ``str()``/``repr``.
    """

    kind: str
    target: Any = attrs.field(repr=False)
    params: Mapping[str, Any] = attrs.field(factory=dict)

    def __str__(self) -> str:
        if self.kind == "redis":
            host, port, db, password = self.target
            auth = ":***@" if password else ""
            return f"redis://{auth}{host}:{port}/{db}"
        return f"{self.kind}:{self.target}"

    def __repr__(self) -> str:
        return f"SinkSpec({str(self)!r}, params={dict(self.params)!r})"


def parse_sink(uri: Any, where: str = "--sink") -> SinkSpec:
    """``jsonl:PATH[?rotate_mb=..&rotate_s=..]``, ``sqlite:PATH[?batch=..]`` or
    ``redis://[:PASSWORD@]HOST[:PORT][/DB][?maxlen=..&prefix=..]``; every kind also
    takes ``queue`` (records held for a slow sink) and ``depth`` (book levels)."""
    if not isinstance(uri, str) or ":" not in uri:
        raise ConfigError(
            f"{where} {uri!r} is not a sink URI; valid kinds: "
            "jsonl:PATH, sqlite:PATH, redis://HOST:PORT/DB"
        )
    kind = uri.split(":", 1)[0].lower()
    if kind not in SINK_SCHEMES:
        raise ConfigError(
            f"{where} {uri!r}: unknown sink kind {kind!r}; valid: {', '.join(SINK_SCHEMES)}"
        )
    rest = uri.split(":", 1)[1]
    body, _, query = rest.partition("?")
    valid = {**_COMMON_PARAMS, **_SINK_PARAMS[kind]}
    params: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in valid:
            raise ConfigError(
                f"{where} {kind} sink: unknown parameter {name!r}; "
                f"valid: {', '.join(sorted(valid))}"
            )
        try:
            params[name] = valid[name](value)
        except ValueError:
            raise ConfigError(
                f"{where} {kind} sink: parameter {name!r} must be a number, got {value!r}"
            ) from None
        if valid[name] is not str and params[name] <= 0:
            raise ConfigError(f"{where} {kind} sink: parameter {name!r} must be > 0")
    if kind == "redis":
        parts = urlsplit(uri.split("?", 1)[0])
        if not body.startswith("//") or not parts.hostname:
            raise ConfigError(f"{where}: redis sink must look like redis://127.0.0.1:6379/0")
        try:
            port = parts.port or 6379
            db = int(parts.path.strip("/") or 0)
        except ValueError:
            raise ConfigError(
                f"{where}: redis sink port and database must be numbers (redis://127.0.0.1:6379/0)"
            ) from None
        password = unquote(parts.password) if parts.password else None
        return SinkSpec("redis", (parts.hostname, port, db, password), params)
    path = unquote(body)
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise ConfigError(f"{where}: {kind} sink needs a path, e.g. {kind}:feed.{kind}")
    return SinkSpec(kind, path, params)


def parse_metrics(description: Any, where: str = "--metrics") -> str:
    """A strports TCP server description (``tcp:PORT[:interface=ADDR][:backlog=N]``);
    bound to 127.0.0.1 unless an interface is given."""
    usage = f"{where} must look like tcp:9100:interface=127.0.0.1, got {description!r}"
    if not isinstance(description, str) or not description.startswith("tcp:"):
        raise ConfigError(usage)
    parts = description.split(":")[1:]
    seen: dict[str, str] = {}
    for n, part in enumerate(parts):
        key, eq, value = part.partition("=")
        if not eq:
            if n != 0:
                raise ConfigError(usage)
            key, value = "port", part
        if key not in ("port", "interface", "backlog"):
            raise ConfigError(f"{usage}; valid keys: port, interface, backlog")
        seen[key] = value
    port = seen.get("port", "")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where}: port must be a number 0-65535, got {port!r}")
    if "backlog" in seen and not seen["backlog"].isdigit():
        raise ConfigError(f"{where}: backlog must be a number, got {seen['backlog']!r}")
    if "interface" not in seen:
        description += ":interface=127.0.0.1"
    return description


def parse_web(description: Any, where: str = "--web") -> str:
    """Where the web view listens: a port number or a TCP description as for
    :func:`parse_metrics`; bound to 127.0.0.1 unless an interface is given."""
    if isinstance(description, int) and not isinstance(description, bool):
        description = str(description)
    if isinstance(description, str) and description.isdigit():
        description = "tcp:" + description
    return parse_metrics(description, where)


# -- the whole configuration ---------------------------------------------------------


@attrs.frozen
class ExchangeSettings:
    """How to reach one exchange: replacement ``urls`` and client ``options``."""

    urls: Mapping[str, str] | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ServiceConfig:
    """Everything the service runs (before sharding: :meth:`sharded` applies it)."""

    feeds: tuple[FeedSpec, ...]
    sinks: tuple[SinkSpec, ...] = ()
    exchanges: Mapping[str, ExchangeSettings] = attrs.field(factory=dict)
    depth: int = 10
    metrics: str | None = None
    #: where the web view listens (``--web``); ``None``: no web view
    web: str | None = None
    shard: Shard = Shard()
    demo: bool = False
    demo_rate: float = 20.0
    status_interval: float = 10.0
    duration: float | None = None
    #: write every frame and REST answer received to this file (``--record``)
    record: str | None = None
    #: feed this recording through instead of the network (``--replay``)
    replay: str | None = None
    #: ``"max"`` or ``"recorded"`` (``--replay-speed``)
    replay_speed: str = "max"

    def sharded(self) -> tuple[FeedSpec, ...]:
        """The feeds with only this shard's symbols (feeds left empty are dropped)."""
        out = []
        for feed in self.feeds:
            mine = [s for s in feed.symbols if self.shard.owns(feed.exchange, s)]
            if mine:
                out.append(FeedSpec(feed.exchange, tuple(mine), tuple(feed.channels)))
        return tuple(out)


_TOP_KEYS = ("service", "feeds", "exchanges", "sinks", "metrics", "web")
_SERVICE_KEYS = ("depth", "shard", "demo", "demo_rate", "status_interval", "duration")
_FEED_KEYS = ("exchange", "symbols", "channels")
_EXCHANGE_KEYS = ("urls", "options")
_METRICS_KEYS = ("listen",)
_WEB_KEYS = ("listen",)


def _check_keys(table: Any, valid: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    return table


def _number(value: Any, where: str, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{where} must be > 0, got {value!r}")
    return kind(value)


def _check_client(name: str, settings: ExchangeSettings, where: str) -> None:
    """Validate urls and options as :func:`txexchange.exchange` would, without a client."""
    from txexchange.adapters import binance as binance_adapter
    from txexchange.client import ClientOptions

    try:
        if name == "binance":
            binance_adapter.resolve_urls(settings.urls)
        valid = ClientOptions.names()
        unknown = sorted(set(settings.options) - set(valid))
        if unknown:
            raise ConfigError(
                f"{where}.options: unknown option {unknown[0]!r}; valid: {', '.join(valid)}"
            )
        ClientOptions(**settings.options)
    except ConfigError:
        raise
    except (BadRequest, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_config(data: Mapping[str, Any], source: str = "config") -> ServiceConfig:
    """A :class:`ServiceConfig` from a decoded TOML document."""
    _check_keys(data, _TOP_KEYS, source)
    service = _check_keys(data.get("service", {}), _SERVICE_KEYS, f"{source} [service]")
    kwargs: dict[str, Any] = {}
    if "depth" in service:
        kwargs["depth"] = _number(service["depth"], f"{source} service.depth", int)
    for key in ("demo_rate", "status_interval", "duration"):
        if key in service:
            kwargs[key] = _number(service[key], f"{source} service.{key}")
    if "demo" in service:
        if not isinstance(service["demo"], bool):
            raise ConfigError(f"{source} service.demo must be true or false")
        kwargs["demo"] = service["demo"]
    if "shard" in service:
        kwargs["shard"] = parse_shard(service["shard"], f"{source} service.shard")
    exchanges: dict[str, ExchangeSettings] = {}
    ex_table = data.get("exchanges", {})
    if not isinstance(ex_table, Mapping):
        raise ConfigError(f"{source} [exchanges] must be a table of [exchanges.NAME] tables")
    for name, table in ex_table.items():
        where = f"{source} exchanges.{name}"
        key = check_exchange(name, where)
        _check_keys(table, _EXCHANGE_KEYS, where)
        urls = table.get("urls")
        options = table.get("options", {})
        if urls is not None and not isinstance(urls, Mapping):
            raise ConfigError(f"{where}.urls must be a table of URL strings")
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}.options must be a table")
        settings = ExchangeSettings(dict(urls) if urls else None, dict(options))
        _check_client(key, settings, where)
        exchanges[key] = settings
    feeds_table = data.get("feeds")
    if not isinstance(feeds_table, list) or not feeds_table:
        raise ConfigError(
            f"{source}: at least one [[feeds]] table is needed (keys: {', '.join(_FEED_KEYS)})"
        )
    feeds = []
    for n, table in enumerate(feeds_table):
        where = f"{source} feeds[{n}]"
        _check_keys(table, _FEED_KEYS, where)
        if "exchange" not in table or "symbols" not in table:
            raise ConfigError(f"{where}: 'exchange' and 'symbols' are required")
        exchange = check_exchange(table["exchange"], f"{where}.exchange")
        symbols = table["symbols"]
        if not isinstance(symbols, list):
            raise ConfigError(f'{where}.symbols must be a list like ["BTC/USDT"]')
        symbols = check_symbols(symbols, f"{where}.symbols")
        channels = table.get("channels", ["book"])
        if not isinstance(channels, list) or not channels:
            raise ConfigError(
                f"{where}.channels must be a non-empty list; valid: " + ", ".join(CHANNELS)
            )
        try:
            feeds.append(FeedSpec(exchange, symbols, tuple(check_channel(c) for c in channels)))
        except BadRequest as e:
            raise ConfigError(f"{where}.channels: {e}") from None
    sinks = data.get("sinks", [])
    if not isinstance(sinks, list):
        raise ConfigError(f"{source} sinks must be a list of sink URIs")
    sink_specs = tuple(parse_sink(s, f"{source} sinks[{n}]") for n, s in enumerate(sinks))
    metrics = data.get("metrics")
    if metrics is not None:
        _check_keys(metrics, _METRICS_KEYS, f"{source} [metrics]")
        if "listen" in metrics:
            kwargs["metrics"] = parse_metrics(metrics["listen"], f"{source} metrics.listen")
    web = data.get("web")
    if web is not None:
        _check_keys(web, _WEB_KEYS, f"{source} [web]")
        if "listen" in web:
            kwargs["web"] = parse_web(web["listen"], f"{source} web.listen")
    return ServiceConfig(tuple(feeds), sink_specs, exchanges, **kwargs)


def load_config(path: str | Path) -> ServiceConfig:
    """Read and validate a TOML configuration file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config {str(path)!r}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {str(path)!r}: not valid TOML: {e}") from None
    return parse_config(data, f"--config {path}:")
