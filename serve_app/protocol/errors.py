"""Typed errors, each carrying the HTTP status it maps to.

Messages name the problem (a field, a feature, a shape) but never echo feature values:
scoring payloads hold card and account data.
"""

from __future__ import annotations

from serve_app.core.ratelimit import retry_after_header


class ServeAppError(Exception):
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Headers the answer needs besides the JSON error body."""
        return {}


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

    def __init__(self, message: str, allowed: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"allow": ", ".join(sorted(self.allowed))}  # RFC 9110 requires it on a 405


class Conflict(ServeAppError):
    status = 409


class PayloadTooLarge(ServeAppError):
    status = 413


class UnsupportedMediaType(ServeAppError):
    status = 415


class InvalidInput(ServeAppError):
    """Well-formed JSON that does not fit the model's signature."""

    status = 422


class NotReady(ServeAppError):
    status = 503


class Overloaded(ServeAppError):
    """A queue is full or a rate limit spent: the request is refused unserved, and the
    client told when to retry (503 or 429)."""

    def __init__(self, message: str, status: int = 503, retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"retry-after": retry_after_header(self.retry_after_s)}


def for_status(status: int, message: str) -> ServeAppError:
    """The typed error for a status another process reported (a pool's answer)."""
    for kind in (BadRequest, NotFound, Conflict, InvalidInput, NotReady):
        if kind.status == status:
            return kind(message)
    return ServeAppError(message)
