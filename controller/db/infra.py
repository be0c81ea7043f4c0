"""Zones, clusters, hosts, storage and their attachments."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, ResourceMixin


class Zone(ResourceMixin, Base):
    """A failure domain: its own clusters, storage and networks."""

    __tablename__ = "zones"


class Cluster(ResourceMixin, Base):
    """Hosts of one hypervisor type that share storage and L2 networks."""

    __tablename__ = "clusters"
    zone_uuid: Mapped[str] = mapped_column(ForeignKey("zones.uuid"), index=True)
    hypervisor_type: Mapped[str] = mapped_column(String(32), default="KVM")


class Host(ResourceMixin, Base):
    """A KVM host running kvmagent (and storageagent for file storage).

    ``state`` is the operator's choice (Enabled, Disabled, Maintenance);
    ``status`` is what the tracker sees (Connecting, Connected, Disconnected).
    ``vtep_ip`` is the host's VXLAN tunnel endpoint (IPv4) on the underlay.
    """

    __tablename__ = "hosts"
    zone_uuid: Mapped[str] = mapped_column(ForeignKey("zones.uuid"), index=True)
    cluster_uuid: Mapped[str] = mapped_column(ForeignKey("clusters.uuid"), index=True)
    management_ip: Mapped[str] = mapped_column(String(255), unique=True)
    agent_url: Mapped[str] = mapped_column(String(512))
    storage_agent_url: Mapped[str | None] = mapped_column(String(512), default=None)
    status: Mapped[str] = mapped_column(String(32), default="Connecting", index=True)
    cpu_num: Mapped[int] = mapped_column(Integer, default=0)
    total_cpu: Mapped[int] = mapped_column(Integer, default=0)
    available_cpu: Mapped[int] = mapped_column(Integer, default=0, index=True)
    total_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    available_memory: Mapped[int] = mapped_column(BigInteger, default=0, index=True)
    architecture: Mapped[str | None] = mapped_column(String(32), default=None)
    agent_version: Mapped[str | None] = mapped_column(String(64), default=None)
    vtep_ip: Mapped[str | None] = mapped_column(String(64), default=None)


class PrimaryStorage(ResourceMixin, Base):
    """Where VM disks and the image cache live (nfs, local, sharedmountpoint, ceph)."""

    __tablename__ = "primary_storages"
    zone_uuid: Mapped[str] = mapped_column(ForeignKey("zones.uuid"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(1024))
    mount_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    agent_url: Mapped[str | None] = mapped_column(String(512), default=None)
    status: Mapped[str] = mapped_column(String(32), default="Connected")
    total_capacity: Mapped[int] = mapped_column(BigInteger, default=0)
    available_capacity: Mapped[int] = mapped_column(BigInteger, default=0)
    # ceph only: monitors (comma-separated HOST[:PORT]), pools, cephx user, the
    # key's reference (never the key), the cluster's fsid, the hosts' libvirt secret
    ceph_monitors: Mapped[str | None] = mapped_column(String(1024), default=None)
    ceph_pool: Mapped[str | None] = mapped_column(String(64), default=None)
    ceph_cache_pool: Mapped[str | None] = mapped_column(String(64), default=None)
    ceph_user: Mapped[str | None] = mapped_column(String(80), default=None)
    ceph_key_ref: Mapped[str | None] = mapped_column(String(128), default=None)
    ceph_fsid: Mapped[str | None] = mapped_column(String(36), default=None)
    ceph_secret_uuid: Mapped[str | None] = mapped_column(String(32), default=None)


class BackupStorage(ResourceMixin, Base):
    """Where images and templates live (sftp, ceph)."""

    __tablename__ = "backup_storages"
    type: Mapped[str] = mapped_column(String(32))
    hostname: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    username: Mapped[str] = mapped_column(String(64), default="root")
    url: Mapped[str] = mapped_column(String(1024))
    agent_url: Mapped[str | None] = mapped_column(String(512), default=None)
    #: the store's directory on the agent's host (sftp); None: the same as ``url``,
    #: which is the path the hosts' SFTP sessions see (different under a chroot)
    agent_root: Mapped[str | None] = mapped_column(String(1024), default=None)
    status: Mapped[str] = mapped_column(String(32), default="Connected")
    total_capacity: Mapped[int] = mapped_column(BigInteger, default=0)
    available_capacity: Mapped[int] = mapped_column(BigInteger, default=0)


class PrimaryStorageClusterRef(Base):
    """Primary storage attached to a cluster."""

    __tablename__ = "primary_storage_cluster_refs"
    __table_args__ = (UniqueConstraint("primary_storage_uuid", "cluster_uuid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    primary_storage_uuid: Mapped[str] = mapped_column(ForeignKey("primary_storages.uuid"), index=True)
    cluster_uuid: Mapped[str] = mapped_column(ForeignKey("clusters.uuid"), index=True)


class BackupStorageZoneRef(Base):
    """Backup storage attached to a zone."""

    __tablename__ = "backup_storage_zone_refs"
    __table_args__ = (UniqueConstraint("backup_storage_uuid", "zone_uuid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_storage_uuid: Mapped[str] = mapped_column(ForeignKey("backup_storages.uuid"), index=True)
    zone_uuid: Mapped[str] = mapped_column(ForeignKey("zones.uuid"), index=True)
