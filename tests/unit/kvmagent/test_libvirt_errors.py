"""libvirt errors become command errors that name the cause (kvmagent/libvirt_errors.py)."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from kvmagent.connection import HypervisorUnavailable, LibvirtConnection
from kvmagent.hypervisor import Hypervisor
from kvmagent.libvirt_errors import (
    DomainExists,
    HypervisorAccessDenied,
    HypervisorBusy,
    InvalidDomainConfig,
    LibvirtFailed,
    PathNotAccessible,
    translate,
)


def err(code: int, domain: int, message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises it (its fields come from virGetLastError)."""
    e = libvirt.libvirtError(message)
    e.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return e


DENIED = ("Cannot access storage file '/var/lib/kvmcloud/storage/c1/volumes/v1.qcow2' "
          "(as uid:64055, gid:64055): Permission denied")


@pytest.mark.parametrize(("e", "cls", "code"), [
    (err(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: Connection reset"),
     HypervisorUnavailable, "HYPERVISOR_UNAVAILABLE"),
    (err(libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_NONE, "no connection driver available"),
     HypervisorUnavailable, "HYPERVISOR_UNAVAILABLE"),
    (err(libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_FROM_NONE, "invalid connection pointer"),
     HypervisorUnavailable, "HYPERVISOR_UNAVAILABLE"),
    (err(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE, DENIED),
     PathNotAccessible, "HOST_PATH_NOT_ACCESSIBLE"),
    (err(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU,
         "internal error: qemu unexpectedly closed the monitor: Could not open "
         "'/srv/iso/x.iso': Permission denied"),
     PathNotAccessible, "HOST_PATH_NOT_ACCESSIBLE"),
    (err(libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_FROM_DOM, "domain 'vm-1' already exists"),
     DomainExists, "DOMAIN_EXISTS"),
    (err(libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_DOMAIN,
         "operation failed: domain 'vm-1' already exists with uuid 0f"),
     DomainExists, "DOMAIN_EXISTS"),
    (err(libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_FROM_XML, "XML error: missing name"),
     InvalidDomainConfig, "INVALID_DOMAIN_CONFIG"),
    (err(libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_DOMAIN, "invalid argument: bad vcpus"),
     InvalidDomainConfig, "INVALID_DOMAIN_CONFIG"),
    (err(libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_FROM_QEMU, "unsupported configuration"),
     InvalidDomainConfig, "INVALID_DOMAIN_CONFIG"),
    (err(libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_QEMU,
         "Timeout while waiting: cannot acquire state change lock"),
     HypervisorBusy, "HYPERVISOR_BUSY"),
    (err(libvirt.VIR_ERR_RESOURCE_BUSY, libvirt.VIR_FROM_QEMU, "resource busy"),
     HypervisorBusy, "HYPERVISOR_BUSY"),
    (err(libvirt.VIR_ERR_ACCESS_DENIED, libvirt.VIR_FROM_ACCESS, "access denied"),
     HypervisorAccessDenied, "HYPERVISOR_ACCESS_DENIED"),
    (err(libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, "domain is not running"),
     LibvirtFailed, "LIBVIRT_ERROR"),
])
def test_each_libvirt_error_gets_its_own_code(e: libvirt.libvirtError, cls: type, code: str) -> None:
    out = translate(e, vm_uuid="v1")
    assert type(out) is cls
    assert out.code == code
    assert out.details["vm_uuid"] == "v1"
    assert out.details["libvirt_code"] == e.get_error_code()


def test_a_permission_error_names_the_path_and_is_not_called_unreachable() -> None:
    out = translate(err(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE, DENIED))
    assert out.details["path"] == "/var/lib/kvmcloud/storage/c1/volumes/v1.qcow2"
    assert "permission denied" in out.message and "/var/lib/kvmcloud/storage/c1" in out.message
    assert "not reachable" not in out.message


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    conn = LibvirtConnection("test:///default", events=False)
    yield Hypervisor(conn)
    conn.close()


def _xml(name: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory>1024</memory>"
            "<os><type>hvm</type></os></domain>")


def test_real_driver_a_second_domain_of_one_name_is_domain_exists(hv: Hypervisor) -> None:
    dom = hv.create(_xml("kc-errors-dup"))
    try:
        with pytest.raises(DomainExists):
            hv.create(_xml("kc-errors-dup"))
        assert hv.conn.connected  # not mistaken for a lost connection
    finally:
        hv.destroy(dom)


def test_real_driver_malformed_xml_is_invalid_domain_config(hv: Hypervisor) -> None:
    with pytest.raises(InvalidDomainConfig):
        hv.create("<domain type='test'><name>x</name>")
    with pytest.raises(InvalidDomainConfig):
        hv.create("<domain type='test'><memory>1024</memory><os><type>hvm</type></os></domain>")
    with pytest.raises(InvalidDomainConfig):
        hv.create("<domain type='test'><name>x</name><memory>abc</memory><os><type>hvm</type></os></domain>")
