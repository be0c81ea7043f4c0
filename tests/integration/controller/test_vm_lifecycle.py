"""VM create, lifecycle actions, volumes, snapshots and NICs through the API."""

from __future__ import annotations

import pytest

from tests.unit.controller.harness import Cloud

pytestmark = pytest.mark.sqlite_only


def _create(cloud: Cloud, name: str = "web1", **extra: object) -> dict:
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body(name, **extra), wait="1")
    assert status == 200, data
    assert data["job"]["state"] == "succeeded", data["job"]
    return cloud.ok("GET", f"/v1/vms/{data['resource']['uuid']}")


def test_create_vm_runs_with_lease_at_allocated_ip(cloud: Cloud) -> None:
    cloud.basic()
    vm = _create(cloud, data_disk_offering_uuids=None) if False else _create(
        cloud, dataDiskOfferingUuids=[cloud.ids["disk"]])
    assert vm["state"] == "Running" and vm["hostUuid"]
    host = next(h for h in cloud.hosts.values() if h.host_uuid == vm["hostUuid"])
    assert host.domains == {vm["uuid"]: "Running"}
    nics = cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm['uuid']}")["items"]
    assert len(nics) == 1 and nics[0]["ip"].startswith("192.168.")
    assert host.leases[cloud.ids["l3"]] == {nics[0]["mac"]: nics[0]["ip"]}
    vols = cloud.ok("GET", "/v1/volumes", q=f"vmUuid={vm['uuid']}", sort="deviceId")["items"]
    assert [v["type"] for v in vols] == ["Root", "Data"]
    assert all((cloud.ids["ps"], v["installPath"]) in cloud.storage.files for v in vols)
    start = next(b for p, b in host.calls if p == "/vm/start")
    assert start["rootVolume"]["installPath"] == "/mnt/nfs1/" + vols[0]["installPath"]
    h = cloud.ok("GET", f"/v1/hosts/{vm['hostUuid']}")
    assert h["availableCpu"] == h["totalCpu"] - 1


def test_stop_start_reboot_pause_resume(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _create(cloud)
    u = vm["uuid"]
    host = next(iter(cloud.hosts.values()))
    cloud.succeeded("POST", f"/v1/vms/{u}/actions/stop", {})
    got = cloud.ok("GET", f"/v1/vms/{u}")
    assert got["state"] == "Stopped" and got["hostUuid"] is None and host.domains == {}
    assert cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")["availableCpu"] == 32
    cloud.succeeded("POST", f"/v1/vms/{u}/actions/start", {})
    assert cloud.ok("GET", f"/v1/vms/{u}")["state"] == "Running" and host.domains[u] == "Running"
    cloud.succeeded("POST", f"/v1/vms/{u}/actions/reboot", {})
    cloud.succeeded("POST", f"/v1/vms/{u}/actions/pause", {})
    assert cloud.ok("GET", f"/v1/vms/{u}")["state"] == "Paused"
    job = cloud.job("POST", f"/v1/vms/{u}/actions/reboot", {})
    assert job["state"] == "failed" and job["error"]["code"] == "CONFLICT"
    cloud.succeeded("POST", f"/v1/vms/{u}/actions/resume", {})
    assert cloud.ok("GET", f"/v1/vms/{u}")["state"] == "Running"


def test_a_failed_state_change_puts_the_state_back(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    u = _create(cloud)["uuid"]
    host = next(iter(cloud.hosts.values()))
    for verb, path in (("stop", "/vm/stop"), ("pause", "/vm/pause"), ("reboot", "/vm/reboot")):
        host.faults[path] = "HYPERVISOR_BUSY"
        job = cloud.job("POST", f"/v1/vms/{u}/actions/{verb}", {})
        assert job["state"] == "failed" and job["error"]["code"] == "HYPERVISOR_BUSY", job
        assert cloud.ok("GET", f"/v1/vms/{u}")["state"] == "Running", verb
        del host.faults[path]
    assert host.domains[u] == "Running"


def test_migrate_moves_domain_and_lease(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    vm = _create(cloud)
    src = next(h for h in cloud.hosts.values() if h.host_uuid == vm["hostUuid"])
    dst = next(h for h in cloud.hosts.values() if h is not src)
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/migrate", {})
    got = cloud.ok("GET", f"/v1/vms/{vm['uuid']}")
    assert got["hostUuid"] == dst.host_uuid and got["state"] == "Running"
    assert vm["uuid"] in dst.domains and vm["uuid"] not in src.domains
    assert dst.leases[cloud.ids["l3"]] and not src.leases[cloud.ids["l3"]]
    assert cloud.ok("GET", f"/v1/hosts/{src.host_uuid}")["availableCpu"] == 32
    assert cloud.ok("GET", f"/v1/hosts/{dst.host_uuid}")["availableCpu"] == 31


def test_attach_detach_data_volume(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _create(cloud)
    vol = cloud.ok("POST", "/v1/volumes", {"name": "data1", "diskOfferingUuid": cloud.ids["disk"]})
    assert vol["status"] == "NotInstantiated"
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/attach-volume", {"volumeUuid": vol["uuid"]})
    got = cloud.ok("GET", f"/v1/volumes/{vol['uuid']}")
    assert got["vmUuid"] == vm["uuid"] and got["status"] == "Ready" and got["deviceId"] == 1
    host = next(iter(cloud.hosts.values()))
    assert any(p == "/vm/volume/attach" for p, _ in host.calls)
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/detach-volume", {"volumeUuid": vol["uuid"]})
    assert cloud.ok("GET", f"/v1/volumes/{vol['uuid']}")["vmUuid"] is None


def test_snapshot_and_revert(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _create(cloud)
    root = vm["rootVolumeUuid"]
    snap = cloud.succeeded("POST", f"/v1/volumes/{root}/actions/create-snapshot", {"name": "s1"})
    snap_uuid = snap["result"]["uuid"]
    # online snapshot: the VM now writes to a new overlay
    assert cloud.ok("GET", f"/v1/volumes/{root}")["installPath"] != snap["result"]["installPath"]
    job = cloud.job("POST", f"/v1/snapshots/{snap_uuid}/actions/revert", {})
    assert job["state"] == "failed" and "stop it" in job["error"]["message"]
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/stop", {})
    cloud.succeeded("POST", f"/v1/snapshots/{snap_uuid}/actions/revert", {})
    offline = cloud.succeeded("POST", f"/v1/volumes/{root}/actions/create-snapshot", {"name": "s2"})
    assert offline["result"]["installPath"].startswith("snapshots/")


def test_attach_and_detach_nic(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _create(cloud)
    nic = cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/attach-nic",
                          {"l3NetworkUuid": cloud.ids["l3"]})["result"]
    host = next(iter(cloud.hosts.values()))
    assert host.leases[cloud.ids["l3"]][nic["mac"]] == nic["ip"]
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/detach-nic", {"nicUuid": nic["uuid"]})
    assert nic["mac"] not in host.leases[cloud.ids["l3"]]
    assert cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm['uuid']}", count="1")["total"] == 1


def test_capacity_exhaustion_is_a_failed_job_not_a_half_vm(cloud: Cloud) -> None:
    cloud.basic(hosts=0)
    cloud.add_host("tiny", cpu=1)
    _create(cloud, "a")
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body("b"), wait="1")
    assert data["job"]["state"] == "failed" and data["job"]["error"]["code"] == "NO_CAPACITY"
    assert cloud.ok("GET", "/v1/vms", count="1")["total"] == 1


def test_create_image_from_a_stopped_vms_root_volume(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _create(cloud)
    root = vm["rootVolumeUuid"]
    body = {"name": "golden", "backupStorageUuid": cloud.ids["bs"]}
    job = cloud.job("POST", f"/v1/volumes/{root}/actions/create-image", body)
    assert job["state"] == "failed" and "stop it" in job["error"]["message"]
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/stop", {})
    image = cloud.succeeded("POST", f"/v1/volumes/{root}/actions/create-image", body)["result"]
    assert image["mediaType"] == "RootVolumeTemplate" and image["digest"].startswith("sha256:")
    # and a VM can be made from it
    data = cloud.call("POST", "/v1/vms", {**cloud.vm_body("from-golden"), "imageUuid": image["uuid"]},
                      wait="1")[1]
    assert data["job"]["state"] == "succeeded", data
