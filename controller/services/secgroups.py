"""Security groups: create groups and rules, attach NICs, delete; each change reaches the
hosts running the NICs concerned at once (:mod:`controller.services.sgspecs`).

A new group allows all egress through one rule of its own; ingress is denied to
its NICs but what a rule allows. A rule naming a remote group follows that
group's members: attaching or detaching NICs re-sends the groups naming it.
Deleting a group deletes its rules and the rules naming it, and takes its NICs
out of it; deleting a rule is a cascade delete of the rule alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller import cascade
from controller.api import schemas as sc
from controller.core import Controller
from controller.db.base import new_uuid
from controller.db.jobs import Job
from controller.db.models import Host, SecurityGroup, SecurityGroupRule, VmNic, VmNicSecurityGroupRef
from controller.declarations import Action, CascadeStep, Create
from controller.flows import security_groups as sg_flows
from controller.jobs import JobContext
from controller.services.common import get_or_404, require, to_dict
from controller.services.resources import record
from controller.services.sgspecs import push_groups
from kvmagent import models as km


def create_group(s: Session, body: sc.SecurityGroupCreate) -> SecurityGroup:
    row = SecurityGroup(uuid=new_uuid(), name=body.name, description=body.description)
    s.add(row)
    s.flush()
    s.add(SecurityGroupRule(uuid=new_uuid(), name="egress all to 0.0.0.0/0", security_group_uuid=row.uuid,
                            direction="egress", protocol="all", cidr="0.0.0.0/0",
                            description="a new group allows all egress; delete this rule to restrict it"))
    return row


def _rule_name(body: sc.SecurityGroupRuleCreate) -> str:
    ports = ""
    if body.port_start is not None:
        end = body.port_end if body.port_end is not None else body.port_start
        ports = f" {body.port_start}" if end == body.port_start else f" {body.port_start}-{end}"
    peer = f"group {body.remote_group_uuid}" if body.remote_group_uuid else (body.cidr or "0.0.0.0/0")
    return f"{body.direction} {body.protocol}{ports} {'from' if body.direction == 'ingress' else 'to'} {peer}"


def create_rule(ctl: Controller, body: sc.SecurityGroupRuleCreate) -> tuple[Job, dict[str, Any]]:
    """Write the rule, then send its group to the hosts in a job; if that fails, the rule goes."""
    with ctl.db.write() as s:
        require(s, SecurityGroup, body.security_group_uuid, "securityGroupUuid")
        if body.remote_group_uuid is not None:
            require(s, SecurityGroup, body.remote_group_uuid, "remoteGroupUuid")
        row = SecurityGroupRule(
            uuid=new_uuid(), name=_rule_name(body), description=body.description,
            security_group_uuid=body.security_group_uuid, direction=body.direction, protocol=body.protocol,
            port_start=body.port_start, port_end=body.port_end,
            cidr=None if body.remote_group_uuid else (body.cidr or "0.0.0.0/0"),
            remote_group_uuid=body.remote_group_uuid)
        s.add(row)
        s.flush()
        out = to_dict(row)
    group, uuid = body.security_group_uuid, row.uuid

    def run(ctx: JobContext) -> dict[str, Any]:
        sg_flows.add_rule(sg_flows.NewRule(ctl, ctx, group, uuid))
        return out
    return ctl.jobs.submit("create-security-group-rule", "security-group-rules", uuid,
                           [f"security-groups:{group}"], run), out


def _nic_keys(ctl: Controller, group: str, nic_uuids: list[str]) -> list[str]:
    with ctl.db.read() as s:
        vms = set(s.scalars(select(VmNic.vm_uuid).where(VmNic.uuid.in_(nic_uuids))))
    return [f"security-groups:{group}", *(f"vms:{vm}" for vm in sorted(vms))]


def attach_action(ctl: Controller, uuid: str, body: sc.SecurityGroupNics) -> Job:
    """Put NICs in the group; running ones get it at once, groups naming it their new addresses."""
    nic_uuids = list(dict.fromkeys(body.vm_nic_uuids))
    with ctl.db.read() as s:
        for i, nic in enumerate(nic_uuids):
            require(s, VmNic, nic, f"vmNicUuids.{i}")

    def run(ctx: JobContext) -> dict[str, Any]:
        sg_flows.attach(sg_flows.Attach(ctl, ctx, uuid, nic_uuids))
        return {"securityGroupUuid": uuid, "vmNicUuids": members(ctl, uuid)}
    return ctl.jobs.submit("attach-security-group", "security-groups", uuid, _nic_keys(ctl, uuid, nic_uuids), run)


def detach_action(ctl: Controller, uuid: str, body: sc.SecurityGroupNics) -> Job:
    """Take NICs out of the group (one not in it is left alone)."""
    nic_uuids = list(dict.fromkeys(body.vm_nic_uuids))

    def run(ctx: JobContext) -> dict[str, Any]:
        _detach(ctl, ctx, uuid, nic_uuids)
        return {"securityGroupUuid": uuid, "vmNicUuids": members(ctl, uuid)}
    return ctl.jobs.submit("detach-security-group", "security-groups", uuid, _nic_keys(ctl, uuid, nic_uuids), run)


def _detach(ctl: Controller, ctx: JobContext, uuid: str, nic_uuids: list[str]) -> None:
    def drop(s: Session) -> list[str]:
        gone = list(s.scalars(select(VmNicSecurityGroupRef.vm_nic_uuid).where(
            VmNicSecurityGroupRef.security_group_uuid == uuid, VmNicSecurityGroupRef.vm_nic_uuid.in_(nic_uuids))))
        s.execute(delete(VmNicSecurityGroupRef).where(VmNicSecurityGroupRef.security_group_uuid == uuid,
                                                      VmNicSecurityGroupRef.vm_nic_uuid.in_(gone)))
        return gone
    sg_flows.membership_changed(ctl, ctx, uuid, ctl.db.transaction(drop))


def member_nics(ctl: Controller, uuid: str) -> list[dict[str, Any]]:
    """The group's NICs with their VMs and addresses, by NIC UUID; 404 for no such group."""
    with ctl.db.read() as s:
        get_or_404(s, SecurityGroup, uuid)
        rows = s.execute(select(VmNic).join(
            VmNicSecurityGroupRef, VmNicSecurityGroupRef.vm_nic_uuid == VmNic.uuid).where(
            VmNicSecurityGroupRef.security_group_uuid == uuid).order_by(VmNic.uuid)).scalars()
        return [{"vmNicUuid": n.uuid, "vmUuid": n.vm_uuid, "l3NetworkUuid": n.l3_network_uuid,
                 "ip": n.ip, "mac": n.mac} for n in rows]


def members(ctl: Controller, uuid: str) -> list[str]:
    with ctl.db.read() as s:
        return list(s.scalars(select(VmNicSecurityGroupRef.vm_nic_uuid).where(
            VmNicSecurityGroupRef.security_group_uuid == uuid).order_by(VmNicSecurityGroupRef.vm_nic_uuid)))


# -- delete ------------------------------------------------------------------------


def delete_rule(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    with ctl.db.read() as s:
        rule = s.get(SecurityGroupRule, uuid)
    if rule is None:
        return
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)
    push_groups(ctl, ctx, [rule.security_group_uuid])


def delete_group(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Its NICs leave it (their filters change at once), the rules naming it go (their groups
    are sent again), then its filters leave every host and its rules and row go."""
    _detach(ctl, ctx, uuid, members(ctl, uuid))
    with ctl.db.read() as s:
        naming_rules = list(s.scalars(select(SecurityGroupRule.uuid).where(
            SecurityGroupRule.remote_group_uuid == uuid, SecurityGroupRule.security_group_uuid != uuid)))
    for rule in naming_rules:
        delete_rule(ctl, ctx, "security-group-rules", rule)
    with ctl.db.read() as s:
        hosts = list(s.scalars(select(Host).where(Host.status == "Connected")))
    for host in hosts:
        ctx.call(host.agent_url, km.DeleteSecurityGroupsCmd(group_uuids=[uuid]), where=f"host {host.uuid}")
    with ctl.db.write() as s:
        for rule in s.scalars(select(SecurityGroupRule.uuid).where(SecurityGroupRule.security_group_uuid == uuid)):
            cascade.delete_rows(s, "security-group-rules", rule)
        cascade.delete_rows(s, coll, uuid)


DECLARATIONS = (
    Create("security-groups", sc.SecurityGroupCreate, record(create_group)),
    Create("security-group-rules", sc.SecurityGroupRuleCreate, create_rule),
    Action("security-groups", "attach", sc.SecurityGroupNics, attach_action),
    Action("security-groups", "detach", sc.SecurityGroupNics, detach_action),
    CascadeStep("security-group-rules", "delete", delete_rule),
    CascadeStep("security-groups", "delete", delete_group),
)
