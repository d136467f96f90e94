"""The lean WebSocket receive path (transport.fastframes) over real loopback sockets.

The fake server writes hand-built frames straight to its socket, cut into
arbitrary pieces, so frame headers and payloads straddle reads; data frames
mixed with pings, fragmented messages and protocol violations must come out
exactly as Autobahn's own path would deliver them.
"""

from __future__ import annotations

import json
import random
import struct

import pytest_twisted
from twisted.internet import reactor

from helpers import Recorder, sleep, wait_for
from txexchange.errors import MalformedMessage
from txexchange.testing import FakeExchangeServer
from txexchange.transport import (
    Connection,
    Disconnected,
    FrameRejected,
    SimpleWireRules,
    TransportOptions,
)

FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.0, stall_timeout=None)


def frame(payload: bytes, opcode: int = 1, fin: bool = True, length_bytes: int = 0) -> bytes:
    """A server-to-client (unmasked) frame; ``length_bytes`` forces a longer length field."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if length_bytes == 2 or (not length_bytes and 126 <= n < 65536):
        return struct.pack("!BBH", b0, 126, n) + payload
    if length_bytes == 8 or (not length_bytes and n >= 65536):
        return struct.pack("!BBQ", b0, 127, n) + payload
    return struct.pack("!BB", b0, n) + payload


async def start() -> tuple[FakeExchangeServer, Connection, Recorder]:
    server = FakeExchangeServer(reactor=reactor)
    await server.start()
    rec = Recorder()
    conn = Connection(
        server.ws_url(),
        SimpleWireRules(),
        on_message=rec.on_message,
        on_status=rec.on_status,
        reactor=reactor,
        options=FAST,
    ).start()
    await conn.when_ready()
    return server, conn, rec


@pytest_twisted.ensureDeferred
async def test_frames_cut_anywhere_with_pings_and_fragments_arrive_in_order():
    server, conn, rec = await start()
    session = server.sessions[0]
    rng = random.Random(5)
    expected = []
    wire = b""
    for i in range(300):
        size = rng.choice([0, 10, 120, 125, 126, 127, 400, 65535, 65536, 70_000])
        message = {"i": i, "pad": "x" * size}
        data = json.dumps(message).encode()
        expected.append(message)
        roll = rng.random()
        if roll < 0.1:
            # a fragmented text message: first fragment, a ping in between, continuation
            cut = len(data) // 2
            wire += frame(data[:cut], fin=False)
            wire += frame(b"p%d" % i, opcode=9)
            wire += frame(data[cut:], opcode=0)
        elif roll < 0.2:
            wire += frame(b"p%d" % i, opcode=9) + frame(data, opcode=2)
        else:
            wire += frame(data)
    pos = 0
    while pos < len(wire):
        step = rng.choice([1, 2, 3, 7, 100, 4096, 100_000])
        session.send_raw(wire[pos : pos + step])
        pos += step
        if rng.random() < 0.05:
            await sleep(0.001)
    await wait_for(lambda: len(rec.messages) >= len(expected), timeout=20)
    assert rec.messages == expected
    assert conn.stats.messages == len(expected)
    assert not rec.of(FrameRejected) and not rec.of(Disconnected)
    await conn.close()
    await server.stop()


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_text_frame_is_rejected_by_the_decoder_and_feed_goes_on():
    # (Autobahn's own path failed the whole connection here; the decoder's
    # rejection is a counted FrameRejected and the socket stays up.)
    server, conn, rec = await start()
    session = server.sessions[0]
    session.send_raw(frame(b'{"a": "\xff\xfe"}') + frame(b'{"ok": 1}'))
    await wait_for(lambda: rec.messages == [{"ok": 1}])
    rejected = rec.of(FrameRejected)
    assert len(rejected) == 1 and isinstance(rejected[0].error, MalformedMessage)
    await conn.close()
    await server.stop()


@pytest_twisted.ensureDeferred
async def test_non_minimal_length_and_reserved_bits_still_fail_the_connection():
    for bad in (
        frame(b'{"short": 1}', length_bytes=2),  # 16-bit length for a 12-byte payload
        frame(b'{"big": 1}' + b" " * 200, length_bytes=8),  # 64-bit length under 65536
        bytes((0xC1, 2)) + b"{}",  # RSV1 without a negotiated extension
    ):
        server, conn, rec = await start()
        session = server.sessions[0]
        session.send_raw(frame(b'{"before": 1}') + bad + frame(b'{"after": 1}'))
        await wait_for(lambda rec=rec: rec.of(Disconnected))
        assert rec.messages == [{"before": 1}], bad[:4]
        await conn.close()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_close_frame_after_data_in_one_read_is_handled_by_autobahn():
    server, conn, rec = await start()
    session = server.sessions[0]
    close = frame(struct.pack("!H", 1001) + b"bye", opcode=8)
    session.send_raw(frame(b'{"a": 1}') + frame(b'{"b": 2}') + close)
    await wait_for(lambda: rec.of(Disconnected))
    assert rec.messages[:2] == [{"a": 1}, {"b": 2}]
    assert rec.of(Disconnected)[0].clean  # the close handshake completed
    await conn.close()
    await server.stop()
