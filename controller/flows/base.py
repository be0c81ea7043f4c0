"""A flow: steps that each know how to undo themselves.

``Flow.run(state)`` runs the steps in order, checking for a cancel between
them. When a step raises, that step and the steps that finished are rolled
back in reverse order (so a step that did half its work undoes that half; a
rollback must therefore cope with partial work, using only what the state
records), a rollback that fails is logged and the others still run, and the
original error is raised again. Steps are plain functions over one typed
state object, so a flow reads top to bottom.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step(Generic[S]):
    """One step: ``run`` does it, ``rollback`` undoes it (None: nothing to undo)."""

    name: str
    run: Callable[[S], None]
    rollback: Callable[[S], None] | None = None


class FlowFailed(Exception):
    """Wraps nothing: flows re-raise the step's own error; this marks rollback trouble."""


class Flow(Generic[S]):
    """An ordered list of steps with rollback."""

    def __init__(self, name: str, steps: Sequence[Step[S]],
                 check: Callable[[], None] | None = None,
                 on_step: Callable[[str, int, int], None] | None = None,
                 guard: Callable[[], AbstractContextManager[object]] | None = None) -> None:
        self.name = name
        self.steps = list(steps)
        self._check = check
        self._on_step = on_step
        self._guard = guard or nullcontext
        self.rollback_errors: list[tuple[str, Exception]] = []

    def run(self, state: S) -> S:
        done: list[Step[S]] = []
        try:
            for i, step in enumerate(self.steps):
                if self._check is not None:
                    self._check()
                if self._on_step is not None:
                    self._on_step(step.name, i, len(self.steps))
                log.debug("%s: %s", self.name, step.name)
                done.append(step)
                step.run(state)
        except BaseException as e:
            log.info("%s failed at %s (%s: %s); rolling back", self.name, done[-1].name if done
                     else "start", type(e).__name__, e)
            with self._guard():  # a cancel must not stop the undoing
                self._rollback(done, state)
            raise
        return state

    def _rollback(self, done: list[Step[S]], state: S) -> None:
        for step in reversed(done):
            if step.rollback is None:
                continue
            try:
                step.rollback(state)
            except Exception as e:
                log.exception("%s: rollback of %s failed", self.name, step.name)
                self.rollback_errors.append((step.name, e))
