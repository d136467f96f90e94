"""Inflating compressed binary frames with a hard cap on the output size.

Sits in the transport, between frame receipt and JSON decoding.  Some
exchanges send deflate/zlib/gzip-compressed binary frames; a hostile or broken
peer could send a small frame that inflates to gigabytes, so output beyond the
cap is never produced.
"""

from __future__ import annotations

import zlib

from txexchange.errors import DecompressionBomb, MalformedMessage
from txexchange.transport.rules import Compression

__all__ = ["inflate"]

_WBITS = {"deflate": -15, "zlib": 15, "gzip": 31}


def inflate(data: bytes, mode: Compression, cap: int) -> bytes:
    """Decompress ``data`` (``mode``: deflate, zlib or gzip) to at most ``cap`` bytes.

    Raises :class:`DecompressionBomb` past the cap and :class:`MalformedMessage`
    for data that does not decompress.
    """
    if mode is None:
        return data
    try:
        wbits = _WBITS[mode]
    except KeyError:
        raise MalformedMessage(f"unknown compression {mode!r}") from None
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, cap + 1)
    except zlib.error as e:
        raise MalformedMessage(f"frame does not {mode}-decompress: {e}") from None
    if len(out) > cap or d.unconsumed_tail:
        raise DecompressionBomb(f"compressed frame of {len(data)} bytes inflates past {cap} bytes")
    return out
