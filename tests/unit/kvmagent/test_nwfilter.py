"""The anti-spoofing nwfilters: golden files, libvirt's RelaxNG schema, and
how they are defined on a libvirtd (a fake connection: no libvirtd here)."""

from __future__ import annotations

import os
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmagent.nwfilter import NIC_FILTER, NO_DHCP_SERVER, Filter, define_filters, kvmcloud_filters

GOLDEN = Path(__file__).parent / "golden"
SCHEMAS = Path("/usr/share/libvirt/schemas")


@pytest.mark.parametrize("f", kvmcloud_filters(), ids=lambda f: f.name)
def test_filter_xml_matches_its_golden_file_and_libvirts_schema(f: Filter) -> None:
    golden = GOLDEN / f"nwfilter-{f.name}.xml"
    if os.environ.get("KVMCLOUD_REGOLD"):
        golden.write_text(f.to_xml())
    assert f.to_xml() == golden.read_text()
    rng = etree.RelaxNG(etree.parse(str(SCHEMAS / "nwfilter.rng")))
    assert rng.validate(etree.fromstring(f.to_xml().encode())), rng.error_log


def test_the_nic_filter_is_clean_traffic_plus_no_dhcp_server() -> None:
    by_name = {f.name: f for f in kvmcloud_filters()}
    assert by_name[NIC_FILTER].refs == ["clean-traffic", NO_DHCP_SERVER]
    [rule] = by_name[NO_DHCP_SERVER].rules
    assert (rule.action, rule.direction, rule.match) == ("drop", "out", {"protocol": "udp", "srcportstart": "67"})
    # referenced filters come first, so each define finds what it names
    assert [f.name for f in kvmcloud_filters()] == [NO_DHCP_SERVER, NIC_FILTER]


class FakeConn:
    def __init__(self, missing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.missing = missing
        self.defined: list[str] = []

    def nwfilterLookupByName(self, name: str) -> object:
        if name in self.missing:
            raise libvirt.libvirtError(f"Network filter not found: no nwfilter with matching name '{name}'")
        return object()

    def nwfilterDefineXML(self, xml: str) -> object:
        self.defined.append(etree.fromstring(xml.encode()).get("name"))
        return object()


def test_define_filters_defines_both_in_order() -> None:
    conn = FakeConn()
    define_filters(conn)
    assert conn.defined == [NO_DHCP_SERVER, NIC_FILTER]


def test_without_clean_traffic_nothing_is_defined_and_the_agent_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    conn = FakeConn(missing={"clean-traffic"})
    define_filters(conn)
    assert conn.defined == []
    assert "clean-traffic" in caplog.text
