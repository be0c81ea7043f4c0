"""Backups without a database: the CLI's commands for them, the order of the backup
flow's steps, and the paths each kind of primary storage backs up through."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from controller.db.models import PrimaryStorage, Volume
from controller.errors import Conflict
from controller.flows import backup_vm
from controller.primary import BACKENDS, Op
from controller.primary.base import PrimaryBackend
from controller.primary.file import FileBackend
from tests.unit.controller.test_cli import FakeApi, job, run

VM = "d" * 32
BS = "e" * 32


def test_vm_backup_resolves_the_storage_by_name_and_sends_the_action_body() -> None:
    api = FakeApi({("POST", f"/vms/{VM}/actions/backup"): (202, {"job": job("queued")})})
    res = run(api, "vm", "backup", VM, "--bs", "store-1", "--name", "nightly", "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    [sent] = api.sent("POST", f"/vms/{VM}/actions/backup")
    assert json.loads(sent.content) == {"backupStorageUuid": BS, "name": "nightly"}


def test_vm_backup_and_volume_backup_commands_list_and_restore() -> None:
    backup = "1" * 32
    api = FakeApi({("GET", "/vm-backups"): (200, {"items": [{"uuid": backup, "name": "b",
                                                              "state": "Enabled", "status": "Ready"}]}),
                   ("POST", f"/volume-backups/{backup}/actions/restore"): (202, {"job": job("queued")})})
    listed = run(api, "vm-backup", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output)["items"][0]["uuid"] == backup
    res = run(api, "volume-backup", "restore", backup, "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    assert api.sent("POST", f"/volume-backups/{backup}/actions/restore")


def test_vm_backup_replicate_and_create_vm_send_their_bodies() -> None:
    backup, zone = "1" * 32, "2" * 32
    api = FakeApi({("POST", f"/vm-backups/{backup}/actions/replicate"): (202, {"job": job("queued")}),
                   ("POST", f"/vm-backups/{backup}/actions/create-vm"): (202, {"job": job("queued")})})
    res = run(api, "vm-backup", "replicate", backup, "--bs", BS, "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    [sent] = api.sent("POST", f"/vm-backups/{backup}/actions/replicate")
    assert json.loads(sent.content) == {"backupStorageUuid": BS}
    res = run(api, "vm-backup", "create-vm", backup, "--name", "dr", "--zone", zone,
              "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    [sent] = api.sent("POST", f"/vm-backups/{backup}/actions/create-vm")
    assert json.loads(sent.content) == {"name": "dr", "zoneUuid": zone}


def _state(running: bool, volumes: int) -> backup_vm.BackupVm:
    work = [backup_vm.VolumeWork(cast(Volume, None), cast(PrimaryStorage, None), str(i), None)
            for i in range(volumes)]
    return backup_vm.BackupVm(cast(Any, None), cast(Any, None), "b", VM, running, cast(Any, None),
                              cast(Any, None), "n", None, {}, work)


def test_a_running_vm_is_snapshotted_whole_before_any_copy_and_merged_before_any_upload() -> None:
    names = [s.name for s in backup_vm.steps(_state(True, 2))]
    assert names == ["add-backup-rows", "snapshot-0", "snapshot-1", "export-0", "export-1",
                     "merge-0", "merge-1", "upload-0", "upload-1", "drop-copy-0", "drop-copy-1",
                     "record"]
    stopped = [s.name for s in backup_vm.steps(_state(False, 1))]
    assert stopped == ["add-backup-rows", "export-0", "upload-0", "drop-copy-0", "record"]


def test_a_storage_kind_without_backups_refuses_them_by_name() -> None:
    """A backend that does not implement the backup methods says so (a 409, not a crash)."""
    class NoBackups(FileBackend):
        pass

    ps = PrimaryStorage(uuid="p" * 32, type="future")
    with pytest.raises(Conflict, match="backups of future primary storage are not supported"):
        PrimaryBackend.export(NoBackups(), cast(Op, None), ps, cast(Any, None), Volume(), "x")


def test_ceph_backups_copy_through_a_snapshot_of_the_volume_and_restore_beside_it() -> None:
    ceph = BACKENDS["ceph"]
    ps = PrimaryStorage(uuid="p" * 32, type="ceph", ceph_pool="vms")
    vol = Volume(uuid="v" * 32, install_path=f"vms/volume-{'v' * 32}")
    assert ceph.overlay_path(ps, vol, "b" * 32) == ""  # nothing moves the VM's writes
    assert ceph.export_path(ps, vol, "b" * 32) == f"vms/volume-{'v' * 32}@backup-{'b' * 32}"
    new = ceph.restore_path(ps, vol)
    assert new.startswith(f"vms/volume-{'v' * 32}-") and new != ceph.restore_path(ps, vol)
