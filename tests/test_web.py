"""The web view without a browser: options, the JSON API over real loopback HTTP, read-only."""

from __future__ import annotations

import re

import pytest
import pytest_twisted
import treq
from twisted.internet.task import Clock
from twisted.python import usage
from web_helpers import start_web, stop_web

from helpers import wait_for
from txexchange.service.config import ConfigError, parse_config
from txexchange.service.web import RateMeter, WebViewService


def parse(*args: str):
    from txexchange.service.tap import Options

    options = Options()
    options.parseOptions(list(args))
    return options["service_config"]


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "listen"),
    [
        ("8080", "tcp:8080:interface=127.0.0.1"),  # a bare port binds loopback
        ("tcp:8080", "tcp:8080:interface=127.0.0.1"),
        ("tcp:0", "tcp:0:interface=127.0.0.1"),
        ("tcp:8080:interface=0.0.0.0", "tcp:8080:interface=0.0.0.0"),  # only when asked
        ("tcp:8080:backlog=5", "tcp:8080:backlog=5:interface=127.0.0.1"),
    ],
)
def test_web_option_binds_loopback_unless_an_interface_is_given(given, listen):
    assert parse("--demo", "--web", given).web == listen


def test_no_web_option_no_web_view():
    from twisted.internet import reactor

    from txexchange.service.tap import build_service

    assert parse("--demo").web is None
    top, _ = build_service(parse("--demo"), reactor)
    assert [s.name for s in top] == ["exchangefeed"]
    top, _ = build_service(parse("--demo", "--web", "0"), reactor)
    assert [s.name for s in top] == ["exchangefeed", "exchangefeed-web"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("unix:/tmp/web.sock", "--web must look like tcp:"),
        ("tcp:99999", "--web: port must be a number 0-65535"),
        ("tcp:8080:iface=lo", "valid keys: port, interface, backlog"),
        ("http", "--web must look like tcp:"),
    ],
)
def test_bad_web_option_fails_before_anything_starts(given, message):
    with pytest.raises(usage.UsageError, match=re.escape(message)):
        parse("--demo", "--web", given)


FEED = '[[feeds]]\nexchange = "binance"\nsymbols = ["BTC/USDT"]\n'


def test_web_listen_in_the_toml_config():
    assert parse_config({"feeds": [], **_feeds(), "web": {"listen": 8081}}).web == (
        "tcp:8081:interface=127.0.0.1"
    )
    assert parse_config({**_feeds(), "web": {"listen": "tcp:8081:interface=0.0.0.0"}}).web == (
        "tcp:8081:interface=0.0.0.0"
    )
    with pytest.raises(ConfigError, match=r"\[web\]: unknown key 'port'; valid keys: listen"):
        parse_config({**_feeds(), "web": {"port": 8081}})


def test_command_line_web_replaces_the_configs(tmp_path):
    path = tmp_path / "feed.toml"
    path.write_text(FEED + '\n[web]\nlisten = "tcp:8081"\n')
    assert parse("--config", str(path)).web == "tcp:8081:interface=127.0.0.1"
    assert parse("--config", str(path), "--web", "9000").web == "tcp:9000:interface=127.0.0.1"


def _feeds() -> dict:
    return {"feeds": [{"exchange": "binance", "symbols": ["BTC/USDT"]}]}


def test_host_check_only_on_loopback():
    loop = WebViewService(object(), "tcp:0:interface=127.0.0.1", reactor=Clock())
    assert loop.site.allowed_hosts == {"127.0.0.1", "localhost", "::1"}
    anywhere = WebViewService(object(), "tcp:0:interface=0.0.0.0", reactor=Clock())
    assert anywhere.site.allowed_hosts is None


def test_rate_meter():
    meter = RateMeter(window=5.0)
    assert meter.rate("binance") is None
    meter.sample(100.0, {"binance": 0})
    assert meter.rate("binance") is None
    meter.sample(101.0, {"binance": 30})
    assert meter.rate("binance") == 30.0
    for t in range(102, 111):
        meter.sample(float(t), {"binance": 30 + 10 * (t - 101)})
    assert meter.rate("binance") == 10.0  # the old burst has left the window
    assert meter.rate("okx") is None


# -- over HTTP ----------------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def web():
    feeds, web = await start_web(rate=50)
    try:
        yield web
    finally:
        await stop_web(feeds, web)


async def get_json(url: str, code: int = 200, **kwargs):
    response = await treq.get(url, **kwargs)
    assert response.code == code, await response.text()
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    return await response.json()


@pytest_twisted.ensureDeferred
async def test_state_shows_every_feed_live(web):
    feeds = web.feeds
    await wait_for(lambda: feeds.books_synced() == (2, 2), what="books synced")
    await wait_for(lambda: web.rates.rate("binance"), timeout=10, what="a message rate")
    state = await get_json(web.url + "api/state")
    assert state["status"] == "ok" and state["books"] == 2 and state["books_synced"] == 2
    (feed,) = state["feeds"]
    assert feed["exchange"] == "binance" and feed["state"] == "open"
    assert [c["state"] for c in feed["connections"]] == ["open"]
    assert feed["reconnects"] == 0 and feed["integrity_failures"] == 0
    assert feed["msg_rate"] > 10, "demo at 50 steps/s"
    assert 0 <= feed["age"] < 5
    assert 0 < feed["messages"] <= feeds.totals()["messages"]
    assert [b["symbol"] for b in feed["books"]] == ["BTC/USDT", "ETH/USDT"]
    assert feed["trades"] == ["BTC/USDT", "ETH/USDT"]
    for row in feed["books"]:
        assert row["synced"] and row["updates"] > 0 and row["age"] is not None
        assert float(row["best_bid"][0]) < float(row["best_ask"][0])
    await wait_for(lambda: feeds.totals()["messages"] > feed["messages"], what="more messages")
    later = await get_json(web.url + "api/state")
    assert later["feeds"][0]["messages"] > feed["messages"], "the numbers move"


@pytest_twisted.ensureDeferred
async def test_book_is_the_exchanges_true_book_at_its_nonce(web):
    fake = web.feeds.fake
    await wait_for(lambda: web.feeds.books_synced() == (2, 2), what="books synced")
    trades = web.feeds.clients["binance"].trades
    await wait_for(lambda: len(trades.get("ETH/USDT", ())) >= 2, what="some ETH trades")
    for _ in range(5):
        book = await get_json(web.url + "api/book?exchange=binance&symbol=ETH/USDT&depth=7")
        assert book["exchange"] == "binance" and book["symbol"] == "ETH/USDT"
        assert book["synced"] and book["stale"] is None
        bids, asks, _ = fake.true_book("ETH/USDT", nonce=book["nonce"], limit=7)
        assert book["bids"] == [list(x) for x in bids]  # the exchange's strings, exactly
        assert book["asks"] == [list(x) for x in asks]
        assert 2 <= len(book["trades"]) <= 20
        ids = [int(t["id"]) for t in book["trades"]]
        assert ids == sorted(ids, reverse=True), "newest trade first"
    default = await get_json(web.url + "api/book?exchange=binance&symbol=BTC/USDT")
    assert len(default["bids"]) == min(50, len(fake.true_book("BTC/USDT")[0]))


@pytest_twisted.ensureDeferred
async def test_integrity_failures_and_reconnects_are_shown(web):
    feeds = web.feeds
    await wait_for(lambda: feeds.books_synced() == (2, 2), what="books synced")
    feeds.fake.skip_next("BTC/USDT")  # a sequence gap: the book is resynced
    await wait_for(lambda: feeds.integrity_failures.get("binance"), what="the gap noticed")
    await wait_for(lambda: feeds.books_synced() == (2, 2), what="resynced after the gap")
    for session in list(feeds.fake.server.sessions):
        session.drop()
    await wait_for(lambda: feeds.totals()["reconnects"] >= 1, timeout=10, what="reconnect")
    await wait_for(lambda: feeds.books_synced() == (2, 2), timeout=10, what="books resynced")
    before = feeds.integrity_failures["binance"], feeds.totals()["reconnects"]
    (feed,) = (await get_json(web.url + "api/state"))["feeds"]
    after = feeds.integrity_failures["binance"], feeds.totals()["reconnects"]
    # the service's own counters (a reconnect may bring another resync of its own)
    assert 1 <= before[0] <= feed["integrity_failures"] <= after[0]
    assert 1 <= before[1] <= feed["reconnects"] <= after[1]


@pytest_twisted.ensureDeferred
async def test_bad_queries_are_answered_clearly(web):
    api = web.url + "api/"
    body = await get_json(api + "book?exchange=binance", 400)
    assert "give both exchange and symbol" in body["error"]
    body = await get_json(api + "book", 400)
    assert "exchange and symbol are required" in body["error"]
    body = await get_json(api + "book?exchange=binance&symbol=BTC/USDT&depth=0", 400)
    assert "depth must be a whole number from 1 to 500" in body["error"]
    body = await get_json(api + "book?exchange=okx&symbol=BTC/USDT", 404)
    assert body["error"] == "no book 'BTC/USDT' on 'okx'"
    body = await get_json(api + "events?exchange=binance&symbol=DOGE/USDT", 404)
    assert body["error"] == "no book 'DOGE/USDT' on 'binance'"
    assert (await get_json(api))["state"] == "/api/state"
    assert (await treq.get(web.url + "nothing")).code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
@pytest_twisted.ensureDeferred
async def test_only_get_is_served(web, method):
    for path in ("", "api/state", "api/book?exchange=binance&symbol=BTC/USDT", "api/events"):
        response = await treq.request(method, web.url + path, data=b"x=1")
        assert response.code == 405, (method, path)
        assert response.headers.getRawHeaders("allow") == ["GET"]
        await response.content()
    assert not web.broadcaster.subscribers
    assert web.feeds.running_feeds


@pytest_twisted.ensureDeferred
async def test_foreign_host_names_are_refused_on_loopback(web):
    port = web.port.getHost().port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        response = await treq.get(web.url + "api/state", headers={"host": host})
        assert response.code == 200, host
        await response.content()
    response = await treq.get(web.url + "api/state", headers={"host": f"attacker.example:{port}"})
    assert response.code == 403
    assert "loopback" in (await response.json())["error"]


@pytest_twisted.ensureDeferred
async def test_the_page_holds_its_own_assets(web):
    response = await treq.get(web.url)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    csp = response.headers.getRawHeaders("content-security-policy")[0]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert response.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    html = await response.text()
    linked = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert set(linked) >= {"/static/app.js", "/static/style.css"}
    assert all(link.startswith("/") for link in linked), linked  # nothing from elsewhere
    types = {
        "app.js": "text/javascript; charset=utf-8",
        "style.css": "text/css; charset=utf-8",
        "favicon.svg": "image/svg+xml",
    }
    for name, content_type in types.items():
        response = await treq.get(web.url + "static/" + name)
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type") == [content_type]
        text = await response.text()
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a link
        assert "http://" not in text and "https://" not in text
