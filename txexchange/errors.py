"""Typed errors: every failure txexchange reports is one of these.

Sits beside every layer; the names follow the ccxt hierarchy where one exists,
so code written against ccxt catches the same things.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadRequest",
    "BadSymbol",
    "BookIntegrityError",
    "ClientClosed",
    "ConnectionClosed",
    "DDoSProtection",
    "DecompressionBomb",
    "DuplicateOrderId",
    "ExchangeError",
    "ExchangeNotAvailable",
    "FrameTooLarge",
    "InsufficientFunds",
    "InvalidNonce",
    "InvalidOrder",
    "MalformedMessage",
    "NetworkError",
    "NotSupported",
    "OrderNotFound",
    "PermissionDenied",
    "ProtocolViolation",
    "RateLimitExceeded",
    "RequestTimeout",
    "ResyncTimeout",
    "RetriesExhausted",
    "SubscriptionError",
    "TLSVerificationError",
]


class ExchangeError(Exception):
    """Base of every error txexchange raises or fails a Deferred with."""


class BadRequest(ExchangeError):
    """The caller asked for something malformed (bad argument, bad option)."""


class NotSupported(ExchangeError):
    """The exchange (or this client for it) does not offer that."""


class BadSymbol(BadRequest):
    """The symbol is not listed on the exchange (or markets are not loaded)."""


class NetworkError(ExchangeError):
    """Anything that went wrong between us and the exchange."""


class ConnectionClosed(NetworkError):
    """The connection went away while something was waiting on it."""


class RetriesExhausted(NetworkError):
    """Reconnection gave up after the configured number of retries."""

    def __init__(self, url: str, retries: int, last_reason: str | None = None) -> None:
        self.url = url
        self.retries = retries
        self.last_reason = last_reason
        msg = f"gave up reconnecting to {url} after {retries} retries"
        if last_reason:
            msg += f" (last failure: {last_reason})"
        super().__init__(msg)


class TLSVerificationError(NetworkError):
    """The peer's certificate or host name did not verify."""


class RequestTimeout(NetworkError):
    """A request or handshake did not complete in time."""


class ExchangeNotAvailable(NetworkError):
    """The exchange answered with a 5xx or announced maintenance."""


class RateLimitExceeded(NetworkError):
    """HTTP 429 (or the exchange's equivalent); ``retry_after`` in seconds if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DDoSProtection(RateLimitExceeded):
    """HTTP 418: the IP is banned for a while (Binance)."""


class SubscriptionError(ExchangeError):
    """The exchange refused a subscribe or unsubscribe request."""


class ProtocolViolation(ExchangeError):
    """Something arrived that the protocol does not allow."""


class MalformedMessage(ProtocolViolation):
    """A frame that could not be decoded (not JSON, wrong shape)."""


class FrameTooLarge(ProtocolViolation):
    """A frame (or its decompressed payload) exceeded the configured cap."""


class DecompressionBomb(FrameTooLarge):
    """A compressed frame inflated past the cap on decompressed size."""


class BookIntegrityError(ExchangeError):
    """A sequence gap or checksum mismatch made a book inconsistent."""


class ResyncTimeout(ExchangeError):
    """A book did not become consistent again within the resync timeout."""


class ClientClosed(ExchangeError):
    """The client (or connection) was closed while the call was pending."""


class AuthenticationError(ExchangeError):
    """The exchange refused the API key or the request's signature.

    The message carries the exchange's own text and code, never the secret.
    """


class PermissionDenied(AuthenticationError):
    """The API key is valid but not allowed to do this (permissions, IP whitelist)."""


class InvalidNonce(NetworkError):
    """The request's timestamp/nonce was refused (Binance: outside ``recvWindow``).

    Usually a local clock out of step with the exchange's: resynchronise and retry.
    """


class InsufficientFunds(ExchangeError):
    """The account does not hold enough of an asset for the order or withdrawal."""


class InvalidOrder(ExchangeError):
    """The exchange refused the order's parameters (price, amount, filters, type)."""


class DuplicateOrderId(InvalidOrder):
    """An open order already has this client order id."""


class OrderNotFound(InvalidOrder):
    """No such order (unknown id, or already closed when cancelling)."""
