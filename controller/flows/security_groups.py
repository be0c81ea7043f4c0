"""Security group changes that reach hosts, with their undo.

- A new rule is written before its job (the API answers with it); the job sends
  its group to the hosts. If that fails, the rule is deleted and the group sent
  again as it was.
- Attaching NICs writes their membership, then sends the NICs' filters and the
  groups that name this one as a remote group. If that fails, the membership
  goes and the same hosts are sent the old state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, select

from controller.core import Controller
from controller.db.models import SecurityGroup, SecurityGroupRule, VmNic, VmNicSecurityGroupRef
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.services.common import require
from controller.services.sgspecs import naming, push_groups, push_nics


@dataclass
class NewRule:
    ctl: Controller
    ctx: JobContext
    group: str
    rule_uuid: str


def _drop_rule(st: NewRule) -> None:
    st.ctl.db.transaction(lambda s: s.execute(delete(SecurityGroupRule).where(
        SecurityGroupRule.uuid == st.rule_uuid)))
    push_groups(st.ctl, st.ctx, [st.group])


RULE_STEPS: list[Step[NewRule]] = [
    Step("rule-written", lambda st: None, _drop_rule),
    Step("send-group", lambda st: push_groups(st.ctl, st.ctx, [st.group])),
]


def add_rule(st: NewRule) -> None:
    Flow("add-security-group-rule", RULE_STEPS, guard=st.ctx.uncancellable).run(st)


@dataclass
class Attach:
    ctl: Controller
    ctx: JobContext
    group: str
    nic_uuids: list[str]
    added: list[str] = field(default_factory=list)


def membership_changed(ctl: Controller, ctx: JobContext, group: str, nic_uuids: list[str]) -> None:
    """NICs joined or left ``group``: their filters, then the groups whose rules name it."""
    if not nic_uuids:
        return
    push_nics(ctl, ctx, nic_uuids)
    with ctl.db.read() as s:
        followers = naming(s, [group])
    push_groups(ctl, ctx, followers)


def _add_refs(st: Attach) -> None:
    with st.ctl.db.write() as s:
        require(s, SecurityGroup, st.group, "securityGroupUuid")
        have = set(s.scalars(select(VmNicSecurityGroupRef.vm_nic_uuid).where(
            VmNicSecurityGroupRef.security_group_uuid == st.group,
            VmNicSecurityGroupRef.vm_nic_uuid.in_(st.nic_uuids))))
        st.added = [n for n in st.nic_uuids if n not in have and s.get(VmNic, n) is not None]
        s.add_all(VmNicSecurityGroupRef(vm_nic_uuid=n, security_group_uuid=st.group) for n in st.added)


def _drop_refs(st: Attach) -> None:
    if not st.added:
        return
    st.ctl.db.transaction(lambda s: s.execute(delete(VmNicSecurityGroupRef).where(
        VmNicSecurityGroupRef.security_group_uuid == st.group, VmNicSecurityGroupRef.vm_nic_uuid.in_(st.added))))
    membership_changed(st.ctl, st.ctx, st.group, st.added)


ATTACH_STEPS: list[Step[Attach]] = [
    Step("add-members", _add_refs, _drop_refs),
    Step("send-filters", lambda st: membership_changed(st.ctl, st.ctx, st.group, st.added)),
]


def attach(st: Attach) -> None:
    Flow("attach-security-group", ATTACH_STEPS, guard=st.ctx.uncancellable).run(st)
