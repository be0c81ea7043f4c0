"""The behaviour registry and what every behaviour shares.

A behaviour takes the agent, the validated body in wire (camelCase) form and
the fleet, changes the simulated state, and returns candidate reply fields by
their Python (snake_case) names; the engine keeps those the reply model
declares and fills the rest of its required fields. Field names follow the
agents' models (``kvmagent.models``, ``storageagent.models``,
``cephagent.models``); for commands whose agent has no model yet they are
read tolerantly. A path without a behaviour simply succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from agentcore.errors import AgentError, InvalidRequest
from simulator.state import SimAgent, StorageState

GiB = 1024**3
MiB = 1024**2


class InsufficientCapacity(AgentError):
    """The simulated host or storage has not enough left."""

    code = "INSUFFICIENT_CAPACITY"
    default_message = "not enough capacity"


class Fleet(Protocol):
    """What a behaviour may ask of the simulator."""

    def find_agent(self, ref: str) -> SimAgent | None: ...

    def storage(self, uuid: str) -> StorageState: ...


class Body:
    """A validated command body in wire form, read tolerantly."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self, *names: str, default: Any = None) -> Any:
        """The first of ``names`` found at the top level, then one level down."""
        for name in names:
            if self.data.get(name) is not None:
                return self.data[name]
        for value in self.data.values():
            if isinstance(value, dict):
                for name in names:
                    if value.get(name) is not None:
                        return value[name]
        return default

    def need(self, *names: str) -> Any:
        value = self.get(*names)
        if value is None:
            raise InvalidRequest(f"{names[0]}: field required", field=names[0])
        return value

    def sub(self, name: str) -> Body:
        """A nested object (an empty one when absent)."""
        value = self.data.get(name)
        return Body(value if isinstance(value, dict) else {})

    def list(self, *names: str) -> list[Any]:
        value = self.get(*names)
        return value if isinstance(value, list) else []


Behaviour = Callable[[SimAgent, Body, Fleet], dict[str, Any]]
BEHAVIOURS: dict[str, Behaviour] = {}


def behaves(*paths: str) -> Callable[[Behaviour], Behaviour]:
    """Register a behaviour for ``paths``."""
    def mark(fn: Behaviour) -> Behaviour:
        for path in paths:
            BEHAVIOURS[path] = fn
        return fn
    return mark


def as_bytes(value: Any, default: int = 0) -> int:
    """A size in bytes (the agents' models carry bytes)."""
    return default if value is None else int(value)
