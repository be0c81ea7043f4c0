"""VM and volume backups through the API (fake hosts and a fake sftpbackup agent), on
every database: backup of a stopped and a running VM, restore, rollback of
each step, bad bodies, cascade delete, and the migration that makes the tables."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, inspect, select, text

from controller.db.base import Database
from controller.db.migrate import alembic_config, upgrade
from controller.db.models import VmBackup, VolumeBackup, VolumeBackupStorageRef
from tests.support.agents import wait_until
from tests.unit.controller.fakeagent import FakeHost, fail
from tests.unit.controller.fakebackup import FakeBackupAgent
from tests.unit.controller.harness import Cloud

pytestmark = pytest.mark.sqlite_only

STORED_DIGEST = "sha256:" + "cd" * 32  # what the fake storageagent's upload answers
TABLES = {"vm_backups", "volume_backups", "volume_backup_storage_refs"}


def _setup(cloud: Cloud, running: bool) -> tuple[dict[str, Any], FakeHost, FakeBackupAgent, str]:
    """One host, a VM with a root and a data volume (stopped unless ``running``), a store."""
    cloud.basic(hosts=1)
    agent, bs = cloud.backup_agent("bsa")
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body(
        "web1", dataDiskOfferingUuids=[cloud.ids["disk"]]), wait="1")
    assert status == 200 and data["job"]["state"] == "succeeded", data
    vm = data["resource"]
    if not running:
        cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/stop", {})
    host = next(iter(cloud.hosts.values()))
    host.calls.clear()
    return cloud.ok("GET", f"/v1/vms/{vm['uuid']}"), host, agent, bs


def _volumes(cloud: Cloud, vm_uuid: str) -> list[dict[str, Any]]:
    vols: list[dict[str, Any]] = cloud.ok("GET", "/v1/volumes", q=f"vmUuid={vm_uuid}",
                                          sort="deviceId")["items"]
    return vols


def _counts(cloud: Cloud) -> tuple[int, int, int]:
    with cloud.ctl.db.read() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) or 0  # type: ignore[return-value]
                     for m in (VmBackup, VolumeBackup, VolumeBackupStorageRef))


def _paths(host: FakeHost) -> list[str]:
    return [p for p, _ in host.calls]


def _backup(cloud: Cloud, vm_uuid: str, bs: str, **extra: Any) -> dict[str, Any]:
    job = cloud.succeeded("POST", f"/v1/vms/{vm_uuid}/actions/backup",
                          {"backupStorageUuid": bs, **extra})
    assert job["kind"] == "backup-vm" and job["resourceUuid"] == vm_uuid
    result: dict[str, Any] = job["result"]
    return result


def test_backup_of_a_stopped_vm_uploads_each_volume_and_records_what_the_store_measured(
        cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    files = dict(cloud.storage.files)
    vb = _backup(cloud, vm["uuid"], bs, name="nightly")
    assert vb["status"] == "Ready" and vb["name"] == "nightly" and vb["vmState"] == "Stopped"
    meta = vb["vmMetadata"]
    assert meta["instanceOfferingUuid"] == cloud.ids["offering"]
    assert [n["l3NetworkUuid"] for n in meta["nics"]] == [cloud.ids["l3"]]
    assert [v["type"] for v in meta["volumes"]] == ["Root", "Data"]
    backups = cloud.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}",
                       sort="deviceId")["items"]
    vols = _volumes(cloud, vm["uuid"])
    assert [b["volumeUuid"] for b in backups] == [v["uuid"] for v in vols]
    assert vb["rootVolumeBackupUuid"] == backups[0]["uuid"]
    for b in backups:
        assert b["status"] == "Ready" and b["digest"] == STORED_DIGEST
        assert (b["size"], b["actualSize"], b["format"]) == (1 << 30, 5 << 20, "qcow2")
        assert b["parentBackupUuid"] is None and b["installPath"] == b["uuid"]
    assert agent.held() == {b["uuid"] for b in backups}
    assert "/vm/volume/snapshot" not in _paths(host)
    assert _paths(host).count("/storage/volume/upload-template") == 2
    assert cloud.storage.files == files  # the flattened copies are gone again
    assert _counts(cloud) == (1, 2, 2)
    # the next backup of the same volumes names the previous one as its parent
    second = _backup(cloud, vm["uuid"], bs)
    assert second["name"].startswith("web1-")
    parents = {b["parentBackupUuid"] for b in cloud.ok(
        "GET", "/v1/volume-backups", q=f"vmBackupUuid={second['uuid']}")["items"]}
    assert parents == {b["uuid"] for b in backups}


def test_backup_of_a_running_vm_snapshots_every_disk_then_merges_back(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=True)
    files = dict(cloud.storage.files)
    vols = _volumes(cloud, vm["uuid"])
    vb = _backup(cloud, vm["uuid"], bs)
    assert vb["vmState"] == "Running"
    paths = _paths(host)
    # every disk is snapshotted before any copy starts, and merged back after the copies
    assert paths.index("/storage/volume/create-template") > max(
        i for i, p in enumerate(paths) if p == "/vm/volume/snapshot")
    assert paths.count("/vm/volume/merge") == 2
    assert max(i for i, p in enumerate(paths) if p == "/vm/volume/merge") < paths.index(
        "/storage/volume/upload-template")
    for v in vols:  # QEMU writes to the volume's own file again
        assert host.active[(vm["uuid"], v["uuid"])] == "/mnt/nfs1/" + v["installPath"]
    assert _volumes(cloud, vm["uuid"]) == vols
    assert cloud.storage.files == files  # no overlay or copy is left
    assert cloud.ok("GET", f"/v1/vms/{vm['uuid']}")["state"] == "Running"
    assert len(agent.held()) == 2


@pytest.mark.parametrize("running,fault", [
    (True, "/vm/volume/snapshot"), (True, "/storage/volume/create-template"),
    (True, "/storage/volume/upload-template"), (False, "/storage/volume/create-template"),
    (False, "/storage/volume/upload-template")])
def test_a_failed_backup_leaves_nothing_and_the_vm_as_it_was(cloud: Cloud, running: bool,
                                                            fault: str) -> None:
    vm, host, agent, bs = _setup(cloud, running)
    files, vols = dict(cloud.storage.files), _volumes(cloud, vm["uuid"])
    host.faults[fault] = "INTERNAL"
    job = cloud.job("POST", f"/v1/vms/{vm['uuid']}/actions/backup", {"backupStorageUuid": bs})
    assert job["state"] == "failed" and job["error"]["code"] == "INTERNAL", job
    assert _counts(cloud) == (0, 0, 0) and agent.held() == set()
    assert cloud.storage.files == files and _volumes(cloud, vm["uuid"]) == vols
    for v in vols:
        assert host.active.get((vm["uuid"], v["uuid"]), "/mnt/nfs1/" + v["installPath"]) == \
            "/mnt/nfs1/" + v["installPath"]
    assert cloud.ok("GET", f"/v1/vms/{vm['uuid']}")["state"] == vm["state"]


def test_the_second_upload_failing_empties_the_store_of_the_first(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=True)
    files = dict(cloud.storage.files)
    original, seen = host.do_storage_volume_upload_template, []

    def second_fails(c: Any) -> dict[str, Any]:
        seen.append(c.name)
        return original(c) if len(seen) == 1 else fail("SFTP_ERROR")
    host.do_storage_volume_upload_template = second_fails  # type: ignore[method-assign]
    job = cloud.job("POST", f"/v1/vms/{vm['uuid']}/actions/backup", {"backupStorageUuid": bs})
    assert job["state"] == "failed" and job["error"]["code"] == "SFTP_ERROR"
    assert len(seen) == 2 and agent.held() == set()
    assert any(p == "/backup/image/delete" for p, _ in agent.calls)
    assert _counts(cloud) == (0, 0, 0) and cloud.storage.files == files


def test_restore_replaces_the_volumes_of_a_stopped_vm_and_it_starts(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    vb = _backup(cloud, vm["uuid"], bs)
    old = _volumes(cloud, vm["uuid"])
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/start", {})
    job = cloud.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    assert job["state"] == "failed" and "stop it" in job["error"]["message"]
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/stop", {})
    job = cloud.succeeded("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    assert job["kind"] == "restore-vm-backup" and job["resourceUuid"] == vm["uuid"]
    new = _volumes(cloud, vm["uuid"])
    assert [v["uuid"] for v in new] == [v["uuid"] for v in old]
    ps = cloud.ids["ps"]
    for o, n in zip(old, new, strict=True):
        assert n["installPath"] != o["installPath"] and n["installPath"].startswith(f"volumes/{o['uuid']}-")
        assert (ps, n["installPath"]) in cloud.storage.files
        assert (ps, o["installPath"]) not in cloud.storage.files
    restores = [b for p, b in host.calls if p == "/storage/volume/create-from-store"]
    # the volumes are restored side by side: the order of the calls is not fixed
    assert sorted(r["installPath"] for r in restores) == sorted(n["installPath"] for n in new)
    assert {r["source"]["kind"] for r in restores} == {"sftp"}
    assert {r["digest"] for r in restores} == {STORED_DIGEST}
    assert not [p for p, _ in host.calls if p.startswith("/storage/cache")]  # the cache is not used
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/start", {})
    start = [b for p, b in host.calls if p == "/vm/start"][-1]
    assert start["rootVolume"]["installPath"] == "/mnt/nfs1/" + new[0]["installPath"]


@pytest.mark.parametrize("fault", ["/storage/volume/create-from-store"])
def test_a_failed_restore_leaves_the_vms_volumes_untouched(cloud: Cloud, fault: str) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    vb = _backup(cloud, vm["uuid"], bs)
    files, vols = dict(cloud.storage.files), _volumes(cloud, vm["uuid"])
    host.faults[fault] = "INTERNAL"
    job = cloud.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    assert job["state"] == "failed" and job["error"]["code"] == "INTERNAL", job
    assert _volumes(cloud, vm["uuid"]) == vols and cloud.storage.files == files


def test_a_restore_failing_on_the_second_volume_removes_the_first_new_one(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    vb = _backup(cloud, vm["uuid"], bs)
    files, vols = dict(cloud.storage.files), _volumes(cloud, vm["uuid"])
    original, seen = host.do_storage_volume_create_from_store, []

    def second_fails(c: Any) -> dict[str, Any]:
        seen.append(c.install_path)
        return original(c) if len(seen) == 1 else fail("NO_SPACE")
    host.do_storage_volume_create_from_store = second_fails  # type: ignore[method-assign]
    job = cloud.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    assert job["state"] == "failed" and job["error"]["code"] == "NO_SPACE"
    assert len(seen) == 2 and _volumes(cloud, vm["uuid"]) == vols and cloud.storage.files == files


def test_restore_one_volume_from_its_backup(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    vb = _backup(cloud, vm["uuid"], bs)
    root, data = _volumes(cloud, vm["uuid"])
    backup = cloud.ok("GET", "/v1/volume-backups", q=[f"vmBackupUuid={vb['uuid']}",
                                                      f"volumeUuid={data['uuid']}"])["items"][0]
    job = cloud.succeeded("POST", f"/v1/volume-backups/{backup['uuid']}/actions/restore", {})
    assert job["result"]["uuid"] == data["uuid"]
    root2, data2 = _volumes(cloud, vm["uuid"])
    assert root2 == root and data2["installPath"] != data["installPath"]


@pytest.mark.parametrize("body,field", [
    ({}, "backupStorageUuid"), ({"backupStorageUuid": "nope"}, "backupStorageUuid"),
    ({"backupStorageUuid": "0" * 32}, "backupStorageUuid"), ("@noagent", "backupStorageUuid"),
    ("@name", "name"), ("@extra", "frequency")])
def test_bad_backup_bodies_are_400s_naming_the_field(cloud: Cloud, body: Any, field: str) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    if body == "@noagent":  # the harness's store has no agent to delete from
        body = {"backupStorageUuid": cloud.ids["bs"]}
    elif body == "@name":
        body = {"backupStorageUuid": bs, "name": ""}
    elif body == "@extra":
        body = {"backupStorageUuid": bs, "frequency": "daily"}
    jobs = cloud.ok("GET", "/v1/jobs", count="1")["total"]
    status, data = cloud.call("POST", f"/v1/vms/{vm['uuid']}/actions/backup", body)
    assert status == 400 and data["error"]["details"]["field"] == field, data
    assert cloud.ok("GET", "/v1/jobs", count="1")["total"] == jobs


def test_deleting_a_vm_backup_deletes_its_volume_backups_from_the_store(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    first, second = _backup(cloud, vm["uuid"], bs), _backup(cloud, vm["uuid"], bs)
    plan = cloud.ok("DELETE", f"/v1/vm-backups/{first['uuid']}")
    assert [i["type"] for i in plan["affected"]] == ["volume-backups", "volume-backups", "vm-backups"]
    cloud.succeeded("DELETE", f"/v1/vm-backups/{first['uuid']}?confirm=1")
    assert _counts(cloud) == (1, 2, 2)
    assert agent.held() == {b["uuid"] for b in cloud.ok("GET", "/v1/volume-backups")["items"]}
    # deleting the VM keeps its backups; a volume backup goes alone too
    cloud.succeeded("DELETE", f"/v1/vms/{vm['uuid']}?confirm=1")
    assert _counts(cloud) == (1, 2, 2)
    one = cloud.ok("GET", "/v1/volume-backups")["items"][0]
    cloud.succeeded("DELETE", f"/v1/volume-backups/{one['uuid']}?confirm=1")
    assert _counts(cloud) == (1, 1, 1) and one["uuid"] not in agent.held()
    status, data = cloud.call("GET", f"/v1/vm-backups/{second['uuid']}")
    assert status == 200 and data["status"] == "Ready"


@pytest.mark.every_database
def test_migration_0009_makes_the_backup_tables_and_takes_them_back(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db, "0008")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        upgrade(db)
        assert TABLES <= set(inspect(db.engine).get_table_names())
        now = datetime.datetime(2026, 1, 1)
        with db.engine.begin() as c:
            c.execute(text("INSERT INTO vm_backups (uuid, name, state, create_date, last_op_date, "
                           "vm_uuid, vm_state, vm_metadata, status) VALUES ('b', 'b', 'Enabled', :d, "
                           ":d, 'v', 'Stopped', '{\"nics\": []}', 'Ready')"), {"d": now})
        cfg = alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        upgrade(db)
        assert TABLES <= set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()


def test_a_backup_cut_short_by_a_controller_restart_is_error_and_can_be_deleted(
        make_cloud: Callable[..., Cloud]) -> None:
    first = make_cloud()
    vm, host, agent, bs = _setup(first, running=False)
    host.hang.add("/storage/volume/upload-template")
    job = first.ok("POST", f"/v1/vms/{vm['uuid']}/actions/backup", {"backupStorageUuid": bs})["job"]
    wait_until(lambda: any(p == "/storage/volume/upload-template" for p, _ in host.calls), 10,
               what="upload sent")
    second = make_cloud()  # a second process on the same database: the first one is gone
    assert second.ok("GET", f"/v1/jobs/{job['uuid']}")["job"]["error"]["code"] == "CONTROLLER_RESTARTED"
    [vb] = second.ok("GET", "/v1/vm-backups")["items"]
    assert vb["status"] == "Error"
    assert {b["status"] for b in second.ok("GET", "/v1/volume-backups")["items"]} == {"Error"}
    second.transport = first.transport
    second.ctl.dispatcher.transport = first.transport
    agent.deliver = host.deliver = second.deliver  # the agents answer the controller now running
    assert second.job("DELETE", f"/v1/vm-backups/{vb['uuid']}?confirm=1")["state"] == "succeeded"
    deleted = {b["imageUuid"] for p, b in agent.calls if p == "/backup/image/delete"}
    assert len(deleted) == 2  # whatever of them reached the store is gone from it
    assert _counts(second) == (0, 0, 0)


def test_deleting_a_volume_backup_waits_for_a_restore_from_it(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    vb = _backup(cloud, vm["uuid"], bs)
    one = cloud.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}")["items"][0]
    host.hang.add("/storage/volume/create-from-store")
    restore = cloud.ok("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})["job"]
    wait_until(lambda: any(p == "/storage/volume/create-from-store" for p, _ in host.calls), 10,
               what="restore under way")
    delete = cloud.ok("DELETE", f"/v1/volume-backups/{one['uuid']}", confirm="1")["job"]
    assert cloud.ok("GET", f"/v1/jobs/{delete['uuid']}")["job"]["state"] == "queued"
    assert one["uuid"] in agent.held()
    host.hang.clear()
    cloud.ok("POST", f"/v1/jobs/{restore['uuid']}/cancel")
    assert cloud.ok("GET", f"/v1/jobs/{delete['uuid']}", wait="1")["job"]["state"] == "succeeded"
    assert cloud.ok("GET", f"/v1/jobs/{restore['uuid']}")["job"]["state"] == "cancelled"
    assert one["uuid"] not in agent.held()
