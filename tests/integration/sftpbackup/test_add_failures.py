"""add-image that must fail: bad input, cancel, deadline, a killed agent. Each leaves
the store as it was: no manifest, no chunk, no temporary file."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sftpbackup.conftest import (
    MiB,
    StoreDir,
    add_in_background,
    downloading,
    make_qcow2,
    make_raw,
    sha256_of,
)
from tests.support.agents import AgentProcess, wait_until
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.sftp


def assert_untouched(agent: AgentProcess, store: StoreDir, image: str) -> None:
    info = agent.call("/backup/image/info", store.body(imageUuid=image))
    assert info["error"]["code"] == "IMAGE_NOT_FOUND"
    assert store.chunk_files() == []
    assert list((store.path / "manifests").iterdir()) == []
    assert store.temp_files() == []


@pytest.mark.parametrize("field,value", [
    ("url", "ftp://127.0.0.1/disk.img"),
    ("url", "gopher://127.0.0.1/disk.img"),
    ("imageUuid", "../../etc/passwd"),
    ("imageUuid", "a/../b"),
    ("imageUuid", "x..y"),
    ("root", "/var/tmp/../../etc"),
    ("root", "relative/dir"),
])
def test_bad_input_is_a_400_naming_the_field(
    agent: AgentProcess, store_a: StoreDir, field: str, value: str,
) -> None:
    body = store_a.body(imageUuid="img", url="http://127.0.0.1:9/x.img")
    body[field] = value
    r = agent.post("/backup/image/add", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "INVALID_REQUEST"
    assert field in err["message"] or field in str(err["details"])
    assert_untouched(agent, store_a, "img")


def test_file_url_outside_the_allowed_roots_is_refused(agent: AgentProcess, store_a: StoreDir) -> None:
    r = agent.call("/backup/image/add", store_a.body(imageUuid="img", url="file:///etc/passwd"))
    assert r["success"] is False
    assert r["error"]["code"] == "UNSUPPORTED_URL"
    assert_untouched(agent, store_a, "img")


def test_qcow2_with_a_backing_file_is_refused(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, srcdir: Path,
) -> None:
    base = make_qcow2(srcdir / "base.qcow2", writes=1)
    overlay = make_qcow2(srcdir / "overlay.qcow2", writes=1, backing=base)
    r = agent.call("/backup/image/add", store_a.body(imageUuid="img", url=files.url(overlay)))
    assert r["success"] is False
    assert r["error"]["code"] == "BAD_IMAGE"
    assert "backing" in r["error"]["message"]
    assert_untouched(agent, store_a, "img")


def test_a_size_that_lies_is_refused(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, srcdir: Path,
) -> None:
    img = make_raw(srcdir / "d.raw", 8 * MiB, seed=3)
    # the command announces a size the server does not have: refused before any byte is stored
    r = agent.call("/backup/image/add", store_a.body(imageUuid="img", url=files.url(img), size=9 * MiB))
    assert r["error"]["code"] == "SIZE_MISMATCH"
    assert_untouched(agent, store_a, "img")
    # the server announces more bytes than it sends: the download fails
    files.announce[files.url(img).split("/", 3)[3]] = 10 * MiB
    r = agent.call("/backup/image/add", store_a.body(imageUuid="img", url=files.url(img)))
    assert r["error"]["code"] == "DOWNLOAD_FAILED"
    assert_untouched(agent, store_a, "img")
    # a wrong sha256, from a file and over HTTP (whose chunks are written while they arrive)
    files.announce.clear()
    for url in (img.as_uri(), files.url(img)):
        r = agent.call("/backup/image/add", store_a.body(imageUuid="img", url=url, sha256="0" * 64))
        assert r["error"]["code"] == "DIGEST_MISMATCH"
        assert_untouched(agent, store_a, "img")


def test_http_error_status_fails_cleanly(agent: AgentProcess, store_a: StoreDir, files: FileServer) -> None:
    r = agent.call("/backup/image/add", store_a.body(imageUuid="img", url=files.url("nope.img")))
    assert r["error"]["code"] == "DOWNLOAD_FAILED"
    assert r["error"]["details"]["status"] == 404
    assert_untouched(agent, store_a, "img")


def slow_image(files: FileServer, srcdir: Path) -> Path:
    img = make_raw(srcdir / "slow.raw", 64 * MiB, seed=5, fill=1.0)
    files.rate[files.url(img).split("/", 3)[3]] = 4 * MiB
    return img


def test_cancel_a_slow_download_leaves_no_partial_image(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, srcdir: Path,
) -> None:
    img = slow_image(files, srcdir)
    task = str(uuid.uuid4())
    bg = add_in_background(agent, store_a.body(imageUuid="slow", url=files.url(img)), task)
    wait_until(lambda: downloading(agent, task, 2 * MiB), timeout=30, what="download progress")
    assert list((store_a.path / "tmp").iterdir()), "the download is in a temporary file"
    r = agent.client.post(f"/tasks/{task}/cancel")
    assert r.status_code == 200, r.text
    bg["thread"].join(30)
    assert bg["reply"]["error"]["code"] == "CANCELLED"
    assert_untouched(agent, store_a, "slow")


def test_deadline_stops_a_slow_download(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, srcdir: Path,
) -> None:
    img = slow_image(files, srcdir)
    r = agent.call("/backup/image/add", store_a.body(imageUuid="slow", url=files.url(img), timeout=2))
    assert r["error"]["code"] == "DEADLINE_EXCEEDED"
    assert_untouched(agent, store_a, "slow")


def test_killed_agent_leaves_a_consistent_store(
    own_agent: AgentProcess, new_store_dir: Any, files: FileServer, srcdir: Path, raw_image: Path,
) -> None:
    store: StoreDir = new_store_dir("kill")
    assert own_agent.call("/backup/connect", store.body())["success"]
    assert own_agent.call("/backup/image/add", store.body(imageUuid="kept", url=files.url(raw_image)))["success"]
    img = slow_image(files, srcdir)
    task = str(uuid.uuid4())
    add_in_background(own_agent, store.body(imageUuid="slow", url=files.url(img)), task)
    wait_until(lambda: downloading(own_agent, task, 2 * MiB), timeout=30, what="download progress")
    own_agent.kill9()
    own_agent.start()
    status = own_agent.client.get(f"/tasks/{task}").json()
    assert status["state"] == "interrupted"
    assert own_agent.call("/backup/image/info", store.body(imageUuid="slow"))["error"]["code"] == "IMAGE_NOT_FOUND"
    verify = own_agent.call("/backup/verify", store.body())
    assert verify["ok"] is True and verify["imagesChecked"] == 1
    gc = own_agent.call("/backup/gc", store.body(graceSeconds=0, staleSeconds=0))
    assert gc["success"] and gc["tempFilesRemoved"] >= 1
    assert store.temp_files() == []
    assert own_agent.call("/backup/verify", store.body())["ok"] is True
    assert own_agent.call("/backup/image/info", store.body(imageUuid="kept"))["image"]["digest"] == sha256_of(raw_image)
