"""python-binance's classic BinanceSocketManager usage, on txexchange (no thread).

Runs offline against the built-in fake Binance (with a BNB/BTC market); --live
uses Binance itself.  Prints the first few trades, then closes every socket,
stops the reactor and shows that no thread is left.

    python examples/socket_manager.py [--live] [--messages N]
"""

from __future__ import annotations

import sys
import threading

from twisted.internet import reactor

from txexchange.binance import BinanceSocketManager
from txexchange.testing.binance import FakeBinance

live = "--live" in sys.argv
wanted = int(sys.argv[sys.argv.index("--messages") + 1]) if "--messages" in sys.argv else 5

fake = None
urls = None
if not live:
    fake = FakeBinance(["BNB/BTC", "ETH/BTC"], reactor=reactor)
    fake.start()  # listens on 127.0.0.1 at once
    fake.run(rate=20)  # the fake market trades 20 times a second
    urls = fake.urls

received = 0
stopping = False


def shutdown() -> None:
    """close() every socket (clean 1000 close), then stop the reactor."""
    global stopping
    if stopping:
        return
    stopping = True
    d = bm.close()
    if fake is not None:
        d.addCallback(lambda _: fake.stop())
    d.addBoth(lambda _: reactor.stop())


def process_message(msg):
    global received
    if msg["e"] == "error":  # python-binance's in-band error dict
        print("error:", msg["m"])
        shutdown()
        return
    received += 1
    print("message type: {}".format(msg["e"]))
    print(msg)
    if received >= wanted:
        shutdown()


# -- the python-binance code, unchanged apart from the constructor ------------
bm = BinanceSocketManager(urls=urls)  # python-binance: BinanceSocketManager(client)
conn_key = bm.start_trade_socket("BNBBTC", process_message)
bm.start()  # no thread is started: the reactor below does the work
# ----------------------------------------------------------------------------

reactor.callLater(30, shutdown)  # safety net
reactor.run()

print(f"received {received} messages")
print("threads at exit:", [t.name for t in threading.enumerate()])
