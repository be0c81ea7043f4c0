"""Every table, and the API name of every resource."""

from __future__ import annotations

from controller.db.accounts import Account, AccountToken, AuditEvent
from controller.db.backups import (
    BackupPolicy,
    VmBackup,
    VmBackupPolicyRef,
    VolumeBackup,
    VolumeBackupStorageRef,
)
from controller.db.base import Base, ResourceMixin
from controller.db.cluster import ControllerNode
from controller.db.compute import (
    DiskOffering,
    Image,
    ImageBackupStorageRef,
    ImageCache,
    InstanceOffering,
    Snapshot,
    Tag,
    Vm,
    VmNic,
    Volume,
)
from controller.db.credentials import AgentCredential
from controller.db.infra import (
    BackupStorage,
    BackupStorageZoneRef,
    Cluster,
    Host,
    PrimaryStorage,
    PrimaryStorageClusterRef,
    Zone,
)
from controller.db.jobs import Job
from controller.db.network import IpRange, L2Network, L2NetworkClusterRef, L3Network, UsedIp
from controller.db.secgroups import SecurityGroup, SecurityGroupRule, VmNicSecurityGroupRef

#: API collection name → model, in the order a fresh cloud is built.
RESOURCES: dict[str, type[ResourceMixin]] = {
    "zones": Zone,
    "clusters": Cluster,
    "hosts": Host,
    "primary-storages": PrimaryStorage,
    "backup-storages": BackupStorage,
    "images": Image,
    "l2-networks": L2Network,
    "l3-networks": L3Network,
    "ip-ranges": IpRange,
    "instance-offerings": InstanceOffering,
    "disk-offerings": DiskOffering,
    "vms": Vm,
    "vm-nics": VmNic,
    "volumes": Volume,
    "snapshots": Snapshot,
    "vm-backups": VmBackup,
    "volume-backups": VolumeBackup,
    "backup-policies": BackupPolicy,
    "security-groups": SecurityGroup,
    "security-group-rules": SecurityGroupRule,
}

__all__ = [
    "RESOURCES", "Account", "AccountToken", "AgentCredential", "AuditEvent", "BackupPolicy",
    "BackupStorage",
    "BackupStorageZoneRef", "Base", "Cluster", "ControllerNode", "DiskOffering",
    "Host", "Image", "ImageBackupStorageRef", "ImageCache", "InstanceOffering", "IpRange",
    "Job", "L2Network", "L2NetworkClusterRef", "L3Network", "PrimaryStorage",
    "PrimaryStorageClusterRef", "ResourceMixin", "SecurityGroup", "SecurityGroupRule", "Snapshot", "Tag",
    "UsedIp", "Vm", "VmBackup",
    "VmBackupPolicyRef", "VmNic", "VmNicSecurityGroupRef",
    "Volume", "VolumeBackup", "VolumeBackupStorageRef", "Zone",
]
