"""Backups of VMs on Ceph primary storage, against simulated agents: the point-in-time
copy is an RBD snapshot taken while the VM runs (no overlay on the KVM agent), the
cephagent exports it into the SFTP store and drops it; a restore imports each backup
into a new RBD image (digest checked by the agent) and switches the volumes to them;
a failure at any step leaves neither a snapshot, a new image nor a row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcore import digest
from simulator import FaultRule
from tests.unit.controller.cephcloud import POOL, SimAgents, build, fail_once, write_key
from tests.unit.controller.fakebackup import FakeBackupAgent
from tests.unit.controller.harness import Cloud


@pytest.fixture
def ceph(tmp_path: Path) -> Iterator[tuple[Cloud, SimAgents, dict[str, str], FakeBackupAgent]]:
    write_key(tmp_path / "keys")
    cloud = Cloud(f"sqlite:///{tmp_path}/controller.db", ceph_key_dir=str(tmp_path / "keys"))
    sims = SimAgents()
    try:
        ids = build(cloud, sims, hosts=1)
        agent, ids["store"] = cloud.backup_agent("store", zones=[ids["zone"]])
        yield cloud, sims, ids, agent
    finally:
        cloud.close()
        sims.close()


def _vm(cloud: Cloud, ids: dict[str, str]) -> str:
    job = cloud.succeeded("POST", "/v1/vms", {
        "name": "db1", "imageUuid": ids["image"], "instanceOfferingUuid": ids["offering"],
        "l3NetworkUuids": [ids["l3"]], "dataDiskOfferingUuids": [ids["disk"]]})
    return str(job["resourceUuid"])


def _volumes(cloud: Cloud, vm: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cloud.ok("GET", "/v1/volumes", q=f"vmUuid={vm}", sort="deviceId")["items"]
    return items


def _snapshots(sims: SimAgents) -> set[str]:
    return {s for key, st in sims.sim.storages.items() if key.startswith("ceph:") for s in st.snapshots}


def _backup(cloud: Cloud, vm: str, store: str) -> dict[str, Any]:
    job = cloud.succeeded("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": store})
    result: dict[str, Any] = job["result"]
    return result


def test_a_running_vm_is_backed_up_from_rbd_snapshots_taken_while_it_runs(ceph: Any) -> None:
    cloud, sims, ids, _ = ceph
    vm = _vm(cloud, ids)
    vols = _volumes(cloud, vm)
    since = len(sims.sim.recorded)
    vb = _backup(cloud, vm, ids["store"])
    assert vb["status"] == "Ready" and vb["vmState"] == "Running"
    paths = sims.paths(since)
    assert not any(p.startswith("/vm/volume/") for p in paths), paths  # no overlay, no merge
    backups = cloud.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}", sort="deviceId")["items"]
    snaps = sims.bodies("/ceph/snapshot/create")
    exports = sims.bodies("/ceph/image/export-to-sftp")
    for vol, b, snap, export in zip(vols, backups, snaps, exports, strict=True):
        pool, _, name = vol["installPath"].partition("/")
        assert (snap["pool"], snap["name"], snap["snapshot"]) == (pool, name, f"backup-{b['uuid']}")
        assert (export["pool"], export["name"], export["snapshot"]) == (pool, name, snap["snapshot"])
        assert export["storeName"] == b["uuid"] == b["installPath"]
        assert b["format"] == "raw" and b["status"] == "Ready" and b["digest"].startswith("sha256:")
    assert len(sims.bodies("/ceph/snapshot/delete")) == len(vols)
    assert _snapshots(sims) == set()  # the snapshots went once the store had them
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"


def test_a_failed_export_leaves_no_snapshot_row_or_stored_copy(ceph: Any) -> None:
    cloud, sims, ids, agent = ceph
    vm = _vm(cloud, ids)
    fail_once(sims, "/ceph/image/export-to-sftp")
    job = cloud.job("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": ids["store"]})
    assert job["state"] == "failed" and "INJECTED" in str(job["error"]), job
    assert _snapshots(sims) == set()
    assert cloud.ok("GET", "/v1/vm-backups")["items"] == []
    assert cloud.ok("GET", "/v1/volume-backups")["items"] == []
    deleted = [b["imageUuid"] for p, b in agent.calls if p == "/backup/image/delete"]
    assert len(deleted) >= 1  # what may have reached the store is asked to go
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"


def test_a_stopped_vm_is_restored_into_new_rbd_images_checked_by_digest(ceph: Any) -> None:
    cloud, sims, ids, _ = ceph
    vm = _vm(cloud, ids)
    vb = _backup(cloud, vm, ids["store"])
    backups = cloud.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}", sort="deviceId")["items"]
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/stop", {})
    old = _volumes(cloud, vm)
    cloud.succeeded("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    new = _volumes(cloud, vm)
    imports = sims.bodies("/ceph/image/import-from-sftp")
    assert [i["imageId"] for i in imports] == [b["installPath"] for b in backups]
    assert [i["sha256"] for i in imports] == [digest.bare(b["digest"]) for b in backups]
    for before, after, body in zip(old, new, imports, strict=True):
        assert after["uuid"] == before["uuid"] and after["format"] == "raw"
        assert after["installPath"] == f"{body['pool']}/{body['name']}" != before["installPath"]
        assert after["installPath"].startswith(f"{POOL}/volume-{before['uuid']}-")
    images = sims.rbd_images()
    assert all(v["installPath"] in images for v in new)
    assert not any(v["installPath"] in images for v in old)
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/start", {})


def test_a_failed_import_leaves_the_vm_on_its_own_images(ceph: Any) -> None:
    cloud, sims, ids, _ = ceph
    vm = _vm(cloud, ids)
    vb = _backup(cloud, vm, ids["store"])
    data = cloud.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}", sort="deviceId")["items"][1]
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/stop", {})
    old = _volumes(cloud, vm)
    before = sims.rbd_images()
    # the root's import succeeds, the data volume's fails: the root's new image goes again
    sims.sim.faults.add(FaultRule(path="/ceph/image/import-from-sftp", action="fail", code="INJECTED",
                                  times=1, match={"imageId": data["installPath"]}))
    job = cloud.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    assert job["state"] == "failed" and "INJECTED" in str(job["error"]), job
    assert len(sims.bodies("/ceph/image/import-from-sftp")) == 2
    assert _volumes(cloud, vm) == old
    assert sims.rbd_images() == before


def test_a_new_vm_is_made_from_a_ceph_backup_with_rbd_images_of_its_own(ceph: Any) -> None:
    cloud, sims, ids, _ = ceph
    vm = _vm(cloud, ids)
    vb = _backup(cloud, vm, ids["store"])
    backups = cloud.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}", sort="deviceId")["items"]
    job = cloud.succeeded("POST", f"/v1/vm-backups/{vb['uuid']}/actions/create-vm", {"name": "db1-copy"})
    copy = job["resourceUuid"]
    assert copy != vm and cloud.ok("GET", f"/v1/vms/{copy}")["state"] == "Running"
    vols = _volumes(cloud, copy)
    assert [v["installPath"] for v in vols] == [f"{POOL}/volume-{v['uuid']}" for v in vols]
    imports = sims.bodies("/ceph/image/import-from-sftp")
    assert [(i["imageId"], f"{i['pool']}/{i['name']}") for i in imports] == [
        (b["installPath"], v["installPath"]) for b, v in zip(backups, vols, strict=True)]
    assert all(v["installPath"] in sims.rbd_images() for v in vols)
