"""Adding backup storage through the controller's API with ``deploy: true``: the controller runs
the sftpbackup playbook over real SSH to a namespace host (real Ansible), streams each task into
the job's stage while it runs, then connects the deployed agent; an unreachable address is a
failed job that names the failing step."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from controller.db.jobs import FINAL_STATES
from controller.deploy import Deployer, DeploySettings, Wheelhouse
from controller.deploy import deployer as deployer_module
from controller.server import create_app
from controller.settings import Settings
from tests.integration.ansible.conftest import HostFactory, host_vars
from tests.support.agents import TOKEN

pytestmark = [pytest.mark.ansible, pytest.mark.netns, pytest.mark.slow]
API = "storage-add-api-token-0123456789"


@dataclass
class Api:
    client: FlaskClient
    ctl: Any

    def post(self, path: str, body: dict[str, Any], **query: str) -> tuple[int, dict[str, Any]]:
        r = self.client.post(path, json=body, query_string=query, headers={"Authorization": f"Bearer {API}"})
        return r.status_code, r.get_json()

    def get(self, path: str) -> dict[str, Any]:
        r = self.client.get(path, headers={"Authorization": f"Bearer {API}"})
        assert r.status_code == 200, r.get_data(as_text=True)
        return dict(r.get_json())


@pytest.fixture
def api(tmp_path: Path, nshost: dict[str, str], wheelhouse: Wheelhouse, bare_host: HostFactory,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, Path]]:
    """A controller whose deploys go to namespace host 1 (its roles under a fresh root), with the
    namespace hosts' authorized key as the controller's SSH key."""
    _, root = bare_host(1)
    work = tmp_path / "deploy"
    work.mkdir(mode=0o700)
    shutil.copy(nshost["NSHOST_KEY"], work / "id_ed25519")
    shutil.copy(nshost["NSHOST_KEY"] + ".pub", work / "id_ed25519.pub")
    deployer = Deployer(DeploySettings(work_dir=work, wheelhouse=wheelhouse,
                                       controller_addresses=[nshost["NSHOST_GATEWAY"]],
                                       host_vars=host_vars(root, nshost, 1)))
    monkeypatch.setattr(deployer_module, "_default", deployer)  # the process-wide deployer
    settings = Settings(db_url=f"sqlite:///{tmp_path}/controller.db", api_tokens=[API], agent_token=TOKEN,
                        tracker=False, public_url=f"http://{nshost['NSHOST_GATEWAY']}:9")
    app = create_app(settings)
    ctl = app.extensions["kvmcloud"]
    yield Api(app.test_client(use_cookies=False), ctl), root
    ctl.close()


def _watch(api: Api, job_uuid: str, timeout: float = 600) -> tuple[dict[str, Any], list[str]]:
    """Poll the job until it ends: (final job, the stages seen while it was running)."""
    stages: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = api.get(f"/v1/jobs/{job_uuid}")["job"]
        if job["state"] in FINAL_STATES:
            return job, stages
        if job["stage"] and (not stages or stages[-1] != job["stage"]):
            stages.append(job["stage"])
        time.sleep(0.1)
    raise AssertionError(f"job {job_uuid} still running after {timeout}s; stages: {stages}")


def test_backup_storage_deploy_streams_its_tasks_then_connects(api: tuple[Api, Path],
                                                               nshost: dict[str, str]) -> None:
    client, root = api
    status, data = client.post("/v1/backup-storages", {
        "name": "store-1", "type": "sftp", "hostname": nshost["NSHOST_1_ADDR"], "port": 22,
        "username": "kvmcloud-store", "url": "/store", "deploy": True})
    assert status == 202, data
    assert data["resource"]["status"] == "Connecting"
    job, stages = _watch(client, data["job"]["uuid"])

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
    assert client.get(f"/v1/backup-storages/{data['resource']['uuid']}")["status"] == "Disconnected"
