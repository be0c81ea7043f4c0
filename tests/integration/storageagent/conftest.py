"""A real storageagent process and storages on the ganesha export and local dirs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import AgentProcess, python_agent


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (to show that a refused command touched nothing)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True,
                          timeout=120).stdout


class Storage:
    """One primary storage of the agent under test."""

    def __init__(self, agent: AgentProcess, storage_uuid: str, mount_path: Path) -> None:
        self.agent = agent
        self.uuid = storage_uuid
        self.root = mount_path
        self.ref = {"storageUuid": storage_uuid, "mountPath": str(mount_path)}
        self.export: Path | None = None  # for NFS: the exported directory

    def call(self, path: str, **body: Any) -> dict[str, Any]:
        return self.agent.call(path, {**self.ref, **body})

    def ok(self, path: str, **body: Any) -> dict[str, Any]:
        reply = self.call(path, **body)
        assert reply["success"], reply
        return reply

    def path(self, rel: str) -> Path:
        return self.root / rel


@pytest.fixture(scope="session")
def nfs_env(component_env: Any) -> dict[str, str]:
    return dict(component_env("nfs"))


@pytest.fixture(scope="session")
def sshd_env(component_env: Any) -> dict[str, str]:
    return dict(component_env("sshd"))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storageagent")


@pytest.fixture(scope="session")
def mount_base(nfs_env: dict[str, str]) -> Iterator[Path]:
    """This session's own directory of mount points (bind mounts stand in for NFS
    mounts). It lies under the NFS component's directory, which QEMU (running as
    libvirt-qemu) can traverse, unlike pytest's temporary directories."""
    base = Path(nfs_env["NFS_MOUNT_BASE"]) / f"t-{uuid.uuid4().hex[:8]}"
    base.mkdir(parents=True)
    yield base
    for p in base.iterdir():
        if os.path.ismount(p):
            subprocess.run(["umount", str(p)], check=False, timeout=30)
    shutil.rmtree(base, ignore_errors=True)


def agent_extra(workdir: Path, mount_base: Path, sshd_env: dict[str, str] | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "storage_base_dirs": [workdir / "local"],
        "mount_base": mount_base,
        "mount_helper": "bind",
        "download_allow_local": True,  # the test image servers listen on 127.0.0.1
    }
    if sshd_env is not None:
        extra["sftp_key_file"] = sshd_env["SSHD_KEY"]
        extra["sftp_known_hosts"] = sshd_env["SSHD_KNOWN_HOSTS"]
    return extra


@pytest.fixture(scope="session")
def agent(workdir: Path, mount_base: Path, sshd_env: dict[str, str]) -> Iterator[AgentProcess]:
    """One storage agent for the whole session; its config names the host's SFTP
    key and known_hosts (the sshd component's), as Ansible would provision them."""
    home = workdir / "agent"
    home.mkdir()
    a = AgentProcess(python_agent("storageagent.app"), home,
                     extra=agent_extra(workdir, mount_base, sshd_env))
    a.start()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def export_subdir(nfs_env: dict[str, str]) -> Iterator[Path]:
    """A directory of the ganesha export of its own (the export is shared by modules)."""
    d = Path(nfs_env["NFS_EXPORT_DIR"]) / f"t-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def nfs_url(nfs_env: dict[str, str], sub: Path) -> str:
    return f"{nfs_env['NFS_SERVER']}:{sub}"


@pytest.fixture(scope="module")
def nfs_storage(agent: AgentProcess, nfs_env: dict[str, str], export_subdir: Path,
                mount_base: Path) -> Iterator[Storage]:
    """An NFS primary storage 'mounted' by the agent (bind stand-in) on the ganesha export."""
    su = f"ps-{uuid.uuid4().hex[:12]}"
    export = export_subdir / "main"
    export.mkdir()
    reply = agent.call("/storage/mount", {"storageUuid": su, "url": nfs_url(nfs_env, export)})
    assert reply["success"], reply
    s = Storage(agent, su, Path(reply["mountPath"]))
    s.export = export
    yield s
    agent.call("/storage/unmount", {"storageUuid": su})


def local_storage(agent: AgentProcess, workdir: Path) -> Storage:
    su = f"ps-{uuid.uuid4().hex[:12]}"
    root = workdir / "local" / su
    s = Storage(agent, su, root)
    s.ok("/storage/init", type="local")
    return s
