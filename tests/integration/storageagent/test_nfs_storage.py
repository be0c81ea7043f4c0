"""NFS primary storage against a real nfs-ganesha export.

This kernel has no NFS client, so the agent's mount step runs with
``mount_helper = "bind"``: a bind mount of the directory ganesha exports
stands in for ``mount -t nfs``. Everything after the mount runs on the real
exported tree, and what the agent writes is read back through a real NFS
client (libnfs: nfs-ls, nfs-cat, and QEMU's nfs:// block driver).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.storageagent.conftest import Storage, nfs_url
from tests.support.agents import AgentProcess

pytestmark = pytest.mark.nfs


def libnfs(nfs_env: dict[str, str], sub: Path, rel: str = "") -> str:
    return f"nfs://{nfs_env['NFS_SERVER']}{sub}" + (f"/{rel}" if rel else "")


def nfs_run(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=30).stdout


def test_export_reachable_through_libnfs(nfs_env: dict[str, str]) -> None:
    out = nfs_run("nfs-ls", nfs_env["NFS_LIBNFS_URL"])
    assert isinstance(out, str)
    out4 = nfs_run("nfs-ls", nfs_env["NFS_LIBNFS_URL"] + "?version=4")
    assert isinstance(out4, str)


def test_mount_bind_standin_is_idempotent_and_files_show_over_nfs(
    agent: AgentProcess, nfs_env: dict[str, str], export_subdir: Path, mount_base: Path
) -> None:
    su = f"ps-{uuid.uuid4().hex[:12]}"
    export_subdir = export_subdir / "idem"
    export_subdir.mkdir()
    url = nfs_url(nfs_env, export_subdir)
    first = agent.call("/storage/mount", {"storageUuid": su, "url": url, "nfsVersion": "3"})
    assert first["success"], first
    assert first["mountPath"] == str(mount_base / su)
    assert first["alreadyMounted"] is False
    assert first["capacity"]["totalBytes"] > 0
    again = agent.call("/storage/mount", {"storageUuid": su, "url": url, "nfsVersion": "3"})
    assert again["success"] and again["alreadyMounted"] is True

    s = Storage(agent, su, Path(first["mountPath"]))
    s.ok("/storage/volume/create-empty", installPath="vols/data1.qcow2", size=64 << 20)
    # read back through the NFS server, not the local tree
    marker = json.loads(nfs_run("nfs-cat", libnfs(nfs_env, export_subdir, ".kvmcloud/storage.json")))
    assert marker["storageUuid"] == su
    assert "data1.qcow2" in nfs_run("nfs-ls", libnfs(nfs_env, export_subdir, "vols"))
    info = json.loads(nfs_run("qemu-img", "info", "--output=json",
                              libnfs(nfs_env, export_subdir, "vols/data1.qcow2")))
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 << 20

    s.ok("/storage/volume/delete", installPath="vols/data1.qcow2")
    assert "data1.qcow2" not in nfs_run("nfs-ls", libnfs(nfs_env, export_subdir, "vols"))

    down = agent.call("/storage/unmount", {"storageUuid": su})
    assert down["success"] and down["wasMounted"] is True
    assert not os.path.ismount(mount_base / su)
    assert agent.call("/storage/unmount", {"storageUuid": su})["wasMounted"] is False
    # unmounted: the volume commands refuse to write into the bare mount point
    gone = s.call("/storage/volume/create-empty", installPath="v.qcow2", size=1 << 20)
    assert gone["error"]["code"] == "STORAGE_NOT_READY"
    assert list((mount_base / su).iterdir()) == []


def test_mount_refuses_another_export_and_a_nonempty_directory(
    agent: AgentProcess, nfs_storage: Storage, nfs_env: dict[str, str], mount_base: Path
) -> None:
    other = agent.call("/storage/mount", {"storageUuid": nfs_storage.uuid,
                                          "url": nfs_url(nfs_env, Path(nfs_env["NFS_EXPORT_DIR"]))})
    assert other["success"] is False and other["error"]["code"] == "CONFLICT"
    assert other["error"]["details"]["field"] == "url"

    su = f"ps-{uuid.uuid4().hex[:12]}"
    (mount_base / su).mkdir()
    (mount_base / su / "precious").write_text("x")
    busy = agent.call("/storage/mount", {"storageUuid": su, "url": nfs_url(nfs_env, Path("/nonexistent"))})
    assert busy["error"]["code"] == "CONFLICT"
    assert not os.path.ismount(mount_base / su)
    assert (mount_base / su / "precious").read_text() == "x"


def test_ping_and_capacity(nfs_storage: Storage, nfs_env: dict[str, str]) -> None:
    assert nfs_storage.export is not None
    r = nfs_storage.ok("/storage/ping", url=nfs_url(nfs_env, nfs_storage.export), probeTimeout=10)
    assert r["storageUuid"] == nfs_storage.uuid
    cap = nfs_storage.ok("/storage/capacity")["capacity"]
    assert cap["totalBytes"] >= cap["availableBytes"] > 0
    assert cap["usedByKvmcloudBytes"] > 0


def test_ping_fails_within_its_timeout_when_the_nfs_server_is_stopped(
    nfs_storage: Storage, nfs_env: dict[str, str]
) -> None:
    assert nfs_storage.export is not None
    url = nfs_url(nfs_env, nfs_storage.export)
    pid = int(Path(nfs_env["NFS_GANESHA_PIDFILE"]).read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        # the agent answers (with an error) although the server never does
        r = nfs_storage.call("/storage/ping", url=url, probeTimeout=3)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r["success"] is False
    assert r["error"]["code"] == "STORAGE_UNREACHABLE"
    assert r["error"]["details"]["cause"] == "PROCESS_TIMEOUT"
    assert nfs_storage.call("/storage/ping", url=url)["success"]
