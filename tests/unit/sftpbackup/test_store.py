"""The local store: atomic publish, verify, and GC against adds in progress."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from sftpbackup.errors import ImageExists, ImageNotFound, StoreMismatch, StoreNotInitialised
from sftpbackup.manifest import ChunkRef, Manifest
from sftpbackup.store import ImageStore


def put_image(store: ImageStore, image_id: str, blocks: list[bytes]) -> Manifest:
    chunks = []
    with store.pending() as p:
        for b in blocks:
            d = hashlib.sha256(b).hexdigest()
            tmp = store.new_tmp(d)
            tmp.write_bytes(b)
            p.put_chunk(d, tmp)
            chunks.append(ChunkRef(digest=d, size=len(b)))
        m = Manifest(image_id=image_id, format="raw", virtual_size=sum(map(len, blocks)),
                     size=sum(map(len, blocks)), digest=hashlib.sha256(b"".join(blocks)).hexdigest(),
                     chunk_size=4, chunks=chunks, created="now")
        store.write_manifest(m)
    return m


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore.init(tmp_path / "s", "bs-1")


def test_init_is_idempotent_and_owned(tmp_path: Path, store: ImageStore) -> None:
    assert ImageStore.init(tmp_path / "s", "bs-1").root == store.root
    with pytest.raises(StoreMismatch):
        ImageStore.init(tmp_path / "s", "bs-2")
    with pytest.raises(StoreMismatch):
        ImageStore.open(tmp_path / "s", "bs-2")
    with pytest.raises(StoreNotInitialised):
        ImageStore.open(tmp_path / "other", "bs-1")


def test_shared_chunks_are_stored_once(store: ImageStore) -> None:
    put_image(store, "a", [b"aaaa", b"bbbb"])
    put_image(store, "b", [b"aaaa", b"cccc", b"aaaa"])
    assert len(list(store.iter_chunks())) == 3
    assert list((store.root / "tmp").iterdir()) == []
    assert list((store.root / "pending").iterdir()) == []
    assert store.verify().ok


def test_manifest_is_immutable_and_needs_its_chunks(store: ImageStore) -> None:
    m = put_image(store, "a", [b"aaaa"])
    assert store.write_manifest(m) is False
    with pytest.raises(ImageExists):
        store.write_manifest(m.model_copy(update={"digest": "0" * 64}))
    orphan = m.model_copy(update={"image_id": "b", "chunks": [ChunkRef(digest="1" * 64, size=4)]})
    with pytest.raises(FileNotFoundError):
        store.write_manifest(orphan)
    with pytest.raises(ImageNotFound):
        store.read_manifest("b")


def test_verify_finds_corrupt_and_missing_chunks(store: ImageStore) -> None:
    m = put_image(store, "a", [b"aaaa", b"bbbb"])
    put_image(store, "b", [b"cccc"])
    store.chunk_path(m.chunks[0].digest).write_bytes(b"xxxx")
    store.chunk_path(m.chunks[1].digest).unlink()
    res = store.verify()
    assert not res.ok
    assert res.bad_chunks == [m.chunks[0].digest]
    assert res.missing_chunks == [m.chunks[1].digest]
    assert res.bad_images == ["a"]
    assert store.verify(["b"]).ok


def test_gc_removes_only_unreferenced_chunks_past_grace(store: ImageStore) -> None:
    put_image(store, "a", [b"aaaa", b"bbbb"])
    put_image(store, "b", [b"aaaa", b"cccc"])
    store.delete_manifest("a")
    only_a = store.chunk_path(hashlib.sha256(b"bbbb").hexdigest())
    assert store.gc(grace=3600, stale=3600).chunks_removed == 0  # too young
    age(only_a, 7200)
    res = store.gc(grace=3600, stale=3600)
    assert (res.chunks_removed, res.bytes_freed, res.chunks_kept) == (1, 4, 2)
    assert not only_a.exists()
    assert store.verify().ok


def test_gc_keeps_the_chunks_of_an_add_in_progress(store: ImageStore) -> None:
    d = hashlib.sha256(b"dddd").hexdigest()
    with store.pending("tok") as p:
        tmp = store.new_tmp(d, "tok")
        tmp.write_bytes(b"dddd")
        p.put_chunk(d, tmp)
        half_written = store.new_tmp("img.download", "tok")
        half_written.write_bytes(b"partial")
        age(store.chunk_path(d), 7200)
        age(half_written, 7200)
        res = store.gc(grace=0, stale=0, active_tokens={"tok"})
        assert res.chunks_removed == 0 and res.temp_files_removed == 0
        assert store.chunk_path(d).exists() and half_written.exists()
    # once the add is gone without a manifest, all of it is garbage
    res = store.gc(grace=0, stale=0)
    assert res.chunks_removed == 1 and res.temp_files_removed == 1


def test_a_reused_chunk_is_touched_so_grace_covers_it(store: ImageStore) -> None:
    put_image(store, "a", [b"aaaa"])
    store.delete_manifest("a")
    path = store.chunk_path(hashlib.sha256(b"aaaa").hexdigest())
    age(path, 7200)
    put_image(store, "b", [b"aaaa"])  # reuses it
    assert time.time() - path.stat().st_mtime < 60


def test_stale_leftovers_of_a_crash_are_removed(store: ImageStore) -> None:
    left = store.new_tmp("img.download")
    left.write_bytes(b"x")
    pending = store.root / "pending" / "dead"
    pending.write_text("")
    fresh = store.new_tmp("other.download")
    fresh.write_bytes(b"y")
    age(left, 7200)
    age(pending, 7200)
    res = store.gc(grace=0, stale=3600)
    assert res.temp_files_removed == 2
    assert fresh.exists() and not left.exists() and not pending.exists()
