"""The service layer: feeds run as a Twisted service, writing to sinks.

Bottom of the flow: :class:`FeedService` subscribes observers (the sinks) to a
client's streams; ``twistd -n exchangefeed`` runs it (see
:mod:`txexchange.service.tap`).  It is also usable from Python as a child of an
application's own ``MultiService``.
"""

from __future__ import annotations

from txexchange.service.feed import FeedService, FeedSpec
from txexchange.service.sinks import JsonLinesSink

__all__ = ["FeedService", "FeedSpec", "JsonLinesSink"]
