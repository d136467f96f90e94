"""The ``exchangefeed`` twistd plugin (``twistd -n exchangefeed --help``).

Lives in Twisted's plugin namespace (this directory has no ``__init__.py`` on
purpose).  It imports nothing of txexchange until the service is made, so
listing plugins stays cheap and never installs a reactor.
"""

from twisted.application.service import ServiceMaker

exchangefeed = ServiceMaker(
    "txexchange exchangefeed",
    "txexchange.service.tap",
    "Collect live exchange market data (order books, trades, tickers, candles) into sinks",
    "exchangefeed",
)
