"""Pieces every VM operation shares: reaching agents, DHCP leases, start specs."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from contextlib import AbstractContextManager

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.orm import Session

from controller import commands
from controller.core import Controller
from controller.db.base import fetch_all
from controller.db.models import (
    Host,
    IpRange,
    L2Network,
    L3Network,
    PrimaryStorage,
    UsedIp,
    Vm,
    VmNic,
    Volume,
)
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import ApiError, Conflict
from controller.jobs import JobContext
from controller.netstate import Lease
from controller.primary import Op, backend_for
from controller.services import sgspecs, vxlan
from controller.services.allocate import L3_RANGES, dhcp_server_ip
from kvmagent import models as km

log = logging.getLogger(__name__)
NICS: Table = VmNic.__table__  # type: ignore[assignment]
_MAC_USED = select(NICS.c.uuid).where(NICS.c.mac == bindparam("mac"))
# driven by the host's VMs (a few), not by the network's NICs (all of them):
# the only filter in SQL is the host, so no planner starts from the NICs
_LEASES = select(Vm.name, VmNic.l3_network_uuid, VmNic.mac, VmNic.ip).join(
    VmNic, VmNic.vm_uuid == Vm.uuid)
_HOST_LEASES = _LEASES.where(Vm.host_uuid == bindparam("host"))


def random_mac() -> str:
    """A locally administered unicast MAC (40 random bits), not checked against the NICs."""
    octets = [0xFA, *(random.randint(0, 255) for _ in range(5))]  # noqa: S311
    return ":".join(f"{o:02x}" for o in octets)


def new_mac(s: Session) -> str:
    """A locally administered unicast MAC not used by any NIC."""
    while True:
        mac = random_mac()
        if s.connection().execute(_MAC_USED, {"mac": mac}).first() is None:
            return mac


def realise_l2(ctl: Controller, ctx: JobContext, host_uuid: str, agent_url: str,
               l2: L2Network) -> None:
    """Create the L2 bridge on a host once (remembered until the host reconnects).

    A vxlan network is synced on the hosts of its clusters instead: this host
    gets its VTEP and its peers, the others learn this host as a peer."""
    key = (host_uuid, l2.uuid)
    if l2.type == "vxlan":
        vxlan.sync(ctl, l2, ctx.call,
                   need=host_uuid)
        return
    if key in ctl.host_network.l2_realised:
        return
    ctx.call(agent_url, commands.l2_create(l2))
    ctl.host_network.l2_realised.add(key)


def forget_host(ctl: Controller, host_uuid: str) -> None:
    """The host reconnects or goes: bridges, secrets and peer lists are sent again."""
    ctl.host_network.forget_host(host_uuid)


def arriving(ctl: Controller, host_uuid: str, vm_uuid: str) -> AbstractContextManager[None]:
    """While inside, the host's lease sets also hold the VM's leases (a migration's
    destination, before the VM's row names that host)."""
    return ctl.host_network.arriving(host_uuid, vm_uuid)


def apply_dhcp(ctl: Controller, ctx: JobContext, host_uuid: str, agent_url: str,
               l3_uuid: str) -> None:
    """Send the full lease set of one L3 network on one host (coalesced per pair)."""
    coalescer = ctl.host_network.dhcp(host_uuid, l3_uuid)
    coalescer.run(lambda: _apply_dhcp(ctl, ctx, host_uuid, agent_url, l3_uuid))


def add_dhcp(ctl: Controller, ctx: JobContext, host_uuid: str, agent_url: str,
             l2: L2Network, l3_uuid: str, leases: list[Lease]) -> None:
    """Add a VM's leases (its rows committed) to one L3 network's DHCP server on a host.

    One add, coalesced per pair, carries no other VM's lease, so its cost does not grow
    with the host's VMs; the full set is sent instead the first time, after the host
    reconnected, or when the agent has no server for the network."""
    realise_l2(ctl, ctx, host_uuid, agent_url, l2)
    ctl.host_network.dhcp(host_uuid, l3_uuid).add(
        leases, lambda batch: _send_add(ctx, agent_url, l3_uuid, batch),
        lambda: _apply_dhcp(ctl, ctx, host_uuid, agent_url, l3_uuid))


def _send_add(ctx: JobContext, agent_url: str, l3_uuid: str, leases: list[Lease]) -> bool:
    """False when the agent serves no DHCP for the network (the full set is sent then)."""
    if not leases:
        return True
    try:
        ctx.call(agent_url, km.DhcpAddCmd(l3_network_uuid=l3_uuid,
                                          leases=[commands.lease(*lease) for lease in leases]))
    except AgentCallError as e:
        if e.code != "NOT_FOUND":
            raise
        log.info("no DHCP server of %s on %s: sending its full lease set", l3_uuid, agent_url)
        return False
    return True


def _apply_dhcp(ctl: Controller, ctx: JobContext, host_uuid: str, agent_url: str,
                l3_uuid: str) -> None:
    # read before the rows: a VM that has left this set had committed its move first, so a
    # snapshot taken after (SQLite's read lasts the whole session) has it on this host
    incoming = ctl.host_network.incoming(host_uuid)
    with ctl.db.read() as s:
        l3 = ctl.networks.l3(s, l3_uuid)
        if l3 is None or l3.dhcp_server_ip is None:
            s.rollback()  # end the read snapshot, so the address written next is seen
            with ctl.db.write() as w:
                dhcp_server_ip(w, l3_uuid)
            l3 = ctl.networks.l3(s, l3_uuid)
        assert l3 is not None and l3.dhcp_server_ip is not None
        server_ip = l3.dhcp_server_ip
        l2 = ctl.networks.l2s(s, [l3_uuid]).get(l3_uuid)
        rng = next(iter(fetch_all(s, IpRange, L3_RANGES, {"l3": l3_uuid})), None)
        if incoming:  # VMs migrating here: their leases come here first
            rows = s.execute(_LEASES.where(or_(Vm.host_uuid == host_uuid, Vm.uuid.in_(incoming))))
        else:
            rows = s.connection().execute(_HOST_LEASES, {"host": host_uuid})
        leases = [(mac, str(ip), commands.hostname(name)) for name, l3, mac, ip in rows
                  if l3 == l3_uuid and ip is not None]
    if l2 is None or rng is None:
        raise Conflict(f"L3 network {l3_uuid} has no L2 network or IP range")
    realise_l2(ctl, ctx, host_uuid, agent_url, l2)
    ctx.call(agent_url, commands.dhcp_apply(l3, l2, rng, server_ip, leases))


def release_dhcp(ctl: Controller, ctx: JobContext, agent_url: str, l3_uuid: str,
                 macs: list[str]) -> None:
    if macs:
        ctx.call(agent_url, km.DhcpReleaseCmd(l3_network_uuid=l3_uuid, macs=macs))


def start_cmd(s: Session, vm: Vm) -> km.StartVmCmd:
    """The full spec of a VM from the database."""
    vols = list(s.scalars(select(Volume).where(Volume.vm_uuid == vm.uuid,
                                               Volume.status == "Ready")))
    root = next((v for v in vols if v.type == "Root"), None)
    if root is None or root.primary_storage_uuid is None:
        raise Conflict(f"vm {vm.uuid} has no root volume")

    specs = []
    for v in [root, *sorted((v for v in vols if v.type != "Root"),
                            key=lambda v: v.device_id or 0)]:
        ps = s.get(PrimaryStorage, v.primary_storage_uuid)
        assert ps is not None
        specs.append(backend_for(ps).volume_spec(ps, v, v.device_id or 0))
    nics = []
    groups, group_specs = sgspecs.vm_groups(s, vm.uuid)
    for nic in s.scalars(select(VmNic).where(VmNic.vm_uuid == vm.uuid).order_by(VmNic.device_id)):
        l3 = s.get(L3Network, nic.l3_network_uuid)
        l2 = s.get(L2Network, l3.l2_network_uuid) if l3 else None
        if l2 is not None:
            nics.append(commands.nic_spec(nic, l2, groups.get(nic.uuid, [])))
    return commands.start_vm(vm, specs[0], specs[1:], nics, group_specs)


def nic_l3s(s: Session, vm_uuid: str) -> list[tuple[str, str]]:
    """(l3 uuid, mac) of a VM's NICs."""
    return [(l3, mac) for l3, mac in s.execute(
        select(VmNic.l3_network_uuid, VmNic.mac).where(VmNic.vm_uuid == vm_uuid))]


def host_of(s: Session, host_uuid: str | None) -> Host:
    host = s.get(Host, host_uuid) if host_uuid else None
    if host is None:
        raise Conflict(f"no host {host_uuid}")
    return host


def delete_volume_files(ctl: Controller, ctx: JobContext, host: Host | None,
                        vols: Iterable[Volume]) -> None:
    """Delete volumes on their storage (file storage: through ``host`` or any connected one)."""

    for v in vols:  # Error: cut short by a lost controller, the file may be there
        if v.install_path is None or v.primary_storage_uuid is None \
                or v.status not in ("Ready", "Error"):
            continue
        with ctl.db.read() as s:
            ps = s.get(PrimaryStorage, v.primary_storage_uuid)
        if ps is not None:
            backend_for(ps).delete_volume(Op(ctl, ctx), ps, host, v)


def release_ips(s: Session, used_ip_uuids: Iterable[str | None]) -> None:
    ids = [u for u in used_ip_uuids if u]
    if ids:
        s.execute(update(VmNic).where(VmNic.used_ip_uuid.in_(ids)).values(used_ip_uuid=None))
        for u in ids:
            row = s.get(UsedIp, u)
            if row is not None:
                s.delete(row)


def resend_leases(ctl: Controller, ctx: JobContext, host_uuid: str, agent_url: str,
                  l3s: list[str]) -> None:
    """Drop a VM's leases from a host it has left (its row no longer names the host).

    The host gets its full lease sets again rather than a release of the VM's: an apply
    starting after the VM left holds no lease of it, where a release could cross a lease
    set read before and sent after it. A failure is only logged: the host's next lease
    set drops them too.
    """
    for l3_uuid in l3s:
        try:
            apply_dhcp(ctl, ctx, host_uuid, agent_url, l3_uuid)
        except (AgentCallError, ApiError) as e:  # also: the network went meanwhile
            log.warning("dropping the leases of a VM gone from host %s failed: %s", host_uuid, e)
