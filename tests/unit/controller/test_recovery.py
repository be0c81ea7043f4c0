"""After a restart: the dead jobs' agent tasks are cancelled on every agent and waited for
(an unreachable agent is skipped), and a job's calls carry the job in their task uuid."""

from __future__ import annotations

from typing import Any, cast

from controller.dispatch.dispatcher import AgentCallError, Dispatcher
from controller.recovery import settle_agent_tasks
from tests.unit.controller.harness import Cloud


class Agents:
    """``cancel_jobs`` of a dispatcher: each agent still runs ``busy[url]`` asks' worth of tasks."""

    def __init__(self, busy: dict[str, int], down: set[str]) -> None:
        self.busy, self.down = busy, down
        self.asked: list[tuple[str, list[str]]] = []

    def cancel_jobs(self, url: str, jobs: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
        self.asked.append((url, jobs))
        if url in self.down:
            raise AgentCallError("AGENT_UNREACHABLE", "down", path="/tasks/cancel-jobs", agent_url=url)
        if self.busy.get(url, 0) <= 0:
            return []
        self.busy[url] -= 1
        return [{"taskUuid": f"{jobs[0]}.1", "state": "running"}]


def test_the_dead_jobs_tasks_are_asked_again_until_none_runs(monkeypatch: Any) -> None:
    monkeypatch.setattr("controller.recovery.PAUSE", 0.01)
    agents = Agents({"http://a": 2, "http://b": 0}, down={"http://c"})
    left = settle_agent_tasks(cast(Dispatcher, agents), ["http://a", "http://b", "http://c"], ["j1", "j2"], 10)
    assert left == 0
    assert [u for u, _ in agents.asked].count("http://a") == 3  # running, running, none
    assert [u for u, _ in agents.asked].count("http://b") == 1
    assert [u for u, _ in agents.asked].count("http://c") == 1  # unreachable: not asked again
    assert all(jobs == ["j1", "j2"] for _, jobs in agents.asked)


def test_tasks_still_running_when_the_wait_ends_are_counted(monkeypatch: Any) -> None:
    monkeypatch.setattr("controller.recovery.PAUSE", 0.01)
    agents = Agents({"http://a": 1000}, down=set())
    assert settle_agent_tasks(cast(Dispatcher, agents), ["http://a"], ["j1"], 0.05) == 1


def test_a_jobs_agent_calls_name_the_job_in_their_task_uuid(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    host = next(iter(cloud.hosts.values()))
    job = cloud.succeeded("POST", "/v1/vms", cloud.vm_body("web1"))
    assert host.tasks and all(t.startswith(f"{job['uuid']}.") for t in host.tasks), list(host.tasks)
