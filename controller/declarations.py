"""What the services offer the API, declared: creates, updates, actions, cascade steps.

Each service module ends with a ``DECLARATIONS`` tuple of the entries below.
:mod:`controller.services.catalogue` collects them once into a
:class:`Catalogue`; the API routes, the OpenAPI document, the CLI and the
cascade read that one object. Nothing registers itself anywhere, so finding
what ``POST /v1/vms`` does is reading ``Create("vms", ...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from controller.core import Controller
from controller.db.jobs import Job
from controller.jobs import JobContext

#: fn(ctl, body) -> (job, resource dict); a None job: only a record was written (201)
CreateFn = Callable[[Controller, Any], tuple[Job | None, dict[str, Any]]]
#: fn(ctl, uuid, changed column values), run after a PATCH is committed
AfterUpdateFn = Callable[[Controller, str, dict[str, Any]], None]
#: fn(ctl, uuid, body) -> the job carrying the action out
ActionFn = Callable[[Controller, str, Any], Job]
#: fn(ctl, ctx, collection, uuid): one item of a cascade, inside its job
CascadeFn = Callable[[Controller, JobContext, str, str], None]


@dataclass(frozen=True)
class Create:
    """``POST /v1/<collection>`` with ``body``, done by ``fn``."""

    collection: str
    body: type[BaseModel]
    fn: CreateFn


@dataclass(frozen=True)
class Update:
    """``PATCH /v1/<collection>/<uuid>`` takes ``body`` (more than name and description);
    ``after`` carries a committed change to where it matters (agents, in a job)."""

    collection: str
    body: type[BaseModel]
    after: AfterUpdateFn | None = None


@dataclass(frozen=True)
class Action:
    """``POST /v1/<collection>/<uuid>/actions/<verb>`` with ``body``, done by ``fn``."""

    collection: str
    verb: str
    body: type[BaseModel]
    fn: ActionFn


@dataclass(frozen=True)
class CascadeStep:
    """What a cascade does to a ``collection`` item planned for ``action``
    (``delete``, ``detach``, ``migrate-or-stop``); without one, rows are deleted."""

    collection: str
    action: str
    fn: CascadeFn


Declaration = Create | Update | Action | CascadeStep


@dataclass(frozen=True)
class Catalogue:
    """Every declaration of the services, by key; read-only once collected."""

    creates: Mapping[str, Create]
    updates: Mapping[str, Update]
    actions: Mapping[tuple[str, str], Action]
    cascade: Mapping[tuple[str, str], CascadeFn]

    @classmethod
    def collect(cls, *groups: Iterable[Declaration]) -> Catalogue:
        """The catalogue of these declarations; a key declared twice is a programming error."""
        creates: dict[str, Create] = {}
        updates: dict[str, Update] = {}
        actions: dict[tuple[str, str], Action] = {}
        cascade: dict[tuple[str, str], CascadeFn] = {}
        for d in (d for group in groups for d in group):
            if isinstance(d, Create):
                _put(creates, d.collection, d)
            elif isinstance(d, Update):
                _put(updates, d.collection, d)
            elif isinstance(d, Action):
                _put(actions, (d.collection, d.verb), d)
            else:
                _put(cascade, (d.collection, d.action), d.fn)
        return cls(MappingProxyType(creates), MappingProxyType(updates),
                   MappingProxyType(actions), MappingProxyType(cascade))

    def create_bodies(self) -> dict[str, type[BaseModel]]:
        """collection → the body model of its create."""
        return {c: d.body for c, d in self.creates.items()}

    def action_bodies(self) -> dict[tuple[str, str], type[BaseModel]]:
        """(collection, verb) → the body model of the action."""
        return {k: d.body for k, d in self.actions.items()}


def _put(table: dict[Any, Any], key: Any, value: Any) -> None:
    if key in table:
        raise ValueError(f"{key!r} is declared twice")
    table[key] = value
