"""Push and pull between two stores over a real sshd, and the store client's fetch/upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sftpbackup.chunker import hash_file
from sftpbackup.client import StoreClient
from sftpbackup.errors import ChunkCorrupt, DigestMismatch, ImageNotFound, TransferFailed
from sftpbackup.manifest import chunk_relpath
from sftpbackup.store import ImageStore
from tests.integration.sftpbackup.conftest import (
    MiB,
    Sshd,
    StoreDir,
    change_fraction,
    changed_chunks,
    make_raw,
    sha256_of,
)
from tests.support.agents import AgentProcess
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.sftp


def add(agent: AgentProcess, store: StoreDir, image: str, url: str) -> dict[str, Any]:
    r = agent.call("/backup/image/add", store.body(imageUuid=image, url=url))
    assert r["success"], r
    return r


@pytest.fixture
def store_b(agent: AgentProcess, new_store_dir: Any) -> StoreDir:
    s: StoreDir = new_store_dir("b")
    assert agent.call("/backup/connect", s.body())["success"]
    return s


def test_push_sends_only_the_chunks_the_other_side_lacks(
    agent: AgentProcess, store_a: StoreDir, store_b: StoreDir, sshd: Sshd, files: FileServer,
    srcdir: Path, tmp_path: Path,
) -> None:
    v1 = make_raw(srcdir / "v1.raw", 128 * MiB, seed=11, fill=1.0)
    v2 = srcdir / "v2.raw"
    touched = changed_chunks(v1, v2, 0.05, seed=12)
    add(agent, store_a, "v1", files.url(v1))
    add(agent, store_a, "v2", files.url(v2))
    first = agent.call("/backup/image/push", store_a.body(imageUuid="v1", remote=sshd.endpoint(store_b.rel)))
    assert first["success"], first
    assert first["bytesSent"] == first["bytesTotal"] == 128 * MiB
    second = agent.call("/backup/image/push", store_a.body(imageUuid="v2", remote=sshd.endpoint(store_b.rel)))
    assert second["success"], second
    # exactly the chunks the 5% change touched (4 runs, each may straddle chunk edges)
    assert second["chunksSent"] == touched
    assert second["bytesSent"] == touched * MiB
    assert second["bytesSent"] <= 0.08 * 128 * MiB
    # the second store holds a verified copy of both
    assert ImageStore(store_b.path).verify().ok
    for name, src in (("v1", v1), ("v2", v2)):
        with sshd.client(store_b.rel) as c:
            got = c.fetch(name, tmp_path / f"{name}.raw")
        assert got.digest == sha256_of(src) == sha256_of(tmp_path / f"{name}.raw")
    # pushing again moves nothing
    again = agent.call("/backup/image/push", store_a.body(imageUuid="v2", remote=sshd.endpoint(store_b.rel)))
    assert again["success"] and again["bytesSent"] == 0


def test_an_interrupted_push_resumes_where_it_stopped(
    agent: AgentProcess, store_a: StoreDir, store_b: StoreDir, sshd: Sshd, files: FileServer,
    raw_image: Path,
) -> None:
    add(agent, store_a, "img", files.url(raw_image))
    assert agent.call("/backup/image/push", store_a.body(imageUuid="img", remote=sshd.endpoint(store_b.rel)))["success"]
    # what an interruption leaves: some chunks in place, no manifest
    (store_b.path / "manifests" / "img.json").unlink()
    chunks = store_b.chunk_files()
    lost = chunks[: len(chunks) // 3]
    for p in lost:
        p.unlink()
    r = agent.call("/backup/image/push", store_a.body(imageUuid="img", remote=sshd.endpoint(store_b.rel)))
    assert r["success"], r
    assert r["chunksSent"] == len(lost)
    assert r["bytesSent"] == len(lost) * MiB
    assert ImageStore(store_b.path).verify().ok


def test_pull_gets_only_missing_chunks_and_verifies_them(
    agent: AgentProcess, store_a: StoreDir, store_b: StoreDir, sshd: Sshd, files: FileServer,
    srcdir: Path,
) -> None:
    v1 = make_raw(srcdir / "v1.raw", 64 * MiB, seed=21, fill=1.0)
    v2 = srcdir / "v2.raw"
    touched = changed_chunks(v1, v2, 0.05, seed=22)
    add(agent, store_a, "v1", files.url(v1))
    add(agent, store_a, "v2", files.url(v2))
    add(agent, store_b, "v1", files.url(v1))
    r = agent.call("/backup/image/pull", store_b.body(imageUuid="v2", remote=sshd.endpoint(store_a.rel),
                                                      sha256=sha256_of(v2)))
    assert r["success"], r
    assert r["chunksSent"] == touched
    assert ImageStore(store_b.path).verify().ok
    # a corrupt chunk on the sending side is refused by the receiver
    v3 = change_fraction(v1, srcdir / "v3.raw", 0.05, seed=23)
    add(agent, store_a, "v3", files.url(v3))
    m = ImageStore(store_a.path).read_manifest("v3")
    have_b = {p.name for p in store_b.chunk_files()}
    new = next(c.digest for c in m.chunks if c.digest not in have_b)
    (store_a.path / chunk_relpath(new)).write_bytes(b"garbage" * 1000)
    bad = agent.call("/backup/image/pull", store_b.body(imageUuid="v3", remote=sshd.endpoint(store_a.rel),
                                                        sha256=sha256_of(v3)))
    assert bad["error"]["code"] == "CHUNK_CORRUPT"
    assert not (store_b.path / "manifests" / "v3.json").exists()
    assert not (store_b.path / chunk_relpath(new)).exists()


def test_corrupt_chunk_is_found_by_verify_and_refused_by_fetch(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, files: FileServer, raw_image: Path,
    tmp_path: Path,
) -> None:
    add(agent, store_a, "img", files.url(raw_image))
    assert agent.call("/backup/verify", store_a.body())["ok"] is True
    victim = store_a.chunk_files()[0]
    data = bytearray(victim.read_bytes())
    data[4096] ^= 0xFF
    victim.write_bytes(bytes(data))
    v = agent.call("/backup/verify", store_a.body())
    assert v["ok"] is False
    assert v["badChunks"] == [victim.name]
    assert v["badImages"] == ["img"]
    dest = tmp_path / "out.raw"
    with sshd.client(store_a.rel) as c, pytest.raises(ChunkCorrupt) as e:
        c.fetch("img", dest)
    assert e.value.details["chunk"] == victim.name  # found by re-hashing once the whole failed
    assert list(tmp_path.iterdir()) == []  # no dest, no .part, no staging
    victim.write_bytes(bytes(data[:4096]))  # a short chunk fails as it lands
    with sshd.client(store_a.rel) as c, pytest.raises(ChunkCorrupt):
        c.fetch("img", dest)
    assert list(tmp_path.iterdir()) == []


def test_fetch_resumes_from_a_partial_file(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, files: FileServer, srcdir: Path,
    tmp_path: Path,
) -> None:
    img = make_raw(srcdir / "d.raw", 32 * MiB, seed=31, fill=1.0)
    add(agent, store_a, "img", files.url(img))
    dest = tmp_path / "out.raw"
    with open(img, "rb") as src, open(tmp_path / ".out.raw.part", "wb") as part:
        part.write(src.read(20 * MiB))  # what an interrupted fetch left
    with sshd.client(store_a.rel) as c:
        got = c.fetch("img", dest)
    assert got.chunks_fetched == 12
    assert sha256_of(dest) == got.digest == sha256_of(img)


def test_client_upload_is_an_image_the_agent_serves(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, srcdir: Path, tmp_path: Path,
) -> None:
    img = make_raw(srcdir / "u.raw", 32 * MiB, seed=41)
    with sshd.client(store_a.rel) as c:
        ref = c.upload(img, "uploaded")
        again = c.upload(img, "uploaded")
    assert ref.format == "raw" and ref.size == 32 * MiB and ref.digest == sha256_of(img)
    assert ref.chunks_sent > 0 and again.bytes_sent == 0
    info = agent.call("/backup/image/info", store_a.body(imageUuid="uploaded"))
    assert info["image"]["digest"] == ref.digest
    assert agent.call("/backup/verify", store_a.body())["ok"] is True
    assert list((store_a.path / "pending").iterdir()) == []


def test_client_upload_sends_only_the_chunks_the_store_lacks(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, srcdir: Path,
) -> None:
    v1 = make_raw(srcdir / "v1.raw", 32 * MiB, seed=43, fill=1.0)
    v2 = srcdir / "v2.raw"
    touched = changed_chunks(v1, v2, 0.1, seed=44)
    with sshd.client(store_a.rel) as c:
        first = c.upload(v1, "v1")
        second = c.upload(v2, "v2")
    assert first.chunks_sent == 32 and first.bytes_sent == 32 * MiB
    assert second.chunks_sent == touched and second.bytes_sent == touched * MiB
    assert second.digest == sha256_of(v2)
    assert agent.call("/backup/verify", store_a.body())["ok"] is True


def test_client_upload_with_few_staging_slots_frees_each_as_its_chunk_lands(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, srcdir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sftpbackup.client._StreamingUpload.STAGED", 2)  # fewer than the chunks in flight
    img = make_raw(srcdir / "s.raw", 24 * MiB, seed=46, fill=1.0)
    with sshd.client(store_a.rel) as c:
        ref = c.upload(img, "slots")
    assert ref.chunks_sent == 24 and ref.digest == sha256_of(img)
    assert agent.call("/backup/verify", store_a.body())["ok"] is True
    assert not list(srcdir.glob(".upload-*"))


def test_client_upload_that_cannot_put_its_chunks_leaves_no_image(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, srcdir: Path,
) -> None:
    img = make_raw(srcdir / "f.raw", 16 * MiB, seed=45, fill=1.0)
    with sshd.client(store_a.rel) as c:
        c.ensure_layout()
        tmp = store_a.path / "tmp"
        tmp.rmdir()
        tmp.write_bytes(b"")  # every chunk's put fails (the server runs as root): streams end early
        try:
            with pytest.raises(TransferFailed):
                c.upload(img, "broken")
        finally:
            tmp.unlink()
            tmp.mkdir()
        assert c.find_manifest("broken") is None
    assert list((store_a.path / "pending").iterdir()) == []
    assert not list(srcdir.glob(".upload-*")) and not list(srcdir.glob(".sftp-*"))


def test_unknown_host_key_is_refused(sshd: Sshd, store_a: StoreDir, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text("")
    with pytest.raises(TransferFailed):
        StoreClient(sshd.target(store_a.rel), sshd.key, other).connect()


def test_the_key_is_confined_to_sftp_inside_the_store(sshd: Sshd, store_a: StoreDir) -> None:
    with sshd.client(store_a.rel) as c:
        assert "store.json" in c.sftp.listdir(f"/{store_a.rel}")
        assert "passwd" not in c.sftp.listdir("/")  # / is the chroot, not the host's root
        with pytest.raises(FileNotFoundError):
            c.sftp.stat("/etc/passwd")
        with pytest.raises(ImageNotFound):
            c.manifest("nope")
        # no shell: an exec channel is refused by the forced internal-sftp
        assert c._ssh is not None
        _, out, _ = c._ssh.exec_command("id", timeout=10)
        assert b"uid=" not in out.read()


def test_a_push_stopped_by_its_deadline_leaves_no_image_and_resumes(
    agent: AgentProcess, store_a: StoreDir, store_b: StoreDir, sshd: Sshd, files: FileServer,
    srcdir: Path,
) -> None:
    img = make_raw(srcdir / "big.raw", 128 * MiB, seed=71, fill=1.0)
    add(agent, store_a, "img", files.url(img))
    remote = sshd.endpoint(store_b.rel)
    stopped = agent.call("/backup/image/push", store_a.body(imageUuid="img", remote=remote, timeout=0.3))
    assert stopped["error"]["code"] == "DEADLINE_EXCEEDED"
    assert not (store_b.path / "manifests" / "img.json").exists()
    assert ImageStore(store_b.path).verify().ok  # whatever arrived is whole chunks under their names
    arrived = len(store_b.chunk_files())
    done = agent.call("/backup/image/push", store_a.body(imageUuid="img", remote=remote))
    assert done["success"], done
    assert done["chunksSent"] == 128 - arrived
    assert ImageStore(store_b.path).verify().ok


def test_fetch_takes_the_chunks_a_local_seed_already_has(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, files: FileServer, srcdir: Path,
    tmp_path: Path,
) -> None:
    v1 = make_raw(srcdir / "v1.raw", 32 * MiB, seed=91, fill=1.0)
    v2 = srcdir / "v2.raw"
    touched = changed_chunks(v1, v2, 0.1, seed=92)
    add(agent, store_a, "v2", files.url(v2))
    dest = tmp_path / "v2.raw"
    with sshd.client(store_a.rel) as c:
        got = c.fetch("v2", dest, seeds=[v1])  # an earlier version already in the host's cache
    assert got.chunks_fetched == touched
    assert sha256_of(dest) == got.digest == sha256_of(v2)


# -- a store-key holder rewrites a manifest (F2): the bytes are checked, not the claim -------------


def swap_content(store: StoreDir, image: str, evil: Path) -> str:
    """What anyone with the store key can do over SFTP: put the chunks of ``evil``
    and relist ``image``'s manifest to them, keeping its digest and size. Returns
    the genuine digest."""
    m = ImageStore(store.path).read_manifest(image)
    chunks, _ = hash_file(evil)
    data = evil.read_bytes()
    off = 0
    for c in chunks:
        path = store.path / chunk_relpath(c.digest)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data[off:off + c.size])
        off += c.size
    lying = m.model_copy(update={"chunks": chunks})
    (store.path / "manifests" / f"{image}.json").write_bytes(lying.dumps())
    return m.digest


def test_fetch_refuses_a_manifest_that_lists_other_chunks_under_the_digest(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, files: FileServer, srcdir: Path,
    tmp_path: Path,
) -> None:
    img = make_raw(srcdir / "good.raw", 8 * MiB, seed=51)
    add(agent, store_a, "img", files.url(img))
    genuine = swap_content(store_a, "img", make_raw(tmp_path / "evil.raw", 8 * MiB, seed=52))
    assert genuine == sha256_of(img)
    dest = tmp_path / "out.raw"
    for expected in (genuine, None):  # the digest the caller recorded; the manifest's own claim
        with sshd.client(store_a.rel) as c, pytest.raises(DigestMismatch) as e:
            c.fetch("img", dest, expected_digest=expected)
        assert e.value.code == "DIGEST_MISMATCH"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.raw"]  # no dest, no .part


def test_fetch_refuses_an_image_whose_manifest_names_another_digest(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, files: FileServer, raw_image: Path,
    tmp_path: Path,
) -> None:
    add(agent, store_a, "img", files.url(raw_image))
    with sshd.client(store_a.rel) as c, pytest.raises(DigestMismatch, match="manifest names another"):
        c.fetch("img", tmp_path / "out.raw", expected_digest="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_pull_refuses_a_remote_manifest_that_lists_other_chunks(
    agent: AgentProcess, store_a: StoreDir, store_b: StoreDir, sshd: Sshd, files: FileServer,
    srcdir: Path, tmp_path: Path,
) -> None:
    img = make_raw(srcdir / "good.raw", 8 * MiB, seed=61)
    add(agent, store_a, "img", files.url(img))
    genuine = swap_content(store_a, "img", make_raw(tmp_path / "evil.raw", 8 * MiB, seed=62))
    r = agent.call("/backup/image/pull", store_b.body(imageUuid="img", remote=sshd.endpoint(store_a.rel),
                                                      sha256=genuine))
    assert r["error"]["code"] == "DIGEST_MISMATCH", r
    assert not (store_b.path / "manifests" / "img.json").exists()
    other = agent.call("/backup/image/pull", store_b.body(imageUuid="img", remote=sshd.endpoint(store_a.rel),
                                                          sha256="0" * 64))
    assert other["error"]["code"] == "DIGEST_MISMATCH"
    # a pull must say which image it expects
    missing = agent.post("/backup/image/pull", store_b.body(imageUuid="img", remote=sshd.endpoint(store_a.rel)))
    assert missing.status_code == 400 and "sha256" in missing.text
