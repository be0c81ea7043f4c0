"""The serial console log is bounded: a guest flooding ttyS0 cannot fill the
host's disk. With ``stdio_handler = "logd"`` libvirt hands the console file
(``<serial type='file'>``) to virtlogd, which rotates it at ``max_size``,
keeping ``max_backups`` old files. A second libvirtd (libvirt2.py) runs with
a virtlogd of its own set to 64 KiB x 2, so the flood need not be megabytes
long under TCG."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kvmagent.conftest import (
    console_log,
    ensure_destroyed,
    scripted_guest,
    start_agent,
    vm_body,
    wait_console,
)
from tests.integration.kvmagent.libvirt2 import SecondLibvirtd
from tests.support.agents import AgentProcess, CallbackReceiver

pytestmark = [pytest.mark.libvirt, pytest.mark.netns, pytest.mark.slow]

VM = str(uuid.uuid4())
L3 = str(uuid.uuid4())
BRIDGE = "kvc" + uuid.uuid4().hex[:8]
MAC, IP = "52:54:00:5f:01:10", "10.251.20.10"
MAX_SIZE, BACKUPS = 65536, 2
FLOOD = 400_000  # bytes: six times what virtlogd may keep
DONE = "KVMCLOUD-TEST-FLOOD-DONE"
FLOOD_SCRIPT = f"""
yes KVMCLOUD-TEST-FLOOD-0123456789abcdefghijklmnopqrstuvwxyz | head -c {FLOOD} > /dev/ttyS0
echo {DONE} > /dev/ttyS0
"""


@pytest.fixture(scope="module")
def lv2(workdir: Path) -> Iterator[SecondLibvirtd]:
    lv = SecondLibvirtd(workdir / "lv2", virtlogd_conf={"max_size": str(MAX_SIZE),
                                                          "max_backups": str(BACKUPS)}).start()
    yield lv
    lv.stop()


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str],
          lv2: SecondLibvirtd) -> Iterator[AgentProcess]:
    a = start_agent(workdir, receiver, libvirt_env, uri=lv2.uri).start()
    yield a
    ensure_destroyed(a, VM, lv2.uri)
    a.call("/network/dhcp/delete", {"l3NetworkUuid": L3})
    a.call("/network/l2/delete", {"type": "novlan", "bridgeName": BRIDGE})
    a.stop()


def test_a_guest_flooding_its_console_leaves_a_bounded_log(agent: AgentProcess, workdir: Path,
                                                           guest_env: dict[str, str]) -> None:
    assert agent.call("/network/l2/create", {"type": "novlan", "bridgeName": BRIDGE})["success"]
    assert agent.call("/network/dhcp/apply", {
        "l3NetworkUuid": L3, "bridgeName": BRIDGE, "serverIp": "10.251.20.2", "prefixLength": 24,
        "leases": [{"mac": MAC, "ip": IP}]})["success"]
    root = scripted_guest(guest_env, workdir / "flood-root.raw", {"eth0": FLOOD_SCRIPT})
    body = vm_body(VM, root, nics=[{"mac": MAC, "bridgeName": BRIDGE, "ip": IP}])
    body["rootVolume"]["format"] = "raw"
    assert agent.call("/vm/start", body)["success"]
    log = console_log(workdir, VM)
    wait_console(log, DONE, timeout=400)
    files = sorted(log.parent.glob(log.name + "*"))
    assert [f.name for f in files] == [log.name] + [f"{log.name}.{i}" for i in range(BACKUPS)], files
    sizes = [f.stat().st_size for f in files]
    assert all(s <= MAX_SIZE for s in sizes), sizes
    assert sum(sizes) < FLOOD / 2, sizes
