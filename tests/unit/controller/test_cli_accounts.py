"""``kvmcloud serve`` refuses to start open; ``kvmcloud account`` and ``kvmcloud audit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import controller.server
from controller.cli import cli
from tests.unit.controller.test_cli import FakeApi, run


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``serve`` would have run the server with (it is not run)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(controller.server, "serve",
                        lambda listen, db_url, **kw: calls.append({"listen": listen, **kw}))
    for var in ("KVMCLOUD_API_TOKENS", "KVMCLOUD_AGENT_TOKEN", "KVMCLOUD_DB"):
        monkeypatch.delenv(var, raising=False)
    return calls


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["serve", "--db", f"sqlite:///{tmp_path}/c.db", *args], env=env)


def test_serve_without_credentials_on_any_address_exits_with_a_clear_message(
        tmp_path: Path, served: list[dict[str, Any]]) -> None:
    res = _serve(tmp_path, "--listen", "0.0.0.0:8080")
    assert res.exit_code == 1 and served == [], res.output
    assert "refusing to start without API credentials" in res.output
    assert "--api-token" in res.output and "--insecure-no-auth" in res.output
    res = _serve(tmp_path, "--listen", "0.0.0.0:8080", "--insecure-no-auth")
    assert res.exit_code == 1 and served == [], res.output
    assert "loopback" in res.output and "0.0.0.0:8080" in res.output


def test_serve_starts_with_bootstrap_tokens_or_insecure_on_loopback(
        tmp_path: Path, served: list[dict[str, Any]]) -> None:
    res = _serve(tmp_path, "--listen", "0.0.0.0:8080", env={"KVMCLOUD_API_TOKENS": "t-one,t-two"})
    assert res.exit_code == 0, res.output
    res = _serve(tmp_path, "--listen", "127.0.0.1:8080", "--insecure-no-auth")
    assert res.exit_code == 0, res.output
    assert served == [{"listen": "0.0.0.0:8080", "api_tokens": ["t-one", "t-two"]},
                      {"listen": "127.0.0.1:8080", "insecure_no_auth": True}]


def test_account_create_prints_the_token_once() -> None:
    account = {"uuid": "f" * 32, "name": "viewer", "role": "readonly", "createDate": "2026-01-01"}
    api = FakeApi({("POST", "/accounts"): (201, {**account, "token": "kc_secret-token"})})
    res = run(api, "account", "create", "viewer", "--role", "readonly")
    assert res.exit_code == 0, res.output
    [post] = api.sent("POST", "/accounts")
    assert json.loads(post.content) == {"name": "viewer", "role": "readonly"}
    assert res.stdout.count("kc_secret-token") == 1 and "viewer" in res.stdout


def test_account_list_delete_and_audit_list() -> None:
    account = {"uuid": "f" * 32, "name": "viewer", "role": "readonly", "createDate": "2026-01-01"}
    api = FakeApi({
        ("GET", "/accounts"): (200, {"items": [account]}),
        ("DELETE", f"/accounts/{'f' * 32}"): (204, {}),
        ("GET", "/audit-events"): (200, {"items": [{"accountName": "viewer", "method": "POST",
                                                    "path": "/v1/zones", "status": 403}]}),
    })
    assert "viewer" in run(api, "account", "list").stdout
    res = run(api, "account", "delete", "viewer")
    assert res.exit_code == 0, res.output
    assert [r.url.params.get("q") for r in api.sent("GET", "/accounts")] == [None, "name=viewer"]
    assert len(api.sent("DELETE", f"/accounts/{'f' * 32}")) == 1
    res = run(api, "audit", "list", "-q", "status>=400")
    assert res.exit_code == 0 and "/v1/zones" in res.stdout, res.output
    [get] = api.sent("GET", "/audit-events")
    assert get.url.params.get("q") == "status>=400" and get.url.params.get("sort") == "-createDate"


def test_account_list_and_get_take_the_resources_options() -> None:
    account = {"uuid": "f" * 32, "name": "viewer", "role": "readonly", "createDate": "2026-01-01"}
    api = FakeApi({("GET", "/accounts"): (200, {"items": [account], "total": 1}),
                   ("GET", f"/accounts/{'f' * 32}"): (200, account)})
    res = run(api, "account", "list", "--sort", "-name", "--limit", "5", "--count", "--fields", "name,role")
    assert res.exit_code == 0 and "viewer" in res.stdout, res.output
    [listed] = api.sent("GET", "/accounts")
    assert (listed.url.params.get("sort"), listed.url.params.get("limit"), listed.url.params.get("count"),
            listed.url.params.get("fields")) == ("-name", "5", "1", "name,role")
    res = run(api, "account", "get", "viewer", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == account, res.output
