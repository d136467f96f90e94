"""Packaging for txexchange.

The Twisted plugin in ``twisted/plugins/`` is installed as part of the
``twisted.plugins`` namespace (that directory deliberately has no
``__init__.py``), so ``twistd`` and ``getPlugins`` find it.
"""

from pathlib import Path

from setuptools import find_packages, setup

VERSION = "0.1.0.dev0"

TEST = [
    "pytest>=8",
    "pytest-twisted>=1.14",
    "hypothesis>=6",
    "ruff>=0.6",
    "pytest-timeout>=2",
    # drives the system's Chromium (never downloads a browser) in the web view's test
    "playwright>=1.40",
]
DOCS = ["sphinx>=7", "furo", "myst-parser>=2"]

setup(
    name="txexchange",
    version=VERSION,
    description="Twisted-native live market data from exchange WebSocket streams",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*find_packages(include=["txexchange", "txexchange.*"]), "twisted.plugins"],
    package_data={
        "twisted": ["plugins/exchangefeed.py"],
        # the web view's page (exchangefeed --web) is served from the package itself
        "txexchange": ["py.typed", "service/web/static/*"],
    },
    install_requires=[
        "twisted[tls]>=24.7",
        "autobahn>=24.4",
        "treq>=24.9",
        "attrs>=23.1",
        "orjson>=3.9",
    ],
    extras_require={
        "test": TEST + DOCS,
        "docs": DOCS,
        # peers and tools of bench/ (never needed by the tests)
        "bench": [
            "pyinstrument",
            "psutil",
            "sortedcontainers",
            "ccxt>=4.4",
            "cryptofeed>=2.4",
            "websockets>=13",
            "matplotlib>=3.8",
            "uvloop>=0.19",
            "py-spy>=0.3",
        ],
        # the SQLite sink uses the standard library's sqlite3 (through adbapi) and
        # the Redis Streams sink a small RESP client of its own on Twisted
        # (txexchange.service.sinks.resp): neither needs a third-party package.
        # The extras stay so that `pip install txexchange[redis]` keeps working.
        "sqlite": [],
        "redis": [],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Office/Business :: Financial :: Investment",
    ],
)
