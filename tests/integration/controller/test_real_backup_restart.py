"""A real controller process killed (``kill -9``) in the middle of a scheduled backup,
against the real agents: a kvmagent (one TCG guest), a storageagent on a local primary
storage and an sftpbackup store in the sshd component's chroot.

The VM's data disk holds 384 MiB of random bytes, so the upload into the store takes a
few seconds; the controller is killed while the storageagent uploads and started again
on the same database and port. The dead job ends ``CONTROLLER_RESTARTED``; the new
process cancels its upload on the storageagent (the task id names the job), then
deletes the backup it cut short: no copy is left on primary storage and no manifest of
it in the store, not even after the agent's task has ended. Then the policy's next slot
(its last run put an hour back by SQL, as SQLite's ``datetime()`` writes it) runs once
and makes one Ready backup, not two.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.controller.realworld import (
    ControllerProcess,
    SftpStore,
    World,
    build_cloud,
    create_vm,
    open_world,
    sftp_store,
)
from tests.support.agents import wait_until

pytestmark = [pytest.mark.libvirt, pytest.mark.sftp, pytest.mark.slow]
MiB = 1 << 20
DATA = 512 * MiB
RANDOM = 384 * MiB


@dataclass
class Rig:
    w: World
    ctl: ControllerProcess
    store: SftpStore


@pytest.fixture
def rig(component_env: Callable[[str], dict[str, str]]) -> Iterator[Rig]:
    sshd = component_env("sshd")
    sto = {"sftp_key_file": sshd["SSHD_KEY"], "sftp_known_hosts": sshd["SSHD_KNOWN_HOSTS"]}
    ctl = ControllerProcess("backup_schedule=true", "backup_schedule_period=1")
    with open_world(component_env, sto, process=ctl) as w, \
            sftp_store(sshd, w.url, w.base / "sftp") as store:
        build_cloud(w, "10.253.14", store=store)
        yield Rig(w, ctl, store)


def _an_hour_later(db: Path, vm: str) -> None:
    """The (policy, VM) pair's attach time and last run put an hour back: its next slot
    (the policy runs hourly) is due now. This stands in for the wait."""
    with sqlite3.connect(db, timeout=30) as c:
        c.execute("UPDATE vm_backup_policy_refs SET attach_date = datetime(attach_date, '-3600 seconds'), "
                  "last_run_at = datetime(last_run_at, '-3600 seconds') WHERE vm_uuid = ?", (vm,))


def _jobs(w: World, kind: str) -> list[dict[str, str]]:
    items: list[dict[str, str]] = w.ok("GET", "/v1/jobs", q=f"kind={kind}", sort="createDate")["items"]
    return items


def _manifests(store: SftpStore) -> set[str]:
    return {p.stem for p in (store.store_dir / "manifests").glob("*.json")}


def test_a_controller_killed_mid_backup_cleans_up_and_runs_the_next_slot(rig: Rig) -> None:
    w, ctl, store = rig.w, rig.ctl, rig.store
    disk = w.ok("POST", "/v1/disk-offerings", {"name": "data", "diskSize": DATA})["uuid"]
    vm = create_vm(w, "bk-kill", dataDiskOfferingUuids=[disk])
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    data = next(v for v in w.ok("GET", "/v1/volumes", q=f"vmUuid={vm}")["items"] if v["type"] == "Data")
    raw = w.base / "random.raw"
    with open(raw, "wb") as f:  # incompressible, so every chunk travels
        for _ in range(RANDOM // (16 * MiB)):
            f.write(os.urandom(16 * MiB))
        f.truncate(DATA)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(w.ps_root / data["installPath"])],
                   check=True, timeout=300)
    raw.unlink()
    before = _manifests(store)
    policy = w.ok("POST", "/v1/backup-policies", {"name": "hourly", "intervalSeconds": 3600,
                                                  "retentionCount": 3, "backupStorageUuid": w.ids["bs"]})
    w.ok("POST", f"/v1/backup-policies/{policy['uuid']}/actions/attach", {"vmUuids": [vm]}, wait=1)
    _an_hour_later(ctl.db, vm)

    chunks = len(store.chunks())

    seen: list[tuple[str, int]] = []

    def uploading() -> dict[str, str] | None:
        """The backup job while its chunks reach the store."""
        jobs = _jobs(w, "backup-vm")
        now = (",".join(f"{j['state']}:{j.get('stage')}" for j in jobs), len(store.chunks()) - chunks)
        if not seen or seen[-1] != now:
            seen.append(now)
        running = [j for j in jobs if j["state"] in ("queued", "running")]  # the row says queued
        return running[0] if running and seen[-1][1] > 8 else None
    try:
        wait_until(lambda: uploading() is not None, 120, interval=0.05, what="the scheduled backup's upload")
    except AssertionError as e:
        raise AssertionError(f"{e}; job states and new chunks seen: {seen[:40]}") from None
    job = uploading()
    assert job is not None
    [cut] = w.ok("GET", "/v1/vm-backups", q=f"vmUuid={vm}")["items"]
    ctl.kill()
    ctl.start()  # the same database and port: the agents call back here
    dead = w.ok("GET", f"/v1/jobs/{job['uuid']}")["job"]
    assert dead["state"] == "failed" and dead["error"]["code"] == "CONTROLLER_RESTARTED", dead
    wait_until(lambda: [j["state"] for j in _jobs(w, "recover-agent-tasks")] == ["succeeded"], 180,
               what="the recovery job")
    [recovery] = _jobs(w, "recover-agent-tasks")
    result = w.ok("GET", f"/v1/jobs/{recovery['uuid']}")["job"]["result"]
    assert result["tasksLeftRunning"] == 0 and result["deadJobs"] >= 1, result
    wait_until(lambda: w.ok("GET", "/v1/vm-backups", q=f"vmUuid={vm}")["items"] == [], 120,
               what="the cut-short backup deleted")
    deletes = w.ok("GET", "/v1/jobs", q=f"resourceUuid={cut['uuid']}")["items"]  # recovery's, retention's
    assert deletes and all(j["state"] == "succeeded" for j in deletes), deletes
    assert result["backupDeleteJobs"][0] in {j["uuid"] for j in deletes}
    copies = sorted((w.ps_root / "templates").glob("backup-*")) if (w.ps_root / "templates").exists() else []
    assert copies == []
    time.sleep(3)  # an upload the cancel missed would write its manifest now
    assert _manifests(store) == before

    _an_hour_later(ctl.db, vm)  # the next slot
    wait_until(lambda: [j["state"] for j in _jobs(w, "backup-vm")] == ["failed", "succeeded"], 300,
               what="the next slot's backup")
    [made] = w.ok("GET", "/v1/vm-backups", q=f"vmUuid={vm}")["items"]
    assert made["status"] == "Ready" and made["backupPolicyUuid"] == policy["uuid"], made
    time.sleep(3)  # three more ticks of the schedule: the slot is claimed, it does not run again
    assert [j["state"] for j in _jobs(w, "backup-vm")] == ["failed", "succeeded"]
    assert len(w.ok("GET", "/v1/vm-backups", q=f"vmUuid={vm}")["items"]) == 1
    held = {b["installPath"] for b in w.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={made['uuid']}")["items"]}
    assert len(held) == 2 and _manifests(store) == before | held  # root and data, nothing else
