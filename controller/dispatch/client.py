"""The typed agent client: a command model in, its reply model out.

Every command model names its path and its reply model
(``class StartVmCmd(Command, Returns[StartVmReply], path="/vm/start")``), so
the controller never spells a path, and what comes back is validated into the
reply model instead of being read as a dict with ``.get``. Sending, callbacks,
polling, cancel and deadlines stay the :class:`Dispatcher`'s; this module only
routes by the model and parses the reply. A reply the model refuses is an
:class:`AgentCallError` with code ``BAD_REPLY`` naming the fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from pydantic import ValidationError

from agentcore.models import Command, Reply, Returns
from controller.dispatch.dispatcher import AgentCallError, Dispatcher, PendingCall, ProgressSink

R = TypeVar("R", bound=Reply)


def route(cmd: Returns[R]) -> tuple[Command, str, type[R]]:
    """The command, its path and its reply model (a model without a path is a bug)."""
    if not isinstance(cmd, Command) or cmd.path is None or cmd.reply is None:
        raise TypeError(f"{type(cmd).__name__} is not a command that declares its path")
    return cmd, cmd.path, cast("type[R]", cmd.reply)


def parse_reply(model: type[R], data: dict[str, Any], path: str, agent_url: str) -> R:
    """A successful reply as its model; a malformed one is ``BAD_REPLY``."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        fields = [{"field": ".".join(str(p) for p in err["loc"]) or "reply", "message": err["msg"]}
                  for err in e.errors(include_url=False)]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        raise AgentCallError("BAD_REPLY", f"the agent's reply is not a {model.__name__}: {summary}",
                             {"fields": fields}, path, agent_url) from None


@dataclass(frozen=True)
class PendingReply(Generic[R]):
    """A command sent with a callback; :meth:`result` is its reply model."""

    call: PendingCall
    model: type[R]

    def parse(self, data: dict[str, Any]) -> R:
        """The reply (as the dispatcher resolved it) validated into the model."""
        return parse_reply(self.model, data, self.call.path, self.call.agent_url)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the reply; raises :class:`AgentCallError` on failure."""
        return self.parse(self.call.result(timeout))

    def done(self) -> bool:
        return self.call.done()


class AgentClient:
    """Calls agents by command model, on top of the :class:`Dispatcher`."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def call(self, agent_url: str, cmd: Returns[R], timeout: float = 300.0,
             on_progress: ProgressSink | None = None, job_uuid: str | None = None) -> PendingReply[R]:
        """Send an asynchronous command; the reply comes by callback (or polling)."""
        body, path, model = route(cmd)
        return PendingReply(self.dispatcher.call(agent_url, path, body, timeout, on_progress, job_uuid),
                            model)

    def call_sync(self, agent_url: str, cmd: Returns[R], timeout: float = 30.0) -> R:
        """Run a short command synchronously (no callback) and return its reply model."""
        body, path, model = route(cmd)
        return parse_reply(model, self.dispatcher.call_sync(agent_url, path, body, timeout), path, agent_url)

    def cancel(self, pending: PendingReply[Any]) -> None:
        """Stop the task on the agent and fail the call as cancelled."""
        self.dispatcher.cancel(pending.call)
