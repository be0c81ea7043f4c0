"""Choosing and reserving: hosts (CPU, memory), primary storage, IP addresses.

Reservations are single conditional UPDATEs (``... WHERE available >= x``),
so two concurrent creates can never both take the last slot, and no lock is
held across agent calls.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.db.base import fetch_all, new_uuid
from controller.db.models import Host, IpRange, L3Network, PrimaryStorage, PrimaryStorageClusterRef, UsedIp, Vm
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


@functools.cache
def _candidates(zone: bool, cluster: bool, host: bool, exclude: bool) -> Select[Any]:
    """The host candidates query for one combination of filters, built once.

    Statements are prebuilt with bind parameters on the hot paths: building
    one and working out its cache key costs more than running it.
    """
    h = HOSTS.c
    stmt = select(h.uuid, h.cluster_uuid, h.management_ip, h.agent_url, h.storage_agent_url).where(
        h.status == "Connected", h.state == "Enabled", h.available_cpu >= bindparam("cpu"),
        h.available_memory >= bindparam("memory"))
    if zone:
        stmt = stmt.where(h.zone_uuid == bindparam("zone"))
    if cluster:
        stmt = stmt.where(h.cluster_uuid == bindparam("cluster"))
    if host:
        stmt = stmt.where(h.uuid == bindparam("host"))
    if exclude:
        stmt = stmt.where(h.uuid.not_in(bindparam("exclude", expanding=True)))
    return stmt.order_by(h.available_memory.desc()).limit(CANDIDATES)


TAKE_HOST = update(HOSTS).where(
    HOSTS.c.uuid == bindparam("h"), HOSTS.c.available_cpu >= bindparam("cpu"),
    HOSTS.c.available_memory >= bindparam("memory"),
).values(available_cpu=HOSTS.c.available_cpu - bindparam("cpu"),
         available_memory=HOSTS.c.available_memory - bindparam("memory"))


def reserve_host(s: Session, cpu: int, memory: int, zone_uuid: str | None = None,
                 cluster_uuid: str | None = None, host_uuid: str | None = None,
                 exclude: tuple[str, ...] = ()) -> HostRef:
    """Pick a connected, enabled host with room and take ``cpu``/``memory`` from it."""
    conn = s.connection()
    params = {"cpu": cpu, "memory": memory, "zone": zone_uuid, "cluster": cluster_uuid,
              "host": host_uuid, "exclude": list(exclude)}
    stmt = _candidates(bool(zone_uuid), bool(cluster_uuid), bool(host_uuid), bool(exclude))
    hosts = [HostRef(u, c, ip, url, storage_url)
             for u, c, ip, url, storage_url in conn.execute(stmt, params)]
    random.shuffle(hosts)
    for h in hosts:
        if conn.execute(TAKE_HOST, {"h": h.uuid, "cpu": cpu, "memory": memory}).rowcount:
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


def mark_stopped(s: Session, vm_uuid: str) -> None:
    """The VM no longer runs anywhere: give its host capacity back."""
    vm = s.get(Vm, vm_uuid, with_for_update=True)
    if vm is None:
        return
    if vm.host_uuid is not None:
        release_host(s, vm.host_uuid, vm.cpu_num, vm.memory_size)
        vm.last_host_uuid = vm.host_uuid
    vm.host_uuid = None
    vm.state = "Stopped"


def reserve_primary_storage(s: Session, cluster_uuid: str, size: int,
                            ps_uuid: str | None = None) -> PrimaryStorage:
    """A primary storage attached to the cluster with room for ``size``."""
    stmt = _STORAGES_ONE if ps_uuid else _STORAGES
    for ps in fetch_all(s, PrimaryStorage, stmt, {"cluster": cluster_uuid, "ps": ps_uuid}):
        if ps.total_capacity == 0:
            return ps  # capacity unknown: not enforced
        if s.connection().execute(TAKE_STORAGE, {"ps": ps.uuid, "size": size}).rowcount:
            return ps
    raise NoCapacity(f"no primary storage attached to cluster {cluster_uuid} has {size} bytes",
                     cluster=cluster_uuid, size=size)


_STORAGES = select(*STORAGES.c).where(
    STORAGES.c.uuid.in_(select(PrimaryStorageClusterRef.primary_storage_uuid).where(
        PrimaryStorageClusterRef.cluster_uuid == bindparam("cluster"))),
    STORAGES.c.state == "Enabled", STORAGES.c.type.in_(DISK_TYPES),
).order_by(STORAGES.c.available_capacity.desc())
_STORAGES_ONE = _STORAGES.where(STORAGES.c.uuid == bindparam("ps"))
TAKE_STORAGE = update(STORAGES).where(
    STORAGES.c.uuid == bindparam("ps"), STORAGES.c.available_capacity >= bindparam("size"),
).values(available_capacity=STORAGES.c.available_capacity - bindparam("size"))


def release_primary_storage(s: Session, ps_uuid: str, size: int) -> None:
    s.execute(update(PrimaryStorage).where(PrimaryStorage.uuid == ps_uuid,
                                           PrimaryStorage.total_capacity > 0).values(
        available_capacity=PrimaryStorage.available_capacity + size))


_TOP_IP = select(USED_IPS.c.ip_int).where(
    USED_IPS.c.l3_network_uuid == bindparam("l3"),
    USED_IPS.c.ip_int.between(bindparam("lo"), bindparam("hi")),
).order_by(USED_IPS.c.ip_int.desc()).limit(1)
RANGES: Table = IpRange.__table__  # type: ignore[assignment]
L3_RANGES = select(*RANGES.c).where(RANGES.c.l3_network_uuid == bindparam("l3")).order_by(
    RANGES.c.start_ip)
_INSERT_IP = insert(USED_IPS)


def _free_in_range(s: Session, rng: IpRange) -> int | None:
    lo = int(ipaddress.IPv4Address(rng.start_ip))
    hi = int(ipaddress.IPv4Address(rng.end_ip))
    gw = int(ipaddress.IPv4Address(rng.gateway))
    # the highest address taken in the range, by the (network, address) unique index:
    # O(log n), where max() over the range's rows read every one of them
    top = s.connection().execute(_TOP_IP, {"l3": rng.l3_network_uuid, "lo": lo,
                                           "hi": hi}).scalar()
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
    """Take a free address of the L3 network (unique per network, retried on a race).

    On PostgreSQL and MariaDB the network's row is locked first, so the creates taking
    addresses of one network do so one after the other: unlocked, dozens at once (every
    job worker, on every controller node) read the same highest address, and all but
    one lose the race for the next, again and again, until they give up."""
    if s.get_bind().dialect.name != "sqlite":
        # FOR NO KEY UPDATE on PostgreSQL: the foreign key checks of inserts naming the
        # network (FOR KEY SHARE) go on; MariaDB: FOR UPDATE
        s.execute(select(L3Network.uuid).where(L3Network.uuid == l3_uuid)
                  .with_for_update(key_share=True))
    ranges = fetch_all(s, IpRange, L3_RANGES, {"l3": l3_uuid})
    for _ in range(16):
        for rng in ranges:
            cand = _free_in_range(s, rng)
            if cand is None:
                continue
            row = UsedIp(uuid=new_uuid(), ip_range_uuid=rng.uuid, l3_network_uuid=l3_uuid,
                         ip=str(ipaddress.IPv4Address(cand)), ip_int=cand)
            values = {"uuid": row.uuid, "ip_range_uuid": row.ip_range_uuid,
                      "l3_network_uuid": l3_uuid, "ip": row.ip, "ip_int": cand}
            if s.get_bind().dialect.name == "sqlite":
                # SQLite has one writer at a time (BEGIN IMMEDIATE): nobody can have taken
                # the address since we looked, so no savepoint is needed to retry
                s.connection().execute(_INSERT_IP, values)
                return row, rng
            try:
                with s.begin_nested():
                    s.connection().execute(_INSERT_IP, values)
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
