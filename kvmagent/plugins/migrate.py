"""Live migration to another host's libvirtd, with progress and cancel.

The source libvirtd opens the destination itself (peer to peer) and tunnels the
guest's memory through that connection. By default the connection is SSH
(libvirt's libssh transport) as root with the migration key, which the
destination authorizes for ``virt-ssh-helper`` only, and the destination's host
key must be in the migration known_hosts: authenticated both ways and
encrypted. Plain ``qemu+tcp`` (no auth, no encryption) only when the agent's
config says so, for tests.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qsl, quote, urlsplit

import libvirt

from agentcore.errors import AgentError
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from kvmagent import secgroups
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

    def __init__(self, host: KvmHost) -> None:
        self.host = host

    @command(lock=_lock)
    def migrate(self, ctx: TaskContext, cmd: MigrateVmCmd) -> MigrateVmReply:
        """Live-migrate the VM (bandwidth MiB/s, max downtime ms, auto-converge); cancel aborts it."""
        dom = self.host.hv.lookup(cmd.vm_uuid)
        reply = MigrateVmReply(vm_uuid=cmd.vm_uuid, dest_host_ip=cmd.dest_host_ip)
        if dom is None:
            if self._running_at_destination(cmd):
                return reply  # a re-run after the migration finished
            raise MigrationFailed("the VM is not on this host", vm_uuid=cmd.vm_uuid)
        dest_uri = self._dest_uri(cmd)
        params: dict[str, object] = {}
        if cmd.bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = cmd.bandwidth
        # no data URI: with TUNNELLED the memory rides the (authenticated, encrypted) libvirt
        # connection instead of a plaintext QEMU stream to a port of the destination
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_TUNNELLED
        if cmd.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if cmd.unsafe:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        filters = secgroups.nic_filters_of(self.host.hv.xml_of(dom))
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(ctx, dom, cmd, done), daemon=True)
        ctx.on_stop(lambda: _abort(dom))
        try:
            with self.host.events.own(cmd.vm_uuid, domain_name(cmd.vm_uuid)):
                watcher.start()
                try:
                    dom.migrateToURI3(dest_uri, params, flags)
                except libvirt.libvirtError as e:
                    ctx.check()  # cancelled or past the deadline: say so, not "failed"
                    raise MigrationFailed(str(e), dest_uri=_public(dest_uri)) from None
        finally:
            done.set()
        self.host.events.remember(cmd.vm_uuid, "Stopped")
        # the destination has its own copy of the NIC filters (the controller applied them there)
        self.host.hv.call(lambda c: secgroups.undefine(c, filters, in_use_ok=True))
        ctx.progress(100.0, stage="migrated", force=True)
        return reply

    def _dest_uri(self, cmd: MigrateVmCmd) -> str:
        """The destination's libvirt URI: the command's, else the configured transport's."""
        conf = self.host.config
        if cmd.dest_uri is None:
            if conf.migration_transport == "tcp":
                return f"qemu+tcp://{cmd.dest_host_ip}/system"
            query = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in (
                ("keyfile", conf.migration_ssh_key), ("known_hosts", conf.migration_known_hosts),
                ("known_hosts_verify", "normal"),  # an unknown host key fails, never gets added
                ("sshauth", "privkey")))
            return f"qemu+libssh://root@{cmd.dest_host_ip}:{conf.migration_ssh_port}/system?{query}"
        if cmd.dest_uri.startswith("qemu+tcp://") and conf.migration_transport != "tcp":
            raise MigrationFailed("qemu+tcp has no authentication and no encryption; this agent "
                                  "migrates over SSH (migration_transport = \"ssh\")",
                                  dest_uri=_public(cmd.dest_uri))
        if _skips_host_key_check(cmd.dest_uri):
            raise MigrationFailed("the destination's host key must be checked", dest_uri=_public(cmd.dest_uri))
        return cmd.dest_uri

    def _running_at_destination(self, cmd: MigrateVmCmd) -> bool:
        try:
            conn = libvirt.open(self._dest_uri(cmd))
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


def _skips_host_key_check(uri: str) -> bool:
    """Whether the URI turns the SSH host key check off or accepts a new key on first use
    (libvirt reads parameter names case-insensitively and no_verify as an integer)."""
    for raw_name, value in parse_qsl(urlsplit(uri).query, keep_blank_values=True):
        name = raw_name.lower()
        if name == "no_verify" and value.strip().lstrip("+-").lstrip("0") != "":
            return True
        if name == "known_hosts_verify" and value != "normal":
            return True
    return False


def _public(uri: str) -> str:
    """The URI without its query (key and known_hosts paths stay out of job errors)."""
    return uri.partition("?")[0]


def _abort(dom: libvirt.virDomain) -> None:
    try:
        dom.abortJob()
    except libvirt.libvirtError:
        pass
