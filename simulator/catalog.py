"""Which commands a simulated agent serves, and with which models.

The command table is read from the real agents' plugin classes (the same
introspection :meth:`agentcore.plugin.Plugin.commands` does), so a simulated
host validates a body with exactly the model the real kvmagent would and
answers with a reply its reply model accepts. Paths of the cross-team
contract that an agent does not implement yet are served with a loose model
(any body accepted, marked ``validated=False`` in the catalogue) so that the
controller can be exercised before every agent has landed.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import logging
import pkgutil
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from agentcore.models import Command, Reply
from agentcore.plugin import CommandSpec, Plugin

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

_SNAP = "create|revert|merge"
#: the command paths of the cross-team contract, per kind (``a|b`` expands)
CONTRACT_PATHS: dict[AgentKind, list[str]] = {
    "kvm": [
        "/host/connect", "/host/ping", "/host/facts", "/host/capacity", "/host/ceph-secret/set",
        "/vm/start", "/vm/stop", "/vm/reboot", "/vm/destroy", "/vm/pause", "/vm/resume",
        "/vm/sync", "/vm/check-state", "/vm/console", "/vm/migrate",
        "/vm/volume/attach|detach|resize|snapshot|merge", "/vm/iso/attach|detach",
        "/vm/nic/attach|detach", "/network/l2/create|check|delete",
        "/network/dhcp/apply", "/network/dhcp/release", "/network/dhcp/delete",
    ],
    "storage": [
        "/storage/mount", "/storage/unmount", "/storage/init", "/storage/ping",
        "/storage/capacity", "/storage/cache-image", "/storage/cache/list",
        "/storage/cache/evict", "/storage/volume/create-root",
        "/storage/volume/create-empty", "/storage/volume/create-from-template",
        "/storage/volume/delete", "/storage/volume/info", "/storage/volume/resize",
        "/storage/volume/create-template", "/storage/volume/upload-template",
        "/storage/volume/copy", f"/storage/snapshot/{_SNAP}",
    ],
    "sftp": [
        "/backup/connect", "/backup/ping", "/backup/capacity", "/backup/image/add",
        "/backup/image/delete", "/backup/image/info", "/backup/image/push",
        "/backup/image/pull", "/backup/verify", "/backup/gc",
        "/backup/catalogue/export", "/backup/catalogue/import",
    ],
    "ceph": [
        "/ceph/connect", "/ceph/ping", "/ceph/facts", "/ceph/pools/init", "/ceph/pools/check",
        "/ceph/capacity", "/ceph/volume/create", "/ceph/volume/create-from-image",
        "/ceph/volume/delete", "/ceph/volume/resize", "/ceph/volume/info",
        "/ceph/volume/flatten", "/ceph/volume/create-template",
        "/ceph/snapshot/create|delete|protect|unprotect|rollback",
        "/ceph/image/add", "/ceph/image/cache", "/ceph/image/delete", "/ceph/image/info",
        "/ceph/image/import-from-sftp", "/ceph/image/export-to-sftp",
    ],
}


class LooseCmd(Command):
    """Body of a contract command whose agent has not defined its model yet."""

    model_config = ConfigDict(extra="allow")


class LooseReply(Reply):
    """Reply of a contract command whose agent has not defined its model yet."""


@dataclass(frozen=True)
class SimCommand:
    """One command a simulated agent serves."""

    path: str
    request: type[Command]
    reply: type[Reply]
    doc: str
    #: True when the models are the real agent's own
    validated: bool

    def as_spec(self) -> CommandSpec:
        """A :class:`CommandSpec` (for the OpenAPI document); the handler is never called."""
        return CommandSpec(self.path, self.request, self.reply, _never, None, self.doc, "simulator")


def _never(ctx: Any, cmd: Any) -> Reply:  # pragma: no cover - only a placeholder
    raise RuntimeError("simulated commands are not run through a plugin")


def expand(path: str) -> list[str]:
    """``/vm/iso/attach|detach`` → ``/vm/iso/attach``, ``/vm/iso/detach``."""
    head, _, last = path.rpartition("/")
    return [f"{head}/{leaf}" for leaf in last.split("|")]


def plugin_classes(package: str) -> list[type[Plugin]]:
    """Every :class:`Plugin` subclass defined in ``<package>.plugins.*``."""
    try:
        pkg = importlib.import_module(f"{package}.plugins")
    except ImportError:
        log.warning("no plugins package in %s", package)
        return []
    found: list[type[Plugin]] = []
    modules = [pkg]
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}.plugins."):
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # an agent being written may not import yet
            log.warning("cannot import %s; its commands are served loosely", info.name, exc_info=True)
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Plugin) and obj is not Plugin and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def discover(kind: AgentKind) -> dict[str, SimCommand]:
    """The real agent's commands of this kind, then the contract's missing ones."""
    table: dict[str, SimCommand] = {}
    for cls in plugin_classes(AGENT_PACKAGES[kind]):
        try:
            # commands() only reads class attributes; no plugin __init__ runs
            specs = object.__new__(cls).commands()
        except TypeError:
            log.warning("plugin %s has malformed commands", cls.__name__, exc_info=True)
            continue
        for spec in specs:
            table[spec.path] = SimCommand(spec.path, spec.request, spec.reply, spec.doc, True)
    for pattern in CONTRACT_PATHS[kind]:
        for path in expand(pattern):
            table.setdefault(path, SimCommand(path, LooseCmd, LooseReply, "(contract path)", False))
    return table


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
