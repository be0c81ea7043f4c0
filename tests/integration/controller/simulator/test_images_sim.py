"""The real controller process adds an image from a URL into simulated backup
storage over real HTTP, a VM boots from it (the image cache pulls it from the
store), a failed add leaves no image, and deleting empties the store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from simulator import FaultRule, SimulatorConfig, SimulatorThread
from tests.integration.controller.simulator.cloud import (
    SIM_TOKEN,
    Controller,
    build_cloud,
    create_vm,
)

pytestmark = pytest.mark.slow  # a controller process: a few seconds

URL = "https://images.example/guest.qcow2"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimulatorThread, Controller, dict[str, str]]]:
    sim = SimulatorThread(SimulatorConfig(token=SIM_TOKEN, hosts=1)).start()
    ctl = Controller(tmp_path_factory.mktemp("controller"))
    try:
        env = build_cloud(sim, ctl, hosts=1)
        env["bs"] = ctl.call("GET", "/backup-storages", q="name=bs")["items"][0]["uuid"]
        yield sim, ctl, env
    finally:
        ctl.stop()
        sim.stop()


def stored(sim: SimulatorThread) -> set[str]:
    images: set[str] = sim.call(lambda s: set(s.agents["bs-1"].images))
    return images


def test_add_from_url_then_a_vm_from_it_then_delete(cloud: Any) -> None:
    sim, ctl, env = cloud
    answer = ctl.call("POST", "/images", {"name": "added", "backupStorageUuids": [env["bs"]],
                                          "url": URL}, wait=1)
    assert answer["job"]["state"] == "succeeded", answer["job"]
    image = answer["resource"]["uuid"]
    got = ctl.call("GET", f"/images/{image}")
    assert got["status"] == "Ready" and got["digest"].startswith("sha256:"), got
    assert image in stored(sim)
    vm = create_vm(ctl, {**env, "image": image}, "from-added")
    assert vm["job"]["state"] == "succeeded", vm["job"]
    job = ctl.call("DELETE", f"/images/{image}", confirm=1, wait=1)["job"]
    assert job["state"] == "succeeded", job
    assert image not in stored(sim)
    assert ctl.call("GET", f"/vms/{vm['vm']['uuid']}")["state"] == "Running"


def test_a_failed_add_leaves_no_image(cloud: Any) -> None:
    sim, ctl, env = cloud
    rule = FaultRule(path="/backup/image/add", action="fail", code="DOWNLOAD_FAILED", times=1)
    sim.call(lambda s: s.faults.add(rule))
    answer = ctl.call("POST", "/images", {"name": "broken", "backupStorageUuids": [env["bs"]],
                                          "url": URL}, wait=1)
    assert answer["job"]["state"] == "failed", answer["job"]
    assert answer["job"]["error"]["code"] == "DOWNLOAD_FAILED"
    assert ctl.call("GET", "/images", q="name=broken")["items"] == []
    assert answer["resource"]["uuid"] not in stored(sim)
