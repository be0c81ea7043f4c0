"""The image cache on NFS primary storage (ganesha export; bind stand-in for
the kernel mount), filled over HTTP from a real file server and over SFTP
from the real sshd store through the sftpbackup client."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sftpbackup.client import SftpTarget, StoreClient
from tests.integration.storageagent.conftest import Storage, sha256_of, tree
from tests.support.agents import wait_until
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.nfs

IMAGE_BYTES = 4 << 20


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("images")
    # a raw image of random bytes: qemu-img reads it as format raw
    (d / "disk.raw").write_bytes(os.urandom(IMAGE_BYTES))
    return d


@pytest.fixture(scope="module")
def server(images: Path) -> Iterator[FileServer]:
    with FileServer(images) as srv:
        yield srv


def cache_body(image_id: str, url: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {"imageId": image_id, "source": {"kind": "http", "url": url}, "digest": digest, **extra}


def partials(s: Storage) -> list[Path]:
    d = s.root / ".kvmcloud" / "partial"
    return list(d.iterdir()) if d.is_dir() else []


def test_ten_concurrent_requests_for_one_image_download_it_once(
    nfs_storage: Storage, server: FileServer, images: Path
) -> None:
    name = f"once-{uuid.uuid4().hex[:6]}.raw"
    (images / name).write_bytes((images / "disk.raw").read_bytes())
    server.rate[name] = 8 << 20  # half a second on the wire: the requests overlap
    digest = sha256_of(images / name)
    body = cache_body("img-once", server.url(name), digest)
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: nfs_storage.call("/storage/cache-image", **body), range(10)))
    assert all(r["success"] for r in replies), replies
    assert server.requests.count(name) == 1
    assert sum(r["downloaded"] for r in replies) == 1
    assert {r["image"]["installPath"] for r in replies} == {"imagecache/img-once.raw"}
    img = replies[0]["image"]
    assert img["digest"] == digest and img["size"] == IMAGE_BYTES and img["format"] == "raw"
    assert sha256_of(nfs_storage.path(img["installPath"])) == digest
    listed = nfs_storage.ok("/storage/cache/list")["images"]
    assert [i["imageId"] for i in listed if i["imageId"] == "img-once"] == ["img-once"]


def test_wrong_digest_leaves_nothing_in_the_cache(nfs_storage: Storage, server: FileServer) -> None:
    before = tree(nfs_storage.root / "imagecache") if (nfs_storage.root / "imagecache").exists() else []
    r = nfs_storage.call("/storage/cache-image",
                         **cache_body("img-bad", server.url("disk.raw"), "sha256:" + "0" * 64))
    assert r["success"] is False and r["error"]["code"] == "DIGEST_MISMATCH"
    assert r["error"]["details"]["field"] == "digest"
    after = tree(nfs_storage.root / "imagecache") if (nfs_storage.root / "imagecache").exists() else []
    assert after == before
    assert partials(nfs_storage) == []


def test_cancelled_and_expired_downloads_leave_nothing(
    nfs_storage: Storage, server: FileServer, images: Path
) -> None:
    name = f"slow-{uuid.uuid4().hex[:6]}.raw"
    (images / name).write_bytes((images / "disk.raw").read_bytes())
    server.rate[name] = 256 << 10  # 16 s for the whole image
    digest = sha256_of(images / name)
    task = f"cache-{uuid.uuid4().hex}"
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(nfs_storage.agent.call(
            "/storage/cache-image", {**nfs_storage.ref, **cache_body("img-slow", server.url(name), digest)},
            taskuuid=task))

    t = threading.Thread(target=run)
    t.start()

    def downloading() -> bool:
        st = nfs_storage.agent.client.get(f"/tasks/{task}").json()
        p = st.get("progress") or {}
        return bool(p.get("done"))

    wait_until(downloading, 20, what="download progress")
    status = nfs_storage.agent.client.get(f"/tasks/{task}").json()
    assert status["state"] == "running" and status["progress"]["unit"] == "bytes"
    assert nfs_storage.agent.client.post(f"/tasks/{task}/cancel").status_code == 200
    t.join(30)
    assert result["success"] is False and result["error"]["code"] == "CANCELLED"
    assert not (nfs_storage.root / "imagecache" / "img-slow.json").exists()
    assert partials(nfs_storage) == []

    late = nfs_storage.call("/storage/cache-image", timeout=1,
                            **cache_body("img-slow", server.url(name), digest))
    assert late["success"] is False and late["error"]["code"] == "DEADLINE_EXCEEDED"
    assert partials(nfs_storage) == []
    assert "img-slow" not in [i["imageId"] for i in nfs_storage.ok("/storage/cache/list")["images"]]


def test_evict_refused_while_a_volume_is_backed_by_the_image(
    nfs_storage: Storage, server: FileServer, images: Path
) -> None:
    digest = sha256_of(images / "disk.raw")
    nfs_storage.ok("/storage/cache-image", **cache_body("img-evict", server.url("disk.raw"), digest))
    nfs_storage.ok("/storage/volume/create-root", imageId="img-evict", installPath="evict/root.qcow2")
    busy = nfs_storage.call("/storage/cache/evict", imageId="img-evict")
    assert busy["success"] is False and busy["error"]["code"] == "IN_USE"
    assert busy["error"]["details"]["volumes"] == ["evict/root.qcow2"]
    assert nfs_storage.path("imagecache/img-evict.raw").is_file()
    nfs_storage.ok("/storage/volume/delete", installPath="evict/root.qcow2")
    assert nfs_storage.ok("/storage/cache/evict", imageId="img-evict")["evicted"] is True
    assert not nfs_storage.path("imagecache/img-evict.raw").exists()
    assert nfs_storage.ok("/storage/cache/evict", imageId="img-evict")["evicted"] is False


@pytest.mark.sftp
def test_image_cached_from_sftp_store_and_template_uploaded_back(
    workdir: Path, sshd_env: dict[str, str], nfs_storage: Storage, images: Path,
) -> None:
    """The agent's config names the host's SFTP key and known_hosts; the command
    carries only the store's address."""
    store_root = "/" + f"sa-{uuid.uuid4().hex[:8]}"
    (Path(sshd_env["SSHD_STORE_DIR"]) / store_root.lstrip("/")).mkdir()
    target = SftpTarget(sshd_env["SSHD_HOST"], int(sshd_env["SSHD_PORT"]), sshd_env["SSHD_USER"], store_root)
    with StoreClient(target, Path(sshd_env["SSHD_KEY"]), Path(sshd_env["SSHD_KNOWN_HOSTS"])) as c:
        c.ensure_layout()
        ref = c.upload(images / "disk.raw", "sftp-img")
    digest = "sha256:" + hashlib.sha256((images / "disk.raw").read_bytes()).hexdigest()

    s = nfs_storage
    try:
        src = {"kind": "sftp", "host": target.host, "port": target.port, "user": target.user,
               "storeRoot": store_root, "imageId": "sftp-img"}
        r = s.ok("/storage/cache-image", imageId="img-sftp", source=src, digest=digest)
        assert r["downloaded"] is True and r["image"]["digest"] == digest == "sha256:" + ref.digest
        assert sha256_of(s.path(r["image"]["installPath"])) == digest

        s.ok("/storage/volume/create-root", imageId="img-sftp", installPath="sftp/root.qcow2")
        s.ok("/storage/volume/create-template", installPath="sftp/root.qcow2", templatePath="sftp/tpl.qcow2")
        up = s.ok("/storage/volume/upload-template", installPath="sftp/tpl.qcow2",
                  target={"host": target.host, "port": target.port, "user": target.user,
                          "storeRoot": store_root}, name="tpl-from-ps")
        assert up["imageId"] == "tpl-from-ps" and up["format"] == "qcow2"
        assert up["digest"] == sha256_of(s.path("sftp/tpl.qcow2")).removeprefix("sha256:")
        with StoreClient(target, Path(sshd_env["SSHD_KEY"]), Path(sshd_env["SSHD_KNOWN_HOSTS"])) as c:
            back = c.fetch("tpl-from-ps", workdir / "tpl-back.qcow2")
        assert back.digest == up["digest"]
        for p in ("sftp/root.qcow2", "sftp/tpl.qcow2"):
            s.ok("/storage/volume/delete", installPath=p)
        s.ok("/storage/cache/evict", imageId="img-sftp")
    finally:
        shutil.rmtree(Path(sshd_env["SSHD_STORE_DIR"]) / store_root.lstrip("/"), ignore_errors=True)


@pytest.mark.sftp
def test_an_image_relisted_to_other_chunks_in_the_store_is_not_cached(
    sshd_env: dict[str, str], nfs_storage: Storage, images: Path,
) -> None:
    """Whoever holds the store key can relist an image's manifest to other chunks
    under the genuine digest and size; the bytes are checked, not that claim."""
    store_root = "/" + f"sa-{uuid.uuid4().hex[:8]}"
    store_dir = Path(sshd_env["SSHD_STORE_DIR"]) / store_root.lstrip("/")
    store_dir.mkdir()
    target = SftpTarget(sshd_env["SSHD_HOST"], int(sshd_env["SSHD_PORT"]), sshd_env["SSHD_USER"], store_root)
    try:
        with StoreClient(target, Path(sshd_env["SSHD_KEY"]), Path(sshd_env["SSHD_KNOWN_HOSTS"])) as c:
            c.ensure_layout()
            ref = c.upload(images / "disk.raw", "genuine")
        evil = os.urandom(IMAGE_BYTES)
        manifest = json.loads((store_dir / "manifests" / "genuine.json").read_bytes())
        chunks = []
        for off in range(0, IMAGE_BYTES, 1 << 20):
            block = evil[off:off + (1 << 20)]
            d = hashlib.sha256(block).hexdigest()
            (store_dir / "chunks" / d[:2] / d).write_bytes(block)
            chunks.append({"digest": d, "size": len(block)})
        manifest["chunks"] = chunks  # digest and size kept: the genuine image's
        (store_dir / "manifests" / "genuine.json").write_text(json.dumps(manifest))

        src = {"kind": "sftp", "host": target.host, "port": target.port, "user": target.user,
               "storeRoot": store_root, "imageId": "genuine"}
        r = nfs_storage.call("/storage/cache-image", imageId="img-relisted", source=src,
                             digest="sha256:" + ref.digest)
        assert r["success"] is False and r["error"]["code"] == "DIGEST_MISMATCH", r
        assert "img-relisted" not in {i["imageId"] for i in nfs_storage.ok("/storage/cache/list")["images"]}
        assert not list((nfs_storage.root / "imagecache").glob("img-relisted*"))
        assert partials(nfs_storage) == []
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
