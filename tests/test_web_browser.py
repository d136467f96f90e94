"""The web view in a real browser: ``twistd exchangefeed --demo --web`` and headless Chromium.

Runs the service as the README does (a twistd child with the simulated
exchange), opens the page in Debian's Chromium driven by Playwright (never a
downloaded browser), waits for the depth chart and the feed table to show live
data, checks that they move and agree with the JSON API, and saves a
screenshot to ``test-artifacts/web-view.png``.  In CI (``CI`` set, as
``.ci/run`` does after installing Chromium) a missing browser is a failure;
elsewhere (a fresh machine with only Python) the test is skipped and says what
to install, like the Redis sink's test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
#: what Chromium needs here: headless as root, and no background traffic to the outside
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: everything the test compares, read from the page in one go
READ_PAGE = """() => {
  const canvas = document.getElementById("depth-chart");
  const cells = (sel) => [...document.querySelectorAll(sel)].map(
      (tr) => [...tr.cells].map((c) => c.textContent));
  return {
    nonce: canvas.dataset.nonce,
    levels: Number(canvas.dataset.levels),
    bestBid: canvas.dataset.bestBid,
    bestAsk: canvas.dataset.bestAsk,
    info: document.getElementById("book-info").textContent,
    status: document.getElementById("status").textContent,
    link: document.getElementById("link").dataset.link,
    feeds: cells("#feeds tbody tr"),
    books: cells("#books tbody tr"),
    bids: cells("#bids tbody tr"),
    asks: cells("#asks tbody tr"),
    trades: [...document.querySelectorAll("#trades tbody tr")].map((tr) => tr.dataset.id),
    nodes: document.getElementsByTagName("*").length,
  };
}"""


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def exchangefeed(tmp_path):
    """``twistd -n exchangefeed --demo --web tcp:0`` running; yields the page's URL."""
    log = tmp_path / "twistd.log"
    argv = [
        sys.executable, TWISTD, "-n", "--pidfile=", "exchangefeed", "--demo",
        "--channels", "book,trades", "--web", "tcp:0",
        "--out", str(tmp_path / "feed.jsonl"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with log.open("wb") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=env, cwd=tmp_path)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"web view on (http://127\.0\.0\.1:\d+/)", log.read_text())):
            assert child.poll() is None, "twistd exited:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no web view:\n" + log.read_text()[-3000:]
            time.sleep(0.1)
        yield found.group(1)
        child.send_signal(signal.SIGTERM)
        assert child.wait(15) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert "exchangefeed stopped cleanly" in log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        message = (
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium) "
            "or point the CHROMIUM environment variable at one"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    errors: list[str] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile each run
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 820},
        )
        try:
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else 0,
            )
            page.errors = errors
            yield page
        finally:
            context.close()
    assert not errors, errors


def live(page, timeout: float = 20_000) -> None:
    """Until the chart shows a synced book and the feed table an open, counting feed."""
    page.wait_for_function(
        """() => {
          const c = document.getElementById("depth-chart");
          const row = document.querySelector("#feeds tbody tr");
          return c.dataset.nonce && Number(c.dataset.levels) > 0 && row
              && row.cells[1].textContent === "open" && Number(row.cells[3].textContent) > 0;
        }""",
        timeout=timeout,
    )


def matches_json(page, base: str, symbol: str) -> dict[str, Any]:
    """Reads the page until it shows the same book update as the JSON API; compares them."""
    query = f"api/book?exchange=binance&symbol={symbol}&depth=50"
    for _ in range(100):
        shown = page.evaluate(READ_PAGE)
        book = get_json(base + query)
        if shown["nonce"] == str(book["nonce"]):
            break
        page.wait_for_timeout(50)
    else:
        raise AssertionError(f"the page never showed the API's book: {shown} vs {book}")
    assert shown["info"].startswith(f"binance {symbol} · nonce {book['nonce']}")
    assert shown["bestBid"] == book["bids"][0][0] and shown["bestAsk"] == book["asks"][0][0]
    n = len(shown["bids"])
    assert n == min(12, len(book["bids"])) and len(shown["asks"]) == min(12, len(book["asks"]))
    # the tables show the exchange's strings exactly: bids as total, amount, price
    assert [[r[2], r[1]] for r in shown["bids"]] == book["bids"][:n]
    assert [[r[0], r[1]] for r in shown["asks"]] == book["asks"][: len(shown["asks"])]
    total = sum(float(a) for _, a in book["bids"][:n])
    assert float(shown["bids"][-1][0]) == pytest.approx(total, rel=1e-5)
    assert shown["levels"] == len(book["bids"]) + len(book["asks"])  # the chart draws all 50
    if book["trades"] and shown["trades"]:
        ids = [t["id"] for t in book["trades"]]
        assert shown["trades"][0] in ids[:3], (shown["trades"][:3], ids[:3])
    return shown


def test_live_view_in_chromium(exchangefeed, page):
    base = exchangefeed
    page.goto(base)
    live(page)
    first = page.evaluate(READ_PAGE)
    assert first["status"] == "ok" and first["link"] == "live"
    assert [r[:2] for r in first["feeds"]] == [["binance", "open"]]
    assert [r[1] for r in first["books"]] == ["BTC/USDT", "ETH/USDT"]
    assert all(r[2] == "synced" for r in first["books"])

    # the page moves with the market
    page.wait_for_function(
        """(n) => document.getElementById("depth-chart").dataset.nonce !== n
              && Number(document.querySelector("#feeds tbody tr").cells[3].textContent) > 0""",
        arg=first["nonce"],
        timeout=20_000,
    )
    later = page.evaluate(READ_PAGE)
    assert int(later["nonce"]) > int(first["nonce"])
    assert int(later["feeds"][0][3]) > int(first["feeds"][0][3]), "messages counted"

    # ... and agrees with the JSON API
    matches_json(page, base, "BTC/USDT")
    state = get_json(base + "api/state")
    (feed,) = state["feeds"]
    shown = page.evaluate(READ_PAGE)
    row = shown["feeds"][0]
    assert row[0] == feed["exchange"] and row[1] == feed["state"]
    assert int(row[3]) <= feed["messages"]
    assert row[4] == str(feed["reconnects"]) and row[5] == str(feed["integrity_failures"])
    assert row[7] == f"{state['books_synced']}/{state['books']}"

    # the DOM stays bounded while updates keep coming (rows are reused, not added):
    # only the trades list grows, a row (tr + 4 td) a trade, up to 20 rows
    page.wait_for_function(
        "() => document.querySelectorAll('#trades tbody tr').length > 0", timeout=30_000
    )
    before = page.evaluate(READ_PAGE)
    page.wait_for_timeout(3000)
    after = page.evaluate(READ_PAGE)
    assert after["nonce"] != before["nonce"]
    assert len(after["trades"]) <= 20
    assert after["nodes"] - 5 * len(after["trades"]) == before["nodes"] - 5 * len(before["trades"])

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-view.png"))

    # choosing another book switches the chart, the levels and the trades
    page.select_option("#book-select", "binance ETH/USDT")
    page.wait_for_function(
        "() => document.getElementById('book-info').textContent.startsWith('binance ETH/USDT')",
        timeout=10_000,
    )
    live(page)
    eth = matches_json(page, base, "ETH/USDT")
    assert float(eth["bestBid"]) < float(first["bestBid"])  # the demo's ETH trades lower
    assert page.errors == []


def test_example_reads_the_json_api(exchangefeed):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "web_state.py"), exchangefeed,
         "--count", "3", "--interval", "0.5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("status ok: 2/2 books synced") for line in lines) >= 2, lines
    assert sum("binance: open," in line for line in lines) == 3
    books = [re.match(r"    BTC/USDT #(\d+): (\S+) x \S+ / (\S+) x", line) for line in lines]
    found = [m for m in books if m]
    assert len(found) >= 2 and int(found[-1][1]) > int(found[0][1]), "the book moves"
    assert all(float(m[2]) < float(m[3]) for m in found)
