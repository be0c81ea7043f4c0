"""The controller adds images to a real SFTP backup storage from a real HTTP server.

A controller in-process over real HTTP, a real sftpbackup agent whose store
lies inside the chroot of the real sshd component (``url`` is the store as
SFTP clients see it, ``agentRoot`` as the agent reads it), and the tiny guest
image served by ``tests/support/httpserver.py``, slowly enough that the job
shows the agent's download progress.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from controller.db.models import ImageBackupStorageRef
from sftpbackup.client import StoreClient
from tests.integration.controller.realworld import SftpStore, add_backup_storage, serve_controller, sftp_store
from tests.support.httpserver import FileServer

pytestmark = [pytest.mark.sftp, pytest.mark.slow]
API = "images-api-token-0123456789"


@dataclass
class Rig:
    """The controller's API, the file server and the store with its agent."""

    api: httpx.Client
    app: Any
    files: FileServer
    store: SftpStore
    bs: str
    image: Path
    sha256: str
    virtual_size: int

    def run(self, method: str, path: str, body: Any = None, **params: str) -> dict[str, Any]:
        r = self.api.request(method, path, json=body, params={"wait": "1", **params}, timeout=600)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()["job"]
        return job

    def manifest(self, image_id: str) -> Path:
        return self.store.manifest(image_id)


@pytest.fixture(scope="module")
def rig(component_env: Callable[[str], dict[str, str]],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    sshd, guest = component_env("sshd"), component_env("guest")
    base = tmp_path_factory.mktemp("real-images")
    (base / "files").mkdir()
    image = base / "files" / "guest.qcow2"
    shutil.copyfile(guest["GUEST_IMAGE"], image)
    with open(image, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                     capture_output=True, check=True, timeout=30).stdout)
    files = FileServer(base / "files").start()
    app, url, server = serve_controller(f"sqlite:///{base}/controller.db", API)
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API}"}, timeout=120)
    try:
        with sftp_store(sshd, url, base / "agent") as store:
            bs = add_backup_storage(api, {"name": "sftp-real", **store.body})
            yield Rig(api, app, files, store, bs, image, sha256, int(info["virtual-size"]))
    finally:
        server.shutdown()
        app.extensions["kvmcloud"].close()
        files.stop()


def _refs(rig: Rig, image: str) -> list[str]:
    with rig.app.extensions["kvmcloud"].db.read() as s:
        return list(s.scalars(select(ImageBackupStorageRef.install_path).where(
            ImageBackupStorageRef.image_uuid == image)))


def test_add_from_http_shows_progress_and_lands_in_the_store(rig: Rig, tmp_path: Path) -> None:
    rig.files.rate["guest.qcow2"] = 4 << 20  # ~4 s for the 16 MiB guest: progress is seen
    r = rig.api.post("/v1/images", json={
        "name": "guest", "backupStorageUuids": [rig.bs], "url": rig.files.url("guest.qcow2"),
        "digest": rig.sha256, "platform": "Linux"})
    assert r.status_code == 202, r.text
    job_uuid, image = r.json()["job"]["uuid"], r.json()["resource"]["uuid"]
    assert r.json()["resource"]["status"] == "Downloading"
    seen: list[tuple[str, float]] = []
    end = time.monotonic() + 120
    while (job := rig.api.get(f"/v1/jobs/{job_uuid}").json()["job"])["state"] in ("queued", "running"):
        if job["stage"] and job["percent"] is not None:
            seen.append((job["stage"], job["percent"]))
        assert time.monotonic() < end, job
        time.sleep(0.2)
    assert job["state"] == "succeeded", job
    downloads = [pct for stage, pct in seen if "/backup/image/add" in stage and "download" in stage]
    assert downloads and 0 < min(downloads) < 100, seen

    got = rig.api.get(f"/v1/images/{image}").json()
    assert got["status"] == "Ready" and got["digest"] == "sha256:" + rig.sha256, got
    assert (got["format"], got["size"], got["actualSize"]) == (
        "qcow2", rig.virtual_size, rig.image.stat().st_size)
    assert _refs(rig, image) == [image]
    assert json.loads(rig.manifest(image).read_text())["digest"] == rig.sha256
    # what hosts will read: the image over SFTP through the chroot, every chunk verified
    with StoreClient(rig.store.target, rig.store.key, rig.store.known_hosts) as client:
        fetched = client.fetch(image, tmp_path / "back.qcow2")
    assert fetched.digest.removeprefix("sha256:") == rig.sha256

    job = rig.run("DELETE", f"/v1/images/{image}", confirm="1")
    assert job["state"] == "succeeded", job
    assert not rig.manifest(image).exists()
    assert rig.api.get(f"/v1/images/{image}").status_code == 404
    assert _refs(rig, image) == []


def test_a_404_url_fails_the_job_with_the_agents_message(rig: Rig) -> None:
    job = rig.run("POST", "/v1/images", {"name": "missing", "backupStorageUuids": [rig.bs],
                                         "url": rig.files.url("no-such.qcow2")})
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "DOWNLOAD_FAILED" and "404" in job["error"]["message"], job
    assert job["error"]["details"]["path"] == "/backup/image/add"
    image = job["resourceUuid"]
    assert _refs(rig, image) == [] and not rig.manifest(image).exists()
    assert rig.api.get(f"/v1/images/{image}").status_code == 404


def test_a_scheme_the_agent_refuses_is_refused_before_any_job(rig: Rig) -> None:
    jobs = rig.api.get("/v1/jobs", params={"count": "1"}).json()["total"]
    r = rig.api.post("/v1/images", json={"name": "x", "backupStorageUuids": [rig.bs],
                                         "url": "gopher://127.0.0.1/x"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "url", r.text
    assert rig.api.get("/v1/jobs", params={"count": "1"}).json()["total"] == jobs
