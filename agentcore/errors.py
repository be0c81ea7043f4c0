"""Errors a command can fail with.

One base class carries a machine-readable ``code``, a ``message`` and
``details``; subclasses set only ``code`` and ``default_message``. The HTTP
status comes from the code's row in :mod:`agentcore.errorcodes`, so a code has
one status whichever agent (or the controller) answers with it. Anything a
command raises that is not an :class:`AgentError` becomes ``INTERNAL_ERROR``
with the exception's text, never a traceback on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from agentcore.errorcodes import CODES, ErrorCode, code_for_http_error


class CodedError(Exception):
    """An error answered as ``{"code", "message", "details"}`` with its code's HTTP status.

    A subclass names a ``code`` of ``codes`` (checked when the class is made)
    and never sets ``http_status`` itself.
    """

    codes: ClassVar[Mapping[str, ErrorCode]] = CODES
    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "http_status" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__}: the HTTP status comes from the code table, "
                            "do not set http_status")
        if cls.code not in cls.codes:
            raise TypeError(f"{cls.__qualname__}: error code {cls.code} is not in the code table "
                            "(agentcore/errorcodes.py)")
        cls.http_status = cls.codes[cls.code].status

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class AgentError(CodedError):
    """A command failure that is reported as data in the reply."""

    code = "COMMAND_FAILED"
    default_message = "the command failed"


class InvalidRequest(AgentError):
    """The request is well-formed JSON but its content cannot be acted on."""

    code = "INVALID_REQUEST"
    default_message = "invalid request"


class Unauthorized(AgentError):
    code = "UNAUTHORIZED"
    default_message = "a valid bearer token is required"


class NotFound(AgentError):
    code = "NOT_FOUND"
    default_message = "not found"


class MethodNotAllowed(AgentError):
    code = "METHOD_NOT_ALLOWED"
    default_message = "method not allowed"


class RequestTooLarge(AgentError):
    code = "REQUEST_ENTITY_TOO_LARGE"
    default_message = "the request body is too large"


class Conflict(AgentError):
    code = "CONFLICT"
    default_message = "conflict"


class TaskRunning(Conflict):
    code = "TASK_RUNNING"
    default_message = "a task with this taskuuid is already running"


class AgentBusy(AgentError):
    code = "AGENT_BUSY"
    default_message = "the agent's task queue is full"


class InUse(AgentError):
    code = "IN_USE"
    default_message = "the resource is in use"


class PathEscape(InvalidRequest):
    code = "PATH_OUTSIDE_ROOT"
    default_message = "the path is outside the storage root"


class Cancelled(AgentError):
    code = "CANCELLED"
    default_message = "the task was cancelled"


class DeadlineExceeded(AgentError):
    code = "DEADLINE_EXCEEDED"
    default_message = "the task's deadline passed"


class Interrupted(AgentError):
    code = "INTERRUPTED"
    default_message = "the agent stopped while the task was running"


class ProcessFailed(AgentError):
    code = "PROCESS_FAILED"
    default_message = "a command-line tool failed"


class ProcessTimeout(AgentError):
    code = "PROCESS_TIMEOUT"
    default_message = "a command-line tool did not finish in time"


class InternalError(AgentError):
    code = "INTERNAL_ERROR"
    default_message = "internal error"


#: what an HTTP error of the web framework's own (routing, body size) is answered with
HTTP_ERRORS: Mapping[str, type[AgentError]] = {cls.code: cls for cls in (
    InvalidRequest, Unauthorized, NotFound, MethodNotAllowed, Conflict, RequestTooLarge, InternalError)}


def for_http_status(status: int, message: str) -> AgentError:
    """The error that answers an HTTP error the web framework raised with ``status``."""
    return HTTP_ERRORS[code_for_http_error(status)](message)
