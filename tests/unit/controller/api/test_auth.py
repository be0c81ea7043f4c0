"""API accounts and roles, the audit log, and the controller refusing to start open."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from controller.api.auth import NoCredentials
from controller.server import create_app
from controller.settings import Settings
from tests.unit.controller.harness import API_TOKEN, Cloud

BOOTSTRAP = "bootstrap:" + hashlib.sha256(API_TOKEN.encode()).hexdigest()[:8]


def _account(cloud: Cloud, name: str, role: str) -> dict[str, Any]:
    status, data = cloud.call("POST", "/v1/accounts", {"name": name, "role": role})
    assert status == 201, data
    return dict(data)


def _rows(cloud: Cloud, table: str) -> list[tuple[Any, ...]]:
    with cloud.ctl.db.engine.connect() as c:
        return [tuple(r) for r in c.execute(text(f"SELECT * FROM {table}"))]


def test_a_readonly_account_reads_but_changes_nothing(cloud: Cloud) -> None:
    ro = _account(cloud, "viewer", "readonly")["token"]
    zone = cloud.ok("POST", "/v1/zones", {"name": "z1"})["uuid"]
    assert cloud.call("GET", "/v1/zones", token=ro)[0] == 200
    assert cloud.call("GET", f"/v1/zones/{zone}", token=ro)[0] == 200
    status, data = cloud.call("POST", "/v1/zones", {"name": "z2"}, token=ro)
    assert status == 403 and data["error"]["code"] == "FORBIDDEN", data
    for method, path in (("PATCH", f"/v1/zones/{zone}"), ("DELETE", f"/v1/zones/{zone}"),
                         ("POST", f"/v1/zones/{zone}/actions/x"), ("POST", "/v1/jobs/x/cancel"),
                         ("POST", "/v1/accounts"), ("GET", "/v1/accounts"),
                         ("GET", "/v1/audit-events")):
        assert cloud.call(method, path, {"name": "x"}, token=ro)[0] == 403, (method, path)
    assert [z["name"] for z in cloud.ok("GET", "/v1/zones")["items"]] == ["z1"]


def test_accounts_keep_only_a_hash_of_their_token(cloud: Cloud) -> None:
    ops = _account(cloud, "ops", "admin")
    token = ops.pop("token")
    assert token.startswith("kc_") and len(token) > 40
    assert set(ops) == {"uuid", "name", "role", "createDate"}
    assert cloud.call("POST", "/v1/zones", {"name": "z"}, token=token)[0] == 201
    listed = cloud.ok("GET", "/v1/accounts", q="role=admin")["items"]
    assert listed == [ops] and cloud.ok("GET", f"/v1/accounts/{ops['uuid']}") == ops
    stored = repr(_rows(cloud, "accounts") + _rows(cloud, "account_tokens"))
    assert token not in stored and hashlib.sha256(token.encode()).hexdigest() in stored

    assert cloud.call("POST", "/v1/accounts", {"name": "ops"})[0] == 409
    assert cloud.call("POST", "/v1/accounts", {"name": "x", "role": "root"})[0] == 400
    assert cloud.call("POST", "/v1/accounts", {"name": "-x"})[0] == 400
    assert _account(cloud, "viewer", "readonly")["role"] == "readonly"
    assert cloud.call("DELETE", f"/v1/accounts/{ops['uuid']}")[0] == 204
    assert cloud.call("GET", "/v1/zones", token=token)[0] == 401  # deleted: at once
    assert len(_rows(cloud, "account_tokens")) == 1  # the viewer's; ops' went with it


def test_mutating_calls_leave_audit_rows_without_secrets(cloud: Cloud) -> None:
    zone = cloud.ok("POST", "/v1/zones", {"name": "z1"})["uuid"]
    cloud.ok("PATCH", f"/v1/zones/{zone}", {"name": "z2"})
    viewer = _account(cloud, "viewer", "readonly")
    assert cloud.call("DELETE", f"/v1/zones/{zone}", token=viewer["token"])[0] == 403
    assert cloud.call("POST", "/v1/zones", {"name": "z3"}, token="wrong")[0] == 401
    cloud.ok("GET", "/v1/zones")

    events = cloud.ok("GET", "/v1/audit-events", sort="createDate")["items"]
    seen = [(e["accountName"], e["role"], e["method"], e["path"], e["resourceUuid"], e["status"])
            for e in events]
    assert seen == [
        (BOOTSTRAP, "admin", "POST", "/v1/zones", zone, 201),
        (BOOTSTRAP, "admin", "PATCH", f"/v1/zones/{zone}", zone, 200),
        (BOOTSTRAP, "admin", "POST", "/v1/accounts", viewer["uuid"], 201),
        ("viewer", "readonly", "DELETE", f"/v1/zones/{zone}", zone, 403),
    ]
    assert events[-1]["accountUuid"] == viewer["uuid"] and all(e["createDate"] for e in events)
    mine = cloud.ok("GET", "/v1/audit-events", q=["accountName=viewer", "status>=400"], count="1")
    assert mine["total"] == 1 and mine["items"][0]["method"] == "DELETE"
    stored = repr(_rows(cloud, "audit_events"))
    assert viewer["token"] not in stored and API_TOKEN not in stored


def test_accounts_in_the_database_are_credentials_and_the_last_admin_stays(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    first = Cloud(url)
    try:
        admin = _account(first, "root-ops", "admin")
    finally:
        first.close()
    # a controller with no bootstrap token starts: the database has an account
    app = create_app(Settings(db_url=url, tracker=False))
    ctl = app.extensions["kvmcloud"]
    try:
        client = app.test_client(use_cookies=False)
        auth = {"Authorization": f"Bearer {admin['token']}"}
        assert client.get("/v1/zones").status_code == 401
        assert client.get("/v1/zones", headers=auth).status_code == 200
        r = client.delete(f"/v1/accounts/{admin['uuid']}", headers=auth)
        assert r.status_code == 409, r.get_data(as_text=True)  # nobody could log in after it
    finally:
        ctl.close()


def test_the_controller_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    with pytest.raises(NoCredentials, match="--insecure-no-auth"):
        create_app(Settings(db_url=url, tracker=False, listen="0.0.0.0:8080"))
    with pytest.raises(ValidationError, match="loopback"):
        Settings(db_url=url, insecure_no_auth=True, listen="0.0.0.0:8080")
    with pytest.raises(ValidationError, match="loopback"):
        Settings(db_url=url, insecure_no_auth=True, listen="kvm.example:8080")
    for listen in ("127.0.0.1:8080", "localhost:1", "[::1]:8080", "127.0.0.2:8080"):
        assert Settings(db_url=url, insecure_no_auth=True, listen=listen).insecure_no_auth


def test_insecure_no_auth_on_loopback_serves_calls_without_a_token_as_admin(tmp_path: Path) -> None:
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/c.db", tracker=False,
                              insecure_no_auth=True))
    ctl = app.extensions["kvmcloud"]
    try:
        client = app.test_client(use_cookies=False)
        assert client.post("/v1/zones", json={"name": "z"}).status_code == 201
        assert client.get("/v1/zones", headers={"Authorization": "Bearer wrong"}).status_code == 401
        [event] = client.get("/v1/audit-events").get_json()["items"]
        assert (event["accountName"], event["status"]) == ("anonymous", 201)
    finally:
        ctl.close()
