"""Security groups on the host: libvirt nwfilters, one per group and one per NIC.

Why nwfilter and not a hand-kept nftables ruleset: the NICs already sit
behind kvmcloud's anti-spoofing nwfilter, and libvirt owns the firewall rules
of every tap it creates. A filter redefined with ``nwfilterDefineXML`` is
rebuilt by libvirt on every running NIC that references it, at once and
atomically per NIC; rules follow a VM through a restart of libvirtd and are
torn down with its tap. So a rule change is one define per group and a
membership change one define per NIC, with no reboot, and nothing of ours
has to track tap names.

- ``kvmcloud-sg-<group>``: the group's allow rules. Ingress rules accept
  traffic into the VM from their CIDR (to their ports), egress rules traffic
  out of it. libvirt's connection tracking (``statematch``, on by default)
  lets the answers to an allowed connection through in the other direction.
- ``kvmcloud-sg-base``: DHCP with the network's server stays allowed, then
  everything else is dropped, both ways. New groups get an allow-all egress
  rule from the controller, so the default is: ingress denied, egress allowed.
- ``kvmcloud-nic-<mac>``: what one NIC references (``<filterref>`` of its
  ``<interface>``): the anti-spoofing filter, then its groups and the base.
  A NIC in no group references the anti-spoofing filter only: all traffic
  that is not spoofed passes, as before security groups existed.

libvirt refuses to redefine a filter under another UUID, so each filter's
UUID is derived from its name.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Iterable

import libvirt
from lxml import etree

from kvmagent.models import NicGroupsSpec, NicSpec, SecurityGroupRuleSpec, SecurityGroupSpec
from kvmagent.nwfilter import NIC_FILTER, Filter, Rule

log = logging.getLogger(__name__)

BASE_FILTER = "kvmcloud-sg-base"
GROUP_PREFIX = "kvmcloud-sg-"
NIC_PREFIX = "kvmcloud-nic-"
_NAMESPACE = uuid.UUID("5f0c7a1e-3b8d-4c2a-9e61-0d4b7c2f1a00")
RULE_PRIORITY = 500
DHCP_PRIORITY = 300
DROP_PRIORITY = 900


def _filter_uuid(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name))


def group_filter_name(group_uuid: str) -> str:
    return GROUP_PREFIX + str(uuid.UUID(group_uuid))


def nic_filter_name(mac: str) -> str:
    return NIC_PREFIX + mac.replace(":", "").lower()


def base_filter() -> Filter:
    """DHCP with the network's server, then drop whatever no group allowed."""
    return Filter(BASE_FILTER, _filter_uuid(BASE_FILTER), rules=[
        Rule("accept", "out", DHCP_PRIORITY, "udp", {"srcportstart": "68", "dstportstart": "67"}),
        Rule("accept", "in", DHCP_PRIORITY, "udp", {"srcportstart": "67", "dstportstart": "68"}),
        Rule("drop", "inout", DROP_PRIORITY, "all"),
    ])


def _rule(r: SecurityGroupRuleSpec) -> Rule:
    ingress = r.direction == "ingress"
    match: dict[str, str] = {}
    net = ipaddress.IPv4Network(r.cidr)
    if net.prefixlen:
        side = "src" if ingress else "dst"
        match[f"{side}ipaddr"] = str(net.network_address)
        match[f"{side}ipmask"] = str(net.prefixlen)
    if r.port_start is not None:
        match["dstportstart"] = str(r.port_start)
        match["dstportend"] = str(r.port_end if r.port_end is not None else r.port_start)
    return Rule("accept", "in" if ingress else "out", RULE_PRIORITY, r.protocol, match)


def group_filter(group: SecurityGroupSpec) -> Filter:
    name = group_filter_name(group.uuid)
    return Filter(name, _filter_uuid(name), rules=[_rule(r) for r in group.rules])


def nic_filter(mac: str, group_uuids: Iterable[str], *, anti_spoofing: bool = True) -> Filter:
    name = nic_filter_name(mac)
    refs = [NIC_FILTER] if anti_spoofing else []
    groups = [group_filter_name(g) for g in group_uuids]
    if groups:
        refs += [*groups, BASE_FILTER]
    return Filter(name, _filter_uuid(name), refs=refs)


def define_groups(conn: libvirt.virConnect, groups: Iterable[SecurityGroupSpec]) -> list[str]:
    """Define (or update) the base filter and these groups' filters; their names."""
    names = []
    for f in [base_filter(), *(group_filter(g) for g in groups)]:
        conn.nwfilterDefineXML(f.to_xml())
        names.append(f.name)
    return names[1:]


def define_nic(conn: libvirt.virConnect, nic: NicGroupsSpec, *, anti_spoofing: bool = True) -> str:
    """Define (or update) one NIC's filter; its groups must be defined already."""
    f = nic_filter(nic.mac, nic.security_groups, anti_spoofing=anti_spoofing)
    conn.nwfilterDefineXML(f.to_xml())
    return f.name


def undefine(conn: libvirt.virConnect, names: Iterable[str], *, in_use_ok: bool) -> list[str]:
    """Remove these filters; absent ones are skipped. Returns the ones still in use
    (libvirt refuses to remove those), raising instead unless ``in_use_ok``."""
    busy = []
    for name in names:
        try:
            conn.nwfilterLookupByName(name).undefine()
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_NWFILTER:
                continue
            if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or not in_use_ok:
                raise
            log.info("nwfilter %s is still in use: kept", name)
            busy.append(name)
    return busy


def nic_filters_of(domain: etree._Element) -> list[str]:
    """The per-NIC filters a domain's interfaces reference."""
    return [str(f.get("filter")) for f in domain.iterfind("devices/interface/filterref")
            if str(f.get("filter", "")).startswith(NIC_PREFIX)]


def nics_with_groups(vm_uuid: str, nics: Iterable[NicSpec], *, anti_spoofing: bool = True) -> list[NicGroupsSpec]:
    """The NICs of a VM spec that get a filter of their own (see ``domain_spec.interface_for``):
    ``securityGroups`` not null, and not empty on a host without anti-spoofing (whose
    libvirt may have no nwfilter driver: a NIC in no group needs no filter there)."""
    return [NicGroupsSpec(vm_uuid=vm_uuid, mac=n.mac, ip=n.ip, security_groups=n.security_groups)
            for n in nics if n.security_groups or (n.security_groups is not None and anti_spoofing)]


def prepare(conn: libvirt.virConnect, groups: list[SecurityGroupSpec], nics: list[NicGroupsSpec], *,
            anti_spoofing: bool = True) -> None:
    """Define what these NICs' ``<filterref>`` needs before the domain or NIC is created."""
    if not nics:
        return
    define_groups(conn, groups)
    for nic in nics:
        define_nic(conn, nic, anti_spoofing=anti_spoofing)
