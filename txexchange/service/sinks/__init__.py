"""Sinks: where the service writes what the feeds deliver.

Sits at the end of the flow; a sink is an observer.  Every sink writes the
same records (:func:`record_for`) behind the same bounded, coalescing queue
(:class:`Sink`): JSON lines files (:class:`JsonLinesSink`), SQLite
(:class:`SqliteSink`) and Redis Streams (:class:`RedisStreamSink`).
:func:`make_sink` builds one from a parsed sink URI.
"""

from __future__ import annotations

from typing import Any

from txexchange.service.config import SinkSpec
from txexchange.service.sinks.base import RECORD_TYPES, Sink, record_for
from txexchange.service.sinks.jsonl import JsonLinesSink
from txexchange.service.sinks.redis import RedisStreamSink, stream_key
from txexchange.service.sinks.sqlite import SqliteSink

__all__ = [
    "RECORD_TYPES",
    "JsonLinesSink",
    "RedisStreamSink",
    "Sink",
    "SqliteSink",
    "make_sink",
    "record_for",
    "stream_key",
]


def make_sink(spec: SinkSpec, depth: int, reactor: Any = None) -> Sink:
    """The sink a :class:`~txexchange.service.config.SinkSpec` describes."""
    params = dict(spec.params)
    depth = params.pop("depth", depth)
    if spec.kind == "jsonl":
        return JsonLinesSink(spec.target, depth, clock=reactor, **params)
    if spec.kind == "sqlite":
        return SqliteSink(spec.target, depth, reactor=reactor, **params)
    host, port, db, password = spec.target
    return RedisStreamSink(host, port, db, depth, password=password, reactor=reactor, **params)
