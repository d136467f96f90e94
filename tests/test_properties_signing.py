"""Property tests: signing round-trips for arbitrary parameters, keys and secrets.

Binance: WebSocket API parameters are signed, sent as JSON, decoded and
checked by the fake Binance's own verifier (written from Binance's docs, not
from the signer); REST parameters are percent-encoded and signed, and the
query/body must decode back to the parameters and verify with an independent
HMAC.  Gemini: the payload header must decode back to the request and its
signature verify.  Text is arbitrary Unicode (astral planes, combining marks,
reserved URL characters); text that cannot be UTF-8 at all (lone surrogates)
is refused with BadRequest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from txexchange.adapters import gemini
from txexchange.adapters.binance_signing import Signer, percent_encode
from txexchange.codec import dumps, loads
from txexchange.errors import BadRequest
from txexchange.testing.binance import FakeBinance, _RequestError

NOW_MS = 1_767_225_600_000
RESERVED = {"signature", "apiKey", "timestamp", "recvWindow"}

names = st.text(min_size=1, max_size=12).filter(lambda k: k not in RESERVED)
values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["a b", "a+b", "a&b=c", "100%", "ü", "😀", "e\u0301", "~-._", '["BTCUSDT"]']),
    st.integers(-(2**63), 2**63),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
params_dicts = st.dictionaries(names, values, max_size=8)
secrets = st.text(min_size=1, max_size=64) | st.binary(min_size=1, max_size=64)
api_keys = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1)


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return repr(value) if isinstance(value, float) else str(value)


@settings(max_examples=200, deadline=None)
@given(params=params_dicts, secret=st.text(min_size=1, max_size=64), api_key=api_keys)
def test_ws_api_signature_verifies_at_the_fake(params, secret, api_key):
    clock = Clock()
    clock.advance(NOW_MS / 1000)
    fake = FakeBinance(["BTC/USDT"], clock=clock, api_keys={api_key: secret})
    signed = Signer(api_key, secret).ws_api_params(params, timestamp=NOW_MS, recv_window=5000)
    wire = loads(dumps({"method": "userDataStream.subscribe.signature", "params": signed}))
    assert fake._verify_signed(wire["params"]) == api_key
    # any change to a signed value is caught
    tampered = dict(wire["params"])
    tampered["timestamp"] = NOW_MS - 1
    with pytest.raises(_RequestError) as raised:
        fake._verify_signed(tampered)
    assert raised.value.code == -1022


@settings(max_examples=200, deadline=None)
@given(
    query=st.lists(st.tuples(names, values), max_size=6),
    body=st.lists(st.tuples(names, values), max_size=6),
    secret=secrets,
)
def test_rest_signature_covers_exactly_what_is_sent(query, body, secret):
    signed = Signer("key", secret).sign_rest(query, body)
    key = secret.encode() if isinstance(secret, str) else secret
    # the signature is the last parameter of the body if there is one, else of the query
    carrier = signed.body if body else signed.query
    head, sep, signature = carrier.rpartition("signature=")
    assert signature == signed.signature
    assert sep and (head == "" or head.endswith("&"))
    payload = (signed.query + head[:-1]) if body else head[:-1]
    expected = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, signature)
    # only unreserved characters and escapes go on the wire ...
    for text in (signed.query, signed.body):
        assert text.isascii()
        assert not set(text) - set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~%=&"
        )
    # ... and decoding them gives back every parameter, in order
    sent_query = parse_qsl(signed.query, keep_blank_values=True, strict_parsing=False)
    sent_body = parse_qsl(signed.body, keep_blank_values=True, strict_parsing=False)
    want_query = [(k, _text(v)) for k, v in query]
    want_body = [(k, _text(v)) for k, v in body]
    if body:
        assert sent_query == want_query
        assert sent_body == [*want_body, ("signature", signature)]
    else:
        assert sent_query == [*want_query, ("signature", signature)]


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_percent_encoding_round_trips_any_unicode(text):
    encoded = percent_encode([(text or "k", text)])
    assert parse_qsl(encoded, keep_blank_values=True) == [(text or "k", text)]


@settings(max_examples=100, deadline=None)
@given(
    good=st.text(min_size=1, max_size=5),
    surrogate=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    where=st.sampled_from(["name", "value", "secret"]),
)
def test_text_that_cannot_be_utf8_is_a_bad_request(good, surrogate, where):
    bad = good + surrogate
    with pytest.raises(BadRequest) as raised:
        if where == "secret":
            Signer("key", bad)
        elif where == "name":
            Signer("key", "s").sign_rest([(bad, "1")])
        else:
            Signer("key", "s").ws_api_params({"symbol": bad}, timestamp=1)
    assert bad not in str(raised.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    extra=st.dictionaries(st.text(max_size=8), _json, max_size=5),
    nonce=st.integers(1, 2**62),
    secret=secrets,
    api_key=api_keys,
)
def test_gemini_private_headers_round_trip(extra, nonce, secret, api_key):
    payload = {**extra, "request": "/v1/balances", "nonce": nonce}
    headers = gemini.private_headers(api_key, secret, payload)
    assert headers["X-GEMINI-APIKEY"] == api_key
    b64 = headers["X-GEMINI-PAYLOAD"]
    assert json.loads(base64.b64decode(b64, validate=True)) == payload
    key = secret.encode() if isinstance(secret, str) else secret
    expected = hmac.new(key, b64.encode(), hashlib.sha384).hexdigest()
    assert hmac.compare_digest(headers["X-GEMINI-SIGNATURE"], expected)
    assert gemini.sign(secret, b64) == expected


@settings(max_examples=100, deadline=None)
@given(nonce=st.integers(1, 2**40), secret=secrets)
def test_gemini_websocket_handshake_headers_verify(nonce, secret):
    headers = gemini.ws_auth_headers("key", secret, nonce)
    assert base64.b64decode(headers["X-GEMINI-PAYLOAD"]) == str(nonce).encode()
    assert headers["X-GEMINI-NONCE"] == str(nonce)
    key = secret.encode() if isinstance(secret, str) else secret
    expected = hmac.new(key, headers["X-GEMINI-PAYLOAD"].encode(), hashlib.sha384).hexdigest()
    assert headers["X-GEMINI-SIGNATURE"] == expected
