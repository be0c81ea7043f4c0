"""The controller's database backed up and restored on SQLite, and on real PostgreSQL (pg_dump,
pg_restore) and MariaDB (mariadb-dump, the mariadb client): what was there at the backup comes
back, what came after is gone, and a backup whose bytes changed is refused before anything runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from controller.db.backup import DbBackupError, backup, read_manifest, restore
from tests.unit.controller.harness import Cloud


def _names(cloud: Cloud, coll: str) -> set[str]:
    return {item["name"] for item in cloud.ok("GET", f"/v1/{coll}")["items"]}


def test_backup_then_restore_brings_back_the_state_at_the_backup(
        make_cloud: Callable[..., Cloud], db_url: str, tmp_path: Path) -> None:
    cloud = make_cloud().basic(hosts=1)
    vm = cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web1"))["resourceUuid"]
    dest = tmp_path / "backups" / "controller.bak"
    manifest = backup(db_url, dest)  # while the controller is up
    assert manifest.size == dest.stat().st_size > 0 and manifest.revision
    assert read_manifest(dest) == manifest
    assert dest.stat().st_mode & 0o777 == 0o600

    cloud.ok("POST", "/v1/zones", {"name": "after-the-backup"})
    cloud.succeeded("DELETE", f"/v1/vms/{vm}?confirm=1")
    assert "after-the-backup" in _names(cloud, "zones") and "web1" not in _names(cloud, "vms")
    cloud.close()

    assert restore(db_url, dest) == manifest
    again = make_cloud()
    assert _names(again, "zones") == {"z1"}
    assert _names(again, "vms") == {"web1"}
    assert again.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"


def test_a_changed_backup_is_refused_before_the_database_is_touched(
        make_cloud: Callable[..., Cloud], db_url: str, tmp_path: Path) -> None:
    cloud = make_cloud()
    cloud.ok("POST", "/v1/zones", {"name": "z1"})
    dest = tmp_path / "controller.bak"
    backup(db_url, dest)
    cloud.ok("POST", "/v1/zones", {"name": "z2"})
    with dest.open("r+b") as f:
        f.seek(dest.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DbBackupError, match="does not match its manifest"):
        restore(db_url, dest)
    assert _names(cloud, "zones") == {"z1", "z2"}
