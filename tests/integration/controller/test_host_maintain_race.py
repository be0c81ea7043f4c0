"""Maintaining a host takes each VM's queue: it never interleaves with a VM's own job."""

from __future__ import annotations

from typing import Any

from tests.support.agents import wait_until
from tests.unit.controller.harness import Cloud


def _submit(cloud: Cloud, path: str, body: Any = None) -> str:
    return str(cloud.ok("POST", path, body or {})["job"]["uuid"])


def _job(cloud: Cloud, uuid: str) -> dict[str, Any]:
    return dict(cloud.ok("GET", f"/v1/jobs/{uuid}")["job"])


def _final(cloud: Cloud, uuid: str) -> dict[str, Any]:
    return dict(wait_until(lambda: (j := _job(cloud, uuid))["state"] in ("succeeded", "failed",
                                                                         "cancelled") and j, 20,
                           what=f"job {uuid}"))


def test_maintain_waits_for_a_running_vm_job_and_goes_before_a_later_one(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    data = cloud.call("POST", "/v1/vms", cloud.vm_body("v"), wait="1")[1]
    assert data["job"]["state"] == "succeeded", data
    vm = data["resource"]["uuid"]
    src = next(h for h in cloud.hosts.values() if vm in h.domains)
    dst = next(h for h in cloud.hosts.values() if h is not src)
    src.hang.add("/vm/stop")  # the stop runs on the agent until we answer it
    stop = _submit(cloud, f"/v1/vms/{vm}/actions/stop")
    wait_until(lambda: any(p == "/vm/stop" for p, _ in src.calls), 10, what="the stop to reach the agent")
    maintain = _submit(cloud, f"/v1/hosts/{src.host_uuid}/actions/maintain")
    wait_until(lambda: _job(cloud, maintain)["stage"] == f"evacuate vm {vm}", 10,
               what="maintain to wait for the VM")
    start = _submit(cloud, f"/v1/vms/{vm}/actions/start")  # arrives after maintain took its turn
    assert _job(cloud, maintain)["state"] == "running" and _job(cloud, start)["state"] == "queued"
    assert [p for p, _ in src.calls if p in ("/vm/start", "/vm/stop", "/vm/migrate")] == [
        "/vm/start", "/vm/stop"]
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Stopping"

    task = next(t for t, v in src.tasks.items() if v["path"] == "/vm/stop")
    src.domains.pop(vm)
    src.tasks[task].update(state="succeeded")
    cloud.deliver(task, "reply", {"success": True, "error": None, "vmUuid": vm, "state": "Stopped"})
    assert _final(cloud, stop)["state"] == "succeeded"
    assert _final(cloud, maintain)["state"] == "succeeded"
    assert _final(cloud, start)["state"] == "succeeded", _final(cloud, start)["error"]
    # maintain found the VM stopped (nothing to move); the later start went to the other host
    assert not any(p == "/vm/migrate" for p, _ in src.calls)
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Running" and got["hostUuid"] == dst.host_uuid
    assert vm in dst.domains and vm not in src.domains
    assert cloud.ok("GET", f"/v1/hosts/{src.host_uuid}")["state"] == "Maintenance"


def test_deleting_a_host_migrates_its_vm_after_the_vms_running_job(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    data = cloud.call("POST", "/v1/vms", cloud.vm_body("v"), wait="1")[1]
    vm = data["resource"]["uuid"]
    src = next(h for h in cloud.hosts.values() if vm in h.domains)
    dst = next(h for h in cloud.hosts.values() if h is not src)
    src.hang.add("/vm/reboot")
    reboot = _submit(cloud, f"/v1/vms/{vm}/actions/reboot")
    wait_until(lambda: any(p == "/vm/reboot" for p, _ in src.calls), 10, what="the reboot")
    delete = str(cloud.ok("DELETE", f"/v1/hosts/{src.host_uuid}", confirm="1")["job"]["uuid"])
    wait_until(lambda: _job(cloud, delete)["state"] == "running", 10, what="the delete to run")
    assert not any(p == "/vm/migrate" for p, _ in src.calls)  # not during the reboot
    task = next(t for t, v in src.tasks.items() if v["path"] == "/vm/reboot")
    src.tasks[task].update(state="succeeded")
    cloud.deliver(task, "reply", {"success": True, "error": None, "vmUuid": vm, "state": "Running"})
    assert _final(cloud, reboot)["state"] == "succeeded"
    assert _final(cloud, delete)["state"] == "succeeded"
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Running" and got["hostUuid"] == dst.host_uuid and vm in dst.domains
