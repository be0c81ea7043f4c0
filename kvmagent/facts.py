"""Host facts: OS, kernel, CPU, virtualisation support, versions, memory, IPs.

Read from /proc, /etc/os-release, netlink and libvirt; nothing is spawned.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

from pyroute2 import IPRoute

PROC = Path("/proc")


def cpu_info(proc: Path = PROC) -> tuple[str, list[str], int, int]:
    """(model name, flags, logical CPUs, sockets) from /proc/cpuinfo."""
    model, count = "", 0
    flags: list[str] = []
    sockets: set[str] = set()
    for line in (proc / "cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value
        elif key == "flags" and not flags:
            flags = value.split()
        elif key == "physical id":
            sockets.add(value)
    return model, flags, count, max(1, len(sockets))


def meminfo(proc: Path = PROC) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def os_release(path: Path = Path("/etc/os-release")) -> tuple[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition("=")
            values[k] = v.strip().strip('"')
    return values.get("NAME", platform.system()), values.get("VERSION_ID", "")


def hardware_virtualization(flags: list[str], dev_kvm: Path = Path("/dev/kvm")) -> bool:
    """Can this host run KVM guests? Needs VT-x/AMD-V *and* a usable /dev/kvm.

    A /dev/kvm without vmx/svm (PVM, some nested setups) cannot run stock
    guest kernels, so it does not count.
    """
    return ("vmx" in flags or "svm" in flags) and dev_kvm.exists() and os.access(dev_kvm, os.R_OK | os.W_OK)


def choose_domain_type(setting: str, flags: list[str]) -> str:
    """``kvm`` or ``qemu`` (TCG): the config's choice, or probed when ``auto``."""
    if setting != "auto":
        return setting
    return "kvm" if hardware_virtualization(flags) else "qemu"


def ip_addresses() -> list[str]:
    """Global-scope addresses of the host's interfaces."""
    addrs: list[str] = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            if msg["scope"] == 0:
                addr = msg.get_attr("IFA_ADDRESS")
                if addr:
                    addrs.append(f"{addr}/{msg['prefixlen']}")
    return addrs


def version_string(v: int) -> str:
    """libvirt's packed version number (1000000*major + 1000*minor + micro)."""
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"


def hostname() -> str:
    return socket.gethostname()
