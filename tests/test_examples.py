"""The examples run end to end (offline, against the built-in fake Binance)."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str, timeout: float = 60) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_crawler_writes_top_ten_levels_per_update(tmp_path):
    out = tmp_path / "book.jsonl"
    stdout = run(str(EXAMPLES / "crawler.py"), str(out), "--seconds", "2")
    lines = out.read_text().splitlines()
    assert f"wrote {len(lines)} lines" in stdout
    assert len(lines) > 10
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"bids", "asks", "ts"}
        assert 0 < len(record["bids"]) <= 10 and 0 < len(record["asks"]) <= 10
        prices = [Decimal(p) for p, _ in record["bids"]]
        assert prices == sorted(prices, reverse=True)
        asks = [Decimal(p) for p, _ in record["asks"]]
        assert asks == sorted(asks) and asks[0] > prices[0]
        assert all(isinstance(p, str) and isinstance(a, str) for p, a in record["bids"])
        assert isinstance(record["ts"], int) and record["ts"] > 1_600_000_000_000


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        ("pull_order_book.py", "second call already fired: True"),
        ("push_observer.py", "(snapshot)"),
        ("async_for.py", "#20 nonce="),
        ("binance_private.py", "BTC free: 0.01000000 USDT used: 0.00000000"),
        ("bybit_private.py", "filled by push: 0.01 @"),
    ],
)
def test_example_runs(script, expect):
    assert expect in run(str(EXAMPLES / script))


from txexchange._registry import SUPPORTED  # noqa: E402


@pytest.mark.parametrize("name", SUPPORTED)
def test_the_same_example_runs_against_every_exchange(name):
    out = run(str(EXAMPLES / "any_exchange.py"), name, timeout=90)
    for what in ("book: bid", "next book: bid", "last trades:", "ticker: last"):
        assert f"{name} " in out and what in out, out


def test_okx_private_example_runs_against_the_fake():
    out = run(str(EXAMPLES / "okx_private.py"))
    for what in ("balance:", "placed ", "filled by push: 0.25 @", "cancel_all_orders: 3 canceled"):
        assert what in out, out
