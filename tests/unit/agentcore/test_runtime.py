"""The runtime in-process, through Flask's test client (no processes spawned)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from agentcore.config import AgentConfig
from agentcore.errors import InUse
from agentcore.models import Command, Reply, Returns
from agentcore.plugin import Plugin, command
from agentcore.runtime import AgentRuntime
from agentcore.serve import build
from agentcore.task import TaskContext

TOKEN = "unit-token-0123456789"


class WaitCmd(Command, Returns[Reply], path="/t/wait"):
    key: str = "k"


class BusyCmd(WaitCmd, path="/t/busy"):
    """Always fails."""


class GatePlugin(Plugin):
    """Commands that block on an event the test controls."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.runs = 0

    @command(lock=lambda c: c.key)
    def wait(self, ctx: TaskContext, cmd: WaitCmd) -> Reply:
        """Wait for the gate (or cancel)."""
        self.runs += 1
        while not self.gate.is_set():
            ctx.wait(0.01)
        return Reply()

    @command()
    def busy(self, ctx: TaskContext, cmd: BusyCmd) -> Reply:
        """Fail with IN_USE."""
        raise InUse(path="x")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[AgentRuntime, FlaskClient, GatePlugin]]:
    plugin = GatePlugin()
    config = AgentConfig(token=TOKEN, state_dir=tmp_path, workers=2, max_queued=3)  # type: ignore[arg-type]
    runtime, app = build("unit", config, [plugin])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    yield runtime, client, plugin
    plugin.gate.set()
    runtime.stop()


def test_queue_is_bounded(setup: tuple[AgentRuntime, FlaskClient, GatePlugin]) -> None:
    runtime, client, plugin = setup
    runtime.urls.add("http://127.0.0.1:1")
    for i in range(3):
        r = client.post("/t/wait", json={}, headers={"taskuuid": f"t{i}", "callbackurl": "http://127.0.0.1:1/cb"})
        assert r.status_code == 202
    r = client.post("/t/wait", json={}, headers={"taskuuid": "t4", "callbackurl": "http://127.0.0.1:1/cb"})
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "AGENT_BUSY"


def test_parked_task_is_cancelled_without_running(setup: tuple[AgentRuntime, FlaskClient, GatePlugin]) -> None:
    runtime, client, plugin = setup
    runtime.urls.add("http://127.0.0.1:1")
    cb = {"callbackurl": "http://127.0.0.1:1/cb"}
    client.post("/t/wait", json={"key": "vm"}, headers={"taskuuid": "first", **cb})
    client.post("/t/wait", json={"key": "vm"}, headers={"taskuuid": "second", **cb})
    assert client.get("/tasks/second").get_json()["state"] == "queued"
    assert client.post("/tasks/second/cancel").get_json()["state"] == "cancelled"
    plugin.gate.set()
    client.post("/t/wait", json={"key": "vm"}, headers={"taskuuid": "first"})  # waits for first
    assert plugin.runs == 1


def test_failure_reply_and_state(setup: tuple[AgentRuntime, FlaskClient, GatePlugin]) -> None:
    _, client, _ = setup
    body = client.post("/t/busy", json={}, headers={"taskuuid": "b1"}).get_json()
    assert body["error"]["code"] == "IN_USE"
    assert client.get("/tasks/b1").get_json()["state"] == "failed"
