"""The web view's push channel (SSE) over real loopback sockets: updates, coalescing, stop."""

from __future__ import annotations

import socket

import pytest_twisted
from web_helpers import sse_connect, start_web, stop_web

from helpers import sleep, wait_for


@pytest_twisted.ensureDeferred
async def test_stream_sends_the_live_book_several_times_a_second():
    feeds, web = await start_web(interval=0.1)
    try:
        client = await sse_connect(web, "/api/events?exchange=binance&symbol=ETH/USDT&depth=5")
        await wait_for(lambda: len(client.messages) >= 2, what="first messages")
        assert client.status == 200
        assert client.header("content-type").startswith("text/event-stream")
        assert client.header("cache-control") == "no-store"
        start = len(client.messages)
        await sleep(1.0)
        got = client.messages[start:]
        assert len(got) >= 3, "several messages a second"
        books = [m["book"] for m in got]
        assert {b["symbol"] for b in books} == {"ETH/USDT"}
        assert all(len(b["bids"]) == 5 and len(b["asks"]) == 5 for b in books)
        nonces = [b["nonce"] for b in books]
        assert nonces == sorted(nonces) and nonces[-1] > nonces[0], "the book moves"
        feed = got[-1]["state"]["feeds"][0]
        assert feed["exchange"] == "binance" and feed["state"] == "open"
        assert web.broadcaster.subscribers and client.received > 0
        client.transport.loseConnection()
        await client.lost
        await wait_for(lambda: not web.broadcaster.subscribers, what="subscriber gone")
    finally:
        await stop_web(feeds, web)


async def until_stuck(sub, timeout: float = 20.0) -> None:
    """Until ``sub`` is paused and has written nothing for 0.1 s (its pipes are full)."""
    for _ in range(int(timeout / 0.1)):
        before = sub.sent
        await sleep(0.1)
        if sub.paused and sub.sent == before:
            return
    raise AssertionError(f"the stream never stayed paused: {sub}")


@pytest_twisted.ensureDeferred
async def test_a_slow_reader_gets_the_latest_state_never_a_backlog():
    # a fast push channel and a busy book; the reader stops reading after its first messages
    feeds, web = await start_web(rate=100, interval=0.01)
    try:
        client = await sse_connect(web, "/api/events?exchange=binance&symbol=BTC/USDT&depth=200")
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await wait_for(
            lambda: client.messages and client.messages[-1]["book"]["synced"], what="synced book"
        )
        client.transport.pauseProducing()  # stop reading: the kernel buffers fill up
        (sub,) = web.broadcaster.subscribers
        await until_stuck(sub)
        sent, ticks, coalesced = sub.sent, web.broadcaster.ticks, sub.coalesced
        await sleep(0.5)
        assert web.broadcaster.ticks - ticks >= 10
        assert sub.sent == sent, "nothing is written (or queued) for a paused reader"
        assert sub.coalesced - coalesced >= 10, "the states it missed were skipped"
        # what waits in the pipes is bounded by the socket buffers (a kernel left to
        # itself lets megabytes pile up on loopback), not by how long the reader stalls
        assert sub.bytes - client.received < 400_000, (sub.bytes, client.received)
        # read again: what was already in the pipes arrives, then the state as it is now
        now_nonce = feeds.clients["binance"].books["BTC/USDT"].nonce
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.transport.resumeProducing()
        await wait_for(
            lambda: client.messages[-1]["book"]["nonce"] >= now_nonce,
            timeout=20,
            what="the current book after resuming",
        )
        await wait_for(lambda: len(client.messages) == sub.sent, timeout=20, what="all arrives")
        assert sub.sent < web.broadcaster.ticks / 2, "far fewer messages than ticks"
        nonces = [m["book"]["nonce"] for m in client.messages if m["book"]["synced"]]
        assert nonces == sorted(nonces)
        client.transport.loseConnection()
    finally:
        await stop_web(feeds, web)


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_ends_every_stream():
    feeds, web = await start_web()
    clients = [await sse_connect(web, "/api/events") for _ in range(3)]
    await wait_for(lambda: all(c.messages for c in clients), what="messages")
    await web.stopService()
    for c in clients:
        await c.lost
    assert not web.broadcaster.subscribers
    assert all(c.messages[0]["book"]["symbol"] == "BTC/USDT" for c in clients)  # the default
    await feeds.stopService()
