"""The delivery layer: how state reaches users, by pull and by push.

Sits below the state layer in the flow: the client applies events to state,
then publishes here; observers, ``watch_*`` Deferreds, async iterators and
readiness waiters are served from the :class:`Hub`.
"""

from __future__ import annotations

from txexchange.delivery.events import BookResyncing, BookSynced, BookUpdate, StreamFailed
from txexchange.delivery.hub import Hub, ObserverHandle, UpdateStream

__all__ = [
    "BookResyncing",
    "BookSynced",
    "BookUpdate",
    "Hub",
    "ObserverHandle",
    "StreamFailed",
    "UpdateStream",
]
