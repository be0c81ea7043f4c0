"""The context a command runs in: its id, deadline, cancel, progress and the
processes it owns."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from agentcore import runner
from agentcore.errors import AgentError, Cancelled, DeadlineExceeded
from agentcore.models import Progress

ProgressSink = Callable[["TaskContext", Progress], None]

PROGRESS_MIN_INTERVAL = 1.0


class TaskContext:
    """Handed to every command: who the task is and how it is stopped.

    A command checks :meth:`check` between steps of long work, runs tools
    through :meth:`run` (so cancel and deadline kill them), waits with
    :meth:`wait` instead of ``time.sleep``, and reports :meth:`progress`.
    Callbacks registered with :meth:`on_stop` run when the task is cancelled
    or its deadline passes (to abort a libvirt job, for instance).
    """

    def __init__(
        self,
        task_uuid: str,
        path: str,
        *,
        deadline: float | None = None,
        progress_sink: ProgressSink | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.task_uuid = task_uuid
        self.path = path
        self.deadline = deadline  # time.monotonic() value, or None
        self._stop = threading.Event()
        self._reason: AgentError | None = None
        self._pgids: set[int] = set()
        self._lock = threading.Lock()
        self._on_stop: list[Callable[[], None]] = []
        self._progress_sink = progress_sink
        self._last_progress: tuple[float, float | None] = (0.0, None)
        self._last_stage = ""
        self.last_progress: Progress | None = None
        self.log = logging.LoggerAdapter(
            logger or logging.getLogger("agentcore.task"), {"task": task_uuid}
        )

    # -- stopping -------------------------------------------------------

    def stop(self, reason: AgentError) -> None:
        """Stop the task: record why, run stop callbacks, kill owned processes."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            pgids = list(self._pgids)
            callbacks = list(self._on_stop)
        self._stop.set()
        for cb in callbacks:
            try:
                cb()
            except Exception:
                self.log.warning("stop callback failed", exc_info=True)
        for pgid in pgids:
            runner.kill_group(pgid)

    def cancel(self) -> None:
        self.stop(Cancelled())

    def expire(self) -> None:
        self.stop(DeadlineExceeded())

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop_reason(self) -> AgentError | None:
        if self._reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.expire()
        return self._reason

    def check(self) -> None:
        """Raise the stop reason if the task was cancelled or ran out of time."""
        reason = self.stop_reason()
        if reason is not None:
            raise reason

    def remaining(self, default: float) -> float:
        """Seconds left before the deadline, capped at ``default``."""
        if self.deadline is None:
            return default
        return max(0.0, min(default, self.deadline - time.monotonic()))

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; raise at once if the task is stopped."""
        self._stop.wait(self.remaining(seconds))
        self.check()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` if the task is stopped (at once if it already is)."""
        with self._lock:
            if self._reason is None:
                self._on_stop.append(callback)
                return
        callback()

    # -- processes ------------------------------------------------------

    def adopt(self, pgid: int) -> None:
        with self._lock:
            self._pgids.add(pgid)
            stopped = self._reason is not None
        if stopped:
            runner.kill_group(pgid)

    def release(self, pgid: int) -> None:
        with self._lock:
            self._pgids.discard(pgid)

    def owned_pgids(self) -> set[int]:
        with self._lock:
            return set(self._pgids)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        input: str | bytes | None = None,
        check: bool = True,
        on_line: Callable[[str], None] | None = None,
        stdout: IO[bytes] | None = None,
        **kwargs: Any,
    ) -> runner.ProcessResult:
        """Run a tool owned by this task (see :func:`agentcore.runner.run`)."""
        return runner.run(
            argv, timeout=timeout, owner=self, input=input, check=check,
            on_line=on_line, stdout=stdout, **kwargs,
        )

    # -- progress -------------------------------------------------------

    def progress(
        self,
        percent: float | None = None,
        *,
        stage: str = "",
        done: int | None = None,
        total: int | None = None,
        unit: str = "",
        force: bool = False,
    ) -> None:
        """Report progress; throttled to at most one event a second."""
        if percent is None and done is not None and total:
            percent = 100.0 * done / total
        p = Progress(stage=stage, percent=percent, done=done, total=total, unit=unit)
        self.last_progress = p
        now = time.monotonic()
        last_t, last_pct = self._last_progress
        changed = percent != last_pct or stage != self._last_stage
        if not force and (now - last_t < PROGRESS_MIN_INTERVAL or not changed):
            return
        self._last_stage = stage
        self._last_progress = (now, percent)
        if self._progress_sink is not None:
            self._progress_sink(self, p)


def detached_context(name: str = "detached", timeout: float | None = None) -> TaskContext:
    """A context for work outside a task (start-up scans, tests)."""
    deadline = time.monotonic() + timeout if timeout else None
    return TaskContext(name, "", deadline=deadline)
