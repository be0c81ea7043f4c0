"""Typed models for the wire protocol.

Every command body and reply is a pydantic model. Python names are snake_case;
the wire uses camelCase (``installPath``), as ZStack's agents do. Unknown
fields are refused so that a typo is a 400, not a silently ignored option.

A command model also declares where it is served and what it answers::

    class StartVmCmd(Command, Returns[StartVmReply], path="/vm/start"):

so the agent's plugin, the controller's client, the simulator and the tests'
fake agent all read one table (:func:`commands_in`) instead of path strings.
The reply type is a generic parameter rather than a class keyword so that a
type checker sees it too: the client's ``call_sync(url, cmd)`` is typed as
returning that reply model.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
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

    ``path`` and ``reply`` are class attributes, set from the declaration
    (``class XCmd(Command, Returns[XReply], path="/x")``). The path is not
    inherited: a base shared by several commands has none. The reply is the
    nearest ``Returns[...]`` in the class's ancestry.
    """

    path: ClassVar[str | None] = None
    reply: ClassVar[type[Reply] | None] = None

    timeout: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600,
        description="Deadline in seconds from acceptance; enforced by the agent.",
    )

    def __init_subclass__(cls, path: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if path is not None and not path.startswith("/"):
            raise ValueError(f"{cls.__name__}: a command path must start with '/': {path!r}")
        cls.path = path
        cls.reply = _declared_reply(cls)
        if path is not None and cls.reply is None:
            raise TypeError(f"{cls.__name__}: a command with a path needs Returns[<reply model>]")


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


ReplyT = TypeVar("ReplyT", bound=Reply)


class Returns(Generic[ReplyT]):
    """Names the reply model of a command: ``class XCmd(Command, Returns[XReply], ...)``."""


def _declared_reply(cls: type) -> type[Reply] | None:
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            if get_origin(base) is Returns:
                reply: type[Reply] = get_args(base)[0]
                return reply
    return None


def commands_in(*modules: ModuleType) -> dict[str, type[Command]]:
    """The commands declared (with a path) in these modules, by path."""
    table: dict[str, type[Command]] = {}
    for module in modules:
        for obj in vars(module).values():
            if not (isinstance(obj, type) and issubclass(obj, Command) and obj.path
                    and obj.__module__ == module.__name__):
                continue
            if obj.path in table and table[obj.path] is not obj:
                raise ValueError(f"{obj.path} is declared by {table[obj.path].__name__} and {obj.__name__}")
            table[obj.path] = obj
    return table


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


class CancelJobsRequest(WireModel):
    """``POST /tasks/cancel-jobs``: cancel every unfinished task of these controller jobs (a
    task belongs to job J when its ``taskuuid`` starts with ``J.``)."""

    job_uuids: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        min_length=1, max_length=1000)


class CancelJobsReply(WireModel):
    """The tasks of those jobs that had not finished, as they are after the cancel was asked
    (still ``running`` until their work stops: ask again until the list is empty)."""

    tasks: list[TaskStatus]


class EchoReply(Reply):
    message: str = ""
    version: str = ""


class EchoCmd(Command, Returns[EchoReply], path="/echo"):
    """Liveness probe: answers with what it was sent."""

    message: str = Field(default="", max_length=4096)
