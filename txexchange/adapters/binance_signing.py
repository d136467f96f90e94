"""Binance request signing: REST and WebSocket API HMAC-SHA256, timestamps, recvWindow.

Sits in the adapter layer beside :mod:`txexchange.adapters.binance`; the
client layer (REST calls, the user data stream) signs its requests with a
:class:`Signer`.  Everything is pure: no reactor, no sockets, and the clock
is a plain function passed in.

The two signing rules Binance documents differ and must not be mixed up:

* **REST**: the payload is the percent-encoded (UTF-8) query string
  concatenated *without a separator* with the percent-encoded request body,
  exactly as sent; ``signature`` is appended as the last parameter.
* **WebSocket API**: every parameter except ``signature`` (``apiKey``
  included), sorted by name, joined as ``k=v&...`` with the *raw* UTF-8
  values (no percent-encoding).

The signature is lowercase hex HMAC-SHA256 keyed with the API secret.  The
secret never appears in a repr, a log line or an exception raised here.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import attrs

from txexchange.errors import BadRequest

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_RECV_WINDOW",
    "MAX_RECV_WINDOW",
    "SignedRestRequest",
    "Signer",
    "check_recv_window",
    "hmac_sha256_hex",
    "percent_encode",
    "rest_signature_payload",
    "server_time_offset",
    "timestamp_ms",
    "ws_api_signature_payload",
]

#: header carrying the API key on REST requests
API_KEY_HEADER = "X-MBX-APIKEY"
#: the server's default ``recvWindow`` (ms)
DEFAULT_RECV_WINDOW = 5000
#: the largest ``recvWindow`` Binance accepts (ms)
MAX_RECV_WINDOW = 60_000

Params = Mapping[str, Any] | Iterable[tuple[str, Any]]


def _text(value: Any) -> str:
    """A parameter value as Binance reads it (booleans lowercase, like JSON)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest("parameter values must be finite numbers")
        return repr(value)  # the shortest round-trip form, as JSON encoders write it
    if isinstance(value, str):
        return _encodable(value)
    if isinstance(value, int | Decimal):
        return str(value)
    raise BadRequest(f"cannot sign a parameter of type {type(value).__name__}")


def _encodable(text: str) -> str:
    """``text`` if it can be sent as UTF-8; BadRequest (not UnicodeEncodeError) if not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("parameter names and values must be valid Unicode text") from None
    return text


def _pairs(params: Params | None) -> list[tuple[str, Any]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    return [(_encodable(str(k)), v) for k, v in items]


def percent_encode(params: Params | None) -> str:
    """``k=v&...`` in the given order, names and values percent-encoded as UTF-8.

    Only RFC 3986 unreserved characters (``A-Z a-z 0-9 - _ . ~``) stay as
    they are; a space becomes ``%20``.  ``None`` values are left out.
    """
    return "&".join(
        f"{quote(k, safe='')}={quote(_text(v), safe='')}"
        for k, v in _pairs(params)
        if v is not None
    )


def rest_signature_payload(query_string: str = "", body: str = "") -> str:
    """What a REST signature covers: the query string followed directly by the body."""
    return query_string + body


def ws_api_signature_payload(params: Mapping[str, Any]) -> str:
    """What a WebSocket API signature covers: sorted ``k=v&...`` with raw UTF-8 values.

    ``signature`` itself and ``None`` values are left out.
    """
    return "&".join(
        f"{_encodable(str(k))}={_text(params[k])}"
        for k in sorted(params)
        if k != "signature" and params[k] is not None
    )


def hmac_sha256_hex(secret: str | bytes, payload: str | bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``payload`` (UTF-8) keyed with ``secret`` (UTF-8)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def timestamp_ms(now: Callable[[], float], offset_ms: float = 0) -> int:
    """The ``timestamp`` parameter: ``now()`` (seconds) in ms, plus the server-time offset."""
    return int(now() * 1000 + offset_ms)


def server_time_offset(server_time_ms: int, sent_at: float, received_at: float) -> int:
    """Offset (ms) to add to local time to get the server's, from one ``time`` round trip.

    ``sent_at``/``received_at`` are local seconds around the request; the
    server's reading is taken to be from the middle of the round trip.
    """
    local_ms = (sent_at + received_at) / 2 * 1000
    return round(server_time_ms - local_ms)


def check_recv_window(recv_window: float | int | Decimal | None) -> float | int | Decimal | None:
    """Validate ``recvWindow``: more than 0, at most 60 000 ms, at most 3 decimals."""
    if recv_window is None:
        return None
    if isinstance(recv_window, bool) or not isinstance(recv_window, int | float | Decimal):
        raise BadRequest(f"recvWindow must be a number of milliseconds, got {recv_window!r}")
    value = Decimal(str(recv_window))
    if not value.is_finite() or value <= 0 or value > MAX_RECV_WINDOW:
        raise BadRequest(f"recvWindow must be in (0, {MAX_RECV_WINDOW}] ms, got {recv_window!r}")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -3:
        raise BadRequest(f"recvWindow has at most 3 decimals, got {recv_window!r}")
    return recv_window


@attrs.frozen
class SignedRestRequest:
    """A signed REST request: send ``query`` and ``body`` exactly as they are, with ``headers``.

    ``signature`` is already appended as the last parameter of ``body`` when
    there is a body, else of ``query``.  ``headers`` holds the API key, not
    the secret; the repr shows neither.
    """

    query: str
    body: str
    signature: str
    headers: Mapping[str, str] = attrs.field(repr=False)


class Signer:
    """An API key and its HMAC secret, able to sign Binance requests.

    The secret is kept as bytes and never shown: the repr masks the key and
    leaves the secret out, and nothing raised here mentions either.
    """

    __slots__ = ("_secret", "api_key")

    def __init__(self, api_key: str, secret: str | bytes) -> None:
        if not isinstance(api_key, str) or not api_key:
            raise BadRequest("a Binance API key (non-empty string) is required")
        if not isinstance(secret, str | bytes) or not secret:
            raise BadRequest("a Binance API secret (non-empty string) is required")
        #: the API key (sent with every signed request; not a secret by itself)
        self.api_key = api_key
        try:
            self._secret = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        except UnicodeEncodeError:
            # the error would carry the secret (UnicodeEncodeError.object)
            raise BadRequest("a Binance API secret must be valid Unicode text") from None

    def __repr__(self) -> str:
        return f"<Signer api_key={_mask(self.api_key)}>"

    def __reduce__(self) -> Any:
        raise TypeError("Signer holds a secret and cannot be pickled")

    def sign(self, payload: str | bytes) -> str:
        """Hex HMAC-SHA256 of ``payload``."""
        return hmac_sha256_hex(self._secret, payload)

    # -- REST ------------------------------------------------------------------

    def sign_rest(
        self, query: Params | None = None, body: Params | None = None
    ) -> SignedRestRequest:
        """Percent-encode ``query`` and ``body`` (in their order), sign, append ``signature``.

        The caller includes ``timestamp`` (and ``recvWindow``) in ``query``
        or ``body``; see :meth:`rest_params`.
        """
        query_string = percent_encode(query)
        body_string = percent_encode(body)
        signature = self.sign(rest_signature_payload(query_string, body_string))
        tail = f"signature={signature}"
        if body_string:
            body_string = f"{body_string}&{tail}"
        else:
            query_string = f"{query_string}&{tail}" if query_string else tail
        return SignedRestRequest(
            query_string, body_string, signature, {API_KEY_HEADER: self.api_key}
        )

    @staticmethod
    def rest_params(
        params: Params | None,
        *,
        timestamp: int,
        recv_window: float | int | Decimal | None = None,
    ) -> list[tuple[str, Any]]:
        """``params`` followed by ``recvWindow`` (if given) and ``timestamp``."""
        pairs = _pairs(params)
        if check_recv_window(recv_window) is not None:
            pairs.append(("recvWindow", recv_window))
        pairs.append(("timestamp", timestamp))
        return pairs

    # -- WebSocket API -------------------------------------------------------------

    def sign_ws_api(self, params: Mapping[str, Any]) -> str:
        """The signature of WebSocket API ``params`` (which must include ``apiKey``)."""
        return self.sign(ws_api_signature_payload(params))

    def ws_api_params(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        timestamp: int,
        recv_window: float | int | Decimal | None = None,
    ) -> dict[str, Any]:
        """``params`` plus ``apiKey``, ``timestamp``, ``recvWindow`` and ``signature``.

        Ready to put in a request's ``"params"``.
        """
        signed: dict[str, Any] = {
            k: v for k, v in (params or {}).items() if k != "signature" and v is not None
        }
        signed["apiKey"] = self.api_key
        signed["timestamp"] = timestamp
        if check_recv_window(recv_window) is not None:
            signed["recvWindow"] = recv_window
        signed["signature"] = self.sign_ws_api(signed)
        return signed


def _mask(key: str) -> str:
    return f"{key[:4]}..." if len(key) > 8 else "..."
