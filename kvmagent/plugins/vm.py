"""VM life cycle: start, stop, reboot, destroy, pause, resume, states, console."""

from __future__ import annotations

import time
from pathlib import Path

import libvirt

from agentcore.errors import NotFound
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from kvmagent import secgroups
from kvmagent.domain_spec import build_domain, domain_name
from kvmagent.events import RUNNING, STOPPED
from kvmagent.hypervisor import Hypervisor, kill_leftover_qemu
from kvmagent.models import (
    CheckVmStateCmd,
    ConsoleCmd,
    ConsoleReply,
    DestroyVmCmd,
    FileVolume,
    PauseVmCmd,
    RebootVmCmd,
    ResumeVmCmd,
    StartVmCmd,
    StartVmReply,
    StopVmCmd,
    SyncVmCmd,
    VmCmd,
    VmStateReply,
    VmStatesReply,
)
from kvmagent.services import KvmHost


def _vm_lock(cmd: VmCmd | StartVmCmd) -> str:
    return f"vm:{domain_name(cmd.vm_uuid)}"


class VmPlugin(Plugin):
    """Domains of kvmcloud VMs; every command is safe to re-run."""

    def __init__(self, host: KvmHost) -> None:
        self.host = host

    @property
    def hv(self) -> Hypervisor:
        return self.host.hv

    def console_log(self, vm_uuid: str) -> Path:
        return self.host.config.console_dir / f"{domain_name(vm_uuid)}.log"

    # -- start / stop -------------------------------------------------------

    @command(lock=_vm_lock)
    def start_vm(self, ctx: TaskContext, cmd: StartVmCmd) -> StartVmReply:
        """Build the domain from the VM spec and start it; a running VM is success."""
        dom = self.hv.lookup(cmd.vm_uuid)
        if dom is not None and self.hv.state_of(dom) != "Stopped":
            return self._started(cmd.vm_uuid, dom)
        for vol in [cmd.root_volume, *cmd.data_volumes]:
            if isinstance(vol, FileVolume) and not Path(vol.install_path).exists():
                raise NotFound("volume file does not exist", field="installPath",
                               volume_uuid=vol.volume_uuid, install_path=vol.install_path)
        if cmd.iso is not None and cmd.iso.path is not None and not Path(cmd.iso.path).exists():
            raise NotFound("ISO file does not exist", field="iso.path", path=cmd.iso.path)
        log = self.console_log(cmd.vm_uuid)
        log.parent.mkdir(parents=True, exist_ok=True)
        anti_spoofing = self.host.config.anti_spoofing
        guarded = secgroups.nics_with_groups(cmd.vm_uuid, cmd.nics, anti_spoofing=anti_spoofing)
        self.hv.call(lambda c: secgroups.prepare(c, cmd.security_groups, guarded, anti_spoofing=anti_spoofing),
                     vm_uuid=cmd.vm_uuid)
        xml = build_domain(cmd, domain_type=self.host.domain_type, console_log=log,
                           anti_spoofing=self.host.config.anti_spoofing).to_xml()
        ctx.check()
        with self.host.events.own(cmd.vm_uuid, domain_name(cmd.vm_uuid), RUNNING | STOPPED):
            if dom is not None:
                self.hv.destroy(dom)  # a defined, shut-off leftover of an older agent
            dom = self.hv.create(xml, paused=cmd.create_paused)
        return self._started(cmd.vm_uuid, dom)

    def _started(self, vm_uuid: str, dom: libvirt.virDomain) -> StartVmReply:
        state = self.hv.state_of(dom)
        self.host.events.remember(vm_uuid, state)
        port = None
        try:
            _host, port = self.hv.vnc_port(dom)
        except NotFound:
            pass
        return StartVmReply(vm_uuid=vm_uuid, state=state, vnc_port=port)

    @command(lock=_vm_lock)
    def stop_vm(self, ctx: TaskContext, cmd: StopVmCmd) -> VmStateReply:
        """ACPI shutdown, forced off after graceTimeout; no QEMU is left behind."""
        name = domain_name(cmd.vm_uuid)
        with self.host.events.own(cmd.vm_uuid, name, STOPPED):
            dom = self.hv.lookup(cmd.vm_uuid)
            if dom is not None and cmd.type == "grace" and self.hv.state_of(dom) == "Running":
                self.hv.shutdown(dom)
                end = time.monotonic() + ctx.remaining(cmd.grace_timeout)
                while time.monotonic() < end and self.hv.state(cmd.vm_uuid) != "Stopped":
                    ctx.wait(self.host.config.stop_poll_interval)
            dom = self.hv.lookup(cmd.vm_uuid)
            if dom is not None:
                if self.hv.state_of(dom) != "Stopped":
                    ctx.log.info("VM %s is still up: forcing it off", cmd.vm_uuid)
                self._destroy(dom)
            killed = kill_leftover_qemu(name)
            if killed:
                ctx.log.warning("killed leftover QEMU processes %s of %s", killed, name)
        self.host.events.remember(cmd.vm_uuid, "Stopped")
        return VmStateReply(vm_uuid=cmd.vm_uuid, state="Stopped")

    @command(lock=_vm_lock)
    def destroy(self, ctx: TaskContext, cmd: DestroyVmCmd) -> VmStateReply:
        """Power off at once and undefine; an absent VM is success."""
        name = domain_name(cmd.vm_uuid)
        with self.host.events.own(cmd.vm_uuid, name, STOPPED):
            dom = self.hv.lookup(cmd.vm_uuid)
            if dom is not None:
                self._destroy(dom)
            kill_leftover_qemu(name)
        self.host.events.remember(cmd.vm_uuid, "Stopped")
        return VmStateReply(vm_uuid=cmd.vm_uuid, state="Stopped")

    def _destroy(self, dom: libvirt.virDomain) -> None:
        """Power off and undefine, then drop the VM's NIC filters (its start defines them again)."""
        filters = secgroups.nic_filters_of(self.hv.xml_of(dom))
        self.hv.destroy(dom)
        self.hv.call(lambda c: secgroups.undefine(c, filters, in_use_ok=True))

    @command(lock=_vm_lock)
    def reboot(self, ctx: TaskContext, cmd: RebootVmCmd) -> VmStateReply:
        """Reboot through ACPI (the guest restarts itself; libvirt restarts QEMU if it powers off)."""
        dom = self.hv.require(cmd.vm_uuid)
        with self.host.events.own(cmd.vm_uuid, domain_name(cmd.vm_uuid), RUNNING | STOPPED):
            self.hv.reboot(dom, force=False)
        return VmStateReply(vm_uuid=cmd.vm_uuid, state=self.hv.state_of(dom))

    @command(lock=_vm_lock)
    def pause(self, ctx: TaskContext, cmd: PauseVmCmd) -> VmStateReply:
        """Pause the vCPUs; a paused VM is success."""
        dom = self.hv.require(cmd.vm_uuid)
        with self.host.events.own(cmd.vm_uuid, domain_name(cmd.vm_uuid), frozenset({"Paused"})):
            self.hv.suspend(dom)
        self.host.events.remember(cmd.vm_uuid, "Paused")
        return VmStateReply(vm_uuid=cmd.vm_uuid, state=self.hv.state_of(dom))

    @command(lock=_vm_lock)
    def resume(self, ctx: TaskContext, cmd: ResumeVmCmd) -> VmStateReply:
        """Resume a paused VM; a running VM is success."""
        dom = self.hv.require(cmd.vm_uuid)
        with self.host.events.own(cmd.vm_uuid, domain_name(cmd.vm_uuid), frozenset({"Running"})):
            self.hv.resume(dom)
        self.host.events.remember(cmd.vm_uuid, "Running")
        return VmStateReply(vm_uuid=cmd.vm_uuid, state=self.hv.state_of(dom))

    # -- queries ---------------------------------------------------------------

    @command()
    def sync(self, ctx: TaskContext, cmd: SyncVmCmd) -> VmStatesReply:
        """The state of every kvmcloud VM libvirt has on this host."""
        return VmStatesReply(states={d.vm_uuid: d.state for d in self.hv.domains()})

    @command()
    def check_state(self, ctx: TaskContext, cmd: CheckVmStateCmd) -> VmStatesReply:
        """The state of the named VMs (Stopped when libvirt has no such domain)."""
        return VmStatesReply(states={u: self.hv.state(u) for u in cmd.vm_uuids})

    @command()
    def console(self, ctx: TaskContext, cmd: ConsoleCmd) -> ConsoleReply:
        """Where the VM's VNC console listens."""
        host, port = self.hv.vnc_port(self.hv.require(cmd.vm_uuid))
        return ConsoleReply(protocol="vnc", host=host, port=port)
