"""The resources that live only in the database (no agent involved): create, change, tag."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller.api import schemas as sc
from controller.core import Controller
from controller.db.base import Base, utcnow
from controller.db.models import (
    RESOURCES,
    BackupStorage,
    BackupStorageZoneRef,
    Cluster,
    DiskOffering,
    InstanceOffering,
    IpRange,
    L2Network,
    L2NetworkClusterRef,
    L3Network,
    PrimaryStorage,
    PrimaryStorageClusterRef,
    Tag,
    Volume,
    Zone,
)
from controller.declarations import Create, CreateFn
from controller.errors import BadRequest, Conflict
from controller.services.common import get_or_404, require, to_dict

B = TypeVar("B", bound=BaseModel)


def _named(body: sc.Named) -> dict[str, Any]:
    return {"name": body.name, "description": body.description}


def create_zone(s: Session, body: sc.ZoneCreate) -> Zone:
    row = Zone(**_named(body))
    s.add(row)
    return row


def create_cluster(s: Session, body: sc.ClusterCreate) -> Cluster:
    require(s, Zone, body.zone_uuid, "zoneUuid")
    row = Cluster(**_named(body), zone_uuid=body.zone_uuid, hypervisor_type=body.hypervisor_type)
    s.add(row)
    return row


def _clusters_in_zone(s: Session, zone_uuid: str, uuids: list[str], field: str) -> None:
    for i, cu in enumerate(uuids):
        c = require(s, Cluster, cu, f"{field}.{i}")
        if c.zone_uuid != zone_uuid:
            raise BadRequest(f"{field}.{i}: cluster {cu} is in another zone", field=f"{field}.{i}")


def create_primary_storage(s: Session, body: sc.PrimaryStorageCreate) -> PrimaryStorage:
    require(s, Zone, body.zone_uuid, "zoneUuid")
    _clusters_in_zone(s, body.zone_uuid, body.cluster_uuids, "clusterUuids")
    row = PrimaryStorage(**_named(body), zone_uuid=body.zone_uuid, type=body.type, url=body.url,
                         mount_path=body.mount_path, agent_url=body.agent_url,
                         total_capacity=body.total_capacity,
                         available_capacity=body.total_capacity)
    s.add(row)
    s.flush()
    for cu in body.cluster_uuids:
        s.add(PrimaryStorageClusterRef(primary_storage_uuid=row.uuid, cluster_uuid=cu))
    return row


def create_backup_storage(s: Session, body: sc.BackupStorageCreate) -> BackupStorage:
    for i, zu in enumerate(body.zone_uuids):
        require(s, Zone, zu, f"zoneUuids.{i}")
    row = BackupStorage(**_named(body), type=body.type, hostname=body.hostname, port=body.port,
                        username=body.username, url=body.url, agent_root=body.agent_root,
                        agent_url=body.agent_url,
                        total_capacity=body.total_capacity,
                        available_capacity=body.total_capacity)
    s.add(row)
    s.flush()
    for zu in body.zone_uuids:
        s.add(BackupStorageZoneRef(backup_storage_uuid=row.uuid, zone_uuid=zu))
    return row


def create_l2_network(s: Session, body: sc.L2NetworkCreate) -> L2Network:
    require(s, Zone, body.zone_uuid, "zoneUuid")
    _clusters_in_zone(s, body.zone_uuid, body.cluster_uuids, "clusterUuids")
    if body.vni is not None and s.scalar(select(L2Network.uuid).where(
            L2Network.zone_uuid == body.zone_uuid, L2Network.vni == body.vni)):
        raise BadRequest(f"vni: an L2 network of this zone has VNI {body.vni}", field="vni")
    row = L2Network(**_named(body), zone_uuid=body.zone_uuid, type=body.type,
                    physical_interface=body.physical_interface, vlan=body.vlan, vni=body.vni)
    s.add(row)
    s.flush()
    for cu in body.cluster_uuids:
        s.add(L2NetworkClusterRef(l2_network_uuid=row.uuid, cluster_uuid=cu))
    return row


def _ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _add_range(s: Session, l3: L3Network, spec: sc.IpRangeSpec, name: str,
               description: str | None, field: str) -> IpRange:
    lo, hi = _ip_int(spec.start_ip), _ip_int(spec.end_ip)
    for other in s.scalars(select(IpRange).where(IpRange.l3_network_uuid == l3.uuid)):
        if lo <= _ip_int(other.end_ip) and _ip_int(other.start_ip) <= hi:
            raise BadRequest(f"{field}: overlaps range {other.uuid}", field=field)
    row = IpRange(name=name, description=description, l3_network_uuid=l3.uuid,
                  start_ip=spec.start_ip, end_ip=spec.end_ip, netmask=spec.netmask,
                  gateway=spec.gateway)
    s.add(row)
    s.flush()
    return row


def create_l3_network(s: Session, body: sc.L3NetworkCreate) -> L3Network:
    l2 = require(s, L2Network, body.l2_network_uuid, "l2NetworkUuid")
    row = L3Network(**_named(body), zone_uuid=l2.zone_uuid, l2_network_uuid=l2.uuid,
                    dns=",".join(body.dns) or None, dns_domain=body.dns_domain)
    s.add(row)
    s.flush()
    for i, spec in enumerate(body.ip_ranges):
        _add_range(s, row, spec, f"{body.name}-range-{i}", None, f"ipRanges.{i}")
    return row


def create_ip_range(s: Session, body: sc.IpRangeCreate) -> IpRange:
    l3 = require(s, L3Network, body.l3_network_uuid, "l3NetworkUuid")
    return _add_range(s, l3, body, body.name, body.description, "startIp")


def create_instance_offering(s: Session, body: sc.InstanceOfferingCreate) -> InstanceOffering:
    row = InstanceOffering(**_named(body), cpu_num=body.cpu_num, memory_size=body.memory_size)
    s.add(row)
    return row


def create_disk_offering(s: Session, body: sc.DiskOfferingCreate) -> DiskOffering:
    row = DiskOffering(**_named(body), disk_size=body.disk_size)
    s.add(row)
    return row


def create_volume(s: Session, body: sc.VolumeCreate) -> Volume:
    size = body.size
    if body.disk_offering_uuid is not None:
        size = require(s, DiskOffering, body.disk_offering_uuid, "diskOfferingUuid").disk_size
    if body.primary_storage_uuid is not None:
        require(s, PrimaryStorage, body.primary_storage_uuid, "primaryStorageUuid")
    row = Volume(**_named(body), type="Data", size=size or 0, status="NotInstantiated",
                 disk_offering_uuid=body.disk_offering_uuid,
                 primary_storage_uuid=body.primary_storage_uuid)
    s.add(row)
    return row


def create_tag(s: Session, body: sc.TagCreate) -> Tag:
    for coll, model in RESOURCES.items():
        if s.get(model, body.resource_uuid) is not None:
            dup = s.scalar(select(Tag).where(Tag.resource_uuid == body.resource_uuid,
                                             Tag.tag == body.tag))
            if dup is not None:
                raise Conflict(f"resource already has tag {body.tag!r}", tag=body.tag)
            row = Tag(resource_uuid=body.resource_uuid, resource_type=coll, tag=body.tag)
            s.add(row)
            return row
    raise BadRequest(f"resourceUuid: no resource {body.resource_uuid}", field="resourceUuid")


def delete_tag(ctl: Controller, uuid: str) -> None:
    with ctl.db.write() as s:
        s.delete(get_or_404(s, Tag, uuid))


def update_row(ctl: Controller, model: type[Base], uuid: str, values: dict[str, Any]) -> dict[str, Any]:
    """Change a row's columns (none: only read it); the resource as it is now."""
    with ctl.db.write() as s:
        row = get_or_404(s, model, uuid)
        if values:
            table: Any = model
            s.execute(update(table).where(table.uuid == uuid).values(last_op_date=utcnow(), **values))
            s.refresh(row)
        return to_dict(row)


def record(create_row: Callable[[Session, B], Base]) -> CreateFn:
    """A create that only writes its row, in one transaction: answered 201, no job."""

    def create(ctl: Controller, body: B) -> tuple[None, dict[str, Any]]:
        with ctl.db.write() as s:
            row = create_row(s, body)
            s.flush()
            return None, to_dict(row)

    return create


DECLARATIONS = (
    Create("zones", sc.ZoneCreate, record(create_zone)),
    Create("clusters", sc.ClusterCreate, record(create_cluster)),
    Create("l2-networks", sc.L2NetworkCreate, record(create_l2_network)),
    Create("l3-networks", sc.L3NetworkCreate, record(create_l3_network)),
    Create("ip-ranges", sc.IpRangeCreate, record(create_ip_range)),
    Create("instance-offerings", sc.InstanceOfferingCreate, record(create_instance_offering)),
    Create("disk-offerings", sc.DiskOfferingCreate, record(create_disk_offering)),
    Create("volumes", sc.VolumeCreate, record(create_volume)),
    Create("tags", sc.TagCreate, record(create_tag)),
)
