"""The runtime in-process, through Flask's test client (no processes spawned)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

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


def test_a_finished_task_shows_its_end_only_once_stored(setup: tuple[AgentRuntime, FlaskClient, GatePlugin],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A poller that saw "succeeded" must find the reply after a crash: until the journal entry
    and the outgoing reply are committed, the task still shows as running."""
    runtime, client, plugin = setup
    runtime.urls.add("http://127.0.0.1:1")
    client.post("/t/wait", json={}, headers={"taskuuid": "w1", "callbackurl": "http://127.0.0.1:1/cb"})
    _wait_for(lambda: client.get("/tasks/w1").get_json()["state"] == "running")
    held: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = []
    real_write = runtime.db.write

    def hold(op: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        held.append((op, fut))
        return fut

    monkeypatch.setattr(runtime.db, "write", hold)
    plugin.gate.set()
    _wait_for(lambda: bool(held))
    status = client.get("/tasks/w1").get_json()
    assert status["state"] == "running" and status.get("reply") is None, status

    monkeypatch.setattr(runtime.db, "write", real_write)
    for op, fut in held:
        real_write(op).add_done_callback(lambda f, fut=fut: fut.set_result(f.result()))
    _wait_for(lambda: client.get("/tasks/w1").get_json()["state"] == "succeeded")
    assert runtime.journal.get("w1").state == "succeeded"


def _wait_for(cond: Callable[[], bool], timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)
