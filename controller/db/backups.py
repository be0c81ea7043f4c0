"""VM and volume backups: points in time of a VM's volumes, kept in backup storage.

A :class:`VolumeBackup` is one volume's content at one point, stored in one or
more backup storages (:class:`VolumeBackupStorageRef`, under its id there)
with the digest, size and format the store measured. A :class:`VmBackup` is
the consistent set of a VM's volumes taken together, with what the VM was
(offering, NICs and L3 networks, tags, volumes) as JSON. Backups outlive the
VM and the volumes they were taken of, so those are plain UUIDs, not keys.

A :class:`BackupPolicy` backs up the VMs attached to it
(:class:`VmBackupPolicyRef`, at most one policy per VM) every
``interval_seconds`` or at the times of a cron expression, keeping the newest
``retention_count`` of the backups it made (``VmBackup.backup_policy_uuid``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base, ResourceMixin, utcnow


class VmBackup(ResourceMixin, Base):
    """A VM's volumes backed up together. ``status``: Creating, Ready, Error."""

    __tablename__ = "vm_backups"
    vm_uuid: Mapped[str] = mapped_column(String(32), index=True)
    root_volume_backup_uuid: Mapped[str | None] = mapped_column(String(32), default=None)
    #: running: crash-consistent through live snapshots; stopped: offline
    vm_state: Mapped[str] = mapped_column(String(32), default="Stopped")
    #: the VM as it was: offering, cpu/memory, image, NICs (L3, MAC, IP), tags, volumes
    vm_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(32), default="Creating")
    #: the policy whose schedule made it (its retention prunes only these); None: made by hand
    backup_policy_uuid: Mapped[str | None] = mapped_column(String(32), index=True, default=None)


class VolumeBackup(ResourceMixin, Base):
    """One volume at one point in time. ``status``: Creating, Ready, Error."""

    __tablename__ = "volume_backups"
    volume_uuid: Mapped[str] = mapped_column(String(32), index=True)
    vm_backup_uuid: Mapped[str | None] = mapped_column(
        ForeignKey("vm_backups.uuid"), index=True, default=None)
    #: the previous Ready backup of the same volume (the store keeps only new chunks)
    parent_backup_uuid: Mapped[str | None] = mapped_column(String(32), default=None)
    volume_type: Mapped[str] = mapped_column(String(16), default="Data")
    device_id: Mapped[int | None] = mapped_column(Integer, default=None)
    #: the image id in the stores (the backup's UUID)
    install_path: Mapped[str | None] = mapped_column(String(256), default=None)
    digest: Mapped[str | None] = mapped_column(String(80), default=None)
    #: virtual size; ``actual_size``: the bytes of the stored (flattened) file
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    actual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    format: Mapped[str] = mapped_column(String(16), default="qcow2")
    status: Mapped[str] = mapped_column(String(32), default="Creating")


class VolumeBackupStorageRef(Base):
    """Where a volume backup is stored: its id in one backup storage."""

    __tablename__ = "volume_backup_storage_refs"
    __table_args__ = (UniqueConstraint("volume_backup_uuid", "backup_storage_uuid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    volume_backup_uuid: Mapped[str] = mapped_column(ForeignKey("volume_backups.uuid"), index=True)
    backup_storage_uuid: Mapped[str] = mapped_column(ForeignKey("backup_storages.uuid"), index=True)
    install_path: Mapped[str] = mapped_column(String(256))


class BackupPolicy(ResourceMixin, Base):
    """When to back up the VMs attached to it, where, and how many of its backups to keep.
    Exactly one of ``interval_seconds`` and ``cron_expression`` is set; ``state``:
    Enabled or Disabled (no scheduled run)."""

    __tablename__ = "backup_policies"
    interval_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    cron_expression: Mapped[str | None] = mapped_column(String(255), default=None)
    retention_count: Mapped[int] = mapped_column(Integer, default=1)
    backup_storage_uuid: Mapped[str] = mapped_column(ForeignKey("backup_storages.uuid"), index=True)


class VmBackupPolicyRef(Base):
    """A VM attached to a policy, and when its schedule last ran for it (claimed before
    the backup job is submitted, so a slot runs once across controller restarts)."""

    __tablename__ = "vm_backup_policy_refs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_policy_uuid: Mapped[str] = mapped_column(ForeignKey("backup_policies.uuid"), index=True)
    vm_uuid: Mapped[str] = mapped_column(ForeignKey("vms.uuid"), unique=True)
    attach_date: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
