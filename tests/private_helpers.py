"""What the private API tests of every exchange share: a shifted exchange clock,
a log capture that must never see a secret, and balance checks against a fake's ledger."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher


class ShiftedClock:
    """The reactor's clock, ``offset`` seconds ahead (an exchange whose clock differs)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def seconds(self) -> float:
        return reactor.seconds() + self.offset

    def callLater(self, *a: Any, **kw: Any) -> Any:
        return reactor.callLater(*a, **kw)

    def getDelayedCalls(self) -> list[Any]:
        return reactor.getDelayedCalls()


class Logs:
    """Every log event while active: formatted text and the raw fields."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")
        self.lines.append(repr(event))


@contextmanager
def logs_without(**secrets: str) -> Iterator[Logs]:
    """Capture the log; afterwards none of ``secrets`` (name=value) may be in it."""
    capture = Logs()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)
    text = "\n".join(capture.lines)
    for name, value in secrets.items():
        assert value not in text, f"the {name} reached the log"


def best(fake: Any, symbol: str, side: str) -> Decimal:
    """The fake market's best ``"ask"`` or bid price of ``symbol``."""
    bids, asks, _ = fake.market.book(symbol, 1)
    return Decimal((asks if side == "ask" else bids)[0][0])


def dec(text: str | None) -> Decimal:
    assert text is not None
    return Decimal(text)


def assert_balances_true(balance: dict[str, Any], fake: Any, key: str) -> None:
    """The client's ccxt balance equals the fake ledger's account of ``key``."""
    for currency, (free, locked) in fake.ledger.account(key).items():
        if free == 0 and locked == 0:
            assert currency not in balance or dec(balance[currency]["total"]) == 0
            continue
        assert dec(balance[currency]["free"]) == free, currency
        assert dec(balance[currency]["used"]) == locked, currency
