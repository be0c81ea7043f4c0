"""The simulator over real HTTP: the agent protocol, callbacks to a real
receiver, the control API, and a real agent's answers side by side.

These run the simulator's aiohttp server on a loopback port and a real HTTP
callback receiver; nothing is mocked between them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kvmagent.models import StartVmCmd
from simulator import SimulatorConfig, SimulatorThread
from tests.support.agents import AgentProcess, CallbackReceiver, free_port, python_agent, wait_until

TOKEN = "sim-integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GiB = 1 << 30


@pytest.fixture()
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver().start()
    yield r
    r.stop()


@pytest.fixture()
def sim(receiver: CallbackReceiver) -> Iterator[SimulatorThread]:
    config = SimulatorConfig(token=TOKEN, hosts=3, primary_storages=1, controller_urls=[receiver.url])
    with SimulatorThread(config) as s:
        yield s


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, timeout=30) as c:
        yield c


def start_body(vm: str) -> dict[str, Any]:
    return StartVmCmd.model_validate({
        "vmUuid": vm, "vmName": "web1", "cpuNum": 1, "memorySize": GiB,
        "rootVolume": {"type": "file", "volumeUuid": str(uuid.uuid4()), "deviceId": 0,
                       "installPath": "/var/lib/kvmcloud/ps/root.qcow2"},
    }).wire()


def test_async_command_202_then_reply_posted_with_taskuuid_kind_and_token(
        sim: SimulatorThread, client: httpx.Client, receiver: CallbackReceiver) -> None:
    vm = str(uuid.uuid4())
    url = sim.agent_url("host-00001")
    r = client.post(f"{url}/vm/start", json=start_body(vm),
                    headers={"taskuuid": "t-1", "callbackurl": f"{receiver.url}/v1/agent-callbacks"})
    assert r.status_code == 202 and r.json() == {"taskUuid": "t-1"}
    reply = receiver.wait_reply("t-1")
    assert reply["success"] is True and reply["vmUuid"] == vm and reply["state"] == "Running"
    [post] = [p for p in receiver.posts if p["headers"].get("taskuuid") == "t-1"]
    assert post["path"] == "/v1/agent-callbacks"
    assert post["headers"]["authorization"] == f"Bearer {TOKEN}"
    status = client.get(f"{url}/tasks/t-1").json()
    assert status["state"] == "succeeded" and status["reply"]["vmUuid"] == vm


def test_sync_command_auth_health_and_errors(sim: SimulatorThread, client: httpx.Client) -> None:
    url = sim.agent_url("host-00002")
    assert httpx.get(f"{url}/healthz").json()["agent"] == "kvmagent"
    assert httpx.post(f"{url}/host/ping", json={}).status_code == 401
    assert client.post(f"{url}/host/ping", json={}).json()["success"] is True
    bad = client.post(f"{url}/vm/start", json={**start_body(str(uuid.uuid4())), "cpuNum": 0})
    assert bad.status_code == 400 and "cpuNum" in bad.json()["error"]["message"]
    assert client.post(f"{url}/no/such", json={}).status_code == 404
    assert client.get(f"{url}/tasks/nope").status_code == 404
    doc = httpx.get(f"{url}/openapi.json").json()
    assert "/vm/start" in doc["paths"] and "/storage/volume/create-root" in doc["paths"]


def test_dropped_callback_is_recoverable_by_polling_the_task(
        sim: SimulatorThread, client: httpx.Client, receiver: CallbackReceiver) -> None:
    fault = client.post(f"{sim.url}/_sim/faults",
                        json={"path": "/vm/start", "action": "drop-callback", "times": 1})
    assert fault.status_code == 201
    url = sim.agent_url("host-00001")
    vm = str(uuid.uuid4())
    r = client.post(f"{url}/vm/start", json=start_body(vm),
                    headers={"taskuuid": "lost-1", "callbackurl": f"{receiver.url}/cb"})
    assert r.status_code == 202
    status = client.get(f"{url}/tasks/lost-1").json()
    assert status["state"] == "succeeded" and status["reply"]["vmUuid"] == vm
    assert "lost-1" not in receiver.replies()


def test_delayed_task_can_be_cancelled_over_http(
        sim: SimulatorThread, client: httpx.Client, receiver: CallbackReceiver) -> None:
    client.post(f"{sim.url}/_sim/faults", json={"path": "/vm/start", "action": "delay", "seconds": 300})
    url = sim.agent_url("host-00003")
    vm = str(uuid.uuid4())
    client.post(f"{url}/vm/start", json=start_body(vm),
                headers={"taskuuid": "slow-1", "callbackurl": f"{receiver.url}/cb"})
    assert client.get(f"{url}/tasks/slow-1").json()["state"] == "running"
    assert client.post(f"{url}/tasks/slow-1/cancel").json()["state"] == "cancelled"
    assert receiver.wait_reply("slow-1")["error"]["code"] == "CANCELLED"
    assert vm not in client.get(f"{sim.url}/_sim/agents/host-00003").json()["domainsByUuid"]


def test_agent_down_refuses_connections_and_a_crash_is_pushed_as_an_event(
        sim: SimulatorThread, client: httpx.Client, receiver: CallbackReceiver) -> None:
    url = sim.agent_url("host-00001")
    host_uuid = str(uuid.uuid4())
    client.post(f"{url}/host/connect",
                json={"hostUuid": host_uuid, "eventsUrl": f"{receiver.url}/v1/agent-events/{host_uuid}"})
    vm = str(uuid.uuid4())
    client.post(f"{url}/vm/start", json=start_body(vm))
    client.post(f"{sim.url}/_sim/agents/host-00001/vms/{vm}", json={"state": "Crashed", "reason": "oom"})
    events = wait_until(lambda: [p for p in receiver.posts if p["headers"].get("kind") == "event"],
                        what="the crash event")
    assert events[0]["path"] == f"/v1/agent-events/{host_uuid}"
    assert events[0]["body"] == {"hostUuid": host_uuid, "vmUuid": vm, "state": "Crashed", "reason": "oom"}
    client.post(f"{sim.url}/_sim/agents/host-00001/down", json={"down": True})
    with pytest.raises(httpx.TransportError):
        client.post(f"{url}/host/ping", json={})
    client.post(f"{sim.url}/_sim/agents/host-00001/down", json={"down": False})
    assert client.post(f"{url}/host/ping", json={}).json()["hostUuid"] == host_uuid


def test_control_api_needs_the_token_and_validates_fault_rules(sim: SimulatorThread) -> None:
    assert httpx.get(f"{sim.url}/_sim/agents").status_code == 401
    bad = httpx.post(f"{sim.url}/_sim/faults", json={"action": "explode"}, headers=AUTH)
    assert bad.status_code == 400 and "action" in bad.json()["error"]["message"]
    made = httpx.post(f"{sim.url}/_sim/agents", json={"id": "big", "cpu": 4096}, headers=AUTH)
    assert made.status_code == 201 and made.json()["url"].endswith("/agents/big")


@pytest.fixture(scope="module")
def real_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    agent = AgentProcess(python_agent("tests.integration.agentcore.testagent"),
                         tmp_path_factory.mktemp("agent"), token=TOKEN).start()
    yield agent
    agent.stop()


@pytest.mark.parametrize("case", ["no-token", "bad-body", "unknown-path", "bad-taskuuid"])
def test_simulated_and_real_agent_answer_protocol_errors_alike(
        case: str, sim: SimulatorThread, real_agent: AgentProcess) -> None:
    """The real agentcore server (example agent) and the simulator, same requests."""
    answers = []
    for base in (real_agent.url, sim.agent_url("host-00002")):
        headers = {} if case == "no-token" else dict(AUTH)
        if case == "bad-taskuuid":
            headers["taskuuid"] = "../x"
        path = "/no/such/path" if case == "unknown-path" else "/echo"
        body: Any = {"message": 5} if case == "bad-body" else {}
        r = httpx.post(f"{base}{path}", json=body, headers=headers)
        answers.append((r.status_code, r.json()["success"], r.json()["error"]["code"]))
    assert answers[0] == answers[1]


def test_by_address_mode_serves_each_agent_at_its_own_ip(receiver: CallbackReceiver) -> None:
    """With agent ports, host N answers at http://127.1.0.N:PORT/ as a real agent would."""
    port = free_port()
    config = SimulatorConfig(token=TOKEN, hosts=2, agent_ports=[port])
    with SimulatorThread(config) as sim, httpx.Client(headers=AUTH, timeout=30) as client:
        second = sim.call(lambda s: s.agents["host-00002"].ip)
        base = f"http://{second}:{port}"
        assert httpx.get(f"{base}/healthz").json()["agent"] == "kvmagent"
        host_uuid = str(uuid.uuid4())
        client.post(f"{base}/host/connect",
                    json={"hostUuid": host_uuid, "eventsUrl": f"{receiver.url}/events"})
        r = client.post(f"{base}/host/ping", json={}, headers={"taskuuid": "ping-1",
                                                               "callbackurl": f"{receiver.url}/cb"})
        assert r.status_code == 202
        assert receiver.wait_reply("ping-1")["hostUuid"] == host_uuid
        assert client.get(f"{base}/tasks/ping-1").json()["state"] == "succeeded"
        assert sim.call(lambda s: s.agents["host-00002"].host_uuid) == host_uuid
        assert httpx.get(f"{sim.url}/healthz").json()["agent"] == "simulator"
        assert client.post(f"{sim.url}/host/ping", json={}).status_code == 404
