"""Errors a command can fail with.

One base class carries a machine-readable ``code``, a ``message`` and
``details``; subclasses set only class attributes. Anything a command raises
that is not an :class:`AgentError` becomes ``INTERNAL_ERROR`` with the
exception's text, never a traceback on the wire.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AgentError(Exception):
    """A command failure that is reported as data in the reply."""

    code: ClassVar[str] = "COMMAND_FAILED"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "the command failed"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidRequest(AgentError):
    """The request is well-formed JSON but its content cannot be acted on."""

    code = "INVALID_REQUEST"
    http_status = 400
    default_message = "invalid request"


class Unauthorized(AgentError):
    code = "UNAUTHORIZED"
    http_status = 401
    default_message = "a valid bearer token is required"


class NotFound(AgentError):
    code = "NOT_FOUND"
    http_status = 404
    default_message = "not found"


class MethodNotAllowed(AgentError):
    code = "METHOD_NOT_ALLOWED"
    http_status = 405
    default_message = "method not allowed"


class Conflict(AgentError):
    code = "CONFLICT"
    http_status = 409
    default_message = "conflict"


class TaskRunning(Conflict):
    code = "TASK_RUNNING"
    default_message = "a task with this taskuuid is already running"


class AgentBusy(AgentError):
    code = "AGENT_BUSY"
    http_status = 503
    default_message = "the agent's task queue is full"


class InUse(AgentError):
    code = "IN_USE"
    http_status = 409
    default_message = "the resource is in use"


class PathEscape(InvalidRequest):
    code = "PATH_OUTSIDE_ROOT"
    default_message = "the path is outside the storage root"


class Cancelled(AgentError):
    code = "CANCELLED"
    http_status = 409
    default_message = "the task was cancelled"


class DeadlineExceeded(AgentError):
    code = "DEADLINE_EXCEEDED"
    http_status = 504
    default_message = "the task's deadline passed"


class Interrupted(AgentError):
    code = "INTERRUPTED"
    default_message = "the agent stopped while the task was running"


class ProcessFailed(AgentError):
    code = "PROCESS_FAILED"
    default_message = "a command-line tool failed"


class ProcessTimeout(AgentError):
    code = "PROCESS_TIMEOUT"
    http_status = 504
    default_message = "a command-line tool did not finish in time"


class InternalError(AgentError):
    code = "INTERNAL_ERROR"
    default_message = "internal error"
