"""Attach a NIC: an address on the L3 network and the NIC's row → on a running VM,
the host's lease set with it, then the hot-plug.

A failure drops the NIC's row and gives the address back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from controller import commands
from controller.core import Controller
from controller.db.models import L2Network, L3Network, UsedIp, Vm, VmNic
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.services import allocate
from controller.services.common import require
from controller.services.vmhelpers import apply_dhcp, host_of, new_mac
from kvmagent import models as km


@dataclass
class AttachNic:
    """What the attach-NIC flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    vm: Vm
    l3_uuid: str
    l3: L3Network | None = None
    nic_uuid: str | None = None
    used_ip_uuid: str | None = None


def allocate_nic(st: AttachNic) -> None:
    """An address and the NIC's row, next in the VM's device order."""
    with st.ctl.db.write() as s:
        l3 = require(s, L3Network, st.l3_uuid, "l3NetworkUuid")
        used, rng = allocate.allocate_ip(s, l3.uuid)
        n = len(list(s.scalars(select(VmNic.uuid).where(VmNic.vm_uuid == st.vm.uuid))))
        nic = VmNic(name=f"nic-{n}", vm_uuid=st.vm.uuid, l3_network_uuid=l3.uuid,
                    used_ip_uuid=used.uuid, ip=used.ip, netmask=rng.netmask,
                    gateway=rng.gateway, mac=new_mac(s), device_id=n)
        s.add(nic)
        s.flush()
        st.l3, st.nic_uuid, st.used_ip_uuid = l3, nic.uuid, used.uuid


def free_nic(st: AttachNic) -> None:
    if st.nic_uuid is None:
        return
    with st.ctl.db.write() as s:
        s.execute(delete(VmNic).where(VmNic.uuid == st.nic_uuid))
        s.execute(delete(UsedIp).where(UsedIp.uuid == st.used_ip_uuid))


def plug(st: AttachNic) -> None:
    """On a running VM: the host's lease set with the NIC, then the hot-plug."""
    vm, l3 = st.vm, st.l3
    if vm.state != "Running" or not vm.host_uuid:
        return
    assert l3 is not None
    with st.ctl.db.read() as s:
        host = host_of(s, vm.host_uuid)
        l2 = s.get(L2Network, l3.l2_network_uuid)
        row = s.get(VmNic, st.nic_uuid)
    assert l2 is not None and row is not None
    apply_dhcp(st.ctl, st.ctx, host.uuid, host.agent_url, l3.uuid)
    st.ctx.call(host.agent_url, km.NicCmd(vm_uuid=vm.uuid,
                                                   nic=commands.nic_spec(row, l2)))


STEPS: list[Step[AttachNic]] = [
    Step("allocate-nic", allocate_nic, free_nic),
    Step("plug-nic", plug),
]


def run(st: AttachNic) -> str:
    """Run the flow; the new NIC's UUID."""
    Flow("attach-nic", STEPS, guard=st.ctx.uncancellable).run(st)
    assert st.nic_uuid is not None
    return st.nic_uuid
