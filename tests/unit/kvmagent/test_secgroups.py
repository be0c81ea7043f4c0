"""Security group filters: the XML libvirt gets (its RelaxNG schema), how rules
map to nwfilter rules, what a NIC references, the order of defines, and the
command bodies' validation."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest
from lxml import etree
from pydantic import ValidationError

from kvmagent import secgroups
from kvmagent.domain_spec import interface_for
from kvmagent.models import (
    ApplySecurityGroupsCmd,
    NicGroupsSpec,
    NicSpec,
    SecurityGroupRuleSpec,
    SecurityGroupSpec,
    StartVmCmd,
)
from kvmagent.nwfilter import NIC_FILTER

SCHEMAS = Path("/usr/share/libvirt/schemas")
G1 = "11111111-2222-3333-4444-555555555555"
G2 = "66666666-7777-8888-9999-000000000000"
MAC = "52:54:00:aa:bb:01"


def _group(uuid: str, *rules: dict[str, object]) -> SecurityGroupSpec:
    return SecurityGroupSpec.model_validate({"uuid": uuid, "rules": list(rules)})


def _valid(xml: str) -> None:
    rng = etree.RelaxNG(etree.parse(str(SCHEMAS / "nwfilter.rng")))
    assert rng.validate(etree.fromstring(xml.encode())), rng.error_log


def test_rules_become_accepts_in_their_direction_with_peer_and_ports() -> None:
    g = _group(G1,
               {"direction": "ingress", "protocol": "tcp", "portStart": 22, "cidr": "10.0.0.0/8"},
               {"direction": "ingress", "protocol": "udp", "portStart": 5000, "portEnd": 5010},
               {"direction": "egress", "protocol": "all"},
               {"direction": "egress", "protocol": "icmp", "cidr": "192.168.1.7/32"})
    f = secgroups.group_filter(g)
    assert f.name == f"kvmcloud-sg-{G1}"
    assert [(r.action, r.direction, r.protocol, r.match) for r in f.rules] == [
        ("accept", "in", "tcp", {"srcipaddr": "10.0.0.0", "srcipmask": "8",
                                  "dstportstart": "22", "dstportend": "22"}),
        ("accept", "in", "udp", {"dstportstart": "5000", "dstportend": "5010"}),
        ("accept", "out", "all", {}),
        ("accept", "out", "icmp", {"dstipaddr": "192.168.1.7", "dstipmask": "32"}),
    ]
    _valid(f.to_xml())


def test_the_base_filter_keeps_dhcp_and_drops_the_rest_after_every_group_rule() -> None:
    base = secgroups.base_filter()
    _valid(base.to_xml())
    drop = base.rules[-1]
    assert (drop.action, drop.direction, drop.protocol) == ("drop", "inout", "all")
    assert all(r.priority < drop.priority for r in base.rules[:-1])
    assert secgroups.RULE_PRIORITY < drop.priority


def test_a_nic_filter_references_anti_spoofing_its_groups_then_the_base() -> None:
    f = secgroups.nic_filter(MAC, [G1, G2])
    assert f.name == "kvmcloud-nic-525400aabb01"
    assert f.refs == [NIC_FILTER, f"kvmcloud-sg-{G1}", f"kvmcloud-sg-{G2}", secgroups.BASE_FILTER]
    _valid(f.to_xml())
    # in no group: the anti-spoofing filter only, so nothing is denied
    assert secgroups.nic_filter(MAC, []).refs == [NIC_FILTER]
    assert secgroups.nic_filter(MAC, [G1], anti_spoofing=False).refs == [f"kvmcloud-sg-{G1}",
                                                                         secgroups.BASE_FILTER]


def test_filter_uuids_are_stable_per_name() -> None:
    # libvirt refuses a redefinition under another UUID
    a, b = secgroups.group_filter(_group(G1)), secgroups.group_filter(_group(G1.replace("-", "")))
    assert a.name == b.name and a.uuid == b.uuid
    assert a.uuid != secgroups.group_filter(_group(G2)).uuid


def test_a_nic_in_groups_references_its_own_filter_with_its_address() -> None:
    nic = NicSpec.model_validate({"mac": MAC, "bridgeName": "br0", "ip": "10.1.0.5", "securityGroups": [G1]})
    ref = interface_for(nic).filterref
    assert ref is not None and ref.filter == "kvmcloud-nic-525400aabb01" and ref.parameters == [("IP", "10.1.0.5")]
    plain = interface_for(NicSpec.model_validate({"mac": MAC, "bridgeName": "br0"})).filterref
    assert plain is not None and plain.filter == NIC_FILTER
    # no anti-spoofing (perhaps no nwfilter driver): a NIC in no group has no filter at all
    open_nic = NicSpec.model_validate({"mac": MAC, "bridgeName": "br0", "securityGroups": []})
    assert interface_for(open_nic, anti_spoofing=False).filterref is None
    assert secgroups.nics_with_groups(G2, [open_nic], anti_spoofing=False) == []
    assert [n.mac for n in secgroups.nics_with_groups(G2, [open_nic])] == [MAC]


class FakeConn:
    def __init__(self, in_use: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.defined: list[str] = []
        self.undefined: list[str] = []
        self.in_use = in_use

    def nwfilterDefineXML(self, xml: str) -> object:
        self.defined.append(etree.fromstring(xml.encode()).get("name"))
        return object()

    def nwfilterLookupByName(self, name: str) -> object:
        conn = self

        class F:
            def undefine(self) -> None:
                if name in conn.in_use:
                    e = libvirt.libvirtError("nwfilter is in use")
                    e.err = (libvirt.VIR_ERR_OPERATION_INVALID, 0, "in use", 0, "", "", None, 0, 0)
                    raise e
                conn.undefined.append(name)

        if name.endswith("absent"):
            e = libvirt.libvirtError("no nwfilter")
            e.err = (libvirt.VIR_ERR_NO_NWFILTER, 0, "no nwfilter", 0, "", "", None, 0, 0)
            raise e
        return F()


def test_prepare_defines_what_a_nic_references_before_the_nic_filter() -> None:
    conn = FakeConn()
    nics = [NicGroupsSpec(vm_uuid=G2, mac=MAC, security_groups=[G1])]
    secgroups.prepare(conn, [_group(G1)], nics)  # type: ignore[arg-type]
    assert conn.defined == [secgroups.BASE_FILTER, f"kvmcloud-sg-{G1}", "kvmcloud-nic-525400aabb01"]
    idle = FakeConn()
    secgroups.prepare(idle, [], [])  # type: ignore[arg-type]
    assert idle.defined == []


def test_undefine_skips_absent_filters_and_reports_or_refuses_busy_ones() -> None:
    conn = FakeConn(in_use={"busy"})
    assert secgroups.undefine(conn, ["a", "x-absent", "busy"], in_use_ok=True) == ["busy"]  # type: ignore[arg-type]
    assert conn.undefined == ["a"]
    with pytest.raises(libvirt.libvirtError):
        secgroups.undefine(conn, ["busy"], in_use_ok=False)  # type: ignore[arg-type]


def test_nic_filters_of_a_domain() -> None:
    dom = etree.fromstring(b"<domain><devices>"
                           b"<interface><filterref filter='kvmcloud-nic-525400aabb01'/></interface>"
                           b"<interface><filterref filter='kvmcloud-clean-traffic'/></interface>"
                           b"<interface/></devices></domain>")
    assert secgroups.nic_filters_of(dom) == ["kvmcloud-nic-525400aabb01"]


@pytest.mark.parametrize(("rule", "field"), [
    ({"direction": "ingress", "protocol": "icmp", "portStart": 1}, "portStart and portEnd are only"),
    ({"direction": "ingress", "protocol": "tcp", "portEnd": 80}, "portEnd needs portStart"),
    ({"direction": "ingress", "protocol": "tcp", "portStart": 90, "portEnd": 80}, "must not be below"),
    ({"direction": "ingress", "protocol": "tcp", "cidr": "10.0.0.1/8"}, "cidr"),
    ({"direction": "sideways", "protocol": "tcp"}, "direction"),
    ({"direction": "ingress", "protocol": "sctp"}, "protocol"),
    ({"direction": "ingress", "protocol": "tcp", "portStart": 0}, "portStart"),
])
def test_bad_rules_are_refused_naming_the_problem(rule: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        SecurityGroupRuleSpec.model_validate(rule)


def test_a_nic_naming_a_group_without_its_rules_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"nics\[0\].securityGroups: .* is not in groups"):
        ApplySecurityGroupsCmd.model_validate(
            {"nics": [{"vmUuid": G2, "mac": MAC, "securityGroups": [G1]}]})
    body = {"vmUuid": G2, "vmName": "v", "cpuNum": 1, "memorySize": 64 << 20,
            "rootVolume": {"type": "file", "volumeUuid": G1, "installPath": "/tmp/x.qcow2", "deviceId": 0},
            "nics": [{"mac": MAC, "bridgeName": "br0", "securityGroups": [G1]}]}
    with pytest.raises(ValidationError, match="is not in securityGroups"):
        StartVmCmd.model_validate(body)
    StartVmCmd.model_validate({**body, "securityGroups": [{"uuid": G1.replace("-", ""), "rules": []}]})
