"""After a restart: stop on the agents what the previous process's jobs left running.

A job's agent tasks carry its uuid (``taskuuid`` = ``<job>.<n>``), so the new
process, which never saw those tasks, can still name them: it asks every agent
it knows to cancel the dead jobs' tasks (``POST /tasks/cancel-jobs``) and asks
again until none is left unfinished (cancelling is cooperative: a copy stops at
its next block) or ``wait`` seconds pass. Only then is it safe to clean up what
those jobs made: an upload still running would write its image into a store
after the cleanup removed it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from controller.dispatch.dispatcher import AgentCallError, Dispatcher

log = logging.getLogger(__name__)
BATCH = 1000  # job uuids per request (the endpoint's limit)
PAUSE = 1.0


def settle_agent_tasks(dispatcher: Dispatcher, agent_urls: list[str], jobs: list[str], wait: float,
                       progress: Callable[[str, float | None], None] | None = None) -> int:
    """Cancel the tasks of ``jobs`` on every agent and wait for them to end; how many were
    still unfinished when ``wait`` ran out (an unreachable agent is logged and skipped:
    it cannot be running anything it could report)."""
    deadline = time.monotonic() + wait
    busy = list(agent_urls)
    left = 0
    while busy:
        still, left = [], 0
        for url in busy:
            unfinished = 0
            for i in range(0, len(jobs), BATCH):
                try:
                    unfinished += len(dispatcher.cancel_jobs(url, jobs[i:i + BATCH]))
                except AgentCallError as e:
                    log.warning("could not stop the dead jobs' tasks on %s: %s", url, e)
                    break
            if unfinished:
                still.append(url)
                left += unfinished
        busy = still
        if progress is not None:
            progress(f"waiting for {left} task(s) of {len(jobs)} dead job(s) on {len(busy)} agent(s)",
                     None)
        if not busy or time.monotonic() >= deadline:
            break
        time.sleep(PAUSE)
    if left:
        log.warning("%d task(s) of jobs the previous process ran still run on %s", left, busy)
    return left
