"""Local-directory and shared-mount-point storage (no NFS: the operator's shared
filesystem is stood in for by a bind mount of a directory)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.storageagent.conftest import Storage
from tests.support.agents import AgentProcess


@pytest.fixture
def shared_mount(workdir: Path) -> Iterator[Path]:
    src = workdir / f"shared-src-{uuid.uuid4().hex[:6]}"
    target = workdir / "local" / f"shared-{uuid.uuid4().hex[:6]}"
    src.mkdir()
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(src), str(target)], check=True, timeout=30)
    yield target
    subprocess.run(["umount", str(target)], check=False, timeout=30)


def test_local_storage_init_is_idempotent_and_owned_by_one_storage(agent: AgentProcess, workdir: Path) -> None:
    su = f"ps-{uuid.uuid4().hex[:12]}"
    s = Storage(agent, su, workdir / "local" / su)
    first = s.ok("/storage/init", type="local")
    assert first["mountPath"] == str(s.root) and first["capacity"]["totalBytes"] > 0
    s.ok("/storage/init", type="local")
    s.ok("/storage/ping")
    s.ok("/storage/volume/create-empty", installPath="a.qcow2", size=1 << 20)
    assert s.ok("/storage/capacity")["capacity"]["usedByKvmcloudBytes"] > 0
    thief = agent.call("/storage/init", {"storageUuid": "ps-other", "mountPath": str(s.root), "type": "local"})
    assert thief["success"] is False and thief["error"]["code"] == "STORAGE_NOT_READY"
    assert thief["error"]["details"]["owner"] == su


def test_shared_mount_point_must_be_mounted(agent: AgentProcess, workdir: Path, shared_mount: Path) -> None:
    plain = workdir / "local" / f"plain-{uuid.uuid4().hex[:6]}"
    plain.mkdir()
    r = agent.call("/storage/init", {"storageUuid": "ps-smp1", "mountPath": str(plain), "type": "sharedmountpoint"})
    assert r["success"] is False and r["error"]["code"] == "CONFLICT"
    assert list(plain.iterdir()) == []
    s = Storage(agent, f"ps-{uuid.uuid4().hex[:12]}", shared_mount)
    s.ok("/storage/init", type="sharedmountpoint")
    s.ok("/storage/volume/create-empty", installPath="v/a.qcow2", size=1 << 20)
    assert s.ok("/storage/volume/info", installPath="v/a.qcow2")["volume"]["format"] == "qcow2"
