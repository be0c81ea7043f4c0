"""The ``kvmcloud`` CLI against an in-process API (httpx MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.cli.catalog import CONTRACT_COLLECTIONS, contract_catalog
from controller.cli.client import ApiClient, Settings

UUIDS = {"images": "a" * 32, "instance-offerings": "b" * 32, "l3-networks": "c" * 32,
         "vms": "d" * 32, "backup-storages": "e" * 32}
Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Records requests; answers name lookups and what a test scripts."""

    def __init__(self, routes: dict[tuple[str, str], Any] | None = None) -> None:
        self.routes = routes or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/v1")
        key = (request.method, path)
        if key in self.routes:
            answer = self.routes[key]
            status, body = answer(request) if callable(answer) else answer
            return httpx.Response(status, json=body)
        coll = path.strip("/")
        if request.method == "GET" and coll in UUIDS and "q" in request.url.params:
            return httpx.Response(200, json={"items": [{"uuid": UUIDS[coll]}]})
        return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": path}})

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == "/v1" + path]


def run(api: FakeApi, *args: str, input: str | None = None) -> Any:
    client = ApiClient(Settings("http://ctl.invalid"), transport=httpx.MockTransport(api))
    return CliRunner().invoke(cli, list(args), obj={"client": client}, input=input)


def job(state: str, **kw: Any) -> dict[str, Any]:
    return {"uuid": "j" * 32, "kind": "create-vm", "resourceType": "vms", "resourceUuid": "d" * 32,
            "state": state, "stage": "", "percent": None, "error": None, **kw}


def test_vm_create_resolves_names_and_sends_the_api_body() -> None:
    api = FakeApi({("POST", "/vms"): (202, {"job": job("queued"), "resource": {"uuid": "d" * 32}})})
    res = run(api, "vm", "create", "--name", "web1", "--image", "cirros", "--offering", "small",
              "--l3", "pub", "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    [post] = api.sent("POST", "/vms")
    assert json.loads(post.content) == {"name": "web1", "imageUuid": "a" * 32,
                                        "instanceOfferingUuid": "b" * 32,
                                        "l3NetworkUuids": ["c" * 32]}
    lookups = [r.url.params.get("q") for r in api.sent("GET", "/images")]
    assert lookups == ["name=cirros"]
    assert json.loads(res.stdout)["job"]["state"] == "queued"


def test_image_create_from_a_url_sends_the_add_body() -> None:
    api = FakeApi({("POST", "/images"): (202, {"job": job("queued", kind="add-image"),
                                               "resource": {"uuid": "a" * 32}})})
    res = run(api, "image", "create", "--name", "guest", "--bs", "sftp-1", "--url",
              "http://files.example/guest.qcow2", "--digest", "ab" * 32, "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    [post] = api.sent("POST", "/images")
    assert json.loads(post.content) == {"name": "guest", "backupStorageUuids": ["e" * 32],
                                        "url": "http://files.example/guest.qcow2",
                                        "digest": "ab" * 32}


def test_a_missing_field_is_refused_naming_it_before_anything_is_sent() -> None:
    api = FakeApi()
    res = run(api, "vm", "create", "--name", "web1", "--offering", "small", "--l3", "pub")
    assert res.exit_code == 2 and "imageUuid" in res.output
    assert not api.sent("POST", "/vms")


def test_a_job_is_followed_until_it_ends_and_a_failure_exits_1() -> None:
    answers = iter([job("running", stage="clone-root", percent=40.0), job("succeeded")])
    api = FakeApi({("POST", "/vms/" + "d" * 32 + "/actions/start"): (202, {"job": job("queued")}),
                   ("GET", "/jobs/" + "j" * 32): lambda r: (200, {"job": next(answers)})})
    res = run(api, "vm", "start", "d" * 32, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["job"]["state"] == "succeeded"
    waits = api.sent("GET", "/jobs/" + "j" * 32)
    assert len(waits) == 2 and waits[0].url.params["wait"] == "1"

    api = FakeApi({("POST", "/vms/" + "d" * 32 + "/actions/stop"):
                   (200, {"job": job("failed", error={"code": "LIBVIRT_ERROR"})})})
    res = run(api, "vm", "stop", "d" * 32, "--force")
    assert res.exit_code == 1 and "LIBVIRT_ERROR" in res.output
    assert json.loads(api.sent("POST", "/vms/" + "d" * 32 + "/actions/stop")[0].content) == {"force": True}


def test_list_passes_the_query_and_prints_a_table() -> None:
    items = [{"uuid": "d" * 32, "name": "web1", "state": "Running", "cpuNum": 1}]
    api = FakeApi({("GET", "/vms"): (200, {"items": items, "total": 1})})
    res = run(api, "vm", "list", "-q", "state=Running", "-q", "memorySize>1073741824",
              "--sort", "-createDate", "--limit", "5")
    assert res.exit_code == 0, res.output
    [get] = api.sent("GET", "/vms")
    assert get.url.params.get_list("q") == ["state=Running", "memorySize>1073741824"]
    assert (get.url.params["sort"], get.url.params["limit"]) == ("-createDate", "5")
    assert "web1" in res.stdout and "Running" in res.stdout


def test_delete_shows_the_cascade_and_needs_confirmation() -> None:
    plan = {"deleted": False, "affected": [{"resourceType": "vms", "uuid": "d" * 32, "name": "web1"}]}

    def delete(request: httpx.Request) -> tuple[int, Any]:
        if request.url.params.get("confirm") == "1":
            return 202, {"job": job("succeeded", kind="delete")}
        return 200, plan
    api = FakeApi({("DELETE", "/zones/" + "e" * 32): delete})
    refused = run(api, "zone", "delete", "e" * 32, input="n\n")
    assert refused.exit_code == 1 and "web1" in refused.output
    assert all(r.url.params.get("confirm") is None for r in api.requests)
    done = run(api, "zone", "delete", "e" * 32, "--yes")
    assert done.exit_code == 0, done.output
    assert api.requests[-1].url.params.get("confirm") == "1"


def test_api_errors_are_shown_as_code_and_message() -> None:
    api = FakeApi({("GET", "/vms/" + "d" * 32): (404, {"error": {"code": "NOT_FOUND",
                                                                 "message": "no vm"}})})
    res = run(api, "vm", "get", "d" * 32)
    assert res.exit_code == 1 and "NOT_FOUND: no vm" in res.output


def test_settings_come_from_flags_then_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "cli.toml"
    conf.write_text('url = "http://ctl:8080/"\ntoken = "from-file"\n')
    assert Settings.resolve(None, None, str(conf)) == Settings("http://ctl:8080", "from-file")
    assert Settings.resolve("http://other:1", "t", str(conf)) == Settings("http://other:1", "t")
    with pytest.raises(Exception, match="no config file"):
        Settings.resolve(None, None, str(tmp_path / "missing.toml"))


def test_the_contract_fallback_has_every_collection() -> None:
    table = contract_catalog()
    assert list(table) == CONTRACT_COLLECTIONS
    assert table["vms"].command == "vm" and "migrate" in table["vms"].actions


def test_host_update_sets_the_vtep_address() -> None:
    host = "f" * 32
    api = FakeApi({("PATCH", f"/hosts/{host}"): (200, {"uuid": host, "vtepIp": "192.0.2.7"})})
    res = run(api, "host", "update", host, "--vtep-ip", "192.0.2.7", "--json")
    assert res.exit_code == 0, res.output
    [patch] = api.sent("PATCH", f"/hosts/{host}")
    assert json.loads(patch.content) == {"vtepIp": "192.0.2.7"}


def test_backup_policy_commands_attach_vms_and_update_with_set() -> None:
    policy = "0" * 32
    api = FakeApi({
        ("POST", f"/backup-policies/{policy}/actions/attach"): (
            202, {"job": job("queued", kind="attach-backup-policy")}),
        ("PATCH", f"/backup-policies/{policy}"): (200, {"uuid": policy, "retentionCount": 7}),
    })
    res = run(api, "backup-policy", "attach", policy, "--vm", "web1", "--no-wait", "--json")
    assert res.exit_code == 0, res.output
    [attach] = api.sent("POST", f"/backup-policies/{policy}/actions/attach")
    assert json.loads(attach.content) == {"vmUuids": [UUIDS["vms"]]}
    res = run(api, "backup-policy", "update", policy, "--set", "retentionCount=7",
              "--set", "cronExpression=0 3 * * *", "--json")
    assert res.exit_code == 0, res.output
    [patch] = api.sent("PATCH", f"/backup-policies/{policy}")
    assert json.loads(patch.content) == {"retentionCount": 7, "cronExpression": "0 3 * * *"}
    assert contract_catalog()["backup-policies"].command == "backup-policy"
