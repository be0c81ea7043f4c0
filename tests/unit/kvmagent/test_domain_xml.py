"""Domain XML: golden files for representative specs, libvirt's RelaxNG schema,
and the kvmcloud metadata read back from the XML."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lxml import etree

from kvmagent.domain_spec import build_domain
from kvmagent.domain_xml import DiskSnapshot, parse_metadata
from kvmagent.models import StartVmCmd
from tests.unit.kvmagent.specs import OWNER, SPECS, VM, big_spec

GOLDEN = Path(__file__).parent / "golden"
SCHEMAS = Path("/usr/share/libvirt/schemas")
CONSOLE = Path("/var/log/kvmcloud/console/0f6f1a325b434c1e9a7e2f4b1c2d3e4f.log")


@pytest.fixture(scope="module")
def domain_rng() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMAS / "domain.rng")))


def xml_of(spec: dict, domain_type: str = "kvm") -> str:  # type: ignore[type-arg]
    return build_domain(StartVmCmd.model_validate(spec), domain_type=domain_type, console_log=CONSOLE).to_xml()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_domain_xml_matches_its_golden_file(name: str) -> None:
    xml = xml_of(SPECS[name])
    golden = GOLDEN / f"{name}.xml"
    if os.environ.get("KVMCLOUD_REGOLD"):
        golden.write_text(xml)
    assert xml == golden.read_text()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_domain_xml_is_valid_for_libvirt(name: str, domain_rng: etree.RelaxNG) -> None:
    doc = etree.fromstring(xml_of(SPECS[name]).encode())
    assert domain_rng.validate(doc), domain_rng.error_log


def test_the_big_domain_is_valid_and_names_disks_by_device_id(domain_rng: etree.RelaxNG) -> None:
    doc = etree.fromstring(xml_of(big_spec(), "qemu").encode())
    assert domain_rng.validate(doc), domain_rng.error_log
    targets = [t.get("dev") for t in doc.findall("devices/disk[@device='disk']/target")]
    assert targets == [f"vd{chr(ord('a') + i)}" for i in range(16)]
    assert len(doc.findall("devices/interface")) == 8
    assert doc.get("type") == "qemu"


def test_metadata_round_trips_through_the_domain_xml() -> None:
    md = parse_metadata(xml_of(SPECS["file_disks"]))
    assert md is not None
    assert (md.vm_uuid, md.vm_name, md.owner_uuid) == (VM, "web-1", OWNER)


def test_a_domain_without_kvmcloud_metadata_is_not_ours() -> None:
    assert parse_metadata("<domain type='qemu'><name>other</name></domain>") is None


def test_unset_attributes_are_left_out() -> None:
    doc = etree.fromstring(xml_of(SPECS["file_disks"]).encode())
    assert doc.find("devices/graphics") is None  # vnc: null
    assert doc.find("devices/interface") is None
    cdrom = doc.find("devices/disk[@device='cdrom']")
    assert cdrom is not None and cdrom.find("source") is None  # an empty drive for later ISO attach


def test_disk_snapshot_lists_every_other_disk_as_not_snapshotted() -> None:
    doc = etree.fromstring(DiskSnapshot("vdb", "/s/v1.s1.qcow2", ["vda", "hdc"]).to_xml().encode())
    disks = {d.get("name"): d.get("snapshot") for d in doc.findall("disks/disk")}
    assert disks == {"vdb": "external", "vda": "no", "hdc": "no"}
    assert doc.find("disks/disk[@name='vdb']/source").get("file") == "/s/v1.s1.qcow2"
    rng = etree.RelaxNG(etree.parse(str(SCHEMAS / "domainsnapshot.rng")))
    assert rng.validate(doc), rng.error_log
