"""JSON decoding for the hot path: each text frame is decoded exactly once.

Sits between the transport (which hands over raw frame bytes) and the
adapters (which receive Python objects).  orjson is used because decoding is
the largest single cost per message; numbers in exchange payloads that must
stay exact (prices, amounts) arrive as strings on every exchange except Kraken,
whose adapter decodes with :func:`loads_exact` instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["DecodeError", "dumps", "loads", "loads_exact"]

DecodeError = (orjson.JSONDecodeError, ValueError)


#: Decode a JSON document (bytes or str).  orjson's own function, not a
#: wrapper: this runs once per received frame.
loads: Callable[[bytes | str], Any] = orjson.loads


def loads_exact(data: bytes | str) -> Any:
    """Decode keeping every non-integer number as :class:`~decimal.Decimal`."""
    return json.loads(data, parse_float=Decimal)


def dumps(obj: Any) -> bytes:
    """Encode to compact JSON bytes."""
    return orjson.dumps(obj)
