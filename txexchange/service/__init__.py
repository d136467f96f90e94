"""The service layer: feeds run as a Twisted service, writing to sinks.

Bottom of the flow: :class:`FeedService` subscribes observers to clients'
streams and hands their records to the sinks (:mod:`txexchange.service.sinks`:
JSON lines, SQLite, Redis Streams), :mod:`txexchange.service.metrics` serves
Prometheus metrics and ``/health``, and :mod:`txexchange.service.config`
validates the TOML configuration and options.  ``twistd -n exchangefeed``
runs it (see :mod:`txexchange.service.tap`); it is also usable from Python as
a child of an application's own ``MultiService``.  It can record what it
receives (:mod:`txexchange.service.recording`) and replay a recording without
a network (:class:`ReplayFeedService`).
"""

from __future__ import annotations

from txexchange.service.config import ConfigError, FeedSpec, ServiceConfig, Shard, SinkSpec
from txexchange.service.feed import FeedService
from txexchange.service.recording import RecordingError
from txexchange.service.replay import ReplayFeedService
from txexchange.service.sinks import JsonLinesSink, RedisStreamSink, Sink, SqliteSink

__all__ = [
    "ConfigError",
    "FeedService",
    "FeedSpec",
    "JsonLinesSink",
    "RecordingError",
    "RedisStreamSink",
    "ReplayFeedService",
    "ServiceConfig",
    "Shard",
    "Sink",
    "SinkSpec",
    "SqliteSink",
]
