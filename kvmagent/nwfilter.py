"""Anti-spoofing for VM NICs: the libvirt nwfilters kvmcloud defines.

Every VM NIC references :data:`NIC_FILTER`, which is libvirt's own
``clean-traffic`` (no MAC, IP or ARP spoofing, no non-IPv4 L2 traffic) plus
one rule libvirt does not ship: a guest may not answer as a DHCP server
(UDP from port 67). The NIC's allocated address goes in as the ``IP``
parameter; without one, libvirt learns the address from the guest's first
packet (its ``CTRL_IP_LEARNING=any`` default).

libvirt identifies a filter by UUID and refuses a redefinition under another
UUID, so the UUIDs below are fixed. Defining an unchanged filter is a no-op
for libvirt; a changed one is rebuilt on every running NIC that uses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import libvirt
from lxml import etree

from kvmagent.domain_xml import to_string

log = logging.getLogger(__name__)

NIC_FILTER = "kvmcloud-clean-traffic"
NO_DHCP_SERVER = "kvmcloud-no-dhcp-server"
# the filters kvmcloud's own filters build on (package libvirt-daemon-config-nwfilter)
LIBVIRT_FILTERS = ("clean-traffic",)


@dataclass
class Rule:
    """``<rule>`` with one protocol element, e.g. ``<ip protocol='udp' srcportstart='67'/>``."""

    action: str
    direction: str
    priority: int
    protocol: str
    match: dict[str, str] = field(default_factory=dict)

    def to_element(self) -> etree._Element:
        rule = etree.Element("rule", {"action": self.action, "direction": self.direction,
                                      "priority": str(self.priority)})
        etree.SubElement(rule, self.protocol, self.match)
        return rule


@dataclass
class Filter:
    """``<filter>``: references to other filters and rules, in one chain."""

    name: str
    uuid: str
    chain: str = "root"
    priority: int | None = None
    refs: list[str] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    def to_element(self) -> etree._Element:
        f = etree.Element("filter", {"name": self.name, "chain": self.chain})
        if self.priority is not None:
            f.set("priority", str(self.priority))
        etree.SubElement(f, "uuid").text = self.uuid
        for ref in self.refs:
            etree.SubElement(f, "filterref", {"filter": ref})
        for rule in self.rules:
            f.append(rule.to_element())
        return f

    def to_xml(self) -> str:
        return to_string(self.to_element())


def kvmcloud_filters() -> list[Filter]:
    """kvmcloud's filters, each after the filters it references."""
    # chain 'ipv4-*' at -705: after no-ip-spoofing (-710) dropped forged sources,
    # before clean-traffic's "accept all outgoing IPv4" (-650) in the root chain
    no_dhcp_server = Filter(
        name=NO_DHCP_SERVER, uuid="5f0c7a1e-3b8d-4c2a-9e61-0d4b7c2f1a01", chain="ipv4-dhcpsrv", priority=-705,
        rules=[Rule("drop", "out", 100, "ip", {"protocol": "udp", "srcportstart": "67"})],
    )
    nic = Filter(name=NIC_FILTER, uuid="5f0c7a1e-3b8d-4c2a-9e61-0d4b7c2f1a02",
                 refs=["clean-traffic", NO_DHCP_SERVER])
    return [no_dhcp_server, nic]


def define_filters(conn: libvirt.virConnect) -> None:
    """Define (or update) kvmcloud's filters on this libvirtd; called on every connect.

    A libvirtd without the nwfilter driver or without ``clean-traffic`` is
    logged, not raised: VM starts then fail with libvirt's own message.
    """
    try:
        for name in LIBVIRT_FILTERS:
            conn.nwfilterLookupByName(name)
        for f in kvmcloud_filters():
            conn.nwfilterDefineXML(f.to_xml())
    except libvirt.libvirtError as e:
        log.error("cannot define the NIC anti-spoofing filters (is the libvirt nwfilter driver "
                  "with clean-traffic installed?): %s", e)
