"""libvirt domain XML, one small class per element.

Like nova's ``libvirt/config.py``: these classes only turn objects into XML
(``to_xml``) and hold no policy; attributes left ``None`` are left out. Which
bus, cache mode or device name a VM gets is decided in
:mod:`kvmagent.domain_spec`. The kvmcloud metadata element is also parsed back
(:func:`parse_metadata`) so that a restarted agent knows whose domain it sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from lxml import etree

METADATA_NS = "http://kvmcloud.org/xmlns/libvirt/vm/1"
METADATA_PREFIX = "kvmcloud"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str | None) -> etree._Element:
    el = etree.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


def to_string(el: etree._Element) -> str:
    return etree.tostring(el, pretty_print=True, encoding="unicode")


class Device(Protocol):
    """Anything that goes under ``<devices>``."""

    def to_element(self) -> etree._Element: ...


@dataclass
class Metadata:
    """``<metadata><kvmcloud:vm>``: the controller's own names for the domain."""

    vm_uuid: str
    vm_name: str
    owner_uuid: str | None = None

    def to_element(self) -> etree._Element:
        md = etree.Element("metadata")
        vm = etree.SubElement(md, f"{{{METADATA_NS}}}vm", nsmap={METADATA_PREFIX: METADATA_NS})
        for tag, value in (("uuid", self.vm_uuid), ("name", self.vm_name), ("owner", self.owner_uuid)):
            if value is not None:
                etree.SubElement(vm, f"{{{METADATA_NS}}}{tag}").text = value
        return md

    def inner_xml(self) -> str:
        """The ``<kvmcloud:vm>`` element alone (for ``virDomain.setMetadata``)."""
        return etree.tostring(self.to_element()[0], encoding="unicode")


def parse_metadata(domain_xml: str) -> Metadata | None:
    """The kvmcloud metadata of a domain, or None if it is not a kvmcloud VM."""
    root = etree.fromstring(domain_xml.encode())
    vm = root.find(f"metadata/{{{METADATA_NS}}}vm")
    if vm is None:
        return None
    uuid = vm.findtext(f"{{{METADATA_NS}}}uuid")
    if not uuid:
        return None
    return Metadata(
        vm_uuid=uuid,
        vm_name=vm.findtext(f"{{{METADATA_NS}}}name") or "",
        owner_uuid=vm.findtext(f"{{{METADATA_NS}}}owner"),
    )


@dataclass
class Os:
    """``<os>``: firmware type, machine and boot order."""

    arch: str = "x86_64"
    machine: str = "pc"
    boot_devs: list[str] = field(default_factory=lambda: ["hd"])

    def to_element(self) -> etree._Element:
        os_ = etree.Element("os")
        _sub(os_, "type", "hvm", arch=self.arch, machine=self.machine)
        for dev in self.boot_devs:
            _sub(os_, "boot", dev=dev)
        return os_


@dataclass
class DiskHost:
    name: str
    port: int | None = None

    def to_element(self) -> etree._Element:
        return etree.Element("host", {"name": self.name, **({"port": str(self.port)} if self.port else {})})


@dataclass
class Disk:
    """``<disk>``: a file or network (RBD) disk, or a CD-ROM drive."""

    target_dev: str
    target_bus: str
    source_type: str = "file"  # file | network
    device: str = "disk"  # disk | cdrom
    driver_type: str | None = "qcow2"
    cache: str | None = None
    source_file: str | None = None
    source_protocol: str | None = None
    source_name: str | None = None
    hosts: list[DiskHost] = field(default_factory=list)
    auth_username: str | None = None
    secret_uuid: str | None = None
    serial: str | None = None
    readonly: bool = False

    def to_element(self) -> etree._Element:
        disk = etree.Element("disk", {"type": self.source_type, "device": self.device})
        _sub(disk, "driver", name="qemu", type=self.driver_type, cache=self.cache)
        if self.auth_username is not None and self.secret_uuid is not None:
            auth = _sub(disk, "auth", username=self.auth_username)
            _sub(auth, "secret", type="ceph", uuid=self.secret_uuid)
        if self.source_type == "file":
            if self.source_file is not None:
                _sub(disk, "source", file=self.source_file)
        else:
            src = _sub(disk, "source", protocol=self.source_protocol, name=self.source_name)
            for h in self.hosts:
                src.append(h.to_element())
        _sub(disk, "target", dev=self.target_dev, bus=self.target_bus)
        if self.serial is not None:
            _sub(disk, "serial", self.serial)
        if self.readonly:
            _sub(disk, "readonly")
        return disk


@dataclass
class FilterRef:
    """``<filterref>``: the nwfilter of a NIC, with its parameters (``IP``...)."""

    filter: str
    parameters: list[tuple[str, str]] = field(default_factory=list)

    def to_element(self) -> etree._Element:
        ref = etree.Element("filterref", {"filter": self.filter})
        for name, value in self.parameters:
            _sub(ref, "parameter", name=name, value=value)
        return ref


@dataclass
class Interface:
    """``<interface type='bridge'>``: a NIC on a Linux bridge."""

    mac: str
    bridge: str
    model: str = "virtio"
    target_dev: str | None = None
    mtu: int | None = None
    filterref: FilterRef | None = None

    def to_element(self) -> etree._Element:
        nic = etree.Element("interface", {"type": "bridge"})
        _sub(nic, "mac", address=self.mac)
        _sub(nic, "source", bridge=self.bridge)
        if self.target_dev is not None:
            _sub(nic, "target", dev=self.target_dev)
        _sub(nic, "model", type=self.model)
        if self.mtu is not None:
            _sub(nic, "mtu", size=str(self.mtu))
        if self.filterref is not None:
            nic.append(self.filterref.to_element())
        return nic


@dataclass
class Graphics:
    """``<graphics type='vnc'>`` with an automatically chosen port."""

    listen: str = "127.0.0.1"
    passwd: str | None = None

    def to_element(self) -> etree._Element:
        g = etree.Element("graphics", {"type": "vnc", "port": "-1", "autoport": "yes", "listen": self.listen})
        if self.passwd is not None:
            g.set("passwd", self.passwd)
        _sub(g, "listen", type="address", address=self.listen)
        return g


@dataclass
class SerialFile:
    """``<serial type='file'>``: the first serial port logged to a file.

    With qemu.conf's ``stdio_handler = "logd"`` (libvirt's default, which the
    kvmagent role and the test environment set explicitly) libvirt hands the
    file to virtlogd, not QEMU, which rotates it at its ``max_size`` keeping
    ``max_backups`` old files, so a guest flooding its console cannot fill the
    host's disk. ``append='on'`` so a migration or restart does not truncate
    the log.
    """

    path: str

    def to_element(self) -> etree._Element:
        s = etree.Element("serial", {"type": "file"})
        _sub(s, "source", path=self.path, append="on")
        _sub(s, "target", port="0")
        return s


@dataclass
class MemBalloon:
    model: str = "none"

    def to_element(self) -> etree._Element:
        return etree.Element("memballoon", {"model": self.model})


@dataclass
class Domain:
    """``<domain>``: the whole VM."""

    type: str
    name: str
    uuid: str
    memory_kib: int
    vcpu: int
    os: Os
    metadata: Metadata | None = None
    devices: list[Device] = field(default_factory=list)
    acpi: bool = True
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"

    def to_element(self) -> etree._Element:
        dom = etree.Element("domain", {"type": self.type})
        _sub(dom, "name", self.name)
        _sub(dom, "uuid", self.uuid)
        if self.metadata is not None:
            dom.append(self.metadata.to_element())
        _sub(dom, "memory", str(self.memory_kib), unit="KiB")
        _sub(dom, "currentMemory", str(self.memory_kib), unit="KiB")
        _sub(dom, "vcpu", str(self.vcpu), placement="static")
        dom.append(self.os.to_element())
        features = _sub(dom, "features")
        if self.acpi:
            _sub(features, "acpi")
            _sub(features, "apic")
        _sub(dom, "clock", offset="utc")
        _sub(dom, "on_poweroff", self.on_poweroff)
        _sub(dom, "on_reboot", self.on_reboot)
        _sub(dom, "on_crash", self.on_crash)
        devices = _sub(dom, "devices")
        for dev in self.devices:
            devices.append(dev.to_element())
        return dom

    def to_xml(self) -> str:
        return to_string(self.to_element())


@dataclass
class DiskSnapshot:
    """``<domainsnapshot>`` for an external, disk-only snapshot of one disk.

    Every other disk is listed with ``snapshot='no'`` so only ``target`` moves
    to the new overlay.
    """

    target: str
    new_file: str
    other_targets: list[str] = field(default_factory=list)

    def to_element(self) -> etree._Element:
        snap = etree.Element("domainsnapshot")
        disks = _sub(snap, "disks")
        disk = _sub(disks, "disk", name=self.target, snapshot="external", type="file")
        _sub(disk, "driver", type="qcow2")
        _sub(disk, "source", file=self.new_file)
        for other in self.other_targets:
            _sub(disks, "disk", name=other, snapshot="no")
        return snap

    def to_xml(self) -> str:
        return to_string(self.to_element())
