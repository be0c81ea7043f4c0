"""Bad input is refused before anything is touched: a 400 naming the field, or
a structured error naming it, and the storage tree (and the host) unchanged."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.storageagent.conftest import Storage, local_storage, tree
from tests.support.agents import AgentProcess


@pytest.fixture(scope="module")
def storage(agent: AgentProcess, workdir: Path) -> Storage:
    s = local_storage(agent, workdir)
    s.ok("/storage/volume/create-empty", installPath="vols/ok.qcow2", size=1 << 20)
    os.symlink("/etc", s.root / "out")
    os.symlink("/etc/passwd", s.root / "vols" / "passwd.qcow2")
    return s


def fields_named(body: dict[str, Any]) -> set[str]:
    err = body["error"]
    details = err.get("details") or {}
    named = {f["field"] for f in details.get("fields", [])}
    if "field" in details:
        named.add(details["field"])
    return named


V = "/storage/volume"
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("dotdot", f"{V}/info", {"installPath": "../../etc/passwd"}, "installPath"),
    ("absolute", f"{V}/create-empty", {"installPath": "/etc/evil.qcow2", "size": 1 << 20}, "installPath"),
    ("symlinked dir out of root", f"{V}/create-empty", {"installPath": "out/evil.qcow2", "size": 1 << 20},
     "installPath"),
    ("symlinked file out of root", f"{V}/delete", {"installPath": "vols/passwd.qcow2"}, "installPath"),
    ("symlink target of snapshot", "/storage/snapshot/create",
     {"installPath": "vols/ok.qcow2", "snapshotPath": "out/snap.qcow2"}, "snapshotPath"),
    ("negative size", f"{V}/create-empty", {"installPath": "vols/n.qcow2", "size": -1}, "size"),
    ("zero size", f"{V}/create-empty", {"installPath": "vols/n.qcow2", "size": 0}, "size"),
    ("absurd size", f"{V}/create-empty", {"installPath": "vols/n.qcow2", "size": 1 << 70}, "size"),
    ("absurd resize", f"{V}/resize", {"installPath": "vols/ok.qcow2", "size": 1 << 60}, "size"),
    ("shrink without force", f"{V}/resize", {"installPath": "vols/ok.qcow2", "size": 4096}, "size"),
    ("unknown format", f"{V}/create-empty", {"installPath": "vols/n.vmdk", "size": 1 << 20, "format": "vmdk"},
     "format"),
    ("unknown template format", f"{V}/create-template",
     {"installPath": "vols/ok.qcow2", "templatePath": "t.img", "format": "vdi"}, "format"),
    ("image not in cache", f"{V}/create-root", {"imageId": "missing", "installPath": "vols/r.qcow2"},
     "imageId"),
    ("template not in cache", f"{V}/create-from-template", {"imageId": "missing", "installPath": "vols/r.qcow2"},
     "imageId"),
    ("restore outside the root", f"{V}/create-from-store",
     {"installPath": "../x.qcow2", "digest": "sha256:" + "a" * 64,
      "source": {"kind": "sftp", "host": "h", "user": "u", "storeRoot": "/s", "imageId": "i"}},
     "installPath"),
    ("restore into a reserved tree", f"{V}/create-from-store",
     {"installPath": "imagecache/x.qcow2", "digest": "sha256:" + "a" * 64,
      "source": {"kind": "sftp", "host": "h", "user": "u", "storeRoot": "/s", "imageId": "i"}},
     "installPath"),
    ("reserved tree", f"{V}/create-empty", {"installPath": "imagecache/x.qcow2", "size": 1 << 20},
     "installPath"),
    ("bad image id", "/storage/cache-image",
     {"imageId": "../x", "digest": "sha256:" + "a" * 64, "source": {"kind": "http", "url": "http://127.0.0.1:9/x"}},
     "imageId"),
    ("bad digest", "/storage/cache-image",
     {"imageId": "x", "digest": "md5:abc", "source": {"kind": "http", "url": "http://127.0.0.1:9/x"}}, "digest"),
    ("file url", "/storage/cache-image",
     {"imageId": "x", "digest": "sha256:" + "a" * 64, "source": {"kind": "http", "url": "file:///etc/passwd"}},
     "source.http.url"),
    ("unknown field", f"{V}/create-empty", {"installPath": "vols/n.qcow2", "size": 1 << 20, "sise": 1}, "sise"),
    ("copy to a path escaping the other root", f"{V}/copy",
     {"installPath": "vols/ok.qcow2", "dstStorageUuid": "x", "dstMountPath": "/etc",
      "dstInstallPath": "a.qcow2"}, "dstMountPath"),
]


@pytest.mark.parametrize(("path", "body", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_naming_the_field_and_nothing_touched(
    storage: Storage, path: str, body: dict[str, Any], field: str
) -> None:
    before = tree(storage.root)
    etc_before = sorted(os.listdir("/etc"))
    r = storage.agent.post(path, {**storage.ref, **body})
    reply = r.json()
    assert r.status_code in (200, 400), r.text
    assert reply["success"] is False, reply
    assert field in fields_named(reply), reply
    assert tree(storage.root) == before
    assert sorted(os.listdir("/etc")) == etc_before


def test_storage_outside_the_base_dirs_or_of_another_uuid_is_refused(storage: Storage) -> None:
    r = storage.agent.post("/storage/init", {"storageUuid": "x", "mountPath": "/etc", "type": "local"}).json()
    assert r["success"] is False and "mountPath" in fields_named(r)
    other = storage.agent.post(f"{V}/create-empty", {
        "storageUuid": f"ps-{uuid.uuid4().hex[:8]}", "mountPath": str(storage.root),
        "installPath": "vols/x.qcow2", "size": 1 << 20}).json()
    assert other["error"]["code"] == "STORAGE_NOT_READY"
    assert not (storage.root / "vols" / "x.qcow2").exists()
