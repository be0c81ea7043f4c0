"""The cephagent's HTTP surface in-process: every command is served, and bad
input is a 400 naming the field before any connection is attempted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from agentcore.serve import build
from cephagent.app import Config, make_plugins

TOKEN = "unit-token-0123456789"
CLUSTER = {"monitors": ["127.0.0.1:6789"], "user": "agent", "keyring": "/etc/ceph/agent.keyring"}

CONTRACT = [
    "/ceph/connect", "/ceph/ping", "/ceph/facts", "/ceph/pools/init", "/ceph/pools/check", "/ceph/capacity",
    "/ceph/volume/create", "/ceph/volume/create-from-image", "/ceph/volume/delete", "/ceph/volume/resize",
    "/ceph/volume/info", "/ceph/volume/flatten", "/ceph/volume/create-template",
    "/ceph/snapshot/create", "/ceph/snapshot/delete", "/ceph/snapshot/protect", "/ceph/snapshot/unprotect",
    "/ceph/snapshot/rollback", "/ceph/image/add", "/ceph/image/cache", "/ceph/image/delete",
    "/ceph/image/info", "/ceph/image/import-from-sftp", "/ceph/image/export-to-sftp",
]


class Untouchable:
    """Stands in for the connection pool: any use fails the test."""

    def get(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("the cluster was touched")

    def close(self) -> None:
        pass


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    config = Config(token=TOKEN, state_dir=tmp_path / "state")
    plugins = make_plugins(config)
    for p in plugins:
        p.ceph.pool = Untouchable()  # type: ignore[attr-defined]
    runtime, app = build("cephagent", config, plugins)
    yield app.test_client()
    runtime.stop()


def post(client: FlaskClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})


def test_every_contract_command_is_served_and_documented(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    for path in CONTRACT:
        assert path in doc["paths"], path
        assert doc["paths"][path]["post"].get("summary"), path


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/ceph/volume/create", {"pool": "a/b", "name": "v", "size": 1}, "pool"),
    ("/ceph/volume/create", {"pool": "p", "name": "v@s", "size": 1}, "name"),
    ("/ceph/volume/create", {"pool": "p", "name": "v", "size": -5}, "size"),
    ("/ceph/volume/resize", {"pool": "p", "name": "v", "size": 0}, "size"),
    ("/ceph/snapshot/rollback", {"pool": "p", "name": "v", "snapshot": "x/y"}, "snapshot"),
    ("/ceph/image/add", {"pool": "p", "name": "i", "url": "file:///etc/shadow"}, "url"),
    ("/ceph/image/cache", {"pool": "p", "name": "i", "srcPool": "b@d", "srcName": "i"}, "srcPool"),
    ("/ceph/pools/init", {"pools": [{"name": "p/q"}]}, "pools.0.name"),
    ("/ceph/ping", {}, "pool"),
])
def test_bad_input_never_reaches_the_cluster(client: FlaskClient, path: str, body: dict[str, Any],
                                             field: str) -> None:
    r = post(client, path, {"cluster": CLUSTER, **body})
    assert r.status_code == 400, r.get_json()
    err = r.get_json()["error"]
    assert err["code"] == "INVALID_REQUEST"
    assert field in [f["field"] for f in err["details"]["fields"]]


def test_missing_cluster_is_named(client: FlaskClient) -> None:
    r = post(client, "/ceph/facts", {})
    assert r.status_code == 400
    assert [f["field"] for f in r.get_json()["error"]["details"]["fields"]] == ["cluster"]
