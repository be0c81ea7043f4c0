"""The narrow seam between the kvmagent's commands and libvirt.

Everything the plugins ask of libvirt goes through :class:`Hypervisor`: look
up, start, stop and query domains, hot-plug devices. Unit tests run it on
libvirt's ``test:///default`` driver; integration tests on ``qemu:///system``.
Domains are transient (``createXML``): a stopped VM leaves nothing defined,
and the controller's database, not the host, keeps VM definitions.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import libvirt
from lxml import etree

from agentcore.errors import NotFound
from kvmagent.connection import HypervisorUnavailable, LibvirtConnection
from kvmagent.domain_spec import domain_name
from kvmagent.domain_xml import Metadata, parse_metadata
from kvmagent.libvirt_errors import translate
from kvmagent.models import VmState

log = logging.getLogger(__name__)
T = TypeVar("T")

_STATES: dict[int, VmState] = {
    libvirt.VIR_DOMAIN_NOSTATE: "Unknown",
    libvirt.VIR_DOMAIN_RUNNING: "Running",
    libvirt.VIR_DOMAIN_BLOCKED: "Running",
    libvirt.VIR_DOMAIN_PAUSED: "Paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "Running",  # shutting down: still running
    libvirt.VIR_DOMAIN_SHUTOFF: "Stopped",
    libvirt.VIR_DOMAIN_CRASHED: "Crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "Paused",
}


@dataclass(frozen=True)
class DomainInfo:
    """What the host knows about one kvmcloud domain."""

    vm_uuid: str
    name: str
    state: VmState
    vcpus: int
    memory: int  # bytes


def vm_state(dom: libvirt.virDomain) -> VmState:
    """The kvmcloud state of a domain; a domain that vanished is Stopped."""
    try:
        state, _reason = dom.state()
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return "Stopped"
        raise
    return _STATES.get(state, "Unknown")


class Hypervisor:
    """VM-level operations on one libvirtd."""

    def __init__(self, conn: LibvirtConnection) -> None:
        self.conn = conn

    # -- plumbing ---------------------------------------------------------

    @contextmanager
    def _errors(self, **details: Any) -> Iterator[None]:
        try:
            yield
        except libvirt.libvirtError as e:
            err = translate(e, **details)
            if isinstance(err, HypervisorUnavailable):
                self.conn.lost()
            raise err from None

    def call(self, fn: Callable[[libvirt.virConnect], T], **details: Any) -> T:
        """Run ``fn(conn)`` and turn libvirt errors into command errors."""
        with self._errors(**details):
            return fn(self.conn.get())

    def lookup(self, vm_uuid: str) -> libvirt.virDomain | None:
        """The domain of a VM, or None if libvirt has none."""
        conn = self.conn.get()
        try:
            return conn.lookupByName(domain_name(vm_uuid))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            with self._errors(vm_uuid=vm_uuid):
                raise

    def require(self, vm_uuid: str) -> libvirt.virDomain:
        dom = self.lookup(vm_uuid)
        if dom is None or vm_state(dom) == "Stopped":
            raise NotFound("the VM is not running on this host", vm_uuid=vm_uuid)
        return dom

    def state_of(self, dom: libvirt.virDomain) -> VmState:
        with self._errors(domain=dom.name()):
            return vm_state(dom)

    def state(self, vm_uuid: str) -> VmState:
        dom = self.lookup(vm_uuid)
        if dom is None:
            return "Stopped"
        with self._errors(vm_uuid=vm_uuid):
            return vm_state(dom)

    # -- life cycle -------------------------------------------------------

    def create(self, xml: str, *, paused: bool = False) -> libvirt.virDomain:
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        with self._errors():
            return self.conn.get().createXML(xml, flags)

    def shutdown(self, dom: libvirt.virDomain) -> None:
        with self._errors(domain=dom.name()):
            if vm_state(dom) != "Stopped":
                dom.shutdown()  # ACPI power button on QEMU

    def destroy(self, dom: libvirt.virDomain) -> None:
        """Power off at once; a domain already gone is fine."""
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                with self._errors(domain=dom.name()):
                    raise
        try:
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                log.warning("undefine of %s failed: %s", dom.name(), e)

    def reboot(self, dom: libvirt.virDomain, *, force: bool) -> None:
        with self._errors(domain=dom.name()):
            if force:
                dom.reset(0)
            else:
                dom.reboot(0)  # ACPI first on QEMU

    def suspend(self, dom: libvirt.virDomain) -> None:
        with self._errors(domain=dom.name()):
            if vm_state(dom) != "Paused":
                dom.suspend()

    def resume(self, dom: libvirt.virDomain) -> None:
        with self._errors(domain=dom.name()):
            if vm_state(dom) == "Paused":
                dom.resume()

    # -- inventory --------------------------------------------------------

    def metadata(self, dom: libvirt.virDomain) -> Metadata | None:
        with self._errors(domain=dom.name()):
            return parse_metadata(dom.XMLDesc(0))

    def domains(self) -> list[DomainInfo]:
        """Every kvmcloud domain libvirt knows, with its state."""
        out: list[DomainInfo] = []
        with self._errors():
            for dom in self.conn.get().listAllDomains(0):
                try:
                    xml = dom.XMLDesc(0)
                    state, _ = dom.state()
                    _s, max_mem_kib, _mem, vcpus, _t = dom.info()
                except libvirt.libvirtError as e:
                    if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        continue  # went away while listing
                    raise
                md = parse_metadata(xml)
                if md is None:
                    continue
                out.append(DomainInfo(md.vm_uuid, dom.name(), _STATES.get(state, "Unknown"),
                                      vcpus, max_mem_kib * 1024))
        return out

    def xml_of(self, dom: libvirt.virDomain) -> etree._Element:
        with self._errors(domain=dom.name()):
            return etree.fromstring(dom.XMLDesc(0).encode())

    def vnc_port(self, dom: libvirt.virDomain) -> tuple[str, int]:
        g = self.xml_of(dom).find("devices/graphics[@type='vnc']")
        if g is None:
            raise NotFound("the VM has no VNC console", domain=dom.name())
        return g.get("listen") or "127.0.0.1", int(g.get("port") or -1)

    # -- devices ----------------------------------------------------------

    def _live_flags(self, dom: libvirt.virDomain) -> int:
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
        if dom.isPersistent():
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        return flags

    def attach(self, dom: libvirt.virDomain, device_xml: str) -> None:
        with self._errors(domain=dom.name()):
            dom.attachDeviceFlags(device_xml, self._live_flags(dom))

    def detach(self, dom: libvirt.virDomain, device_xml: str) -> None:
        with self._errors(domain=dom.name()):
            dom.detachDeviceFlags(device_xml, self._live_flags(dom))

    def update(self, dom: libvirt.virDomain, device_xml: str) -> None:
        with self._errors(domain=dom.name()):
            dom.updateDeviceFlags(device_xml, self._live_flags(dom))

    def disk_element(self, dom: libvirt.virDomain, target: str) -> etree._Element | None:
        return self.xml_of(dom).find(f"devices/disk/target[@dev='{target}']/..")

    def nic_element(self, dom: libvirt.virDomain, mac: str) -> etree._Element | None:
        return self.xml_of(dom).find(f"devices/interface/mac[@address='{mac}']/..")


def kill_leftover_qemu(name: str, proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL QEMU processes still running a domain libvirt says is gone.

    QEMU's command line carries ``-name guest=<name>,``; that is how ZStack's
    agent finds them too.
    """
    marker = f"guest={name},".encode()
    killed: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu" in cmdline.split(b"\x00", 1)[0] and marker in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed
