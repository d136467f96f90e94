"""API credentials: where keys come from, and how they stay out of sight.

Sits beside the client layer: :func:`txexchange.exchange` takes ``api_key``,
``secret`` and ``password`` arguments, or a :class:`Credentials` built from
environment variables (:meth:`Credentials.from_env`) or a file
(:meth:`Credentials.from_file`).  A :class:`Credentials` never shows its
secret or password in a repr, a log line, an exception or a pickle.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from txexchange.errors import AuthenticationError, BadRequest

__all__ = ["Credentials"]

log = Logger()

_FIELDS = ("api_key", "secret", "password")


class Credentials:
    """An API key with its secret (and passphrase, for OKX).

    Reprs show only whether a key is set and its last four characters.
    """

    __slots__ = ("api_key", "password", "secret")

    def __init__(
        self, api_key: str | None = None, secret: str | None = None, password: str | None = None
    ) -> None:
        for name, value in (("api_key", api_key), ("secret", secret), ("password", password)):
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"{name} must be a string, got {type(value).__name__}")
        self.api_key = api_key or None
        self.secret = secret or None
        self.password = password or None

    def __repr__(self) -> str:
        key = (
            f"...{self.api_key[-4:]}"
            if self.api_key and len(self.api_key) > 8
            else ("set" if self.api_key else "unset")
        )
        return f"<Credentials api_key={key} secret={'set' if self.secret else 'unset'}>"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("Credentials are not picklable (they hold a secret)")

    def __bool__(self) -> bool:
        return self.api_key is not None and self.secret is not None

    def require(self, exchange: str, *, password: bool = False) -> Credentials:
        """Self, or :class:`AuthenticationError` naming what is missing for ``exchange``."""
        missing = [n for n in ("api_key", "secret") if getattr(self, n) is None]
        if password and self.password is None:
            missing.append("password")
        if missing:
            raise AuthenticationError(
                f"{exchange}: private API calls need {' and '.join(missing)}: pass them to "
                "exchange(), or use Credentials.from_env() / Credentials.from_file()"
            )
        return self

    @classmethod
    def from_env(cls, prefix: str, environ: Mapping[str, str] | None = None) -> Credentials:
        """From ``<PREFIX>_API_KEY``, ``<PREFIX>_SECRET`` and ``<PREFIX>_PASSWORD``.

        ``prefix`` is upper-cased (``"binance"`` reads ``BINANCE_API_KEY``).
        Unset variables are left unset; :meth:`require` reports them by name.
        """
        env = os.environ if environ is None else environ
        p = prefix.upper().rstrip("_")
        return cls(env.get(f"{p}_API_KEY"), env.get(f"{p}_SECRET"), env.get(f"{p}_PASSWORD"))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], section: str | None = None) -> Credentials:
        """From a TOML or JSON file holding ``api_key``, ``secret`` and ``password``.

        With ``section`` (e.g. ``"binance"``) the keys are read from that table
        or object.  A file that others may read is used, with a warning.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            mode = p.stat().st_mode
        except OSError as e:
            raise BadRequest(f"credentials file {str(p)!r}: {e.strerror}") from None
        try:
            data: Any = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as e:
            # the parser's message may quote the file's text: keep it out
            raise BadRequest(
                f"credentials file {str(p)!r} is not valid {p.suffix.lstrip('.') or 'TOML'} "
                f"({type(e).__name__})"
            ) from None
        if section is not None:
            data = data.get(section) if isinstance(data, dict) else None
            if not isinstance(data, dict):
                raise BadRequest(f"credentials file {str(p)!r} has no section {section!r}")
        if not isinstance(data, dict):
            raise BadRequest(f"credentials file {str(p)!r} must hold a table of keys")
        unknown = sorted(
            set(data) - set(_FIELDS) - {"binance", "okx", "bybit", "kraken", "coinbase", "gemini"}
        )
        if unknown:
            raise BadRequest(
                f"credentials file {str(p)!r}: unknown key(s) {', '.join(unknown)}; "
                f"expected {', '.join(_FIELDS)}"
            )
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warn(
                "credentials file {path} can be read by other users (chmod 600 it)", path=str(p)
            )
        values = {k: data.get(k) for k in _FIELDS}
        for k, v in values.items():
            if v is not None and not isinstance(v, str):
                raise BadRequest(f"credentials file {str(p)!r}: {k} must be a string")
        return cls(values["api_key"], values["secret"], values["password"])
