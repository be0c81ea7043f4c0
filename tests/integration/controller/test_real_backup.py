"""VM backup and restore through the controller against the real agents.

A real kvmagent (libvirt, one TCG guest), a real storageagent on a local
primary storage, and a real sftpbackup agent and store in the sshd
component's chroot (the image is added into that store and the host caches
it from there). A running VM is backed up under a live snapshot (QEMU then
only reads the old file, as its overlay's backing file, so the storageagent
copies it) and merged back: it keeps running on its own disk, and no overlay
or copy is left. The stopped VM is backed up with a known pattern on its disk, its root volume
wiped, restored from the store, and it boots again with the pattern there
(a second backup of the same content sends no chunk). That backup is
replicated to a second real store (its agent pulls it from the first over
SFTP, the manifest's digest the recorded one; again: nothing travels) and a
new VM made from the second store boots, with the pattern on its disk.
Deleting the backups empties both stores of them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.controller.realworld import (
    SftpStore,
    World,
    add_backup_storage,
    build_cloud,
    create_vm,
    open_world,
    sftp_store,
)

pytestmark = [pytest.mark.libvirt, pytest.mark.sftp, pytest.mark.netns, pytest.mark.slow]
PATTERN = 0x6b


@dataclass
class Rig:
    w: World
    store: SftpStore
    store2: SftpStore

    def files(self) -> list[str]:
        """Files of the primary storage but the image cache."""
        return sorted(p.relative_to(self.w.ps_root).as_posix() for p in self.w.ps_root.rglob("*")
                      if p.is_file() and p.parts[len(self.w.ps_root.parts)] not in ("imagecache",
                                                                                   ".kvmcloud"))


@pytest.fixture(scope="module")
def rig(component_env: Callable[[str], dict[str, str]]) -> Iterator[Rig]:
    sshd = component_env("sshd")
    sto = {"sftp_key_file": sshd["SSHD_KEY"], "sftp_known_hosts": sshd["SSHD_KNOWN_HOSTS"]}
    with open_world(component_env, sto) as w, sftp_store(sshd, w.url, w.base / "sftp") as store, \
            sftp_store(sshd, w.url, w.base / "sftp2") as store2:
        build_cloud(w, "10.253.12", store=store)
        w.ids["bs2"] = add_backup_storage(w.api, {**store2.body, "name": "second",
                                                   "zoneUuids": [w.ids["zone"]]})
        w.ids["vm"] = create_vm(w, "bk1")
        yield Rig(w, store, store2)


def _root(w: World) -> dict[str, str]:
    root: dict[str, str] = w.ok("GET", "/v1/volumes", q=[f"vmUuid={w.ids['vm']}", "type=Root"])["items"][0]
    return root


def _disks(vm: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", "domblklist", vm], capture_output=True,
                          text=True, check=True, timeout=30).stdout


def qemu_io(path: Path, op: str) -> str:
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c", op, str(path)], capture_output=True,
                       text=True, timeout=60)
    return r.stdout + r.stderr  # a failed pattern check exits 1


def test_a_running_vms_backup_is_copied_under_a_live_snapshot_and_merged_back(rig: Rig) -> None:
    w, vm = rig.w, rig.w.ids["vm"]
    root, files = _root(w), rig.files()
    vb = w.job("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": w.ids["bs"],
                                                       "name": "live"})["result"]
    assert vb["status"] == "Ready" and vb["vmState"] == "Running", vb
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    disks = _disks(vm)
    assert str(w.ps_root / root["installPath"]) in disks, disks  # merged back onto its own file
    assert rig.files() == files  # no overlay, no copy left
    [backup] = w.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}")["items"]
    manifest = json.loads(rig.store.manifest(backup["installPath"]).read_text())
    assert "sha256:" + manifest["digest"] == backup["digest"]
    assert manifest["virtual_size"] == int(root["size"])
    w.ids["live_backup"] = (vb["uuid"], backup["installPath"])


def test_a_stopped_vm_backed_up_wiped_and_restored_boots_with_its_data(rig: Rig) -> None:
    w, vm = rig.w, rig.w.ids["vm"]
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    root = _root(w)
    disk = w.ps_root / root["installPath"]
    size = int(root["size"])
    assert "wrote" in qemu_io(disk, f"write -P {PATTERN} {size - 65536} 64k")  # past the guest's fs
    vb = w.job("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": w.ids["bs"],
                                                       "name": "before-wipe"})["result"]
    assert vb["status"] == "Ready" and vb["vmState"] == "Stopped", vb
    [backup] = w.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}")["items"]
    manifest = json.loads(rig.store.manifest(backup["installPath"]).read_text())
    assert "sha256:" + manifest["digest"] == backup["digest"] and manifest["virtual_size"] == size
    # the same content again: a new backup whose chunks the store has already (none travels)
    chunks = rig.store.chunks()
    again = w.job("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": w.ids["bs"]})["result"]
    [second] = w.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={again['uuid']}")["items"]
    assert second["digest"] == backup["digest"] and second["parentBackupUuid"] == backup["uuid"]
    assert rig.store.chunks() == chunks and rig.store.manifest(second["installPath"]).exists()
    # wipe the root volume: an empty disk of the same size where it was
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(size)], check=True,
                   timeout=30)
    assert "Pattern verification failed" in qemu_io(disk, f"read -P {PATTERN} {size - 65536} 64k")
    w.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    restored = w.ps_root / _root(w)["installPath"]
    assert restored != disk and not disk.exists()
    assert "verification failed" not in qemu_io(restored, f"read -P {PATTERN} {size - 65536} 64k")
    marker = w.guest["GUEST_MARKER"]
    booted = w.console(vm).read_text(errors="replace").count(marker)
    w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    w.wait_console(vm, marker, count=booted + 1, timeout=180)
    w.ids["wiped_vb"] = vb["uuid"]
    live_vb, live_id = w.ids["live_backup"]
    w.ids["vm_backups"] = f"{live_vb},{vb['uuid']},{again['uuid']}"
    w.ids["volume_backups"] = f"{live_id},{backup['installPath']},{second['installPath']}"


def test_a_backup_replicated_to_a_second_store_rebuilds_the_vm_with_its_data(rig: Rig) -> None:
    w, vb = rig.w, rig.w.ids["wiped_vb"]
    [backup] = w.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb}")["items"]
    assert not rig.store2.manifest(backup["installPath"]).exists()
    done = w.job("POST", f"/v1/vm-backups/{vb}/actions/replicate", {"backupStorageUuid": w.ids["bs2"]})
    assert done["result"]["replicated"] == [backup["uuid"]] and done["result"]["chunksSent"] > 0, done
    manifest = json.loads(rig.store2.manifest(backup["installPath"]).read_text())
    assert "sha256:" + manifest["digest"] == backup["digest"]
    again = w.job("POST", f"/v1/vm-backups/{vb}/actions/replicate", {"backupStorageUuid": w.ids["bs2"]})
    assert again["result"]["alreadyPresent"] == [backup["uuid"]] and again["result"]["chunksSent"] == 0
    w.job("POST", f"/v1/vms/{w.ids['vm']}/actions/stop", {"force": True})  # one guest at a time
    made = w.job("POST", f"/v1/vm-backups/{vb}/actions/create-vm",
                 {"name": "bk1-dr", "backupStorageUuid": w.ids["bs2"]})
    vm = made["resourceUuid"]
    w.ids["vms"] = ",".join(v for v in (w.ids.get("vms", ""), vm) if v)
    assert made["result"]["state"] == "Running", made
    root = w.ok("GET", "/v1/volumes", q=[f"vmUuid={vm}", "type=Root"])["items"][0]
    size = int(root["size"])
    ip = w.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm}")["items"][0]["ip"]
    w.wait_console(vm, f"{w.guest['GUEST_IP_MARKER']} eth0 {ip}\n")
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    disk = w.ps_root / root["installPath"]
    assert "verification failed" not in qemu_io(disk, f"read -P {PATTERN} {size - 65536} 64k")
    w.job("DELETE", f"/v1/vms/{vm}", confirm="1")


def test_deleting_the_backups_removes_them_from_the_store(rig: Rig) -> None:
    w = rig.w
    for vb in w.ids["vm_backups"].split(","):
        w.job("DELETE", f"/v1/vm-backups/{vb}", confirm="1")
    for image_id in w.ids["volume_backups"].split(","):
        assert not rig.store.manifest(image_id).exists()
        assert not rig.store2.manifest(image_id).exists()
    assert w.ok("GET", "/v1/volume-backups")["items"] == []
