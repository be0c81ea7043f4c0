"""The disaster-recovery drill of the operator guide, in one run, against the real
agents: a kvmagent (one TCG guest), a storageagent on a local primary storage, an
sftpbackup store in the sshd component's chroot, and the controller as a process of
its own (``kvmcloud serve`` on SQLite), so it can be stopped and its database restored
with the CLI, as an operator does.

A VM with a known pattern on its disk is backed up into the store; the controller's
database is backed up (``kvmcloud db backup``, the controller running). Then the site
loses its disks: the controller is stopped, its database file deleted, and the primary
storage emptied (its volumes and image cache gone). ``kvmcloud db restore`` and a start
bring the cloud back as the backup had it; nothing is made on the empty storage until
the host is reconnected (which initialises it again); the VM cannot start on its missing
disk; it is restored from the store, finds the pattern and boots.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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
from tests.integration.controller.test_real_backup import qemu_io

pytestmark = [pytest.mark.libvirt, pytest.mark.sftp, pytest.mark.slow]
PATTERN = 0x5d


@dataclass
class Rig:
    w: World
    ctl: ControllerProcess
    store: SftpStore


@pytest.fixture
def rig(component_env: Callable[[str], dict[str, str]]) -> Iterator[Rig]:
    sshd = component_env("sshd")
    sto = {"sftp_key_file": sshd["SSHD_KEY"], "sftp_known_hosts": sshd["SSHD_KNOWN_HOSTS"]}
    ctl = ControllerProcess()
    with open_world(component_env, sto, process=ctl) as w, \
            sftp_store(sshd, w.url, w.base / "sftp") as store:
        build_cloud(w, "10.253.17", store=store)
        yield Rig(w, ctl, store)


def kvmcloud_db(*args: str | Path) -> str:
    """``kvmcloud db ...`` (this checkout's), its output."""
    r = subprocess.run([sys.executable, "-m", "controller.cli", "db", *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _wipe(root: Path) -> None:
    """An empty file system where the primary storage was."""
    for p in root.iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def test_after_the_primary_storage_is_lost_the_database_and_the_vm_come_back(rig: Rig) -> None:
    w, ctl = rig.w, rig.ctl
    vm = create_vm(w, "drill")
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    root = w.ok("GET", "/v1/volumes", q=[f"vmUuid={vm}", "type=Root"])["items"][0]
    size, at = int(root["size"]), int(root["size"]) - 65536  # past the guest's file system
    assert "wrote" in qemu_io(w.ps_root / root["installPath"], f"write -P {PATTERN} {at} 64k")
    vb = w.job("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": w.ids["bs"]})["result"]
    dump = w.base / "db-backups" / "controller.bak"
    dump.parent.mkdir()
    assert "sqlite backup" in kvmcloud_db("backup", "--db", f"sqlite:///{ctl.db}", dump)

    # the disaster: the controller's disk and the primary storage are gone
    ctl.stop()
    for f in ctl.db.parent.glob(ctl.db.name + "*"):  # the database, its -wal and -shm
        f.unlink()
    _wipe(w.ps_root)
    assert not any(w.ps_root.iterdir())

    assert "restored" in kvmcloud_db("restore", "--db", f"sqlite:///{ctl.db}", "--yes", dump)
    ctl.start()
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Stopped"
    assert [b["uuid"] for b in w.ok("GET", "/v1/vm-backups", q=f"vmUuid={vm}")["items"]] == [vb["uuid"]]
    # the emptied storage is not initialised: nothing is made on it until the host reconnects
    refused = w.run("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    assert refused["error"]["code"] == "STORAGE_NOT_READY", refused
    w.job("POST", f"/v1/hosts/{w.ids['host']}/actions/reconnect", {})
    assert (w.ps_root / ".kvmcloud").is_dir()
    failed = w.run("POST", f"/v1/vms/{vm}/actions/start", {})
    assert failed["state"] == "failed" and root["installPath"] in json.dumps(failed["error"]), failed
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Stopped"

    w.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    restored = w.ok("GET", "/v1/volumes", q=[f"vmUuid={vm}", "type=Root"])["items"][0]
    assert restored["installPath"] != root["installPath"] and int(restored["size"]) == size
    assert "verification failed" not in qemu_io(w.ps_root / restored["installPath"], f"read -P {PATTERN} {at} 64k")
    w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    ip = w.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm}")["items"][0]["ip"]
    w.wait_console(vm, f"{w.guest['GUEST_IP_MARKER']} eth0 {ip}\n", count=2)  # its second boot
