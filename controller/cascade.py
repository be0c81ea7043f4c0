"""Cascading deletes: what depends on what, and what happens to it.

Each collection declares its dependants (collection, the column pointing at
the parent, and the action the parent's deletion takes on them). ``plan``
walks the graph from one resource and lists every affected resource, children
first (a fixed rank over collections that follows the dependency order), with
the strongest action when a resource is reached twice (``delete`` beats
``migrate-or-stop`` beats ``detach``). The API shows this list and, once
confirmed, a job carries it out item by item; items that need agents (VMs,
volumes, NICs) go through the service functions the services declare as
cascade steps (:class:`controller.declarations.CascadeStep`), the same ones the
API actions use.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import (
    RESOURCES,
    BackupStorageZoneRef,
    ImageBackupStorageRef,
    ImageCache,
    L2NetworkClusterRef,
    PrimaryStorageClusterRef,
    Tag,
    UsedIp,
    Vm,
    VmBackupPolicyRef,
    VmNic,
    Volume,
    VolumeBackupStorageRef,
)
from controller.declarations import CascadeFn
from controller.jobs import JobContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dependant:
    """Rows of ``coll`` whose ``column`` names the parent get ``action``."""

    coll: str
    column: str
    action: str


DEPENDANTS: dict[str, list[Dependant]] = {
    "zones": [Dependant("vms", "zone_uuid", "delete"),
              Dependant("clusters", "zone_uuid", "delete"),
              Dependant("primary-storages", "zone_uuid", "delete"),
              Dependant("l2-networks", "zone_uuid", "delete"),
              Dependant("l3-networks", "zone_uuid", "delete")],
    "clusters": [Dependant("hosts", "cluster_uuid", "delete"),
                 Dependant("vms", "cluster_uuid", "detach")],
    "hosts": [Dependant("vms", "host_uuid", "migrate-or-stop")],
    "primary-storages": [Dependant("volumes", "primary_storage_uuid", "delete")],
    "volumes": [Dependant("snapshots", "volume_uuid", "delete")],
    "vms": [Dependant("vm-nics", "vm_uuid", "delete")],
    "l2-networks": [Dependant("l3-networks", "l2_network_uuid", "delete")],
    "l3-networks": [Dependant("ip-ranges", "l3_network_uuid", "delete"),
                    Dependant("vm-nics", "l3_network_uuid", "detach")],
    "instance-offerings": [Dependant("vms", "instance_offering_uuid", "detach")],
    "images": [Dependant("vms", "image_uuid", "detach")],
    "vm-backups": [Dependant("volume-backups", "vm_backup_uuid", "delete")],
    "backup-storages": [Dependant("backup-policies", "backup_storage_uuid", "delete")],
    "security-groups": [Dependant("security-group-rules", "security_group_uuid", "delete"),
                        Dependant("security-group-rules", "remote_group_uuid", "delete")],
}

#: children before parents (hosts late: networks and storage are cleaned up through them)
# a group before its rules: its step takes its NICs out first, then removes its rules itself
RANK = ["security-groups", "security-group-rules",
        "backup-policies", "volume-backups", "vm-backups", "snapshots", "vm-nics", "vms", "volumes", "ip-ranges",
        "l3-networks", "l2-networks",
        "primary-storages", "hosts", "clusters", "backup-storages", "images",
        "instance-offerings", "disk-offerings", "zones"]
STRENGTH = {"detach": 0, "migrate-or-stop": 1, "delete": 2}


def _walk(s: Session, coll: str, uuid: str, action: str,
          seen: dict[tuple[str, str], str]) -> None:
    key = (coll, uuid)
    if key in seen and STRENGTH[seen[key]] >= STRENGTH[action]:
        return
    seen[key] = action
    if action != "delete":
        return
    if coll == "primary-storages":
        # a VM whose root volume lives here goes with it
        roots = select(Volume.vm_uuid).where(Volume.primary_storage_uuid == uuid,
                                             Volume.type == "Root")
        for vm_uuid in s.scalars(select(Vm.uuid).where(Vm.uuid.in_(roots))):
            _walk(s, "vms", vm_uuid, "delete", seen)
    if coll == "ip-ranges":
        used = select(UsedIp.uuid).where(UsedIp.ip_range_uuid == uuid)
        for nic in s.scalars(select(VmNic.uuid).where(VmNic.used_ip_uuid.in_(used))):
            _walk(s, "vm-nics", nic, "detach", seen)
    if coll == "vms":
        for vol in s.scalars(select(Volume.uuid).where(Volume.vm_uuid == uuid,
                                                      Volume.type == "Root")):
            _walk(s, "volumes", vol, "delete", seen)
    for dep in DEPENDANTS.get(coll, []):
        model: Any = RESOURCES[dep.coll]
        col = getattr(model, dep.column)
        for child in s.scalars(select(model.uuid).where(col == uuid)):
            _walk(s, dep.coll, child, dep.action, seen)


def plan(s: Session, coll: str, uuid: str) -> list[dict[str, Any]]:
    """Everything deleting ``coll/uuid`` affects, children first, the resource last."""
    seen: dict[tuple[str, str], str] = {}
    _walk(s, coll, uuid, "delete", seen)
    items = sorted(seen.items(), key=lambda kv: (RANK.index(kv[0][0]), kv[0][1]))
    out = []
    for (c, u), action in items:
        row: Any = s.get(RESOURCES[c], u)
        out.append({"type": c, "uuid": u, "name": getattr(row, "name", None), "action": action})
    return out


# -- carrying it out ---------------------------------------------------------

#: (collection, action) → what does it; collections without one are plain row deletes
Steps = Mapping[tuple[str, str], CascadeFn]


def delete_rows(s: Session, coll: str, uuid: str) -> None:
    """Drop a row that needs no agent, with its attachment rows and tags."""
    if coll == "zones":
        s.execute(delete(BackupStorageZoneRef).where(BackupStorageZoneRef.zone_uuid == uuid))
    elif coll == "clusters":
        s.execute(delete(PrimaryStorageClusterRef).where(PrimaryStorageClusterRef.cluster_uuid == uuid))
        s.execute(delete(L2NetworkClusterRef).where(L2NetworkClusterRef.cluster_uuid == uuid))
    elif coll == "primary-storages":
        s.execute(delete(PrimaryStorageClusterRef).where(
            PrimaryStorageClusterRef.primary_storage_uuid == uuid))
        s.execute(delete(ImageCache).where(ImageCache.primary_storage_uuid == uuid))
    elif coll == "l3-networks":
        s.execute(delete(UsedIp).where(UsedIp.l3_network_uuid == uuid))  # the DHCP server's
    elif coll == "l2-networks":
        s.execute(delete(L2NetworkClusterRef).where(L2NetworkClusterRef.l2_network_uuid == uuid))
    elif coll == "ip-ranges":
        s.execute(delete(UsedIp).where(UsedIp.ip_range_uuid == uuid))
    elif coll == "backup-storages":
        s.execute(delete(BackupStorageZoneRef).where(BackupStorageZoneRef.backup_storage_uuid == uuid))
        s.execute(delete(ImageBackupStorageRef).where(
            ImageBackupStorageRef.backup_storage_uuid == uuid))
        s.execute(delete(VolumeBackupStorageRef).where(
            VolumeBackupStorageRef.backup_storage_uuid == uuid))
    elif coll == "backup-policies":  # its VMs are detached
        s.execute(delete(VmBackupPolicyRef).where(VmBackupPolicyRef.backup_policy_uuid == uuid))
    elif coll == "volume-backups":
        s.execute(delete(VolumeBackupStorageRef).where(VolumeBackupStorageRef.volume_backup_uuid == uuid))
    elif coll == "images":
        s.execute(delete(ImageBackupStorageRef).where(ImageBackupStorageRef.image_uuid == uuid))
        s.execute(delete(ImageCache).where(ImageCache.image_uuid == uuid))
    s.execute(delete(Tag).where(Tag.resource_uuid == uuid))
    model: Any = RESOURCES[coll]
    s.execute(delete(model).where(model.uuid == uuid))


def _detach(s: Session, coll: str, uuid: str, parent: tuple[str, str]) -> None:
    pcoll, puuid = parent
    model: Any = RESOURCES[coll]
    for dep in DEPENDANTS.get(pcoll, []):
        if dep.coll == coll and dep.action == "detach":
            s.execute(update(model).where(model.uuid == uuid, getattr(model, dep.column) == puuid)
                      .values({dep.column: None}))


def execute(ctl: Controller, ctx: JobContext, coll: str, uuid: str, steps: Steps) -> dict[str, Any]:
    """Carry out the plan of deleting ``coll/uuid``, re-planned inside the job."""
    with ctl.db.read() as s:
        items = plan(s, coll, uuid)
    done = 0
    for i, item in enumerate(items):
        ctx.check()
        ctx.progress(f"{item['action']} {item['type']} {item['uuid']}", 100.0 * i / len(items))
        c, u, action = item["type"], item["uuid"], item["action"]
        fn = steps.get((c, action))
        if fn is not None and c == "vms" and (c, u) != (coll, uuid):
            _on_vm_queue(ctl, ctx, fn, u, action, items)
        elif fn is not None:
            fn(ctl, ctx, c, u)
        elif action == "detach":
            with ctl.db.write() as s:
                _detach_any(s, c, u, items)
        else:
            with ctl.db.write() as s:
                delete_rows(s, c, u)
        done += 1
    return {"deleted": [i for i in items if i["action"] == "delete"], "count": done}


def _on_vm_queue(ctl: Controller, ctx: JobContext, fn: CascadeFn, vm_uuid: str, action: str,
                 items: list[dict[str, Any]]) -> None:
    """Stop, migrate or delete a VM on its own queue, so none of its jobs interleaves.

    Its jobs queued earlier run first. No deadlock: a VM's jobs never wait for
    the queue of a host, zone or storage the cascade holds. The VM may have
    changed meanwhile: gone, or moved to a host that stays, it is left alone.
    """
    with ctx.hold([f"vms:{vm_uuid}"]):
        with ctl.db.read() as s:
            vm = s.get(Vm, vm_uuid)
            if vm is None:
                return
            if action == "migrate-or-stop":
                going = {i["uuid"] for i in items if i["type"] == "hosts" and i["action"] == "delete"}
                if vm.host_uuid not in going:
                    return
        fn(ctl, ctx, "vms", vm_uuid)


def _detach_any(s: Session, coll: str, uuid: str, items: list[dict[str, Any]]) -> None:
    for parent in items:
        if parent["action"] == "delete":
            _detach(s, coll, uuid, (parent["type"], parent["uuid"]))


def submit_delete(ctl: Controller, coll: str, uuid: str, steps: Steps) -> Job:
    """Queue the cascade as one job on the resource."""
    return ctl.jobs.submit(f"delete-{coll}", coll, uuid, [f"{coll}:{uuid}"],
                           lambda ctx: execute(ctl, ctx, coll, uuid, steps))
