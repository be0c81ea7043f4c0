"""A KVM host added through the API with ``deploy: true`` (real Ansible to a namespace host),
then redeployed: without ``force`` nothing runs, as its agents already report the shipped
version; with ``force`` both agents are reinstalled and restarted and the host reconnects.
Each agent holds a token of its own, which the controller presents."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.ansible.controller_api import Api, api, watch
from tests.support.agents import TOKEN

pytestmark = [pytest.mark.ansible, pytest.mark.netns, pytest.mark.libvirt, pytest.mark.slow]
__all__ = ["api"]  # the fixture


def test_add_host_with_deploy_then_redeploy_only_when_needed(api: tuple[Api, Path], nshost: dict[str, str]) -> None:
    client, root = api
    zone = client.post("/v1/zones", {"name": "z"})[1]
    cluster = client.post("/v1/clusters", {"name": "c", "zoneUuid": zone["uuid"]})[1]
    ip = nshost["NSHOST_1_ADDR"]
    status, data = client.post("/v1/hosts", {"name": "h1", "clusterUuid": cluster["uuid"], "managementIp": ip,
                                             "deploy": True})
    assert status == 202, data
    job, stages = watch(client, data["job"]["uuid"])
    assert job["state"] == "succeeded", job
    assert any(s.startswith("deploy kvmagent: ") for s in stages) and any(
        s.startswith("deploy storageagent: ") for s in stages), stages
    host = job["result"]
    assert host["status"] == "Connected" and host["agentVersion"], host
    assert host["storageAgentUrl"] == f"http://{ip}:7071"  # the storage agent it deployed
    tokens = {role: client.ctl.agent_tokens.known(url)
              for role, url in (("kvmagent", host["agentUrl"]), ("storageagent", host["storageAgentUrl"]))}
    assert all(tokens.values()) and len(set(tokens.values())) == 2 and TOKEN not in tokens.values()
    pids = {r: (root / "run" / "kvmcloud" / f"{r}.agent.pid").read_text() for r in tokens}

    # same version everywhere: nothing is redeployed, nothing restarts
    status, data = client.post(f"/v1/hosts/{host['uuid']}/actions/redeploy", {}, wait="1")
    assert status == 200 and data["job"]["state"] == "succeeded", data
    agents = data["job"]["result"]["agents"]
    assert [(a["role"], a["redeployed"]) for a in agents] == [("kvmagent", False), ("storageagent", False)]
    assert {r: (root / "run" / "kvmcloud" / f"{r}.agent.pid").read_text() for r in tokens} == pids

    # forced: both reinstalled and restarted, same tokens, host connected again
    status, data = client.post(f"/v1/hosts/{host['uuid']}/actions/redeploy", {"force": True}, wait="1")
    assert status == 200 and data["job"]["state"] == "succeeded", data
    result = data["job"]["result"]
    assert [(a["role"], a["redeployed"]) for a in result["agents"]] == [("kvmagent", True), ("storageagent", True)]
    assert all(a["changedTasks"] > 0 for a in result["agents"]), result["agents"]
    assert result["status"] == "Connected"
    new_pids = {r: (root / "run" / "kvmcloud" / f"{r}.agent.pid").read_text() for r in tokens}
    assert all(new_pids[r] != pids[r] for r in tokens), (pids, new_pids)
    assert {r: client.ctl.agent_tokens.known(u) for r, u in (("kvmagent", host["agentUrl"]),
            ("storageagent", host["storageAgentUrl"]))} == tokens

    # a body field it does not know is a 400 naming it, before anything runs
    status, data = client.post(f"/v1/hosts/{host['uuid']}/actions/redeploy", {"forse": True})
    assert status == 400 and data["error"]["details"]["field"] == "forse", data
