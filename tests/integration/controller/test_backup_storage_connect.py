"""Adding SFTP backup storage whose agent is already there (no deploy): the controller sends
the real sftpbackup agent (in-process, behind the transport seam) ``/backup/connect`` in a job,
records its capacity and Connected; a failed connect is a failed job and Disconnected, and
``reconnect`` retries. The Ansible deploy path is in tests/integration/ansible."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcore.serve import build
from controller.dispatch.transport import flask_handler
from sftpbackup.app import Config, make_plugins
from tests.unit.controller.harness import AGENT_TOKEN, Cloud

pytestmark = pytest.mark.sqlite_only

AGENT_URL = "http://store.test:7171"


@pytest.fixture
def store_agent(cloud: Cloud, tmp_path: Path) -> Iterator[str]:
    """A real sftpbackup agent, reached through the controller's in-process transport."""
    config = Config(token=AGENT_TOKEN, state_dir=tmp_path / "agent", controller_urls=[])  # type: ignore[arg-type]
    runtime, app = build("sftpbackup", config, make_plugins(config))
    cloud.transport.register(AGENT_URL, flask_handler(app))
    yield AGENT_URL
    runtime.stop()


def _body(cloud: Cloud, **extra: object) -> dict[str, object]:
    zone = cloud.ok("POST", "/v1/zones", {"name": "z"})["uuid"]
    return {"name": "bs", "type": "sftp", "hostname": "127.0.0.1", "url": "/store",
            "zoneUuids": [zone], **extra}


def test_agent_is_connected_and_its_capacity_recorded(cloud: Cloud, store_agent: str,
                                                      tmp_path: Path) -> None:
    root = tmp_path / "chroot" / "store"
    status, data = cloud.call("POST", "/v1/backup-storages",
                              _body(cloud, agentUrl=store_agent, agentRoot=str(root)), wait="1")
    assert status == 200, data
    job, bs = data["job"], data["resource"]
    assert job["state"] == "succeeded", job
    assert job["result"]["status"] == "Connected"
    assert job["result"]["totalCapacity"] > 0
    assert job["result"]["agentRoot"] == str(root)
    assert any(root.iterdir())  # the agent made the store layout
    got = cloud.ok("GET", f"/v1/backup-storages/{bs['uuid']}")
    assert got["status"] == "Connected" and got["availableCapacity"] > 0


def test_failed_connect_is_a_failed_job_and_reconnect_retries(cloud: Cloud, tmp_path: Path) -> None:
    root = tmp_path / "store"
    status, data = cloud.call("POST", "/v1/backup-storages",
                              _body(cloud, agentUrl=AGENT_URL, agentRoot=str(root)), wait="1")
    job, uuid = data["job"], data["resource"]["uuid"]
    assert job["state"] == "failed" and job["error"]["code"] == "AGENT_UNREACHABLE", job
    assert cloud.ok("GET", f"/v1/backup-storages/{uuid}")["status"] == "Disconnected"

    config = Config(token=AGENT_TOKEN, state_dir=tmp_path / "agent", controller_urls=[])  # type: ignore[arg-type]
    runtime, app = build("sftpbackup", config, make_plugins(config))
    cloud.transport.register(AGENT_URL, flask_handler(app))
    try:
        again = cloud.succeeded("POST", f"/v1/backup-storages/{uuid}/actions/reconnect", {})
        assert again["result"]["status"] == "Connected"
    finally:
        runtime.stop()


def test_without_an_agent_it_is_only_a_record(cloud: Cloud) -> None:
    status, data = cloud.call("POST", "/v1/backup-storages", _body(cloud))
    assert status == 201 and data["uuid"] and data["status"] == "Connected", data


@pytest.mark.parametrize(("extra", "field"), [
    ({"sshPassword": "secret-pw"}, "sshPassword"),
    ({"agentUrl": AGENT_URL, "agentRoot": "store"}, "agentRoot"),
    ({"agentUrl": AGENT_URL, "agentRoot": "/srv/../etc"}, "agentRoot"),
    ({"type": "ceph", "deploy": True}, "deploy"),
    ({"deploy": True, "agentRoot": "/srv/elsewhere"}, "agentRoot"),
])
def test_bad_input_is_a_400_naming_the_field(cloud: Cloud, extra: dict[str, object], field: str) -> None:
    status, data = cloud.call("POST", "/v1/backup-storages", _body(cloud, **extra))
    assert status == 400, data
    assert data["error"]["details"]["field"] == field, data
    assert "secret-pw" not in str(data)
    assert cloud.ok("GET", "/v1/backup-storages")["items"] == []
