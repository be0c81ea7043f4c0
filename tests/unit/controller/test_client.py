"""The typed agent client: routed by the command model, replies parsed into the reply model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controller.dispatch.client import AgentClient
from controller.dispatch.dispatcher import AgentCallError, Dispatcher
from controller.dispatch.transport import AgentRequest, AgentResponse, InProcessTransport
from kvmagent import models as km
from storageagent import models as sm

AGENT = "http://agent.test:7070"


class Agent:
    """Answers every command with the reply the test sets, and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []
        self.reply: dict[str, Any] = {"success": True}

    def __call__(self, req: AgentRequest) -> AgentResponse:
        self.requests.append(req)
        if "callbackurl" in req.headers:
            return AgentResponse(202, {"taskUuid": req.headers["taskuuid"]})
        return AgentResponse(200, self.reply)


@pytest.fixture
def agent() -> Agent:
    return Agent()


@pytest.fixture
def dispatcher(agent: Agent) -> Iterator[Dispatcher]:
    d = Dispatcher(InProcessTransport({AGENT: agent}), "http://ctl.test/v1/agent-callbacks", poll_after=30)
    yield d
    d.close()


def test_call_sync_posts_to_the_models_path_and_returns_the_reply_model(
        agent: Agent, dispatcher: Dispatcher) -> None:
    agent.reply = {"success": True, "cpuTotal": 8, "memoryTotal": 1 << 30, "extra": "kept"}
    reply = AgentClient(dispatcher).call_sync(AGENT, km.CapacityCmd(), timeout=7)
    assert isinstance(reply, km.CapacityReply)
    assert (reply.cpu_total, reply.memory_total, reply.memory_used) == (8, 1 << 30, 0)
    (req,) = agent.requests
    assert (req.method, req.path, req.body) == ("POST", "/host/capacity", {"timeout": 7})


def test_the_body_on_the_wire_is_what_the_dispatcher_sent_before(agent: Agent, dispatcher: Dispatcher) -> None:
    cmd = sm.MountCmd(storage_uuid="a" * 32, url="nfs.test:/export")
    AgentClient(dispatcher).call_sync(AGENT, cmd)
    dispatcher.call_sync(AGENT, "/storage/mount", cmd)
    assert agent.requests[0].body == agent.requests[1].body
    assert agent.requests[0].path == agent.requests[1].path == "/storage/mount"


def test_a_malformed_reply_is_an_agent_call_error_naming_the_field(agent: Agent, dispatcher: Dispatcher) -> None:
    agent.reply = {"success": True, "cpuTotal": "many"}
    with pytest.raises(AgentCallError) as e:
        AgentClient(dispatcher).call_sync(AGENT, km.CapacityCmd())
    assert e.value.code == "BAD_REPLY"
    assert "cpuTotal" in e.value.message and "CapacityReply" in e.value.message
    assert (e.value.path, e.value.agent_url) == ("/host/capacity", AGENT)
    assert e.value.details["fields"][0]["field"] == "cpuTotal"


def test_an_agent_error_stays_the_agents_error(agent: Agent, dispatcher: Dispatcher) -> None:
    agent.reply = {"success": False, "error": {"code": "NOT_FOUND", "message": "no such VM"}}
    with pytest.raises(AgentCallError, match="NOT_FOUND"):
        AgentClient(dispatcher).call_sync(AGENT, km.DestroyVmCmd(vm_uuid="b" * 32))


def test_an_async_call_resolves_on_its_callback_into_the_reply_model(
        agent: Agent, dispatcher: Dispatcher) -> None:
    pending = AgentClient(dispatcher).call(AGENT, km.StopVmCmd(vm_uuid="c" * 32), timeout=5)
    req = agent.requests[0]
    assert req.path == "/vm/stop" and req.body["vmUuid"] == "c" * 32
    assert dispatcher.on_callback(req.headers["taskuuid"], "reply",
                                  {"success": True, "vmUuid": "c" * 32, "state": "Stopped"})
    reply = pending.result(timeout=1)
    assert isinstance(reply, km.VmStateReply) and reply.state == "Stopped"


def test_cancel_fails_the_pending_reply(agent: Agent, dispatcher: Dispatcher) -> None:
    client = AgentClient(dispatcher)
    pending = client.call(AGENT, km.StopVmCmd(vm_uuid="d" * 32), timeout=5)
    client.cancel(pending)
    with pytest.raises(AgentCallError, match="CANCELLED"):
        pending.result(timeout=1)


def test_a_model_without_a_path_is_refused(dispatcher: Dispatcher) -> None:
    with pytest.raises(TypeError, match="declares its path"):
        AgentClient(dispatcher).call_sync(AGENT, km.HostCmd())  # type: ignore[arg-type]
