"""Back up a VM: its rows (Creating) → for a running VM, a live snapshot of every
disk (the VM writes to overlays from then on, so the files below stop changing
together) → a flattened copy of each volume beside it → the overlays merged
back → each copy uploaded into the store (only the chunks it lacks travel) →
the copies dropped → the rows Ready, with the digest and sizes the store measured.
On Ceph the copy is an RBD snapshot, taken while the VM runs (librbd asks the
QEMU holding the image's lock to take it: crash-consistent), so there is no
overlay to snapshot into or merge back.

A failure at any step undoes what was done: the VM is merged back onto its
own files, the copies and overlays are removed, what reached the store is
deleted from it, and the rows go; the failed job keeps the error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, update

from controller.core import Controller
from controller.db.models import (
    BackupStorage,
    Host,
    PrimaryStorage,
    Tag,
    Vm,
    VmBackup,
    Volume,
    VolumeBackup,
    VolumeBackupStorageRef,
)
from controller.flows.add_image import remove_from_stores
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.primary import Op, backend_for
from controller.primary.base import StoredVolume, any_storage_host
from controller.services.common import require, to_dict

log = logging.getLogger(__name__)


@dataclass
class VolumeWork:
    """One volume of the backup and what was done to it."""

    vol: Volume
    ps: PrimaryStorage
    backup_uuid: str
    parent_uuid: str | None
    overlay: str = ""
    live: bool = False  # the VM writes to the overlay now
    export: str = ""
    stored: StoredVolume | None = None


@dataclass
class BackupVm:
    """What the backup flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    uuid: str  # the VmBackup's
    vm_uuid: str
    running: bool
    host: Host
    bs: BackupStorage
    name: str
    description: str | None
    metadata: dict[str, Any]
    volumes: list[VolumeWork] = field(default_factory=list)
    result: dict[str, Any] | None = None
    #: the backup policy whose schedule asked for it (None: by hand)
    policy_uuid: str | None = None

    @property
    def op(self) -> Op:
        return Op(self.ctl, self.ctx)


def add_rows(st: BackupVm) -> None:
    with st.ctl.db.write() as s:
        s.add(VmBackup(uuid=st.uuid, name=st.name, description=st.description, vm_uuid=st.vm_uuid,
                       vm_state="Running" if st.running else "Stopped", vm_metadata=st.metadata,
                       status="Creating", backup_policy_uuid=st.policy_uuid))
        s.flush()
        for w in st.volumes:
            s.add(VolumeBackup(uuid=w.backup_uuid, name=f"{st.name}-{w.vol.type.lower()}"
                               f"-{w.vol.device_id or 0}", volume_uuid=w.vol.uuid,
                               vm_backup_uuid=st.uuid, parent_backup_uuid=w.parent_uuid,
                               volume_type=w.vol.type, device_id=w.vol.device_id,
                               size=w.vol.size, status="Creating"))
        s.flush()
        for w in st.volumes:  # written now: a backup cut short still says where to delete it
            s.add(VolumeBackupStorageRef(volume_backup_uuid=w.backup_uuid,
                                         backup_storage_uuid=st.bs.uuid, install_path=w.backup_uuid))


def drop_rows(st: BackupVm) -> None:
    ids = [w.backup_uuid for w in st.volumes]
    with st.ctl.db.write() as s:
        s.execute(delete(VolumeBackupStorageRef).where(VolumeBackupStorageRef.volume_backup_uuid.in_(ids)))
        s.execute(delete(Tag).where(Tag.resource_uuid.in_([*ids, st.uuid])))
        s.execute(delete(VolumeBackup).where(VolumeBackup.uuid.in_(ids)))
        s.execute(delete(VmBackup).where(VmBackup.uuid == st.uuid))


def _snapshot(i: int) -> Step[BackupVm]:
    def run(st: BackupVm) -> None:
        w = st.volumes[i]
        w.overlay = backend_for(w.ps).overlay_path(w.ps, w.vol, w.backup_uuid)
        if not w.overlay:  # the storage's own snapshot (the export) is taken while the VM runs
            return
        backend_for(w.ps).live_snapshot(st.op, w.ps, st.host, st.vm_uuid, w.vol, w.overlay)
        w.live = True

    def undo(st: BackupVm) -> None:
        w = st.volumes[i]
        if w.live:
            backend_for(w.ps).live_merge(st.op, w.ps, st.host, st.vm_uuid, w.vol, w.overlay)
            w.live = False
        elif w.overlay:  # the snapshot failed: an overlay it left (that QEMU does not hold) goes
            backend_for(w.ps).drop_file(st.op, w.ps, st.host, w.overlay)

    return Step(f"snapshot-{i}", run, undo)


def _export(i: int) -> Step[BackupVm]:
    def run(st: BackupVm) -> None:
        w = st.volumes[i]
        w.export = backend_for(w.ps).export_path(w.ps, w.vol, w.backup_uuid)
        backend_for(w.ps).export(st.op, w.ps, st.host, w.vol, w.export)

    def undo(st: BackupVm) -> None:
        w = st.volumes[i]
        if w.export:
            backend_for(w.ps).drop_file(st.op, w.ps, st.host, w.export)

    return Step(f"export-{i}", run, undo)


def _merge(i: int) -> Step[BackupVm]:
    def run(st: BackupVm) -> None:
        w = st.volumes[i]
        if w.live:
            backend_for(w.ps).live_merge(st.op, w.ps, st.host, st.vm_uuid, w.vol, w.overlay)
            w.live = False

    return Step(f"merge-{i}", run)


def _upload(i: int) -> Step[BackupVm]:
    def run(st: BackupVm) -> None:
        w = st.volumes[i]
        w.stored = backend_for(w.ps).upload(st.op, w.ps, st.host, w.export, st.bs, w.backup_uuid)

    def undo(st: BackupVm) -> None:
        w = st.volumes[i]
        remove_from_stores(st.ctx, f"volume backup {w.backup_uuid}",
                           [(w.stored.image_id if w.stored else w.backup_uuid, st.bs)])

    return Step(f"upload-{i}", run, undo)


def _drop_export(i: int) -> Step[BackupVm]:
    def run(st: BackupVm) -> None:
        w = st.volumes[i]
        backend_for(w.ps).drop_file(st.op, w.ps, st.host, w.export)
        w.export = ""

    return Step(f"drop-copy-{i}", run)


def record(st: BackupVm) -> None:
    """The rows Ready, with what the store measured, and where each backup is stored."""
    root = next((w.backup_uuid for w in st.volumes if w.vol.type == "Root"), None)
    with st.ctl.db.write() as s:
        for w in st.volumes:
            stored = w.stored
            assert stored is not None
            s.execute(update(VolumeBackup).where(VolumeBackup.uuid == w.backup_uuid).values(
                install_path=stored.image_id, digest=stored.digest, size=stored.virtual_size,
                actual_size=stored.size, format=stored.format, status="Ready"))
            s.execute(update(VolumeBackupStorageRef).where(
                VolumeBackupStorageRef.volume_backup_uuid == w.backup_uuid).values(
                install_path=stored.image_id))
        s.execute(update(VmBackup).where(VmBackup.uuid == st.uuid).values(
            status="Ready", root_volume_backup_uuid=root))
        s.flush()
        st.result = to_dict(require(s, VmBackup, st.uuid, "vmBackupUuid"))


def steps(st: BackupVm) -> list[Step[BackupVm]]:
    n = range(len(st.volumes))
    live = [_snapshot(i) for i in n] if st.running else []
    merged = [_merge(i) for i in n] if st.running else []
    return [Step("add-backup-rows", add_rows, drop_rows), *live, *[_export(i) for i in n], *merged,
            *[_upload(i) for i in n], *[_drop_export(i) for i in n], Step("record", record)]


def run(st: BackupVm) -> dict[str, Any]:
    """Run the flow; the VmBackup as the API shows it."""
    Flow("backup-vm", steps(st), check=st.ctx.check, guard=st.ctx.uncancellable).run(st)
    assert st.result is not None
    return st.result



def settle_cut_short(ctl: Controller, ctx: JobContext, volume_backup_uuid: str) -> None:
    """Undo on primary storage what a backup cut short by a controller restart left there
    (its flow never ran its rollback): a running VM put back onto its own file (the live
    snapshot merged back: a no-op when it was never taken or already merged), the copy
    dropped. Called before such a backup is deleted; what reached the store goes with
    the delete. A VM that stopped while it wrote to the overlay keeps the overlay file
    (its writes since the snapshot are there): logged for the operator, never deleted."""
    with ctl.db.read() as s:
        b = s.get(VolumeBackup, volume_backup_uuid)
        if b is None or b.status != "Error":
            return
        vb = s.get(VmBackup, b.vm_backup_uuid) if b.vm_backup_uuid else None
        vol = s.get(Volume, b.volume_uuid) if b.volume_uuid else None
        ps = s.get(PrimaryStorage, vol.primary_storage_uuid) if vol and vol.primary_storage_uuid else None
        if vol is None or ps is None:
            return  # the volume is gone, and its files with it
        vm = s.get(Vm, vol.vm_uuid) if vol.vm_uuid else None
        running = vm is not None and vm.state == "Running" and vm.host_uuid is not None
        backend = backend_for(ps)
        host = (s.get(Host, vm.host_uuid) if running and vm is not None and vm.host_uuid
                else any_storage_host(s, ps.uuid, backend.through_storage_agent))
    op = Op(ctl, ctx)
    overlay = backend.overlay_path(ps, vol, b.uuid)
    if overlay and vb is not None and vb.vm_state == "Running":
        if running and vm is not None and host is not None:
            backend.live_merge(op, ps, host, vm.uuid, vol, overlay)
        else:
            log.warning("backup %s was cut short while vm %s ran on overlay %s; the VM is not running "
                        "now, so the overlay stays for the operator to commit", b.uuid, vol.vm_uuid, overlay)
    backend.drop_file(op, ps, host, backend.export_path(ps, vol, b.uuid))
