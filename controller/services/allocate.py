"""Choosing and reserving: hosts (CPU, memory), primary storage, IP addresses.

Reservations are single conditional UPDATEs (``... WHERE available >= x``),
so two concurrent creates can never both take the last slot, and no lock is
held across agent calls.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.db.base import new_uuid
from controller.db.models import Host, IpRange, L3Network, PrimaryStorage, PrimaryStorageClusterRef, UsedIp
from controller.errors import NoCapacity

CANDIDATES = 8
HOSTS: Table = Host.__table__  # type: ignore[assignment]
STORAGES: Table = PrimaryStorage.__table__  # type: ignore[assignment]
USED_IPS: Table = UsedIp.__table__  # type: ignore[assignment]
#: the primary storage types VM disks can be made on (controller.primary has their backends)
DISK_TYPES = ("nfs", "local", "sharedmountpoint", "ceph")


@dataclass(frozen=True)
class HostRef:
    """What a flow needs to reach a host."""

    uuid: str
    cluster_uuid: str
    management_ip: str
    agent_url: str
    storage_agent_url: str | None


def reserve_host(s: Session, cpu: int, memory: int, zone_uuid: str | None = None,
                 cluster_uuid: str | None = None, host_uuid: str | None = None,
                 exclude: tuple[str, ...] = ()) -> HostRef:
    """Pick a connected, enabled host with room and take ``cpu``/``memory`` from it."""
    stmt = select(Host).where(Host.status == "Connected", Host.state == "Enabled",
                              Host.available_cpu >= cpu, Host.available_memory >= memory)
    if zone_uuid:
        stmt = stmt.where(Host.zone_uuid == zone_uuid)
    if cluster_uuid:
        stmt = stmt.where(Host.cluster_uuid == cluster_uuid)
    if host_uuid:
        stmt = stmt.where(Host.uuid == host_uuid)
    if exclude:
        stmt = stmt.where(Host.uuid.not_in(exclude))
    cols = stmt.with_only_columns(Host.uuid, Host.cluster_uuid, Host.management_ip,
                                  Host.agent_url, Host.storage_agent_url)
    hosts = [HostRef(u, c, ip, url, storage_url) for u, c, ip, url, storage_url in s.execute(
        cols.order_by(Host.available_memory.desc()).limit(CANDIDATES))]
    random.shuffle(hosts)
    for h in hosts:
        res = s.execute(update(HOSTS).where(  # core: half the cost of an ORM-enabled update
            HOSTS.c.uuid == h.uuid, HOSTS.c.available_cpu >= cpu,
            HOSTS.c.available_memory >= memory,
        ).values(available_cpu=HOSTS.c.available_cpu - cpu,
                 available_memory=HOSTS.c.available_memory - memory))
        if res.rowcount:  # type: ignore[attr-defined]
            return h
    raise NoCapacity(f"no connected, enabled host has {cpu} vCPU and {memory} bytes free",
                     cpu=cpu, memory=memory)


def lock_hosts(s: Session, host_uuids: Iterable[str]) -> None:
    """Lock host rows one at a time in one order (by UUID), before anything else the
    transaction does to them: two transactions that take the same two hosts (migrations
    crossing each other, A to B and B to A) then wait for each other instead of deadlocking.

    FOR NO KEY UPDATE on PostgreSQL, so the foreign key checks of VM rows pointing at the
    hosts (FOR KEY SHARE) still pass; FOR UPDATE on MariaDB; SQLite has one writer anyway.
    """
    for uuid in sorted(set(host_uuids)):
        s.execute(select(HOSTS.c.uuid).where(HOSTS.c.uuid == uuid).with_for_update(key_share=True))


def release_host(s: Session, host_uuid: str, cpu: int, memory: int) -> None:
    s.execute(update(Host).where(Host.uuid == host_uuid).values(
        available_cpu=Host.available_cpu + cpu,
        available_memory=Host.available_memory + memory))


def reserve_primary_storage(s: Session, cluster_uuid: str, size: int,
                            ps_uuid: str | None = None) -> PrimaryStorage:
    """A primary storage attached to the cluster with room for ``size``."""
    attached = select(PrimaryStorageClusterRef.primary_storage_uuid).where(
        PrimaryStorageClusterRef.cluster_uuid == cluster_uuid)
    stmt = select(PrimaryStorage).where(PrimaryStorage.uuid.in_(attached),
                                        PrimaryStorage.state == "Enabled",
                                        PrimaryStorage.type.in_(DISK_TYPES))
    if ps_uuid:
        stmt = stmt.where(PrimaryStorage.uuid == ps_uuid)
    for ps in s.scalars(stmt.order_by(PrimaryStorage.available_capacity.desc())):
        if ps.total_capacity == 0:
            return ps  # capacity unknown: not enforced
        res = s.execute(update(STORAGES).where(
            STORAGES.c.uuid == ps.uuid, STORAGES.c.available_capacity >= size,
        ).values(available_capacity=STORAGES.c.available_capacity - size))
        if res.rowcount:  # type: ignore[attr-defined]
            return ps
    raise NoCapacity(f"no primary storage attached to cluster {cluster_uuid} has {size} bytes",
                     cluster=cluster_uuid, size=size)


def release_primary_storage(s: Session, ps_uuid: str, size: int) -> None:
    s.execute(update(PrimaryStorage).where(PrimaryStorage.uuid == ps_uuid,
                                           PrimaryStorage.total_capacity > 0).values(
        available_capacity=PrimaryStorage.available_capacity + size))


def _free_in_range(s: Session, rng: IpRange) -> int | None:
    lo = int(ipaddress.IPv4Address(rng.start_ip))
    hi = int(ipaddress.IPv4Address(rng.end_ip))
    gw = int(ipaddress.IPv4Address(rng.gateway))
    # the highest address taken in the range, by the (network, address) unique index:
    # O(log n), where max() over the range's rows read every one of them
    top = s.scalar(select(UsedIp.ip_int).where(
        UsedIp.l3_network_uuid == rng.l3_network_uuid, UsedIp.ip_int.between(lo, hi))
        .order_by(UsedIp.ip_int.desc()).limit(1))
    start = lo if top is None else top + 1
    for cand in range(start, hi + 1):  # fast path: after the highest taken
        if cand != gw:
            return cand
    used = set(s.scalars(select(UsedIp.ip_int).where(UsedIp.ip_range_uuid == rng.uuid)))
    for cand in range(lo, hi + 1):  # slow path: reuse a hole
        if cand != gw and cand not in used:
            return cand
    return None


def allocate_ip(s: Session, l3_uuid: str) -> tuple[UsedIp, IpRange]:
    """Take a free address of the L3 network (unique per network, retried on a race)."""
    ranges = list(s.scalars(select(IpRange).where(IpRange.l3_network_uuid == l3_uuid)
                            .order_by(IpRange.start_ip)))
    for _ in range(16):
        for rng in ranges:
            cand = _free_in_range(s, rng)
            if cand is None:
                continue
            row = UsedIp(uuid=new_uuid(), ip_range_uuid=rng.uuid, l3_network_uuid=l3_uuid,
                         ip=str(ipaddress.IPv4Address(cand)), ip_int=cand)
            stmt = insert(USED_IPS).values(  # core: far cheaper than the ORM's flush
                uuid=row.uuid, ip_range_uuid=row.ip_range_uuid, l3_network_uuid=l3_uuid,
                ip=row.ip, ip_int=cand)
            if s.get_bind().dialect.name == "sqlite":
                # SQLite has one writer at a time (BEGIN IMMEDIATE): nobody can have taken
                # the address since we looked, so no savepoint is needed to retry
                s.execute(stmt)
                return row, rng
            try:
                with s.begin_nested():
                    s.execute(stmt)
            except IntegrityError:
                break  # someone took it; look again
            return row, rng
        else:
            raise NoCapacity(f"L3 network {l3_uuid} has no free address", l3NetworkUuid=l3_uuid)
    raise NoCapacity(f"could not allocate an address on {l3_uuid}", l3NetworkUuid=l3_uuid)


def dhcp_server_ip(s: Session, l3_uuid: str) -> str:
    """The L3 network's DHCP server address, allocated once from its ranges."""
    # FOR NO KEY UPDATE on PostgreSQL: a create inserting an address of this network (whose
    # foreign key check takes FOR KEY SHARE) is not blocked, so it cannot deadlock with us
    l3 = s.get(L3Network, l3_uuid, with_for_update={"key_share": True})
    if l3 is None:
        raise NoCapacity(f"no L3 network {l3_uuid}")
    if l3.dhcp_server_ip is None:
        used, _ = allocate_ip(s, l3_uuid)
        l3.dhcp_server_ip = used.ip
    return l3.dhcp_server_ip
