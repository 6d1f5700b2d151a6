"""Typed errors, each carrying the HTTP status it maps to.

Messages name the problem (a field, a feature, a shape) but never echo feature values:
scoring payloads hold card and account data.
"""

from __future__ import annotations


class ServeAppError(Exception):
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServeAppError):
    status = 400


class Unauthorized(ServeAppError):
    status = 401


class Forbidden(ServeAppError):
    status = 403


class NotFound(ServeAppError):
    status = 404


class MethodNotAllowed(ServeAppError):
    status = 405


class Conflict(ServeAppError):
    status = 409


class PayloadTooLarge(ServeAppError):
    status = 413


class UnsupportedMediaType(ServeAppError):
    status = 415


class InvalidInput(ServeAppError):
    """Well-formed JSON that does not fit the model's signature."""

    status = 422


class TooManyRequests(ServeAppError):
    """Over a rate limit; `retry_after` is the Retry-After header's value (seconds)."""

    status = 429

    def __init__(self, message: str, retry_after: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(ServeAppError):
    status = 503


def for_status(status: int, message: str) -> ServeAppError:
    """The typed error for a status another process reported (a pool's answer)."""
    for kind in (BadRequest, NotFound, Conflict, InvalidInput, NotReady):
        if kind.status == status:
            return kind(message)
    return ServeAppError(message)
