"""A real guest under the real kvmagent process and the real libvirtd (QEMU,
TCG here): booted from a qcow2 linked clone of the tiny image, then driven
through every VM and device command, each result observed through libvirt,
qemu-img or the guest's own serial console."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kvmagent.conftest import (
    backing_chain,
    console_log,
    domstate,
    ensure_destroyed,
    linked_clone,
    qemu_running,
    start_agent,
    virsh,
    vm_body,
    wait_console,
)
from tests.support.agents import AgentProcess, CallbackReceiver, wait_until

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

VM = str(uuid.uuid4())


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str]) -> Iterator[AgentProcess]:
    a = start_agent(workdir, receiver, libvirt_env).start()
    yield a
    ensure_destroyed(a, VM)
    a.stop()


@pytest.fixture(scope="module")
def booted(agent: AgentProcess, workdir: Path, guest_env: dict[str, str]) -> dict[str, object]:
    root = linked_clone(guest_env, workdir / "root.qcow2")
    reply = agent.call("/vm/start", vm_body(VM, root))
    assert reply["success"], reply
    wait_console(console_log(workdir, VM), guest_env["GUEST_MARKER"])
    return reply


def test_the_guest_boots_from_its_linked_clone(booted: dict[str, object], workdir: Path,
                                                guest_env: dict[str, str]) -> None:
    assert booted["state"] == "Running"
    assert domstate(VM) == "running"
    assert backing_chain(workdir / "root.qcow2") == [str(workdir / "root.qcow2"), guest_env["GUEST_IMAGE"]]
    assert "vda" in virsh("domblklist", VM.replace("-", ""))


def test_start_again_is_success_and_starts_nothing_new(agent: AgentProcess, booted: dict[str, object],
                                                       workdir: Path) -> None:
    reply = agent.call("/vm/start", vm_body(VM, workdir / "root.qcow2"))
    assert reply["success"] and reply["state"] == "Running"
    assert virsh("list", "--name").split().count(VM.replace("-", "")) == 1


def test_sync_check_state_console_and_capacity(agent: AgentProcess, booted: dict[str, object]) -> None:
    assert agent.call("/vm/sync")["states"][VM] == "Running"
    assert agent.call("/vm/check-state", {"vmUuids": [VM]})["states"] == {VM: "Running"}
    console = agent.call("/vm/console", {"vmUuid": VM})
    assert console["protocol"] == "vnc" and console["port"] >= 5900
    assert f":{console['port'] - 5900}" in virsh("vncdisplay", VM.replace("-", ""))
    cap = agent.call("/host/capacity")
    assert cap["cpuUsed"] >= 1 and cap["memoryUsed"] >= 128 << 20


def test_pause_and_resume_are_seen_by_libvirt(agent: AgentProcess, booted: dict[str, object]) -> None:
    assert agent.call("/vm/pause", {"vmUuid": VM})["state"] == "Paused"
    assert domstate(VM) == "paused"
    assert agent.call("/vm/resume", {"vmUuid": VM})["state"] == "Running"
    assert domstate(VM) == "running"


def test_a_hot_plugged_data_volume_is_seen_by_the_guest(agent: AgentProcess, booted: dict[str, object],
                                                         workdir: Path, guest_env: dict[str, str]) -> None:
    data = workdir / "data.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2", str(data), "64M"]
    subprocess.run(create, check=True, timeout=30)
    volume = {"type": "file", "volumeUuid": str(uuid.uuid4()), "deviceId": 1, "installPath": str(data)}
    only_root = guest_env["GUEST_DISKS_MARKER"] + " vda vda1 \n"
    root_only_lines = console_log(workdir, VM).read_text().count(only_root)
    reply = agent.call("/vm/volume/attach", {"vmUuid": VM, "volume": volume})
    assert reply["success"] and reply["device"] == "vdb", reply
    assert agent.call("/vm/volume/attach", {"vmUuid": VM, "volume": volume})["success"]  # idempotent
    wait_console(console_log(workdir, VM), guest_env["GUEST_DISKS_MARKER"] + " vda vda1 vdb", timeout=120)

    grown = agent.call("/vm/volume/resize", {"vmUuid": VM, "volume": volume, "size": 96 << 20})
    assert grown["success"] and grown["size"] == 96 << 20
    assert "96 MiB" in subprocess.run(["qemu-img", "info", "-U", str(data)], capture_output=True,
                                      text=True, timeout=30).stdout

    top = workdir / "data.s1.qcow2"
    snap = agent.call("/vm/volume/snapshot", {"vmUuid": VM, "volume": volume, "newInstallPath": str(top)})
    assert snap["success"], snap
    assert backing_chain(top) == [str(top), str(data)]
    assert str(top) in virsh("domblklist", VM.replace("-", ""))

    live = {**volume, "installPath": str(top)}
    merged = agent.call("/vm/volume/merge", {"vmUuid": VM, "volume": live, "mode": "commit",
                                             "baseInstallPath": str(data)})
    assert merged["success"] and merged["installPath"] == str(data), merged
    assert str(data) in virsh("domblklist", VM.replace("-", ""))
    assert backing_chain(data) == [str(data)]

    # pull: snapshot again, then pull the base into the top and drop the backing file
    top2 = workdir / "data.s2.qcow2"
    assert agent.call("/vm/volume/snapshot", {"vmUuid": VM, "volume": volume, "newInstallPath": str(top2)})["success"]
    pulled = agent.call("/vm/volume/merge", {"vmUuid": VM, "volume": {**volume, "installPath": str(top2)},
                                             "mode": "pull"})
    assert pulled["success"], pulled
    assert backing_chain(top2) == [str(top2)]

    gone = agent.call("/vm/volume/detach", {"vmUuid": VM, "volume": {**volume, "installPath": str(top2)}})
    assert gone["success"], gone
    assert "vdb" not in virsh("domblklist", VM.replace("-", ""))
    wait_console(console_log(workdir, VM), only_root, timeout=120, count=root_only_lines + 1)  # the guest let go


def test_a_long_block_pull_reports_progress(agent: AgentProcess, booted: dict[str, object], workdir: Path,
                                            receiver: CallbackReceiver) -> None:
    base = workdir / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True, timeout=30)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 24M", str(base)], check=True,
                   capture_output=True, timeout=60)
    volume = {"type": "file", "volumeUuid": str(uuid.uuid4()), "deviceId": 2, "installPath": str(base)}
    assert agent.call("/vm/volume/attach", {"vmUuid": VM, "volume": volume})["device"] == "vdc"
    top = workdir / "big.s1.qcow2"
    assert agent.call("/vm/volume/snapshot", {"vmUuid": VM, "volume": volume, "newInstallPath": str(top)})["success"]
    task = str(uuid.uuid4())
    r = agent.post("/vm/volume/merge", {"vmUuid": VM, "volume": {**volume, "installPath": str(top)},
                                        "mode": "pull", "bandwidth": 8},
                   taskuuid=task, callbackurl=receiver.url + "/v1/agent-callbacks")
    assert r.status_code == 202
    reply = receiver.wait_reply(task, 120)
    assert reply["success"], reply
    progress = [p["body"]["progress"] for p in list(receiver.posts)
                if p["headers"].get("taskuuid") == task and p["headers"].get("kind") == "progress"]
    assert progress and all(p["stage"] == "pull" and p["unit"] == "bytes" for p in progress)
    assert any(0 < (p["percent"] or 0) < 100 for p in progress), progress  # seen while running
    assert backing_chain(top) == [str(top)]
    assert agent.call("/vm/volume/detach", {"vmUuid": VM, "volume": {**volume, "installPath": str(top)}})["success"]


def test_iso_insert_and_eject(agent: AgentProcess, booted: dict[str, object], workdir: Path) -> None:
    iso = workdir / "tools.iso"
    iso.write_bytes(b"\0" * 2048 * 32)
    assert agent.call("/vm/iso/attach", {"vmUuid": VM, "iso": {"path": str(iso)}})["success"]
    assert str(iso) in virsh("domblklist", VM.replace("-", ""))
    assert agent.call("/vm/iso/detach", {"vmUuid": VM})["success"]
    assert str(iso) not in virsh("domblklist", VM.replace("-", ""))


def test_nic_hot_plug_and_unplug(agent: AgentProcess, booted: dict[str, object]) -> None:
    bridge = "kvt" + uuid.uuid4().hex[:8]
    assert agent.call("/network/l2/create", {"type": "novlan", "bridgeName": bridge})["success"]
    try:
        nic = {"mac": "52:54:00:7e:57:01", "bridgeName": bridge, "deviceName": "kvtnic" + bridge[-4:]}
        reply = agent.call("/vm/nic/attach", {"vmUuid": VM, "nic": nic})
        assert reply["success"] and reply["deviceName"] == nic["deviceName"], reply
        assert "52:54:00:7e:57:01" in virsh("domiflist", VM.replace("-", ""))
        assert agent.call("/vm/nic/attach", {"vmUuid": VM, "nic": nic})["success"]
        assert agent.call("/vm/nic/detach", {"vmUuid": VM, "mac": nic["mac"]})["success"]
        assert "52:54:00:7e:57:01" not in virsh("domiflist", VM.replace("-", ""))
        assert agent.call("/vm/nic/detach", {"vmUuid": VM, "mac": nic["mac"]})["success"]
    finally:
        agent.call("/network/l2/delete", {"type": "novlan", "bridgeName": bridge})


def test_reboot_boots_the_guest_again(agent: AgentProcess, booted: dict[str, object], workdir: Path,
                                      guest_env: dict[str, str]) -> None:
    log = console_log(workdir, VM)
    before = log.read_text().count(guest_env["GUEST_MARKER"])
    assert agent.call("/vm/reboot", {"vmUuid": VM})["success"]
    wait_console(log, guest_env["GUEST_MARKER"], count=before + 1)
    assert domstate(VM) == "running"


def test_graceful_stop_powers_the_guest_off_and_leaves_no_qemu(agent: AgentProcess, booted: dict[str, object],
                                                                workdir: Path, guest_env: dict[str, str]) -> None:
    reply = agent.call("/vm/stop", {"vmUuid": VM, "graceTimeout": 180})
    assert reply["success"] and reply["state"] == "Stopped", reply
    assert guest_env["GUEST_POWEROFF_MARKER"] in console_log(workdir, VM).read_text()
    assert domstate(VM) == "absent"
    wait_until(lambda: not qemu_running(VM), 10, what="QEMU gone")
    assert agent.call("/vm/stop", {"vmUuid": VM})["success"]  # stopping a stopped VM is success


def test_destroy_a_running_vm_then_again(agent: AgentProcess, workdir: Path, guest_env: dict[str, str]) -> None:
    vm = str(uuid.uuid4())
    root = linked_clone(guest_env, workdir / "root2.qcow2")
    try:
        assert agent.call("/vm/start", vm_body(vm, root, createPaused=True))["state"] == "Paused"
        assert domstate(vm) == "paused"
        assert agent.call("/vm/destroy", {"vmUuid": vm})["success"]
        assert domstate(vm) == "absent" and not qemu_running(vm)
        assert agent.call("/vm/destroy", {"vmUuid": vm})["success"]
        assert agent.call("/vm/check-state", {"vmUuids": [vm]})["states"] == {vm: "Stopped"}
    finally:
        ensure_destroyed(agent, vm)


def test_stop_forces_off_a_guest_that_ignores_acpi(agent: AgentProcess, workdir: Path,
                                                   guest_env: dict[str, str]) -> None:
    vm = str(uuid.uuid4())
    root = linked_clone(guest_env, workdir / "root3.qcow2")
    try:
        assert agent.call("/vm/start", vm_body(vm, root))["success"]
        # still in the BIOS or boot loader: nothing in the guest listens to the power button yet
        reply = agent.call("/vm/stop", {"vmUuid": vm, "graceTimeout": 0.5})
        assert reply["success"] and reply["state"] == "Stopped", reply
        assert domstate(vm) == "absent"
        wait_until(lambda: not qemu_running(vm), 10, what="QEMU gone")
        log = (agent.workdir / "agent.log").read_text()
        assert f"VM {vm} is still up: forcing it off" in log
    finally:
        ensure_destroyed(agent, vm)


@pytest.mark.parametrize(("change", "field"), [
    ({"memorySize": -(128 << 20)}, "memorySize"),
    ({"rootVolume": {"type": "iscsi", "volumeUuid": str(uuid.uuid4()), "deviceId": 0, "installPath": "/x"}},
     "rootVolume"),
    ({"rootVolume": {"type": "file", "volumeUuid": str(uuid.uuid4()), "deviceId": 0,
                     "installPath": "/etc/passwd"}}, "installPath"),
    ({"nics": [{"mac": "not-a-mac", "bridgeName": "br0"}]}, "nics.0.mac"),
])
def test_bad_specs_are_refused_with_400_and_nothing_is_defined(agent: AgentProcess, workdir: Path,
                                                               change: dict[str, object], field: str) -> None:
    vm = str(uuid.uuid4())
    r = agent.post("/vm/start", {**vm_body(vm, workdir / "root.qcow2"), **change})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_REQUEST"
    assert field in r.json()["error"]["message"]
    assert domstate(vm) == "absent"  # neither running nor defined


def test_ceph_secret_is_defined_private_and_updated_in_place(agent: AgentProcess) -> None:
    secret = str(uuid.uuid4())
    body = {"secretUuid": secret, "userName": "libvirt", "userKey": "AQBtZXN0a2V5MDEyMzQ1Njc4OWFiY2RlZmdoaWo="}
    try:
        for _ in range(2):  # create, then update in place
            reply = agent.call("/host/ceph-secret/set", body)
            assert reply["success"], reply
        listed = virsh("secret-list")
        assert secret in listed and f"client.libvirt secret {secret}" in listed
        assert [line.split()[0] for line in listed.splitlines()].count(secret) == 1
        private = subprocess.run(["virsh", "-c", "qemu:///system", "secret-get-value", secret],
                                 capture_output=True, text=True, timeout=30)
        assert private.returncode != 0  # the key cannot be read back through libvirt
    finally:
        virsh("secret-undefine", secret, check=False)
