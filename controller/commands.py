"""Agent commands built from the database, with the agents' own wire models.

The controller imports ``kvmagent.models`` and ``storageagent.models`` so it
sends exactly what the agents validate. Volume paths on the wire to the
storageagent are relative to the storage root (``installPath``); the kvmagent
gets the absolute host path (root + installPath).
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
from collections.abc import Sequence
from typing import TypeVar

from agentcore import digest
from controller.db.models import (
    BackupStorage,
    Image,
    IpRange,
    L2Network,
    L3Network,
    PrimaryStorage,
    Vm,
    VmNic,
    Volume,
)
from kvmagent import models as km
from storageagent import models as sm

L2 = TypeVar("L2", km.CreateL2Cmd, km.DeleteL2Cmd)


def bridge_name(l2: L2Network) -> str:
    """The Linux bridge of an L2 network on every host (<= 15 characters)."""
    return f"br{l2.uuid[:12]}"


def volume_path(volume_uuid: str) -> str:
    """Where a volume lives, relative to its primary storage's root."""
    return f"volumes/{volume_uuid}.qcow2"


def host_path(ps: PrimaryStorage, install_path: str) -> str:
    return posixpath.join(ps.mount_path or "/", install_path)


def cache_image(ps: PrimaryStorage, image: Image, image_id: str,
                bs: BackupStorage | None) -> sm.CacheImageCmd:
    source: sm.HttpSource | sm.SftpSource
    if image.url:  # registered with an http(s) URL: fetched from there
        source = sm.HttpSource(url=image.url)
    elif bs is not None and bs.type == "sftp":
        source = sm.SftpSource(host=bs.hostname, port=bs.port, user=bs.username,
                               store_root=bs.url, image_id=image_id)
    else:
        raise ValueError(f"image {image.uuid} has no source this storage can read")
    return sm.CacheImageCmd(storage_uuid=ps.uuid, mount_path=ps.mount_path or "/",
                            image_id=image_id, source=source,
                            digest=digest.normalise(image.digest) if image.digest else "",
                            size=image.actual_size or None)


def create_root(ps: PrimaryStorage, image_id: str, vol: Volume) -> sm.CreateRootVolumeCmd:
    return sm.CreateRootVolumeCmd(storage_uuid=ps.uuid, mount_path=ps.mount_path or "/",
                                  image_id=image_id, install_path=vol.install_path or "",
                                  size=vol.size or None)


def create_empty(ps: PrimaryStorage, vol: Volume) -> sm.CreateEmptyVolumeCmd:
    return sm.CreateEmptyVolumeCmd(storage_uuid=ps.uuid, mount_path=ps.mount_path or "/",
                                   install_path=vol.install_path or "", size=vol.size)


def delete_volume(ps: PrimaryStorage, install_path: str) -> sm.DeleteVolumeCmd:
    return sm.DeleteVolumeCmd(storage_uuid=ps.uuid, mount_path=ps.mount_path or "/",
                              install_path=install_path)


def file_volume(ps: PrimaryStorage, vol: Volume, device_id: int) -> km.FileVolume:
    return km.FileVolume(volume_uuid=vol.uuid, device_id=device_id,
                         install_path=host_path(ps, vol.install_path or ""),
                         format="raw" if vol.format == "raw" else "qcow2")


def nic_spec(nic: VmNic, l2: L2Network, security_groups: Sequence[str] = ()) -> km.NicSpec:
    """A NIC with a filter of its own on the host, in ``security_groups`` (none: open)."""
    return km.NicSpec(mac=nic.mac, bridge_name=bridge_name(l2), l3_network_uuid=nic.l3_network_uuid,
                      ip=nic.ip, security_groups=list(security_groups))


def start_vm(vm: Vm, root: km.VolumeSpec, data: Sequence[km.VolumeSpec],
             nics: list[km.NicSpec], security_groups: Sequence[km.SecurityGroupSpec] = ()) -> km.StartVmCmd:
    return km.StartVmCmd(vm_uuid=vm.uuid, vm_name=vm.name[:128], cpu_num=vm.cpu_num,
                         memory_size=vm.memory_size, root_volume=root, data_volumes=list(data),
                         nics=nics, security_groups=list(security_groups))


def l2_create(l2: L2Network, vtep_ip: str | None = None, peers: Sequence[str] = ()) -> km.CreateL2Cmd:
    """The L2 network on one host; a vxlan one needs the host's VTEP and its peers' VTEPs."""
    return _l2(km.CreateL2Cmd, l2, vtep_ip, peers)


def l2_delete(l2: L2Network, vtep_ip: str | None = None) -> km.DeleteL2Cmd:
    """Remove the L2 network's bridge (and its uplink) from one host."""
    return _l2(km.DeleteL2Cmd, l2, vtep_ip, ())


def _l2(model: type[L2], l2: L2Network, vtep_ip: str | None, peers: Sequence[str]) -> L2:
    if l2.type == "vlan":
        return model(type="vlan", bridge_name=bridge_name(l2),
                     physical_interface=l2.physical_interface, vlan_id=l2.vlan)
    if l2.type == "vxlan":
        if vtep_ip is None:
            raise ValueError(f"vxlan network {l2.uuid} needs the host's vtepIp")
        return model(type="vxlan", bridge_name=bridge_name(l2), vni=l2.vni,
                     physical_interface=l2.physical_interface, vtep_ip=vtep_ip, peers=list(peers))
    return model(type="novlan", bridge_name=bridge_name(l2), physical_interface=l2.physical_interface)


def dhcp_apply(l3: L3Network, l2: L2Network, rng: IpRange, server_ip: str,
               leases: list[tuple[str, str, str | None]]) -> km.DhcpApplyCmd:
    """``leases``: (mac, ip, hostname) of every NIC of this L3 on the host."""
    prefix = ipaddress.IPv4Network(f"0.0.0.0/{rng.netmask}").prefixlen
    return km.DhcpApplyCmd(
        l3_network_uuid=l3.uuid, bridge_name=bridge_name(l2), server_ip=server_ip,
        prefix_length=prefix, gateway=rng.gateway,
        dns_servers=[d for d in (l3.dns or "").split(",") if d], dns_domain=l3.dns_domain,
        leases=[lease(m, i, h) for m, i, h in leases])


@functools.lru_cache(maxsize=65536)
def lease(mac: str, ip: str, hostname: str | None) -> km.DhcpLease:
    """A lease, validated once: a host's full lease set is sent for each VM started on it."""
    return km.DhcpLease(mac=mac, ip=ip, hostname=hostname)


@functools.lru_cache(maxsize=65536)
def hostname(name: str) -> str | None:
    """A DHCP hostname from a VM name, or None if nothing usable is left."""
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")[:63]
    return cleaned or None
