"""The sftpbackup agent in-process (Flask test client): commands that spawn no tool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from agentcore.serve import build
from sftpbackup.app import NAME, Config, make_plugins

TOKEN = "unit-token-0123456789"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    config = Config(token=TOKEN, state_dir=tmp_path / "state")  # type: ignore[arg-type]
    runtime, app = build(NAME, config, make_plugins(config))
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    yield c
    runtime.stop()


def call(c: FlaskClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(path, json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    out: dict[str, Any] = r.get_json()
    return out


def test_connect_ping_capacity(client: FlaskClient, tmp_path: Path) -> None:
    body = {"backupStorageUuid": "bs-1", "root": str(tmp_path / "store")}
    r = call(client, "/backup/connect", body)
    assert r["success"] and r["totalCapacity"] > 0 and r["usedByImages"] == 0
    assert call(client, "/backup/ping", body)["backupStorageUuid"] == "bs-1"
    assert call(client, "/backup/capacity", body)["availableCapacity"] > 0
    other = call(client, "/backup/ping", {**body, "backupStorageUuid": "bs-2"})
    assert other["error"]["code"] == "STORE_MISMATCH"
    missing = call(client, "/backup/ping", {**body, "root": str(tmp_path / "nowhere")})
    assert missing["error"]["code"] == "STORE_NOT_CONNECTED"


def test_empty_store_commands(client: FlaskClient, tmp_path: Path) -> None:
    body = {"backupStorageUuid": "bs-1", "root": str(tmp_path / "store")}
    call(client, "/backup/connect", body)
    assert call(client, "/backup/image/info", {**body, "imageUuid": "x"})["error"]["code"] == "IMAGE_NOT_FOUND"
    assert call(client, "/backup/image/delete", {**body, "imageUuid": "x"})["deleted"] is False
    assert call(client, "/backup/verify", body)["ok"] is True
    assert call(client, "/backup/gc", {**body, "graceSeconds": 0})["chunksRemoved"] == 0
    assert call(client, "/backup/catalogue/export", body)["images"] == []
    assert (tmp_path / "store" / "catalogue.json").read_text().strip() == "[]"
    assert call(client, "/backup/catalogue/import", body)["images"] == []


@pytest.mark.parametrize("path,extra,field", [
    ("/backup/image/add", {"imageUuid": "x", "url": "ftp://h/x"}, "url"),
    ("/backup/image/add", {"imageUuid": "../x", "url": "http://h/x"}, "imageUuid"),
    ("/backup/image/info", {"imageUuid": "a/../../b"}, "imageUuid"),
    ("/backup/image/push", {"imageUuid": "x", "remote": {"host": "h", "sshKey": "k"}}, "sshKey"),
])
def test_bad_bodies_are_400_naming_the_field(
    client: FlaskClient, tmp_path: Path, path: str, extra: dict[str, Any], field: str,
) -> None:
    r = client.post(path, json={"backupStorageUuid": "bs-1", "root": str(tmp_path / "s"), **extra})
    assert r.status_code == 400
    assert field in r.get_data(as_text=True)
    assert not (tmp_path / "s").exists()


def test_push_without_a_configured_key_is_refused(client: FlaskClient, tmp_path: Path) -> None:
    body = {"backupStorageUuid": "bs-1", "root": str(tmp_path / "store")}
    call(client, "/backup/connect", body)
    r = call(client, "/backup/image/push", {**body, "imageUuid": "x", "remote": {"host": "127.0.0.1"}})
    assert r["error"]["code"] == "INVALID_REQUEST"
    assert "sftp_key_file" in r["error"]["message"]


def test_openapi_documents_every_command(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    for path in ("/backup/connect", "/backup/ping", "/backup/capacity", "/backup/image/add",
                 "/backup/image/delete", "/backup/image/info", "/backup/image/push", "/backup/image/pull",
                 "/backup/verify", "/backup/gc", "/backup/catalogue/export", "/backup/catalogue/import"):
        assert path in doc["paths"], path
