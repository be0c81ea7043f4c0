"""The controller object: database, dispatcher, queues, jobs, tracker and caches, wired once."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, true, update
from sqlalchemy.orm import Session

from controller.agent_tokens import AgentTokens
from controller.backup_schedule import BackupJobs, BackupSchedule
from controller.cluster.membership import Membership, Takeover
from controller.db.base import Database
from controller.db.lookups import NetworkLookups
from controller.db.models import (
    BackupStorage,
    Host,
    Image,
    Job,
    PrimaryStorage,
    Vm,
    VmBackup,
    Volume,
    VolumeBackup,
)
from controller.db_schedule import DbBackupSchedule
from controller.dispatch.client import AgentClient
from controller.dispatch.dispatcher import Dispatcher
from controller.dispatch.transport import HttpTransport, Transport
from controller.errors import ApiError
from controller.jobs import JobContext, JobManager
from controller.netstate import HostNetworkState
from controller.queues import ResourceQueues
from controller.recovery import settle_agent_tasks
from controller.settings import Settings
from controller.tracker import ConnectHost, HostDead, HostTracker

log = logging.getLogger(__name__)

CALLBACK_PATH = "/v1/agent-callbacks"
EVENTS_PATH = "/v1/agent-events"
TRANSITIONAL = ("Starting", "Stopping", "Rebooting", "Migrating", "Pausing", "Resuming",
                "Destroying")


class Controller:
    """Everything behind the API of one controller process."""

    def __init__(self, settings: Settings, transport: Transport | None = None, *,
                 connect_host: ConnectHost, backup_jobs: BackupJobs | None = None,
                 host_dead: HostDead | None = None) -> None:
        """``connect_host(ctl, host_uuid)`` connects a host's agents again (the tracker's
        reconnect): the services' ``hosts.connect``, handed in because they import this;
        ``host_dead(ctl, host_uuid)``: what follows a host declared Dead (HA; None: nothing);
        ``backup_jobs``: how the backup policies' scheduler submits (None: no scheduler)."""
        self.settings = settings
        self.db = Database(settings.db_url)
        self.db.create_all()
        self.networks = NetworkLookups()
        #: what this process did on its hosts' networks (bridges, secrets, peer lists, DHCP)
        self.host_network = HostNetworkState()
        #: Ceph primary storages whose pools this process made sure of
        self.ceph_pools_ready: set[str] = set()
        self.transport = transport or HttpTransport()
        self.agent_tokens = AgentTokens(self.db, settings.agent_token)
        self.dispatcher = Dispatcher(
            self.transport, settings.callback_base + CALLBACK_PATH, token=self.agent_tokens.for_url,
            poll_after=settings.poll_after)
        self.agents = AgentClient(self.dispatcher)
        self.queues = ResourceQueues(settings.job_workers)
        self.jobs = JobManager(self.db, self.agents, self.queues, settings.command_timeout,
                               node_id=settings.node_id)
        #: with a node id: this node's lease and the ring of the nodes sharing the database
        self.membership = (Membership(self.db, settings.node_id, settings.callback_base,
                                      lease=settings.node_lease, interval=settings.heartbeat_interval,
                                      recover=self._recover_rows, on_takeover=self._take_over,
                                      on_fenced=self._fenced)
                           if settings.node_id is not None else None)
        if self.membership is not None:
            self.membership.join()  # before recovering: a peer no longer takes this node's jobs
        #: VM backups a previous process left Creating: deleted (cleaned up) at start
        self.cut_short_backups: list[str] = []
        #: jobs a previous process left unfinished (failed now): their agent tasks are stopped at start
        self.dead_jobs = self.jobs.recover()
        if self.dead_jobs:
            # on several nodes only what this node's jobs worked on: the peers' work goes on
            self._recover_resources(self._job_resources(self.dead_jobs)
                                    if self.membership is not None else None)
        self.tracker = HostTracker(self, connect_host, host_dead)
        self.db_backups = (DbBackupSchedule(settings.db_url, Path(settings.db_backup_dir),
                                            settings.db_backup_interval, settings.db_backup_keep)
                           if settings.db_backup_dir else None)
        self.backup_schedule = (BackupSchedule(self, backup_jobs, settings.backup_schedule_max_jobs,
                                               settings.backup_schedule_period)
                                if backup_jobs is not None else None)

    def owns(self, resource_uuid: str) -> bool:
        """Whether this node owns the resource (always, on a single node)."""
        return self.membership is None or self.membership.owns(resource_uuid)

    def _job_resources(self, jobs: list[str]) -> list[str]:
        with self.db.read() as s:
            return sorted({r for r in s.scalars(select(Job.resource_uuid).where(Job.uuid.in_(jobs)))
                           if r})

    def _recover_resources(self, resources: list[str] | None) -> None:
        """Resources a dead process left mid-operation (every one, or those of ``resources``:
        what a dead node's jobs worked on): the tracker's next sync settles them."""
        with self.db.write() as s:
            self.cut_short_backups += self._recover_rows(s, resources)

    @staticmethod
    def _recover_rows(s: Session, resources: list[str] | None) -> list[str]:
        """:meth:`_recover_resources` in the caller's transaction (a takeover's: the jobs end
        and their resources leave Creating at one commit); the backups to delete."""
        def scope(*cols: Any) -> Any:
            return true() if resources is None else or_(*(c.in_(resources) for c in cols))
        # volumes whose making was cut short: whether their files are on the storage is
        # unknown; Error lets deleting the VM (or the volume) remove them (deleting a file
        # never made is no error), where Creating ones would be left there for good
        s.execute(update(Volume).where(Volume.status == "Creating",
                                       scope(Volume.uuid, Volume.vm_uuid))
                  .values(status="Error"))
        s.execute(update(Vm).where(Vm.state == "Creating", scope(Vm.uuid)).values(state="Error"))
        s.execute(update(Vm).where(Vm.state.in_(TRANSITIONAL), scope(Vm.uuid))
                  .values(state="Unknown"))
        # an add cut short: which stores got it is unknown; delete the image to clean up
        s.execute(update(Image).where(Image.status == "Downloading", scope(Image.uuid))
                  .values(status="Error"))
        # a backup cut short: deleted at start (its copy, overlay and stored chunks go)
        backups = list(s.scalars(select(VmBackup.uuid).where(
            VmBackup.status == "Creating", scope(VmBackup.uuid, VmBackup.vm_uuid))))
        s.execute(update(VolumeBackup).where(
            VolumeBackup.status == "Creating",
            scope(VolumeBackup.uuid, VolumeBackup.vm_backup_uuid, VolumeBackup.volume_uuid))
            .values(status="Error"))
        s.execute(update(VmBackup).where(VmBackup.uuid.in_(backups)).values(status="Error"))
        return backups

    def _take_over(self, taken: Takeover) -> None:
        """A peer node was lost (its jobs ended ``CONTROLLER_LOST`` by the sweep): recovery
        as after a restart, for what its jobs worked on."""
        if not taken.jobs:
            return
        self.cut_short_backups += taken.backups  # the sweep recovered the resources' rows
        self.jobs.submit("recover-agent-tasks", "controller", None,
                         [f"controller:takeover:{'+'.join(taken.nodes)}"],
                         lambda ctx: self._settle_jobs(ctx, taken.jobs))

    def _fenced(self) -> None:
        """A peer ended this node's jobs: none of them may go on here (no job runs twice)."""
        log.critical("exiting: controller node %s lost its lease", self.settings.node_id)
        os._exit(75)

    @property
    def events_url(self) -> str:
        """Where agents push events (``<base>/v1/agent-events``; the host UUID is appended)."""
        return self.settings.callback_base + EVENTS_PATH

    def start(self) -> None:
        if self.settings.tracker:
            self.tracker.start()
        if self.db_backups is not None:
            self.db_backups.start()
        if self.backup_schedule is not None and self.settings.backup_schedule:
            self.backup_schedule.start()
        if self.membership is not None:
            self.membership.start()
        if self.dead_jobs:
            dead, self.dead_jobs = self.dead_jobs, []
            self.jobs.submit("recover-agent-tasks", "controller", None, ["controller:recovery"],
                             lambda ctx: self._settle_jobs(ctx, dead))

    def _settle_jobs(self, ctx: JobContext, dead: list[str]) -> dict[str, Any]:
        """Unfinished jobs of a previous process or a lost node: their tasks on every agent
        cancelled and waited for (an agent still copying into a store would otherwise undo
        the cleanup), then the backups they cut short deleted."""
        with self.db.read() as s:
            urls = {u for q in (select(Host.agent_url), select(Host.storage_agent_url),
                                select(PrimaryStorage.agent_url), select(BackupStorage.agent_url))
                    for u in s.scalars(q) if u}
        left = settle_agent_tasks(self.dispatcher, sorted(urls), dead, self.settings.recovery_wait,
                                  ctx.progress)
        deleted = []
        if self.backup_schedule is not None:
            cut_short, self.cut_short_backups = self.cut_short_backups, []
            for uuid in cut_short:
                try:
                    deleted.append(self.backup_schedule.jobs.delete(self, uuid).uuid)
                except ApiError as e:
                    log.warning("backup %s cut short by the restart stays: %s", uuid, e)
        return {"deadJobs": len(dead), "agents": len(urls), "tasksLeftRunning": left,
                "backupDeleteJobs": deleted}

    def close(self) -> None:
        if self.membership is not None:
            self.membership.stop()
            self.membership.leave()
        self.tracker.stop()
        if self.db_backups is not None:
            self.db_backups.stop()
        if self.backup_schedule is not None:
            self.backup_schedule.stop()
        self.dispatcher.close()
        self.queues.shutdown()
        self.transport.close()
        self.db.dispose()
