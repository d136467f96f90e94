"""Small async helpers shared by the tests (real reactor, loopback only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``predicate`` every 5 ms until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await sleep(0.005)


class Recorder:
    """Collects messages and status events from a Connection."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.events: list[Any] = []

    def on_message(self, obj: Any) -> None:
        self.messages.append(obj)

    def on_status(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def client_delayed_calls() -> list[Any]:
    """Delayed calls in the reactor that belong to the client side of a connection.

    Autobahn's batched timers are shared with the fake servers, so only calls
    made by txexchange itself or bound to the client protocol/factory count.
    """
    from txexchange.transport.websocket import FeedFactory, FeedProtocol

    found = []
    for call in reactor.getDelayedCalls():
        module = getattr(call.func, "__module__", "") or ""
        owner = getattr(call.func, "__self__", None)
        if module.startswith(
            ("txexchange.transport", "txexchange.client", "txexchange.delivery")
        ) or isinstance(owner, FeedProtocol | FeedFactory):
            found.append(call)
    return found
