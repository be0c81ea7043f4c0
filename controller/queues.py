"""Per-resource queues: one operation at a time per resource, in arrival order.

An operation names the resources it works on (``vm:<uuid>``, ``host:<uuid>``).
It runs on the shared thread pool only when none of them is busy; otherwise it
is parked (not blocking a thread) and starts, in arrival order, when they free
up. Different resources run in parallel; there is no global lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from agentcore.locks import ResourceLocks

log = logging.getLogger(__name__)


@dataclass(eq=False)
class QueuedWork:
    """One operation waiting for, or holding, its resources."""

    keys: list[str]
    fn: Callable[[], None]
    cancelled: bool = field(default=False)
    inline: bool = field(default=False)  # a thread waits for it (hold): wake it, use no pool thread

    def __hash__(self) -> int:
        return id(self)


class ResourceQueues:
    """Serialises work per resource on a bounded thread pool."""

    def __init__(self, workers: int = 64) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="job")
        self._locks: ResourceLocks[QueuedWork] = ResourceLocks()

    def submit(self, keys: list[str], fn: Callable[[], None]) -> QueuedWork:
        """Run ``fn`` once every key is free; returns a handle for :meth:`withdraw`."""
        work = QueuedWork(list(keys), fn)
        if self._locks.admit(work, work.keys):
            self._pool.submit(self._run, work)
        return work

    def withdraw(self, work: QueuedWork) -> bool:
        """Drop parked work that has not started; False if it already runs."""
        return self._locks.withdraw(work)

    @contextmanager
    def hold(self, keys: list[str], check: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Take ``keys`` from inside running work, in arrival order, blocking this thread.

        ``check`` runs while waiting; if it raises (a cancel), the wait is given up.
        The caller must hold no key that work parked on ``keys`` may also want.
        """
        got = threading.Event()
        work = QueuedWork(list(keys), got.set, inline=True)
        if self._locks.admit(work, work.keys):
            got.set()
        while not got.wait(0.2):
            try:
                check()
            except BaseException:
                if self._locks.withdraw(work):
                    raise
                got.wait()  # admitted meanwhile: give the keys back
                self._release(work.keys)
                raise
        try:
            yield
        finally:
            self._release(work.keys)

    def _run(self, work: QueuedWork) -> None:
        try:
            work.fn()
        except Exception:
            log.exception("queued work on %s raised", work.keys)
        finally:
            self._release(work.keys)

    def _release(self, keys: list[str]) -> None:
        for nxt in self._locks.release(keys):
            if nxt.inline:
                nxt.fn()
            else:
                self._pool.submit(self._run, nxt)

    def busy(self) -> set[str]:
        return self._locks.held()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
