"""Security checks: TLS cannot be skipped by accident, secrets never leak, caps hold.

* TLS: no option of ``exchange()`` or :class:`TransportOptions` turns
  verification off; every exchange's client refuses a server whose certificate
  does not chain to a trusted root, over WebSocket and REST, with
  :class:`TLSVerificationError`; a trusted certificate for another host name
  is refused too; odd ``trust_root`` values never yield an unverified context.
* Secrets: the Binance user stream runs with a known secret (subscribe,
  events, a drop and re-subscribe, a refused wrong secret) while every log
  event is captured; the logs, reprs, errors, stats and what the frame tap
  (the recorder's source) sees are scanned for the secret in every encoding
  it could be written in.
* Caps against a hostile server: oversized frames, floods of garbage and of
  unsolicited subscribe replies leave the client running, its memory flat and
  its books true.
"""

from __future__ import annotations

import base64
import gc
from typing import Any
from urllib.parse import quote

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher

import txexchange
from helpers import sleep, wait_for
from txexchange.client.binance_user import BinanceUserStream
from txexchange.errors import AuthenticationError, BadRequest, ExchangeError, TLSVerificationError
from txexchange.testing import DEMO_SYMBOLS, TestCA, fake_exchange
from txexchange.testing.binance import FakeBinance, execution_report_event
from txexchange.testing.soak import library_objects
from txexchange.transport import FrameRejected, TransportOptions

FAST = TransportOptions(initial_delay=0.05, max_delay=0.2, jitter=0.1, close_timeout=1.0)
EXCHANGES = sorted(DEMO_SYMBOLS)


class LogCapture:
    """Every log event while active, at every level: formatted, raw fields, tracebacks."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")
        self.lines.append(repr(event))
        failure = event.get("log_failure")
        if failure is not None:
            self.lines.append(failure.getTraceback())

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        globalLogPublisher.removeObserver(self)

    def text(self) -> str:
        return "\n".join(self.lines)


# -- TLS ------------------------------------------------------------------------------


def test_no_option_turns_tls_verification_off():
    names = {f.name for f in attrs.fields(TransportOptions)}
    suspicious = {n for n in names if any(w in n for w in ("verif", "insecure", "ssl", "cert"))}
    assert suspicious == set(), suspicious
    for option in ("verify", "insecure", "ssl", "verify_ssl", "check_hostname", "tls"):
        with pytest.raises(BadRequest, match="unknown option"):
            txexchange.exchange("binance", **{option: False})


async def _tls_fake(name: str, cert: Any) -> Any:
    fake = fake_exchange(name, reactor=reactor, tls=cert)
    await fake.start()
    fake.run(rate=50)
    return fake


@pytest.mark.parametrize("name", EXCHANGES)
@pytest_twisted.ensureDeferred
async def test_untrusted_certificate_fails_typed_over_rest_and_websocket(name):
    ca = TestCA.generate()
    fake = await _tls_fake(name, ca.issue())
    symbol = DEMO_SYMBOLS[name][0]
    trusted = txexchange.exchange(
        name, reactor=reactor, urls=fake.urls, transport=FAST.replace(trust_root=ca.trust_root())
    )
    untrusted = rest_only = None
    try:
        markets = await trusted.load_markets()  # the fake itself works with the right root
        await trusted.close()
        # REST (markets): the platform's roots do not know the test CA
        rest_only = txexchange.exchange(
            name, reactor=reactor, urls=fake.urls, transport=FAST.replace(max_retries=0)
        )
        with pytest.raises(TLSVerificationError):
            await rest_only.load_markets()
        # WebSocket (markets given, so only the stream is tried)
        untrusted = txexchange.exchange(
            name,
            reactor=reactor,
            urls=fake.urls,
            markets=markets.values(),
            transport=FAST.replace(max_retries=0),
            resync_timeout=10,
        )
        with pytest.raises(TLSVerificationError):
            await untrusted.fetch_order_book(symbol)
        assert untrusted.books.get(symbol) is None or not untrusted.books[symbol].synced
    finally:
        await trusted.close()
        for c in (rest_only, untrusted):
            if c is not None:
                await c.close()
        await fake.stop()


@pytest_twisted.ensureDeferred
async def test_trusted_ca_but_wrong_host_name_is_refused():
    ca = TestCA.generate()
    fake = FakeBinance(["BTC/USDT"], reactor=reactor, tls=ca.issue(["exchange.example"]))
    await fake.start()
    opts = FAST.replace(trust_root=ca.trust_root(), max_retries=0)
    client = txexchange.exchange("binance", reactor=reactor, urls=fake.urls, transport=opts)
    try:
        with pytest.raises(TLSVerificationError):
            await client.load_markets()
        assert fake.rest_log == []
    finally:
        await client.close()
        await fake.stop()


@pytest.mark.parametrize("root", [False, "", 0, [], "none", object()], ids=repr)
def test_odd_trust_roots_are_refused_up_front(root):
    # Before, TransportOptions took them and a REST call then never completed.
    with pytest.raises(BadRequest, match="trust_root"):
        TransportOptions(trust_root=root)
    with pytest.raises(BadRequest, match="trust_root"):
        FAST.replace(trust_root=root)


# -- secrets ----------------------------------------------------------------------------

KEY = "kEy0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789abcdE"
SECRET = "sEcReT-9f8e7d6c5b4a39281706f5e4d3c2b1a0ZyXwVuTsRqPoNmLkJiHgFeDcBa"


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        secret[:16],  # a fragment long enough to identify it
        secret[-16:],
        raw.hex(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        quote(secret, safe=""),
        repr(raw),
    ]


def _assert_absent(text: str, secret: str, where: str) -> None:
    for form in _forms(secret):
        assert form not in text, f"a form of the secret ({form[:6]}...) is in {where}"


@pytest_twisted.ensureDeferred
async def test_secrets_never_reach_logs_reprs_errors_stats_or_recordings():
    fake = FakeBinance(["BTC/USDT"], reactor=reactor, api_keys={KEY: SECRET})
    await fake.start()
    tapped: list[bytes] = []
    tap_opts = FAST.replace(frame_tap=lambda url, at, payload, binary: tapped.append(payload))
    events: list[Any] = []
    statuses: list[Any] = []
    errors: list[BaseException] = []
    wrong = "WRONG0-" + SECRET[7:]
    with LogCapture() as logs:
        stream = BinanceUserStream(
            api_key=KEY,
            secret=SECRET,
            reactor=reactor,
            urls=fake.urls,
            transport=tap_opts,
            on_event=events.append,
            on_status=statuses.append,
        )
        bad = BinanceUserStream(api_key=KEY, secret=wrong, reactor=reactor, urls=fake.urls,
                                transport=tap_opts, on_event=events.append)  # fmt: skip
        try:
            await stream.start().addTimeout(10, reactor)
            for n in range(5):
                fake.push_user_event(execution_report_event("BTCUSDT", order_id=n))
            await wait_for(lambda: len(events) == 5)
            # a dropped connection: reconnect and sign a new subscription
            fake.user_sessions(KEY)[0].drop()
            await wait_for(lambda: len(fake.user_subscribe_requests) == 2, what="resubscribe")
            fake.push_user_event(execution_report_event("BTCUSDT", order_id=99))
            await wait_for(lambda: len(events) == 6)
            with pytest.raises(AuthenticationError) as refused:
                await bad.start().addTimeout(10, reactor)
            errors.append(refused.value)
            for bad_secret in ("", None):
                try:
                    BinanceUserStream(
                        api_key=KEY, secret=bad_secret, reactor=reactor, on_event=events.append
                    )
                except ExchangeError as e:
                    errors.append(e)
            # every exchange client handed credentials keeps them out of its repr
            clients = [
                txexchange.exchange(n, reactor=reactor, api_key=KEY, secret=SECRET, password=SECRET)
                for n in EXCHANGES
            ]
            reprs = [repr(c) for c in clients] + [str(c) for c in clients]
            for c in clients:
                await c.close()
        finally:
            await stream.close()
            await bad.close()
            await fake.stop()
        reprs += [repr(stream), repr(bad), repr(stream.stats), str(stream.stats.as_dict())]
        reprs += [repr(s) for s in statuses]
    assert len(errors) >= 2
    text = logs.text()
    assert "userDataStream" in text or "subscri" in text.lower()  # the logs were captured
    _assert_absent(text, SECRET, "the logs")
    _assert_absent(text, wrong, "the logs")
    for item in reprs:
        _assert_absent(item, SECRET, "a repr")
    for error in errors:
        _assert_absent(f"{error} {error!r} {error.args!r}", SECRET, "an exception")
        _assert_absent(f"{error} {error!r} {error.args!r}", wrong, "an exception")
    # the frame tap (what --record writes) never sees the user stream's frames at all
    assert not any(b"apiKey" in p or b"signature" in p or b"executionReport" in p for p in tapped)
    for payload in tapped:
        _assert_absent(payload.decode("utf-8", "replace"), SECRET, "a recorded frame")


# -- resource caps against a hostile server -----------------------------------------------


def _true(fake: FakeBinance, book: Any) -> bool:
    bids, asks, _ = fake.true_book(book.symbol, nonce=book.nonce)
    return list(book.bids) == [tuple(x) for x in bids] and list(book.asks) == [
        tuple(x) for x in asks
    ]


async def _caught_up(fake: FakeBinance, client: Any, symbol: str) -> None:
    live = client.books[symbol]
    for _ in range(20):
        fake.step(1)
        await sleep(0.005)
    await wait_for(
        lambda: live.synced and not live.stale and live.nonce == fake.market.last_update_id(symbol),
        timeout=10,
        what="book caught up",
    )
    assert _true(fake, live.snapshot())


@pytest_twisted.ensureDeferred
async def test_hostile_server_oversized_frames_and_floods_leave_books_true_and_memory_flat():
    fake = FakeBinance(["BTC/USDT"], reactor=reactor, seed=12)
    await fake.start()
    opts = FAST.replace(max_message_size=256 * 1024)
    client = txexchange.exchange("binance", reactor=reactor, urls=fake.urls, transport=opts)
    try:
        fake.step(2)
        await client.fetch_order_book("BTC/USDT")
        rejected: list[int] = []

        def on_status(event: Any) -> None:
            # count refusals, keep nothing: the test must not be what holds memory
            if isinstance(event, FrameRejected):
                rejected.append(1)

        client.subscribe("status", None, on_status)
        topic = next(t for t in fake.server.sessions[0].subscriptions if "@depth" in t)
        await _caught_up(fake, client, "BTC/USDT")

        # 1. an oversized frame: refused with a typed error, the socket recycled, book resynced
        fake.server.sessions[0].send({"stream": topic, "data": {"pad": "x" * 1_000_000}})
        await wait_for(lambda: fake.server.connections_accepted == 2, what="a new connection")
        assert rejected, "the oversized frame was not reported"
        await _caught_up(fake, client, "BTC/USDT")

        # 2. floods: garbage, unsolicited subscribe replies, unknown streams
        gc.collect()
        counts_before = library_objects()
        before = sum(counts_before.values())
        session = fake.server.sessions[-1]
        for i in range(3_000):
            session.send_garbage(b"\x00{not json" + str(i).encode())
            session.send({"result": None, "id": 10_000_000 + i})
            session.send({"stream": f"nosuch{i}@depth", "data": {"e": "depthUpdate"}})
            if i % 500 == 0:
                fake.step(1)
                await sleep(0.001)
        await _caught_up(fake, client, "BTC/USDT")
        gc.collect()
        after = sum(library_objects().values())
        assert after - before < 200, (before, after, _grown(counts_before, library_objects()))
        assert fake.server.connections_accepted == 2  # floods did not cost the connection
        assert client.stats.malformed + client.stats.unknown_messages >= 3_000
    finally:
        await client.close()
        await fake.stop()


def _grown(before: Any, after: Any) -> dict[str, tuple[int, int]]:
    return {k: (before[k], v) for k, v in after.items() if v > before[k] + 10}
