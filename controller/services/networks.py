"""Removing networks from hosts when an L2 or L3 network is deleted."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from controller import cascade, commands
from controller.core import Controller
from controller.db.models import Host, L2Network, L3Network
from controller.declarations import CascadeStep
from controller.dispatch.dispatcher import AgentCallError
from controller.jobs import JobContext
from controller.services import vxlan
from controller.services.vmhelpers import forget_host
from kvmagent import models as km

log = logging.getLogger(__name__)


def _hosts_of(ctl: Controller, l2_uuid: str) -> list[vxlan.Member]:
    """The connected hosts in the clusters the L2 network is attached to."""
    with ctl.db.read() as s:
        return [h for h in vxlan.members(s, l2_uuid) if h.connected]


def delete_l3(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Stop the L3 network's DHCP server on every host, then drop the rows."""
    with ctl.db.read() as s:
        l3 = s.get(L3Network, uuid)
    if l3 is not None:
        for h in _hosts_of(ctl, l3.l2_network_uuid):
            try:
                ctx.call(h.agent_url, km.DeleteDhcpCmd(l3_network_uuid=uuid))
            except AgentCallError as e:
                log.warning("removing DHCP of %s from host %s failed: %s", uuid, h.uuid, e)
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)


def delete_l2(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Remove the L2 network's bridge (and VLAN or VXLAN device) from every host, then drop the rows."""
    with ctl.db.read() as s:
        l2 = s.get(L2Network, uuid)
    if l2 is not None:
        for h in _hosts_of(ctl, uuid):
            try:
                ctx.call(h.agent_url, commands.l2_delete(l2, h.vtep_ip))
            except (AgentCallError, ValueError) as e:
                log.warning("removing L2 %s from host %s failed: %s", uuid, h.uuid, e)
            forget_host(ctl, h.uuid)
        vxlan.forget(ctl, l2_uuid=uuid)
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)


def delete_host(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Drop the host's row; the hosts left on its vxlan networks drop its VTEP (best effort)."""
    with ctl.db.read() as s:
        cluster_uuid = s.scalar(select(Host.cluster_uuid).where(Host.uuid == uuid))
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)
    forget_host(ctl, uuid)
    if cluster_uuid is not None:
        vxlan.sync_cluster(ctl, cluster_uuid)


def vtep_changed(ctl: Controller, uuid: str, values: dict[str, Any]) -> None:
    """A host's new VTEP goes to its VXLAN devices and to its peers' lists, in a job."""
    if "vtep_ip" not in values:
        return

    def run(ctx: JobContext) -> dict[str, Any]:
        vxlan.forget(ctl, host_uuid=uuid)
        vxlan.host_joined(ctl, uuid)
        return {}

    ctl.jobs.submit("sync-vxlan", "hosts", uuid, [f"hosts:{uuid}"], run)


DECLARATIONS = (
    CascadeStep("l3-networks", "delete", delete_l3),
    CascadeStep("l2-networks", "delete", delete_l2),
    CascadeStep("hosts", "delete", delete_host),
)
