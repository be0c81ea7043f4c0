"""Fault injection: make command X on agent Y fail, lag, hang or lose its callback.

A rule matches an agent id (or ``*``) and a command path (or ``*``, or a
prefix ending in ``*`` such as ``/vm/*``), optionally only bodies whose fields
equal given values (``match={"vmUuid": "..."}``). ``times`` bounds how often
it fires (``None``: until removed). Rules are checked in the order added; the
first that matches wins.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import Field

from agentcore.models import WireModel

FaultAction = Literal["fail", "delay", "drop-callback", "http-error", "hang", "disconnect"]


class FaultRule(WireModel):
    """One injected fault.

    - ``fail``: the command runs nothing and replies ``success: false`` with
      ``code``/``message`` (through the callback when asynchronous).
    - ``delay``: the command runs after ``seconds`` (a deadline shorter than
      that answers ``DEADLINE_EXCEEDED``, a cancel answers ``CANCELLED``).
    - ``drop-callback``: the command runs but its callback is never sent (the
      controller must fall back to ``GET /tasks/<id>``).
    - ``http-error``: the request itself is answered with HTTP ``status``.
    - ``hang``: the command never finishes until cancelled or its deadline passes.
    - ``disconnect``: the connection is closed without an answer.
    """

    id: int = 0
    agent: str = Field(default="*", min_length=1, max_length=200)
    path: str = Field(default="*", min_length=1, max_length=200)
    action: FaultAction
    code: str = Field(default="SIMULATED_FAILURE", max_length=100)
    message: str = Field(default="failure injected by the simulator", max_length=1000)
    seconds: float = Field(default=0.0, ge=0, le=3600)
    status: int = Field(default=503, ge=400, le=599)
    times: int | None = Field(default=None, ge=1)
    match: dict[str, Any] = Field(default_factory=dict)
    fired: int = 0

    def matches(self, agent: str, path: str, body: dict[str, Any]) -> bool:
        if self.agent not in ("*", agent):
            return False
        if self.path.endswith("*"):
            if not path.startswith(self.path[:-1]):
                return False
        elif self.path != path:
            return False
        return all(body.get(k) == v for k, v in self.match.items())


class FaultBook:
    """The simulator's active fault rules."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)

    def add(self, rule: FaultRule) -> FaultRule:
        rule = rule.model_copy(update={"id": next(self._ids), "fired": 0})
        self._rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) != before

    def clear(self) -> None:
        self._rules = []

    def list(self) -> list[FaultRule]:
        return list(self._rules)

    def take(self, agent: str, path: str, body: dict[str, Any]) -> FaultRule | None:
        """The first matching rule, counted as fired (and retired when used up)."""
        if not self._rules:
            return None
        for rule in self._rules:
            if rule.matches(agent, path, body):
                rule.fired += 1
                if rule.times is not None and rule.fired >= rule.times:
                    self._rules.remove(rule)
                return rule
        return None
