"""Offerings, images, VMs, NICs, volumes, snapshots and tags."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, ResourceMixin, new_uuid


class InstanceOffering(ResourceMixin, Base):
    """A VM size: vCPUs and memory."""

    __tablename__ = "instance_offerings"
    cpu_num: Mapped[int] = mapped_column(Integer)
    memory_size: Mapped[int] = mapped_column(BigInteger)


class DiskOffering(ResourceMixin, Base):
    """A data volume size."""

    __tablename__ = "disk_offerings"
    disk_size: Mapped[int] = mapped_column(BigInteger)


class Image(ResourceMixin, Base):
    """A template or ISO kept on backup storage."""

    __tablename__ = "images"
    #: registered with an http(s) URL: where hosts fetch it (else from the backup storage)
    url: Mapped[str | None] = mapped_column(String(2048), default=None)
    #: added from a URL: where the backup storage downloaded it from (a record only)
    source_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    format: Mapped[str] = mapped_column(String(16), default="qcow2")
    media_type: Mapped[str] = mapped_column(String(32), default="RootVolumeTemplate")
    platform: Mapped[str] = mapped_column(String(32), default="Linux")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    actual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    digest: Mapped[str | None] = mapped_column(String(80), default=None)
    status: Mapped[str] = mapped_column(String(32), default="Ready")


class ImageBackupStorageRef(Base):
    """Where an image is stored: its id in one backup storage."""

    __tablename__ = "image_backup_storage_refs"
    __table_args__ = (UniqueConstraint("image_uuid", "backup_storage_uuid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_uuid: Mapped[str] = mapped_column(ForeignKey("images.uuid"), index=True)
    backup_storage_uuid: Mapped[str] = mapped_column(ForeignKey("backup_storages.uuid"), index=True)
    install_path: Mapped[str] = mapped_column(String(1024))


class ImageCache(Base):
    """An image already copied into a primary storage's cache."""

    __tablename__ = "image_caches"
    __table_args__ = (UniqueConstraint("primary_storage_uuid", "image_uuid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    primary_storage_uuid: Mapped[str] = mapped_column(ForeignKey("primary_storages.uuid"), index=True)
    image_uuid: Mapped[str] = mapped_column(ForeignKey("images.uuid"), index=True)
    install_path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger, default=0)


class Vm(ResourceMixin, Base):
    """A virtual machine. ``state``: Creating, Starting, Running, Stopping,
    Stopped, Rebooting, Migrating, Paused, Unknown, Destroying, Error.
    ``ha_level``: ``none``, or ``restart`` (started on another host when its host dies)."""

    __tablename__ = "vms"
    __table_args__ = (Index("ix_vms_state_create_date", "state", "create_date"),)
    zone_uuid: Mapped[str] = mapped_column(ForeignKey("zones.uuid"), index=True)
    cluster_uuid: Mapped[str | None] = mapped_column(ForeignKey("clusters.uuid"), index=True, default=None)
    host_uuid: Mapped[str | None] = mapped_column(ForeignKey("hosts.uuid"), index=True, default=None)
    last_host_uuid: Mapped[str | None] = mapped_column(String(32), default=None)
    image_uuid: Mapped[str | None] = mapped_column(ForeignKey("images.uuid"), index=True, default=None)
    instance_offering_uuid: Mapped[str | None] = mapped_column(
        ForeignKey("instance_offerings.uuid"), index=True, default=None)
    root_volume_uuid: Mapped[str | None] = mapped_column(String(32), default=None)
    cpu_num: Mapped[int] = mapped_column(Integer)
    memory_size: Mapped[int] = mapped_column(BigInteger, index=True)
    platform: Mapped[str] = mapped_column(String(32), default="Linux")
    ha_level: Mapped[str] = mapped_column(String(16), default="none", server_default="none")


class VmNic(ResourceMixin, Base):
    """A VM's NIC on an L3 network, with the address the controller allocated."""

    __tablename__ = "vm_nics"
    vm_uuid: Mapped[str] = mapped_column(ForeignKey("vms.uuid"), index=True)
    l3_network_uuid: Mapped[str] = mapped_column(ForeignKey("l3_networks.uuid"), index=True)
    used_ip_uuid: Mapped[str | None] = mapped_column(ForeignKey("used_ips.uuid"), default=None)
    ip: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    netmask: Mapped[str | None] = mapped_column(String(64), default=None)
    gateway: Mapped[str | None] = mapped_column(String(64), default=None)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    device_id: Mapped[int] = mapped_column(Integer, default=0)


class Volume(ResourceMixin, Base):
    """A root or data disk on a primary storage; ``install_path`` is relative to its root."""

    __tablename__ = "volumes"
    vm_uuid: Mapped[str | None] = mapped_column(ForeignKey("vms.uuid"), index=True, default=None)
    primary_storage_uuid: Mapped[str | None] = mapped_column(
        ForeignKey("primary_storages.uuid"), index=True, default=None)
    disk_offering_uuid: Mapped[str | None] = mapped_column(String(32), default=None)
    root_image_uuid: Mapped[str | None] = mapped_column(String(32), default=None)
    type: Mapped[str] = mapped_column(String(16), default="Data")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    actual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    install_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    format: Mapped[str] = mapped_column(String(16), default="qcow2")
    status: Mapped[str] = mapped_column(String(32), default="Ready")
    device_id: Mapped[int | None] = mapped_column(Integer, default=None)


class Snapshot(ResourceMixin, Base):
    """A point-in-time copy of a volume."""

    __tablename__ = "snapshots"
    volume_uuid: Mapped[str] = mapped_column(ForeignKey("volumes.uuid"), index=True)
    primary_storage_uuid: Mapped[str | None] = mapped_column(String(32), default=None)
    install_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(32), default="Ready")


class Tag(Base):
    """A user tag on any resource; queryable as ``?q=tag=web``."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("resource_uuid", "tag"),)
    uuid: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_uuid)
    resource_uuid: Mapped[str] = mapped_column(String(32), index=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    tag: Mapped[str] = mapped_column(String(255), index=True)
