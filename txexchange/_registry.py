"""``txexchange.exchange(name, ...)``: the one way users get a client.

Sits at the top of the package: maps exchange names to client classes and
splits keyword options into client options and transport options, with clear
errors for anything unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from txexchange.credentials import Credentials
from txexchange.errors import BadRequest, NotSupported

__all__ = ["PLANNED", "SUPPORTED", "exchange"]

SUPPORTED = ("binance", "okx", "bybit", "kraken", "coinbase", "gemini")
PLANNED: tuple[str, ...] = ()

#: keyword arguments ``exchange()`` passes to the client itself
_CLIENT_KWARGS = ("clock", "transport", "markets", "http_client", "rng", "rest_tap")


#: keyword arguments only some exchanges' clients take (e.g. Gemini's legacy v1 API)
_EXCHANGE_KWARGS: dict[str, tuple[str, ...]] = {"gemini": ("api",)}


def exchange(
    name: str,
    *,
    reactor: Any = None,
    urls: Mapping[str, str] | None = None,
    api_key: str | None = None,
    secret: str | None = None,
    password: str | None = None,
    credentials: Credentials | None = None,
    **options: Any,
) -> Any:
    """The client for exchange ``name`` (``"binance"``, ...).

    :param reactor: the reactor to use (default: the global one, imported now).
    :param urls: replacement URLs (Binance keys: ``ws``, ``rest``, ``ws_api``;
        OKX: ``public``, ``business``, ``rest``).
    :param api_key, secret, password: the API credentials for private calls
        (``password`` is OKX's passphrase); or instead
    :param credentials: a :class:`~txexchange.Credentials` (e.g.
        ``Credentials.from_env("BINANCE")`` or ``Credentials.from_file(path)``).
    :param options: :class:`~txexchange.client.ClientOptions` fields, plus
        ``transport`` (:class:`~txexchange.TransportOptions`), ``clock``,
        ``markets``, ``http_client`` (a ``treq.client.HTTPClient``), ``rng`` and
        ``rest_tap`` (see :class:`~txexchange.client.rest.RestClient`'s ``tap``).
    """
    from txexchange.client import BinanceClient, BybitClient, ClientOptions, OkxClient
    from txexchange.client.coinbase import CoinbaseClient
    from txexchange.client.gemini import GeminiClient
    from txexchange.client.kraken import KrakenClient

    key = name.lower() if isinstance(name, str) else name
    if key in PLANNED:
        raise NotSupported(
            f"exchange {name!r} is planned but not implemented yet; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    if key not in SUPPORTED:
        raise BadRequest(f"unknown exchange {name!r}; supported: {', '.join(SUPPORTED)}")
    extra = _EXCHANGE_KWARGS.get(key, ())
    client_kwargs = {k: options.pop(k) for k in (*_CLIENT_KWARGS, *extra) if k in options}
    valid = ClientOptions.names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise BadRequest(
            f"unknown option(s) {', '.join(map(repr, unknown))} for exchange(); valid: "
            + ", ".join(sorted(valid + list(_CLIENT_KWARGS)))
        )
    cls = {
        "binance": BinanceClient,
        "coinbase": CoinbaseClient,
        "okx": OkxClient,
        "bybit": BybitClient,
        "kraken": KrakenClient,
        "gemini": GeminiClient,
    }[key]
    client = cls(reactor=reactor, urls=urls, options=ClientOptions(**options), **client_kwargs)
    if credentials is not None:
        if not isinstance(credentials, Credentials):
            raise BadRequest("credentials must be a txexchange.Credentials")
        if api_key is not None or secret is not None or password is not None:
            raise BadRequest("pass either credentials= or api_key/secret/password, not both")
        client.credentials = credentials
    else:
        client.credentials = Credentials(api_key, secret, password)
    return client
