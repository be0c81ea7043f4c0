"""Jobs: API operations that reach agents, run on the per-resource queues.

A job row is written when the operation is accepted (``queued``), moves to
``running`` when its resources are free, and ends ``succeeded``, ``failed``
or ``cancelled`` with a result or an error. Waiters block on an in-memory
event, never by polling the database. On start, jobs a previous controller
process left unfinished are marked failed (``CONTROLLER_RESTARTED``), so no
job stays running forever.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, true, update
from sqlalchemy.orm import Session

from agentcore.models import Returns
from controller.db.base import Database, core, insert_row, new_uuid, utcnow
from controller.db.jobs import FINAL_STATES, Job
from controller.dispatch.client import AgentClient, PendingReply, R, route
from controller.dispatch.dispatcher import AgentCallError, PendingCall
from controller.errors import ApiError
from controller.queues import QueuedWork, ResourceQueues

log = logging.getLogger(__name__)
JOBS: Table = Job.__table__  # type: ignore[assignment]  # core statements: no ORM overhead
RECENT_JOBS = 20000


_SUCCEEDED = update(JOBS).where(JOBS.c.uuid == bindparam("job")).values(
    state="succeeded", result=bindparam("result", type_=JOBS.c.result.type), error=None,
    percent=100.0, last_op_date=bindparam("now"))


class JobCancelled(Exception):
    """Raised inside a job at its next check after a cancel."""


def job_dict(job: Job) -> dict[str, Any]:
    """The API form of a job."""
    return {
        "uuid": job.uuid, "kind": job.kind, "resourceType": job.resource_type,
        "resourceUuid": job.resource_uuid, "state": job.state, "stage": job.stage,
        "percent": job.percent, "result": job.result, "error": job.error,
        "createDate": job.create_date.isoformat(), "lastOpDate": job.last_op_date.isoformat(),
    }


@dataclass(eq=False)
class JobContext:
    """What a running job sees: cancel checks, progress, agent calls it can abort."""

    uuid: str
    manager: JobManager
    cancelled: threading.Event = field(default_factory=threading.Event)
    calls: set[PendingCall] = field(default_factory=set)
    state: str = "queued"
    stage: str | None = None
    percent: float | None = None
    completed: datetime | None = None  # when complete() wrote the job's success
    _shielded: int = 0

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled (not while rolling back)."""
        if self.cancelled.is_set() and not self._shielded:
            raise JobCancelled()

    @contextmanager
    def uncancellable(self) -> Iterator[None]:
        """Rollbacks run in here: a cancel neither raises nor aborts their agent calls."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1

    def hold(self, keys: list[str]) -> AbstractContextManager[None]:
        """Take other resources' queues inside the job (in arrival order); a cancel stops the wait."""
        return self.manager.queues.hold(keys, self.check)

    def progress(self, stage: str, percent: float | None = None, force: bool = False) -> None:
        """Where the job is; kept in memory (the row is written when the job ends)."""
        self.stage, self.percent = stage, percent

    def complete(self, s: Session | Connection, result: dict[str, Any]) -> None:
        """Mark the job succeeded inside the caller's transaction (its last write).

        Saves the job a transaction of its own; the job must return right after
        the commit, and if it fails after all, the failure is written over this.
        """
        now = utcnow()
        core(s).execute(_SUCCEEDED, {"job": self.uuid, "result": result, "now": now})
        self.completed = now

    @property
    def db(self) -> Database:
        """The controller's database (one work object: database, agents, cancel, progress)."""
        return self.manager.db

    def call(self, agent_url: str, cmd: Returns[R], timeout: float | None = None, *,
             where: str | None = None, base: float = 0.0, span: float = 100.0) -> R:
        """An asynchronous agent command waited for inside the job: a cancel of the job
        cancels it on the agent, and the agent's progress shows as the job's
        (``<path> on <where>: <stage> <done>/<total> <unit>``, its percent mapped
        onto ``base .. base+span`` of the job's)."""
        self.check()
        path = route(cmd)[1]
        label = f"{path} on {where}:" if where else path

        def progress(p: dict[str, Any]) -> None:
            pct, done, total = p.get("percent"), p.get("done"), p.get("total")
            stage = f"{label} {p.get('stage') or ''}".rstrip()
            if isinstance(done, int) and isinstance(total, int) and total:
                stage += f" {done}/{total} {p.get('unit') or ''}".rstrip()
            self.progress(stage, base + span * float(pct) / 100
                          if isinstance(pct, int | float) else None)

        pending = self.manager.agents.call(agent_url, cmd, timeout or self.manager.command_timeout,
                                           on_progress=progress, job_uuid=self.uuid)
        return self.wait_call(pending)

    def wait_call(self, pending: PendingReply[R]) -> R:
        """Wait for an agent call; a cancel of the job cancels it on the agent."""
        pc = pending.call
        self.calls.add(pc)
        try:
            if self.cancelled.is_set() and not self._shielded:
                self.manager.agents.dispatcher.cancel(pc)
            return pending.result()
        finally:
            self.calls.discard(pc)


JobFn = Callable[[JobContext], dict[str, Any] | None]


@dataclass(eq=False)
class _Live:
    ctx: JobContext
    done: threading.Event
    work: QueuedWork | None = None
    started: bool = False
    row: Job | None = None  # as accepted; once final, as written (a copy: waiters read it)
    final: bool = False


class JobManager:
    """Creates, runs, waits for and cancels jobs."""

    def __init__(self, db: Database, agents: AgentClient, queues: ResourceQueues,
                 command_timeout: float = 300.0, node_id: str | None = None) -> None:
        self.db = db
        #: written into every job this manager starts (the node that runs it)
        self.node_id = node_id
        self.agents = agents
        self.queues = queues
        self.command_timeout = command_timeout
        self._live: dict[str, _Live] = {}
        self._done: OrderedDict[str, Job] = OrderedDict()  # recently finished here, as written
        self._mu = threading.Lock()

    def recover(self) -> list[str]:
        """Fail jobs left unfinished by a previous process (of this node, on several
        nodes); returns their uuids."""
        def fail_unfinished(s: Session) -> list[str]:
            mine = Job.node_id == self.node_id if self.node_id is not None else true()
            left = list(s.scalars(select(Job.uuid).where(Job.state.in_(("queued", "running")), mine)))
            if not left:
                return left
            s.execute(
                update(Job).where(Job.state.in_(("queued", "running")), mine).values(
                    state="failed", last_op_date=utcnow(),
                    error={"code": "CONTROLLER_RESTARTED",
                           "message": "the controller restarted while the job ran",
                           "details": {}}))
            return left
        left = self.db.transaction(fail_unfinished)
        if left:
            log.warning("marked %d unfinished job(s) failed after a restart", len(left))
        return left

    def submit(self, kind: str, resource_type: str, resource_uuid: str | None,
               keys: list[str], fn: JobFn) -> Job:
        """Accept a job: write it, queue it behind the work on its resources."""
        job = self.db.transaction(lambda s: self.prepare(s, kind, resource_type, resource_uuid))
        return self.start(job, keys, fn)

    def prepare(self, s: Session | Connection, kind: str, resource_type: str,
                resource_uuid: str | None) -> Job:
        """Write a job row in the caller's transaction; :meth:`start` it after the commit."""
        now = utcnow()
        job = Job(uuid=new_uuid(), kind=kind, resource_type=resource_type,
                  resource_uuid=resource_uuid, state="queued", stage=None, percent=None,
                  result=None, error=None, create_date=now, last_op_date=now, node_id=self.node_id)
        insert_row(s, job)
        return job

    def start(self, job: Job, keys: list[str], fn: JobFn) -> Job:
        """Queue a written job behind the work on its resources."""
        live = _Live(JobContext(job.uuid, self), threading.Event(), row=job)
        with self._mu:
            self._live[job.uuid] = live
        live.work = self.queues.submit(keys, lambda: self._run(live, fn))
        return job

    def _run(self, live: _Live, fn: JobFn) -> None:
        ctx = live.ctx
        with self._mu:
            live.started = True
        state, result, error = "failed", None, None
        try:
            ctx.check()
            ctx.state = "running"
            result = fn(ctx)
            state = "succeeded"
        except JobCancelled:
            state, error = "cancelled", {"code": "CANCELLED", "message": "the job was cancelled",
                                         "details": {}}
        except AgentCallError as e:
            error = e.to_dict()
            if e.code == "CANCELLED" and ctx.cancelled.is_set():
                state = "cancelled"
        except ApiError as e:
            error = e.to_dict()
        except Exception as e:
            log.exception("job %s raised", ctx.uuid)
            error = {"code": "INTERNAL_ERROR", "message": f"{type(e).__name__}: {e}", "details": {}}
        finally:
            self._finish(live, state, result, error)

    def _finish(self, live: _Live, state: str, result: dict[str, Any] | None,
                error: dict[str, Any] | None) -> None:
        try:
            percent = 100.0 if state == "succeeded" else None
            when = live.ctx.completed if state == "succeeded" else None
            if when is None:
                when = utcnow()
                self._set(live.ctx.uuid, state=state, result=result, error=error,
                          percent=percent, last_op_date=when)
            if live.row is not None:  # what the row now holds, so waiters need not read it
                r = live.row
                live.row = Job(uuid=r.uuid, kind=r.kind, resource_type=r.resource_type,
                               resource_uuid=r.resource_uuid, state=state, stage=r.stage,
                               percent=percent, result=result, error=error,
                               create_date=r.create_date, last_op_date=when, node_id=r.node_id)
                live.final = True
        finally:
            with self._mu:
                self._live.pop(live.ctx.uuid, None)
                if live.final and live.row is not None:  # a final row never changes
                    self._done[live.ctx.uuid] = live.row
                    while len(self._done) > RECENT_JOBS:
                        self._done.popitem(last=False)
            live.done.set()

    def _set(self, job_uuid: str, **values: Any) -> None:
        values.setdefault("last_op_date", utcnow())
        self.db.transaction(lambda s: s.execute(update(JOBS).where(JOBS.c.uuid == job_uuid)
                                                .values(**values)))

    def get(self, job_uuid: str) -> Job | None:
        """The job's row, with the live state and progress of a job still running here."""
        with self._mu:
            live = self._live.get(job_uuid)
            done = self._done.get(job_uuid)
        if done is not None:
            return done
        with self.db.read() as s:
            job = s.get(Job, job_uuid)
        if job is not None and live is not None and job.state not in FINAL_STATES:
            job.state, job.stage, job.percent = live.ctx.state, live.ctx.stage, live.ctx.percent
        return job

    def wait(self, job_uuid: str, timeout: float | None = None) -> Job | None:
        """Block until the job is final (or ``timeout``); returns its row."""
        with self._mu:
            live = self._live.get(job_uuid)
        if live is not None and live.done.wait(timeout) and live.final:
            return live.row
        return self.get(job_uuid)

    def cancel(self, job_uuid: str) -> Job | None:
        """Cancel a job: a queued one at once, a running one at its next step."""
        with self._mu:
            live = self._live.get(job_uuid)
        if live is None:
            return self.get(job_uuid)
        live.ctx.cancelled.set()
        with self._mu:
            started = live.started
        if not started and live.work is not None and self.queues.withdraw(live.work):
            self._finish(live, "cancelled", None,
                         {"code": "CANCELLED", "message": "the job was cancelled", "details": {}})
        elif not live.ctx._shielded:
            for pc in list(live.ctx.calls):
                self.agents.dispatcher.cancel(pc)
        return self.get(job_uuid)

    def unfinished(self) -> list[str]:
        with self.db.read() as s:
            return list(s.scalars(select(Job.uuid).where(Job.state.not_in(FINAL_STATES))))
