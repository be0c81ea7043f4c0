"""Which commands a simulated agent serves, and with which models.

The command table is the agents' own: every command model of
``<agent>.models`` declares its path and reply model
(:func:`agentcore.models.commands_in`), the table the real agents' plugins,
the controller's client and the tests' fake agent read too. So a simulated
host validates a body with exactly the model the real kvmagent would and
answers with a reply its reply model accepts, without importing the agents'
plugins (and their backends, such as libvirt).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import logging
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from agentcore.models import Command, Reply, commands_in
from agentcore.plugin import CommandSpec

log = logging.getLogger(__name__)

AgentKind = Literal["kvm", "storage", "sftp", "ceph"]
KINDS: tuple[AgentKind, ...] = ("kvm", "storage", "sftp", "ceph")

#: the Python package of the real agent of each kind
AGENT_PACKAGES: dict[AgentKind, str] = {
    "kvm": "kvmagent",
    "storage": "storageagent",
    "sftp": "sftpbackup",
    "ceph": "cephagent",
}


@dataclass(frozen=True)
class SimCommand:
    """One command a simulated agent serves."""

    path: str
    request: type[Command]
    reply: type[Reply]
    doc: str

    def as_spec(self) -> CommandSpec:
        """A :class:`CommandSpec` (for the OpenAPI document); the handler is never called."""
        return CommandSpec(self.path, self.request, self.reply, _never, None, self.doc, "simulator")

    @classmethod
    def of(cls, request: type[Command]) -> SimCommand:
        """The command a request model declares."""
        assert request.path is not None and request.reply is not None
        return cls(request.path, request, request.reply, inspect.cleandoc(request.__doc__ or request.path))


def _never(ctx: Any, cmd: Any) -> Reply:  # pragma: no cover - only a placeholder
    raise RuntimeError("simulated commands are not run through a plugin")


def discover(kind: AgentKind) -> dict[str, SimCommand]:
    """The commands the real agent of this kind declares, by path."""
    models = importlib.import_module(f"{AGENT_PACKAGES[kind]}.models")
    return {path: SimCommand.of(request) for path, request in commands_in(models).items()}


# -- replies that the reply model accepts -------------------------------------


def reply_fields(model: type[BaseModel]) -> set[str]:
    """Python names of a model's fields."""
    return set(model.model_fields)


def placeholder(annotation: Any) -> Any:  # noqa: PLR0911 - one return per type family
    """A value of the annotated type, for required reply fields a behaviour did not set."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if type(None) in args:
            return None
        return placeholder(args[0])
    if origin is Literal:
        return args[0]
    if origin in (list, set, tuple, frozenset) or annotation in (list, set, tuple):
        return []
    if origin is dict or annotation is dict:
        return {}
    if inspect.isclass(annotation):
        if issubclass(annotation, bool):
            return False
        if issubclass(annotation, enum.Enum):
            return next(iter(annotation)).value
        if issubclass(annotation, int):
            return 0
        if issubclass(annotation, float):
            return 0.0
        if issubclass(annotation, str):
            return ""
        if issubclass(annotation, BaseModel):
            return skeleton(annotation)
    return None


def skeleton(model: type[BaseModel], by_alias: bool = True) -> dict[str, Any]:
    """Placeholders for every required field of ``model`` (wire or Python names)."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            out[_wire_name(name, info) if by_alias else name] = placeholder(info.annotation)
    return out


def _wire_name(name: str, info: FieldInfo) -> str:
    return info.alias or name
