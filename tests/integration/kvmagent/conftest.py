"""Fixtures of the kvmagent integration tests: the real libvirtd, the tiny
guest image, a real kvmagent process and a real callback receiver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, netns

from tests.conftest import ENV_DIR
from tests.support.agents import AgentProcess, CallbackReceiver, python_agent, wait_until

KVMAGENT = python_agent("kvmagent.app")


@pytest.fixture(scope="session")
def libvirt_env(component_env: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return component_env("libvirt")


@pytest.fixture(scope="session")
def guest_env(component_env: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return component_env("guest")


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory QEMU (user libvirt-qemu) can reach: disks, ISOs and console logs go here."""
    base = ENV_DIR / "kvmagent-tests"
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    d = base / uuid.uuid4().hex[:12]
    d.mkdir()
    d.chmod(0o755)
    yield d
    if not os.environ.get("KVMCLOUD_KEEP_TEST_DIRS"):  # keep agent logs and consoles for debugging
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver().start()
    yield r
    r.stop()


def start_agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str],
                uri: str | None = None, name: str = "agent") -> AgentProcess:
    home = workdir / name
    home.mkdir(exist_ok=True)
    return AgentProcess(KVMAGENT, home, controller_urls=[receiver.url], extra={
        "libvirt_uri": uri or libvirt_env["LIBVIRT_URI"],
        "domain_type": libvirt_env["LIBVIRT_DOMAIN_TYPE"],
        "storage_roots": [str(workdir)],
        "console_dir": workdir / "console",
    })


def linked_clone(guest_env: dict[str, str], dest: Path) -> Path:
    """A root volume as production makes it: a qcow2 overlay on the cached image."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", guest_env["GUEST_FORMAT"],
                    "-b", guest_env["GUEST_IMAGE"], str(dest)], check=True, timeout=30)
    return dest


# udhcpc's script in the guest, extended: after a lease on <iface> it runs
# /etc/kvmcloud-test/<iface> <ip> <mask> if a scripted guest has one
SCRIPTED_UDHCPC = """#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface"
    echo "KVMCLOUD-GUEST-IP $interface $ip" >/dev/ttyS0
    if [ "$1" = bound ] && [ -e "/etc/kvmcloud-test/$interface" ]; then
      sh "/etc/kvmcloud-test/$interface" "$ip" "$mask" >/dev/ttyS0 2>&1 &
    fi ;;
esac
exit 0
"""


def scripted_guest(guest_env: dict[str, str], dest: Path, scripts: dict[str, str]) -> Path:
    """A raw copy of the tiny guest whose initramfs also holds ``scripts``.

    ``scripts`` maps an interface name (``eth0``) to a shell script the guest
    runs once udhcpc got that NIC its lease (arguments: ip, mask). The extra
    files go in a second cpio archive appended to ``initrd.gz``: the kernel
    unpacks both, the later file winning.
    """
    work = dest.with_suffix(".build")
    extra = work / "extra"
    (extra / "usr/share/udhcpc").mkdir(parents=True)
    (extra / "etc/kvmcloud-test").mkdir(parents=True)
    (extra / "usr/share/udhcpc/default.script").write_text(SCRIPTED_UDHCPC)
    for iface, script in scripts.items():
        (extra / "etc/kvmcloud-test" / iface).write_text(script)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["qemu-img", "convert", "-f", guest_env["GUEST_FORMAT"], "-O", "raw",
                    guest_env["GUEST_IMAGE"], str(dest)], check=True, timeout=60)
    fat = f"{dest}@@1M"  # the FAT partition starts at 1 MiB (scripts/build-guest.sh)
    initrd = work / "initrd.gz"
    subprocess.run(["mcopy", "-i", fat, "::/initrd.gz", str(initrd)], check=True, timeout=30, env=env)
    files = subprocess.run(["find", "."], cwd=extra, capture_output=True, check=True, timeout=30).stdout
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=extra, input=files,
                             capture_output=True, check=True, timeout=30).stdout
    with open(initrd, "ab") as f:
        f.write(subprocess.run(["gzip", "-1"], input=archive, capture_output=True, check=True, timeout=30).stdout)
    subprocess.run(["mcopy", "-o", "-i", fat, str(initrd), "::/initrd.gz"], check=True, timeout=30, env=env)
    shutil.rmtree(work)
    return dest


def vm_body(vm_uuid: str, root: Path, **extra: Any) -> dict[str, Any]:
    return {"vmUuid": vm_uuid, "vmName": "it-" + vm_uuid[:8], "cpuNum": 1, "memorySize": 128 << 20,
            "rootVolume": {"type": "file", "volumeUuid": str(uuid.uuid4()), "deviceId": 0,
                           "installPath": str(root)}, **extra}


def console_log(workdir: Path, vm_uuid: str) -> Path:
    return workdir / "console" / f"{vm_uuid.replace('-', '')}.log"


def wait_console(log: Path, text: str, timeout: float = 240, count: int = 1) -> str:
    """Wait until ``text`` appears ``count`` times in the serial console log."""
    def seen() -> str | None:
        try:
            content = log.read_text(errors="replace")
        except OSError:
            return None
        return content if content.count(text) >= count else None
    return str(wait_until(seen, timeout, interval=0.2, what=f"{text!r} x{count} in {log.name}"))


def virsh(*args: str, uri: str = "qemu:///system", check: bool = True) -> str:
    r = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)}: {r.stderr}")
    return r.stdout.strip()


def domstate(vm_uuid: str, uri: str = "qemu:///system") -> str:
    r = subprocess.run(["virsh", "-q", "-c", uri, "domstate", vm_uuid.replace("-", "")],
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip() if r.returncode == 0 else "absent"


def qemu_running(vm_uuid: str) -> bool:
    marker = f"guest={vm_uuid.replace('-', '')},".encode()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes():
                    return True
            except OSError:
                pass
    return False


def backing_chain(path: Path) -> list[str]:
    out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return [img["filename"] for img in json.loads(out)]


def ensure_destroyed(agent: AgentProcess, vm_uuid: str, uri: str = "qemu:///system") -> None:
    """Cleanup that does not depend on the agent being right."""
    try:
        agent.call("/vm/destroy", {"vmUuid": vm_uuid})
    except Exception:
        pass
    subprocess.run(["virsh", "-c", uri, "destroy", vm_uuid.replace("-", "")], capture_output=True, timeout=30)


def events_for(receiver: CallbackReceiver, vm_uuid: str) -> list[dict[str, Any]]:
    return [p["body"] for p in list(receiver.posts)
            if p["headers"].get("kind") == "event" and p["body"].get("vmUuid") == vm_uuid]


def wait_event(receiver: CallbackReceiver, vm_uuid: str, state: str, timeout: float = 90) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((e for e in events_for(receiver, vm_uuid) if e["state"] == state), None)
    return dict(wait_until(found, timeout, interval=0.1, what=f"event {state} of {vm_uuid}"))



@contextmanager
def peer_namespace(agent: AgentProcess, bridge: str, name: str, veth: str, address: str) -> Iterator[str]:
    """A namespace on the agent's novlan ``bridge`` (created here) at ``address``/24,
    through the veth pair ``<veth>o``/``<veth>i``; its interface is ``peer``."""
    assert agent.call("/network/l2/create", {"type": "novlan", "bridgeName": bridge})["success"]
    netns.create(name)
    outer, inner = f"{veth}o", f"{veth}i"
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=outer, kind="veth", peer=inner)
            ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=name)
            ipr.link("set", index=ipr.link_lookup(ifname=outer)[0],
                     master=ipr.link_lookup(ifname=bridge)[0], state="up")
        with IPRoute(netns=name) as ipr:
            idx = ipr.link_lookup(ifname=inner)[0]
            ipr.link("set", index=idx, ifname="peer")
            ipr.addr("add", index=idx, address=address, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        yield name
    finally:
        netns.remove(name)  # takes the veth pair with it


def in_namespace(name: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=timeout)
