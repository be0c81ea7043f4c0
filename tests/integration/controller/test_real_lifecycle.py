"""The VM lifecycle through the controller against the real agents.

Reboot (the guest boots twice), a data volume created through the API
hot-plugged and unplugged (the guest sees it come and go; the file lives
while the volume does), a root-volume snapshot and revert (the qcow2 chain;
a write made after the snapshot is gone), the kvmagent killed (-9) while a
start runs (the job ends, the host goes Disconnected and back, the database
agrees with libvirt), and a live migration to a second host: a second
libvirtd in its own mount namespace (an sshd on 127.0.0.2 in front of it, like
a remote host: the migration goes over SSH with the migration key) with its own
kvmagent, both seeing one shared mount point.
At most two TCG guests run at a time.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.controller.realworld import (
    World,
    build_cloud,
    create_vm,
    kvmagent,
    world_fixture,  # noqa: F401
)
from tests.integration.kvmagent.libvirt2 import SecondLibvirtd
from tests.support.agents import AgentProcess, wait_until

pytestmark = [pytest.mark.libvirt, pytest.mark.netns, pytest.mark.slow]
SYSTEM = "qemu:///system"


def domstate(vm: str, uri: str = SYSTEM) -> str:
    r = subprocess.run(["virsh", "-c", uri, "domstate", vm], capture_output=True, text=True, timeout=30)
    return r.stdout.strip() if r.returncode == 0 else "absent"


def chain(path: Path) -> list[str]:
    out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return [layer["filename"] for layer in json.loads(out)]


def qemu_io(path: Path, op: str) -> str:
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c", op, str(path)], capture_output=True,
                       text=True, timeout=60)
    return r.stdout + r.stderr  # a failed pattern check exits 1


def _cloud(w: World) -> dict[str, str]:
    if "zone" not in w.ids:
        build_cloud(w, "10.253.8")
    return w.ids


def _vm(w: World) -> str:
    """The module's first VM, created on first use (each test can run alone)."""
    if "vm" not in _cloud(w):
        w.ids["vm"] = create_vm(w, "life1")
    return w.ids["vm"]


def test_reboot_boots_the_guest_again(world: World) -> None:
    w = world
    vm = _vm(w)
    marker = w.guest["GUEST_MARKER"]
    booted = w.console(vm).read_text(errors="replace").count(marker)
    w.job("POST", f"/v1/vms/{vm}/actions/reboot", {})
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    w.wait_console(vm, marker, count=booted + 1, timeout=120)


def test_a_data_volume_is_hot_plugged_and_unplugged(world: World) -> None:
    w, vm = world, _vm(world)
    disks = w.guest["GUEST_DISKS_MARKER"]
    only_root = f"{disks} vda vda1 \n"
    vol = w.ok("POST", "/v1/volumes", {"name": "data1", "size": 64 << 20})["uuid"]
    w.job("POST", f"/v1/vms/{vm}/actions/attach-volume", {"volumeUuid": vol})
    got = w.ok("GET", f"/v1/volumes/{vol}")
    path = w.ps_root / got["installPath"]
    assert got["vmUuid"] == vm and got["status"] == "Ready" and path.is_file()
    w.wait_console(vm, f"{disks} vda vda1 vdb", timeout=120)
    root_only = w.console(vm).read_text(errors="replace").count(only_root)
    w.job("POST", f"/v1/vms/{vm}/actions/detach-volume", {"volumeUuid": vol})
    w.wait_console(vm, only_root, count=root_only + 1, timeout=120)  # the guest let go
    assert w.ok("GET", f"/v1/volumes/{vol}")["vmUuid"] is None and path.is_file()
    w.job("DELETE", f"/v1/volumes/{vol}", confirm="1")
    assert not path.exists()


def test_snapshot_and_revert_the_root_volume(world: World) -> None:
    w, vm = world, _vm(world)
    root = w.ok("GET", "/v1/volumes", q=[f"vmUuid={vm}", "type=Root"])["items"][0]
    base = w.ps_root / root["installPath"]
    snap = w.job("POST", f"/v1/volumes/{root['uuid']}/actions/create-snapshot", {"name": "s1"})["result"]
    # online: the running VM moved to a new overlay on top of the old one, now the snapshot
    top = w.ps_root / w.ok("GET", f"/v1/volumes/{root['uuid']}")["installPath"]
    assert w.ps_root / snap["installPath"] == base and top != base
    layers = chain(top)
    assert layers[:2] == [str(top), str(base)] and len(layers) == 3  # ... on the cached image
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    qemu_io(top, "write -P 0x5a 0 64k")  # a write after the snapshot, on the stopped VM's disk
    assert "verification failed" not in qemu_io(top, "read -P 0x5a 0 64k")
    w.job("POST", f"/v1/snapshots/{snap['uuid']}/actions/revert", {})
    now = w.ps_root / w.ok("GET", f"/v1/volumes/{root['uuid']}")["installPath"]
    assert chain(now)[1:] == layers[1:]
    assert "Pattern verification failed" in qemu_io(now, "read -P 0x5a 0 64k")  # the write is gone
    booted = w.console(vm).read_text(errors="replace").count(w.guest["GUEST_MARKER"])
    w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    w.wait_console(vm, w.guest["GUEST_MARKER"], count=booted + 1, timeout=120)


@pytest.mark.parametrize("when", ["job-running", "domain-running"])
def test_agent_killed_during_a_start(world: World, when: str) -> None:
    w, vm, host = world, _vm(world), world.ids["host"]
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    job = w.ok("POST", f"/v1/vms/{vm}/actions/start", {})["job"]["uuid"]
    tracker = w.ctl.tracker
    if when == "job-running":  # while the controller prepares the host (DHCP) or sends the start
        wait_until(lambda: w.ok("GET", f"/v1/jobs/{job}")["job"]["state"] == "running", 10,
                   interval=0.01, what="the start job to run")
    else:  # as soon as libvirt runs the domain: sometimes before the agent could answer
        wait_until(lambda: domstate(vm) == "running", 60, interval=0.02, what="the domain to start")
    w.kvm.kill9()
    tracker.ping(host)
    tracker.ping(host)
    assert w.ok("GET", f"/v1/hosts/{host}")["status"] == "Disconnected"
    w.kvm.start()
    ended = w.api.get(f"/v1/jobs/{job}", params={"wait": "1", "timeout": "120"}, timeout=150).json()["job"]
    assert ended["state"] in ("succeeded", "failed"), ended  # never left hanging
    tracker.reconnect(host)
    assert w.ok("GET", f"/v1/hosts/{host}")["status"] == "Connected"
    want = {"running": "Running", "shut off": "Stopped", "absent": "Stopped"}[domstate(vm)]
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == want, ended
    if want == "Stopped":
        w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    assert domstate(vm) == "running"


@dataclass
class Second:
    lv: SecondLibvirtd
    kvm: AgentProcess
    smp: Path


@pytest.fixture(scope="module")
def second(world: World, component_env: Callable[[str], dict[str, str]]) -> Iterator[Second]:
    """A second host: its own libvirtd (SSH on 127.0.0.2) and kvmagent; the storage agent is shared,
    and so is a mount point (a bind mount of a directory, standing in for a shared filesystem)."""
    smp = world.base / "smp"
    smp.mkdir(mode=0o755)
    subprocess.run(["mount", "--bind", str(smp), str(smp)], check=True, timeout=10)
    lv = SecondLibvirtd(world.base / "lv2").start()
    lv.start_sshd("127.0.0.2", world.migration_port, client_dir=world.base / "migration")
    kvm = kvmagent(world.base, "kvm2", world.url, lv.uri, component_env("libvirt")["LIBVIRT_DOMAIN_TYPE"],
                   [world.base], dhcp_tag="h2").start()
    try:
        yield Second(lv, kvm, smp)
    finally:
        kvm.stop()
        lv.stop()
        subprocess.run(["umount", str(smp)], capture_output=True, timeout=30)


def test_live_migration_to_a_second_host(world: World, second: Second) -> None:
    w, ids = world, _cloud(world)
    if "vm" in ids:
        w.job("DELETE", f"/v1/vms/{ids.pop('vm')}", confirm="1")  # two guests at most
    ps = w.ok("POST", "/v1/primary-storages", {
        "name": "smp", "zoneUuid": ids["zone"], "type": "sharedmountpoint", "url": "smp",
        "mountPath": str(second.smp), "clusterUuids": [ids["cluster"]]})["uuid"]
    h2 = w.job("POST", "/v1/hosts", {"name": "h2", "clusterUuid": ids["cluster"],
                                     "managementIp": "127.0.0.2", "agentUrl": second.kvm.url,
                                     "storageAgentUrl": w.sto.url})["resourceUuid"]
    vm = create_vm(w, "mig1", hostUuid=ids["host"], primaryStorageUuid=ps)
    w.job("POST", f"/v1/vms/{vm}/actions/migrate", {"hostUuid": h2})
    got = w.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Running" and got["hostUuid"] == h2
    assert domstate(vm, second.lv.uri) == "running" and domstate(vm) == "absent"
    # the guest runs on over there: a disk hot-plugged through h2's agent shows in its console
    # (not a ping: both hosts' DHCP namespaces answer ARP for one server address on one bridge)
    vol = w.ok("POST", "/v1/volumes", {"name": "mig-data", "size": 16 << 20})["uuid"]
    w.job("POST", f"/v1/vms/{vm}/actions/attach-volume", {"volumeUuid": vol})
    w.wait_console(vm, f"{w.guest['GUEST_DISKS_MARKER']} vda vda1 vdb", timeout=120)
    assert (second.smp / w.ok("GET", f"/v1/volumes/{vol}")["installPath"]).is_file()
    w.ctl.tracker.sync_vms(h2)
    w.ctl.tracker.sync_vms(ids["host"])
    assert w.ok("GET", f"/v1/vms/{vm}")["hostUuid"] == h2


def test_delete_the_zone_with_two_hosts(world: World, second: Second) -> None:
    w, ids = world, _cloud(world)
    w.job("DELETE", f"/v1/zones/{ids['zone']}", confirm="1")
    assert w.ok("GET", "/v1/vms")["items"] == [] and w.ok("GET", "/v1/hosts")["items"] == []
    assert second.kvm.call("/vm/sync")["states"] == {} or all(
        s == "Stopped" for s in second.kvm.call("/vm/sync")["states"].values())
    # both hosts' DHCP servers went: the first's namespace and the second's (tagged) one
    assert not list(Path("/run/netns").glob(f"kvmcloud-dhcp-*{ids['l3'][:12]}"))
    leftovers = [p for p in second.smp.rglob("*") if p.is_file() and ".kvmcloud" not in p.parts]
    assert leftovers == [], leftovers
