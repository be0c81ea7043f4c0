"""VXLAN L2 networks: each host's VTEP, and the peers its VXLAN device floods to.

The peers of a host on a vxlan network are the VTEPs of all other hosts of the
clusters the network is attached to, whatever their connection status (a host
the controller lost touch with still forwards its VMs' traffic). The agent
writes them as static all-zero FDB entries and, on a repeated
``/network/l2/create``, adds and removes entries to match the list.

Whenever the set may have changed (a VM needs the network on a host, a host
(re)connects, a host is deleted), :func:`sync` sends every Connected host of
those clusters its own list, unless it already got exactly that one from this
controller process. So a network in use is realised on every Connected host of
its clusters, and a controller restart costs one round of creates. Syncs of one
network are serialised, so an older list never overtakes a newer one.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from controller import commands
from controller.core import Controller
from controller.db.models import Host, L2Network, L2NetworkClusterRef, L3Network, Vm, VmNic
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import Conflict
from kvmagent import models as km

log = logging.getLogger(__name__)

#: sends one ``/network/l2/create`` to an agent URL (inside a job, or synchronously)
Send = Callable[[str, km.CreateL2Cmd], object]
CONNECT_TIMEOUT = 60.0



@dataclass(frozen=True)
class Member:
    uuid: str
    vtep_ip: str | None
    agent_url: str
    connected: bool


def default_vtep(management_ip: str) -> str | None:
    """A host's VTEP unless told otherwise: its management address, when that is IPv4."""
    try:
        return str(ipaddress.IPv4Address(management_ip))
    except ValueError:
        return None


def members(s: Session, l2_uuid: str, also: str | None = None) -> list[Member]:
    """The hosts of the clusters the L2 network is attached to (and host ``also``)."""
    clusters = select(L2NetworkClusterRef.cluster_uuid).where(
        L2NetworkClusterRef.l2_network_uuid == l2_uuid)
    rows = s.execute(select(Host.uuid, Host.vtep_ip, Host.agent_url, Host.status).where(
        or_(Host.cluster_uuid.in_(clusters), Host.uuid == also)).order_by(Host.uuid))
    return [Member(u, v, a, st == "Connected") for u, v, a, st in rows]


def sync(ctl: Controller, l2: L2Network, send: Send, need: str | None = None) -> None:
    """Bring every Connected host of the network's clusters to its current peer list.

    ``need`` is the host a VM needs the network on: its failure (or a missing
    VTEP) raises; the other hosts are best effort, logged and retried next time.
    """
    sent = ctl.host_network.vxlan_sent
    with ctl.host_network.vxlan_lock(l2.uuid):
        with ctl.db.read() as s:
            hosts = members(s, l2.uuid, also=need)
        vteps = [h.vtep_ip for h in hosts if h.vtep_ip]
        for h in sorted(hosts, key=lambda h: h.uuid != need):  # the VM's host first
            if not h.connected and h.uuid != need:
                continue
            if h.vtep_ip is None:
                if h.uuid == need:
                    raise Conflict(f"host {h.uuid} has no vtepIp for vxlan network {l2.uuid}",
                                   field="vtepIp", hostUuid=h.uuid)
                continue
            peers = sorted({v for v in vteps if v != h.vtep_ip}, key=ipaddress.IPv4Address)
            want = (h.vtep_ip, *peers)
            if sent.get((h.uuid, l2.uuid)) == want:
                continue
            try:
                send(h.agent_url, commands.l2_create(l2, h.vtep_ip, peers))
            except AgentCallError as e:
                if h.uuid == need:
                    raise
                log.warning("updating vxlan %s peers on host %s failed: %s", l2.uuid, h.uuid, e)
                continue
            sent[(h.uuid, l2.uuid)] = want


def in_use(ctl: Controller, s: Session, cluster_uuid: str) -> list[L2Network]:
    """The cluster's vxlan networks that a VM on some host has a NIC on, or that were sent."""
    attached = select(L2NetworkClusterRef.l2_network_uuid).where(
        L2NetworkClusterRef.cluster_uuid == cluster_uuid)
    used = select(L3Network.l2_network_uuid).join(VmNic, VmNic.l3_network_uuid == L3Network.uuid).join(
        Vm, Vm.uuid == VmNic.vm_uuid).where(Vm.host_uuid.is_not(None))
    sent = ctl.host_network.vxlan_sent.copy()  # copy: other jobs write it
    wanted = {k[1] for k in sent} | set(s.scalars(used))
    return [l2 for l2 in s.scalars(select(L2Network).where(
        L2Network.type == "vxlan", L2Network.uuid.in_(attached)).order_by(L2Network.uuid))
        if l2.uuid in wanted]


def sync_cluster(ctl: Controller, cluster_uuid: str) -> None:
    """Re-sync the cluster's vxlan networks in use (best effort, synchronous agent calls)."""
    with ctl.db.read() as s:
        l2s = in_use(ctl, s, cluster_uuid)

    def send(agent_url: str, cmd: km.CreateL2Cmd) -> object:
        return ctl.agents.call_sync(agent_url, cmd, CONNECT_TIMEOUT)

    for l2 in l2s:
        sync(ctl, l2, send)


def host_joined(ctl: Controller, host_uuid: str) -> None:
    """A host (re)connected: it and its clusters' hosts get the current peer lists."""
    with ctl.db.read() as s:
        cluster_uuid = s.scalar(select(Host.cluster_uuid).where(Host.uuid == host_uuid))
    if cluster_uuid is not None:
        sync_cluster(ctl, cluster_uuid)


def forget(ctl: Controller, host_uuid: str | None = None, l2_uuid: str | None = None) -> None:
    """Drop what was sent to a host (it reconnects, or goes) or for a network (deleted)."""
    ctl.host_network.forget_vxlan(host_uuid=host_uuid, l2_uuid=l2_uuid)
