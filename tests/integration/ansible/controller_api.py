"""A controller in-process (Flask test client) whose deploys go to namespace host 1 with the real
playbooks: the API-level deploy tests share it."""

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


def watch(api: Api, job_uuid: str, timeout: float = 600) -> tuple[dict[str, Any], list[str]]:
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
