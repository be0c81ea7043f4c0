"""API errors: the agents' error base with the controller's codes beside the agents'.

A code has one HTTP status everywhere: the codes an agent may send keep
their row of :mod:`agentcore.errorcodes` (the controller answers
``INVALID_REQUEST`` or ``NOT_FOUND`` with the agents' status), and the codes
only the controller uses are listed here, never one of the agents' again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from agentcore.errorcodes import CODES as AGENT_CODES
from agentcore.errorcodes import ErrorCode, code_for_http_error
from agentcore.errors import CodedError

#: the codes only the controller answers with (API errors and job errors)
CONTROLLER_CODES: Mapping[str, ErrorCode] = {
    "FORBIDDEN": ErrorCode(403, "a valid token that may not do this"),
    "NO_CAPACITY": ErrorCode(409, "no host or storage can take the request"),
    "DEPLOY_FAILED": ErrorCode(409, "an agent's playbook failed; details.task names the task"),
    "CONTROLLER_RESTARTED": ErrorCode(500, "the controller restarted while the job ran"),
    "CONTROLLER_LOST": ErrorCode(500, "the controller node running the job stopped heartbeating"),
    "OWNER_UNREACHABLE": ErrorCode(
        503, "the controller node owning the resource could not be reached (retry)"),
    "AGENT_UNREACHABLE": ErrorCode(502, "the agent could not be reached"),
    "BAD_REPLY": ErrorCode(502, "the agent answered with something that is not a reply, or a reply its model refuses"),
    "SHUTDOWN": ErrorCode(503, "the controller is stopping"),
    "TIMEOUT": ErrorCode(504, "the agent did not answer in time"),
}
#: every code the controller answers with or reads, with its one status
API_CODES: Mapping[str, ErrorCode] = {**AGENT_CODES, **CONTROLLER_CODES}


class ApiError(CodedError):
    """An error answered as ``{"error": {"code", "message", "details"}}``."""

    codes: ClassVar[Mapping[str, ErrorCode]] = API_CODES
    code = "INTERNAL_ERROR"
    default_message = "internal error"


class BadRequest(ApiError):
    """Invalid input; ``details.field`` names the offending field."""

    code = "INVALID_REQUEST"
    default_message = "invalid request"


class Unauthorized(ApiError):
    code = "UNAUTHORIZED"
    default_message = "a valid bearer token is required"


class Forbidden(ApiError):
    """A valid token that may not do this (a read-only account writing, another agent's task)."""

    code = "FORBIDDEN"
    default_message = "this token may not do that"


class NotFound(ApiError):
    code = "NOT_FOUND"
    default_message = "not found"


class MethodNotAllowed(ApiError):
    code = "METHOD_NOT_ALLOWED"
    default_message = "method not allowed"


class RequestTooLarge(ApiError):
    code = "REQUEST_ENTITY_TOO_LARGE"
    default_message = "the request body is too large"


class Conflict(ApiError):
    code = "CONFLICT"
    default_message = "conflict"


class NoCapacity(ApiError):
    """No host or storage can take the request."""

    code = "NO_CAPACITY"
    default_message = "no host or storage has the capacity"


class OwnerUnreachable(ApiError):
    """A request forwarded to the node owning its resource found that node gone."""

    code = "OWNER_UNREACHABLE"
    default_message = "the controller node owning the resource could not be reached; retry"


class InternalError(ApiError):
    code = "INTERNAL_ERROR"
    default_message = "internal error"


#: what an HTTP error of Flask's own (routing, body size) is answered with
HTTP_ERRORS: Mapping[str, type[ApiError]] = {cls.code: cls for cls in (
    BadRequest, Unauthorized, NotFound, MethodNotAllowed, Conflict, RequestTooLarge, InternalError)}


def for_http_status(status: int, message: str) -> ApiError:
    """The error that answers an HTTP error Flask raised with ``status``."""
    return HTTP_ERRORS[code_for_http_error(status)](message)


class DigestMismatch(ApiError):
    """What a store holds does not hash to what the controller recorded."""

    code = "DIGEST_MISMATCH"
