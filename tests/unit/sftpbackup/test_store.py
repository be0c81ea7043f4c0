"""The local store: atomic publish, verify, and GC against adds in progress."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from agentcore.errors import AgentError
from sftpbackup.errors import ImageExists, ImageNotFound, StoreMismatch, StoreNotInitialised
from sftpbackup.manifest import ChunkRef, Manifest
from sftpbackup.store import ImageStore


def put_image(store: ImageStore, image_id: str, blocks: list[bytes]) -> Manifest:
    chunks = []
    with store.pending() as p, store.workdir() as work:
        for b in blocks:
            d = hashlib.sha256(b).hexdigest()
            tmp = work / d
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
    with store.pending("tok") as p, store.workdir("tok") as work:
        tmp = work / d
        tmp.write_bytes(b"dddd")
        p.put_chunk(d, tmp)
        half_written = work / "download"
        half_written.write_bytes(b"partial")
        age(store.chunk_path(d), 7200)
        age(store.root / "tmp" / "work.tok", 7200)
        res = store.gc(grace=0, stale=0, active_tokens={"tok"})
        assert res.chunks_removed == 0 and res.temp_files_removed == 0
        assert store.chunk_path(d).exists() and half_written.exists()
    # once the add is gone without a manifest, all of it is garbage
    res = store.gc(grace=0, stale=0)
    assert res.chunks_removed == 1


def test_a_reused_chunk_is_touched_so_grace_covers_it(store: ImageStore) -> None:
    put_image(store, "a", [b"aaaa"])
    store.delete_manifest("a")
    path = store.chunk_path(hashlib.sha256(b"aaaa").hexdigest())
    age(path, 7200)
    put_image(store, "b", [b"aaaa"])  # reuses it
    assert time.time() - path.stat().st_mtime < 60


def test_stale_leftovers_of_a_crash_are_removed(store: ImageStore) -> None:
    (store.root / "tmp" / "work.dead").mkdir()
    left = store.root / "tmp" / "work.dead" / "download"
    left.write_bytes(b"x")
    upload = store.root / "tmp" / "chunk.upload-token"  # a host's SFTP upload that died
    upload.write_bytes(b"x")
    pending = store.root / "pending" / "dead"
    pending.write_text("")
    fresh = store.root / "tmp" / "other.upload-token"
    fresh.write_bytes(b"y")
    for p in (left.parent, upload, pending):
        age(p, 7200)
    res = store.gc(grace=0, stale=3600)
    assert res.temp_files_removed == 3
    assert fresh.exists() and not left.parent.exists() and not upload.exists() and not pending.exists()


# -- links the SFTP store user plants (F8): never followed ------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the store, standing for /etc/cron.d and the like."""
    d = tmp_path / "outside"
    d.mkdir()
    return d


def refused(e: pytest.ExceptionInfo[AgentError]) -> bool:
    return e.value.code == "STORE_LINK_REFUSED"


def plant(link: Path, target: Path) -> None:
    """What the store user does over SFTP: move the real entry aside, link its name."""
    if link.exists() and not link.is_symlink():
        link.rename(link.with_name(link.name + ".moved"))
    link.symlink_to(target)


def work_file(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    """A chunk's bytes in a root-only file beside the store (same filesystem)."""
    d = tmp_path / "private"
    d.mkdir(mode=0o700, exist_ok=True)
    f = d / hashlib.sha256(data).hexdigest()
    f.write_bytes(data)
    return f.name, f


def test_a_chunk_directory_linked_out_of_the_store_is_refused(
    store: ImageStore, outside: Path, tmp_path: Path,
) -> None:
    d, tmp = work_file(tmp_path, b"* * * * * root evil\n")
    plant(store.root / "chunks" / d[:2], outside)
    with store.pending() as p, pytest.raises(AgentError) as e:
        p.put_chunk(d, tmp)
    assert refused(e)
    assert list(outside.iterdir()) == []


def test_a_chunk_file_that_is_a_link_is_refused_and_never_read(
    store: ImageStore, outside: Path, tmp_path: Path,
) -> None:
    secret = outside / "shadow"
    secret.write_bytes(b"root:hash")
    d, tmp = work_file(tmp_path, b"chunk")
    (store.root / "chunks" / d[:2] / d).symlink_to(secret)
    with store.pending() as p, pytest.raises(AgentError) as e:
        p.put_chunk(d, tmp)
    assert refused(e)
    with pytest.raises(AgentError) as e:
        store.read_chunk(d)
    assert refused(e)
    m = Manifest(image_id="a", format="raw", virtual_size=5, size=5,
                 digest=hashlib.sha256(b"chunk").hexdigest(), chunk_size=5,
                 chunks=[ChunkRef(digest=d, size=5)], created="now")
    (store.root / "manifests" / "a.json").write_bytes(m.dumps())
    assert store.verify(["a"]).bad_chunks == [d]
    age(store.root / "chunks" / d[:2] / d, 0)
    store.delete_manifest("a")
    assert store.gc(grace=0, stale=0).chunks_removed == 1  # the link goes, its target stays
    assert secret.read_bytes() == b"root:hash"


def test_a_manifest_directory_linked_out_of_the_store_is_refused(
    store: ImageStore, outside: Path,
) -> None:
    victim = outside / "img.json"
    victim.write_text("{}")
    put_image(store, "kept", [b"aaaa"])
    plant(store.root / "manifests", outside)
    with pytest.raises(AgentError) as e:
        store.delete_manifest("img")
    assert refused(e)
    with pytest.raises(AgentError) as e:
        put_image(store, "new", [b"bbbb"])
    assert refused(e)
    assert sorted(p.name for p in outside.iterdir()) == ["img.json"]


def test_a_manifest_that_is_a_link_is_not_read_nor_written_through(
    store: ImageStore, outside: Path,
) -> None:
    victim = outside / "target"
    victim.write_text("precious")
    (store.root / "manifests" / "img.json").symlink_to(victim)
    with pytest.raises(AgentError) as e:
        store.read_manifest("img")
    assert refused(e)
    assert store.delete_manifest("img") is True  # the link itself is removed
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("planted", ["pending", "pending/tok"])
def test_pending_links_are_refused(store: ImageStore, outside: Path, planted: str) -> None:
    victim = outside / "tok"
    victim.write_text("precious\n")
    plant(store.root / planted, outside if planted == "pending" else victim)
    with pytest.raises(AgentError) as e, store.pending("tok"):
        pass
    assert refused(e)
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("planted", ["pending", "tmp"])
def test_gc_does_not_delete_through_a_linked_directory(
    store: ImageStore, outside: Path, planted: str,
) -> None:
    victim = outside / "old-file"
    victim.write_text("precious")
    age(victim, 10 * 86400)
    plant(store.root / planted, outside)
    with pytest.raises(AgentError) as e:
        store.gc(grace=0, stale=0)
    assert refused(e)
    assert victim.read_text() == "precious"


def test_stale_links_in_tmp_and_pending_are_removed_not_followed(store: ImageStore, outside: Path) -> None:
    victim = outside / "dir"
    victim.mkdir()
    (victim / "precious").write_text("x")
    (store.root / "tmp" / "link").symlink_to(victim)
    (store.root / "pending" / "link").symlink_to(victim / "precious")
    res = store.gc(grace=0, stale=0)
    assert res.temp_files_removed == 2
    assert (victim / "precious").read_text() == "x"
    assert not (store.root / "tmp" / "link").is_symlink()


def test_chunk_directories_are_synced_once_before_the_manifest(
        store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """put_chunk renames without a directory fsync; write_manifest syncs each
    chunk directory the add renamed into, once, before publishing the manifest."""
    events: list[str] = []
    sync_dir, publish = store.fs.sync_dir, store.fs.publish
    monkeypatch.setattr(store.fs, "sync_dir", lambda rel: (events.append(f"sync {rel}"), sync_dir(rel))[1])
    monkeypatch.setattr(store.fs, "publish", lambda src, rel, sync=True: (
        events.append(f"publish {rel} {sync}"), publish(src, rel, sync))[1])
    blocks = [os.urandom(64) for _ in range(40)]
    with store.pending() as p, store.workdir() as work:
        chunks = []
        for b in blocks:
            d = hashlib.sha256(b).hexdigest()
            (work / d).write_bytes(b)
            p.put_chunk(d, work / d)
            chunks.append(ChunkRef(digest=d, size=len(b)))
        m = Manifest(image_id="img", format="raw", virtual_size=64 * 40, size=64 * 40,
                     digest=hashlib.sha256(b"".join(blocks)).hexdigest(), chunk_size=64,
                     chunks=chunks, created="now")
        store.write_manifest(m, p)
    dirs = {f"chunks/{c.digest[:2]}" for c in chunks}
    syncs = [e.split()[1] for e in events if e.startswith("sync")]
    assert sorted(syncs) == sorted(dirs)  # each once
    assert all(e.endswith("False") for e in events if e.startswith("publish chunks/"))
    manifest_at = next(i for i, e in enumerate(events) if e.startswith("publish manifests/"))
    assert events[manifest_at].endswith("True")
    assert max(i for i, e in enumerate(events) if e.startswith("sync")) < manifest_at
    assert store.verify().ok
