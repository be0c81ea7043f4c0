"""Wire models of the kvmagent: every command body and reply.

The controller and the simulator import these, so they send exactly what the
agent validates. Sizes are bytes, times seconds unless a name says otherwise.
Field names only change additively.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from agentcore.models import Command, Reply, Returns, WireModel
from kvmagent.paths import check_file_path

UUID_RE = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IFNAME_RE = r"^[A-Za-z0-9_.-]{1,15}$"

Uuid = Annotated[str, Field(pattern=UUID_RE, description="a UUID (with or without dashes)")]
IfName = Annotated[str, Field(pattern=IFNAME_RE, description="a Linux interface name (<= 15 chars)")]
HostPath = Annotated[str, Field(min_length=2, max_length=4096), AfterValidator(check_file_path)]
VmState = Literal["Running", "Paused", "Stopped", "Crashed", "Unknown"]


def _mac(v: str) -> str:
    v = v.lower()
    if not MAC_RE.match(v):
        raise ValueError("not a MAC address (expected xx:xx:xx:xx:xx:xx)")
    if int(v[:2], 16) & 1:
        raise ValueError("a multicast MAC cannot be a NIC address")
    return v


Mac = Annotated[str, AfterValidator(_mac)]


# cached: a DHCP lease set repeats the addresses of every VM of a host on each apply
@functools.lru_cache(maxsize=65536)
def _ipv4(v: str) -> str:
    return str(ipaddress.IPv4Address(v))


@functools.lru_cache(maxsize=65536)
def _ip_int(v: str) -> int:
    return int(ipaddress.IPv4Address(v))


IPv4 = Annotated[str, AfterValidator(_ipv4)]

# -- VM spec -------------------------------------------------------------------

DiskBus = Literal["virtio", "scsi", "sata", "ide"]
CacheMode = Literal["none", "writeback", "writethrough", "directsync", "unsafe"]


class _VolumeBase(WireModel):
    volume_uuid: Uuid
    device_id: int = Field(ge=0, le=25, description="0 is the root volume; gives the target dev (vda, vdb...)")
    bus: DiskBus = "virtio"
    cache: CacheMode = "none"
    serial: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,20}$",
        description="disk serial seen by the guest; defaults to the volume UUID's first 20 hex digits",
    )
    read_only: bool = False


class FileVolume(_VolumeBase):
    """A volume that is a file on a mounted primary storage (NFS, local dir)."""

    type: Literal["file"] = "file"
    install_path: HostPath
    format: Literal["qcow2", "raw"] = "qcow2"


class CephMon(WireModel):
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:_-]+$")
    port: int = Field(default=6789, gt=0, lt=65536)


class RbdVolume(_VolumeBase):
    """A volume that is an RBD image, opened by QEMU through librbd."""

    type: Literal["rbd"]
    install_path: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.@-]+$", description="pool/image")
    monitors: list[CephMon] = Field(min_length=1)
    auth_user: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]+$", description="cephx user without 'client.'"
    )
    secret_uuid: Uuid | None = Field(
        default=None, description="libvirt secret holding the user's key (see /host/ceph-secret/set)"
    )

    @model_validator(mode="after")
    def _auth(self) -> RbdVolume:
        if (self.auth_user is None) != (self.secret_uuid is None):
            raise ValueError("authUser and secretUuid go together")
        return self


VolumeSpec = Annotated[FileVolume | RbdVolume, Field(discriminator="type")]


class IsoSpec(WireModel):
    """A CD-ROM image; the drive stays (empty) when the ISO is detached."""

    path: HostPath | None = None
    device_id: int = Field(default=0, ge=0, le=3)


def _cidr(v: str) -> str:
    try:
        return str(ipaddress.IPv4Network(v, strict=True))
    except ValueError as e:
        raise ValueError(f"not an IPv4 network in CIDR form with no host bits set: {e}") from None


Cidr = Annotated[str, AfterValidator(_cidr)]


SecurityGroupDirection = Literal["ingress", "egress"]
SecurityGroupProtocol = Literal["tcp", "udp", "icmp", "all"]
Port = Annotated[int, Field(ge=1, le=65535)]


class SecurityGroupRuleSpec(WireModel):
    """One allow rule of a security group; the controller expands a rule naming
    another group into one rule per member address (``/32``)."""

    direction: SecurityGroupDirection
    protocol: SecurityGroupProtocol
    port_start: Port | None = Field(default=None, description="tcp/udp only")
    port_end: Port | None = Field(default=None, description="defaults to portStart")
    cidr: Cidr = Field(default="0.0.0.0/0", description="the peer: source (ingress) or destination (egress)")

    @model_validator(mode="after")
    def _ports(self) -> SecurityGroupRuleSpec:
        check_rule_ports(self.protocol, self.port_start, self.port_end)
        return self


def check_rule_ports(protocol: str, port_start: int | None, port_end: int | None) -> None:
    """Ports only for tcp and udp, an end only with a start and not below it."""
    if protocol not in ("tcp", "udp") and (port_start is not None or port_end is not None):
        raise ValueError("portStart and portEnd are only for tcp and udp")
    if port_end is not None and port_start is None:
        raise ValueError("portEnd needs portStart")
    if port_start is not None and port_end is not None and port_end < port_start:
        raise ValueError("portEnd must not be below portStart")


class SecurityGroupSpec(WireModel):
    """A security group as the host enforces it: its allow rules (all of them)."""

    uuid: Uuid
    rules: list[SecurityGroupRuleSpec] = Field(default_factory=list, max_length=1000)


class NicSpec(WireModel):
    """A NIC plugged into a Linux bridge."""

    mac: Mac
    bridge_name: IfName
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"
    device_name: IfName | None = Field(default=None, description="host tap name; never 'vnet*'")
    mtu: int | None = Field(default=None, ge=68, le=65535)
    l3_network_uuid: Uuid | None = None
    ip: IPv4 | None = None
    security_groups: list[Uuid] | None = Field(
        default=None, max_length=32,
        description="groups of this NIC: ingress is denied but what their rules allow, egress too; "
                    "null: no security groups (the anti-spoofing filter only)")

    @field_validator("device_name")
    @classmethod
    def _not_vnet(cls, v: str | None) -> str | None:
        if v is not None and v.startswith("vnet"):
            raise ValueError("the 'vnet' prefix is reserved by libvirt")
        return v


class VncSpec(WireModel):
    listen: IPv4 = "127.0.0.1"
    password: str | None = Field(default=None, min_length=1, max_length=8)


BootDevice = Literal["hd", "cdrom", "network"]


def _boot_from_disk() -> list[BootDevice]:
    return ["hd"]


class StartVmReply(Reply):
    vm_uuid: str = ""
    state: VmState = "Unknown"
    vnc_port: int | None = None


class StartVmCmd(Command, Returns[StartVmReply], path="/vm/start"):
    """The full spec of a VM to run on this host."""

    vm_uuid: Uuid
    vm_name: str = Field(min_length=1, max_length=128, description="the controller's display name (metadata only)")
    owner_uuid: Uuid | None = None
    cpu_num: int = Field(ge=1, le=256)
    memory_size: int = Field(gt=0, le=4 << 40, description="bytes; a multiple of 1 MiB")
    machine_type: Literal["pc", "q35"] = "pc"
    boot_order: list[BootDevice] = Field(default_factory=_boot_from_disk, min_length=1, max_length=3)
    root_volume: VolumeSpec
    data_volumes: list[VolumeSpec] = Field(default_factory=list, max_length=24)
    iso: IsoSpec | None = None
    nics: list[NicSpec] = Field(default_factory=list, max_length=16)
    vnc: VncSpec | None = Field(default_factory=VncSpec)
    create_paused: bool = False
    security_groups: list[SecurityGroupSpec] = Field(
        default_factory=list, max_length=256, description="every group the NICs name, with its rules")

    @field_validator("memory_size")
    @classmethod
    def _mib(cls, v: int) -> int:
        if v % (1 << 20):
            raise ValueError("must be a multiple of 1 MiB")
        return v

    @model_validator(mode="after")
    def _unique(self) -> StartVmCmd:
        if self.root_volume.device_id != 0:
            raise ValueError("rootVolume.deviceId must be 0")
        ids = [v.device_id for v in self.data_volumes]
        if 0 in ids or len(set(ids)) != len(ids):
            raise ValueError("dataVolumes: deviceId must be unique and not 0")
        macs = [n.mac for n in self.nics]
        if len(set(macs)) != len(macs):
            raise ValueError("nics: MAC addresses must be unique")
        _groups_given(self.nics, self.security_groups)
        return self


def _groups_given(nics: Sequence[NicSpec | NicGroupsSpec], groups: list[SecurityGroupSpec],
                  field: str = "securityGroups") -> None:
    """Every group a NIC names comes with its rules."""
    given = {g.uuid.replace("-", "").lower() for g in groups}
    for i, nic in enumerate(nics):
        for g in nic.security_groups or []:
            if g.replace("-", "").lower() not in given:
                raise ValueError(f"nics[{i}].securityGroups: {g} is not in {field}")


class VmCmd(Command):
    """A command about one VM."""

    vm_uuid: Uuid


class VmStateReply(Reply):
    vm_uuid: str = ""
    state: VmState = "Unknown"


class StopVmCmd(VmCmd, Returns[VmStateReply], path="/vm/stop"):
    """Stop: ACPI shutdown, then forced off after ``graceTimeout`` (type grace)."""

    type: Literal["grace", "force"] = "grace"
    grace_timeout: float = Field(default=30.0, gt=0, le=3600)


class DestroyVmCmd(VmCmd, Returns[VmStateReply], path="/vm/destroy"):
    """Power off and undefine; an absent VM is success."""


class RebootVmCmd(VmCmd, Returns[VmStateReply], path="/vm/reboot"):
    """Reboot a running VM."""


class PauseVmCmd(VmCmd, Returns[VmStateReply], path="/vm/pause"):
    """Suspend a running VM's vCPUs."""


class ResumeVmCmd(VmCmd, Returns[VmStateReply], path="/vm/resume"):
    """Resume a paused VM."""


class ConsoleReply(Reply):
    protocol: Literal["vnc"] = "vnc"
    host: str = ""
    port: int = -1


class ConsoleCmd(VmCmd, Returns[ConsoleReply], path="/vm/console"):
    """Where the VM's graphical console listens."""


class VmStatesReply(Reply):
    states: dict[str, VmState] = Field(default_factory=dict)


class SyncVmCmd(Command, Returns[VmStatesReply], path="/vm/sync"):
    """Ask for the state of every kvmcloud VM on the host."""


class CheckVmStateCmd(Command, Returns[VmStatesReply], path="/vm/check-state"):
    vm_uuids: list[Uuid] = Field(min_length=1, max_length=10000)


class MigrateVmReply(Reply):
    vm_uuid: str = ""
    dest_host_ip: str = ""


class MigrateVmCmd(VmCmd, Returns[MigrateVmReply], path="/vm/migrate"):
    """Live-migrate to another host's libvirtd (shared storage)."""

    dest_host_ip: IPv4
    dest_uri: str | None = Field(
        default=None, pattern=r"^qemu\+(tcp|tls|ssh|libssh|unix)://[^\s]*$",
        description="libvirt URI of the destination; by default the agent's migration transport "
                    "(SSH with the migration key) to <destHostIp>. qemu+tcp is refused unless the "
                    "agent's migration_transport is tcp",
    )
    migration_port: int | None = Field(default=None, gt=1023, lt=65536,
                                       description="ignored (kept for older controllers): the data "
                                                   "stream is tunnelled through the libvirt connection")
    bandwidth: int | None = Field(default=None, gt=0, description="MiB/s")
    downtime: int | None = Field(default=None, gt=0, le=60000, description="max downtime in ms")
    auto_converge: bool = False
    unsafe: bool = Field(
        default=False,
        description="skip libvirt's shared-storage check (storage shared in a way libvirt cannot see)",
    )


# -- volumes, ISOs, NICs on a running VM --------------------------------------

class VolumeCmd(VmCmd):
    volume: VolumeSpec


class VolumeReply(Reply):
    vm_uuid: str = ""
    device: str = ""


class AttachVolumeCmd(VolumeCmd, Returns[VolumeReply], path="/vm/volume/attach"):
    """Hot-plug a data volume."""

    @model_validator(mode="after")
    def _data(self) -> AttachVolumeCmd:
        if self.volume.device_id == 0:
            raise ValueError("volume.deviceId 0 is the root volume")
        return self


class DetachVolumeCmd(VolumeCmd, Returns[VolumeReply], path="/vm/volume/detach"):
    """Hot-unplug a data volume; already detached is success."""


class ResizeVolumeReply(Reply):
    size: int = 0


class ResizeVolumeCmd(VolumeCmd, Returns[ResizeVolumeReply], path="/vm/volume/resize"):
    """Grow a volume of a running VM (never shrinks)."""

    size: int = Field(gt=0, description="new virtual size, bytes")


class SnapshotVolumeReply(Reply):
    snapshot_install_path: str = Field(default="", description="the old top, now a read-only backing file")
    new_install_path: str = ""
    size: int = 0


class SnapshotVolumeCmd(VolumeCmd, Returns[SnapshotVolumeReply], path="/vm/volume/snapshot"):
    """Online external disk-only snapshot: the live volume moves to a new overlay."""

    new_install_path: HostPath


class MergeSnapshotReply(Reply):
    install_path: str = Field(default="", description="the file the VM now writes to")


class MergeSnapshotCmd(VolumeCmd, Returns[MergeSnapshotReply], path="/vm/volume/merge"):
    """Merge a backing chain online.

    ``commit``: the active layer (volume.installPath) and everything down to
    ``baseInstallPath`` are written into the base, and the VM pivots onto it.
    ``pull``: the layers above ``baseInstallPath`` are pulled into the active
    layer, which then backs onto the base (or onto nothing if the base is null).
    """

    mode: Literal["commit", "pull"] = "commit"
    base_install_path: HostPath | None = None
    bandwidth: int | None = Field(default=None, gt=0, description="MiB/s")

    @model_validator(mode="after")
    def _base(self) -> MergeSnapshotCmd:
        if self.mode == "commit" and self.base_install_path is None:
            raise ValueError("baseInstallPath is required for commit")
        return self


class AttachIsoCmd(VmCmd, Returns[VolumeReply], path="/vm/iso/attach"):
    """Insert an ISO into the VM's CD-ROM drive."""

    iso: IsoSpec


class DetachIsoCmd(VmCmd, Returns[VolumeReply], path="/vm/iso/detach"):
    """Eject the ISO from a CD-ROM drive."""

    device_id: int = Field(default=0, ge=0, le=3)


class NicReply(Reply):
    vm_uuid: str = ""
    mac: str = ""
    device_name: str = ""


class NicCmd(VmCmd, Returns[NicReply], path="/vm/nic/attach"):
    nic: NicSpec
    security_groups: list[SecurityGroupSpec] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _groups(self) -> NicCmd:
        _groups_given([self.nic], self.security_groups)
        return self


class DetachNicCmd(VmCmd, Returns[NicReply], path="/vm/nic/detach"):
    mac: Mac


# -- host --------------------------------------------------------------------

class HostIdentityReply(Reply):
    host_uuid: str | None = None
    events_url: str | None = None
    version: str = ""


class ConnectCmd(Command, Returns[HostIdentityReply], path="/host/connect"):
    """The controller names the host and where its events go."""

    host_uuid: Uuid
    events_url: str = Field(pattern=r"^https?://[^\s]+$",
                            description="VM lifecycle events are POSTed here ({hostUuid, vmUuid, state, reason})")


class HostCmd(Command):
    """A host query with no arguments."""


class PingCmd(HostCmd, Returns[HostIdentityReply], path="/host/ping"):
    """Is the agent up, and which host is it?"""


class FactsReply(Reply):
    hostname: str = ""
    os_name: str = ""
    os_version: str = ""
    kernel: str = ""
    arch: str = ""
    cpu_model: str = ""
    cpu_count: int = 0
    cpu_sockets: int = 0
    cpu_flags: list[str] = Field(default_factory=list)
    hardware_virtualization: bool = False
    domain_type: Literal["kvm", "qemu"] = "qemu"
    libvirt_version: str = ""
    qemu_version: str = ""
    memory_total: int = 0
    ip_addresses: list[str] = Field(default_factory=list)


class FactsCmd(HostCmd, Returns[FactsReply], path="/host/facts"):
    """The host's hardware and software facts."""


class CapacityReply(Reply):
    cpu_total: int = 0
    cpu_used: int = Field(default=0, description="vCPUs of running domains")
    memory_total: int = 0
    memory_used: int = Field(default=0, description="memory of running domains, bytes")
    memory_free: int = Field(default=0, description="host MemAvailable, bytes")
    domains: int = 0


class CapacityCmd(HostCmd, Returns[CapacityReply], path="/host/capacity"):
    """The host's CPU and memory capacity."""


class SetCephSecretReply(Reply):
    secret_uuid: str = ""


class SetCephSecretCmd(Command, Returns[SetCephSecretReply], path="/host/ceph-secret/set"):
    """Create or update the libvirt secret that holds a cephx user's key."""

    secret_uuid: Uuid
    user_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="cephx user without 'client.'")
    user_key: str = Field(pattern=r"^[A-Za-z0-9+/=]{16,256}$", description="the base64 key (ceph auth get-key)")


class VmStateEvent(WireModel):
    """What the agent POSTs to the controller's events URL."""

    host_uuid: str
    vm_uuid: str
    state: VmState
    reason: str


# -- networks ----------------------------------------------------------------

class L2NetworkCmd(Command):
    """An L2 network realised as a Linux bridge on this host."""

    type: Literal["novlan", "vlan", "vxlan"]
    bridge_name: IfName
    physical_interface: IfName | None = Field(default=None, description="uplink (novlan, vlan) or VTEP device (vxlan)")
    vlan_id: int | None = Field(default=None, ge=1, le=4094)
    vni: int | None = Field(default=None, ge=1, le=16777215)
    vtep_ip: IPv4 | None = None
    peers: list[IPv4] = Field(default_factory=list, description="remote VTEPs: static all-zero FDB entries")
    dst_port: int = Field(default=4789, gt=0, lt=65536)
    mtu: int | None = Field(default=None, ge=68, le=65535)

    @model_validator(mode="after")
    def _by_type(self) -> L2NetworkCmd:
        if self.type == "vlan" and (self.vlan_id is None or self.physical_interface is None):
            raise ValueError("vlan needs vlanId and physicalInterface")
        if self.type == "vxlan" and (self.vni is None or self.vtep_ip is None):
            raise ValueError("vxlan needs vni and vtepIp")
        if self.type != "vlan" and self.vlan_id is not None:
            raise ValueError("vlanId is only for type vlan")
        if self.type != "vxlan" and (self.vni is not None or self.peers):
            raise ValueError("vni and peers are only for type vxlan")
        return self


class L2NetworkReply(Reply):
    bridge_name: str = ""
    uplink: str | None = Field(default=None, description="the VLAN or VXLAN device enslaved to the bridge")
    exists: bool = False


class CreateL2Cmd(L2NetworkCmd, Returns[L2NetworkReply], path="/network/l2/create"):
    """Create the bridge (and its VLAN or VXLAN uplink); idempotent."""


class CheckL2Cmd(L2NetworkCmd, Returns[L2NetworkReply], path="/network/l2/check"):
    """Report whether the bridge exists as described."""


class DeleteL2Cmd(L2NetworkCmd, Returns[L2NetworkReply], path="/network/l2/delete"):
    """Delete the bridge and its uplink; an absent bridge is success."""


class DhcpLease(WireModel):
    mac: Mac
    ip: IPv4
    hostname: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,63}$")


class DhcpNetworkCmd(Command):
    l3_network_uuid: Uuid


class DhcpReply(Reply):
    namespace: str = ""
    leases: int = 0
    pid: int | None = None


class DeleteDhcpCmd(DhcpNetworkCmd, Returns[DhcpReply], path="/network/dhcp/delete"):
    """Stop serving DHCP for one L3 network on this host."""


class DhcpApplyCmd(DhcpNetworkCmd, Returns[DhcpReply], path="/network/dhcp/apply"):
    """The full desired lease set of one L3 network on this host (idempotent)."""

    bridge_name: IfName
    server_ip: IPv4 = Field(description="address of the DHCP server on the network")
    prefix_length: int = Field(ge=8, le=30)
    gateway: IPv4 | None = None
    dns_servers: list[IPv4] = Field(default_factory=list)
    dns_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]{1,253}$")
    lease_time: int = Field(default=3600, ge=120)
    leases: list[DhcpLease] = Field(default_factory=list)

    @model_validator(mode="after")
    def _net(self) -> DhcpApplyCmd:
        net = ipaddress.IPv4Interface(f"{self.server_ip}/{self.prefix_length}").network
        base, mask = int(net.network_address), int(net.netmask)
        for i, lease in enumerate(self.leases):
            if _ip_int(lease.ip) & mask != base:
                raise ValueError(f"leases[{i}].ip {lease.ip} is not in {net}")
        macs = [lease.mac for lease in self.leases]
        if len(set(macs)) != len(macs):
            raise ValueError("leases: a MAC appears twice")
        return self


class DhcpAddCmd(DhcpNetworkCmd, Returns[DhcpReply], path="/network/dhcp/add"):
    """Add leases (VMs placed here) to a running DHCP server without resending the others.

    A lease replaces one of the same MAC or address. The server must exist (an
    earlier apply made it): else NOT_FOUND, and the controller sends the full set."""

    leases: list[DhcpLease] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> DhcpAddCmd:
        for what in ("mac", "ip"):
            values = [getattr(lease, what) for lease in self.leases]
            if len(set(values)) != len(values):
                raise ValueError(f"leases: a{'n' if what == 'ip' else ''} {what.upper()} appears twice")
        return self


class DhcpReleaseCmd(DhcpNetworkCmd, Returns[DhcpReply], path="/network/dhcp/release"):
    """Remove leases (VMs gone) without touching the others."""

    macs: list[Mac] = Field(min_length=1)



# -- security groups -----------------------------------------------------------

class NicGroupsSpec(WireModel):
    """The security groups of one VM NIC on this host."""

    vm_uuid: Uuid
    mac: Mac
    ip: IPv4 | None = None
    security_groups: list[Uuid] = Field(default_factory=list, max_length=32)


class SecurityGroupsReply(Reply):
    groups: list[str] = Field(default_factory=list, description="filters of groups defined or removed")
    nics: list[str] = Field(default_factory=list, description="MACs whose filter was set")


class ApplySecurityGroupsCmd(Command, Returns[SecurityGroupsReply], path="/network/security-groups/apply"):
    """Define or update groups (their rules take effect on running NICs at once) and set
    which groups NICs are in; idempotent."""

    groups: list[SecurityGroupSpec] = Field(default_factory=list, max_length=256)
    nics: list[NicGroupsSpec] = Field(default_factory=list, max_length=1024)

    @model_validator(mode="after")
    def _given(self) -> ApplySecurityGroupsCmd:
        _groups_given(self.nics, self.groups, "groups")
        return self


class DeleteSecurityGroupsCmd(Command, Returns[SecurityGroupsReply], path="/network/security-groups/delete"):
    """Remove groups' filters from this host; an absent one is success, one a NIC still uses is a 409."""

    group_uuids: list[Uuid] = Field(min_length=1, max_length=256)
