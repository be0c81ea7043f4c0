"""Devices of a running VM: data volumes, snapshots and merges, ISOs, NICs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import libvirt

from agentcore.errors import Conflict, InvalidRequest, NotFound
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from kvmagent import secgroups
from kvmagent.blockjobs import wait_block_job
from kvmagent.domain_spec import cdrom_for, disk_for, domain_name, interface_for, target_dev
from kvmagent.domain_xml import DiskSnapshot, to_string
from kvmagent.hypervisor import Hypervisor
from kvmagent.models import (
    AttachIsoCmd,
    AttachVolumeCmd,
    DetachIsoCmd,
    DetachNicCmd,
    DetachVolumeCmd,
    FileVolume,
    IsoSpec,
    MergeSnapshotCmd,
    MergeSnapshotReply,
    NicCmd,
    NicReply,
    ResizeVolumeCmd,
    ResizeVolumeReply,
    SnapshotVolumeCmd,
    SnapshotVolumeReply,
    VmCmd,
    VolumeReply,
)
from kvmagent.services import KvmHost

UNPLUG_TIMEOUT = 30.0


def _vm_lock(cmd: VmCmd) -> str:
    return f"vm:{domain_name(cmd.vm_uuid)}"


def _machine(hv: Hypervisor, dom: libvirt.virDomain) -> str:
    t = hv.xml_of(dom).find("os/type")
    machine = t.get("machine", "pc") if t is not None else "pc"
    return "q35" if "q35" in machine else "pc"


class DevicePlugin(Plugin):
    """Hot-plug and online block operations; each is idempotent."""

    def __init__(self, host: KvmHost) -> None:
        self.host = host

    @property
    def hv(self) -> Hypervisor:
        return self.host.hv

    def _wait_gone(self, ctx: TaskContext, find: Callable[[], object | None], what: str) -> None:
        """Wait for the guest to release an unplugged device (ACPI eject)."""
        end = ctx.remaining(UNPLUG_TIMEOUT)
        waited = 0.0
        while waited < end:
            if find() is None:
                return
            ctx.wait(0.2)
            waited += 0.2
        raise Conflict(f"the guest did not release {what}", device=what)

    # -- data volumes ---------------------------------------------------------

    @command(lock=_vm_lock)
    def attach_volume(self, ctx: TaskContext, cmd: AttachVolumeCmd) -> VolumeReply:
        """Hot-plug a data volume; already attached (same source) is success."""
        dom = self.hv.require(cmd.vm_uuid)
        disk = disk_for(cmd.volume)
        current = self.hv.disk_element(dom, disk.target_dev)
        if current is not None:
            src = current.find("source")
            same = src is not None and (src.get("file") or src.get("name")) == cmd.volume.install_path
            if same:
                return VolumeReply(vm_uuid=cmd.vm_uuid, device=disk.target_dev)
            raise Conflict("another volume holds this device", device=disk.target_dev)
        if isinstance(cmd.volume, FileVolume) and not Path(cmd.volume.install_path).exists():
            raise NotFound("volume file does not exist", field="volume.installPath")
        self.hv.attach(dom, to_string(disk.to_element()))
        return VolumeReply(vm_uuid=cmd.vm_uuid, device=disk.target_dev)

    @command(lock=_vm_lock)
    def detach_volume(self, ctx: TaskContext, cmd: DetachVolumeCmd) -> VolumeReply:
        """Hot-unplug a data volume and wait for the guest to let go of it."""
        target = target_dev(cmd.volume.bus, cmd.volume.device_id)
        dom = self.hv.lookup(cmd.vm_uuid)
        if dom is None:
            return VolumeReply(vm_uuid=cmd.vm_uuid, device=target)
        current = self.hv.disk_element(dom, target)
        if current is None:
            return VolumeReply(vm_uuid=cmd.vm_uuid, device=target)
        self.hv.detach(dom, to_string(current))
        self._wait_gone(ctx, lambda: self.hv.disk_element(dom, target), target)
        return VolumeReply(vm_uuid=cmd.vm_uuid, device=target)

    @command(lock=_vm_lock)
    def resize_volume(self, ctx: TaskContext, cmd: ResizeVolumeCmd) -> ResizeVolumeReply:
        """Grow a volume online (the guest sees the new capacity); never shrinks."""
        dom = self.hv.require(cmd.vm_uuid)
        target = target_dev(cmd.volume.bus, cmd.volume.device_id)
        capacity = self.hv.call(lambda _c: dom.blockInfo(target, 0)[0], device=target)
        if cmd.size < capacity:
            raise InvalidRequest("size: a volume cannot shrink", field="size", current=capacity)
        if cmd.size > capacity:
            self.hv.call(lambda _c: dom.blockResize(target, cmd.size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES),
                         device=target)
        return ResizeVolumeReply(size=self.hv.call(lambda _c: dom.blockInfo(target, 0)[0]))

    @command(lock=_vm_lock)
    def snapshot_volume(self, ctx: TaskContext, cmd: SnapshotVolumeCmd) -> SnapshotVolumeReply:
        """External disk-only snapshot: the live volume continues on a new qcow2 overlay."""
        if not isinstance(cmd.volume, FileVolume):
            raise InvalidRequest("volume.type: online snapshots here are for file volumes; use Ceph for rbd",
                                 field="volume.type")
        dom = self.hv.require(cmd.vm_uuid)
        target = target_dev(cmd.volume.bus, cmd.volume.device_id)
        el = self.hv.disk_element(dom, target)
        if el is None:
            raise NotFound("the volume is not attached", device=target)
        src = el.find("source")
        live = src.get("file") if src is not None else None
        if live == cmd.new_install_path:  # re-run after success
            return SnapshotVolumeReply(snapshot_install_path=cmd.volume.install_path,
                                       new_install_path=cmd.new_install_path)
        if live != cmd.volume.install_path:
            raise Conflict("the VM writes to another file than volume.installPath", live=live)
        others = [t.get("dev", "") for t in self.hv.xml_of(dom).findall("devices/disk/target")
                  if t.get("dev") != target]
        snap = DiskSnapshot(target=target, new_file=cmd.new_install_path, other_targets=others)
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        self.hv.call(lambda _c: dom.snapshotCreateXML(snap.to_xml(), flags), device=target)
        size = Path(cmd.volume.install_path).stat().st_size
        return SnapshotVolumeReply(snapshot_install_path=cmd.volume.install_path,
                                   new_install_path=cmd.new_install_path, size=size)

    @command(lock=_vm_lock)
    def merge_snapshot(self, ctx: TaskContext, cmd: MergeSnapshotCmd) -> MergeSnapshotReply:
        """Merge a backing chain online (commit into the base and pivot, or pull into the top)."""
        dom = self.hv.require(cmd.vm_uuid)
        target = target_dev(cmd.volume.bus, cmd.volume.device_id)
        bandwidth = cmd.bandwidth or 0
        if cmd.mode == "commit":
            assert cmd.base_install_path is not None
            el = self.hv.disk_element(dom, target)
            src = el.find("source") if el is not None else None
            if src is not None and src.get("file") == cmd.base_install_path:
                return MergeSnapshotReply(install_path=cmd.base_install_path)  # already pivoted
            flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
            self.hv.call(lambda _c: dom.blockCommit(target, cmd.base_install_path, None, bandwidth, flags),
                         device=target)
            wait_block_job(ctx, self.hv, dom, target, stage="commit", pivot=True)
            return MergeSnapshotReply(install_path=cmd.base_install_path)
        self.hv.call(lambda _c: dom.blockRebase(target, cmd.base_install_path, bandwidth, 0), device=target)
        wait_block_job(ctx, self.hv, dom, target, stage="pull", pivot=False)
        return MergeSnapshotReply(install_path=cmd.volume.install_path)

    # -- ISOs -----------------------------------------------------------------

    @command(lock=_vm_lock)
    def attach_iso(self, ctx: TaskContext, cmd: AttachIsoCmd) -> VolumeReply:
        """Insert an ISO into the VM's CD-ROM drive."""
        if cmd.iso.path is None:
            raise InvalidRequest("iso.path is required", field="iso.path")
        if not Path(cmd.iso.path).exists():
            raise NotFound("ISO file does not exist", field="iso.path")
        dom = self.hv.require(cmd.vm_uuid)
        drive = cdrom_for(cmd.iso, _machine(self.hv, dom))
        self.hv.update(dom, to_string(drive.to_element()))
        return VolumeReply(vm_uuid=cmd.vm_uuid, device=drive.target_dev)

    @command(lock=_vm_lock)
    def detach_iso(self, ctx: TaskContext, cmd: DetachIsoCmd) -> VolumeReply:
        """Eject the ISO; an empty drive or a stopped VM is success."""
        dom = self.hv.lookup(cmd.vm_uuid)
        if dom is None:
            return VolumeReply(vm_uuid=cmd.vm_uuid)
        drive = cdrom_for(IsoSpec(device_id=cmd.device_id), _machine(self.hv, dom))
        self.hv.update(dom, to_string(drive.to_element()))
        return VolumeReply(vm_uuid=cmd.vm_uuid, device=drive.target_dev)

    # -- NICs -----------------------------------------------------------------

    @command(lock=_vm_lock)
    def attach_nic(self, ctx: TaskContext, cmd: NicCmd) -> NicReply:
        """Hot-plug a NIC on a bridge; a NIC with this MAC already there is success."""
        dom = self.hv.require(cmd.vm_uuid)
        if self.hv.nic_element(dom, cmd.nic.mac) is None:
            anti_spoofing = self.host.config.anti_spoofing
            guarded = secgroups.nics_with_groups(cmd.vm_uuid, [cmd.nic], anti_spoofing=anti_spoofing)
            self.hv.call(lambda c: secgroups.prepare(c, cmd.security_groups, guarded, anti_spoofing=anti_spoofing))
            nic = interface_for(cmd.nic, anti_spoofing=anti_spoofing)
            self.hv.attach(dom, to_string(nic.to_element()))
        return self._nic_reply(dom, cmd.vm_uuid, cmd.nic.mac)

    @command(lock=_vm_lock)
    def detach_nic(self, ctx: TaskContext, cmd: DetachNicCmd) -> NicReply:
        """Hot-unplug the NIC with this MAC; absent is success."""
        dom = self.hv.lookup(cmd.vm_uuid)
        if dom is None:
            return NicReply(vm_uuid=cmd.vm_uuid, mac=cmd.mac)
        el = self.hv.nic_element(dom, cmd.mac)
        if el is not None:
            self.hv.detach(dom, to_string(el))
            self._wait_gone(ctx, lambda: self.hv.nic_element(dom, cmd.mac), cmd.mac)
        name = secgroups.nic_filter_name(cmd.mac)
        self.hv.call(lambda c: secgroups.undefine(c, [name], in_use_ok=True))
        return NicReply(vm_uuid=cmd.vm_uuid, mac=cmd.mac)

    def _nic_reply(self, dom: libvirt.virDomain, vm_uuid: str, mac: str) -> NicReply:
        el = self.hv.nic_element(dom, mac)
        tgt = el.find("target") if el is not None else None
        return NicReply(vm_uuid=vm_uuid, mac=mac, device_name=tgt.get("dev", "") if tgt is not None else "")
