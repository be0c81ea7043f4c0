"""The image cache with an in-process image tool and fetcher (no processes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agentcore.errors import Conflict, InUse, InvalidRequest
from agentcore.task import TaskContext, detached_context
from storageagent.cache import DigestMismatch, Fetched, ImageCache
from storageagent.layout import StorageRoot
from storageagent.qemuimg import ImageInfo
from tests.unit.storageagent.test_qcow2 import write_qcow2

DATA = b"image-bytes" * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class FakeTool:
    """``info_chain`` of the image tool, answered from a table."""

    def __init__(self, fmt: str = "raw", backing: str | None = None) -> None:
        self.fmt, self.backing = fmt, backing

    def info_chain(self, ctx: TaskContext, path: Path) -> list[ImageInfo]:
        return [ImageInfo(str(path), self.fmt, 1 << 20, path.stat().st_size, self.backing)]


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


@pytest.mark.parametrize("tool", [FakeTool("vmdk"), FakeTool("qcow2", backing="/etc/shadow")],
                         ids=["unknown-format", "backing-file"])
def test_unusable_images_are_refused(sr: StorageRoot, tool: FakeTool) -> None:
    with pytest.raises(InvalidRequest) as e:
        ImageCache(sr, tool).fill(detached_context(), "img", DIGEST, None, fetch_ok)  # type: ignore[arg-type]
    assert e.value.details["field"] == "source"
    assert list(sr.tmp.iterdir()) == []


def test_evict_refused_while_a_volume_is_backed_by_the_image(sr: StorageRoot) -> None:
    cache = ImageCache(sr, FakeTool("qcow2"))  # type: ignore[arg-type]

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
