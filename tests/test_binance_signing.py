"""Binance request signing against the exchange's own worked examples.

Every Binance signature vector of ``../shared/protocols/vectors.json`` is
reproduced exactly; the two best-known examples are also written out here so
the check does not depend on the file being present.
"""

from __future__ import annotations

import json
import pickle
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from txexchange.adapters.binance_signing import (
    API_KEY_HEADER,
    Signer,
    check_recv_window,
    hmac_sha256_hex,
    percent_encode,
    rest_signature_payload,
    server_time_offset,
    timestamp_ms,
    ws_api_signature_payload,
)
from txexchange.errors import BadRequest

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "protocols" / "vectors.json"

# Binance's documented example key pair (public documentation values).
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"

EXPECTED_IDS = {
    "binance.rest.hmac_sha256.ascii",
    "binance.rest.hmac_sha256.percent_encoded_unicode_symbol",
    "binance.rest.hmac_sha256.query_plus_body_legacy",
    "binance.wsapi.hmac_sha256.ascii",
    "binance.wsapi.hmac_sha256.raw_utf8_unicode_symbol",
}


def _binance_vectors() -> list[dict[str, Any]]:
    if not VECTORS.exists():  # pragma: no cover - the repo is checked out beside ../shared
        return []
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    return [v for v in data["signatures"] if v["exchange"] == "binance"]


VECTOR_LIST = _binance_vectors()


def _pairs(text: str) -> list[tuple[str, str]]:
    """``k=v&...`` (unencoded) as ordered pairs."""
    return [tuple(part.split("=", 1)) for part in text.split("&")]  # type: ignore[misc]


@pytest.mark.skipif(not VECTOR_LIST, reason=f"{VECTORS} not found")
def test_every_binance_vector_is_covered() -> None:
    assert {v["id"] for v in VECTOR_LIST} == EXPECTED_IDS


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=[v["id"] for v in VECTOR_LIST])
def test_vector(vector: dict[str, Any]) -> None:
    signer = Signer(vector["api_key"], vector["secret"])
    expected = vector["expected"]
    assert expected == vector["published_expected"]
    if vector["id"].startswith("binance.rest."):
        if "query_string" in vector:
            signed = signer.sign_rest(
                _pairs(vector["query_string"]), _pairs(vector["request_body"])
            )
            assert (
                rest_signature_payload(vector["query_string"], vector["request_body"])
                == (vector["signed_payload"])
            )
            assert signed.query == vector["query_string"]
            assert signed.body == f"{vector['request_body']}&signature={expected}"
        else:
            raw = vector.get("unencoded_params", vector["signed_payload"])
            signed = signer.sign_rest(_pairs(raw))
            assert signed.query == f"{vector['signed_payload']}&signature={expected}"
            assert signed.body == ""
        assert signed.signature == expected
        assert signed.headers == {API_KEY_HEADER: vector["api_key"]}
    else:
        params: dict[str, Any] = dict(_pairs(vector["signed_payload"]))
        shuffled = list(params.items())
        random.Random(1).shuffle(shuffled)
        params = dict(shuffled)
        params["signature"] = "ignored"
        assert ws_api_signature_payload(params) == vector["signed_payload"]
        assert signer.sign_ws_api(params) == expected


def test_rest_ascii_example_inline() -> None:
    signer = Signer(API_KEY, SECRET)
    signed = signer.sign_rest(
        Signer.rest_params(
            {
                "symbol": "LTCBTC",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": 1,
                "price": "0.1",
            },
            timestamp=1499827319559,
            recv_window=5000,
        )
    )
    sig = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    assert signed.signature == sig
    assert signed.query.endswith(f"&recvWindow=5000&timestamp=1499827319559&signature={sig}")


def test_rest_fullwidth_symbol_is_percent_encoded_before_signing() -> None:
    signer = Signer(API_KEY, SECRET)
    params = [("symbol", "\uff11\uff12\uff13\uff14\uff15\uff16"), ("side", "BUY")]
    params += [("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"), ("price", "0.1")]
    signed = signer.sign_rest(Signer.rest_params(params, timestamp=1499827319559, recv_window=5000))
    assert signed.query.startswith("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&")
    assert signed.signature == "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
    # signing the raw (unencoded) text would give a different signature
    assert signer.sign("&".join(f"{k}={v}" for k, v in params)) != signed.signature


def test_ws_api_ascii_example_inline() -> None:
    signer = Signer(API_KEY, SECRET)
    params = signer.ws_api_params(
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01000000",
            "price": "52000.00",
        },
        timestamp=1645423376532,
        recv_window=100,
    )
    assert params["apiKey"] == API_KEY
    assert params["signature"] == "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
    assert list(params)[-1] == "signature"


def test_ws_api_utf8_is_not_percent_encoded() -> None:
    signer = Signer(API_KEY, SECRET)
    params = signer.ws_api_params(
        {
            "symbol": "\uff11\uff12\uff13\uff14\uff15\uff16",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "1.00000000",
            "price": "0.10000000",
        },
        timestamp=1645423376532,
        recv_window=5000,
    )
    assert params["signature"] == "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"
    assert "%" not in ws_api_signature_payload(params)


def test_value_rendering_and_encoding() -> None:
    assert percent_encode([("a", True), ("b", False), ("c", None), ("d", "x y/~")]) == (
        "a=true&b=false&d=x%20y%2F~"
    )
    assert percent_encode({"p": Decimal("0.10"), "q": 1.5}) == "p=0.10&q=1.5"
    assert ws_api_signature_payload({"b": 2, "a": True, "c": None, "signature": "x"}) == (
        "a=true&b=2"
    )
    with pytest.raises(BadRequest):
        percent_encode({"x": object()})
    with pytest.raises(BadRequest):
        percent_encode({"x": float("nan")})
    assert hmac_sha256_hex(b"k", b"m") == hmac_sha256_hex("k", "m")


def test_signature_goes_last_in_the_query_without_a_body() -> None:
    signed = Signer(API_KEY, SECRET).sign_rest({"timestamp": 1})
    assert signed.query.startswith("timestamp=1&signature=")
    assert Signer(API_KEY, SECRET).sign_rest().query.startswith("signature=")


def test_signer_hides_the_secret() -> None:
    signer = Signer(API_KEY, SECRET)
    assert SECRET not in repr(signer) and SECRET not in str(signer)
    assert API_KEY not in repr(signer)
    signed = signer.sign_rest({"timestamp": 1})
    assert SECRET not in repr(signed) and API_KEY not in repr(signed)
    assert not hasattr(signer, "secret")
    with pytest.raises(TypeError) as info:
        pickle.dumps(signer)
    assert SECRET not in str(info.value)
    with pytest.raises(BadRequest) as bad:
        Signer("", SECRET)
    assert SECRET not in str(bad.value)
    with pytest.raises(BadRequest):
        Signer(API_KEY, "")


def test_timestamps_offsets_and_recv_window() -> None:
    assert timestamp_ms(lambda: 1499827319.559) == 1499827319559
    assert timestamp_ms(lambda: 100.0, offset_ms=-250) == 99750
    # server 1000 ms ahead of the middle of a 200 ms round trip
    assert server_time_offset(11_100, sent_at=10.0, received_at=10.2) == 1000
    assert check_recv_window(None) is None
    assert check_recv_window(5000) == 5000
    assert check_recv_window(60000) == 60000
    assert check_recv_window(Decimal("1.234")) == Decimal("1.234")
    for bad in (0, -1, 60001, Decimal("1.2345"), True, "5000", float("inf")):
        with pytest.raises(BadRequest):
            check_recv_window(bad)  # type: ignore[arg-type]
    params = Signer.rest_params({"a": 1}, timestamp=5)
    assert params == [("a", 1), ("timestamp", 5)]
    ws = Signer(API_KEY, SECRET).ws_api_params(timestamp=7)
    assert set(ws) == {"apiKey", "timestamp", "signature"}
