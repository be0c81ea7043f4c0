"""The controller's main flow on NFS primary storage and an SFTP image store, all real.

A real sftpbackup agent and store in the sshd component's chroot, a real
storageagent whose NFS primary storage is the nfs-ganesha component's export,
a real kvmagent (libvirt, one TCG guest, bridge, dnsmasq in a namespace).
Through the API only: the guest image is added from its HTTP URL into the
SFTP store (then the URL goes away: hosts must read the store), the NFS
storage is added (``server:/export``, no mountPath: the host's mount path is
recorded), a VM is created (the storageagent caches the image from the store
over SFTP, the root volume is a linked clone of the cache), boots and answers
ping at the address the controller allocated; an image is made from the
stopped VM's root volume (flattened, uploaded into the store); deleting the
VM, the images, the zone, the backup storage and the offering leaves nothing in the
database, on the export, in the store after its GC, or on the host.

**The kernel NFS mount is simulated**: this machine's kernel has no NFS
client, so the storageagent's ``mount_helper = "bind"`` bind-mounts the
directory ganesha exports where ``mount -t nfs`` would mount it. Everything
else is real, and the files are read back through ganesha with libnfs
(``nfs-ls``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.db.models import RESOURCES
from storageagent.mounter import mount_source
from tests.integration.controller.realworld import (
    SftpStore,
    World,
    build_cloud,
    create_vm,
    open_world,
    sftp_store,
)
from tests.integration.storageagent.conftest import sha256_of

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.sftp, pytest.mark.netns,
              pytest.mark.slow]


@dataclass
class Rig:
    w: World
    store: SftpStore
    nfs: dict[str, str]
    export: Path  # the directory of the ganesha export this module's storage is
    mount_base: Path  # where the storageagent "mounts" it

    @property
    def url(self) -> str:
        return f"{self.nfs['NFS_SERVER']}:{self.export}"

    def over_nfs(self, rel: str) -> list[str]:
        """The names in a directory of the storage, listed by ganesha (libnfs)."""
        out = subprocess.run(["nfs-ls", f"nfs://{self.nfs['NFS_SERVER']}{self.export}/{rel}"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return [line.split()[-1] for line in out.splitlines() if line.split()]

    def files(self) -> list[Path]:
        """Files on the export, but the storage's own identity (the directory is the operator's)."""
        return [p for p in self.export.rglob("*") if p.is_file() and ".kvmcloud" not in p.parts]


@pytest.fixture(scope="module")
def rig(component_env: Callable[[str], dict[str, str]]) -> Iterator[Rig]:
    nfs, sshd = component_env("nfs"), component_env("sshd")
    tag = uuid.uuid4().hex[:10]
    export = Path(nfs["NFS_EXPORT_DIR"]) / f"t-ctl-{tag}"
    mount_base = Path(nfs["NFS_MOUNT_BASE"]) / f"t-ctl-{tag}"
    export.mkdir(mode=0o755)
    mount_base.mkdir(mode=0o755, parents=True)
    sto = {"mount_base": str(mount_base), "mount_helper": "bind",
           "sftp_key_file": sshd["SSHD_KEY"], "sftp_known_hosts": sshd["SSHD_KNOWN_HOSTS"]}
    try:
        with open_world(component_env, sto, roots=[mount_base]) as w, \
                sftp_store(sshd, w.url, w.base / "sftp") as store:
            yield Rig(w, store, nfs, export, mount_base)
    finally:
        for p in mount_base.iterdir():
            if mount_source(p) is not None:
                subprocess.run(["umount", str(p)], capture_output=True, timeout=30)
        shutil.rmtree(mount_base, ignore_errors=True)
        shutil.rmtree(export, ignore_errors=True)


def _root(w: World, vm: str) -> dict[str, str]:
    root: dict[str, str] = w.ok("GET", "/v1/volumes", q=[f"vmUuid={vm}", "type=Root"])["items"][0]
    return root


def test_a_vm_on_nfs_from_the_sftp_store_boots_and_answers_ping(rig: Rig) -> None:
    w, store = rig.w, rig.store
    ids = build_cloud(w, "10.253.9", ps={"type": "nfs", "url": rig.url}, store=store)
    image = w.ok("GET", f"/v1/images/{ids['image']}")
    assert image["status"] == "Ready" and image["digest"] == ids["digest"], image
    assert json.loads(store.manifest(ids["image"]).read_text())["digest"] == ids["digest"].split(":")[1]
    # hosts must read the image from the store now, not from where it was added from
    (w.base / "images" / "guest.qcow2").rename(w.base / "images" / "gone.qcow2")
    ps = w.ok("GET", f"/v1/primary-storages/{ids['ps']}")
    mount = rig.mount_base / ids["ps"]
    assert ps["mountPath"] == str(mount) and mount_source(mount) is not None, ps

    vm = create_vm(w, "nfs1")
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    cache = rig.export / "imagecache" / f"{ids['image']}.qcow2"
    assert sha256_of(cache) == ids["digest"]
    assert cache.name in rig.over_nfs("imagecache")
    root = _root(w, vm)
    disk = rig.export / root["installPath"]
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     capture_output=True, check=True, timeout=30).stdout)
    assert info["backing-filename"] == f"../imagecache/{cache.name}", info  # a linked clone
    assert Path(info["full-backing-filename"]).resolve() == cache.resolve()
    ip = w.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm}")["items"][0]["ip"]
    ping = subprocess.run(["ip", "netns", "exec", f"kvmcloud-dhcp-{ids['l3'][:12]}", "ping", "-c", "3",
                           "-W", "2", ip], capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    ids["vm"] = vm


def test_an_image_from_the_stopped_vms_root_volume_lands_in_the_store(rig: Rig) -> None:
    w, ids = rig.w, rig.w.ids
    vm = ids["vm"]
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    root = _root(w, vm)
    made = w.job("POST", f"/v1/volumes/{root['uuid']}/actions/create-image",
                 {"name": "from-root", "backupStorageUuid": ids["bs"]})["result"]
    image = w.ok("GET", f"/v1/images/{made['uuid']}")
    assert image["status"] == "Ready" and image["digest"].startswith("sha256:"), image
    assert image["mediaType"] == "RootVolumeTemplate" and image["format"] == "qcow2", image
    manifest = json.loads(rig.store.manifest(made["uuid"]).read_text())
    assert "sha256:" + manifest["digest"] == image["digest"]
    assert manifest["virtual_size"] == image["size"] == root["size"]
    ids["image2"] = made["uuid"]
    # the flattened copy it uploaded is gone from the storage
    assert sorted(p.relative_to(rig.export).as_posix() for p in rig.files()) == sorted(
        [f"imagecache/{ids['image']}.qcow2", f"imagecache/{ids['image']}.json", root["installPath"]])


def test_deleting_everything_leaves_nothing(rig: Rig) -> None:
    w, ids, store = rig.w, rig.w.ids, rig.store
    w.job("DELETE", f"/v1/vms/{ids['vm']}", confirm="1")
    for image in (ids["image"], ids["image2"]):
        w.job("DELETE", f"/v1/images/{image}", confirm="1")
    w.job("DELETE", f"/v1/zones/{ids['zone']}", confirm="1")
    w.job("DELETE", f"/v1/backup-storages/{ids['bs']}", confirm="1")
    w.job("DELETE", f"/v1/instance-offerings/{ids['offering']}", confirm="1")
    with w.ctl.db.read() as s:
        left = {coll: n for coll, model in RESOURCES.items()
                if (n := s.scalar(select(func.count()).select_from(model)))}
    assert left == {}, left
    del ids["zone"]
    # the export: no volume, no cache; not mounted any more
    assert rig.files() == [] and mount_source(rig.mount_base / ids["ps"]) is None
    assert rig.over_nfs("imagecache") == []
    # the store, once its agent collected what no manifest names
    assert not list((store.store_dir / "manifests").glob("*.json"))
    gc = store.agent.call("/backup/gc", {"backupStorageUuid": ids["bs"],
                                         "root": str(store.store_dir), "graceSeconds": 0})
    assert gc["success"], gc
    assert store.chunks() == []
    # the host: no domain, DHCP namespace or bridge
    assert ids["vm"] not in subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                                           capture_output=True, text=True, timeout=30).stdout
    assert not Path(f"/run/netns/kvmcloud-dhcp-{ids['l3'][:12]}").exists()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    assert f"br{ids['l2'][:12]}:" not in links
