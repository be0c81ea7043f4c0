"""Live migration to another host's libvirtd, with progress and cancel."""

from __future__ import annotations

import threading

import libvirt

from agentcore.errors import AgentError
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from kvmagent.domain_spec import domain_name
from kvmagent.models import MigrateVmCmd, MigrateVmReply
from kvmagent.services import KvmHost

PROGRESS_PERIOD = 0.5


class MigrationFailed(AgentError):
    code = "MIGRATION_FAILED"
    default_message = "the live migration failed"


def _lock(cmd: MigrateVmCmd) -> str:
    return f"vm:{domain_name(cmd.vm_uuid)}"


class MigratePlugin(Plugin):
    """Moves a running VM to another host; disks are on shared storage."""

    prefix = "/vm"

    def __init__(self, host: KvmHost) -> None:
        self.host = host

    @command("/migrate", lock=_lock)
    def migrate(self, ctx: TaskContext, cmd: MigrateVmCmd) -> MigrateVmReply:
        """Live-migrate the VM (bandwidth MiB/s, max downtime ms, auto-converge); cancel aborts it."""
        dom = self.host.hv.lookup(cmd.vm_uuid)
        reply = MigrateVmReply(vm_uuid=cmd.vm_uuid, dest_host_ip=cmd.dest_host_ip)
        if dom is None:
            if self._running_at_destination(cmd):
                return reply  # a re-run after the migration finished
            raise MigrationFailed("the VM is not on this host", vm_uuid=cmd.vm_uuid)
        dest_uri = cmd.dest_uri or f"qemu+tcp://{cmd.dest_host_ip}/system"
        try:
            dconn = libvirt.open(dest_uri)
        except libvirt.libvirtError as e:
            raise MigrationFailed("cannot reach the destination libvirtd", dest_uri=dest_uri, reason=str(e)) from None
        params: dict[str, object] = {}
        data_uri = f"tcp://{cmd.dest_host_ip}" + (f":{cmd.migration_port}" if cmd.migration_port else "")
        params[libvirt.VIR_MIGRATE_PARAM_URI] = data_uri
        if cmd.bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = cmd.bandwidth
        flags = libvirt.VIR_MIGRATE_LIVE
        if cmd.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if cmd.unsafe:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(ctx, dom, cmd, done), daemon=True)
        ctx.on_stop(lambda: _abort(dom))
        try:
            with self.host.events.own(cmd.vm_uuid, domain_name(cmd.vm_uuid)):
                watcher.start()
                try:
                    dom.migrate3(dconn, params, flags)
                except libvirt.libvirtError as e:
                    ctx.check()  # cancelled or past the deadline: say so, not "failed"
                    raise MigrationFailed(str(e), dest_uri=dest_uri) from None
        finally:
            done.set()
            dconn.close()
        self.host.events.remember(cmd.vm_uuid, "Stopped")
        ctx.progress(100.0, stage="migrated", force=True)
        return reply

    def _running_at_destination(self, cmd: MigrateVmCmd) -> bool:
        uri = cmd.dest_uri or f"qemu+tcp://{cmd.dest_host_ip}/system"
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            return False
        try:
            conn.lookupByName(domain_name(cmd.vm_uuid))
            return True
        except libvirt.libvirtError:
            return False
        finally:
            conn.close()

    def _watch(self, ctx: TaskContext, dom: libvirt.virDomain, cmd: MigrateVmCmd, done: threading.Event) -> None:
        downtime_set = cmd.downtime is None
        while not done.wait(PROGRESS_PERIOD):
            try:
                stats = dom.jobStats(0)
                if not downtime_set and stats.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE:
                    dom.migrateSetMaxDowntime(cmd.downtime, 0)
                    downtime_set = True
            except libvirt.libvirtError:
                continue
            total, processed = stats.get("data_total", 0), stats.get("data_processed", 0)
            if total:
                ctx.progress(min(99.0, 100.0 * processed / total), stage="migrating",
                             done=processed, total=total, unit="bytes")


def _abort(dom: libvirt.virDomain) -> None:
    try:
        dom.abortJob()
    except libvirt.libvirtError:
        pass
