"""Fuzz the controller's ``/v1`` API in-process, from ``/v1/openapi.json``.

The controller runs on SQLite with a small cloud (zone, cluster, storages,
networks, two fake hosts behind the in-process transport), so generated
requests meet real rows as well as missing ones. Deploying is refused
(it would run ssh-keyscan and Ansible against generated addresses) and no
process is started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from schemathesis.generation import GenerationMode

from controller.deploy.errors import DeployError
from tests.unit.controller.harness import API_TOKEN, Cloud
from tests.unit.fuzz.harness import Api, no_processes

pytestmark = pytest.mark.slow


def _no_deploy(*args: Any, **kwargs: Any) -> Any:
    raise DeployError("deploying is disabled while fuzzing")


def _known(cloud: Cloud) -> Callable[[str], list[str]]:
    """The uuids of the rows of a path's collection, as they are when the fuzzing starts."""
    cache: dict[str, list[str]] = {}

    def known(path: str) -> list[str]:
        coll = path.split("/")[2]
        if coll not in cache:
            status, body = cloud.call("GET", f"/v1/{coll}", limit="2")
            cache[coll] = [i["uuid"] for i in body["items"]] if status == 200 else []
        return cache[coll]
    return known


@pytest.fixture(scope="module")
def controller_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp: Path = tmp_path_factory.mktemp("controller")
    with no_processes(), pytest.MonkeyPatch.context() as mp:
        mp.setattr("controller.services.hosts.deploy_role", _no_deploy)
        mp.setattr("controller.services.storages.deploy_role", _no_deploy)
        cloud = Cloud(f"sqlite:///{tmp}/controller.db", poll_after=2.0).basic(hosts=2)
        cloud.succeeded("POST", "/v1/vms", cloud.vm_body())
        jobs = cloud.ctl.jobs
        real_wait = jobs.wait
        # ?wait=1&timeout=3600 is valid; a fuzzed call must not hold the run that long
        mp.setattr(jobs, "wait", lambda uuid, timeout=None: real_wait(uuid, min(timeout or 0.2, 0.2)))
        try:
            yield Api.from_app("controller", cloud.app, "/v1/openapi.json", API_TOKEN,
                               public=frozenset({"/v1/openapi.json"}), known=_known(cloud))
        finally:
            cloud.close()


def test_valid_requests(controller_api: Api) -> None:
    """Requests that fit the schema: answered, or refused with a 4xx naming the field."""
    with no_processes():
        controller_api.fuzz_all(GenerationMode.POSITIVE)
    controller_api.assert_clean()


def test_invalid_requests(controller_api: Api) -> None:
    """Bodies, queries and paths that break the schema: a JSON 4xx, never a 5xx."""
    with no_processes():
        controller_api.fuzz_all(GenerationMode.NEGATIVE)
    controller_api.assert_clean()


def test_requests_without_the_token(controller_api: Api) -> None:
    """Every operation answers 401 to a request without the token."""
    with no_processes():
        controller_api.fuzz_all(GenerationMode.POSITIVE, with_token=False, examples=2)
    controller_api.assert_clean()
