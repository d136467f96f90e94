"""Bybit v5 request signing: REST headers and the private WebSocket ``auth`` arguments.

Sits in the adapter layer beside :mod:`txexchange.adapters.bybit`; the client
layer signs its private REST requests and its private stream's ``auth`` with a
:class:`BybitSigner`.  Pure: no reactor, no sockets; times are passed in.

The rules Bybit documents (v5 "Integration guidance"):

* **REST**: ``X-BAPI-SIGN`` is the lowercase hex HMAC-SHA256, keyed with the
  API secret, of ``timestamp + api_key + recv_window + payload``, where
  ``payload`` is the query string exactly as sent for ``GET`` and the raw
  JSON body exactly as sent for ``POST``.  The other headers are
  ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP`` (ms) and ``X-BAPI-RECV-WINDOW``
  (default 5000 ms).  The server accepts ``server_time - recv_window <=
  timestamp < server_time + 1000``.
* **WebSocket ``auth``**: ``{"op": "auth", "args": [api_key, expires,
  signature]}`` with ``expires`` a future time in ms and ``signature`` the
  lowercase hex HMAC-SHA256 of ``"GET/realtime" + str(expires)``.

Bybit publishes example strings but not the secret behind its example
signatures, so this is checked by its algorithm (and by the fake exchange's
own verifier), not by a published vector.  The secret never appears in a
repr, a log line or an exception raised here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import attrs

from txexchange.errors import BadRequest

__all__ = [
    "AUTH_EXPIRY_MS",
    "DEFAULT_RECV_WINDOW",
    "HEADER_API_KEY",
    "HEADER_RECV_WINDOW",
    "HEADER_SIGN",
    "HEADER_TIMESTAMP",
    "BybitSigner",
    "SignedHeaders",
    "hmac_sha256_hex",
    "rest_signature_payload",
    "ws_auth_payload",
]

HEADER_API_KEY = "X-BAPI-API-KEY"
HEADER_TIMESTAMP = "X-BAPI-TIMESTAMP"
HEADER_RECV_WINDOW = "X-BAPI-RECV-WINDOW"
HEADER_SIGN = "X-BAPI-SIGN"
#: the server's default ``recv_window`` (ms)
DEFAULT_RECV_WINDOW = 5000
#: how far ahead of the (exchange's) time now a WebSocket ``auth`` expires (ms)
AUTH_EXPIRY_MS = 10_000


def hmac_sha256_hex(secret: str | bytes, payload: str | bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` (UTF-8) keyed with ``secret`` (UTF-8)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def rest_signature_payload(
    timestamp: int | str, api_key: str, recv_window: int | str, payload: str
) -> str:
    """What a REST signature covers: ``timestamp + api_key + recv_window + payload``.

    ``payload`` is the query string (``GET``) or the raw JSON body (``POST``),
    byte for byte as sent.
    """
    return f"{timestamp}{api_key}{recv_window}{payload}"


def ws_auth_payload(expires: int | str) -> str:
    """What the WebSocket ``auth`` signature covers: ``"GET/realtime" + expires``."""
    return f"GET/realtime{expires}"


@attrs.frozen
class SignedHeaders:
    """The four ``X-BAPI-*`` headers of one signed request (the repr shows none)."""

    headers: Mapping[str, str] = attrs.field(repr=False)
    signature: str = attrs.field(repr=False)


class BybitSigner:
    """An API key and its HMAC secret, able to sign Bybit v5 requests."""

    __slots__ = ("_secret", "api_key")

    def __init__(self, api_key: str, secret: str | bytes) -> None:
        if not isinstance(api_key, str) or not api_key:
            raise BadRequest("a Bybit API key (non-empty string) is required")
        if not isinstance(secret, str | bytes) or not secret:
            raise BadRequest("a Bybit API secret (non-empty string) is required")
        #: the API key (sent with every signed request; not a secret by itself)
        self.api_key = api_key
        self._secret = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)

    def __repr__(self) -> str:
        key = self.api_key
        return f"<BybitSigner api_key={key[:4] + '...' if len(key) > 8 else '...'}>"

    def __reduce__(self) -> Any:
        raise TypeError("BybitSigner holds a secret and cannot be pickled")

    def sign(self, payload: str | bytes) -> str:
        """Hex HMAC-SHA256 of ``payload``."""
        return hmac_sha256_hex(self._secret, payload)

    def rest_headers(self, timestamp: int, recv_window: int, payload: str) -> SignedHeaders:
        """The ``X-BAPI-*`` headers for a request whose query string or body is ``payload``."""
        if type(timestamp) is not int or timestamp <= 0:
            raise BadRequest("the timestamp must be a positive int of ms")
        if type(recv_window) is not int or recv_window <= 0:
            raise BadRequest("recv_window must be a positive int of ms")
        signature = self.sign(rest_signature_payload(timestamp, self.api_key, recv_window,
                                                     payload))  # fmt: skip
        headers = {
            HEADER_API_KEY: self.api_key,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_RECV_WINDOW: str(recv_window),
            HEADER_SIGN: signature,
        }
        return SignedHeaders(headers, signature)

    def auth_args(self, expires: int) -> list[Any]:
        """``[api_key, expires, signature]`` for ``{"op": "auth", "args": ...}``."""
        if type(expires) is not int or expires <= 0:
            raise BadRequest("expires must be a positive int of ms")
        return [self.api_key, expires, self.sign(ws_auth_payload(expires))]
