"""API errors: a code, an HTTP status, a message and details, as the agents' errors."""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "details"}}``."""

    code: ClassVar[str] = "ERROR"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class BadRequest(ApiError):
    """Invalid input; ``details.field`` names the offending field."""

    code = "INVALID_REQUEST"
    http_status = 400
    default_message = "invalid request"


class Unauthorized(ApiError):
    code = "UNAUTHORIZED"
    http_status = 401
    default_message = "a valid bearer token is required"


class Forbidden(ApiError):
    """A valid token that may not do this (a read-only account writing, another agent's task)."""

    code = "FORBIDDEN"
    http_status = 403
    default_message = "this token may not do that"


class NotFound(ApiError):
    code = "NOT_FOUND"
    http_status = 404
    default_message = "not found"


class Conflict(ApiError):
    code = "CONFLICT"
    http_status = 409
    default_message = "conflict"


class NoCapacity(ApiError):
    """No host or storage can take the request."""

    code = "NO_CAPACITY"
    http_status = 409
    default_message = "no host or storage has the capacity"
