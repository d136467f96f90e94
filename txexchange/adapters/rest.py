"""REST request descriptions: what an adapter asks the client layer to fetch.

Sits between the adapters (which build these and parse the answers) and the
client layer (which sends them with treq).  A :class:`RestRequest` is a plain
value: no I/O, no reactor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import attrs

__all__ = ["RestRequest"]


@attrs.frozen(slots=True)
class RestRequest:
    """One HTTP request to an exchange's REST API.

    ``path`` is relative to the exchange's ``rest`` base URL; ``params`` go in
    the query string for GET (in their insertion order); ``weight`` is what
    the exchange charges against the caller's rate-limit budget; ``signed``
    says whether the request must be signed with the user's key before it is
    sent.  Requests that change state (``POST``, ``DELETE``) are never retried
    once sent, unless the exchange refused them unprocessed (429).
    """

    method: str
    path: str
    params: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    weight: int = 1
    signed: bool = False
    #: a JSON-able request body (POST/PUT/DELETE on exchanges that take JSON
    #: bodies); the exchange's signer serialises and signs it
    body: Any = attrs.field(default=None, hash=False)

    @property
    def idempotent(self) -> bool:
        """Whether sending it twice does no harm: only then is it retried after an
        answer that leaves its outcome unknown (5xx, timeout, dropped connection)."""
        return self.method in ("GET", "HEAD")

    def query_string(self) -> str:
        """``params`` percent-encoded as ``k=v&...`` (booleans as ``true``/``false``)."""
        return urlencode([(k, _text(v)) for k, v in self.params.items()])

    def url(self, base: str) -> str:
        """The full URL against ``base`` (e.g. ``"https://api.binance.com"``)."""
        query = self.query_string()
        url = base.rstrip("/") + self.path
        return f"{url}?{query}" if query else url


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)
