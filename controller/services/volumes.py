"""Data volumes on VMs (attach, detach) and snapshots (take, revert)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from agentcore import digest
from controller import cascade
from controller.api import schemas as sc
from controller.core import Controller
from controller.db.base import new_uuid
from controller.db.jobs import Job
from controller.db.models import (
    BackupStorage,
    Host,
    Image,
    ImageBackupStorageRef,
    ImageCache,
    PrimaryStorage,
    PrimaryStorageClusterRef,
    Snapshot,
    Vm,
    Volume,
)
from controller.declarations import Action, CascadeStep
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import BadRequest, Conflict
from controller.flows import attach_volume, snapshot_volume
from controller.jobs import JobContext
from controller.primary import Op, backend_for
from controller.primary.base import any_storage_host
from controller.services.common import require, to_dict
from controller.services.vmhelpers import host_of
from kvmagent import models as km
from storageagent import models as sm

log = logging.getLogger(__name__)


def _context(ctl: Controller, vm_uuid: str) -> tuple[Vm, Host, Volume]:
    with ctl.db.read() as s:
        vm = require(s, Vm, vm_uuid, "vmUuid")
        host = host_of(s, vm.host_uuid or vm.last_host_uuid)
        root = s.scalar(select(Volume).where(Volume.vm_uuid == vm_uuid, Volume.type == "Root"))
        if root is None:
            raise Conflict(f"vm {vm_uuid} has no root volume")
        return vm, host, root


def attach_volume_action(ctl: Controller, uuid: str, body: sc.VolumeAction) -> Job:
    """Attach a data volume (created on the VM's primary storage on first attach)."""
    def run(ctx: JobContext) -> dict[str, Any]:
        vm, host, root = _context(ctl, uuid)
        st = attach_volume.AttachVolume(ctl, ctx, vm, host, root, body.volume_uuid)
        attach_volume.run(st)
        with ctl.db.read() as s:
            return to_dict(require(s, Volume, body.volume_uuid, "volumeUuid"))
    return ctl.jobs.submit("attach-volume", "vms", uuid, [f"vms:{uuid}", f"volumes:{body.volume_uuid}"],
                           run)


def detach_volume_action(ctl: Controller, uuid: str, body: sc.VolumeAction) -> Job:
    """Detach a data volume (hot-unplugged when the VM runs)."""
    def run(ctx: JobContext) -> dict[str, Any]:
        vm, host, _ = _context(ctl, uuid)
        with ctl.db.read() as s:
            vol = require(s, Volume, body.volume_uuid, "volumeUuid")
            ps = require(s, PrimaryStorage, vol.primary_storage_uuid, "primaryStorageUuid")
        if vol.vm_uuid != uuid or vol.type != "Data":
            raise BadRequest("volumeUuid: not a data volume of this VM", field="volumeUuid")
        if vm.state == "Running":
            ctx.call(host.agent_url, km.DetachVolumeCmd(
                vm_uuid=uuid, volume=backend_for(ps).volume_spec(ps, vol, vol.device_id or 1)))
        with ctl.db.write() as s:
            s.execute(update(Volume).where(Volume.uuid == vol.uuid).values(vm_uuid=None,
                                                                          device_id=None))
            return to_dict(require(s, Volume, vol.uuid, "volumeUuid"))
    return ctl.jobs.submit("detach-volume", "vms", uuid, [f"vms:{uuid}", f"volumes:{body.volume_uuid}"],
                           run)


def _volume_context(ctl: Controller, uuid: str) -> tuple[Volume, PrimaryStorage, Vm | None, Host]:
    with ctl.db.read() as s:
        vol = require(s, Volume, uuid, "volumeUuid")
        if vol.status != "Ready" or vol.primary_storage_uuid is None:
            raise Conflict(f"volume {uuid} is {vol.status}", status=vol.status)
        ps = require(s, PrimaryStorage, vol.primary_storage_uuid, "primaryStorageUuid")
        vm = s.get(Vm, vol.vm_uuid) if vol.vm_uuid else None
        host = host_of(s, vm.host_uuid or vm.last_host_uuid) if vm else None
        if host is None:
            host = any_storage_host(s, ps.uuid)
        if host is None:
            raise Conflict(f"no connected host reaches primary storage {ps.uuid}")
        return vol, ps, vm, host


def snapshot_action(ctl: Controller, uuid: str, body: sc.SnapshotAction) -> Job:
    """Snapshot a volume: online (the VM moves to a new overlay) or offline."""
    def run(ctx: JobContext) -> dict[str, Any]:
        vol, ps, vm, host = _volume_context(ctl, uuid)
        return snapshot_volume.run(snapshot_volume.SnapshotVolume(
            ctl, ctx, vol, ps, vm, host, body.name, body.description))
    return ctl.jobs.submit("snapshot-volume", "volumes", uuid, [f"volumes:{uuid}"], run)


def revert_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    """Revert a volume to this snapshot (its VM must be stopped)."""
    with ctl.db.read() as s:
        snap = require(s, Snapshot, uuid, "snapshotUuid")

    def run(ctx: JobContext) -> dict[str, Any]:
        vol, ps, vm, host = _volume_context(ctl, snap.volume_uuid)
        if vm is not None and vm.state not in ("Stopped",):
            raise Conflict(f"vm {vm.uuid} is {vm.state}; stop it to revert", state=vm.state)
        backend_for(ps).revert_snapshot(Op(ctl, ctx), ps, host, vol, snap.install_path or "")
        with ctl.db.read() as s:
            return to_dict(require(s, Volume, vol.uuid, "volumeUuid"))
    return ctl.jobs.submit("revert-snapshot", "volumes", snap.volume_uuid,
                           [f"volumes:{snap.volume_uuid}"], run)


def create_image_action(ctl: Controller, uuid: str, body: sc.CreateImageAction) -> Job:
    """Upload the (stopped) volume's content to SFTP backup storage under the new image's
    UUID through its storage's backend, and register the image."""
    def run(ctx: JobContext) -> dict[str, Any]:
        vol, ps, vm, host = _volume_context(ctl, uuid)
        if vm is not None and vm.state not in ("Stopped",):
            raise Conflict(f"vm {vm.uuid} is {vm.state}; stop it to make an image", state=vm.state)
        with ctl.db.read() as s:
            bs = require(s, BackupStorage, body.backup_storage_uuid, "backupStorageUuid")
        if bs.type != "sftp":
            raise BadRequest("backupStorageUuid: only SFTP backup storage takes uploads",
                             field="backupStorageUuid")
        image_uuid = new_uuid()
        up = backend_for(ps).upload_volume(Op(ctl, ctx), ps, host, vol, bs, image_uuid)
        with ctl.db.write() as s:
            image = Image(uuid=image_uuid, name=body.name, description=body.description,
                          platform=body.platform, format=up.format, size=up.virtual_size,
                          actual_size=up.size,
                          digest=digest.normalise(up.digest) if up.digest else None, status="Ready",
                          media_type="RootVolumeTemplate" if vol.type == "Root" else
                          "DataVolumeTemplate", url=None)
            s.add(image)
            s.flush()
            s.add(ImageBackupStorageRef(image_uuid=image.uuid, backup_storage_uuid=bs.uuid,
                                        install_path=up.image_id))
            return to_dict(image)
    return ctl.jobs.submit("create-image", "volumes", uuid, [f"volumes:{uuid}"], run)


def delete_primary_storage(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Evict the image cache (the volumes went first), unmount an NFS export from the
    hosts that mounted it, then drop the rows."""
    with ctl.db.read() as s:
        ps = s.get(PrimaryStorage, uuid)
        cached = list(s.scalars(select(ImageCache).where(ImageCache.primary_storage_uuid == uuid)))
        clusters = select(PrimaryStorageClusterRef.cluster_uuid).where(
            PrimaryStorageClusterRef.primary_storage_uuid == uuid)
        agents = sorted({u for u in s.scalars(select(Host.storage_agent_url).where(
            Host.cluster_uuid.in_(clusters), Host.status == "Connected")) if u})
    if ps is not None:
        backend_for(ps).evict_cache(Op(ctl, ctx), ps, cached)
    if ps is not None and ps.type == "nfs":
        for url in agents:
            try:
                ctx.call(url, sm.UnmountCmd(storage_uuid=uuid))
            except AgentCallError as e:
                log.warning("unmounting %s through %s failed: %s", uuid, url, e)
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)


DECLARATIONS = (
    Action("vms", "attach-volume", sc.VolumeAction, attach_volume_action),
    Action("vms", "detach-volume", sc.VolumeAction, detach_volume_action),
    Action("volumes", "create-snapshot", sc.SnapshotAction, snapshot_action),
    Action("volumes", "create-image", sc.CreateImageAction, create_image_action),
    Action("snapshots", "revert", sc.EmptyAction, revert_action),
    CascadeStep("primary-storages", "delete", delete_primary_storage),
)
