"""Start a stopped VM: reserve a host → its L2 bridges and DHCP lease sets → start.

A failure after the host is reserved gives its capacity back and leaves the VM
Stopped (its last host recorded).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from controller.core import Controller
from controller.db.models import Vm
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.primary import Op, prepare_host_for_vm
from controller.services import allocate
from controller.services.common import require
from controller.services.vmhelpers import apply_dhcp, nic_l3s, start_cmd


@dataclass
class StartVm:
    """What the start flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    vm: Vm
    want_host: str | None = None
    host: allocate.HostRef | None = None


def reserve_host(st: StartVm) -> None:
    """The chosen host, else the last one if it has room, else any; the VM is Starting."""
    st.host = st.ctl.db.transaction(lambda s: _reserve(st, s))


def _reserve(st: StartVm, s: Session) -> allocate.HostRef:
    vm = st.vm
    try:
        host = allocate.reserve_host(s, vm.cpu_num, vm.memory_size, vm.zone_uuid,
                                     vm.cluster_uuid, st.want_host or vm.last_host_uuid)
    except allocate.NoCapacity:
        if st.want_host or not vm.last_host_uuid:
            raise
        # the last host is full, disabled or in maintenance: any other will do
        host = allocate.reserve_host(s, vm.cpu_num, vm.memory_size, vm.zone_uuid,
                                     vm.cluster_uuid)
    s.execute(update(Vm).where(Vm.uuid == vm.uuid).values(host_uuid=host.uuid, state="Starting"))
    return host


def stopped(st: StartVm) -> None:
    """The host's capacity back; the VM Stopped."""
    if st.host is not None:
        st.ctl.db.transaction(lambda s: allocate.mark_stopped(s, st.vm.uuid))


def realise_network(st: StartVm) -> None:
    assert st.host is not None
    with st.ctl.db.read() as s:
        l3s = dict.fromkeys(l3 for l3, _ in nic_l3s(s, st.vm.uuid))
    for l3_uuid in l3s:
        apply_dhcp(st.ctl, st.ctx, st.host.uuid, st.host.agent_url, l3_uuid)


def start(st: StartVm) -> None:
    """The host opens the VM's disks, then the domain starts."""
    assert st.host is not None
    with st.ctl.db.read() as s:
        cmd = start_cmd(s, require(s, Vm, st.vm.uuid, "vmUuid"))
    prepare_host_for_vm(Op(st.ctl, st.ctx), st.host, st.vm.uuid)
    st.ctx.call(st.host.agent_url, cmd)


STEPS: list[Step[StartVm]] = [
    Step("reserve-host", reserve_host, stopped),
    Step("realise-network", realise_network),
    Step("start-vm", start),
]


def run(st: StartVm) -> None:
    Flow("start-vm", STEPS, guard=st.ctx.uncancellable).run(st)
