"""The agent protocol against a real agent process (gunicorn on loopback) and a
real callback receiver."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agents import AgentProcess, CallbackReceiver, free_port, python_agent, wait_until

TESTAGENT = python_agent("tests.integration.agentcore.testagent")


@pytest.fixture(scope="module")
def receiver():  # type: ignore[no-untyped-def]
    r = CallbackReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, receiver: CallbackReceiver):  # type: ignore[no-untyped-def]
    a = AgentProcess(TESTAGENT, tmp_path_factory.mktemp("agent"), controller_urls=[receiver.url],
                     extra={"stop_grace": 1.5, "workers": 8})
    a.start()
    yield a
    a.stop()


def new_id() -> str:
    return str(uuid.uuid4())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sync_command_answers_in_the_response(agent: AgentProcess) -> None:
    r = agent.post("/echo", {"message": "hello"})
    assert r.status_code == 200
    assert r.json() == {"success": True, "error": None, "message": "hello", "version": r.json()["version"]}


def test_async_command_answers_202_then_posts_the_reply(agent: AgentProcess, receiver: CallbackReceiver) -> None:
    tid = new_id()
    r = agent.post("/test/sleep", {"seconds": 0.2}, taskuuid=tid, callbackurl=receiver.url + "/cb")
    assert r.status_code == 202
    assert r.json() == {"taskUuid": tid}
    reply = receiver.wait_reply(tid)
    assert reply["success"] is True and reply["slept"] == 0.2
    post = next(p for p in receiver.posts if p["headers"].get("taskuuid") == tid and p["headers"]["kind"] == "reply")
    assert post["path"] == "/cb"
    assert post["headers"]["authorization"] == f"Bearer {agent.token}"
    status = agent.client.get(f"/tasks/{tid}").json()
    assert status["state"] == "succeeded" and status["reply"]["slept"] == 0.2


def test_duplicate_taskuuid_while_running_is_not_started_twice(
    agent: AgentProcess, receiver: CallbackReceiver
) -> None:
    tid = new_id()
    cb = receiver.url + "/cb"
    assert agent.post("/test/sleep", {"seconds": 1.0}, taskuuid=tid, callbackurl=cb).status_code == 202
    assert agent.post("/test/sleep", {"seconds": 1.0}, taskuuid=tid, callbackurl=cb).status_code == 202
    # a sync duplicate waits for the same run and gets its reply
    sync = agent.post("/test/sleep", {"seconds": 1.0}, taskuuid=tid).json()
    first = receiver.wait_reply(tid)
    assert sync["started"] == first["started"]
    time.sleep(0.5)
    replies = [p for p in receiver.posts if p["headers"].get("taskuuid") == tid and p["headers"]["kind"] == "reply"]
    assert len(replies) == 1


def test_duplicate_taskuuid_after_finishing_gets_the_stored_reply(
    agent: AgentProcess, receiver: CallbackReceiver
) -> None:
    tid = new_id()
    one = agent.post("/test/sleep", {"seconds": 0.05}, taskuuid=tid).json()
    two = agent.post("/test/sleep", {"seconds": 0.05}, taskuuid=tid).json()
    assert one == two and one["success"]
    # asynchronously, the stored reply is sent again rather than re-running
    assert agent.post("/test/sleep", {"seconds": 0.05}, taskuuid=tid, callbackurl=receiver.url).status_code == 202
    assert receiver.wait_reply(tid)["started"] == one["started"]


def test_taskuuid_reused_for_another_command_is_a_conflict(agent: AgentProcess) -> None:
    tid = new_id()
    agent.post("/echo", {}, taskuuid=tid)
    r = agent.post("/test/sleep", {"seconds": 0}, taskuuid=tid)
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"


def test_cancel_kills_the_task_and_every_process_it_started(agent: AgentProcess, tmp_path: Path,
                                                            receiver: CallbackReceiver) -> None:
    tid = new_id()
    pid_file = tmp_path / "pids"
    agent.post("/test/spawn", {"pidFile": str(pid_file)}, taskuuid=tid, callbackurl=receiver.url)
    wait_until(pid_file.exists, what="spawned pids")
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    r = agent.client.post(f"/tasks/{tid}/cancel")
    assert r.status_code == 200
    reply = receiver.wait_reply(tid)
    assert reply["success"] is False and reply["error"]["code"] == "CANCELLED"
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="children to die")
    assert agent.client.get(f"/tasks/{tid}").json()["state"] == "cancelled"


def test_cancel_of_a_task_that_ignores_it_answers_after_the_grace(
    agent: AgentProcess, receiver: CallbackReceiver
) -> None:
    tid = new_id()
    agent.post("/test/sleep", {"seconds": 6, "busy": True}, taskuuid=tid, callbackurl=receiver.url)
    wait_until(lambda: agent.client.get(f"/tasks/{tid}").json()["state"] == "running", what="running")
    t0 = time.monotonic()
    agent.client.post(f"/tasks/{tid}/cancel")
    reply = receiver.wait_reply(tid, timeout=10)
    assert reply["error"]["code"] == "CANCELLED"
    assert time.monotonic() - t0 < 5.5  # answered before the command would have ended by itself


def test_a_restarted_controller_cancels_a_dead_jobs_tasks_by_the_job_alone(
    agent: AgentProcess, receiver: CallbackReceiver
) -> None:
    dead, other = new_id(), new_id()
    tids = [f"{dead}.{new_id()}" for _ in range(2)]
    kept = f"{other}.{new_id()}"
    for tid in [*tids, kept]:
        agent.post("/test/sleep", {"seconds": 30}, taskuuid=tid, callbackurl=receiver.url)
    wait_until(lambda: all(agent.client.get(f"/tasks/{t}").json()["state"] == "running"
                           for t in [*tids, kept]), what="running")
    first = agent.client.post("/tasks/cancel-jobs", json={"jobUuids": [dead]})
    assert first.status_code == 200
    assert {t["taskUuid"] for t in first.json()["tasks"]} <= set(tids)

    def left() -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = agent.client.post("/tasks/cancel-jobs", json={"jobUuids": [dead]}).json()["tasks"]
        return tasks
    wait_until(lambda: left() == [], timeout=10, what="the dead job's tasks to end")
    for tid in tids:
        assert receiver.wait_reply(tid)["error"]["code"] == "CANCELLED"
    assert agent.client.get(f"/tasks/{kept}").json()["state"] == "running"  # another job's
    agent.client.post(f"/tasks/{kept}/cancel")
    bad = agent.client.post("/tasks/cancel-jobs", json={"jobUuids": ["a b"]})
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["fields"][0]["field"].startswith("jobUuids")


def test_cancel_unknown_task_is_404(agent: AgentProcess) -> None:
    r = agent.client.post("/tasks/nope/cancel")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


def test_deadline_stops_the_task_and_its_processes(agent: AgentProcess, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    t0 = time.monotonic()
    reply = agent.post("/test/spawn", {"pidFile": str(pid_file), "timeout": 1.0}).json()
    assert reply["success"] is False and reply["error"]["code"] == "DEADLINE_EXCEEDED"
    assert time.monotonic() - t0 < 10
    pids = [int(p) for p in pid_file.read_text().split()]
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="children to die")
    slow = agent.post("/test/sleep", {"seconds": 5, "timeout": 0.3}).json()
    assert slow["error"]["code"] == "DEADLINE_EXCEEDED"


def test_progress_is_visible_and_pushed(agent: AgentProcess, receiver: CallbackReceiver) -> None:
    tid = new_id()
    agent.post("/test/sleep", {"seconds": 2.5}, taskuuid=tid, callbackurl=receiver.url)
    def progressing() -> bool:
        p = agent.client.get(f"/tasks/{tid}").json().get("progress")
        return bool(p and p["percent"] and p["percent"] > 0)
    wait_until(progressing, what="progress in GET /tasks")
    receiver.wait_reply(tid)
    events = [p for p in receiver.posts if p["headers"].get("taskuuid") == tid and p["headers"]["kind"] == "progress"]
    assert 1 <= len(events) <= 4  # pushed, and throttled to one a second
    assert events[0]["body"]["progress"]["stage"] == "sleeping"


def test_commands_on_one_resource_never_interleave(agent: AgentProcess) -> None:
    import concurrent.futures as cf

    def sleep(res: str) -> dict:
        return agent.post("/test/sleep", {"seconds": 0.4, "resource": res}).json()

    with cf.ThreadPoolExecutor(6) as pool:
        same = list(pool.map(sleep, ["vm-a"] * 3))
        other = list(pool.map(sleep, ["vm-b", "vm-c", "vm-d"]))
    spans = sorted((r["started"], r["ended"]) for r in same)
    for (_, e1), (s2, _) in itertools.pairwise(spans):
        assert s2 >= e1 - 0.01, "two commands on one resource overlapped"
    spans = sorted((r["started"], r["ended"]) for r in other)
    assert spans[1][0] < spans[0][1], "commands on different resources did not run in parallel"


def test_callback_url_that_is_not_the_controller_is_refused(agent: AgentProcess) -> None:
    for url in ("http://203.0.113.9:80/cb", f"http://127.0.0.1:{free_port()}/cb", "file:///etc/passwd"):
        r = agent.post("/echo", {}, callbackurl=url)
        assert r.status_code == 400, url
        assert r.json()["error"]["details"]["field"] == "callbackurl"


def test_protocol_errors_are_json(agent: AgentProcess) -> None:
    bad = agent.post("/test/sleep", {"seconds": -1, "extra": 1})
    assert bad.status_code == 400
    fields = {f["field"] for f in bad.json()["error"]["details"]["fields"]}
    assert fields == {"seconds", "extra"}
    assert "seconds" in bad.json()["error"]["message"]
    notjson = agent.client.post("/test/sleep", content=b"{not json", headers={"Content-Type": "application/json"})
    assert notjson.status_code == 400 and notjson.json()["success"] is False
    noauth = httpx.post(agent.url + "/echo", json={})
    assert noauth.status_code == 401 and noauth.json()["error"]["code"] == "UNAUTHORIZED"
    wrong = httpx.post(agent.url + "/echo", json={}, headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert wrong.status_code == 401
    assert agent.post("/no/such/command").status_code == 404
    assert agent.post("/no/such/command").json()["error"]["code"] == "NOT_FOUND"
    r = agent.client.get("/echo")
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert httpx.get(agent.url + "/healthz").status_code == 200
    assert agent.post("/test/sleep", {"seconds": 0}, taskuuid="../../bad").status_code == 400


def test_command_failures_are_structured_replies(agent: AgentProcess) -> None:
    r = agent.post("/test/fail", {})
    assert r.status_code == 200
    assert r.json()["error"] == {"code": "IN_USE", "message": "the volume is held by a running VM",
                                 "details": {"path": "/x"}}
    crash = agent.post("/test/fail", {"code": "CRASH"}).json()
    assert crash["error"]["code"] == "INTERNAL_ERROR" and "Traceback" not in str(crash)


def test_openapi_and_metrics(agent: AgentProcess) -> None:
    doc = httpx.get(agent.url + "/openapi.json").json()
    assert {"/echo", "/test/sleep", "/tasks/{taskUuid}"} <= set(doc["paths"])
    sleep_schema = doc["components"]["schemas"]["SleepCmd"]
    assert sleep_schema["properties"]["seconds"]["minimum"] == 0
    metrics = agent.client.get("/metrics").text
    assert 'kvmcloud_agent_tasks_total{command="/echo",state="succeeded"}' in metrics
    assert "kvmcloud_agent_command_seconds_bucket" in metrics
    assert "kvmcloud_agent_callback_retries_total" in metrics
    assert httpx.get(agent.url + "/metrics").status_code == 401


def test_replies_survive_the_controller_being_down(tmp_path: Path) -> None:
    receiver = CallbackReceiver()
    agent = AgentProcess(TESTAGENT, tmp_path, controller_urls=[receiver.url]).start()
    try:
        ids = [new_id() for _ in range(20)]
        for tid in ids:
            assert agent.post("/test/sleep", {"seconds": 0}, taskuuid=tid, callbackurl=receiver.url).status_code == 202
        wait_until(lambda: all(agent.client.get(f"/tasks/{t}").json()["state"] == "succeeded" for t in ids),
                   what="tasks to finish")
        time.sleep(1.0)  # let a few deliveries fail
        receiver.start()
        for tid in ids:
            assert receiver.wait_reply(tid, timeout=40)["success"]
        assert "kvmcloud_agent_callback_retries_total" in agent.client.get("/metrics").text
    finally:
        agent.stop()
        receiver.stop()


def test_outbox_survives_an_agent_restart(tmp_path: Path) -> None:
    receiver = CallbackReceiver()
    agent = AgentProcess(TESTAGENT, tmp_path, controller_urls=[receiver.url]).start()
    tid = new_id()
    try:
        agent.post("/test/sleep", {"seconds": 0}, taskuuid=tid, callbackurl=receiver.url)
        wait_until(lambda: agent.client.get(f"/tasks/{tid}").json()["state"] == "succeeded", what="done")
        agent.kill9()
        receiver.start()
        agent.start()
        assert receiver.wait_reply(tid, timeout=30)["success"]
    finally:
        agent.stop()
        receiver.stop()


def test_task_running_when_the_agent_is_killed_is_reported_interrupted(tmp_path: Path) -> None:
    receiver = CallbackReceiver().start()
    agent = AgentProcess(TESTAGENT, tmp_path, controller_urls=[receiver.url]).start()
    tid = new_id()
    try:
        agent.post("/test/sleep", {"seconds": 30}, taskuuid=tid, callbackurl=receiver.url)
        wait_until(lambda: agent.client.get(f"/tasks/{tid}").json()["state"] == "running", what="running")
        agent.kill9()
        assert tid not in receiver.replies()
        agent.start()
        reply = receiver.wait_reply(tid, timeout=30)
        assert reply["success"] is False and reply["error"]["code"] == "INTERRUPTED"
        assert agent.client.get(f"/tasks/{tid}").json()["state"] == "interrupted"
        # the same taskuuid is not run again: its stored reply comes back
        again = agent.post("/test/sleep", {"seconds": 30}, taskuuid=tid).json()
        assert again["error"]["code"] == "INTERRUPTED"
    finally:
        agent.stop()
        receiver.stop()
