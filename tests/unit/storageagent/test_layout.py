"""Path confinement and the storage marker."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentcore.errors import InvalidRequest, PathEscape
from storageagent.layout import StorageNotReady, StorageRoot
from storageagent.volumes import install


@pytest.fixture
def sr(tmp_path: Path) -> StorageRoot:
    root = tmp_path / "ps"
    root.mkdir()
    return StorageRoot("ps-1", root)


def test_resolve_keeps_paths_inside_the_root(sr: StorageRoot) -> None:
    assert sr.resolve("a/b.qcow2") == sr.root / "a" / "b.qcow2"
    for bad in ("../x", "/etc/passwd", "a/../../x", "", "a//b"):
        with pytest.raises(PathEscape) as e:
            sr.resolve(bad, "snapshotPath")
        assert e.value.details["field"] == "snapshotPath"


def test_symlinks_out_of_the_root_are_refused(sr: StorageRoot, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, sr.root / "dir")
    os.symlink(outside / "f", sr.root / "file")
    os.symlink(sr.root / "real", sr.root / "inside")
    for rel in ("dir/x", "file", "dir"):
        with pytest.raises(PathEscape):
            sr.resolve(rel)
    assert sr.resolve("inside") == sr.root / "real"


def test_reserved_trees_are_not_volumes(sr: StorageRoot) -> None:
    for rel in ("imagecache/x.qcow2", ".kvmcloud/storage.json"):
        with pytest.raises(InvalidRequest):
            sr.resolve_volume(rel)
    assert sr.resolve_volume("imagecachex/v") == sr.root / "imagecachex" / "v"


def test_relative_names_files_of_the_root_only(sr: StorageRoot, tmp_path: Path) -> None:
    assert sr.relative(sr.root / "a" / "b") == "a/b"
    with pytest.raises(PathEscape):
        sr.relative(tmp_path / "elsewhere")


def test_claim_marks_the_root_and_refuses_another_storage(sr: StorageRoot) -> None:
    with pytest.raises(StorageNotReady):
        sr.check()
    sr.claim("local")
    sr.check()
    sr.claim("local")  # idempotent
    other = StorageRoot("ps-2", sr.root)
    with pytest.raises(StorageNotReady):
        other.claim("local")
    with pytest.raises(StorageNotReady):
        other.check()


def test_sweep_removes_partial_files(sr: StorageRoot) -> None:
    a, b = sr.tmp_file("x"), sr.tmp_file("x")
    assert a != b and a.parent == sr.tmp
    a.write_bytes(b"half")
    assert sr.sweep_tmp() == 1
    assert list(sr.tmp.iterdir()) == []


def test_trees_qemu_reaches_are_searchable_under_umask_077(tmp_path: Path) -> None:
    # QEMU runs as another user: a strict umask must not make 0700 directories on its way
    old = os.umask(0o077)
    try:
        sr = StorageRoot("ps-1", tmp_path / "root")
        (tmp_path / "root").mkdir()
        sr.claim("local")
        part = sr.tmp_file("vol")
        part.write_bytes(b"qcow2")
        dest = sr.resolve_volume("vms/v1/root.qcow2")
        install(part, dest)
    finally:
        os.umask(old)
    for d in (sr.root / ".kvmcloud", sr.tmp, sr.root / "vms", sr.root / "vms" / "v1"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
