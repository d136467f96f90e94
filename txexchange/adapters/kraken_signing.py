"""Kraken spot REST request signing (``API-Key`` / ``API-Sign``).

Sits in the adapter layer beside :mod:`~txexchange.adapters.kraken`: the
signature Kraken's private REST endpoints (and ``GetWebSocketsToken``, which
the private WebSocket v2 channels need) require.  Pure: no I/O.

``API-Sign`` = base64(HMAC-SHA512(key=base64decode(secret),
msg=uri_path + SHA256(nonce + postdata))), where ``postdata`` is the
URL-encoded body exactly as sent (it includes the ``nonce``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from txexchange.errors import BadRequest

__all__ = ["KrakenSigner", "api_sign"]


def api_sign(secret_b64: str, uri_path: str, nonce: str | int, postdata: str) -> str:
    """The ``API-Sign`` header value for one request."""
    try:
        key = base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("a Kraken API secret is base64 text") from None
    digest = hashlib.sha256((str(nonce) + postdata).encode("utf-8")).digest()
    mac = hmac.new(key, uri_path.encode("utf-8") + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode("ascii")


class KrakenSigner:
    """An API key and its secret, signing Kraken private REST requests (secret never shown)."""

    __slots__ = ("_secret", "api_key")

    def __init__(self, api_key: str, secret_b64: str) -> None:
        if not isinstance(api_key, str) or not api_key:
            raise BadRequest("a Kraken API key (non-empty string) is required")
        api_sign(secret_b64, "/", 0, "")  # validates the secret without showing it
        self.api_key = api_key
        self._secret = secret_b64

    def __repr__(self) -> str:
        return f"<KrakenSigner api_key={self.api_key[:4]}...>"

    def __reduce__(self) -> Any:
        raise TypeError("KrakenSigner holds a secret and cannot be pickled")

    def sign(
        self, uri_path: str, params: Mapping[str, Any], nonce: int
    ) -> tuple[str, dict[str, str]]:
        """``(postdata, headers)`` for POST ``uri_path`` with ``params`` (``nonce`` first)."""
        postdata = urlencode([("nonce", nonce), *params.items()])
        headers = {
            "API-Key": self.api_key,
            "API-Sign": api_sign(self._secret, uri_path, nonce, postdata),
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        }
        return postdata, headers
