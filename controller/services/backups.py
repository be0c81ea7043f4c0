"""VM and volume backups: back a VM up into SFTP backup storage, restore a stopped VM
(or one of its volumes) from a backup, delete backups from the stores.

A backup is a job on the VM's queue (:mod:`controller.flows.backup_vm`); a
restore too (:mod:`controller.flows.restore_volumes`). Deleting a VmBackup
deletes its VolumeBackups (the cascade), each removed from every store that
holds it through the store's agent (gone already is fine) before its rows go.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import cascade
from controller.api import schemas as sc
from controller.core import Controller
from controller.db.base import new_uuid
from controller.db.jobs import Job
from controller.db.models import (
    BackupStorage,
    BackupStorageZoneRef,
    Cluster,
    Host,
    Image,
    InstanceOffering,
    L3Network,
    PrimaryStorage,
    Tag,
    Vm,
    VmBackup,
    VmNic,
    Volume,
    VolumeBackup,
    VolumeBackupStorageRef,
    Zone,
)
from controller.declarations import Action, CascadeStep
from controller.errors import BadRequest, Conflict
from controller.flows import backup_vm, create_vm_from_backup, replicate_backup, restore_volumes
from controller.flows.add_image import remove_from_stores
from controller.flows.create_vm_from_backup import CreateVmFromBackup
from controller.jobs import JobContext
from controller.primary import backend_for
from controller.primary.base import StoredVolume, any_storage_host
from controller.services.common import require, to_dict

log = logging.getLogger(__name__)


def _store(s: Session, uuid: str, field: str) -> BackupStorage:
    bs = require(s, BackupStorage, uuid, field)
    if bs.type != "sftp":
        raise BadRequest(f"{field}: only SFTP backup storage keeps backups ({bs.type} given)",
                         field=field)
    if not bs.agent_url:
        raise BadRequest(f"{field}: backup storage {uuid} has no agentUrl", field=field)
    return bs


def _host(s: Session, vm: Vm, ps: PrimaryStorage) -> Host:
    """The VM's host when it runs; else its last host if connected, else any host of its storage."""
    if vm.state == "Running":
        host = s.get(Host, vm.host_uuid) if vm.host_uuid else None
    else:
        need_agent = backend_for(ps).through_storage_agent
        host = s.get(Host, vm.host_uuid or vm.last_host_uuid or "")
        if host is None or host.status != "Connected" or (need_agent and not host.storage_agent_url):
            host = any_storage_host(s, ps.uuid, need_agent)
    if host is None:
        raise Conflict(f"no connected host reaches the volumes of vm {vm.uuid}")
    return host


def metadata(s: Session, vm: Vm, vols: list[Volume]) -> dict[str, Any]:
    """What the VM was, for a restore as a new VM and for people reading the backup."""
    nics = s.scalars(select(VmNic).where(VmNic.vm_uuid == vm.uuid).order_by(VmNic.device_id))
    tags = s.scalars(select(Tag.tag).where(Tag.resource_uuid == vm.uuid).order_by(Tag.tag))
    return {
        "name": vm.name, "description": vm.description, "zoneUuid": vm.zone_uuid,
        "clusterUuid": vm.cluster_uuid, "imageUuid": vm.image_uuid,
        "instanceOfferingUuid": vm.instance_offering_uuid, "cpuNum": vm.cpu_num,
        "memorySize": vm.memory_size, "platform": vm.platform,
        "nics": [{"l3NetworkUuid": n.l3_network_uuid, "mac": n.mac, "ip": n.ip,
                  "deviceId": n.device_id} for n in nics],
        "tags": list(tags),
        "volumes": [{"volumeUuid": v.uuid, "type": v.type, "deviceId": v.device_id, "size": v.size,
                     "primaryStorageUuid": v.primary_storage_uuid} for v in vols],
    }


def _latest(s: Session, volume_uuid: str) -> str | None:
    return s.scalar(select(VolumeBackup.uuid).where(
        VolumeBackup.volume_uuid == volume_uuid, VolumeBackup.status == "Ready")
        .order_by(VolumeBackup.create_date.desc()).limit(1))


def backup_action(ctl: Controller, uuid: str, body: sc.VmBackupAction,
                  policy_uuid: str | None = None) -> Job:
    """Back up every volume of the VM (running: crash-consistent, through live snapshots);
    ``policy_uuid``: the backup policy whose schedule asks for it."""
    with ctl.db.read() as s:
        _store(s, body.backup_storage_uuid, "backupStorageUuid")

    def run(ctx: JobContext) -> dict[str, Any]:
        with ctl.db.read() as s:
            vm = require(s, Vm, uuid, "vmUuid")
            if vm.state not in ("Running", "Stopped"):
                raise Conflict(f"vm {uuid} is {vm.state}; a backup needs it Running or Stopped",
                               state=vm.state)
            bs = _store(s, body.backup_storage_uuid, "backupStorageUuid")
            vols = list(s.scalars(select(Volume).where(Volume.vm_uuid == uuid).order_by(
                Volume.type.desc(), Volume.device_id)))  # Root first
            if not vols or any(v.status != "Ready" or v.primary_storage_uuid is None for v in vols):
                raise Conflict(f"vm {uuid} has volumes that are not Ready")
            work = [backup_vm.VolumeWork(v, require(s, PrimaryStorage, v.primary_storage_uuid,
                                                    "primaryStorageUuid"),
                                         new_uuid(), _latest(s, v.uuid)) for v in vols]
            host = _host(s, vm, work[0].ps)
            meta = metadata(s, vm, vols)
            name = body.name or f"{vm.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
            running = vm.state == "Running"
        return backup_vm.run(backup_vm.BackupVm(ctl, ctx, new_uuid(), uuid, running, host, bs, name,
                                                body.description, meta, work,
                                                policy_uuid=policy_uuid))
    return ctl.jobs.submit("backup-vm", "vms", uuid, [f"vms:{uuid}"], run)


def _restore(ctl: Controller, ctx: JobContext, vm_uuid: str,
             backups: list[VolumeBackup]) -> list[dict[str, Any]]:
    with ctl.db.read() as s:
        vm = s.get(Vm, vm_uuid)
        if vm is None:
            raise Conflict(f"vm {vm_uuid} is gone; restoring as a new VM is not supported yet")
        if vm.state != "Stopped":
            raise Conflict(f"vm {vm_uuid} is {vm.state}; stop it to restore", state=vm.state)
        targets = []
        for b in backups:
            if b.status != "Ready":
                raise Conflict(f"volume backup {b.uuid} is {b.status}", status=b.status)
            vol = s.get(Volume, b.volume_uuid)
            if vol is None or vol.vm_uuid != vm_uuid or vol.primary_storage_uuid is None:
                raise Conflict(f"volume {b.volume_uuid} of backup {b.uuid} is no longer on vm {vm_uuid}")
            ps = require(s, PrimaryStorage, vol.primary_storage_uuid, "primaryStorageUuid")
            targets.append(restore_volumes.Target(b, vol, ps))
        stores = {r.volume_backup_uuid: r.backup_storage_uuid for r in s.scalars(
            select(VolumeBackupStorageRef).where(VolumeBackupStorageRef.volume_backup_uuid.in_(
                [b.uuid for b in backups])))}
        missing = [b.uuid for b in backups if b.uuid not in stores]
        if missing or len(set(stores.values())) != 1:
            raise Conflict(f"the backups are not all in one backup storage (missing: {missing})")
        bs = _store(s, stores[backups[0].uuid], "backupStorageUuid")
        host = _host(s, vm, targets[0].ps)
    return restore_volumes.run(restore_volumes.RestoreVolumes(ctl, ctx, host, bs, targets))


def restore_vm_backup_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    """Replace the volumes of the (stopped) VM with this backup's content."""
    with ctl.db.read() as s:
        vb = require(s, VmBackup, uuid, "vmBackupUuid")
        vm_uuid = vb.vm_uuid
        # deleting one of its volume backups waits for the restore, and the other way round
        keys = [f"vms:{vm_uuid}", f"vm-backups:{uuid}", *(f"volume-backups:{u}" for u in s.scalars(
            select(VolumeBackup.uuid).where(VolumeBackup.vm_backup_uuid == uuid)))]

    def run(ctx: JobContext) -> dict[str, Any]:
        with ctl.db.read() as s:
            b = require(s, VmBackup, uuid, "vmBackupUuid")
            if b.status != "Ready":
                raise Conflict(f"vm backup {uuid} is {b.status}", status=b.status)
            backups = list(s.scalars(select(VolumeBackup).where(VolumeBackup.vm_backup_uuid == uuid)))
        volumes = _restore(ctl, ctx, vm_uuid, backups)
        with ctl.db.read() as s:
            return {**to_dict(require(s, Vm, vm_uuid, "vmUuid")), "volumes": volumes}
    return ctl.jobs.submit("restore-vm-backup", "vms", vm_uuid, keys, run)


def restore_volume_backup_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    """Replace one volume of a stopped VM with this backup's content."""
    with ctl.db.read() as s:
        b = require(s, VolumeBackup, uuid, "volumeBackupUuid")
        vol = s.get(Volume, b.volume_uuid)
        if vol is None or vol.vm_uuid is None:
            raise Conflict(f"volume {b.volume_uuid} is gone or on no VM; restoring it elsewhere "
                           "is not supported yet")
        vm_uuid = vol.vm_uuid
        # deleting its VM backup (which deletes it) waits for the restore
        keys = [f"vms:{vm_uuid}", f"volume-backups:{uuid}",
                *([f"vm-backups:{b.vm_backup_uuid}"] if b.vm_backup_uuid else [])]

    def run(ctx: JobContext) -> dict[str, Any]:
        with ctl.db.read() as s:
            backup = require(s, VolumeBackup, uuid, "volumeBackupUuid")
        return _restore(ctl, ctx, vm_uuid, [backup])[0]
    return ctl.jobs.submit("restore-volume-backup", "volumes", b.volume_uuid, keys, run)


def _replicate(ctl: Controller, ctx: JobContext, backup_uuids: list[str],
               target_uuid: str) -> dict[str, Any]:
    """Copy each backup the target lacks into it, from a store that holds it."""
    with ctl.db.read() as s:
        target = _store(s, target_uuid, "backupStorageUuid")
        items, present = [], []
        for u in backup_uuids:
            b = require(s, VolumeBackup, u, "volumeBackupUuid")
            if b.status != "Ready":
                raise Conflict(f"volume backup {u} is {b.status}", status=b.status)
            refs = list(s.execute(select(VolumeBackupStorageRef.install_path, BackupStorage).join(
                BackupStorage, BackupStorage.uuid == VolumeBackupStorageRef.backup_storage_uuid)
                .where(VolumeBackupStorageRef.volume_backup_uuid == u)
                .order_by(VolumeBackupStorageRef.id)))
            if any(bs.uuid == target_uuid for _, bs in refs):
                present.append(u)
                continue
            sources = [(path, bs) for path, bs in refs if bs.type == "sftp" and bs.agent_url]
            if not sources or not b.digest:
                raise Conflict(f"volume backup {u} is in no SFTP backup storage to copy it from")
            items.append(replicate_backup.Item(u, sources[0][0], b.digest, sources[0][1]))
    st = replicate_backup.Replicate(ctx, target, items)
    if items:
        replicate_backup.run(st)
    return {"backupStorageUuid": target_uuid, "replicated": [i.backup_uuid for i in items],
            "alreadyPresent": present, "chunksSent": st.chunks_sent, "bytesSent": st.bytes_sent}


def _check_target(s: Session, target_uuid: str, backup_uuids: list[str]) -> None:
    """400 naming backupStorageUuid: unknown, not SFTP, or the only store the backups are in."""
    _store(s, target_uuid, "backupStorageUuid")
    stores = set(s.scalars(select(VolumeBackupStorageRef.backup_storage_uuid).where(
        VolumeBackupStorageRef.volume_backup_uuid.in_(backup_uuids))))
    if stores == {target_uuid}:
        raise BadRequest("backupStorageUuid: the backup is already in that backup storage only; "
                         "name another one", field="backupStorageUuid")


def replicate_vm_backup_action(ctl: Controller, uuid: str, body: sc.ReplicateAction) -> Job:
    """Copy every volume backup of the VM backup into another SFTP backup storage."""
    with ctl.db.read() as s:
        vb = require(s, VmBackup, uuid, "vmBackupUuid")
        if vb.status != "Ready":
            raise Conflict(f"vm backup {uuid} is {vb.status}", status=vb.status)
        backups = list(s.scalars(select(VolumeBackup.uuid).where(VolumeBackup.vm_backup_uuid == uuid)
                                 .order_by(VolumeBackup.device_id)))
        _check_target(s, body.backup_storage_uuid, backups)
    keys = [f"vm-backups:{uuid}", *(f"volume-backups:{u}" for u in backups)]

    def run(ctx: JobContext) -> dict[str, Any]:
        return _replicate(ctl, ctx, backups, body.backup_storage_uuid)
    return ctl.jobs.submit("replicate-vm-backup", "vm-backups", uuid, keys, run)


def replicate_volume_backup_action(ctl: Controller, uuid: str, body: sc.ReplicateAction) -> Job:
    """Copy one volume backup into another SFTP backup storage."""
    with ctl.db.read() as s:
        b = require(s, VolumeBackup, uuid, "volumeBackupUuid")
        _check_target(s, body.backup_storage_uuid, [uuid])
        keys = [f"volume-backups:{uuid}", *([f"vm-backups:{b.vm_backup_uuid}"] if b.vm_backup_uuid else [])]

    def run(ctx: JobContext) -> dict[str, Any]:
        return _replicate(ctl, ctx, [uuid], body.backup_storage_uuid)
    return ctl.jobs.submit("replicate-volume-backup", "volume-backups", uuid, keys, run)


def _target_zone(s: Session, body: sc.VmFromBackup, meta: dict[str, Any]) -> tuple[str, list[str]]:
    """The zone the new VM goes to and its L3 networks, checked against each other."""
    cluster = require(s, Cluster, body.cluster_uuid, "clusterUuid") if body.cluster_uuid else None
    host = require(s, Host, body.host_uuid, "hostUuid") if body.host_uuid else None
    host_zone = require(s, Cluster, host.cluster_uuid, "hostUuid").zone_uuid if host else None
    l3s = [require(s, L3Network, u, f"l3NetworkUuids.{i}")
           for i, u in enumerate(body.l3_network_uuids or [])]
    zone = (body.zone_uuid or (cluster.zone_uuid if cluster else None) or host_zone
            or (l3s[0].zone_uuid if l3s else None) or meta.get("zoneUuid"))
    require(s, Zone, zone, "zoneUuid")
    for what, z in (("clusterUuid", cluster.zone_uuid if cluster else zone), ("hostUuid", host_zone or zone)):
        if z != zone:
            raise BadRequest(f"{what}: not in zone {zone}", field=what)
    if l3s:
        if any(l3.zone_uuid != zone for l3 in l3s):
            raise BadRequest(f"l3NetworkUuids: networks must be in zone {zone} (the VM's)",
                             field="l3NetworkUuids")
        return str(zone), [l3.uuid for l3 in l3s]
    wanted = [n["l3NetworkUuid"] for n in meta.get("nics", [])]
    found = {l3.uuid: l3 for l3 in s.scalars(select(L3Network).where(L3Network.uuid.in_(wanted)))}
    if not wanted or any(u not in found or found[u].zone_uuid != zone for u in wanted):
        raise BadRequest(f"l3NetworkUuids: the backed-up VM's networks are not all in zone {zone}; "
                         "name the new VM's networks", field="l3NetworkUuids")
    return str(zone), wanted


def _source_store(s: Session, body: sc.VmFromBackup, zone: str,
                  backups: list[VolumeBackup]) -> tuple[BackupStorage, dict[str, str]]:
    """A backup storage of the zone that holds every volume backup, and their ids there."""
    refs: dict[str, dict[str, str]] = {}
    for r in s.scalars(select(VolumeBackupStorageRef).where(
            VolumeBackupStorageRef.volume_backup_uuid.in_([b.uuid for b in backups]))
            .order_by(VolumeBackupStorageRef.id)):
        refs.setdefault(r.backup_storage_uuid, {})[r.volume_backup_uuid] = r.install_path
    in_zone = set(s.scalars(select(BackupStorageZoneRef.backup_storage_uuid).where(
        BackupStorageZoneRef.zone_uuid == zone)))
    if body.backup_storage_uuid:
        bs = _store(s, body.backup_storage_uuid, "backupStorageUuid")
        if bs.uuid not in in_zone:
            raise BadRequest(f"backupStorageUuid: not attached to zone {zone}", field="backupStorageUuid")
        if len(refs.get(bs.uuid, {})) != len(backups):
            raise BadRequest("backupStorageUuid: does not hold every volume backup of the backup; "
                             "replicate it there first", field="backupStorageUuid")
        return bs, refs[bs.uuid]
    for uuid, held in refs.items():
        found = s.get(BackupStorage, uuid)
        if (uuid in in_zone and len(held) == len(backups) and found is not None
                and found.type == "sftp" and found.agent_url):
            return found, held
    raise BadRequest(f"backupStorageUuid: no SFTP backup storage of zone {zone} holds every "
                     "volume backup of the backup; replicate it to one first", field="backupStorageUuid")


def create_vm_from_backup_action(ctl: Controller, uuid: str, body: sc.VmFromBackup) -> Job:
    """A new VM (new UUIDs, MACs and IPs) whose volumes are made from the backup's, started."""
    def write(s: Session) -> tuple[Job, CreateVmFromBackup, list[str]]:
        vb = require(s, VmBackup, uuid, "vmBackupUuid")
        if vb.status != "Ready":
            raise Conflict(f"vm backup {uuid} is {vb.status}", status=vb.status)
        meta = dict(vb.vm_metadata or {})
        backups = sorted(s.scalars(select(VolumeBackup).where(VolumeBackup.vm_backup_uuid == uuid)),
                         key=lambda b: (b.volume_type != "Root", b.device_id or 0))
        if not backups or backups[0].volume_type != "Root" or any(b.status != "Ready" for b in backups):
            raise Conflict(f"vm backup {uuid} has no Ready root volume backup, or volume backups "
                           "that are not Ready")
        zone, l3s = _target_zone(s, body, meta)
        bs, ids = _source_store(s, body, zone, backups)
        if body.instance_offering_uuid:
            offering = require(s, InstanceOffering, body.instance_offering_uuid, "instanceOfferingUuid")
            offering_uuid: str | None = offering.uuid
            cpu, memory = offering.cpu_num, offering.memory_size
        else:
            offering_uuid = meta.get("instanceOfferingUuid")
            if not offering_uuid or s.get(InstanceOffering, offering_uuid) is None:
                offering_uuid = None
            cpu, memory = int(meta.get("cpuNum") or 1), int(meta.get("memorySize") or 0)
            if memory <= 0:
                raise BadRequest("instanceOfferingUuid: the backup names no memory size; give one",
                                 field="instanceOfferingUuid")
        image = meta.get("imageUuid")
        vm = Vm(uuid=new_uuid(), name=body.name, description=body.description, zone_uuid=zone,
                image_uuid=image if image and s.get(Image, image) else None,
                instance_offering_uuid=offering_uuid, cpu_num=cpu, memory_size=memory,
                platform=meta.get("platform") or "Linux", state="Creating")
        s.add(vm)
        s.flush()
        stored = [StoredVolume(ids[b.uuid], b.digest or "", b.actual_size, b.size, b.format)
                  for b in backups]
        st = CreateVmFromBackup(
            ctl=ctl, ctx=None,  # type: ignore[arg-type]
            vm_uuid=vm.uuid, cpu=cpu, memory=memory, image_uuid="", l3_uuids=l3s,
            data_sizes=[b.size for b in backups[1:]], zone_uuid=zone,
            cluster_uuid=body.cluster_uuid, want_host=body.host_uuid, image_size=backups[0].size,
            vm_name=body.name, bs=bs, stored=stored)
        keys = [f"vms:{vm.uuid}", f"vm-backups:{uuid}", *(f"volume-backups:{b.uuid}" for b in backups)]
        return ctl.jobs.prepare(s, "create-vm-from-backup", "vms", vm.uuid), st, keys

    job, st, keys = ctl.db.transaction(write)

    def run(ctx: JobContext) -> dict[str, Any]:
        st.ctx = ctx
        create_vm_from_backup.run(st)
        if st.result is not None:
            return st.result
        with ctl.db.read() as s:
            return to_dict(require(s, Vm, st.vm_uuid, "vmUuid"))
    return ctl.jobs.start(job, keys, run)


def delete_volume_backup(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Remove the backup from every store that holds it, then its rows (one a restart cut
    short: first what its flow left on primary storage)."""
    backup_vm.settle_cut_short(ctl, ctx, uuid)
    with ctl.db.read() as s:
        refs = list(s.execute(select(VolumeBackupStorageRef.install_path, BackupStorage).join(
            BackupStorage, BackupStorage.uuid == VolumeBackupStorageRef.backup_storage_uuid)
            .where(VolumeBackupStorageRef.volume_backup_uuid == uuid)))
    remove_from_stores(ctx, f"volume backup {uuid}", refs)
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)


DECLARATIONS = (
    Action("vms", "backup", sc.VmBackupAction, backup_action),
    Action("vm-backups", "restore", sc.EmptyAction, restore_vm_backup_action),
    Action("volume-backups", "restore", sc.EmptyAction, restore_volume_backup_action),
    Action("vm-backups", "replicate", sc.ReplicateAction, replicate_vm_backup_action),
    Action("volume-backups", "replicate", sc.ReplicateAction, replicate_volume_backup_action),
    Action("vm-backups", "create-vm", sc.VmFromBackup, create_vm_from_backup_action),
    CascadeStep("volume-backups", "delete", delete_volume_backup),
)
