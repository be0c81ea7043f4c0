"""Create VM: host, primary storage and IPs → image cache → root volume → data
volumes → L2 + DHCP lease on the host → start. Each step undoes itself, so a
failure anywhere leaves no volume, IP, lease or domain behind (and no VM row).

The choices that reach no agent (host, primary storage, the volumes' rows,
the IPs) are one step and one transaction: under load the controller's cost
is per transaction, and an address shortage then fails the VM before any
agent did work. The state carries the rows it made, so later steps do not
load them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller import commands
from controller.core import Controller
from controller.db.base import by_uuid, insert_row, new_uuid
from controller.db.models import (
    BackupStorage,
    DiskOffering,
    Image,
    ImageBackupStorageRef,
    ImageCache,
    L2Network,
    L3Network,
    PrimaryStorage,
    Tag,
    UsedIp,
    Vm,
    VmBackupPolicyRef,
    VmNic,
    VmNicSecurityGroupRef,
    Volume,
)
from controller.errors import Conflict
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.primary import CachedImage, Op, PrimaryBackend, backend_for
from controller.services import allocate, sgspecs
from controller.services.allocate import HostRef
from controller.services.common import row_dict
from controller.services.vmhelpers import add_dhcp, apply_dhcp, random_mac
from kvmagent import models as km

log = logging.getLogger(__name__)
#: reserve transactions a create runs before a taken MAC fails it
MAC_ATTEMPTS = 4
# hot updates as core statements on the tables: half the cost of ORM-enabled ones
VMS: Table = Vm.__table__  # type: ignore[assignment]
VOLUMES: Table = Volume.__table__  # type: ignore[assignment]
REFS: Table = ImageBackupStorageRef.__table__  # type: ignore[assignment]
CACHES: Table = ImageCache.__table__  # type: ignore[assignment]


@dataclass
class CreateVm:
    """What the create-VM flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    vm_uuid: str
    cpu: int
    memory: int
    image_uuid: str
    l3_uuids: list[str]
    data_sizes: list[int]
    zone_uuid: str | None = None
    cluster_uuid: str | None = None
    want_host: str | None = None
    want_ps: str | None = None
    image_size: int = 0
    vm_name: str = ""
    security_groups: list[str] = field(default_factory=list)  # every NIC joins them
    host: HostRef | None = None
    ps: PrimaryStorage | None = None
    ps_uuid: str | None = None
    ps_reserved: int = 0
    cached: CachedImage | None = None  # set by reserve when the storage's cache has it
    image_id: str = ""
    image_bs: str = ""
    root_uuid: str | None = None
    data_uuids: list[str] = field(default_factory=list)
    nic_uuids: list[str] = field(default_factory=list)
    volumes: dict[str, Volume] = field(default_factory=dict)
    nics: list[VmNic] = field(default_factory=list)
    l2s: dict[str, L2Network] = field(default_factory=dict)
    started: bool = False
    result: dict[str, Any] | None = None

    @property
    def agent(self) -> str:
        assert self.host is not None
        return self.host.agent_url

    @property
    def op(self) -> Op:
        return Op(self.ctl, self.ctx)

    @property
    def backend(self) -> PrimaryBackend:
        assert self.ps is not None
        return backend_for(self.ps)


# the hot statements, built once (building one costs more than running it)
_PLACE_VM = update(VMS).where(VMS.c.uuid == bindparam("vm"))
_PLACE_VM_RETURNING = _PLACE_VM.returning(*VMS.c)
_VOLUME_READY = update(VOLUMES).where(VOLUMES.c.uuid == bindparam("vol")).values(
    status="Ready", actual_size=bindparam("actual"))
_IMAGE_REF = select(REFS.c.install_path, REFS.c.backup_storage_uuid, select(
    CACHES.c.install_path).where(CACHES.c.primary_storage_uuid == bindparam("ps"),
                                 CACHES.c.image_uuid == REFS.c.image_uuid)
    .scalar_subquery().label("cached")).where(REFS.c.image_uuid == bindparam("image")).limit(1)


def reserve(st: CreateVm) -> None:
    """Take host capacity, storage capacity, the volumes' rows and the IPs in one transaction.

    Nothing here reaches an agent, so one short write covers it all (run again from the
    start if the database aborts it), with what the next step needs to know of the
    image; the state is filled only after the commit, so a failure leaves nothing to undo.
    """
    host, ps, vols, nics, l2s, ref = _reserve_once(st)
    if ref is not None:  # None: no image (the volumes come from elsewhere: a backup)
        st.image_id, st.image_bs = ref.install_path, ref.backup_storage_uuid
        if ref.cached is not None:
            st.cached = CachedImage(ref.install_path, ref.cached)
    st.host, st.ps = host, ps
    st.ps_uuid, st.ps_reserved = ps.uuid, st.image_size + sum(st.data_sizes) if ps.total_capacity else 0
    st.root_uuid = vols[0].uuid
    st.volumes = {v.uuid: v for v in vols}
    st.data_uuids = [v.uuid for v in vols[1:]]
    st.nics, st.l2s = nics, l2s
    st.nic_uuids = [n.uuid for n in nics]


def _reserve_once(st: CreateVm) -> tuple[
        HostRef, PrimaryStorage, list[Volume], list[VmNic], dict[str, L2Network], Any]:
    """The reserve transaction, run again whole if a NIC's random MAC is taken.

    The MACs are not looked up first (a statement per NIC on every create): the
    unique index on the MAC refuses a taken one, which 40 random bits make rare,
    and the rolled-back transaction leaves nothing behind."""
    for _ in range(MAC_ATTEMPTS - 1):
        try:
            return st.ctl.db.transaction(lambda s: _reserve_rows(st, s))
        except IntegrityError:
            log.info("create-vm %s: a NIC's MAC is taken; reserving again", st.vm_uuid)
    return st.ctl.db.transaction(lambda s: _reserve_rows(st, s))


def _reserve_rows(st: CreateVm, s: Session) -> tuple[
        HostRef, PrimaryStorage, list[Volume], list[VmNic], dict[str, L2Network], Any]:
    host = allocate.reserve_host(s, st.cpu, st.memory, st.zone_uuid, st.cluster_uuid,
                                 st.want_host)
    root_uuid = new_uuid()
    s.connection().execute(_PLACE_VM, {"vm": st.vm_uuid, "host_uuid": host.uuid,
                                       "cluster_uuid": host.cluster_uuid,
                                       "root_volume_uuid": root_uuid})
    size = st.image_size + sum(st.data_sizes)
    ps = allocate.reserve_primary_storage(s, host.cluster_uuid, size, st.want_ps)
    vols = [_volume(st, ps, "Root", st.image_size, f"ROOT-for-{st.vm_name}"[:255], 0, root_uuid)]
    for i, data_size in enumerate(st.data_sizes):
        vols.append(_volume(st, ps, "Data", data_size, f"DATA-{i + 1}-for-{st.vm_uuid}", i + 1))
    for vol in vols:
        insert_row(s, vol)
    nics: list[VmNic] = []
    for i, l3_uuid in enumerate(st.l3_uuids):
        used, rng = allocate.allocate_ip(s, l3_uuid)
        nic = VmNic(uuid=new_uuid(), name=f"nic-{i}", vm_uuid=st.vm_uuid,
                    l3_network_uuid=l3_uuid, used_ip_uuid=used.uuid, ip=used.ip,
                    netmask=rng.netmask, gateway=rng.gateway, mac=random_mac(), device_id=i)
        insert_row(s, nic)
        nics.append(nic)
    if st.security_groups:
        s.add_all(VmNicSecurityGroupRef(vm_nic_uuid=nic.uuid, security_group_uuid=group)
                  for nic in nics for group in st.security_groups)
    l2s = st.ctl.networks.l2s(s, st.l3_uuids)
    if not st.image_uuid:
        return host, ps, vols, nics, l2s, None
    ref = s.connection().execute(_IMAGE_REF, {"ps": ps.uuid, "image": st.image_uuid}).first()
    if ref is None:
        raise Conflict(f"image {st.image_uuid} is on no backup storage")
    return host, ps, vols, nics, l2s, ref


def _volume(st: CreateVm, ps: PrimaryStorage, kind: str, size: int, name: str,
            device_id: int, uuid: str | None = None) -> Volume:
    uuid, backend = uuid or new_uuid(), backend_for(ps)
    return Volume(uuid=uuid, name=name, vm_uuid=st.vm_uuid, primary_storage_uuid=ps.uuid,
                  type=kind, size=size, status="Creating", device_id=device_id,
                  install_path=backend.install_path(ps, uuid), format=backend.volume_format,
                  root_image_uuid=(st.image_uuid or None) if kind == "Root" else None)


def release(st: CreateVm) -> None:
    """Give back what :func:`reserve` took: IPs, volume rows left, storage, host."""
    if st.host is not None:
        st.ctl.db.transaction(lambda s: _release_rows(st, s))
        if st.started and st.security_groups:  # its addresses leave the rules naming its groups
            with st.ctl.db.read() as s:
                followers = sgspecs.naming(s, st.security_groups)
            sgspecs.push_groups(st.ctl, st.ctx, followers)


def _release_rows(st: CreateVm, s: Session) -> None:
    assert st.host is not None
    # rows locked in reserve's order (host, VM, storage): a release and a reserve that
    # run together wait for each other instead of deadlocking
    allocate.release_host(s, st.host.uuid, st.cpu, st.memory)
    s.execute(update(Vm).where(Vm.uuid == st.vm_uuid).values(host_uuid=None))
    if st.ps_uuid and st.ps_reserved:
        allocate.release_primary_storage(s, st.ps_uuid, st.ps_reserved)
    if st.nic_uuids:
        used = [u for u in s.scalars(select(VmNic.used_ip_uuid).where(
            VmNic.uuid.in_(st.nic_uuids))) if u]
        s.execute(delete(VmNicSecurityGroupRef).where(VmNicSecurityGroupRef.vm_nic_uuid.in_(st.nic_uuids)))
        s.execute(delete(VmNic).where(VmNic.uuid.in_(st.nic_uuids)))
        if used:
            s.execute(delete(UsedIp).where(UsedIp.uuid.in_(used)))
    if st.volumes:
        s.execute(delete(Volume).where(Volume.uuid.in_(list(st.volumes))))


def cache_image(st: CreateVm) -> None:
    """Copy the image into the storage's cache once; later VMs clone from it."""
    assert st.ps is not None
    if st.cached is not None:
        return
    with st.ctl.db.read() as s:
        image = s.get(Image, st.image_uuid)
        bs = s.get(BackupStorage, st.image_bs)
        assert image is not None
    assert st.host is not None
    st.cached = st.backend.cache_image(st.op, st.ps, st.host, image, st.image_id, bs)
    st.ctl.db.transaction(lambda s: _record_cache(s, st.ps, image.uuid, st.cached))


def _record_cache(s: Session, ps: PrimaryStorage | None, image_uuid: str,
                  cached: CachedImage | None) -> None:
    assert ps is not None and cached is not None
    if s.scalar(select(ImageCache.id).where(ImageCache.primary_storage_uuid == ps.uuid,
                                            ImageCache.image_uuid == image_uuid)) is None:
        try:  # a VM created alongside may have cached it too: the first row stays
            with s.begin_nested():
                s.add(ImageCache(primary_storage_uuid=ps.uuid, image_uuid=image_uuid,
                                 install_path=cached.install_path, size=cached.size))
        except IntegrityError:
            pass


def volume_ready(st: CreateVm, uuid: str, actual: int) -> None:
    """Ready at once: a volume is only ever deleted for a Ready row (even after a crash)."""
    st.ctl.db.transaction_core(lambda conn: conn.execute(_VOLUME_READY,
                                                         {"vol": uuid, "actual": actual}))


def create_root(st: CreateVm) -> None:
    assert st.ps is not None and st.host is not None and st.cached is not None
    assert st.root_uuid is not None
    vol = st.volumes[st.root_uuid]
    volume_ready(st, vol.uuid, st.backend.create_root(st.op, st.ps, st.host, st.cached, vol))


def delete_volumes(st: CreateVm, uuids: list[str]) -> None:
    """Delete the volumes (one never made is no error) and their rows."""
    assert st.ps is not None
    for uuid in reversed(uuids):
        st.backend.delete_volume(st.op, st.ps, st.host, st.volumes[uuid])
        with st.ctl.db.write() as s:
            s.execute(delete(Volume).where(Volume.uuid == uuid))


def delete_root(st: CreateVm) -> None:
    if st.root_uuid:
        delete_volumes(st, [st.root_uuid])


def create_data(st: CreateVm) -> None:
    assert st.ps is not None and st.host is not None
    for uuid in st.data_uuids:
        volume_ready(st, uuid, st.backend.create_empty(st.op, st.ps, st.host, st.volumes[uuid]))


def delete_data(st: CreateVm) -> None:
    delete_volumes(st, st.data_uuids)


def realise_network(st: CreateVm) -> None:
    """The L2 bridges and the NICs' leases on the host (an add each, not the host's full set)."""
    assert st.host is not None
    hostname = commands.hostname(st.vm_name)
    for l3_uuid in dict.fromkeys(st.l3_uuids):
        l2 = st.l2s.get(l3_uuid)
        if l2 is None:  # no L2 network: the full set's path names the problem
            apply_dhcp(st.ctl, st.ctx, st.host.uuid, st.agent, l3_uuid)
            continue
        leases = [(n.mac, str(n.ip), hostname) for n in st.nics
                  if n.l3_network_uuid == l3_uuid and n.ip is not None]
        add_dhcp(st.ctl, st.ctx, st.host.uuid, st.agent, l2, l3_uuid, leases)


def unrealise_network(st: CreateVm) -> None:
    """Drop the VM's leases: the VM leaves the host in the database, then the host gets its
    full lease sets again (a release could cross a set read before it and be undone)."""
    if st.host is None:
        return
    st.ctl.db.transaction(lambda s: s.execute(update(VMS).where(VMS.c.uuid == st.vm_uuid)
                                              .values(host_uuid=None)))
    for l3_uuid in dict.fromkeys(st.l3_uuids):
        apply_dhcp(st.ctl, st.ctx, st.host.uuid, st.agent, l3_uuid)


def start(st: CreateVm) -> None:
    """Start the domain from the rows this flow made; the VM's Running and the
    job's success are one write."""
    assert st.ps is not None and st.host is not None and st.root_uuid is not None
    st.backend.prepare_host(st.op, st.ps, st.host)
    vols = [st.backend.volume_spec(st.ps, st.volumes[u], st.volumes[u].device_id or 0)
            for u in [st.root_uuid, *st.data_uuids]]
    nics = [commands.nic_spec(nic, st.l2s[nic.l3_network_uuid], st.security_groups) for nic in st.nics
            if nic.l3_network_uuid in st.l2s]
    groups: list[km.SecurityGroupSpec] = []
    followers: set[str] = set()
    if st.security_groups:
        with st.ctl.db.read() as s:
            groups = sgspecs.group_specs(s, st.security_groups)
            followers = sgspecs.naming(s, st.security_groups)
    cmd = km.StartVmCmd(vm_uuid=st.vm_uuid, vm_name=st.vm_name[:128], cpu_num=st.cpu,
                        memory_size=st.memory, root_volume=vols[0], data_volumes=vols[1:],
                        nics=nics, security_groups=groups)
    st.ctx.call(st.agent, cmd)
    st.started = True
    # the groups whose rules name the VM's groups let its addresses in from now on
    sgspecs.push_groups(st.ctl, st.ctx, followers)
    st.result = st.ctl.db.transaction_core(lambda conn: _running(st, conn))


def _running(st: CreateVm, conn: Connection) -> dict[str, Any]:
    params = {"vm": st.vm_uuid, "state": "Running"}
    if conn.dialect.update_returning:  # PostgreSQL, SQLite: the row comes back with the write
        row = conn.execute(_PLACE_VM_RETURNING, params).one()
    else:  # MariaDB has no UPDATE ... RETURNING: read it back
        conn.execute(_PLACE_VM, params)
        row = conn.execute(by_uuid(VMS), {"uuid": st.vm_uuid}).one()
    result = row_dict(VMS, row)
    st.ctx.complete(conn, result)  # idempotent: a retry writes it again
    return result


def destroy(st: CreateVm) -> None:
    if st.host is None:
        return
    st.ctx.call(st.agent, km.DestroyVmCmd(vm_uuid=st.vm_uuid))


def drop_vm_row(st: CreateVm) -> None:
    """The row the API wrote (``Creating``) and its tags: a failed create leaves only the job."""
    st.ctl.db.transaction(lambda s: _drop_vm_row(s, st.vm_uuid))


STEPS: list[Step[CreateVm]] = [
    Step("accepted", lambda st: None, drop_vm_row),
    Step("allocate-host-storage-ips", reserve, release),
    Step("cache-image", cache_image, None),
    Step("create-root-volume", create_root, delete_root),
    Step("create-data-volumes", create_data, delete_data),
    Step("realise-network", realise_network, unrealise_network),
    Step("start-vm", start, destroy),
]


def run(ctl: Controller, ctx: JobContext, st: CreateVm) -> None:
    """Run the flow; on failure it rolls back, down to dropping the VM row."""
    def on_step(name: str, i: int, n: int) -> None:
        ctx.progress(name, 100.0 * i / n)

    Flow("create-vm", STEPS, check=ctx.check, on_step=on_step, guard=ctx.uncancellable).run(st)


def _drop_vm_row(s: Session, vm_uuid: str) -> None:
    s.execute(delete(Tag).where(Tag.resource_uuid == vm_uuid))
    # a backup policy may have been attached while it was Creating
    s.execute(delete(VmBackupPolicyRef).where(VmBackupPolicyRef.vm_uuid == vm_uuid))
    s.execute(delete(Vm).where(Vm.uuid == vm_uuid))


def data_sizes(ctl: Controller, offering_uuids: list[str]) -> list[int]:
    with ctl.db.read() as s:
        return [s.get(DiskOffering, u).disk_size for u in offering_uuids]  # type: ignore[union-attr]


def l3_zone(ctl: Controller, l3_uuid: str) -> str | None:
    with ctl.db.read() as s:
        l3 = s.get(L3Network, l3_uuid)
        return l3.zone_uuid if l3 else None
