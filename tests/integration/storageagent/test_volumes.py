"""Volumes and snapshots on NFS primary storage (ganesha export; a bind mount
stands in for the kernel NFS mount), checked with qemu-img, qemu-io and a
real QEMU (TCG) booting the tiny guest from a linked clone."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.storageagent.conftest import (
    Storage,
    agent_extra,
    local_storage,
    nfs_url,
    qemu_img,
    sha256_of,
)
from tests.support.agents import AgentProcess, CallbackReceiver, python_agent, wait_until
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.nfs

MiB = 1 << 20


def qemu_io(path: Path, *cmds: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        argv += ["-c", c]
    out = subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=60, check=True)
    assert "Pattern verification failed" not in out.stdout + out.stderr, out.stdout


def check_clean(path: Path) -> None:
    r = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No errors were found" in r.stdout


def chain(s: Storage, rel: str) -> list[str]:
    return [c["installPath"] for c in s.ok("/storage/volume/info", installPath=rel)["volume"]["backingChain"]]


@pytest.fixture(scope="module")
def guest(component_env: Any) -> dict[str, str]:
    return dict(component_env("guest"))


@pytest.fixture(scope="module")
def cached_guest(nfs_storage: Storage, guest: dict[str, str]) -> str:
    """The tiny guest image, cached into the NFS storage over HTTP."""
    image = Path(guest["GUEST_IMAGE"])
    with FileServer(image.parent) as srv:
        r = nfs_storage.ok("/storage/cache-image", imageId="guest", digest=sha256_of(image),
                           source={"kind": "http", "url": srv.url(image.name)})
    return str(r["image"]["installPath"])


@pytest.fixture
def kvmagent(workdir: Path, nfs_storage: Storage, component_env: Any) -> Iterator[AgentProcess]:
    """The real KVM agent (libvirtd, TCG), allowed to use the NFS storage's tree."""
    libvirt = component_env("libvirt")
    home = workdir / f"kvmagent-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    receiver = CallbackReceiver().start()
    a = AgentProcess(python_agent("kvmagent.app"), home, controller_urls=[receiver.url], extra={
        "libvirt_uri": libvirt["LIBVIRT_URI"], "domain_type": libvirt["LIBVIRT_DOMAIN_TYPE"],
        "storage_roots": [str(nfs_storage.root)], "console_dir": home / "console",
    })
    a.start()
    yield a
    a.stop()
    receiver.stop()


@pytest.mark.slow
@pytest.mark.libvirt
def test_root_volume_clone_booted_by_the_kvm_agent_and_not_deleted_while_qemu_holds_it(
    nfs_storage: Storage, cached_guest: str, guest: dict[str, str], kvmagent: AgentProcess
) -> None:
    s = nfs_storage
    vsize = json.loads(qemu_img("info", "--output=json", guest["GUEST_IMAGE"]))["virtual-size"]
    r = s.ok("/storage/volume/create-root", imageId="guest", installPath="vm1/root.qcow2", size=vsize + 64 * MiB)
    vol = r["volume"]
    assert vol["virtualSize"] == vsize + 64 * MiB
    assert [c["installPath"] for c in vol["backingChain"]] == [cached_guest]
    assert chain(s, "vm1/root.qcow2") == [cached_guest]
    # the backing name is relative, so the storage works wherever it is mounted
    info = qemu_img("info", "--output=json", str(s.path("vm1/root.qcow2")))
    assert '"backing-filename": "../imagecache/guest.qcow2"' in info
    check_clean(s.path("vm1/root.qcow2"))

    vm = str(uuid.uuid4())
    body = {"vmUuid": vm, "vmName": "sa-" + vm[:8], "cpuNum": 1, "memorySize": 128 << 20,
            "rootVolume": {"type": "file", "volumeUuid": str(uuid.uuid4()), "deviceId": 0,
                           "installPath": str(s.path("vm1/root.qcow2"))}}
    started = kvmagent.call("/vm/start", body)
    assert started["success"], started
    console = kvmagent.workdir / "console" / f"{vm.replace('-', '')}.log"
    try:
        wait_until(lambda: console.exists() and guest["GUEST_MARKER"] in console.read_text(errors="replace"),
                   180, 0.2, "the guest booted from the linked clone on the NFS tree")
        busy = s.call("/storage/volume/delete", installPath="vm1/root.qcow2")
        assert busy["success"] is False and busy["error"]["code"] == "IN_USE"
        assert busy["error"]["details"]["holders"][0]["comm"].startswith("qemu")
        snap = s.call("/storage/snapshot/create", installPath="vm1/root.qcow2", snapshotPath="vm1/s1.qcow2")
        assert snap["error"]["code"] == "IN_USE"
        assert s.path("vm1/root.qcow2").is_file() and not s.path("vm1/s1.qcow2").exists()
        assert s.call("/storage/cache/evict", imageId="guest")["error"]["code"] == "IN_USE"
    finally:
        assert kvmagent.call("/vm/destroy", {"vmUuid": vm})["success"]
    wait_until(lambda: s.call("/storage/volume/delete", installPath="vm1/root.qcow2")["success"],
               30, 0.2, "QEMU let go of the volume")
    assert not s.path("vm1/root.qcow2").exists()


def test_snapshot_revert_and_merge_keep_the_chain_consistent(nfs_storage: Storage) -> None:
    s = nfs_storage
    vol = "snapvm/data.qcow2"
    s.ok("/storage/volume/create-empty", installPath=vol, size=16 * MiB)
    qemu_io(s.path(vol), "write -P 0x11 0 1M")
    s.ok("/storage/snapshot/create", installPath=vol, snapshotPath="snapvm/snaps/s1.qcow2")
    qemu_io(s.path(vol), "write -P 0x22 1M 1M")
    s.ok("/storage/snapshot/create", installPath=vol, snapshotPath="snapvm/snaps/s2.qcow2")
    qemu_io(s.path(vol), "write -P 0x33 0 512k")
    assert chain(s, vol) == ["snapvm/snaps/s2.qcow2", "snapvm/snaps/s1.qcow2"]
    for p in (vol, "snapvm/snaps/s2.qcow2", "snapvm/snaps/s1.qcow2"):
        check_clean(s.path(p))
    qemu_io(s.path(vol), "read -P 0x33 0 512k", "read -P 0x11 512k 512k", "read -P 0x22 1M 1M")

    r = s.ok("/storage/snapshot/revert", installPath=vol, snapshotPath="snapvm/snaps/s1.qcow2")
    assert [c["installPath"] for c in r["volume"]["backingChain"]] == ["snapvm/snaps/s1.qcow2"]
    qemu_io(s.path(vol), "read -P 0x11 0 1M", "read -P 0 1M 1M")
    check_clean(s.path(vol))
    # s2 left the chain: deletable; s1 still backs the volume
    assert s.ok("/storage/volume/delete", installPath="snapvm/snaps/s2.qcow2")["deleted"] is True
    busy = s.call("/storage/volume/delete", installPath="snapvm/snaps/s1.qcow2")
    assert busy["error"]["code"] == "IN_USE" and busy["error"]["details"]["backedBy"] == [vol]

    qemu_io(s.path(vol), "write -P 0x44 2M 1M")
    merged = s.ok("/storage/snapshot/merge", installPath=vol)
    assert merged["volume"]["backingChain"] == []
    qemu_io(s.path(vol), "read -P 0x11 0 1M", "read -P 0 1M 1M", "read -P 0x44 2M 1M")
    check_clean(s.path(vol))
    assert s.ok("/storage/volume/delete", installPath="snapvm/snaps/s1.qcow2")["deleted"] is True
    s.ok("/storage/volume/delete", installPath=vol)


def test_merge_onto_the_cached_image_and_revert_refuses_foreign_snapshots(
    nfs_storage: Storage, cached_guest: str
) -> None:
    s = nfs_storage
    vol = "mergevm/root.qcow2"
    s.ok("/storage/volume/create-root", imageId="guest", installPath=vol)
    qemu_io(s.path(vol), "write -P 0x55 4M 1M")
    s.ok("/storage/snapshot/create", installPath=vol, snapshotPath="mergevm/s1.qcow2")
    qemu_io(s.path(vol), "write -P 0x66 5M 1M")
    assert chain(s, vol) == ["mergevm/s1.qcow2", cached_guest]
    bad = s.call("/storage/snapshot/revert", installPath=vol, snapshotPath="snapvm/none.qcow2")
    assert bad["success"] is False and bad["error"]["details"]["field"] == "snapshotPath"

    r = s.ok("/storage/snapshot/merge", installPath=vol, basePath=cached_guest)
    assert [c["installPath"] for c in r["volume"]["backingChain"]] == [cached_guest]
    qemu_io(s.path(vol), "read -P 0x55 4M 1M", "read -P 0x66 5M 1M")
    check_clean(s.path(vol))
    s.ok("/storage/volume/delete", installPath="mergevm/s1.qcow2")
    s.ok("/storage/volume/delete", installPath=vol)


def test_resize_copy_and_volume_from_template(
    nfs_storage: Storage, cached_guest: str, agent: AgentProcess, workdir: Path
) -> None:
    s = nfs_storage
    vol = "rsz/data.qcow2"
    s.ok("/storage/volume/create-empty", installPath=vol, size=8 * MiB)
    qemu_io(s.path(vol), "write -P 0x77 0 1M")
    assert s.ok("/storage/volume/resize", installPath=vol, size=32 * MiB)["volume"]["virtualSize"] == 32 * MiB
    refused = s.call("/storage/volume/resize", installPath=vol, size=4 * MiB)
    assert refused["error"]["code"] == "INVALID_REQUEST" and refused["error"]["details"]["field"] == "size"
    assert s.ok("/storage/volume/info", installPath=vol)["volume"]["virtualSize"] == 32 * MiB
    forced = s.ok("/storage/volume/resize", installPath=vol, size=4 * MiB, force=True)
    assert forced["volume"]["virtualSize"] == 4 * MiB
    qemu_io(s.path(vol), "read -P 0x77 0 1M")

    other = local_storage(agent, workdir)
    copied = s.ok("/storage/volume/copy", installPath=vol, dstStorageUuid=other.uuid,
                  dstMountPath=str(other.root), dstInstallPath="copies/data.qcow2")
    assert copied["volume"]["virtualSize"] == 4 * MiB
    subprocess.run(["qemu-img", "compare", str(s.path(vol)), str(other.path("copies/data.qcow2"))],
                   check=True, capture_output=True, timeout=60)

    tpl = s.ok("/storage/volume/create-from-template", imageId="guest", installPath="rsz/fromtpl.qcow2",
               size=128 * MiB)
    assert tpl["volume"]["backingChain"] == [] and tpl["volume"]["virtualSize"] == 128 * MiB
    check_clean(s.path("rsz/fromtpl.qcow2"))
    for p in (vol, "rsz/fromtpl.qcow2"):
        s.ok("/storage/volume/delete", installPath=p)


def random_volume(s: Storage, rel: str, tmp_path: Path, mib: int = 160) -> None:
    """A qcow2 volume full of incompressible data: compressing it takes seconds."""
    raw = tmp_path / f"random-{uuid.uuid4().hex[:6]}.raw"
    raw.write_bytes(os.urandom(mib * MiB))
    s.path(rel).parent.mkdir(parents=True, exist_ok=True)
    qemu_img("convert", "-O", "qcow2", str(raw), str(s.path(rel)))
    raw.unlink()


@pytest.mark.slow
def test_create_template_reports_progress_and_cancel_leaves_nothing(nfs_storage: Storage, tmp_path: Path) -> None:
    s = nfs_storage
    random_volume(s, "tplc/vol.qcow2", tmp_path)
    partial = s.root / ".kvmcloud" / "partial"
    task = f"tplc-{uuid.uuid4().hex}"
    result: dict[str, Any] = {}
    body = {**s.ref, "installPath": "tplc/vol.qcow2", "templatePath": "tplc/tpl.qcow2", "compress": True}
    t = threading.Thread(target=lambda: result.update(
        s.agent.call("/storage/volume/create-template", body, taskuuid=task)))
    t.start()

    def converting() -> bool:
        p = s.agent.client.get(f"/tasks/{task}").json().get("progress") or {}
        return p.get("stage") == "convert" and bool(p.get("done"))

    wait_until(converting, 30, 0.05, "convert progress")
    assert s.agent.client.post(f"/tasks/{task}/cancel").status_code == 200
    t.join(30)
    assert result["success"] is False and result["error"]["code"] == "CANCELLED"
    assert not s.path("tplc/tpl.qcow2").exists()
    assert list(partial.iterdir()) == []
    s.ok("/storage/volume/delete", installPath="tplc/vol.qcow2")


@pytest.fixture
def second_agent(workdir: Path, mount_base: Path) -> Iterator[AgentProcess]:
    home = workdir / f"agent-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    a = AgentProcess(python_agent("storageagent.app"), home, extra=agent_extra(workdir, mount_base))
    a.start()
    yield a
    a.stop()


def _pids_with(arg: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if arg.encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
def test_agent_killed_during_create_template_leaves_no_half_template(
    second_agent: AgentProcess, nfs_storage: Storage, nfs_env: dict[str, str], tmp_path: Path
) -> None:
    a = second_agent
    assert nfs_storage.export is not None
    # the restarted agent knows the storage because it mounted it itself
    m = a.call("/storage/mount", {"storageUuid": nfs_storage.uuid, "url": nfs_url(nfs_env, nfs_storage.export)})
    assert m["success"] and m["alreadyMounted"] is True
    s = Storage(a, nfs_storage.uuid, nfs_storage.root)
    random_volume(s, "tplsrc/vol.qcow2", tmp_path)
    partial = s.root / ".kvmcloud" / "partial"
    task = f"tpl-{uuid.uuid4().hex}"
    body = {**s.ref, "installPath": "tplsrc/vol.qcow2", "templatePath": "tpl/half.qcow2", "compress": True}
    def post() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the agent dies under this request
            a.post("/storage/volume/create-template", body, taskuuid=task)

    t = threading.Thread(target=post, daemon=True)
    t.start()
    wait_until(lambda: partial.is_dir() and any(p.stat().st_size > 0 for p in partial.iterdir()),
               30, 0.02, "qemu-img convert writing the partial template")
    a.kill9()
    for pid in _pids_with(str(partial)):  # the orphaned qemu-img the agent started
        os.kill(pid, 9)
    wait_until(lambda: not _pids_with(str(partial)), 10, what="qemu-img gone")
    a.start()
    assert not s.path("tpl/half.qcow2").exists()
    assert list(partial.iterdir()) == []
    st = a.client.get(f"/tasks/{task}").json()
    assert st["state"] == "interrupted"
    # the storage is usable: the template can now be made in full
    done = s.ok("/storage/volume/create-template", installPath="tplsrc/vol.qcow2", templatePath="tpl/full.qcow2")
    assert done["volume"]["backingChain"] == []
    check_clean(s.path("tpl/full.qcow2"))
    for p in ("tplsrc/vol.qcow2", "tpl/full.qcow2"):
        s.ok("/storage/volume/delete", installPath=p)
