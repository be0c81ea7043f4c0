"""The dispatcher against a scripted transport: callbacks, late callbacks, deadlines, cancel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from controller.dispatch.dispatcher import AgentCallError, Dispatcher
from controller.dispatch.transport import AgentRequest, AgentResponse, InProcessTransport

AGENT = "http://agent.test:7070"


class Script:
    """An agent whose behaviour per path the test sets."""

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []

    def __call__(self, req: AgentRequest) -> AgentResponse:
        self.requests.append(req)
        if req.method == "GET":
            task = self.tasks.get(req.path.split("/")[2])
            return AgentResponse(200, task) if task else AgentResponse(404, {})
        if req.path.endswith("/cancel"):
            self.cancelled.append(req.path.split("/")[2])
            return AgentResponse(200, {})
        if req.path == "/refuse":
            return AgentResponse(400, {"success": False, "error": {
                "code": "INVALID_REQUEST", "message": "bad", "details": {"field": "x"}}})
        if "callbackurl" not in req.headers:
            return AgentResponse(200, {"success": True, "echo": req.body})
        self.tasks[req.headers["taskuuid"]] = {"state": "running", "reply": None}
        return AgentResponse(202, {"taskUuid": req.headers["taskuuid"]})


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def dispatcher(script: Script) -> Iterator[Dispatcher]:
    d = Dispatcher(InProcessTransport({AGENT: script}), "http://ctl.test/v1/agent-callbacks",
                   token="t" * 20, poll_after=0.05)
    yield d
    d.close()


def test_callback_resolves_the_call(dispatcher: Dispatcher, script: Script) -> None:
    pc = dispatcher.call(AGENT, "/vm/start", {"vmUuid": "x"}, timeout=5)
    req = script.requests[0]
    assert req.headers["callbackurl"] == "http://ctl.test/v1/agent-callbacks"
    assert req.headers["Authorization"] == "Bearer " + "t" * 20
    assert req.body == {"vmUuid": "x", "timeout": 5}
    progress: list[dict[str, Any]] = []
    pc.on_progress = progress.append
    assert dispatcher.on_callback(pc.task_uuid, "progress", {"progress": {"percent": 50}})
    assert dispatcher.on_callback(pc.task_uuid, "reply", {"success": True, "state": "Running"})
    assert pc.result(1)["state"] == "Running"
    assert progress == [{"percent": 50}]
    assert not dispatcher.on_callback(pc.task_uuid, "reply", {"success": True})  # only once


def test_failed_reply_raises_with_the_agents_error(dispatcher: Dispatcher) -> None:
    pc = dispatcher.call(AGENT, "/vm/start", {}, timeout=5)
    dispatcher.on_callback(pc.task_uuid, "reply", {"success": False, "error": {
        "code": "NO_SPACE", "message": "disk full", "details": {"free": 0}}})
    with pytest.raises(AgentCallError) as e:
        pc.result(1)
    assert (e.value.code, e.value.details["free"], e.value.path) == ("NO_SPACE", 0, "/vm/start")


def test_late_callback_is_recovered_by_polling(dispatcher: Dispatcher, script: Script) -> None:
    pc = dispatcher.call(AGENT, "/vm/start", {}, timeout=30)
    script.tasks[pc.task_uuid] = {"state": "succeeded", "reply": {"success": True, "polled": 1}}
    assert pc.result(5)["polled"] == 1
    assert any(r.method == "GET" and r.path == f"/tasks/{pc.task_uuid}" for r in script.requests)


def test_deadline_cancels_on_the_agent(dispatcher: Dispatcher, script: Script) -> None:
    pc = dispatcher.call(AGENT, "/vm/start", {}, timeout=0.2)
    with pytest.raises(AgentCallError) as e:
        pc.result(5)
    assert e.value.code == "TIMEOUT"
    assert script.cancelled == [pc.task_uuid]
    assert dispatcher.pending() == 0


def test_refused_and_unreachable(dispatcher: Dispatcher) -> None:
    with pytest.raises(AgentCallError) as e:
        dispatcher.call(AGENT, "/refuse", {}).result(1)
    assert e.value.code == "INVALID_REQUEST" and e.value.details["field"] == "x"
    with pytest.raises(AgentCallError) as e:
        dispatcher.call("http://nowhere.test:1", "/vm/start", {}).result(1)
    assert e.value.code == "AGENT_UNREACHABLE"
    assert dispatcher.call_sync(AGENT, "/host/ping", {"a": 1})["echo"] == {"a": 1, "timeout": 30.0}


def test_a_callback_racing_the_send_is_not_lost(script: Script) -> None:
    holder: dict[str, Dispatcher] = {}

    def instant(req: AgentRequest) -> AgentResponse:
        # the agent answers before the POST even returns
        threading.Thread(target=holder["d"].on_callback,
                         args=(req.headers["taskuuid"], "reply", {"success": True, "fast": 1})).start()
        return AgentResponse(202, {})

    d = Dispatcher(InProcessTransport({AGENT: instant}), "http://ctl.test/cb", poll_after=10)
    holder["d"] = d
    try:
        assert all(d.call(AGENT, "/x", {}).result(5)["fast"] == 1 for _ in range(50))
    finally:
        d.close()


def test_agent_progress_shows_in_the_job(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.agents import wait_until
    from tests.unit.controller.harness import Cloud

    cloud = Cloud(f"sqlite:///{tmp_path}/c.db")
    try:
        cloud.basic(hosts=1)
        host = next(iter(cloud.hosts.values()))
        host.hang.add("/storage/cache-image")
        job = cloud.ok("POST", "/v1/vms", cloud.vm_body())["job"]["uuid"]
        wait_until(lambda: any(p == "/storage/cache-image" for p, _ in host.calls), 10)
        task = next(t for t, v in host.tasks.items() if v["path"] == "/storage/cache-image")
        cloud.deliver(task, "progress", {"taskUuid": task, "progress": {"stage": "download",
                                                                        "percent": 42.0}})
        got = cloud.ok("GET", f"/v1/jobs/{job}")["job"]
        assert got["state"] == "running" and got["percent"] == 42.0
        assert got["stage"] == "/storage/cache-image download"
        cloud.ok("POST", f"/v1/jobs/{job}/cancel")
        assert cloud.ok("GET", f"/v1/jobs/{job}", wait="1")["job"]["state"] == "cancelled"
    finally:
        cloud.close()
