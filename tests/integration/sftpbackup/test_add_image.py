"""add-image over a real HTTP server, a real sshd and the local filesystem."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sftpbackup.conftest import MiB, Sshd, StoreDir, sha256_of, start_agent
from tests.support.agents import AgentProcess
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.sftp


def add(agent: AgentProcess, store: StoreDir, image: str, url: str, **extra: Any) -> dict[str, Any]:
    return agent.call("/backup/image/add", store.body(imageUuid=image, url=url, **extra))


def test_add_from_http_detects_format_sizes_and_digest(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, qcow2_image: Path,
) -> None:
    r = add(agent, store_a, "img-http", files.url(qcow2_image), name="disk")
    assert r["success"], r
    img = r["image"]
    assert img["format"] == "qcow2"
    assert img["virtualSize"] == 256 * MiB
    assert img["size"] == qcow2_image.stat().st_size
    assert img["digest"] == sha256_of(qcow2_image)
    assert 0 < r["newChunks"] <= img["chunkCount"]
    info = agent.call("/backup/image/info", store_a.body(imageUuid="img-http"))
    assert info["image"] == img
    assert agent.call("/backup/verify", store_a.body())["ok"] is True


def test_add_from_sftp_and_fetch_back_through_the_client(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, new_store_dir: Any, qcow2_image: Path,
    tmp_path: Path,
) -> None:
    src_dir = new_store_dir("src")
    src_dir.path.mkdir()
    shutil.copyfile(qcow2_image, src_dir.path / "disk.qcow2")
    url = f"sftp://{sshd.user}@{sshd.host}:{sshd.port}/{src_dir.rel}/disk.qcow2"
    r = add(agent, store_a, "img-sftp", url)
    assert r["success"], r
    assert r["image"]["digest"] == sha256_of(qcow2_image)
    dest = tmp_path / "fetched.qcow2"
    with sshd.client(store_a.rel) as client:
        got = client.fetch("img-sftp", dest)
    assert got.digest == sha256_of(dest) == sha256_of(qcow2_image)
    assert got.size == qcow2_image.stat().st_size


def test_add_from_file_dedupes_identical_chunks(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, raw_image: Path,
) -> None:
    r1 = add(agent, store_a, "img-file", raw_image.as_uri())
    assert r1["success"], r1
    assert r1["image"]["format"] == "raw"
    chunks_after_first = len(store_a.chunk_files())
    # the same bytes under another name: every chunk is already there
    r2 = add(agent, store_a, "img-file-2", files.url(raw_image))
    assert r2["success"], r2
    assert r2["newChunks"] == 0
    assert len(store_a.chunk_files()) == chunks_after_first
    # zero MiB blocks are one chunk, so the store holds fewer chunks than the image has
    assert chunks_after_first < r1["image"]["chunkCount"]


def test_add_is_idempotent_and_images_are_immutable(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, raw_image: Path, qcow2_image: Path,
) -> None:
    assert add(agent, store_a, "img", files.url(raw_image))["success"]
    again = add(agent, store_a, "img", files.url(raw_image), sha256=sha256_of(raw_image))
    assert again["success"] and again["newChunks"] == 0
    other = add(agent, store_a, "img", files.url(qcow2_image), sha256=sha256_of(qcow2_image))
    assert other["success"] is False
    assert other["error"]["code"] == "IMAGE_EXISTS"
    assert agent.call("/backup/image/info", store_a.body(imageUuid="img"))["image"]["format"] == "raw"


def test_catalogue_export_and_import_into_a_fresh_agent(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, raw_image: Path, qcow2_image: Path,
    sshd: Sshd, tmp_path: Path,
) -> None:
    for name, f in (("cat-raw", raw_image), ("cat-qcow2", qcow2_image)):
        assert add(agent, store_a, name, files.url(f), name=name)["success"]
    exported = agent.call("/backup/catalogue/export", store_a.body())
    assert sorted(i["imageUuid"] for i in exported["images"]) == ["cat-qcow2", "cat-raw"]
    assert (store_a.path / "catalogue.json").exists()
    fresh = start_agent(tmp_path / "fresh", sshd, files)  # knows nothing: the disk is the truth
    try:
        imported = fresh.call("/backup/catalogue/import", store_a.body())
    finally:
        fresh.stop()
    assert imported["images"] == exported["images"]
