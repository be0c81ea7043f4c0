"""A stuck cluster: the OSD is stopped (SIGSTOP, so its in-memory store
survives) while commands run. They fail with CEPH_TIMEOUT before their
deadline, the agent goes on answering, and once the OSD runs again the next
command reconnects and succeeds. The OSD is always continued."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cephagent.conftest import Ceph, MiB, call, error_code, unique
from tests.support.agents import AgentProcess, CallbackReceiver, wait_until

pytestmark = pytest.mark.ceph


@pytest.fixture
def stopped_osd(ceph: Ceph) -> Iterator[int]:
    pid = int(Path(ceph.env["CEPH_OSD_PID_FILE"]).read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def test_osd_stopped_mid_command_gives_ceph_timeout(ceph: Ceph, agent: AgentProcess, receiver: CallbackReceiver,
                                                    pools: dict[str, str], stopped_osd: int) -> None:
    # a command whose deadline is shorter than the op timeout: CEPH_TIMEOUT, not DEADLINE_EXCEEDED
    r = call(agent, ceph, "/ceph/ping", pool=pools["volumes"], timeout=3)
    assert error_code(r) == "CEPH_TIMEOUT", r
    assert r["error"]["details"]["operation"].startswith("ping")

    task = unique("stuck")
    resp = agent.post("/ceph/volume/create", {"cluster": ceph.cluster(), "pool": pools["volumes"],
                                              "name": unique("stuck"), "size": MiB, "timeout": 3},
                      taskuuid=task, callbackurl=receiver.url + "/cb")
    assert resp.status_code == 202
    # the agent keeps answering meanwhile, and monitor-only commands still work
    assert agent.call("/echo", {"message": "alive"})["message"] == "alive"
    assert call(agent, ceph, "/ceph/facts", timeout=5)["success"]
    assert receiver.wait_reply(task, 30)["error"]["code"] == "CEPH_TIMEOUT"
    assert agent.client.get(f"/tasks/{task}").json()["state"] == "failed"


def test_cluster_recovers_after_the_osd_continues(ceph: Ceph, agent: AgentProcess, pools: dict[str, str]) -> None:
    # runs after the test above: the OSD was continued by its fixture
    wait_until(lambda: call(agent, ceph, "/ceph/ping", pool=pools["volumes"], timeout=10)["success"], 60,
               interval=0.5, what="ping after SIGCONT")
    vol = unique("after")
    assert call(agent, ceph, "/ceph/volume/create", pool=pools["volumes"], name=vol, size=MiB)["success"]
