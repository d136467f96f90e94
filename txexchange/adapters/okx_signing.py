"""OKX v5 request signing: REST headers and the WebSocket ``login`` arguments.

Sits in the adapter layer beside :mod:`txexchange.adapters.okx`; the client
layer (signed REST calls, the private WebSocket) signs with an
:class:`OkxSigner`.  Everything is pure: no reactor, no sockets; times are
passed in.

OKX uses one primitive for both: ``sign = Base64(HMAC-SHA256(secret,
prehash))`` with the secret's ASCII bytes as the key (not base64-decoded).

* **REST**: ``prehash = timestamp + METHOD + requestPath + body``, where
  ``timestamp`` is ISO-8601 UTC with milliseconds (``2020-12-08T09:08:57.715Z``),
  ``requestPath`` includes the query string (``/api/v5/account/balance?ccy=BTC``)
  and ``body`` is the JSON text sent (empty for GET).  Headers:
  ``OK-ACCESS-KEY``, ``OK-ACCESS-SIGN``, ``OK-ACCESS-TIMESTAMP``,
  ``OK-ACCESS-PASSPHRASE``.
* **WebSocket login**: ``prehash = timestamp + "GET" + "/users/self/verify"``
  with ``timestamp`` in Unix seconds.

The secret and the passphrase never appear in a repr, a log line or an
exception raised here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
from typing import Any

from txexchange.errors import BadRequest

__all__ = [
    "LOGIN_PATH",
    "OkxSigner",
    "hmac_sha256_base64",
    "iso_timestamp",
    "login_prehash",
    "rest_prehash",
]

#: the path the WebSocket login signature covers
LOGIN_PATH = "/users/self/verify"


def hmac_sha256_base64(secret: str | bytes, payload: str | bytes) -> str:
    """Base64 of HMAC-SHA256(``secret``, ``payload``), both as UTF-8."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode("ascii")


def iso_timestamp(ms: int) -> str:
    """``ms`` since the epoch as OKX's REST timestamp: ``2020-12-08T09:08:57.715Z``."""
    moment = _dt.datetime.fromtimestamp(ms // 1000, _dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def rest_prehash(timestamp: str, method: str, request_path: str, body: str = "") -> str:
    """What a REST signature covers: ``timestamp + METHOD + requestPath(+?query) + body``."""
    return f"{timestamp}{method.upper()}{request_path}{body}"


def login_prehash(timestamp: str) -> str:
    """What the WebSocket login signature covers: ``timestamp + "GET" + "/users/self/verify"``."""
    return f"{timestamp}GET{LOGIN_PATH}"


class OkxSigner:
    """An OKX API key with its secret and passphrase, able to sign requests.

    The repr masks the key and leaves the secret and passphrase out; it
    cannot be pickled.
    """

    __slots__ = ("_passphrase", "_secret", "api_key")

    def __init__(self, api_key: str, secret: str, passphrase: str) -> None:
        for name, value in (("API key", api_key), ("secret", secret), ("passphrase", passphrase)):
            if not isinstance(value, str) or not value:
                raise BadRequest(f"an OKX {name} (non-empty string) is required")
        #: the API key (sent with every request; not a secret by itself)
        self.api_key = api_key
        self._secret = secret.encode("utf-8")
        self._passphrase = passphrase

    def __repr__(self) -> str:
        key = self.api_key
        return f"<OkxSigner api_key={key[:4] + '...' if len(key) > 8 else '...'}>"

    def __reduce__(self) -> Any:
        raise TypeError("OkxSigner holds a secret and cannot be pickled")

    def sign(self, prehash: str) -> str:
        """Base64 HMAC-SHA256 of ``prehash``."""
        return hmac_sha256_base64(self._secret, prehash)

    def rest_headers(
        self, timestamp_ms: int, method: str, request_path: str, body: str = ""
    ) -> dict[str, str]:
        """The four ``OK-ACCESS-*`` headers of one REST request."""
        ts = iso_timestamp(timestamp_ms)
        return {
            "OK-ACCESS-KEY": self.api_key,
            "OK-ACCESS-SIGN": self.sign(rest_prehash(ts, method, request_path, body)),
            "OK-ACCESS-TIMESTAMP": ts,
            "OK-ACCESS-PASSPHRASE": self._passphrase,
        }

    def login_args(self, timestamp_s: int | str) -> dict[str, str]:
        """The argument of ``{"op": "login", "args": [...]}`` for Unix time ``timestamp_s``."""
        ts = str(timestamp_s)
        return {
            "apiKey": self.api_key,
            "passphrase": self._passphrase,
            "timestamp": ts,
            "sign": self.sign(login_prehash(ts)),
        }
