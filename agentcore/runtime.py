"""The agent runtime: accepts tasks, runs them in a bounded executor under
per-resource locks, enforces cancel and deadlines, journals them and sends
their replies through the outbox."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentcore.builtin import CorePlugin
from agentcore.config import AgentConfig
from agentcore.errors import (
    AgentBusy,
    AgentError,
    Cancelled,
    Conflict,
    InternalError,
    Interrupted,
    InvalidRequest,
    NotFound,
)
from agentcore.fsmode import PRIVATE, TRAVERSE, make_dirs
from agentcore.journal import SCHEMA as JOURNAL_SCHEMA
from agentcore.journal import TaskJournal, TaskRecord
from agentcore.locks import ResourceLocks
from agentcore.logs import add_secret, current_task
from agentcore.metrics import AgentMetrics
from agentcore.models import Command, ErrorInfo, Progress, Reply, TaskStatus
from agentcore.outbox import SCHEMA as OUTBOX_SCHEMA
from agentcore.outbox import CallbackOutbox
from agentcore.plugin import CommandSpec, Plugin
from agentcore.statedb import StateDB
from agentcore.task import TaskContext
from agentcore.urlpolicy import UrlPolicy

log = logging.getLogger(__name__)

WATCHDOG_PERIOD = 0.05
PRUNE_PERIOD = 3600.0
STORE_WAIT = 5.0
"""how long a cancel waits for the end of a queued task to be stored before it answers"""


def error_reply(err: AgentError) -> dict[str, Any]:
    """The wire form of a failed reply."""
    return Reply(success=False, error=ErrorInfo(**err.to_dict())).wire()


@dataclass(eq=False)
class LiveTask:
    """A task that has been accepted and has not been answered yet."""

    uuid: str
    spec: CommandSpec
    cmd: Command
    ctx: TaskContext
    callback_url: str | None
    keys: list[str]
    accepted: float = field(default_factory=time.monotonic)
    state: str = "queued"
    progress: Progress | None = None
    finished: bool = False
    reply: dict[str, Any] | None = None
    final_state: str | None = None
    stopping_since: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def __hash__(self) -> int:
        return id(self)


class AgentRuntime:
    """Everything behind the HTTP layer of one agent process."""

    def __init__(self, name: str, config: AgentConfig, plugins: Iterable[Plugin]) -> None:
        self.name = name
        self.config = config
        make_dirs(config.state_dir, PRIVATE, parents_mode=TRAVERSE)
        add_secret(config.token.get_secret_value())
        self.plugins = [CorePlugin(), *plugins]
        for plugin in self.plugins:
            plugin.runtime = self
        self.commands: dict[str, CommandSpec] = {}
        for plugin in self.plugins:
            for spec in plugin.commands():
                if spec.path in self.commands:
                    raise ValueError(f"two commands at {spec.path}")
                self.commands[spec.path] = spec
        self._loggers = {spec.plugin: logging.getLogger(f"{name}.{spec.plugin}") for spec in self.commands.values()}
        self.metrics = AgentMetrics(name)
        self.db = StateDB(config.state_dir / "agent.db", JOURNAL_SCHEMA + OUTBOX_SCHEMA)
        self.journal = TaskJournal(self.db)
        self.urls = UrlPolicy(config.controller_urls, config.state_dir / "controller_urls.json")
        self.outbox = CallbackOutbox(
            self.db,
            senders=config.callback_senders,
            max_age=config.callback_max_age,
            auth_token=config.token.get_secret_value(),
            on_retry=self.metrics.callback_retries.inc,
            on_result=self.metrics.callback_result,
        )
        self.metrics.track_outbox(self.outbox.pending)
        self.metrics.tasks_active.labels(state="queued").set_function(lambda: self._count("queued"))
        self.metrics.tasks_active.labels(state="running").set_function(lambda: self._count("running"))
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix=f"{name}-task")
        self._locks: ResourceLocks[LiveTask] = ResourceLocks()
        self._live: dict[str, LiveTask] = {}
        self._mu = threading.Lock()
        self._deadlines: list[tuple[float, int, LiveTask]] = []
        self._seq = itertools.count()
        self._stopping: list[LiveTask] = []
        self._wd_cv = threading.Condition()
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    # -- life cycle -----------------------------------------------------

    def start(self) -> None:
        """Report tasks a previous process left unfinished, then start serving."""
        interrupted = self.journal.interrupt_unfinished(error_reply(Interrupted()))
        for rec in interrupted:
            log.warning("task %s (%s) was interrupted by an agent restart", rec.task_uuid, rec.path)
            if rec.callback_url:
                self._send_reply(rec.task_uuid, rec.callback_url, error_reply(Interrupted()))
        self.outbox.start()
        self._watchdog.start()
        for plugin in self.plugins:
            plugin.start()
        log.info("%s agent started: %d commands, pid %d", self.name, len(self.commands), os.getpid())

    def stop(self) -> None:
        for plugin in reversed(self.plugins):
            try:
                plugin.stop()
            except Exception:
                log.exception("plugin %s failed to stop", type(plugin).__name__)
        with self._wd_cv:
            self._closed = True
            self._wd_cv.notify_all()
        if self._watchdog.is_alive():
            self._watchdog.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.outbox.stop()
        self.db.close()

    # -- accepting ------------------------------------------------------

    def submit(
        self, spec: CommandSpec, cmd: Command, task_uuid: str, callback_url: str | None
    ) -> LiveTask | TaskRecord:
        """Accept a task, or return the live task or record that has this uuid."""
        if callback_url is not None and not self.urls.allows(callback_url):
            raise InvalidRequest(
                "callbackurl is not one of this agent's controller URLs",
                field="callbackurl", url=callback_url,
            )
        deadline = time.monotonic() + cmd.timeout if cmd.timeout else None
        ctx = TaskContext(
            task_uuid, spec.path, deadline=deadline, progress_sink=self._on_progress,
            logger=self._loggers[spec.plugin],
        )
        live = LiveTask(task_uuid, spec, cmd, ctx, callback_url, keys=spec.lock_keys(cmd))
        with self._mu:
            running = self._live.get(task_uuid)
            if running is not None:
                # running, or finished and being stored: a duplicate never starts it again
                if running.spec.path != spec.path:
                    raise Conflict("taskuuid is in use by another command", path=running.spec.path)
                return running
            if len(self._live) >= self.config.max_queued:
                raise AgentBusy(queued=len(self._live))
            # reserve the uuid, then journal it outside the lock
            self._live[task_uuid] = live
        existing = self.journal.begin(task_uuid, spec.path, callback_url)
        if existing is not None:
            self._drop_reservation(live, existing)
            if existing.path != spec.path:
                raise Conflict("taskuuid was used by another command", path=existing.path)
            if callback_url and existing.reply is not None:
                self._send_reply(task_uuid, callback_url, existing.reply)
            return existing
        if deadline is not None:
            with self._wd_cv:
                heapq.heappush(self._deadlines, (deadline, next(self._seq), live))
                self._wd_cv.notify()
        if self._locks.admit(live, live.keys):
            self._pool.submit(self._run, live)
        return live

    def _drop_reservation(self, live: LiveTask, record: TaskRecord) -> None:
        """The uuid was journaled before: answer anyone who found the reservation."""
        with self._mu:
            live.finished = True
            self._live.pop(live.uuid, None)
        live.final_state = record.state
        live.reply = record.reply
        live.done.set()

    def cancel(self, task_uuid: str) -> TaskStatus:
        """Stop a task: a queued one at once, a running one by killing its work."""
        with self._mu:
            live = self._live.get(task_uuid)
        if live is None:
            status = self.status(task_uuid)
            if status is None:
                raise NotFound(f"no task {task_uuid}", taskUuid=task_uuid)
            return status
        if live.finished:
            return self._status_of(live)
        live.ctx.cancel()
        if live.state == "queued":
            self._locks.withdraw(live)
            self._finish(live, "cancelled", error_reply(Cancelled()))
            live.done.wait(STORE_WAIT)  # answer with the stored end
        else:
            self._mark_stopping(live)
        return self.status(task_uuid) or self._status_of(live)

    def cancel_jobs(self, job_uuids: list[str]) -> list[TaskStatus]:
        """Cancel every unfinished task of these controller jobs (``taskuuid`` = ``<job>.<n>``);
        the ones not finished yet after the ask, as they are now."""
        prefixes = tuple(f"{j}." for j in job_uuids)
        with self._mu:
            lives = [t for u, t in self._live.items() if u.startswith(prefixes) and not t.finished]
        out = []
        for live in lives:
            try:
                status = self.cancel(live.uuid)
            except NotFound:  # finished and forgotten meanwhile
                continue
            if status.state in ("queued", "running"):
                out.append(status)
        return out

    def status(self, task_uuid: str) -> TaskStatus | None:
        with self._mu:
            live = self._live.get(task_uuid)
        if live is not None:
            return self._status_of(live)
        rec = self.journal.get(task_uuid)
        if rec is None:
            return None
        return TaskStatus(
            task_uuid=rec.task_uuid, path=rec.path, state=rec.state,  # type: ignore[arg-type]
            progress=Progress(**rec.progress) if rec.progress else None,
            created=rec.created, updated=rec.updated, reply=rec.reply,
        )

    def _status_of(self, live: LiveTask) -> TaskStatus:
        now = time.time()
        created = now - (time.monotonic() - live.accepted)
        # the end shows once it is stored: a poller never sees "succeeded" for a task that a
        # crash right after would report interrupted
        stored = live.final_state is not None and live.done.is_set()
        return TaskStatus(
            task_uuid=live.uuid, path=live.spec.path,
            state=(live.final_state if stored else live.state),  # type: ignore[arg-type]
            progress=live.progress, created=created, updated=now, reply=live.reply if stored else None,
        )

    def report(self, url: str, body: dict[str, Any], kind: str = "event") -> None:
        """Push a report (an event the agent observed) durably to a controller URL."""
        if not self.urls.allows(url):
            raise InvalidRequest("report URL is not one of this agent's controller URLs", url=url)
        self.outbox.enqueue(url, body, {"kind": kind})

    # -- running --------------------------------------------------------

    def _run(self, live: LiveTask) -> None:
        token = current_task.set(live.uuid)
        state = "failed"
        body: dict[str, Any] | None = None  # built only if needed: INTERNAL_ERROR unless set below
        try:
            with self._mu:
                if live.finished:
                    return
                live.state = "running"
            live.ctx.check()
            reply = live.spec.handler(live.ctx, live.cmd)
            if not isinstance(reply, Reply):
                raise InternalError(f"{live.spec.path} returned {type(reply).__name__}, not a Reply")
            body = reply.wire()
            state = "succeeded" if reply.success else "failed"
        except AgentError as e:
            state = "cancelled" if isinstance(e, Cancelled) else "failed"
            body = error_reply(e)
            live.ctx.log.info("%s failed: %s %s", live.spec.path, e.code, e.message)
        except Exception as e:
            live.ctx.log.exception("%s raised", live.spec.path)
            body = error_reply(InternalError(f"{type(e).__name__}: {e}"))
        finally:
            current_task.reset(token)
            self._finish(live, state, body if body is not None else error_reply(InternalError()))
            for item in self._locks.release(live.keys):
                self._pool.submit(self._run, item)

    def _finish(self, live: LiveTask, state: str, body: dict[str, Any]) -> None:
        with self._mu:
            if live.finished:
                return
            live.finished = True
            live.final_state = state
            live.reply = body
        # the journal entry and the outgoing reply are stored in one transaction
        ops: list[Callable[[sqlite3.Connection], Any]] = [self.journal.finish_op(live.uuid, state, body)]
        if live.callback_url:
            ops.append(self.outbox.insert_op(
                live.callback_url, body, {"taskuuid": live.uuid, "kind": "reply"}))
        self.metrics.task_finished(live.spec.path, state, time.monotonic() - live.accepted)

        def stored(fut: Future[list[Any]]) -> None:
            if fut.exception() is not None:
                log.error("could not store the end of task %s: %s", live.uuid, fut.exception())
            elif live.callback_url:
                self.outbox.schedule(fut.result()[1])
            # until its end is stored, the task answers from memory
            with self._mu:
                self._live.pop(live.uuid, None)
            live.done.set()

        try:
            self.db.write(lambda c: [op(c) for op in ops]).add_done_callback(stored)
        except RuntimeError:  # the agent is shutting down: a restart reports it interrupted
            live.done.set()

    def _send_reply(self, task_uuid: str, url: str, body: dict[str, Any]) -> None:
        self.outbox.enqueue(url, body, {"taskuuid": task_uuid, "kind": "reply"})

    def _on_progress(self, ctx: TaskContext, p: Progress) -> None:
        with self._mu:
            live = self._live.get(ctx.task_uuid)
        if live is None:
            return
        live.progress = p
        self.journal.set_progress(ctx.task_uuid, p.wire())
        if live.callback_url:
            self.outbox.send_transient(
                live.callback_url,
                {"taskUuid": live.uuid, "progress": p.wire()},
                {"taskuuid": live.uuid, "kind": "progress"},
            )

    def _count(self, state: str) -> float:
        with self._mu:
            return float(sum(1 for t in self._live.values() if t.state == state))

    # -- watchdog: deadlines and tasks that do not stop -------------------

    def _mark_stopping(self, live: LiveTask) -> None:
        with self._wd_cv:
            if live.stopping_since is None:
                live.stopping_since = time.monotonic()
                self._stopping.append(live)
                self._wd_cv.notify()

    def _watch(self) -> None:
        last_prune = 0.0
        while True:
            with self._wd_cv:
                if self._closed:
                    return
                self._wd_cv.wait(WATCHDOG_PERIOD)
                now = time.monotonic()
                due: list[LiveTask] = []
                while self._deadlines and self._deadlines[0][0] <= now:
                    due.append(heapq.heappop(self._deadlines)[2])
                stuck = [
                    t for t in self._stopping
                    if t.stopping_since is not None and now - t.stopping_since >= self.config.stop_grace
                ]
                self._stopping = [t for t in self._stopping if t not in stuck and not t.finished]
            for live in due:
                self._expire(live)
            for live in stuck:
                reason = live.ctx.stop_reason() or Cancelled()
                live.ctx.log.warning(
                    "%s did not stop within %.0fs; answering %s and abandoning its thread",
                    live.spec.path, self.config.stop_grace, reason.code,
                )
                self._finish(live, "cancelled" if isinstance(reason, Cancelled) else "failed",
                             error_reply(reason))
            if now - last_prune > PRUNE_PERIOD:
                last_prune = now
                self.journal.prune(time.time() - self.config.task_retention)

    def _expire(self, live: LiveTask) -> None:
        if live.finished:
            return
        live.ctx.expire()
        reason = live.ctx.stop_reason()
        if live.state == "queued":
            self._locks.withdraw(live)
            self._finish(live, "failed", error_reply(reason or Cancelled()))
        else:
            self._mark_stopping(live)
