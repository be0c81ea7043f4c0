"""Plugins: classes whose decorated methods are the agent's commands.

A command is a method taking a :class:`~agentcore.task.TaskContext` and a
:class:`~agentcore.models.Command` subclass and returning a
:class:`~agentcore.models.Reply` subclass::

    class HostPlugin(Plugin):
        @command()
        def ping(self, ctx: TaskContext, cmd: PingCmd) -> PingReply:
            \"\"\"Answer with the host's UUID and the agent version.\"\"\"

The request and reply models are read from the annotations, and the path from
the request model's declaration (``class PingCmd(Command, Returns[PingReply],
path="/host/ping")``), so the agent serves exactly the table the controller
calls by; the return annotation must be the declared reply. The command map
is built by introspection, so there is no registration boilerplate.
``lock`` names the resources the command must hold exclusively, as a function
of the validated command (for example ``lambda c: f"vm:{c.vm_uuid}"``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from agentcore.models import Command, Reply

if TYPE_CHECKING:
    from agentcore.runtime import AgentRuntime
    from agentcore.task import TaskContext

LockSpec = Callable[[Any], "str | Iterable[str] | None"]
F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__agent_command__"


@dataclass(frozen=True)
class CommandMeta:
    lock: LockSpec | None
    summary: str | None


@dataclass(frozen=True)
class CommandSpec:
    """One command of an agent, resolved from a plugin method."""

    path: str
    request: type[Command]
    reply: type[Reply]
    handler: Callable[[TaskContext, Any], Reply]
    lock: LockSpec | None
    doc: str
    plugin: str

    def lock_keys(self, cmd: Command) -> list[str]:
        """The resource keys this command must hold, sorted to avoid deadlock."""
        if self.lock is None:
            return []
        keys = self.lock(cmd)
        if keys is None:
            return []
        if isinstance(keys, str):
            return [keys]
        return sorted(set(keys))


def command(*, lock: LockSpec | None = None, summary: str | None = None) -> Callable[[F], F]:
    """Declare a plugin method as a command, served at its request model's path."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, CommandMeta(lock=lock, summary=summary))
        return fn

    return mark


class Plugin:
    """Base of agent plugins. Subclasses decorate their commands.

    ``start`` and ``stop`` are called once when the agent starts and stops;
    override them for background work (event loops, periodic scans).
    """

    #: set by the runtime before ``start``: reports, controller URLs, config
    runtime: AgentRuntime

    def start(self) -> None:
        """Called once after the agent's runtime is up."""

    def stop(self) -> None:
        """Called once when the agent shuts down."""

    def commands(self) -> list[CommandSpec]:
        """Every decorated command of this plugin, with its models."""
        specs: list[CommandSpec] = []
        for name, fn in inspect.getmembers(type(self), predicate=inspect.isfunction):
            meta: CommandMeta | None = getattr(fn, _MARK, None)
            if meta is None:
                continue
            request, reply = _models_of(fn)
            assert request.path is not None  # checked by _models_of
            specs.append(
                CommandSpec(
                    path=request.path,
                    request=request,
                    reply=reply,
                    handler=getattr(self, name),
                    lock=meta.lock,
                    doc=inspect.cleandoc(fn.__doc__ or meta.summary or name),
                    plugin=type(self).__name__,
                )
            )
        return specs


def _models_of(fn: Callable[..., Any]) -> tuple[type[Command], type[Reply]]:
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    if len(params) != 2:
        raise TypeError(f"{fn.__qualname__}: a command takes (self, ctx, cmd)")
    request = hints.get(params[1])
    reply = hints.get("return")
    if not (inspect.isclass(request) and issubclass(request, Command)):
        raise TypeError(f"{fn.__qualname__}: cmd must be annotated with a Command subclass")
    if not (inspect.isclass(reply) and issubclass(reply, Reply)):
        raise TypeError(f"{fn.__qualname__}: the return must be annotated with a Reply subclass")
    if request.path is None:
        raise TypeError(f"{fn.__qualname__}: {request.__name__} declares no path")
    if reply is not request.reply:
        raise TypeError(f"{fn.__qualname__}: returns {reply.__name__} but {request.__name__} "
                        f"declares {getattr(request.reply, '__name__', None)}")
    return request, reply
