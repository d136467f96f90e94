"""Fake exchanges on 127.0.0.1 for tests: WebSocket + REST, faults, a test CA.

The test toolkit sits outside the client's data flow, in the exchange's
place: tests (ours and users') run the real client over real loopback
sockets against a :class:`FakeExchangeServer`, push messages and inject
faults through its :class:`FakeSession` objects and its :class:`FakeRest`,
and verify TLS with certificates from a :class:`TestCA`.
"""

from __future__ import annotations

from txexchange.testing.fakes import DEMO_SYMBOLS, fake_exchange
from txexchange.testing.rest import FakeRest, RecordedRequest, Response
from txexchange.testing.server import FakeExchangeServer, FakeSession, ServerStopped
from txexchange.testing.tls import ServerCertificate, TestCA

__all__ = [
    "DEMO_SYMBOLS",
    "FakeExchangeServer",
    "FakeRest",
    "FakeSession",
    "RecordedRequest",
    "Response",
    "ServerCertificate",
    "ServerStopped",
    "TestCA",
    "fake_exchange",
]
