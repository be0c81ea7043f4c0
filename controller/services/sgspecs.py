"""Security groups as the hosts get them: rows read into kvmagent commands, and the
pushes that keep running NICs' filters current.

A rule naming a remote group becomes one ``/32`` rule per address of that
group's NICs, so a NIC joining or leaving a group (or going away) changes the
rules of every group that names it: :func:`naming` finds those.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.core import Controller
from controller.db.models import Host, SecurityGroupRule, Vm, VmNic, VmNicSecurityGroupRef
from controller.jobs import JobContext
from controller.services.allocate import HostRef
from kvmagent import models as km

#: VM states whose NICs have filters on their host
ON_HOST = ("Running", "Paused", "Migrating")


def groups_of_nics(s: Session, nic_uuids: Iterable[str]) -> dict[str, list[str]]:
    """NIC → its groups (only NICs in at least one group)."""
    out: dict[str, list[str]] = defaultdict(list)
    rows = s.execute(select(VmNicSecurityGroupRef.vm_nic_uuid, VmNicSecurityGroupRef.security_group_uuid)
                     .where(VmNicSecurityGroupRef.vm_nic_uuid.in_(list(nic_uuids)))
                     .order_by(VmNicSecurityGroupRef.id))
    for nic, group in rows:
        out[nic].append(group)
    return dict(out)


def member_ips(s: Session, group_uuids: Iterable[str]) -> dict[str, list[str]]:
    """Group → the addresses of its NICs."""
    out: dict[str, list[str]] = defaultdict(list)
    rows = s.execute(select(VmNicSecurityGroupRef.security_group_uuid, VmNic.ip)
                     .join(VmNic, VmNic.uuid == VmNicSecurityGroupRef.vm_nic_uuid)
                     .where(VmNicSecurityGroupRef.security_group_uuid.in_(list(group_uuids)),
                            VmNic.ip.is_not(None)))
    for group, ip in rows:
        if ip is not None:
            out[group].append(ip)
    return out


def group_specs(s: Session, group_uuids: Iterable[str]) -> list[km.SecurityGroupSpec]:
    """The groups with their rules, remote groups expanded into their members' addresses."""
    wanted = list(dict.fromkeys(group_uuids))
    rules = list(s.scalars(select(SecurityGroupRule).where(SecurityGroupRule.security_group_uuid.in_(wanted))
                           .order_by(SecurityGroupRule.create_date, SecurityGroupRule.uuid)))
    members = member_ips(s, {r.remote_group_uuid for r in rules if r.remote_group_uuid})
    by_group: dict[str, list[km.SecurityGroupRuleSpec]] = {g: [] for g in wanted}
    for r in rules:
        peers = [f"{ip}/32" for ip in sorted(set(members.get(r.remote_group_uuid, [])))] \
            if r.remote_group_uuid else [r.cidr or "0.0.0.0/0"]
        by_group[r.security_group_uuid] += [km.SecurityGroupRuleSpec(
            direction=r.direction, protocol=r.protocol,  # type: ignore[arg-type]
            port_start=r.port_start, port_end=r.port_end, cidr=peer) for peer in peers]
    return [km.SecurityGroupSpec(uuid=g, rules=by_group[g]) for g in wanted]


def naming(s: Session, group_uuids: Iterable[str]) -> set[str]:
    """Groups with a rule naming one of these groups as its remote group."""
    return set(s.scalars(select(SecurityGroupRule.security_group_uuid).where(
        SecurityGroupRule.remote_group_uuid.in_(list(group_uuids)))))


def vm_groups(s: Session, vm_uuid: str) -> tuple[dict[str, list[str]], list[km.SecurityGroupSpec]]:
    """A VM's NICs in groups (NIC uuid → groups), and those groups' specs: what its start carries.

    Every NIC the controller starts has a filter of its own on the host (``securityGroups``
    a list, empty when in no group), so joining or leaving a group later, and a migration,
    only ever define filters."""
    nics = list(s.scalars(select(VmNic.uuid).where(VmNic.vm_uuid == vm_uuid)))
    groups = groups_of_nics(s, nics)
    return groups, group_specs(s, [g for gs in groups.values() for g in gs])


def push_groups(ctl: Controller, ctx: JobContext, group_uuids: Iterable[str]) -> None:
    """Send these groups' rules to every connected host running a NIC of theirs."""
    wanted = set(group_uuids)
    if not wanted:
        return
    with ctl.db.read() as s:
        rows = s.execute(select(Host, VmNicSecurityGroupRef.security_group_uuid)
                         .join(Vm, Vm.host_uuid == Host.uuid)
                         .join(VmNic, VmNic.vm_uuid == Vm.uuid)
                         .join(VmNicSecurityGroupRef, VmNicSecurityGroupRef.vm_nic_uuid == VmNic.uuid)
                         .where(VmNicSecurityGroupRef.security_group_uuid.in_(wanted),
                                Vm.state.in_(ON_HOST), Host.status == "Connected"))
        by_host: dict[str, tuple[Host, set[str]]] = {}
        for host, group in rows:
            by_host.setdefault(host.uuid, (host, set()))[1].add(group)
        cmds = [(host, km.ApplySecurityGroupsCmd(groups=group_specs(s, sorted(groups))))
                for host, groups in by_host.values()]
    for host, cmd in cmds:
        ctx.call(host.agent_url, cmd, where=f"host {host.uuid}")


def host_command(s: Session, host_uuid: str) -> km.ApplySecurityGroupsCmd | None:
    """Every group NIC running on the host, with its groups: what a reconnected host is sent
    (rules may have changed while it was unreachable)."""
    rows = list(s.scalars(select(VmNic).join(Vm, Vm.uuid == VmNic.vm_uuid)
                          .where(Vm.host_uuid == host_uuid, Vm.state.in_(ON_HOST))))
    groups = groups_of_nics(s, [n.uuid for n in rows])
    nics = [km.NicGroupsSpec(vm_uuid=n.vm_uuid, mac=n.mac, ip=n.ip, security_groups=groups[n.uuid])
            for n in rows if n.uuid in groups]
    if not nics:
        return None
    return km.ApplySecurityGroupsCmd(groups=group_specs(s, [g for n in nics for g in n.security_groups]), nics=nics)


def push_nics(ctl: Controller, ctx: JobContext, nic_uuids: Iterable[str]) -> None:
    """Send these NICs' groups (none: the NIC is open again) to the hosts running their VMs."""
    with ctl.db.read() as s:
        rows = list(s.execute(select(VmNic, Host).join(Vm, Vm.uuid == VmNic.vm_uuid)
                              .join(Host, Host.uuid == Vm.host_uuid)
                              .where(VmNic.uuid.in_(list(nic_uuids)), Vm.state.in_(ON_HOST),
                                     Host.status == "Connected")))
        groups = groups_of_nics(s, [nic.uuid for nic, _ in rows])
        by_host: dict[str, tuple[Host, list[km.NicGroupsSpec]]] = {}
        for nic, host in rows:
            by_host.setdefault(host.uuid, (host, []))[1].append(km.NicGroupsSpec(
                vm_uuid=nic.vm_uuid, mac=nic.mac, ip=nic.ip, security_groups=groups.get(nic.uuid, [])))
        cmds = [(host, km.ApplySecurityGroupsCmd(
            groups=group_specs(s, [g for n in nics for g in n.security_groups]), nics=nics))
            for host, nics in by_host.values()]
    for host, cmd in cmds:
        ctx.call(host.agent_url, cmd, where=f"host {host.uuid}")


def prepare_destination(ctl: Controller, ctx: JobContext, host: HostRef, vm_uuid: str) -> None:
    """Before a VM migrates to ``host``: its NICs' filters there (libvirt needs them to exist)."""
    with ctl.db.read() as s:
        groups, specs = vm_groups(s, vm_uuid)
        nics = list(s.scalars(select(VmNic).where(VmNic.vm_uuid == vm_uuid)))
    if not nics:
        return
    ctx.call(host.agent_url, km.ApplySecurityGroupsCmd(groups=specs, nics=[
        km.NicGroupsSpec(vm_uuid=vm_uuid, mac=n.mac, ip=n.ip, security_groups=groups.get(n.uuid, []))
        for n in nics]), where=f"host {host.uuid}")


def groups_of_vm_nics(s: Session, nic_uuids: Iterable[str]) -> set[str]:
    """Every group these NICs are in."""
    return {g for gs in groups_of_nics(s, nic_uuids).values() for g in gs}


def nics_gone(ctl: Controller, ctx: JobContext, groups: set[str]) -> None:
    """NICs of these groups were deleted: the groups naming them lose their addresses."""
    if not groups:
        return
    with ctl.db.read() as s:
        followers = naming(s, groups)
    push_groups(ctl, ctx, followers)
