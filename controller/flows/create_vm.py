"""Create VM: host → primary storage → image cache → root volume → data volumes
→ IPs → L2 + DHCP lease on the host → start. Each step undoes itself, so a
failure anywhere leaves no volume, IP, lease or domain behind (and no VM row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, select, update

from controller import commands
from controller.core import Controller
from controller.db.models import (
    BackupStorage,
    DiskOffering,
    Image,
    ImageBackupStorageRef,
    ImageCache,
    L3Network,
    PrimaryStorage,
    Tag,
    UsedIp,
    Vm,
    VmNic,
    Volume,
)
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import Conflict
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.services import allocate
from controller.services.allocate import HostRef
from controller.services.vmhelpers import apply_dhcp, call, new_mac, release_dhcp, start_cmd
from kvmagent import models as km


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
    host: HostRef | None = None
    ps_uuid: str | None = None
    ps_reserved: int = 0
    image_id: str = ""
    root_uuid: str | None = None
    data_uuids: list[str] = field(default_factory=list)
    nic_uuids: list[str] = field(default_factory=list)
    started: bool = False

    @property
    def agent(self) -> str:
        assert self.host is not None
        return self.host.agent_url

    @property
    def storage_agent(self) -> str:
        assert self.host is not None
        if not self.host.storage_agent_url:
            raise Conflict(f"host {self.host.uuid} has no storage agent")
        return self.host.storage_agent_url


def allocate_host(st: CreateVm) -> None:
    with st.ctl.db.write() as s:
        st.host = allocate.reserve_host(s, st.cpu, st.memory, st.zone_uuid, st.cluster_uuid,
                                        st.want_host)
        s.execute(update(Vm).where(Vm.uuid == st.vm_uuid).values(
            host_uuid=st.host.uuid, cluster_uuid=st.host.cluster_uuid))


def release_host(st: CreateVm) -> None:
    if st.host is None:
        return
    with st.ctl.db.write() as s:
        allocate.release_host(s, st.host.uuid, st.cpu, st.memory)
        s.execute(update(Vm).where(Vm.uuid == st.vm_uuid).values(host_uuid=None))


def allocate_storage(st: CreateVm) -> None:
    assert st.host is not None
    with st.ctl.db.write() as s:
        image = s.get(Image, st.image_uuid)
        assert image is not None
        size = image.size + sum(st.data_sizes)
        ps = allocate.reserve_primary_storage(s, st.host.cluster_uuid, size, st.want_ps)
        st.ps_uuid, st.ps_reserved = ps.uuid, size if ps.total_capacity else 0


def release_storage(st: CreateVm) -> None:
    if st.ps_uuid and st.ps_reserved:
        with st.ctl.db.write() as s:
            allocate.release_primary_storage(s, st.ps_uuid, st.ps_reserved)


def cache_image(st: CreateVm) -> None:
    """Copy the image into the storage's cache once; later VMs clone from it."""
    with st.ctl.db.read() as s:
        ps = s.get(PrimaryStorage, st.ps_uuid)
        image = s.get(Image, st.image_uuid)
        assert ps is not None and image is not None
        ref = s.scalar(select(ImageBackupStorageRef).where(
            ImageBackupStorageRef.image_uuid == image.uuid).limit(1))
        if ref is None:
            raise Conflict(f"image {image.uuid} is on no backup storage")
        st.image_id = ref.install_path
        cached = s.scalar(select(ImageCache.id).where(ImageCache.primary_storage_uuid == ps.uuid,
                                                      ImageCache.image_uuid == image.uuid))
        bs = s.get(BackupStorage, ref.backup_storage_uuid)
    if cached is not None:
        return
    reply = call(st.ctl, st.ctx, st.storage_agent, "/storage/cache-image",
                 commands.cache_image(ps, image, st.image_id, bs))
    info = reply.get("image") or {}
    with st.ctl.db.write() as s:
        if s.scalar(select(ImageCache.id).where(ImageCache.primary_storage_uuid == ps.uuid,
                                                ImageCache.image_uuid == image.uuid)) is None:
            s.add(ImageCache(primary_storage_uuid=ps.uuid, image_uuid=image.uuid,
                             install_path=str(info.get("installPath", st.image_id)),
                             size=int(info.get("size", 0))))


def _new_volume(st: CreateVm, kind: str, size: int, name: str, device_id: int) -> Volume:
    with st.ctl.db.write() as s:
        vol = Volume(name=name, vm_uuid=st.vm_uuid, primary_storage_uuid=st.ps_uuid, type=kind,
                     size=size, status="Creating", device_id=device_id,
                     root_image_uuid=st.image_uuid if kind == "Root" else None)
        s.add(vol)
        s.flush()
        vol.install_path = commands.volume_path(vol.uuid)
        return vol


def _volume_ready(st: CreateVm, uuid: str, reply: dict[str, object], root: bool = False) -> None:
    info = reply.get("volume") or {}
    actual = int(info.get("actualSize", 0)) if isinstance(info, dict) else 0
    with st.ctl.db.write() as s:
        s.execute(update(Volume).where(Volume.uuid == uuid).values(status="Ready",
                                                                   actual_size=actual))
        if root:
            s.execute(update(Vm).where(Vm.uuid == st.vm_uuid).values(root_volume_uuid=uuid))


def create_root(st: CreateVm) -> None:
    with st.ctl.db.read() as s:
        ps = s.get(PrimaryStorage, st.ps_uuid)
        vm = s.get(Vm, st.vm_uuid)
        image = s.get(Image, st.image_uuid)
        assert ps is not None and vm is not None and image is not None
    vol = _new_volume(st, "Root", image.size, f"ROOT-for-{vm.name}"[:255], 0)
    st.root_uuid = vol.uuid
    reply = call(st.ctl, st.ctx, st.storage_agent, "/storage/volume/create-root",
                 commands.create_root(ps, st.image_id, vol))
    _volume_ready(st, vol.uuid, reply, root=True)


def _delete_volumes(st: CreateVm, uuids: list[str]) -> None:
    for uuid in reversed(uuids):
        with st.ctl.db.read() as s:
            vol = s.get(Volume, uuid)
            ps = s.get(PrimaryStorage, st.ps_uuid)
        if vol is None or ps is None:
            continue
        try:
            call(st.ctl, st.ctx, st.storage_agent, "/storage/volume/delete",
                 commands.delete_volume(ps, vol.install_path or ""))
        except AgentCallError as e:
            if e.code != "NOT_FOUND":
                raise
        with st.ctl.db.write() as s:
            s.execute(delete(Volume).where(Volume.uuid == uuid))


def delete_root(st: CreateVm) -> None:
    if st.root_uuid:
        _delete_volumes(st, [st.root_uuid])


def create_data(st: CreateVm) -> None:
    with st.ctl.db.read() as s:
        ps = s.get(PrimaryStorage, st.ps_uuid)
        assert ps is not None
    for i, size in enumerate(st.data_sizes):
        vol = _new_volume(st, "Data", size, f"DATA-{i + 1}-for-{st.vm_uuid}", i + 1)
        st.data_uuids.append(vol.uuid)
        reply = call(st.ctl, st.ctx, st.storage_agent, "/storage/volume/create-empty",
                     commands.create_empty(ps, vol))
        _volume_ready(st, vol.uuid, reply)


def delete_data(st: CreateVm) -> None:
    _delete_volumes(st, st.data_uuids)


def allocate_ips(st: CreateVm) -> None:
    with st.ctl.db.write() as s:
        for i, l3_uuid in enumerate(st.l3_uuids):
            used, rng = allocate.allocate_ip(s, l3_uuid)
            nic = VmNic(name=f"nic-{i}", vm_uuid=st.vm_uuid, l3_network_uuid=l3_uuid,
                        used_ip_uuid=used.uuid, ip=used.ip, netmask=rng.netmask,
                        gateway=rng.gateway, mac=new_mac(s), device_id=i)
            s.add(nic)
            s.flush()
            st.nic_uuids.append(nic.uuid)


def release_ips(st: CreateVm) -> None:
    with st.ctl.db.write() as s:
        for nic_uuid in st.nic_uuids:
            nic = s.get(VmNic, nic_uuid)
            if nic is None:
                continue
            used = nic.used_ip_uuid
            s.delete(nic)
            s.flush()
            if used:
                s.execute(delete(UsedIp).where(UsedIp.uuid == used))


def realise_network(st: CreateVm) -> None:
    assert st.host is not None
    for l3_uuid in dict.fromkeys(st.l3_uuids):
        apply_dhcp(st.ctl, st.ctx, st.host.uuid, st.agent, l3_uuid)


def unrealise_network(st: CreateVm) -> None:
    if st.host is None:
        return
    with st.ctl.db.read() as s:
        nics = [(n.l3_network_uuid, n.mac) for n in s.scalars(
            select(VmNic).where(VmNic.uuid.in_(st.nic_uuids)))]
    for l3_uuid in dict.fromkeys(l3 for l3, _ in nics):
        release_dhcp(st.ctl, st.ctx, st.agent, l3_uuid, [m for l3, m in nics if l3 == l3_uuid])


def start(st: CreateVm) -> None:
    with st.ctl.db.read() as s:
        vm = s.get(Vm, st.vm_uuid)
        assert vm is not None
        cmd = start_cmd(s, vm)
    call(st.ctl, st.ctx, st.agent, "/vm/start", cmd)
    st.started = True
    with st.ctl.db.write() as s:
        s.execute(update(Vm).where(Vm.uuid == st.vm_uuid).values(state="Running"))


def destroy(st: CreateVm) -> None:
    if st.host is None:
        return
    call(st.ctl, st.ctx, st.agent, "/vm/destroy", km.DestroyVmCmd(vm_uuid=st.vm_uuid))


STEPS: list[Step[CreateVm]] = [
    Step("allocate-host", allocate_host, release_host),
    Step("allocate-primary-storage", allocate_storage, release_storage),
    Step("cache-image", cache_image, None),
    Step("create-root-volume", create_root, delete_root),
    Step("create-data-volumes", create_data, delete_data),
    Step("allocate-ips", allocate_ips, release_ips),
    Step("realise-network", realise_network, unrealise_network),
    Step("start-vm", start, destroy),
]


def run(ctl: Controller, ctx: JobContext, st: CreateVm) -> None:
    """Run the flow; on failure, roll back and drop the VM row."""
    def on_step(name: str, i: int, n: int) -> None:
        ctx.progress(name, 100.0 * i / n)

    try:
        Flow("create-vm", STEPS, check=ctx.check, on_step=on_step,
             guard=ctx.uncancellable).run(st)
    except BaseException:
        with ctl.db.write() as s:
            s.execute(delete(Tag).where(Tag.resource_uuid == st.vm_uuid))
            s.execute(delete(Vm).where(Vm.uuid == st.vm_uuid))
        raise


def data_sizes(ctl: Controller, offering_uuids: list[str]) -> list[int]:
    with ctl.db.read() as s:
        return [s.get(DiskOffering, u).disk_size for u in offering_uuids]  # type: ignore[union-attr]


def l3_zone(ctl: Controller, l3_uuid: str) -> str | None:
    with ctl.db.read() as s:
        l3 = s.get(L3Network, l3_uuid)
        return l3.zone_uuid if l3 else None
