"""The backup policies' scheduler: due (policy, VM) pairs backed up as jobs, old ones pruned.

Each tick, every Enabled policy's attached VMs whose next run time has come
(one interval after the last run, or the cron expression's next time after
it; the attach time when it never ran) are backed up through the same code
path as ``POST /v1/vms/<uuid>/actions/backup``. The run is claimed first in
the database: ``last_run_at`` of the (policy, VM) row is set to the tick's time
by an UPDATE conditional on the slot being still unclaimed (``last_run_at`` NULL
when it was read NULL, else still before the slot's due time, which any claim
moves it past), and the job is submitted only when that UPDATE changed the row.
The condition is an order, not an equality with the value read: SQLite keeps
datetimes as text, and a value written by SQL (``datetime()``, an operator's
fix, a restored dump) need not have the fraction the controller writes, so
an equality would never match again and the pair would never run. So a
restarted controller neither doubles a
run (the slot is claimed already) nor misses one (a run due while it was down
is due at its first tick, once, however many slots passed). A job cut short
by the restart ends through the jobs' own recovery, and the next slot runs.

A VM has at most one scheduled backup in flight (its queue orders its jobs
anyway; a VM still busy waits for a later tick), and at most
``backup_schedule_max_jobs`` run at once in total: the pairs beyond that wait,
oldest due first. Then each VM keeps the newest ``retention_count`` Ready
backups its policy made; older ones (and those a restart left Error) are
deleted through the normal cascade, which removes them from the stores.
Backups made by hand are never pruned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from croniter import croniter
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from controller.background import Background
from controller.db.base import utcnow
from controller.db.jobs import FINAL_STATES, Job
from controller.db.models import BackupPolicy, Vm, VmBackup, VmBackupPolicyRef
from controller.errors import ApiError

if TYPE_CHECKING:
    from controller.core import Controller

log = logging.getLogger(__name__)
BACKUP_STATES = ("Running", "Stopped")  # the VM states a backup accepts


@dataclass(frozen=True)
class BackupJobs:
    """How the scheduler submits its jobs (the services', handed in by the server)."""

    #: (ctl, vm_uuid, backup_storage_uuid, policy_uuid) → the backup job
    backup: Callable[[Controller, str, str, str], Job]
    #: (ctl, vm_backup_uuid) → the cascade delete job
    delete: Callable[[Controller, str], Job]


@dataclass
class Tick:
    """What one tick did: backup jobs submitted (VM → job), deletes (VM backup → job)."""

    started: dict[str, str] = field(default_factory=dict)
    pruned: dict[str, str] = field(default_factory=dict)


def next_run(base: datetime, interval_seconds: int | None, cron_expression: str | None) -> datetime:
    """When a schedule runs next after ``base`` (naive UTC)."""
    if interval_seconds is not None:
        return base + timedelta(seconds=interval_seconds)
    nxt: datetime = croniter(cron_expression or "", base).get_next(datetime)
    return nxt


class BackupSchedule(Background):
    """Runs the backup policies of one controller: ``tick`` (a thread calls it every period)."""

    thread_name = "backup-schedule"

    def __init__(self, ctl: Controller, jobs: BackupJobs, max_jobs: int, period: float) -> None:
        super().__init__()
        self.ctl = ctl
        self.jobs = jobs
        self.max_jobs = max_jobs
        self.period = period
        self._inflight: dict[str, str] = {}  # vm uuid → its scheduled backup job
        self._deleting: dict[str, str] = {}  # vm backup uuid → its delete job
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except SQLAlchemyError as e:  # the database away: the next tick retries
                log.error("backup schedule tick failed: %s", e)
            except Exception:  # a bug must not end the schedule for good
                log.exception("backup schedule tick failed")
            self._stop.wait(self.period)

    def in_flight(self) -> dict[str, str]:
        """VM → its scheduled backup job still queued or running."""
        with self._lock:
            self._reap()
            return dict(self._inflight)

    def tick(self, now: datetime | None = None) -> Tick:
        """Prune what retention lets go, then back up the due pairs (``now``: naive UTC)."""
        now = now or utcnow()
        out = Tick()
        with self._lock:
            self._reap()
            self._prune(out)
            self._run_due(now, out)
        return out

    def _done(self, job_uuid: str) -> bool:
        job = self.ctl.jobs.get(job_uuid)
        return job is None or job.state in FINAL_STATES

    def _reap(self) -> None:
        for table in (self._inflight, self._deleting):
            for key in [k for k, j in table.items() if self._done(j)]:
                del table[key]

    def _run_due(self, now: datetime, out: Tick) -> None:
        with self.ctl.db.read() as s:
            rows = s.execute(
                select(VmBackupPolicyRef.id, VmBackupPolicyRef.vm_uuid, VmBackupPolicyRef.attach_date,
                       VmBackupPolicyRef.last_run_at, BackupPolicy.uuid, BackupPolicy.interval_seconds,
                       BackupPolicy.cron_expression, BackupPolicy.backup_storage_uuid, Vm.state)
                .join(BackupPolicy, BackupPolicy.uuid == VmBackupPolicyRef.backup_policy_uuid)
                .join(Vm, Vm.uuid == VmBackupPolicyRef.vm_uuid)
                .where(BackupPolicy.state == "Enabled")).all()
        due = []
        for r in rows:
            when = next_run(r.last_run_at or r.attach_date, r.interval_seconds, r.cron_expression)
            if when <= now and r.state in BACKUP_STATES and r.vm_uuid not in self._inflight \
                    and self.ctl.owns(r.vm_uuid):  # on several nodes, the VM's owner backs it up
                due.append((when, r))
        for when, r in sorted(due, key=lambda d: (d[0], d[1].id)):
            if len(self._inflight) >= self.max_jobs:
                log.info("backup schedule: %d jobs in flight; %d due runs wait", len(self._inflight),
                         len(due) - len(out.started))
                return
            if not self._claim(r.id, r.last_run_at, when, now):
                continue  # another tick (or controller) has it
            try:
                job = self.jobs.backup(self.ctl, r.vm_uuid, r.backup_storage_uuid, r.uuid)
            except ApiError as e:  # the slot is spent: the next one tries again
                log.warning("scheduled backup of vm %s (policy %s) refused: %s", r.vm_uuid, r.uuid, e)
                continue
            self._inflight[r.vm_uuid] = job.uuid
            out.started[r.vm_uuid] = job.uuid

    def _claim(self, ref_id: int, old: datetime | None, due: datetime, now: datetime) -> bool:
        """Set the pair's ``last_run_at`` to ``now`` (at or after ``due``) if the slot due at
        ``due`` is still unclaimed: whether it was. ``old`` is the value read."""
        row = VmBackupPolicyRef
        same = row.last_run_at.is_(None) if old is None else row.last_run_at < due
        with self.ctl.db.write() as s:
            res: Any = s.execute(update(row).where(row.id == ref_id, same).values(last_run_at=now))
            return int(res.rowcount or 0) == 1

    def _prune(self, out: Tick) -> None:
        with self.ctl.db.read() as s:
            rows = s.execute(
                select(VmBackup.uuid, VmBackup.vm_uuid, VmBackup.status, BackupPolicy.retention_count)
                .join(VmBackupPolicyRef, (VmBackupPolicyRef.vm_uuid == VmBackup.vm_uuid)
                      & (VmBackupPolicyRef.backup_policy_uuid == VmBackup.backup_policy_uuid))
                .join(BackupPolicy, BackupPolicy.uuid == VmBackup.backup_policy_uuid)
                .where(VmBackup.status != "Creating")
                .order_by(VmBackup.vm_uuid, VmBackup.create_date.desc(), VmBackup.uuid)).all()
        kept: dict[str, int] = {}
        for r in rows:
            if r.status == "Ready" and kept.get(r.vm_uuid, 0) < r.retention_count:
                kept[r.vm_uuid] = kept.get(r.vm_uuid, 0) + 1
                continue
            if r.uuid in self._deleting or not self.ctl.owns(r.vm_uuid):
                continue
            try:
                self._deleting[r.uuid] = out.pruned[r.uuid] = self.jobs.delete(self.ctl, r.uuid).uuid
            except ApiError as e:
                log.warning("pruning vm backup %s refused: %s", r.uuid, e)
