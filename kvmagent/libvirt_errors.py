"""libvirt's errors as command errors that name the real cause.

libvirt reports a dead daemon, a disk QEMU may not open and a malformed domain
alike as ``libvirtError``; an operator needs to know which. :func:`translate`
maps an error to one of the classes below by libvirt's error code, the
subsystem that raised it and, for file access, the message (libvirt reports a
refused ``open()`` as a system error with errno's text, and QEMU's own refusal
as an internal error quoting the path).
"""

from __future__ import annotations

import re
from typing import Any

import libvirt

from agentcore.errors import AgentError
from kvmagent.connection import HypervisorUnavailable


class LibvirtFailed(AgentError):
    """libvirt refused the operation for a reason no narrower class names."""

    code = "LIBVIRT_ERROR"
    default_message = "libvirt refused the operation"


class PathNotAccessible(AgentError):
    """QEMU (or libvirt on its behalf) may not open a file or directory."""

    code = "HOST_PATH_NOT_ACCESSIBLE"
    default_message = "QEMU cannot access a file on this host"


class DomainExists(AgentError):
    """A domain of that name or UUID is defined or running already."""

    code = "DOMAIN_EXISTS"
    default_message = "a domain with this name or UUID exists already"


class InvalidDomainConfig(AgentError):
    """libvirt refused the domain XML or an argument."""

    code = "INVALID_DOMAIN_CONFIG"
    default_message = "libvirt refused the domain definition or an argument"


class HypervisorBusy(AgentError):
    """The domain or resource is busy (a job holds its lock, a device is in use)."""

    code = "HYPERVISOR_BUSY"
    default_message = "the domain or resource is busy; try again"


class HypervisorAccessDenied(AgentError):
    """libvirtd's access control or authentication refused the connection's request."""

    code = "HYPERVISOR_ACCESS_DENIED"
    default_message = "libvirtd refused access"


_CONNECTION_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
}
_CONNECTION_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_BY_CODE: dict[int, type[AgentError]] = {
    libvirt.VIR_ERR_XML_ERROR: InvalidDomainConfig,
    libvirt.VIR_ERR_XML_DETAIL: InvalidDomainConfig,
    libvirt.VIR_ERR_XML_INVALID_SCHEMA: InvalidDomainConfig,
    libvirt.VIR_ERR_INVALID_ARG: InvalidDomainConfig,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED: InvalidDomainConfig,
    libvirt.VIR_ERR_NO_NAME: InvalidDomainConfig,
    libvirt.VIR_ERR_NO_OS: InvalidDomainConfig,
    libvirt.VIR_ERR_NO_SOURCE: InvalidDomainConfig,
    libvirt.VIR_ERR_NO_TARGET: InvalidDomainConfig,
    libvirt.VIR_ERR_DOM_EXIST: DomainExists,
    libvirt.VIR_ERR_RESOURCE_BUSY: HypervisorBusy,
    libvirt.VIR_ERR_OPERATION_TIMEOUT: HypervisorBusy,  # "cannot acquire state change lock"
    libvirt.VIR_ERR_ACCESS_DENIED: HypervisorAccessDenied,
    libvirt.VIR_ERR_AUTH_FAILED: HypervisorAccessDenied,
    libvirt.VIR_ERR_AUTH_CANCELLED: HypervisorAccessDenied,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE: HypervisorAccessDenied,
}
_QUOTED_PATH = re.compile(r"'(/[^']*)'")
_EXISTS = re.compile(r"\balready exists\b")


def is_connection_error(e: libvirt.libvirtError) -> bool:
    """True when the error says the connection to libvirtd itself failed."""
    code = e.get_error_code()
    if code in _CONNECTION_CODES:
        return True
    return code == libvirt.VIR_ERR_SYSTEM_ERROR and e.get_error_domain() in _CONNECTION_DOMAINS


def translate(e: libvirt.libvirtError, **details: Any) -> AgentError:
    """The command error for ``e``; the caller forgets the connection when it is
    a :class:`HypervisorUnavailable`."""
    code = e.get_error_code()
    message = str(e)
    details = {"libvirt_code": code, **details}
    if is_connection_error(e):
        return HypervisorUnavailable(reason=message, **details)
    if "Permission denied" in message:
        path = _QUOTED_PATH.search(message)
        return PathNotAccessible(
            f"QEMU cannot access {path.group(1)}: permission denied" if path else None,
            reason=message, path=path.group(1) if path else None, **details,
        )
    cls = _BY_CODE.get(code)
    if cls is None and code == libvirt.VIR_ERR_OPERATION_FAILED and _EXISTS.search(message):
        cls = DomainExists  # createXML of a name in use: "domain 'x' already exists with uuid ..."
    if cls is None:
        return LibvirtFailed(message, **details)
    return cls(reason=message, **details)
