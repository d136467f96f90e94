"""A loopback fake Binance for benchmarks, run as its own process.

Serves ``GET /api/v3/exchangeInfo`` and ``GET /api/v3/depth`` (with Binance's
REST weights, ``X-MBX-USED-WEIGHT-1M`` and a 429 past the per-minute budget),
and WebSocket market streams on ``/stream?streams=...`` (combined, events
wrapped as ``{"stream", "data"}``) and ``/ws`` (raw events), both accepting
``SUBSCRIBE`` requests, over ws:// or wss:// (a certificate from a fresh
:class:`~txexchange.testing.tls.TestCA`, whose PEM is written to ``--ca-file``
for the clients to trust).

Once every symbol is subscribed it sends one diff per symbol (so clients that
fetch the snapshot on the first diff do so), waits until every symbol's
snapshot was fetched, then sends the rest of the seeded sequence
(:mod:`feed_data`) as fast as the socket takes it (``--rate 0``: all frames
pre-built, written in large chunks) or at a fixed rate with the send time
written into each event's ``E`` field (µs since the epoch).

Protocol on stdout (one JSON object a line): ``{"ready": port}`` once
listening, then ``{"done": ..., "hash": ...}`` when every message is sent
(``hash``: :func:`feed_data.book_hash` of the true final books), then at exit
``{"stats": ...}``.  Stops when the orchestrator closes its stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import ssl
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from feed_data import E_OFFSET, Market, flood_data, market_ids

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHUNK = 256 * 1024


def depth_weight(limit: int) -> int:
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def frame_header(n: int) -> bytes:
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Session:
    """One WebSocket connection: the symbols it subscribed and how to wrap events."""

    def __init__(self, writer: asyncio.StreamWriter, combined: bool) -> None:
        self.writer = writer
        self.combined = combined
        self.symbols: set[int] = set()
        self.closed = False

    def wrap(self, sid: str, event: bytes) -> tuple[bytes, int]:
        """The frame for ``event`` and the offset of its ``E`` digits in the frame."""
        if self.combined:
            prefix = b'{"stream":"' + sid.lower().encode() + b'@depth@100ms","data":'
            payload = prefix + event + b"}"
            offset = len(prefix) + E_OFFSET
        else:
            payload = event
            offset = E_OFFSET
        header = frame_header(len(payload))
        return header + payload, len(header) + offset


class FakeBinance:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ids = market_ids(args.symbols)
        self.by_id = {m: i for i, m in enumerate(self.ids)}
        self.by_stream = {m.lower() + "@depth@100ms": i for i, m in enumerate(self.ids)}
        self.sessions: list[Session] = []
        self.subscribed: set[int] = set()
        self.snapshotted: set[int] = set()
        self.all_subscribed = asyncio.Event()
        self.all_snapshotted = asyncio.Event()
        self.weight_window = 0.0
        self.weight_used = 0
        self.stats = {"rest_requests": 0, "depth_requests": 0, "http_429": 0, "ws_sessions": 0}
        if args.rate:
            self.market: Market | None = Market(args.symbols, args.levels, args.changes, args.seed)
            self.snapshots = [self.market.snapshot(s, 5000) for s in range(args.symbols)]
            self.owners: list[int] = []
            self.events: list[bytes] = []
            self.final_hash = ""
        else:
            self.market = None
            self.snapshots, self.owners, self.events, self.final_hash = flood_data(
                args.symbols, args.levels, args.changes, args.messages, args.seed
            )
        self.snapshot_json = [orjson.dumps(s) for s in self.snapshots]

    # -- HTTP ------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                if headers.get("upgrade", "").lower() == "websocket":
                    await self.websocket(reader, writer, target, headers)
                    return
                await self.rest(writer, method, target)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def rest(self, writer: asyncio.StreamWriter, method: str, target: str) -> None:
        self.stats["rest_requests"] += 1
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        extra = b""
        if parts.path == "/api/v3/exchangeInfo":
            status, body = 200, self.exchange_info()
        elif parts.path == "/api/v3/depth":
            self.stats["depth_requests"] += 1
            limit = int(query.get("limit", "100"))
            now = time.monotonic()
            if now - self.weight_window >= self.args.weight_window:
                self.weight_window = now
                self.weight_used = 0
            weight = depth_weight(limit)
            sid = self.by_id.get(query.get("symbol", ""))
            if self.weight_used + weight > self.args.weight_limit:
                self.stats["http_429"] += 1
                status, body = 429, b'{"code":-1003,"msg":"Too many requests."}'
                extra = b"Retry-After: 5\r\n"
            elif sid is None:
                status, body = 400, b'{"code":-1121,"msg":"Invalid symbol."}'
            else:
                self.weight_used += weight
                status = 200
                snap = self.snapshots[sid]
                if limit >= len(snap["bids"]) and limit >= len(snap["asks"]):  # type: ignore[arg-type]
                    body = self.snapshot_json[sid]
                else:
                    body = orjson.dumps({
                        "lastUpdateId": snap["lastUpdateId"],
                        "bids": snap["bids"][:limit],  # type: ignore[index]
                        "asks": snap["asks"][:limit],  # type: ignore[index]
                    })  # fmt: skip
                self.snapshotted.add(sid)
                if len(self.snapshotted) == len(self.ids):
                    self.all_snapshotted.set()
            extra += f"X-MBX-USED-WEIGHT-1M: {self.weight_used}\r\n".encode()
        elif parts.path in ("/api/v3/ping", "/api/v3/time"):
            status, body = 200, orjson.dumps({"serverTime": int(time.time() * 1000)})
        else:
            status, body = 404, b'{"code":-1,"msg":"not here"}'
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}
        writer.write(
            f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n".encode()
            + extra
            + b"\r\n"
            + body
        )
        await writer.drain()

    def exchange_info(self) -> bytes:
        symbols = []
        for m in self.ids:
            symbols.append({
                "symbol": m, "status": "TRADING", "baseAsset": m[:-4], "quoteAsset": "USDT",
                "baseAssetPrecision": 8, "quoteAssetPrecision": 8, "quotePrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "icebergAllowed": True, "ocoAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
                     "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
                    {"filterType": "LOT_SIZE", "minQty": "0.00000001",
                     "maxQty": "9000.00000000", "stepSize": "0.00000001"},
                ],
            })  # fmt: skip
        return orjson.dumps({
            "timezone": "UTC", "serverTime": int(time.time() * 1000),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": self.args.weight_limit}],
            "exchangeFilters": [], "symbols": symbols,
        })  # fmt: skip

    # -- WebSocket -------------------------------------------------------------

    async def websocket(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: str,
        headers: dict[str, str],
    ) -> None:
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        parts = urlsplit(target)
        session = Session(writer, combined=parts.path.startswith("/stream"))
        self.sessions.append(session)
        self.stats["ws_sessions"] += 1
        streams = parse_qs(parts.query).get("streams")
        if streams:
            self.add_streams(session, streams[0].split("/"))
        try:
            await self.read_frames(reader, session)
        finally:
            session.closed = True

    def add_streams(self, session: Session, names: list[str]) -> None:
        for name in names:
            sid = self.by_stream.get(name)
            if sid is not None:
                session.symbols.add(sid)
                self.subscribed.add(sid)
        if len(self.subscribed) == len(self.ids):
            self.all_subscribed.set()

    async def read_frames(self, reader: asyncio.StreamReader, session: Session) -> None:
        writer = session.writer
        while True:
            b0, b1 = await reader.readexactly(2)
            opcode = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytearray(await reader.readexactly(n))
            for i in range(n):
                data[i] ^= mask[i & 3]
            if opcode == 1:
                msg = orjson.loads(data)
                if msg.get("method") == "SUBSCRIBE":
                    self.add_streams(session, msg.get("params") or [])
                reply = orjson.dumps({"result": None, "id": msg.get("id")})
                writer.write(frame_header(len(reply)) + reply)
            elif opcode == 9:
                writer.write(bytes((0x8A, n)) + bytes(data))
            elif opcode == 8:
                session.closed = True
                writer.write(bytes((0x88, n)) + bytes(data))
                await writer.drain()
                return

    # -- sending -----------------------------------------------------------------

    async def run(self) -> None:
        await self.all_subscribed.wait()
        # one diff per symbol first: some clients fetch the snapshot on the first diff
        sessions = [s for s in self.sessions if s.symbols and not s.closed]
        owner = {sid: s for s in sessions for sid in s.symbols}
        prime = len(self.ids)
        events = self.events
        market = self.market
        if market is not None:
            for _ in range(prime):
                sid, event = market.step()
                self.owners.append(sid)
                events.append(event)
        for i in range(prime):
            sid = self.owners[i]
            frame, _ = owner[sid].wrap(self.ids[sid], events[i])
            owner[sid].writer.write(frame)
        try:
            await asyncio.wait_for(self.all_snapshotted.wait(), self.args.snapshot_timeout)
        except TimeoutError:
            emit({"warning": f"only {len(self.snapshotted)} snapshots fetched"})
        await asyncio.sleep(0.2)
        start = time.perf_counter()
        if market is None:
            await asyncio.gather(*(self.flood(s, prime) for s in sessions))
            sent = len(events) - prime
        else:
            sent = await self.paced(owner, market)
            self.final_hash = market.final_hash()
        elapsed = time.perf_counter() - start
        emit({"done": sent, "seconds": elapsed, "hash": self.final_hash})

    async def flood(self, session: Session, start: int) -> None:
        ids = self.ids
        mine = session.symbols
        chunk: list[bytes] = []
        size = 0
        writer = session.writer
        for sid, event in zip(self.owners[start:], self.events[start:], strict=True):
            if sid not in mine:
                continue
            frame, _ = session.wrap(ids[sid], event)
            chunk.append(frame)
            size += len(frame)
            if size >= _CHUNK:
                writer.write(b"".join(chunk))
                chunk.clear()
                size = 0
                await writer.drain()
        if chunk:
            writer.write(b"".join(chunk))
        await writer.drain()

    async def paced(self, owner: dict[int, Session], market: Market) -> int:
        rate = self.args.rate
        total = self.args.messages - len(self.ids)
        ids = self.ids
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            due = t0 + sent / rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            sid, event = market.step()
            session = owner[sid]
            frame, offset = session.wrap(ids[sid], event)
            stamped = bytearray(frame)
            stamped[offset : offset + 16] = b"%16d" % (time.time_ns() // 1000)
            session.writer.write(stamped)
            sent += 1
            if not sent % 256:
                await session.writer.drain()
        for session in set(owner.values()):
            await session.writer.drain()
        return sent


async def main_async(args: argparse.Namespace) -> None:
    fake = FakeBinance(args)
    context = None
    if args.tls:
        from txexchange.testing.tls import TestCA

        ca = TestCA.generate("txexchange bench CA")
        cert = ca.issue()
        tmp = Path(tempfile.mkdtemp(prefix="txexchange-bench-tls-"))
        (tmp / "cert.pem").write_bytes(cert.cert_pem)
        (tmp / "key.pem").write_bytes(cert.key_pem)
        Path(args.ca_file).write_bytes(ca.ca_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    server = await asyncio.start_server(fake.handle, "127.0.0.1", args.port, ssl=context)
    port = server.sockets[0].getsockname()[1]
    emit({"ready": port})
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    runner = asyncio.ensure_future(fake.run())
    await asyncio.wait([runner, stdin_closed], return_when=asyncio.FIRST_COMPLETED)
    if runner.done() and runner.exception() is not None:
        emit({"error": repr(runner.exception())})
    await stdin_closed
    emit({"stats": fake.stats})
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-file", default="")
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--levels", type=int, default=100)
    p.add_argument("--changes", type=int, default=10)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0, help="messages/s (0: as fast as possible)")
    p.add_argument("--weight-limit", type=int, default=6000)
    p.add_argument("--weight-window", type=float, default=60.0)
    p.add_argument("--snapshot-timeout", type=float, default=60.0)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
