"""Migrate a running VM: reserve the destination → move (prepare the destination's
network and storage, migrate, record the move) → give the source's leases back.

Until the agent reports the VM moved, a failure undoes the destination (its lease
sets again without the VM, its capacity back, the VM Running on the source); after
it, the VM has moved and nothing is undone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller.core import Controller
from controller.db.models import Host, PrimaryStorage, Vm, Volume
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.primary import Op, prepare_host_for_vm
from controller.services import allocate, sgspecs
from controller.services.common import require, to_dict
from controller.services.vmhelpers import (
    apply_dhcp,
    arriving,
    host_of,
    nic_l3s,
    resend_leases,
)
from kvmagent import models as km


@dataclass
class MigrateVm:
    """What the migrate flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    vm: Vm
    want_host: str | None = None
    src: Host | None = None
    dst: allocate.HostRef | None = None
    l3s: list[str] = field(default_factory=list)
    migrated: bool = False
    result: dict[str, Any] | None = None

    @property
    def uuid(self) -> str:
        return self.vm.uuid


def _set(st: MigrateVm, **values: Any) -> dict[str, Any]:
    def set_values(s: Session) -> dict[str, Any]:
        s.execute(update(Vm).where(Vm.uuid == st.uuid).values(**values))
        return to_dict(require(s, Vm, st.uuid, "vmUuid"))
    return st.ctl.db.transaction(set_values)


def reserve_destination(st: MigrateVm) -> None:
    """Capacity on another host of the VM's cluster; the VM is Migrating."""
    vm, src_uuid = st.vm, st.vm.host_uuid
    assert src_uuid is not None

    def reserve(s: Session) -> tuple[Host, allocate.HostRef]:
        src = host_of(s, src_uuid)
        return src, allocate.reserve_host(s, vm.cpu_num, vm.memory_size, vm.zone_uuid,
                                          src.cluster_uuid, st.want_host, exclude=(src_uuid,))

    st.src, st.dst = st.ctl.db.transaction(reserve)
    _set(st, state="Migrating")
    with st.ctl.db.read() as s:
        st.l3s = list(dict.fromkeys(l3 for l3, _ in nic_l3s(s, st.uuid)))


def release_destination(st: MigrateVm) -> None:
    if st.dst is None or st.migrated:
        return
    dst = st.dst
    st.ctl.db.transaction(lambda s: allocate.release_host(s, dst.uuid, st.vm.cpu_num,
                                                          st.vm.memory_size))
    _set(st, state="Running")


def move(st: MigrateVm) -> None:
    """Bridges and leases on the destination, its storage, the migration, the VM's row.

    One step: the destination's lease sets must hold the VM from the first one sent
    until the VM's row names the destination.
    """
    assert st.src is not None and st.dst is not None
    src, dst, uuid = st.src, st.dst, st.uuid
    with arriving(st.ctl, dst.uuid, uuid):
        for l3_uuid in st.l3s:
            apply_dhcp(st.ctl, st.ctx, dst.uuid, dst.agent_url, l3_uuid)  # the bridge first
        prepare_host_for_vm(Op(st.ctl, st.ctx), dst, uuid)
        sgspecs.prepare_destination(st.ctl, st.ctx, dst, uuid)  # libvirt needs the NIC filters there
        st.ctx.call(src.agent_url, km.MigrateVmCmd(
            vm_uuid=uuid, dest_host_ip=dst.management_ip,
            unsafe=_on_shared_mount_point(st.ctl, uuid)))
        st.migrated = True
        st.ctl.db.transaction(lambda s: _moved(st, s))


def _moved(st: MigrateVm, s: Session) -> None:
    assert st.src is not None and st.dst is not None
    src_uuid = st.src.uuid
    # both hosts in UUID order: a migration the other way cannot hold one and wait for
    # the other (the VM row's foreign key check takes the destination's row too)
    allocate.lock_hosts(s, [src_uuid, st.dst.uuid])
    allocate.release_host(s, src_uuid, st.vm.cpu_num, st.vm.memory_size)
    s.execute(update(Vm).where(Vm.uuid == st.uuid).values(
        host_uuid=st.dst.uuid, last_host_uuid=src_uuid, state="Running"))


def unprepare_destination(st: MigrateVm) -> None:
    """The VM still runs on the source: the destination's lease sets without it."""
    if st.dst is not None and not st.migrated:
        resend_leases(st.ctl, st.ctx, st.dst.uuid, st.dst.agent_url, st.l3s)


def release_source(st: MigrateVm) -> None:
    assert st.src is not None
    resend_leases(st.ctl, st.ctx, st.src.uuid, st.src.agent_url, st.l3s)
    st.result = _set(st)


def _on_shared_mount_point(ctl: Controller, uuid: str) -> bool:
    """Disks on a shared mount point: shared, but libvirt cannot tell (it refuses unless unsafe)."""
    with ctl.db.read() as s:
        return s.scalar(select(PrimaryStorage.uuid).join(
            Volume, Volume.primary_storage_uuid == PrimaryStorage.uuid).where(
            Volume.vm_uuid == uuid, PrimaryStorage.type == "sharedmountpoint").limit(1)) is not None


STEPS: list[Step[MigrateVm]] = [
    Step("reserve-destination", reserve_destination, release_destination),
    Step("move", move, unprepare_destination),
    Step("release-source", release_source),
]


def run(st: MigrateVm) -> dict[str, Any]:
    """Run the flow; the VM's row as it ends."""
    Flow("migrate-vm", STEPS, guard=st.ctx.uncancellable).run(st)
    assert st.result is not None
    return st.result
