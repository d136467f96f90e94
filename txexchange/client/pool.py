"""Spreading topics over as few connections as the exchange's limits allow.

Sits in the client layer above the transport: each topic goes to the first
connection with room (Binance: 1024 streams per connection), and a new
connection is opened when all are full.  One connection carries many
subscriptions and is shared by every user of them.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, gatherResults, succeed

from txexchange.transport import Connection

__all__ = ["StreamPool"]


class StreamPool:
    """Topics -> connections, opening connections on demand."""

    def __init__(self, factory: Callable[[], Connection], max_topics: int | None) -> None:
        self._factory = factory
        self._max = max_topics
        self.connections: list[Connection] = []
        self._where: dict[str, Connection] = {}
        self._count: dict[int, int] = {}  # id(connection) -> topics on it
        self._retired: set[int] = set()  # ids of connections that gave up

    def __len__(self) -> int:
        return len(self._where)

    def connection_of(self, topic: str) -> Connection | None:
        return self._where.get(topic)

    def topics_of(self, conn: Connection) -> list[str]:
        return [t for t, c in self._where.items() if c is conn]

    def add(self, topic: str) -> Deferred[None]:
        """Subscribe ``topic`` on a connection with room; fires when acknowledged."""
        conn = self._where.get(topic)
        if conn is None:
            conn = self._pick()
            self._where[topic] = conn
            self._count[id(conn)] += 1
        return conn.subscribe([topic])

    def remove(self, topic: str) -> Deferred[None]:
        conn = self._forget(topic)
        if conn is None:
            return succeed(None)
        return conn.unsubscribe([topic])

    def discard(self, topic: str) -> None:
        """Forget ``topic`` without unsubscribing (its connection dropped it already)."""
        self._forget(topic)

    def retire(self, conn: Connection) -> list[str]:
        """Stop using ``conn`` (it gave up reconnecting); returns the topics it held.

        New topics go to other connections; :meth:`close` still closes it.
        """
        self._retired.add(id(conn))
        topics = self.topics_of(conn)
        for topic in topics:
            self._forget(topic)
        return topics

    def _forget(self, topic: str) -> Connection | None:
        conn = self._where.pop(topic, None)
        if conn is not None:
            self._count[id(conn)] -= 1
        return conn

    def _pick(self) -> Connection:
        for conn in self.connections:
            if id(conn) in self._retired:
                continue
            if self._max is None or self._count[id(conn)] < self._max:
                return conn
        conn = self._factory()
        self.connections.append(conn)
        self._count[id(conn)] = 0
        conn.start()
        return conn

    def close(self) -> Deferred[None]:
        """Close every connection (close handshake, timers cancelled)."""
        ds = [c.close() for c in self.connections]
        return gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)
