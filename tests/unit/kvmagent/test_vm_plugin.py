"""VM commands through the in-process agent on libvirt's test driver: the
protocol, idempotency and input validation (no QEMU involved)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.unit.kvmagent.conftest import Client


def vm_spec(tmp_path: Path, vm_uuid: str, **extra: Any) -> dict[str, Any]:
    ps = tmp_path / "ps"
    ps.mkdir(exist_ok=True)
    root = ps / f"{vm_uuid}.qcow2"
    root.write_bytes(b"")
    return {"vmUuid": vm_uuid, "vmName": "unit", "cpuNum": 1, "memorySize": 64 << 20,
            "rootVolume": {"type": "file", "volumeUuid": vm_uuid, "deviceId": 0, "installPath": str(root)},
            **extra}


def domain_names() -> set[str]:
    conn = libvirt.open("test:///default")
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


def test_start_is_idempotent_and_sync_reports_the_vm(test_agent: tuple[Client, Any], tmp_path: Path) -> None:
    client, _host = test_agent
    vm = str(uuid.uuid4())
    status, reply = client.post("/vm/start", vm_spec(tmp_path, vm))
    assert status == 200 and reply["success"], reply
    assert reply["state"] == "Running"
    status, again = client.post("/vm/start", vm_spec(tmp_path, vm))
    assert again["success"] and again["state"] == "Running"
    _, synced = client.post("/vm/sync", {})
    assert synced["states"][vm] == "Running"
    _, checked = client.post("/vm/check-state", {"vmUuids": [vm, str(uuid.uuid4())]})
    assert list(checked["states"].values()) == ["Running", "Stopped"]
    _, destroyed = client.post("/vm/destroy", {"vmUuid": vm})
    assert destroyed["success"] and destroyed["state"] == "Stopped"
    _, again = client.post("/vm/destroy", {"vmUuid": vm})
    assert again["success"]
    assert vm.replace("-", "") not in domain_names()


def test_pause_and_resume_are_idempotent(test_agent: tuple[Client, Any], tmp_path: Path) -> None:
    client, _ = test_agent
    vm = str(uuid.uuid4())
    client.post("/vm/start", vm_spec(tmp_path, vm))
    for path, state in (("/vm/pause", "Paused"), ("/vm/pause", "Paused"),
                        ("/vm/resume", "Running"), ("/vm/resume", "Running")):
        _, reply = client.post(path, {"vmUuid": vm})
        assert reply["success"] and reply["state"] == state, (path, reply)
    client.post("/vm/destroy", {"vmUuid": vm})


def test_capacity_sums_running_domains(test_agent: tuple[Client, Any], tmp_path: Path) -> None:
    client, _ = test_agent
    _, before = client.post("/host/capacity", {})
    vm = str(uuid.uuid4())
    client.post("/vm/start", vm_spec(tmp_path, vm, cpuNum=3, memorySize=96 << 20))
    _, after = client.post("/host/capacity", {})
    client.post("/vm/destroy", {"vmUuid": vm})
    assert after["cpuUsed"] - before["cpuUsed"] == 3
    assert after["memoryUsed"] - before["memoryUsed"] == 96 << 20
    assert after["memoryTotal"] > 0 and after["cpuTotal"] > 0


def test_a_missing_root_volume_is_refused_before_libvirt(test_agent: tuple[Client, Any], tmp_path: Path) -> None:
    client, _ = test_agent
    vm = str(uuid.uuid4())
    spec = vm_spec(tmp_path, vm)
    Path(spec["rootVolume"]["installPath"]).unlink()
    _, reply = client.post("/vm/start", spec)
    assert not reply["success"] and reply["error"]["code"] == "NOT_FOUND"
    assert reply["error"]["details"]["field"] == "installPath"
    assert vm.replace("-", "") not in domain_names()


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda s: s.update(memorySize=-1 << 20), "memorySize"),
    (lambda s: s["rootVolume"].update(type="nfs"), "rootVolume"),
    (lambda s: s["rootVolume"].update(installPath="/etc/shadow"), "rootVolume.file.installPath"),
    (lambda s: s["rootVolume"].update(installPath="/x/../../etc/shadow"), "rootVolume.file.installPath"),
    (lambda s: s.update(nics=[{"mac": "52:54:00:zz:00:01", "bridgeName": "br0"}]), "nics.0.mac"),
    (lambda s: s.update(nics=[{"mac": "01:00:5e:00:00:01", "bridgeName": "br0"}]), "nics.0.mac"),
    (lambda s: s.update(cpuNum=0), "cpuNum"),
    (lambda s: s.update(unknownField=1), "unknownField"),
])
def test_bad_specs_are_400s_naming_the_field_and_define_nothing(
    test_agent: tuple[Client, Any], tmp_path: Path, mutate: Any, field: str,
) -> None:
    client, _ = test_agent
    vm = str(uuid.uuid4())
    spec = vm_spec(tmp_path, vm)
    mutate(spec)
    before = domain_names()
    status, reply = client.post("/vm/start", spec)
    assert status == 400, reply
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert field in reply["error"]["message"], reply["error"]
    assert domain_names() == before


def test_connect_is_kept_in_the_state_dir(test_agent: tuple[Client, Any], tmp_path: Path) -> None:
    client, _host = test_agent
    _, before = client.post("/host/ping", {})
    assert before["hostUuid"] is None and before["version"]
    hid = str(uuid.uuid4())
    _, reply = client.post("/host/connect", {"hostUuid": hid, "eventsUrl": f"http://127.0.0.1:9/v1/agent-events/{hid}"})
    assert reply["success"], reply
    _, after = client.post("/host/ping", {})
    assert after["hostUuid"] == hid
    assert hid in (tmp_path / "state" / "host.json").read_text()


def test_facts_describe_the_host(test_agent: tuple[Client, Any]) -> None:
    client, _ = test_agent
    _, facts = client.post("/host/facts", {})
    assert facts["success"], facts
    assert facts["cpuCount"] > 0 and facts["memoryTotal"] > 0 and facts["kernel"]
    assert facts["domainType"] in ("kvm", "qemu")
    assert facts["libvirtVersion"].count(".") == 2


def test_a_ceph_key_that_is_not_base64_is_refused(test_agent: tuple[Client, Any]) -> None:
    client, _ = test_agent
    status, reply = client.post("/host/ceph-secret/set", {"secretUuid": str(uuid.uuid4()), "userName": "libvirt",
                                                          "userKey": "not base64 at all!"})
    assert status == 400 and "userKey" in reply["error"]["message"]
