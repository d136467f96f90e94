"""Shared fixtures: a test CA and a running fake exchange (real reactor, 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_twisted

from txexchange.testing import FakeExchangeServer, TestCA


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    """One throw-away certificate authority for the whole test session."""
    return TestCA.generate()


@pytest_twisted.async_yield_fixture
async def fake_exchange() -> AsyncIterator[FakeExchangeServer]:
    """A started plain-text :class:`FakeExchangeServer` (``/ws``), stopped afterwards."""
    from twisted.internet import reactor

    server = await FakeExchangeServer(reactor=reactor).start()
    try:
        yield server
    finally:
        await server.stop()
