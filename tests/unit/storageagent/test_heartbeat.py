"""Heartbeat files: written only into a claimed storage, their age read by any host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storageagent.app import Config
from storageagent.heartbeat import Heartbeats, age_of, beat, heartbeat_file
from storageagent.layout import StorageRoot
from storageagent.models import HeartbeatAgeCmd
from storageagent.plugins.storage import StoragePlugin
from storageagent.service import StorageService
from tests.support.agents import wait_until

PS = "a" * 32
HOST = "b" * 32


def claimed(path: Path) -> Path:
    path.mkdir(parents=True)
    StorageRoot(PS, path).claim("nfs")
    return path


def test_a_beat_is_aged_by_its_mtime(tmp_path: Path) -> None:
    root = claimed(tmp_path / "share")
    assert age_of(root, HOST) is None
    beat(root, HOST)
    mtime = heartbeat_file(root, HOST).stat().st_mtime
    assert age_of(root, HOST, now=mtime + 7.5) == 7.5
    assert age_of(root, HOST, now=mtime - 3) == 0.0  # a reader's clock behind
    assert age_of(root, "c" * 32) is None


def test_no_beat_into_an_unmounted_mount_point(tmp_path: Path) -> None:
    empty = tmp_path / "mnt" / PS
    empty.mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        beat(empty, HOST)
    assert list(empty.iterdir()) == []  # the next mount would refuse a non-empty directory


def test_heartbeats_beat_until_stopped(tmp_path: Path) -> None:
    root = claimed(tmp_path / "share")
    beats = Heartbeats(interval=0.05)
    beats.start(PS, root, HOST)
    try:
        wait_until(lambda: age_of(root, HOST) is not None, 10, what="a first beat")
        os.utime(heartbeat_file(root, HOST), (0, 0))  # as old as can be: the next beat renews it
        wait_until(lambda: (age_of(root, HOST) or 1e9) < 3600, 10, what="the next beat")
        assert beats.beating() == [PS]
    finally:
        beats.stop(PS)
    assert beats.beating() == []


def test_the_age_command_reads_the_mounted_storage(tmp_path: Path) -> None:
    cfg = Config(token="t" * 20, state_dir=tmp_path / "state", storage_base_dirs=[tmp_path / "ps"],
                 mount_base=tmp_path / "mnt", mount_helper="bind")
    (tmp_path / "state").mkdir()
    svc = StorageService(cfg)
    root = claimed(svc.mount_path_of(PS))
    plugin = StoragePlugin(svc)
    cmd = HeartbeatAgeCmd(storage_uuid=PS, host_uuid=HOST)
    assert plugin.heartbeat_age(None, cmd).age is None  # type: ignore[arg-type]
    beat(root, HOST)
    age = plugin.heartbeat_age(None, cmd).age  # type: ignore[arg-type]
    assert age is not None and age >= 0
