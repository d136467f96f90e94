"""The Redis Streams sink: ``XADD key MAXLEN ~ N * data JSON`` per record, pipelined.

Sits at the end of the flow.  Each record goes to the stream
``PREFIX:EXCHANGE:TYPE:SYMBOL`` (e.g. ``txexchange:binance:book:BTC/USDT``;
types: book, trade, ticker, ohlcv) as one field, ``data``, holding the same
JSON document the JSON lines sink writes.  ``MAXLEN ~`` keeps each stream
near ``maxlen`` entries at little cost to Redis.  A batch is one pipelined
write; while it is answered, records queue (coalesced and bounded).  The
connection is kept by :class:`~twisted.application.internet.ClientService`
(reconnects with backoff); while Redis is away, batches fail and are counted
as dropped rather than held in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.logger import Logger

from txexchange.codec import dumps
from txexchange.errors import ConnectionClosed
from txexchange.service.sinks.base import Sink
from txexchange.service.sinks.resp import RedisProtocol

__all__ = ["RedisStreamSink", "stream_key"]

log = Logger()


def stream_key(prefix: str, record: dict[str, Any]) -> str:
    """The stream a record goes to: ``PREFIX:EXCHANGE:TYPE:SYMBOL``."""
    return f"{prefix}:{record['exchange']}:{record['type']}:{record['symbol']}"


class RedisStreamSink(Sink):
    """XADDs records to Redis Streams on ``host:port`` database ``db``."""

    kind = "redis"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        depth: int = 10,
        *,
        password: str | None = None,
        maxlen: int = 100_000,
        prefix: str = "txexchange",
        batch: int = 1000,
        queue: int = 10_000,
        reactor: Any = None,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(depth=depth, queue=queue, batch=batch)
        self.host = host
        self.port = port
        self.db = db
        self.maxlen = maxlen
        self.prefix = prefix
        self._password = password
        self._reactor = reactor
        self._connect_timeout = connect_timeout
        self._service: Any = None
        self._proto: RedisProtocol | None = None

    @property
    def name(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    async def _open(self) -> None:
        from twisted.application.internet import ClientService
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.protocol import Factory
        from twisted.internet.task import deferLater

        sink = self

        class _Protocol(RedisProtocol):
            def use(self) -> None:
                sink._proto = self

            def connectionLost(self, reason: Any = None) -> None:
                if sink._proto is self:
                    sink._proto = None
                    log.warn("{sink}: connection lost; reconnecting", sink=sink.name)
                super().connectionLost(reason)

        def prepare(proto: RedisProtocol) -> Deferred[Any]:
            # AUTH and SELECT on every (re)connection, before any command of ours
            commands: list[tuple[Any, ...]] = [("PING",)]
            if sink._password:
                commands.insert(0, ("AUTH", sink._password))
            if sink.db:
                commands.append(("SELECT", sink.db))
            ds = proto.pipeline(commands)
            d = DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)

            def ready(_: Any) -> None:
                # ``proto`` is ClientService's proxy; keep the protocol itself
                proto.use()  # type: ignore[attr-defined]

            return d.addCallback(ready)

        endpoint = TCP4ClientEndpoint(
            self.reactor, self.host, self.port, timeout=self._connect_timeout
        )
        service = ClientService(
            endpoint,
            Factory.forProtocol(_Protocol),
            clock=self.reactor,
            prepareConnection=prepare,
        )
        self._service = service
        service.startService()
        try:
            await service.whenConnected(failAfterFailures=1)
        except Exception as e:  # noqa: BLE001 - any failure to connect is reported
            self._service = None
            # not from inside ClientService's own callback: it is not reentrant
            await deferLater(self.reactor, 0, service.stopService)
            reason = getattr(e, "subFailure", None)
            why = reason.value if reason is not None else e
            raise ConnectionError(f"{self.name}: cannot connect: {why}") from None

    def _write_batch(self, batch: list[dict[str, Any]]) -> Deferred[Any]:
        proto = self._proto
        if proto is None:
            return fail(ConnectionClosed(f"{self.name}: not connected"))
        commands = [
            ("XADD", stream_key(self.prefix, r), "MAXLEN", "~", self.maxlen, "*", "data", dumps(r))
            for r in batch
        ]
        return DeferredList(proto.pipeline(commands), fireOnOneErrback=True, consumeErrors=True)

    def _close(self) -> Any:
        if self._service is not None:
            service, self._service = self._service, None
            self._proto = None
            return service.stopService()
        return None
