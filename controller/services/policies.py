"""Backup policies: create and change them, attach VMs to them and detach VMs.

The schedule itself runs in the controller (:mod:`controller.backup_schedule`);
its jobs are the VM backup action's (:func:`scheduled_backup`). Deleting a
policy detaches its VMs (their policy-made backups stay); deleting a VM drops
its attachment.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller.api import schemas as sc
from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import BackupPolicy, Vm, VmBackupPolicyRef
from controller.declarations import Action, Create, Update
from controller.errors import Conflict
from controller.jobs import JobContext
from controller.services.backups import _store as backup_store
from controller.services.backups import backup_action
from controller.services.common import require
from controller.services.resources import record


def create_backup_policy(s: Session, body: sc.BackupPolicyCreate) -> BackupPolicy:
    backup_store(s, body.backup_storage_uuid, "backupStorageUuid")
    row = BackupPolicy(name=body.name, description=body.description, state=body.state,
                       interval_seconds=body.interval_seconds, cron_expression=body.cron_expression,
                       retention_count=body.retention_count,
                       backup_storage_uuid=body.backup_storage_uuid)
    s.add(row)
    return row


def _attached(s: Session, vm_uuids: list[str]) -> dict[str, str]:
    """VM → the policy it is attached to."""
    return {r.vm_uuid: r.backup_policy_uuid for r in s.scalars(
        select(VmBackupPolicyRef).where(VmBackupPolicyRef.vm_uuid.in_(vm_uuids)))}


def _check_attach(s: Session, uuid: str, vm_uuids: list[str]) -> None:
    for i, vm_uuid in enumerate(vm_uuids):
        require(s, Vm, vm_uuid, f"vmUuids.{i}")
    for vm_uuid, policy in _attached(s, vm_uuids).items():
        if policy != uuid:
            raise Conflict(f"vm {vm_uuid} is attached to backup policy {policy}; detach it first",
                           vmUuid=vm_uuid, backupPolicyUuid=policy)


def attach_action(ctl: Controller, uuid: str, body: sc.BackupPolicyVms) -> Job:
    """Attach VMs (each at most one policy; already attached here: left as it is)."""
    vm_uuids = list(dict.fromkeys(body.vm_uuids))
    with ctl.db.read() as s:
        _check_attach(s, uuid, vm_uuids)

    def run(ctx: JobContext) -> dict[str, Any]:
        with ctl.db.write() as s:
            require(s, BackupPolicy, uuid, "backupPolicyUuid")
            _check_attach(s, uuid, vm_uuids)
            have = _attached(s, vm_uuids)
            for vm_uuid in vm_uuids:
                if vm_uuid not in have:
                    s.add(VmBackupPolicyRef(backup_policy_uuid=uuid, vm_uuid=vm_uuid))
        return {"backupPolicyUuid": uuid, "vmUuids": attached_vms(ctl, uuid)}
    return ctl.jobs.submit("attach-backup-policy", "backup-policies", uuid,
                           [f"backup-policies:{uuid}"], run)


def detach_action(ctl: Controller, uuid: str, body: sc.BackupPolicyVms) -> Job:
    """Detach VMs (one not attached to this policy is left alone)."""

    def run(ctx: JobContext) -> dict[str, Any]:
        with ctl.db.write() as s:
            s.execute(delete(VmBackupPolicyRef).where(VmBackupPolicyRef.backup_policy_uuid == uuid,
                                                      VmBackupPolicyRef.vm_uuid.in_(body.vm_uuids)))
        return {"backupPolicyUuid": uuid, "vmUuids": attached_vms(ctl, uuid)}
    return ctl.jobs.submit("detach-backup-policy", "backup-policies", uuid,
                           [f"backup-policies:{uuid}"], run)


def attached_vms(ctl: Controller, uuid: str) -> list[str]:
    with ctl.db.read() as s:
        return list(s.scalars(select(VmBackupPolicyRef.vm_uuid).where(
            VmBackupPolicyRef.backup_policy_uuid == uuid).order_by(VmBackupPolicyRef.vm_uuid)))


def scheduled_backup(ctl: Controller, vm_uuid: str, backup_storage_uuid: str, policy_uuid: str) -> Job:
    """The scheduler's backup: the backup action's job, its VmBackup marked as the policy's."""
    return backup_action(ctl, vm_uuid, sc.VmBackupAction(backup_storage_uuid=backup_storage_uuid),
                         policy_uuid=policy_uuid)


DECLARATIONS = (
    Create("backup-policies", sc.BackupPolicyCreate, record(create_backup_policy)),
    Update("backup-policies", sc.BackupPolicyUpdate),
    Action("backup-policies", "attach", sc.BackupPolicyVms, attach_action),
    Action("backup-policies", "detach", sc.BackupPolicyVms, detach_action),
)
