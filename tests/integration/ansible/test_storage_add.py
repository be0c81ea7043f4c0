"""Adding backup storage through the controller's API with ``deploy: true``: the controller runs
the sftpbackup playbook over real SSH to a namespace host (real Ansible), streams each task into
the job's stage while it runs, then connects the deployed agent; an unreachable address is a
failed job that names the failing step."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.ansible.conftest import host_vars
from tests.integration.ansible.controller_api import Api, api, watch
from tests.support.agents import TOKEN

pytestmark = [pytest.mark.ansible, pytest.mark.netns, pytest.mark.slow]
__all__ = ["api"]  # the fixture


def test_backup_storage_deploy_streams_its_tasks_then_connects(api: tuple[Api, Path],
                                                               nshost: dict[str, str]) -> None:
    client, root = api
    status, data = client.post("/v1/backup-storages", {
        "name": "store-1", "type": "sftp", "hostname": nshost["NSHOST_1_ADDR"], "port": 22,
        "username": "kvmcloud-store", "url": "/store", "deploy": True})
    assert status == 202, data
    assert data["resource"]["status"] == "Connecting"
    job, stages = watch(client, data["job"]["uuid"])

    assert job["state"] == "succeeded", job
    tasks = [s.removeprefix("deploy sftpbackup: ") for s in stages if s.startswith("deploy sftpbackup: ")]
    assert "Create the store user" in tasks, stages  # a task of the sftpbackup role ...
    assert len(set(tasks)) >= 5, stages  # ... and many more, seen one by one while the job ran
    # the connect comes after the deploy (it may be too quick for the 0.1 s polling to see)
    assert "connect" not in stages or stages[-1] == "connect", stages

    bs = job["result"]
    store = Path(host_vars(root, nshost, 1)["sftpbackup_store_root"]) / "store"
    assert bs["status"] == "Connected" and bs["totalCapacity"] > 0, bs
    assert bs["agentUrl"] == f"http://{nshost['NSHOST_1_ADDR']}:7171"
    assert bs["agentRoot"] == str(store)
    assert any(store.iterdir()), "the agent made the store's layout"
    assert client.get(f"/v1/backup-storages/{bs['uuid']}")["status"] == "Connected"

    # the agent got a token of its own (not the shared one), registered with the controller,
    # which presents it (the connect above worked) and accepts it on that agent's callbacks
    config = (root / "etc" / "kvmcloud" / "sftpbackup.toml").read_text()
    own = client.ctl.agent_tokens.known(bs["agentUrl"])
    assert own and own != TOKEN and f'token = "{own}"' in config
    assert TOKEN not in config
    for token, code in ((own, 400), ("not-a-token-of-any-agent", 401)):
        r = client.client.post("/v1/agent-callbacks", json={}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == code, r.get_data(as_text=True)

    # the agent stopped (as `make down` stops it): a redeploy runs the role, which starts it again
    run = root / "run" / "kvmcloud"
    old_pid = (run / "sftpbackup.agent.pid").read_text()
    subprocess.run(["start-stop-daemon", "--stop", "--pidfile", str(run / "sftpbackup.pid"), "--retry", "TERM/15"],
                   check=True)
    status, data = client.post(f"/v1/backup-storages/{bs['uuid']}/actions/redeploy", {}, wait="1")
    assert status == 200 and data["job"]["state"] == "succeeded", data
    assert data["job"]["result"]["status"] == "Connected"
    assert (run / "sftpbackup.agent.pid").read_text() != old_pid
    assert client.ctl.agent_tokens.known(bs["agentUrl"]) == own  # the token is kept

    # a store without an agent has nothing to redeploy: 409 before any job
    status, plain = client.post("/v1/backup-storages", {"name": "plain", "type": "sftp", "hostname": "10.0.0.9",
                                                        "url": "/store"})
    assert status == 201, plain
    status, data = client.post(f"/v1/backup-storages/{plain['uuid']}/actions/redeploy", {})
    assert status == 409, data


def test_unreachable_store_host_is_a_failed_job_naming_the_step(api: tuple[Api, Path]) -> None:
    client, _ = api
    status, data = client.post("/v1/backup-storages", {
        "name": "store-x", "type": "sftp", "hostname": "10.231.7.99", "url": "/store",
        "deploy": True}, wait="1")
    assert status == 200, data
    job = data["job"]
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "DEPLOY_FAILED"
    assert job["error"]["details"]["task"] == "prepare"  # before Ansible: SSH never answered
    assert "cannot reach SSH on 10.231.7.99:22" in job["error"]["message"], job
    bs = client.get(f"/v1/backup-storages/{data['resource']['uuid']}")
    assert bs["status"] == "Disconnected"
    # where its agent will listen is known from the start, so a deploy cut short can be run again
    assert bs["agentUrl"] == "http://10.231.7.99:7171"
    status, data = client.post(f"/v1/backup-storages/{bs['uuid']}/actions/redeploy", {}, wait="1")
    assert status == 200 and data["job"]["state"] == "failed", data
    assert data["job"]["error"]["code"] == "DEPLOY_FAILED"
