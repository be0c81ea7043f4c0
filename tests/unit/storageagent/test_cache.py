"""The image cache with an in-process image tool and fetcher (no processes)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from agentcore.errors import Conflict, InUse, InvalidRequest, PathEscape
from agentcore.task import TaskContext, detached_context
from storageagent.cache import DigestMismatch, Fetched, ImageCache
from storageagent.layout import StorageRoot
from storageagent.qemuimg import ImageInfo
from tests.unit.storageagent.test_qcow2 import write_qcow2

DATA = b"image-bytes" * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class FakeTool:
    """``info_chain`` of the image tool: the format it is told, and a backing file."""

    def __init__(self, backing: str | None = None) -> None:
        self.backing = backing
        self.formats: list[str] = []

    def info_chain(self, ctx: TaskContext, path: Path, fmt: str) -> list[ImageInfo]:
        self.formats.append(fmt)
        return [ImageInfo(str(path), fmt, 1 << 20, path.stat().st_size, self.backing)]


def fetch_ok(ctx: TaskContext, dest: Path) -> Fetched:
    dest.write_bytes(DATA)
    return Fetched(DIGEST, len(DATA))


@pytest.fixture
def sr(tmp_path: Path) -> StorageRoot:
    (tmp_path / "ps").mkdir()
    s = StorageRoot("ps-1", tmp_path / "ps")
    s.claim("local")
    return s


def test_fill_then_hit(sr: StorageRoot) -> None:
    cache = ImageCache(sr, FakeTool())  # type: ignore[arg-type]
    img, downloaded = cache.fill(detached_context(), "img", DIGEST, len(DATA), fetch_ok)
    assert downloaded and img.install_path == "imagecache/img.raw" and img.format == "raw"
    assert (sr.root / img.install_path).read_bytes() == DATA

    def never(ctx: TaskContext, dest: Path) -> Fetched:
        raise AssertionError("a cached image is not fetched again")

    again, downloaded = cache.fill(detached_context(), "img", DIGEST, None, never)
    assert not downloaded and again == img
    assert [i.image_id for i in cache.list()] == ["img"]
    with pytest.raises(Conflict):
        cache.fill(detached_context(), "img", "sha256:" + "1" * 64, None, never)


@pytest.mark.parametrize(("digest", "size"), [("sha256:" + "0" * 64, None), (DIGEST, 5)])
def test_a_bad_download_leaves_nothing(sr: StorageRoot, digest: str, size: int | None) -> None:
    cache = ImageCache(sr, FakeTool())  # type: ignore[arg-type]
    with pytest.raises(DigestMismatch):
        cache.fill(detached_context(), "img", digest, size, fetch_ok)
    assert cache.list() == []
    assert list(sr.tmp.iterdir()) == []
    assert not sr.cache.exists() or list(sr.cache.iterdir()) == []


def fetcher_of(data: bytes) -> Callable[[TaskContext, Path], Fetched]:
    def fetch(ctx: TaskContext, dest: Path) -> Fetched:
        dest.write_bytes(data)
        return Fetched(digest_of(data), len(data))
    return fetch


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def qcow2_bytes(tmp: Path, incompatible: int = 0, backing: str | None = None) -> bytes:
    """A hand-made qcow2 v3 header with the given incompatible feature bits."""
    data = bytearray(write_qcow2(tmp / "h.qcow2", 1 << 20, backing).read_bytes())
    data[72:80] = struct.pack(">Q", incompatible)
    return bytes(data)


def test_the_format_is_read_from_the_bytes_and_given_to_qemu_img(sr: StorageRoot, tmp_path: Path) -> None:
    tool = FakeTool()
    cache = ImageCache(sr, tool)  # type: ignore[arg-type]
    q = qcow2_bytes(tmp_path)
    assert cache.fill(detached_context(), "q", digest_of(q), None, fetcher_of(q))[0].format == "qcow2"
    assert cache.fill(detached_context(), "r", DIGEST, None, fetch_ok)[0].format == "raw"
    assert tool.formats == ["qcow2", "raw"]


@pytest.mark.parametrize(("data", "tool"), [
    (b"KDMV" + bytes(508), FakeTool()),
    (b"# Disk Descriptor File\nRW 8 FLAT \"/etc/shadow\" 0\n", FakeTool()),
    (None, FakeTool()),  # a qcow2 whose data lives in an external file
    (b"QFI\xfb", FakeTool(backing="/etc/shadow")),
], ids=["vmdk", "vmdk-descriptor", "external-data-file", "backing-file"])
def test_unusable_images_are_refused(sr: StorageRoot, tmp_path: Path, data: bytes | None,
                                     tool: FakeTool) -> None:
    if data is None:
        data = qcow2_bytes(tmp_path, incompatible=1 << 2)
    elif data.startswith(b"QFI"):
        data = qcow2_bytes(tmp_path)
    with pytest.raises(InvalidRequest) as e:
        ImageCache(sr, tool).fill(detached_context(), "img", digest_of(data), None,  # type: ignore[arg-type]
                                  fetcher_of(data))
    assert e.value.details["field"] == "source"
    assert list(sr.tmp.iterdir()) == []
    assert not sr.cache.exists() or list(sr.cache.iterdir()) == []
    if data.startswith(b"QFI") and tool.backing is None:
        assert tool.formats == []  # refused before qemu-img ever opened it


def test_evict_refused_while_a_volume_is_backed_by_the_image(sr: StorageRoot) -> None:
    cache = ImageCache(sr, FakeTool())  # type: ignore[arg-type]

    def fetch_qcow2(ctx: TaskContext, dest: Path) -> Fetched:
        write_qcow2(dest, 1 << 20)
        data = dest.read_bytes()
        return Fetched("sha256:" + hashlib.sha256(data).hexdigest(), len(data))

    probe = sr.tmp / "probe"
    sr.tmp.mkdir(parents=True, exist_ok=True)
    digest = fetch_qcow2(detached_context(), probe).digest
    probe.unlink()
    img, _ = cache.fill(detached_context(), "img", digest, None, fetch_qcow2)
    vol = write_qcow2(sr.root / "vols" / "v.qcow2", 1 << 20, "../" + img.install_path)
    with pytest.raises(InUse) as e:
        cache.evict("img")
    assert e.value.details["volumes"] == ["vols/v.qcow2"]
    vol.unlink()
    assert cache.evict("img") is True
    assert cache.evict("img") is False
    assert cache.list() == []


def _cache_raw(sr: StorageRoot) -> ImageCache:
    cache = ImageCache(sr, FakeTool())  # type: ignore[arg-type]
    cache.fill(detached_context(), "img", DIGEST, None, fetch_ok)
    return cache


def _forge_record(sr: StorageRoot, install_path: str) -> None:
    """What another host (or the file server) can write into the shared cache."""
    meta = sr.cache / "img.json"
    record = json.loads(meta.read_text())
    record["installPath"] = install_path
    meta.write_text(json.dumps(record))


@pytest.mark.parametrize("forged", ["ABSOLUTE", "../vols/victim.raw", "imagecache/../vols/victim.raw"])
def test_a_forged_install_path_never_names_a_file_outside_the_cache(
        sr: StorageRoot, tmp_path: Path, forged: str) -> None:
    cache = _cache_raw(sr)
    outside = tmp_path / "host-file"
    outside.write_text("keep me")
    victim = sr.root / "vols" / "victim.raw"
    victim.parent.mkdir()
    victim.write_text("a tenant's disk")
    _forge_record(sr, str(outside) if forged == "ABSOLUTE" else forged)
    img = cache.get("img")
    assert img is not None and img.install_path == "imagecache/img.raw"
    assert cache.path(img) == sr.cache / "img.raw"
    assert [i.install_path for i in cache.list()] == ["imagecache/img.raw"]
    assert cache.evict("img") is True
    assert outside.read_text() == "keep me" and victim.read_text() == "a tenant's disk"
    assert list(sr.cache.iterdir()) == []


def test_a_symlinked_image_is_not_cached_and_its_target_survives_evict(
        sr: StorageRoot, tmp_path: Path) -> None:
    cache = _cache_raw(sr)
    outside = tmp_path / "host-file"
    outside.write_text("keep me")
    (sr.cache / "img.raw").unlink()
    (sr.cache / "img.raw").symlink_to(outside)
    assert cache.get("img") is None and cache.list() == []
    assert cache.evict("img") is False
    assert outside.read_text() == "keep me"
    assert not (sr.cache / "img.json").exists()


def test_a_symlinked_record_is_not_read(sr: StorageRoot, tmp_path: Path) -> None:
    cache = _cache_raw(sr)
    elsewhere = tmp_path / "record.json"
    elsewhere.write_text((sr.cache / "img.json").read_text())
    (sr.cache / "img.json").unlink()
    (sr.cache / "img.json").symlink_to(elsewhere)
    assert cache.get("img") is None


def test_a_symlinked_cache_directory_is_not_used(sr: StorageRoot, tmp_path: Path) -> None:
    """``imagecache`` replaced by a link to a host directory: nothing there is read or deleted."""
    host_dir = tmp_path / "etc"
    host_dir.mkdir()
    (host_dir / "img.raw").write_text("keep me")
    (host_dir / "img.json").write_text(json.dumps({
        "imageId": "img", "installPath": "imagecache/img.raw", "format": "raw",
        "virtualSize": 1, "size": 1, "digest": DIGEST}))
    os.symlink(host_dir, sr.cache)
    cache = ImageCache(sr, FakeTool())  # type: ignore[arg-type]
    assert cache.get("img") is None and cache.list() == []
    assert cache.evict("img") is False
    assert sorted(p.name for p in host_dir.iterdir()) == ["img.json", "img.raw"]
    with pytest.raises(PathEscape):
        cache.fill(detached_context(), "new", DIGEST, None, fetch_ok)
    assert sorted(p.name for p in host_dir.iterdir()) == ["img.json", "img.raw"]
