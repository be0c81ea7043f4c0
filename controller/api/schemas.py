"""Request bodies of the API: typed, camelCase on the wire, unknown fields refused.

A body that does not validate is a 400 whose details name every offending
field, and nothing is written.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, NamedTuple, Self

from croniter import croniter
from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator, model_validator

from agentcore.digest import normalise as normalise_digest
from agentcore.models import WireModel
from cephagent.models import CephUser, Fsid, KeyRef, Monitor, PoolName
from kvmagent.models import (
    Cidr,
    Port,
    SecurityGroupDirection,
    SecurityGroupProtocol,
    check_rule_ports,
)

Name = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]
Description = Annotated[str | None, Field(default=None, max_length=2048)]
Uuid = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="a resource UUID (32 hex digits)")]
ImageUrl = Annotated[str, Field(pattern=r"^(https?|sftp|file)://[^\s]+$", max_length=2048)]
Bytes = Annotated[int, Field(gt=0, le=2**50)]
#: a storage's size in bytes (0: as the agent reports it); bounded so that it fits a 64-bit column
Capacity = Annotated[int, Field(ge=0, le=2**60)]

# Host names, addresses and agent URLs reach Ansible (inventory, extra variables) and argv
# (ssh-keyscan): they are held to a grammar with no room for a template ('{', '%'), an
# option ('-' first), userinfo ('@'), quotes or whitespace.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_AGENT_URL = re.compile(r"(?P<scheme>https?)://(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+))"
                        r":(?P<port>[0-9]{1,5})(?P<path>(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?)")


def check_host(v: str) -> str:
    """``v`` if it is an IP address or a DNS name (labels of letters, digits and inner '-')."""
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if len(v) > 253 or not _DNS_NAME.fullmatch(v) or v.rsplit(".", 1)[-1].isdigit():
        # an all-digit last label is a malformed IPv4 address, not a name
        raise ValueError("must be an IP address or a DNS name (letters, digits, '.' and '-', "
                         "no label starting or ending with '-')")
    return v


class AgentAddress(NamedTuple):
    """Where an agent URL points: what a deploy makes the agent listen on."""

    host: str
    port: int

    @property
    def listen(self) -> str:
        """``host:port`` (``[v6]:port``), as the agents' ``listen`` setting reads it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_agent_url(v: str) -> AgentAddress:
    """The host and port of ``http(s)://HOST:PORT[/path]``; ValueError for anything else
    (userinfo, query, fragment, '%'-escapes, '.' or '..' path segments, no port)."""
    m = _AGENT_URL.fullmatch(v)
    if m is None:
        raise ValueError("must be http(s)://HOST:PORT with an optional path: no user, query, "
                         "fragment, '%', braces, quotes or whitespace")
    if m["ipv6"] is not None:
        host = m["ipv6"]  # as written: agent credentials are keyed by the URL's own host:port
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("the host in brackets must be an IPv6 address") from None
    else:
        host = check_host(m["host"])
    port = int(m["port"])
    if not 0 < port < 65536:
        raise ValueError("the port must be 1-65535")
    if any(part in (".", "..") for part in m["path"].split("/")):
        raise ValueError("the path must not contain '.' or '..' segments")
    return AgentAddress(host, port)


def _agent_url(v: str) -> str:
    parse_agent_url(v)
    return v


AgentUrl = Annotated[str, Field(max_length=512, description="http(s)://HOST:PORT[/path] of an agent"),
                     AfterValidator(_agent_url)]
HostAddress = Annotated[str, Field(min_length=1, max_length=253, description="an IP address or a DNS name"),
                        AfterValidator(check_host)]


def _no_dot_parts(v: str) -> str:
    if any(part in (".", "..") for part in v.split("/")):
        raise ValueError("must not contain '.' or '..' components")
    return v


AbsPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]*$", max_length=1024), AfterValidator(_no_dot_parts)]
MountPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]+$", max_length=1024), AfterValidator(_no_dot_parts)]
UserName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
"""a POSIX login name: never starts with '-', so it cannot read as an option"""
SshUser = Annotated[UserName, Field(description="who the deploy logs in as")]
SshPassword = Annotated[SecretStr | None, Field(
    max_length=1024, description="used once to install the controller's SSH key; never stored")]


def _only_with_deploy(v: SecretStr | bool | None, info: ValidationInfo) -> SecretStr | bool | None:
    if v is not None and v is not False and not info.data.get("deploy"):
        raise ValueError("only used with deploy")
    return v


ShipPackages = Annotated[bool, Field(
    default=False, description="with deploy: the host reaches no package mirror, so the controller "
    "ships the role's Debian packages (from its own mirror, for hosts of its Debian release)")]


class Body(WireModel):
    """Base of every request body."""


class Named(Body):
    name: Name
    description: Description = None


class UpdateBody(Body):
    """PATCH: the fields every resource lets you change."""

    name: Name | None = None
    description: Description = None


class ZoneCreate(Named):
    """Create a zone."""


class ClusterCreate(Named):
    """Create a cluster in a zone."""

    zone_uuid: Uuid
    hypervisor_type: Literal["KVM"] = "KVM"


def _ipv4(v: str | None) -> str | None:
    try:
        return None if v is None else str(ipaddress.IPv4Address(v))
    except ValueError:
        raise ValueError("must be an IPv4 address") from None


VtepIp = Annotated[str | None, Field(default=None, max_length=64, description=(
    "the host's VXLAN tunnel endpoint (IPv4) on the underlay; default: managementIp "
    "when that is an IPv4 address")), AfterValidator(_ipv4)]


class HostCreate(Named):
    """Add a KVM host: deploy its agents (optional), connect, and track it."""

    cluster_uuid: Uuid
    management_ip: HostAddress
    agent_url: AgentUrl | None = None
    storage_agent_url: AgentUrl | None = None
    deploy: bool = Field(default=False, description="run the Ansible deploy first")
    ssh_user: SshUser = "root"
    ssh_port: int = Field(default=22, gt=0, lt=65536)
    ssh_password: SshPassword = None
    ship_packages: ShipPackages = False
    vtep_ip: VtepIp = None
    _with_deploy = field_validator("ssh_password", "ship_packages")(_only_with_deploy)


class HostUpdate(UpdateBody):
    """PATCH a host: name, description, VTEP address (a new one is applied by a ``sync-vxlan`` job)."""

    vtep_ip: VtepIp = None


class CephPrimaryStorageSpec(Body):
    """Where a Ceph primary storage is and who the cloud is towards it. The cephx key
    is named, never sent: ``keyRef`` is a bare-key file in the controller's
    ``ceph_key_dir`` (for the hosts' libvirt secret) and in the cephagent's ``secrets_dir``."""

    monitors: list[Monitor] = Field(min_length=1, max_length=16, description="HOST[:PORT] of monitors")
    pool: PoolName = Field(description="pool of the volumes")
    cache_pool: PoolName | None = Field(default=None, description="pool of the image cache (default: pool)")
    user: CephUser = Field(description="cephx user, with or without 'client.'")
    key_ref: KeyRef = Field(description="name of the file holding the user's bare key")
    fsid: Fsid | None = Field(default=None, description="the cluster's fsid, checked by the agent")


class PrimaryStorageCreate(Named):
    """Add primary storage to a zone (and attach it to clusters)."""

    zone_uuid: Uuid
    type: Literal["nfs", "local", "sharedmountpoint", "ceph"]
    url: str = Field(min_length=1, max_length=1024)
    mount_path: MountPath | None = None
    agent_url: AgentUrl | None = None
    total_capacity: Capacity = 0
    cluster_uuids: list[Uuid] = Field(default_factory=list, max_length=1000)
    ceph: CephPrimaryStorageSpec | None = Field(default=None, validate_default=True,
                                                description="ceph only (and required there)")
    deploy: bool = Field(default=False, description="ceph: install the cephagent on agentUrl's host "
                         "over SSH first (its key by keyRef from the controller's ceph_key_dir)")
    ssh_user: SshUser = "root"
    ssh_port: int = Field(default=22, gt=0, lt=65536)
    ssh_password: SshPassword = None
    ship_packages: ShipPackages = False
    _with_deploy = field_validator("ssh_password", "ship_packages")(_only_with_deploy)

    @field_validator("deploy")
    @classmethod
    def _ceph_deploy(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("type") != "ceph":
            raise ValueError("only ceph primary storage has an agent of its own (file storage's "
                             "storageagent is deployed with each host)")
        return v

    @field_validator("ceph")
    @classmethod
    def _ceph_only(cls, v: CephPrimaryStorageSpec | None, info: ValidationInfo) -> CephPrimaryStorageSpec | None:
        if (info.data.get("type") == "ceph") != (v is not None):
            raise ValueError("required for ceph primary storage (monitors, pool, user, keyRef), "
                             "refused for the others")
        return v

    @model_validator(mode="after")
    def _needs(self) -> Self:
        if self.type in ("local", "sharedmountpoint") and not self.mount_path:
            raise ValueError("mountPath is required for local and sharedmountpoint primary storage")
        if self.type == "ceph" and not self.agent_url:
            raise ValueError("agentUrl is required for ceph primary storage")
        return self


class BackupStorageCreate(Named):
    """Add backup storage and attach it to zones."""

    type: Literal["sftp", "ceph"]
    hostname: HostAddress
    port: int = Field(default=22, gt=0, lt=65536)
    username: UserName = "root"
    url: str = Field(min_length=1, max_length=1024,
                     description="store directory as SFTP clients see it (sftp), or pool (ceph)")
    agent_root: AbsPath | None = Field(
        default=None, description="the store's directory on its host, as the sftpbackup agent reads it "
        "(default: url; with deploy: the role's store root followed by url)")
    agent_url: AgentUrl | None = None
    total_capacity: Capacity = 0
    zone_uuids: list[Uuid] = Field(default_factory=list, max_length=1000)
    deploy: bool = Field(default=False, description="install the sftpbackup agent on hostname over SSH first")
    ssh_user: SshUser = "root"
    ssh_port: int | None = Field(default=None, gt=0, lt=65536, description="default: port")
    ssh_password: SshPassword = None
    ship_packages: ShipPackages = False
    _with_deploy = field_validator("ssh_password", "ship_packages")(_only_with_deploy)

    @field_validator("agent_root", "deploy")
    @classmethod
    def _sftp_only(cls, v: str | bool | None, info: ValidationInfo) -> str | bool | None:
        if v and info.data.get("type") != "sftp":
            raise ValueError("only for sftp backup storage")
        return v


class ImageCreate(Named):
    """Add an image to backup storage from a URL, or register one already in a store.

    Without ``imageId``: a job (``add-image``) has each backup storage's agent
    download ``url`` into its store; ``digest`` and ``actualSize``, when given,
    are checked, and size, digest and format are then what the store measured.
    With ``imageId`` and ``digest``: the image is already in the stores under
    that id; it is recorded at once (201)."""

    backup_storage_uuids: list[Uuid] = Field(min_length=1, max_length=100)
    url: ImageUrl | None = Field(
        default=None, description="what to download (http, https, sftp, file); with imageId: "
        "an http(s) URL hosts fetch the image from")
    image_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                 description="the image's id in the backup storage (registers it)")
    digest: str | None = Field(default=None, description="sha256:<hex> or <hex>: required with "
                               "imageId, checked when adding")
    format: Literal["qcow2", "raw", "iso"] | None = Field(
        default=None, description="adding: the expected format (detected if unset); "
        "registering: default qcow2")
    media_type: Literal["RootVolumeTemplate", "DataVolumeTemplate", "ISO"] = "RootVolumeTemplate"
    platform: Literal["Linux", "Windows", "Other"] = "Linux"
    size: Bytes | None = Field(default=None, description="virtual size in bytes (with imageId)")
    actual_size: int | None = Field(default=None, ge=0, le=2**50,
                                    description="bytes of the image file; checked when adding")

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        return None if v is None else normalise_digest(v)

    @field_validator("backup_storage_uuids")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a backup storage is named twice")
        return v


class L2NetworkCreate(Named):
    """Create an L2 network (novlan, vlan or vxlan) and attach it to clusters."""

    zone_uuid: Uuid
    type: Literal["novlan", "vlan", "vxlan"]
    physical_interface: str = Field(pattern=r"^[A-Za-z0-9._-]{1,15}$",
                                    description="uplink (novlan, vlan) or VTEP device (vxlan)")
    vlan: int | None = Field(default=None, ge=1, le=4094, validate_default=True,
                             description="802.1Q id: required for vlan, refused for the others")
    vni: int | None = Field(default=None, ge=1, le=16777215, validate_default=True,
                            description="VXLAN network identifier, unique in the zone: required "
                            "for vxlan, refused for the others")
    cluster_uuids: list[Uuid] = Field(default_factory=list, max_length=1000)

    @field_validator("vlan", "vni")
    @classmethod
    def _by_type(cls, v: int | None, info: ValidationInfo) -> int | None:
        wanted = "vlan" if info.field_name == "vlan" else "vxlan"
        if (info.data.get("type") == wanted) != (v is not None):
            raise ValueError(f"required for a {wanted} network, refused for the others")
        return v


class IpRangeSpec(Body):
    """A range of addresses with its netmask and gateway."""

    start_ip: str
    end_ip: str
    netmask: str
    gateway: str

    @field_validator("start_ip", "end_ip", "gateway")
    @classmethod
    def _ip(cls, v: str) -> str:
        return str(ipaddress.IPv4Address(v))

    @field_validator("netmask")
    @classmethod
    def _mask(cls, v: str) -> str:
        ipaddress.IPv4Network(f"0.0.0.0/{v}")
        return v

    @model_validator(mode="after")
    def _order(self) -> Self:
        start, end = ipaddress.IPv4Address(self.start_ip), ipaddress.IPv4Address(self.end_ip)
        if start > end:
            raise ValueError("startIp must not be after endIp")
        net = ipaddress.IPv4Network(f"{self.gateway}/{self.netmask}", strict=False)
        if start not in net or end not in net:
            raise ValueError("the range must lie in the gateway's subnet")
        return self


class IpRangeCreate(IpRangeSpec):
    """Add an IP range to an L3 network."""

    name: Name
    description: Description = None
    l3_network_uuid: Uuid


class L3NetworkCreate(Named):
    """Create an L3 network on an L2 network (flat DHCP on each host)."""

    l2_network_uuid: Uuid
    dns: list[str] = Field(default_factory=list, max_length=8)
    dns_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]{1,253}$")
    ip_ranges: list[IpRangeSpec] = Field(default_factory=list, max_length=64)

    @field_validator("dns")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        return [str(ipaddress.ip_address(x)) for x in v]


class InstanceOfferingCreate(Named):
    """A VM size."""

    cpu_num: int = Field(ge=1, le=256)
    memory_size: int = Field(ge=16 * 2**20, le=2**42, description="bytes")


class DiskOfferingCreate(Named):
    """A data volume size."""

    disk_size: Bytes


HaLevel = Annotated[Literal["none", "restart"], Field(description=(
    "what the controller does when the VM's host dies: none (the VM stays Unknown until its "
    "host comes back), restart (it is started on another host of its cluster)"))]


class VmCreate(Named):
    """Create and start a VM from an image."""

    image_uuid: Uuid
    instance_offering_uuid: Uuid
    l3_network_uuids: list[Uuid] = Field(min_length=1, max_length=8)
    data_disk_offering_uuids: list[Uuid] = Field(default_factory=list, max_length=16)
    zone_uuid: Uuid | None = None
    cluster_uuid: Uuid | None = None
    host_uuid: Uuid | None = None
    primary_storage_uuid: Uuid | None = None
    security_group_uuids: list[Uuid] = Field(
        default_factory=list, max_length=16,
        description="security groups every NIC of the VM joins before it first starts")
    ha_level: HaLevel = "none"


class VmUpdate(UpdateBody):
    """PATCH a VM: name, description, haLevel."""

    ha_level: HaLevel = "none"


class VolumeCreate(Named):
    """Create a data volume (instantiated on first attach)."""

    disk_offering_uuid: Uuid | None = None
    size: Bytes | None = None
    primary_storage_uuid: Uuid | None = None

    @model_validator(mode="after")
    def _size(self) -> Self:
        if (self.disk_offering_uuid is None) == (self.size is None):
            raise ValueError("give exactly one of diskOfferingUuid and size")
        return self


class SnapshotCreate(Named):
    """Take a snapshot of a volume."""

    volume_uuid: Uuid


class TagCreate(Body):
    """Tag a resource."""

    resource_uuid: Uuid
    tag: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")


class MigrateAction(Body):
    """Live-migrate a running VM (to a chosen host, or the scheduler's pick)."""

    host_uuid: Uuid | None = None


class VolumeAction(Body):
    volume_uuid: Uuid


class NicAttachAction(Body):
    l3_network_uuid: Uuid


class NicDetachAction(Body):
    nic_uuid: Uuid


class SnapshotAction(Body):
    name: Name
    description: Description = None


class CreateImageAction(Body):
    """Make a template image in SFTP backup storage from a volume (its VM stopped)."""

    name: Name
    description: Description = None
    backup_storage_uuid: Uuid
    platform: Literal["Linux", "Windows", "Other"] = "Linux"


class StopAction(Body):
    force: bool = False


class VmBackupAction(Body):
    """Back up every volume of a VM into SFTP backup storage (crash-consistent when it runs)."""

    backup_storage_uuid: Uuid
    name: Name | None = Field(default=None, description="default: the VM's name and the time")
    description: Description = None


def _cron(v: str | None) -> str | None:
    if v is not None and not croniter.is_valid(v):
        raise ValueError("not a cron expression (minute hour day-of-month month day-of-week)")
    return v


CronExpression = Annotated[str | None, Field(default=None, max_length=255, description=(
    "when to back up, as cron fields in UTC (e.g. '0 3 * * *')")), AfterValidator(_cron)]
IntervalSeconds = Annotated[int | None, Field(default=None, ge=60, le=366 * 86400, description=(
    "back up every this many seconds"))]
RetentionCount = Annotated[int, Field(ge=1, le=10000, description="the policy's backups kept per VM")]


class BackupPolicyCreate(Named):
    """A backup schedule (an interval or a cron expression, not both) and a retention."""

    cron_expression: CronExpression = None
    interval_seconds: IntervalSeconds = Field(default=None, validate_default=True)
    retention_count: RetentionCount
    backup_storage_uuid: Uuid
    state: Literal["Enabled", "Disabled"] = "Enabled"

    @field_validator("interval_seconds")
    @classmethod
    def _one_schedule(cls, v: int | None, info: ValidationInfo) -> int | None:
        if "cron_expression" not in info.data:
            return v  # the cron expression is refused already
        if (v is None) == (info.data["cron_expression"] is None):
            raise ValueError("give exactly one of intervalSeconds and cronExpression")
        return v


class BackupPolicyUpdate(UpdateBody):
    """PATCH a backup policy: giving one of intervalSeconds and cronExpression clears the other."""

    cron_expression: CronExpression = None
    interval_seconds: IntervalSeconds = None
    retention_count: RetentionCount | None = None
    state: Literal["Enabled", "Disabled"] | None = None

    @field_validator("cron_expression", "interval_seconds", "retention_count", "state")
    @classmethod
    def _not_null(cls, v: object, info: ValidationInfo) -> object:
        if v is None:
            raise ValueError("must not be null")
        if info.field_name == "interval_seconds" and info.data.get("cron_expression") is not None:
            raise ValueError("give exactly one of intervalSeconds and cronExpression")
        return v

    @model_validator(mode="after")
    def _switch_schedule(self) -> Self:
        if "cron_expression" in self.model_fields_set:
            self.interval_seconds = None
        elif "interval_seconds" in self.model_fields_set:
            self.cron_expression = None
        return self


class BackupPolicyVms(Body):
    """VMs to attach to or detach from a backup policy (a VM has at most one policy)."""

    vm_uuids: list[Uuid] = Field(min_length=1, max_length=1000)


class ReplicateAction(Body):
    """Copy a backup into another SFTP backup storage (only the chunks it lacks travel)."""

    backup_storage_uuid: Uuid


class VmFromBackup(Named):
    """Create and start a new VM from a VM backup (new UUIDs, MACs and IPs)."""

    zone_uuid: Uuid | None = Field(default=None, description="default: the zone of the L3 networks, "
                                   "the cluster or the host given, else the backed-up VM's")
    cluster_uuid: Uuid | None = None
    host_uuid: Uuid | None = None
    l3_network_uuids: list[Uuid] | None = Field(
        default=None, min_length=1, max_length=8,
        description="default: the backed-up VM's networks, when they are in the target zone")
    backup_storage_uuid: Uuid | None = Field(
        default=None, description="where to read the backup; default: one in the target zone "
        "that holds every volume backup")
    instance_offering_uuid: Uuid | None = Field(
        default=None, description="default: the backed-up VM's CPUs and memory")


class EmptyAction(Body):
    """An action without parameters."""


class HostRedeploy(Body):
    """Redeploy a host's agents over SSH with the controller's key (installed by the add)."""

    force: bool = Field(default=False, description="reinstall and restart every agent; without it, only "
                        "the agents that report another kvmcloud version than the controller ships")
    ssh_user: SshUser = "root"
    ssh_port: int = Field(default=22, gt=0, lt=65536)
    ship_packages: bool = Field(default=False, description="the host reaches no package mirror")


class BackupStorageRedeploy(Body):
    """Redeploy an SFTP backup storage's agent over SSH with the controller's key."""

    force: bool = Field(default=False, description="reinstall and restart the agent; without it, the "
                        "playbook runs only when the agent is silent or reports another kvmcloud version")
    ssh_user: SshUser = "root"
    ssh_port: int | None = Field(default=None, gt=0, lt=65536, description="default: the storage's port")
    ship_packages: bool = Field(default=False, description="the host reaches no package mirror")


class ClusterAction(Body):
    cluster_uuid: Uuid


class ZoneAction(Body):
    zone_uuid: Uuid


# -- security groups ------------------------------------------------------------


class SecurityGroupCreate(Named):
    """A security group. It starts with one rule allowing all egress (delete that rule to
    restrict egress); a NIC attached to it gets no ingress but what its groups allow."""


class SecurityGroupRuleCreate(Body):
    """An allow rule: ingress from or egress to ``cidr`` or the NICs of ``remoteGroupUuid``
    (exactly one; neither: ``0.0.0.0/0``). Hosts running the group's NICs get it at once."""

    security_group_uuid: Uuid
    direction: SecurityGroupDirection
    protocol: SecurityGroupProtocol
    port_start: Port | None = Field(default=None, description="tcp and udp only")
    port_end: Port | None = Field(default=None, description="default: portStart")
    cidr: Cidr | None = None
    remote_group_uuid: Uuid | None = None
    description: Description = None

    @model_validator(mode="after")
    def _peer(self) -> Self:
        check_rule_ports(self.protocol, self.port_start, self.port_end)
        if self.cidr is not None and self.remote_group_uuid is not None:
            raise ValueError("give cidr or remoteGroupUuid, not both")
        return self


class SecurityGroupNics(Body):
    """VM NICs to attach to or detach from a security group (running ones change at once)."""

    vm_nic_uuids: list[Uuid] = Field(min_length=1, max_length=1000)


# -- accounts (controller/api/accounts.py) --------------------------------------

AccountName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
                                   description="letters, digits and . _ @ - (64 at most)")]


class AccountCreate(Body):
    """Create an API account; the answer carries its token, shown this once."""

    name: AccountName
    role: Literal["admin", "readonly"] = Field(
        default="readonly", description="admin: everything; readonly: GET only")
