"""Policy: which libvirt elements a kvmcloud VM spec becomes.

Device names follow the device id (virtio disk 2 is ``vdc``), CD-ROMs sit on
IDE (``pc``) or SATA (``q35``), and the domain is named by the VM UUID so that
the host can find it without the agent's memory.
"""

from __future__ import annotations

import string
from pathlib import Path

from kvmagent.domain_xml import (
    Device,
    Disk,
    DiskHost,
    Domain,
    FilterRef,
    Graphics,
    Interface,
    MemBalloon,
    Metadata,
    Os,
    SerialFile,
)
from kvmagent.models import FileVolume, IsoSpec, NicSpec, RbdVolume, StartVmCmd
from kvmagent.nwfilter import NIC_FILTER
from kvmagent.secgroups import nic_filter_name

_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


def canonical_uuid(u: str) -> str:
    """The dashed lower-case form libvirt uses."""
    h = u.replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def domain_name(vm_uuid: str) -> str:
    """The libvirt name of a VM's domain: its UUID without dashes."""
    return vm_uuid.replace("-", "").lower()


def target_dev(bus: str, index: int) -> str:
    return _BUS_PREFIX[bus] + string.ascii_lowercase[index]


def disk_for(volume: FileVolume | RbdVolume) -> Disk:
    """The ``<disk>`` of a volume."""
    disk = Disk(
        target_dev=target_dev(volume.bus, volume.device_id),
        target_bus=volume.bus,
        cache=volume.cache,
        serial=volume.serial or volume.volume_uuid.replace("-", "")[:20],
        readonly=volume.read_only,
    )
    if isinstance(volume, FileVolume):
        disk.driver_type = volume.format
        disk.source_file = volume.install_path
        return disk
    disk.source_type, disk.driver_type = "network", "raw"
    disk.source_protocol, disk.source_name = "rbd", volume.install_path
    disk.hosts = [DiskHost(m.host, m.port) for m in volume.monitors]
    disk.auth_username = volume.auth_user
    disk.secret_uuid = canonical_uuid(volume.secret_uuid) if volume.secret_uuid else None
    return disk


def cdrom_for(iso: IsoSpec, machine_type: str) -> Disk:
    """The CD-ROM drive, empty when the ISO has no path."""
    if machine_type == "q35":
        bus, dev = "sata", target_dev("sata", 20 + iso.device_id)
    else:
        bus, dev = "ide", target_dev("ide", 2 + iso.device_id)
    return Disk(target_dev=dev, target_bus=bus, device="cdrom", driver_type="raw",
                source_file=iso.path, readonly=True)


def interface_for(nic: NicSpec, *, anti_spoofing: bool = True) -> Interface:
    """The ``<interface>`` of a NIC, by default behind the anti-spoofing filter.

    The filter pins the guest to the NIC's MAC and, when the command carries
    it, to the allocated IP; without one libvirt learns the guest's address.
    """
    params = [("IP", nic.ip)] if nic.ip is not None else []
    ref = None
    if nic.security_groups or (nic.security_groups is not None and anti_spoofing):
        ref = FilterRef(nic_filter_name(nic.mac), params)  # see kvmagent.secgroups
    elif anti_spoofing:
        ref = FilterRef(NIC_FILTER, params)
    return Interface(mac=nic.mac, bridge=nic.bridge_name, model=nic.model,
                     target_dev=nic.device_name, mtu=nic.mtu, filterref=ref)


def build_domain(cmd: StartVmCmd, *, domain_type: str, console_log: Path,
                 anti_spoofing: bool = True) -> Domain:
    """The domain of a VM spec."""
    devices: list[Device] = [disk_for(cmd.root_volume)]
    devices += [disk_for(v) for v in sorted(cmd.data_volumes, key=lambda v: v.device_id)]
    # always one CD-ROM drive (empty without an ISO): IDE/SATA drives cannot be hot-plugged
    devices.append(cdrom_for(cmd.iso or IsoSpec(), cmd.machine_type))
    devices += [interface_for(n, anti_spoofing=anti_spoofing) for n in cmd.nics]
    devices.append(SerialFile(str(console_log)))
    if cmd.vnc is not None:
        devices.append(Graphics(listen=cmd.vnc.listen, passwd=cmd.vnc.password))
    devices.append(MemBalloon("none"))
    return Domain(
        type=domain_type,
        name=domain_name(cmd.vm_uuid),
        uuid=canonical_uuid(cmd.vm_uuid),
        memory_kib=cmd.memory_size // 1024,
        vcpu=cmd.cpu_num,
        os=Os(machine=cmd.machine_type, boot_devs=list(cmd.boot_order)),
        metadata=Metadata(vm_uuid=cmd.vm_uuid, vm_name=cmd.vm_name, owner_uuid=cmd.owner_uuid),
        devices=devices,
    )
