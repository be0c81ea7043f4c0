"""Ceph primary storage in the controller's VM workflows, against simulated
agents (the ``simulator`` package): the create-VM flow clones the root volume
from the cached image in RBD and starts the VM with RBD disks after setting
the libvirt secret once per host; a failure at any step leaves no RBD image
but the cache, no row and no domain; VM delete and the primary storage's
cascade delete remove the images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.db.models import PrimaryStorage
from controller.primary.ceph import monitors
from simulator import FaultRule
from tests.unit.controller.cephcloud import KEY, POOL, SimAgents, build, fail_once, write_key
from tests.unit.controller.harness import Cloud


@pytest.fixture
def ceph(tmp_path: Path) -> Iterator[tuple[Cloud, SimAgents, dict[str, str]]]:
    write_key(tmp_path / "keys")
    cloud = Cloud(f"sqlite:///{tmp_path}/controller.db", ceph_key_dir=str(tmp_path / "keys"))
    sims = SimAgents()
    try:
        yield cloud, sims, build(cloud, sims)
    finally:
        cloud.close()
        sims.close()


def _vm(cloud: Cloud, ids: dict[str, str], name: str, **extra: Any) -> dict[str, Any]:
    return cloud.job("POST", "/v1/vms", {
        "name": name, "imageUuid": ids["image"], "instanceOfferingUuid": ids["offering"],
        "l3NetworkUuids": [ids["l3"]], "dataDiskOfferingUuids": [ids["disk"]], **extra})


def _volumes(cloud: Cloud, vm_uuid: str) -> dict[str, dict[str, Any]]:
    items = cloud.ok("GET", "/v1/volumes", q=f"vmUuid={vm_uuid}")["items"]
    return {v["type"]: v for v in items}


def test_vm_boots_from_an_rbd_clone_with_the_secret_set_once_per_host(ceph: Any) -> None:
    cloud, sims, ids = ceph
    job = _vm(cloud, ids, "web1", hostUuid=ids["h1"])
    assert job["state"] == "succeeded", job
    vm = job["resourceUuid"]
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    vols = _volumes(cloud, vm)
    root, data = vols["Root"], vols["Data"]
    assert root["installPath"] == f"{POOL}/volume-{root['uuid']}" and root["format"] == "raw"
    assert data["installPath"] == f"{POOL}/volume-{data['uuid']}"
    cache = f"{POOL}/image-{ids['image']}"
    assert sims.rbd_images() == {cache, root["installPath"], data["installPath"]}
    ps = cloud.ok("GET", f"/v1/primary-storages/{ids['ps']}")
    assert KEY not in json.dumps(ps) and ps["cephKeyRef"] == "kvmcloud-key"

    start = sims.bodies("/vm/start")[-1]
    rbd = {"type": "rbd", "installPath": root["installPath"], "authUser": "kvmcloud",
           "secretUuid": ps["cephSecretUuid"],
           "monitors": [{"host": "10.7.0.1", "port": 6789}, {"host": "10.7.0.2", "port": 6789}]}
    assert rbd.items() <= start["rootVolume"].items(), start["rootVolume"]
    assert start["dataVolumes"][0]["installPath"] == data["installPath"]
    assert sims.bodies("/ceph/volume/create-from-image")[-1]["srcName"] == f"image-{ids['image']}"
    secrets = sims.bodies("/host/ceph-secret/set")
    assert [(s["secretUuid"], s["userName"], s["userKey"]) for s in secrets] == [
        (ps["cephSecretUuid"], "kvmcloud", KEY)]

    again = _vm(cloud, ids, "web2", hostUuid=ids["h1"])
    assert again["state"] == "succeeded", again
    assert len(sims.bodies("/host/ceph-secret/set")) == 1  # once per host
    assert len(sims.bodies("/ceph/image/add")) == 1  # the cache is filled once

    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    cloud.succeeded("POST", f"/v1/hosts/{ids['h1']}/actions/reconnect", {})
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/start", {"hostUuid": ids["h1"]})
    assert len(sims.bodies("/host/ceph-secret/set")) == 2  # a reconnected host gets it again
    assert sims.bodies("/vm/start")[-1]["rootVolume"]["type"] == "rbd"

    cloud.succeeded("DELETE", f"/v1/vms/{vm}?confirm=1")
    assert root["installPath"] not in sims.rbd_images()
    assert data["installPath"] in sims.rbd_images()  # a data volume outlives its VM (detached)


STEPS = ["/ceph/pools/init", "/ceph/image/add", "/ceph/volume/create-from-image",
         "/ceph/volume/create", "/network/l2/create", "/network/dhcp/apply",
         "/host/ceph-secret/set", "/vm/start"]


@pytest.mark.parametrize("path", STEPS)
def test_a_failure_at_each_step_leaves_no_rbd_image_row_or_domain(ceph: Any, path: str) -> None:
    cloud, sims, ids = ceph
    fail_once(sims, path)
    job = _vm(cloud, ids, "doomed")
    assert job["state"] == "failed" and "INJECTED" in json.dumps(job["error"]), job
    assert sims.sim.faults.list() == []  # the fault fired
    cache = {f"{POOL}/image-{ids['image']}"}
    assert sims.rbd_images() - cache == set()
    assert sims.domains() == set()
    for coll in ("vms", "volumes", "vm-nics"):
        assert cloud.ok("GET", f"/v1/{coll}")["items"] == [], coll
    assert _vm(cloud, ids, "next")["state"] == "succeeded"  # and the cloud goes on


def test_primary_storage_cascade_delete_removes_every_rbd_image(ceph: Any) -> None:
    cloud, sims, ids = ceph
    for name in ("a", "b"):
        assert _vm(cloud, ids, name)["state"] == "succeeded"
    assert len(sims.rbd_images()) == 5  # the cache, two roots, two data volumes
    plan = cloud.ok("DELETE", f"/v1/primary-storages/{ids['ps']}")["affected"]
    assert {"vms", "volumes", "primary-storages"} <= {a["type"] for a in plan}
    cloud.succeeded("DELETE", f"/v1/primary-storages/{ids['ps']}?confirm=1")
    assert sims.rbd_images() == set()
    assert sims.domains() == set()
    assert cloud.ok("GET", "/v1/volumes")["items"] == []


def test_a_delete_waits_while_the_image_is_still_in_use(ceph: Any) -> None:
    """A destroyed QEMU's watch outlives it for a while: the delete is retried."""
    cloud, sims, ids = ceph
    vm = _vm(cloud, ids, "busy")["resourceUuid"]
    root = _volumes(cloud, vm)["Root"]["installPath"]
    sims.sim.faults.add(FaultRule(path="/ceph/volume/delete", action="fail", code="IN_USE", times=2))
    cloud.succeeded("DELETE", f"/v1/vms/{vm}?confirm=1")
    assert root not in sims.rbd_images() and sims.sim.faults.list() == []


def test_an_image_from_an_rbd_volume_is_exported_by_the_cephagent(ceph: Any) -> None:
    """The storage's backend uploads the volume (no storageagent path for an RBD image)."""
    cloud, sims, ids = ceph
    vm = _vm(cloud, ids, "src")["resourceUuid"]
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/stop", {})
    root = _volumes(cloud, vm)["Root"]
    job = cloud.job("POST", f"/v1/volumes/{root['uuid']}/actions/create-image",
                    {"name": "from-rbd", "backupStorageUuid": ids["bs"]})
    assert job["state"] == "succeeded", job
    [body] = sims.bodies("/ceph/image/export-to-sftp")
    pool, _, name = root["installPath"].partition("/")
    assert (body["pool"], body["name"], body["storeName"]) == (pool, name, job["result"]["uuid"])
    assert job["result"]["format"] == "raw"
    assert not any(p.startswith("/storage/") for p in sims.paths())


def test_monitors_are_handed_to_the_kvm_agent_with_their_ports() -> None:
    ps = PrimaryStorage(ceph_monitors="10.0.0.1:3300,mon-b,[fd00::1]:6790,[fd00::2]")
    assert [(m.host, m.port) for m in monitors(ps)] == [
        ("10.0.0.1", 3300), ("mon-b", 6789), ("fd00::1", 6790), ("fd00::2", 6789)]
