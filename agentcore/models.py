"""Typed models for the wire protocol.

Every command body and reply is a pydantic model. Python names are snake_case;
the wire uses camelCase (``installPath``), as ZStack's agents do. Unknown
fields are refused so that a typo is a 400, not a silently ignored option.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """Base of every model that crosses the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict, with wire (camelCase) names."""
        return self.model_dump(mode="json", by_alias=True)


class Command(WireModel):
    """Base of every command body.

    ``timeout`` is the command's deadline in seconds from the moment the agent
    accepts it; past it the task is stopped and replies ``DEADLINE_EXCEEDED``.
    """

    timeout: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600,
        description="Deadline in seconds from acceptance; enforced by the agent.",
    )


class ErrorInfo(WireModel):
    """Why a command failed."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Reply(WireModel):
    """Base of every reply: success, or a structured error."""

    model_config = ConfigDict(extra="allow")

    success: bool = True
    error: ErrorInfo | None = None


class TaskAccepted(WireModel):
    """The immediate answer to an asynchronous command."""

    task_uuid: str


TaskStateName = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]


class Progress(WireModel):
    """How far a long task has come."""

    stage: str = ""
    percent: float | None = None
    done: int | None = None
    total: int | None = None
    unit: str = ""


class TaskStatus(WireModel):
    """What ``GET /tasks/<taskuuid>`` answers."""

    task_uuid: str
    path: str
    state: TaskStateName
    progress: Progress | None = None
    created: float
    updated: float
    reply: dict[str, Any] | None = None


class EchoCmd(Command):
    """Liveness probe: answers with what it was sent."""

    message: str = Field(default="", max_length=4096)


class EchoReply(Reply):
    message: str = ""
    version: str = ""
