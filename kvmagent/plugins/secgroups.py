"""Security groups: the controller defines groups and sets NICs' groups here.

The filters themselves are in :mod:`kvmagent.secgroups`. A VM start or NIC
attach carries its groups too, so a NIC never comes up before its filter.
"""

from __future__ import annotations

from functools import partial

from agentcore.errors import Conflict
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from kvmagent import secgroups
from kvmagent.domain_spec import domain_name
from kvmagent.domain_xml import to_string
from kvmagent.models import (
    ApplySecurityGroupsCmd,
    DeleteSecurityGroupsCmd,
    NicGroupsSpec,
    SecurityGroupsReply,
)
from kvmagent.services import KvmHost


def _apply_locks(cmd: ApplySecurityGroupsCmd) -> list[str]:
    # a NIC's filterref may change: hold its VM like the VM commands do
    return ["nwfilter", *{f"vm:{domain_name(n.vm_uuid)}" for n in cmd.nics}]


class SecurityGroupPlugin(Plugin):
    """Define groups, set NICs' groups, remove groups; all idempotent."""

    def __init__(self, host: KvmHost) -> None:
        self.host = host

    @command(lock=_apply_locks)
    def apply(self, ctx: TaskContext, cmd: ApplySecurityGroupsCmd) -> SecurityGroupsReply:
        """Define or update these groups and NIC filters; running NICs follow at once."""
        anti_spoofing = self.host.config.anti_spoofing
        groups = self.host.hv.call(lambda c: secgroups.define_groups(c, cmd.groups))
        for nic in cmd.nics:
            ctx.check()
            self.host.hv.call(partial(secgroups.define_nic, nic=nic, anti_spoofing=anti_spoofing), mac=nic.mac)
            self._point_nic_at_its_filter(nic)
        return SecurityGroupsReply(groups=groups, nics=[n.mac for n in cmd.nics])

    def _point_nic_at_its_filter(self, nic: NicGroupsSpec) -> None:
        """A NIC started before it had groups references the anti-spoofing filter
        directly: move its ``<filterref>`` to its own filter, live."""
        hv = self.host.hv
        dom = hv.lookup(nic.vm_uuid)
        if dom is None:
            return  # not running here: its next start carries the groups
        el = hv.nic_element(dom, nic.mac)
        if el is None:
            return
        name = secgroups.nic_filter_name(nic.mac)
        ref = el.find("filterref")
        if ref is not None and ref.get("filter") == name:
            return
        if ref is None:
            ref = el.makeelement("filterref", {})
            el.append(ref)
        ref.attrib["filter"] = name
        for p in list(ref):
            ref.remove(p)
        if nic.ip is not None:
            ref.append(ref.makeelement("parameter", {"name": "IP", "value": nic.ip}))
        hv.update(dom, to_string(el))

    @command(lock=lambda cmd: "nwfilter")
    def delete(self, ctx: TaskContext, cmd: DeleteSecurityGroupsCmd) -> SecurityGroupsReply:
        """Remove groups' filters; a group a NIC filter still references is refused."""
        names = [secgroups.group_filter_name(g) for g in cmd.group_uuids]
        busy = self.host.hv.call(lambda c: secgroups.undefine(c, names, in_use_ok=True))
        if busy:
            raise Conflict("security groups are still used by NICs on this host", filters=busy)
        return SecurityGroupsReply(groups=names)
