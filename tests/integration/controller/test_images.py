"""Images added from a URL into backup storage, registered, and deleted (fake sftpbackup agents)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from controller.db.models import Image, ImageBackupStorageRef
from tests.unit.controller.fakebackup import DIGEST_HEX, FILE_SIZE, VIRTUAL_SIZE, FakeBackupAgent
from tests.unit.controller.harness import Cloud

pytestmark = pytest.mark.sqlite_only

URL = "http://files.example/guest.qcow2"


def _backup_storage(cloud: Cloud, body: dict[str, Any]) -> str:
    return cloud.backup_storage(body)


def _backup_agent(cloud: Cloud, name: str) -> tuple[FakeBackupAgent, str]:
    return cloud.backup_agent(name)


def _counts(cloud: Cloud) -> tuple[int, int]:
    with cloud.ctl.db.read() as s:
        return (s.scalar(select(func.count()).select_from(Image)) or 0,
                s.scalar(select(func.count()).select_from(ImageBackupStorageRef)) or 0)


def _add(cloud: Cloud, bss: list[str], **extra: Any) -> tuple[int, Any]:
    return cloud.call("POST", "/v1/images", {"name": "guest", "backupStorageUuids": bss,
                                            "url": URL, **extra}, wait="1")


def test_add_from_url_into_two_stores(cloud: Cloud) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    b, bs_b = _backup_agent(cloud, "bsb")
    status, data = _add(cloud, [bs_a, bs_b], digest=DIGEST_HEX, platform="Linux")
    assert status == 200 and data["job"]["state"] == "succeeded", data
    assert data["job"]["kind"] == "add-image"
    uuid = data["resource"]["uuid"]
    image = cloud.ok("GET", f"/v1/images/{uuid}")
    assert image["status"] == "Ready" and image["digest"] == "sha256:" + DIGEST_HEX
    assert (image["size"], image["actualSize"], image["format"]) == (VIRTUAL_SIZE, FILE_SIZE, "qcow2")
    assert image["sourceUrl"] == URL and image["url"] is None
    assert a.held() == {uuid} and b.held() == {uuid}
    add = next(body for path, body in a.calls if path == "/backup/image/add")
    assert add["root"] == "/srv/chroot/bsa" and add["sha256"] == DIGEST_HEX  # bare hex to the agent
    with cloud.ctl.db.read() as s:
        refs = {(r.backup_storage_uuid, r.install_path) for r in s.scalars(
            select(ImageBackupStorageRef).where(ImageBackupStorageRef.image_uuid == uuid))}
    assert refs == {(bs_a, uuid), (bs_b, uuid)}


def test_the_agents_progress_shows_in_the_job(cloud: Cloud) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    gate = threading.Event()
    original = a.do_backup_image_add
    a.do_backup_image_add = lambda c: (gate.wait(10), original(c))[1]  # type: ignore[method-assign]
    status, data = cloud.call("POST", "/v1/images", {"name": "g", "backupStorageUuids": [bs_a],
                                                     "url": URL})
    assert status == 202 and data["resource"]["status"] == "Downloading", data
    job_uuid = data["job"]["uuid"]
    end = time.monotonic() + 10
    while (job := cloud.ok("GET", f"/v1/jobs/{job_uuid}")["job"])["percent"] != 50.0:
        assert time.monotonic() < end, job
        time.sleep(0.02)
    assert job["state"] == "running" and "download" in job["stage"], job
    assert cloud.ok("GET", f"/v1/images/{data['resource']['uuid']}")["status"] == "Downloading"
    gate.set()
    assert cloud.job("GET", f"/v1/jobs/{job_uuid}")["state"] == "succeeded"


def test_a_failed_store_rolls_back_the_others_and_removes_the_row(cloud: Cloud) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    b, bs_b = _backup_agent(cloud, "bsb")
    b.faults["/backup/image/add"] = "DOWNLOAD_FAILED"
    before = _counts(cloud)
    status, data = _add(cloud, [bs_a, bs_b])
    job = data["job"]
    assert job["state"] == "failed" and job["error"]["code"] == "DOWNLOAD_FAILED", job
    assert job["error"]["message"] == "injected failure"
    assert a.held() == set() and b.held() == set()
    assert any(path == "/backup/image/delete" for path, _ in a.calls)
    assert _counts(cloud) == before
    assert cloud.call("GET", f"/v1/images/{data['resource']['uuid']}")[0] == 404


def test_a_wrong_digest_fails_the_job(cloud: Cloud) -> None:
    _, bs_a = _backup_agent(cloud, "bsa")
    status, data = _add(cloud, [bs_a], digest="sha256:" + "00" * 32)
    assert data["job"]["error"]["code"] == "DIGEST_MISMATCH", data
    assert _counts(cloud) == (0, 0)


def test_registering_an_image_already_in_a_store_still_works(cloud: Cloud) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    status, data = cloud.call("POST", "/v1/images", {
        "name": "old", "backupStorageUuids": [bs_a], "imageId": "img-1",
        "digest": DIGEST_HEX.upper(), "size": VIRTUAL_SIZE})
    assert status == 201 and data["status"] == "Ready", data
    assert data["digest"] == "sha256:" + DIGEST_HEX and data["format"] == "qcow2"
    assert not any(path == "/backup/image/add" for path, _ in a.calls)


def test_delete_removes_it_from_every_store(cloud: Cloud) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    b, bs_b = _backup_agent(cloud, "bsb")
    uuid = _add(cloud, [bs_a, bs_b])[1]["resource"]["uuid"]
    b.images.clear()  # already gone from one store: the delete still succeeds
    plan = cloud.ok("DELETE", f"/v1/images/{uuid}")
    assert [(i["type"], i["action"]) for i in plan["affected"]] == [("images", "delete")]
    assert cloud.job("DELETE", f"/v1/images/{uuid}?confirm=1")["state"] == "succeeded"
    assert a.held() == set() and _counts(cloud) == (0, 0)
    assert any(body["imageUuid"] == uuid for path, body in b.calls if path == "/backup/image/delete")


def test_delete_keeps_the_vms_made_from_it(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = cloud.ok("POST", "/v1/vms", cloud.vm_body(), wait="1")["resource"]["uuid"]
    image = cloud.ids["image"]
    plan = cloud.ok("DELETE", f"/v1/images/{image}")["affected"]
    assert {"type": "vms", "uuid": vm, "name": "web1", "action": "detach"} in plan
    assert cloud.job("DELETE", f"/v1/images/{image}?confirm=1")["state"] == "succeeded"
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Running" and got["imageUuid"] is None
    assert cloud.call("GET", f"/v1/images/{image}")[0] == 404


def test_a_store_that_fails_to_delete_fails_the_job(cloud: Cloud) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    uuid = _add(cloud, [bs_a])[1]["resource"]["uuid"]
    a.faults["/backup/image/delete"] = "IO_ERROR"
    job = cloud.job("DELETE", f"/v1/images/{uuid}?confirm=1")
    assert job["state"] == "failed" and job["error"]["code"] == "IO_ERROR", job
    assert cloud.ok("GET", f"/v1/images/{uuid}")["status"] == "Ready"  # nothing half-deleted


BAD = [
    ({"url": "ftp://files.example/x.qcow2"}, "url"),
    ({"url": "http://files.example/x y"}, "url"),
    ({"backupStorageUuids": ["0" * 32]}, "backupStorageUuids.0"),
    ({"actualSize": -1}, "actualSize"),
    ({"size": 1 << 30}, "size"),
    ({"digest": "sha256:1234"}, "digest"),
    ({"format": "vmdk"}, "format"),
    ({"url": None}, "url"),
    ({"backupStorageUuids": "@twice"}, "backupStorageUuids"),
    ({"backupStorageUuids": "@ceph"}, "backupStorageUuids.0"),
    ({"backupStorageUuids": "@noagent"}, "backupStorageUuids.0"),
    ({"imageId": "img-1", "digest": DIGEST_HEX}, "size"),
    ({"imageId": "img-1", "size": 1}, "digest"),
    ({"imageId": "img-1", "size": 1, "digest": DIGEST_HEX, "url": "sftp://h/x"}, "url"),
]


@pytest.mark.parametrize("extra,field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_is_400_naming_the_field_and_writes_nothing(cloud: Cloud, extra: dict[str, Any],
                                                              field: str) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    body: dict[str, Any] = {"name": "g", "backupStorageUuids": [bs_a], "url": URL, **extra}
    which = body["backupStorageUuids"]
    if which == "@twice":
        body["backupStorageUuids"] = [bs_a, bs_a]
    elif which == "@ceph":
        body["backupStorageUuids"] = [_backup_storage(cloud, {
            "name": "c", "type": "ceph", "hostname": "mon1", "url": "images"})]
    elif which == "@noagent":
        body["backupStorageUuids"] = [_backup_storage(cloud, {
            "name": "n", "type": "sftp", "hostname": "h", "url": "/s"})]
    jobs_before = cloud.ok("GET", "/v1/jobs", count="1")["total"]
    status, data = cloud.call("POST", "/v1/images", {k: v for k, v in body.items() if v is not None})
    assert status == 400, data
    assert data["error"]["code"] == "INVALID_REQUEST"
    assert data["error"]["details"]["field"] == field, data
    assert _counts(cloud) == (0, 0)
    assert cloud.ok("GET", "/v1/jobs", count="1")["total"] == jobs_before
    assert not any(path == "/backup/image/add" for path, _ in a.calls)


def test_cancel_stops_the_download_and_rolls_back(cloud: Cloud) -> None:
    a, bs_a = _backup_agent(cloud, "bsa")
    b, bs_b = _backup_agent(cloud, "bsb")
    b.hang.add("/backup/image/add")  # the second store's download never ends by itself
    status, data = cloud.call("POST", "/v1/images", {"name": "g", "backupStorageUuids": [bs_a, bs_b],
                                                     "url": URL})
    assert status == 202, data
    job_uuid, image = data["job"]["uuid"], data["resource"]["uuid"]
    end = time.monotonic() + 10
    while not any(path == "/backup/image/add" for path, _ in b.calls):
        assert time.monotonic() < end
        time.sleep(0.02)
    cloud.ok("POST", f"/v1/jobs/{job_uuid}/cancel")
    job = cloud.job("GET", f"/v1/jobs/{job_uuid}")
    assert job["state"] == "cancelled", job
    assert [t["state"] for t in b.tasks.values() if t["path"] == "/backup/image/add"] == ["cancelled"]
    assert a.held() == set() and _counts(cloud) == (0, 0)
    assert cloud.call("GET", f"/v1/images/{image}")[0] == 404


def test_a_controller_restart_mid_add_leaves_the_image_error(make_cloud: Callable[..., Cloud]) -> None:
    first = make_cloud()
    a, bs_a = _backup_agent(first, "bsa")
    a.hang.add("/backup/image/add")
    data = first.ok("POST", "/v1/images", {"name": "g", "backupStorageUuids": [bs_a], "url": URL})
    end = time.monotonic() + 10
    while not any(path == "/backup/image/add" for path, _ in a.calls):
        assert time.monotonic() < end
        time.sleep(0.02)
    second = make_cloud()  # a second process on the same database: the first one is gone
    job = second.ok("GET", f"/v1/jobs/{data['job']['uuid']}")["job"]
    assert job["state"] == "failed" and job["error"]["code"] == "CONTROLLER_RESTARTED"
    image = data["resource"]["uuid"]
    assert second.ok("GET", f"/v1/images/{image}")["status"] == "Error"
    assert second.job("DELETE", f"/v1/images/{image}?confirm=1")["state"] == "succeeded"
    assert _counts(second) == (0, 0)


def test_no_vm_from_an_image_still_downloading(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    a, bs_a = _backup_agent(cloud, "bsa")
    a.hang.add("/backup/image/add")
    image = cloud.ok("POST", "/v1/images", {"name": "g", "backupStorageUuids": [bs_a],
                                            "url": URL})["resource"]["uuid"]
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body(imageUuid=image))
    assert status == 400 and data["error"]["details"]["field"] == "imageUuid", data
    assert "Downloading" in data["error"]["message"]
