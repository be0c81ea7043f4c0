"""VM HA against simulated agents over real HTTP, the tracker on its own clock: a
host whose agent goes silent past the grace is declared Dead, its NFS heartbeat is
found stale, its haLevel=restart VM starts on the other host and its haLevel=none VM does not; when the agent answers
again the stale copy of the restarted VM is destroyed on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from simulator import SimulatorConfig, SimulatorThread
from tests.integration.controller.simulator.cloud import SIM_TOKEN, Controller, build_cloud
from tests.support.agents import wait_until

Cloud = tuple[SimulatorThread, Controller, dict[str, str]]

pytestmark = pytest.mark.slow  # a controller process, two hosts, a 2 s grace


@pytest.fixture
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    sim = SimulatorThread(SimulatorConfig(token=SIM_TOKEN, hosts=2)).start()
    ctl = Controller(tmp_path_factory.mktemp("controller"), ping_interval=0.5, ping_jitter=0,
                     sync_interval=1, host_dead_after=2)
    try:
        env = build_cloud(sim, ctl, hosts=2)
        for host in ctl.call("GET", "/hosts")["items"]:  # added before the NFS storage: mount it
            job = ctl.call("POST", f"/hosts/{host['uuid']}/actions/reconnect", {}, wait=1)["job"]
            assert job["state"] == "succeeded", job
        yield sim, ctl, env
    finally:
        ctl.stop()
        sim.stop()


def vm_on(ctl: Controller, env: dict[str, str], host: str, name: str, level: str) -> str:
    answer = ctl.call("POST", "/vms", {
        "name": name, "imageUuid": env["image"], "instanceOfferingUuid": env["offering"],
        "l3NetworkUuids": [env["l3"]], "hostUuid": host, "haLevel": level}, wait=1)
    assert answer["job"]["state"] == "succeeded", answer["job"]
    return str(answer["resource"]["uuid"])


def get(ctl: Controller, coll: str, uuid: str) -> dict[str, Any]:
    return dict(ctl.call("GET", f"/{coll}/{uuid}"))


def domains(sim: SimulatorThread, agent: str) -> dict[str, str]:
    return dict(sim.call(lambda s: {u: d.state for u, d in s.agents[agent].domains.items()}))


def test_a_dead_host_s_ha_vm_restarts_on_the_other_host_and_only_once(cloud: Cloud) -> None:
    sim, ctl, env = cloud
    hosts = {h["name"]: h["uuid"] for h in ctl.call("GET", "/hosts")["items"]}
    h1, h2 = hosts["h1"], hosts["h2"]
    ha = vm_on(ctl, env, h1, "ha", "restart")
    plain = vm_on(ctl, env, h1, "plain", "none")

    sim.call(lambda s: setattr(s.agents["host-00001"], "down", True))
    wait_until(lambda: get(ctl, "hosts", h1)["status"] == "Dead", 30, what="host 1 Dead")
    wait_until(lambda: get(ctl, "vms", ha)["hostUuid"] == h2, 30, what="the HA VM on host 2")
    wait_until(lambda: get(ctl, "vms", ha)["state"] == "Running", 30, what="the HA VM Running")
    assert domains(sim, "host-00002") == {ha: "Running"}
    [dead] = ctl.call("GET", "/jobs", q=["kind=host-dead"])["items"]
    dead = ctl.call("GET", f"/jobs/{dead['uuid']}", wait=1)["job"]
    assert set(dead["result"]["fencing"].values()) == {"fenced"}, dead  # its NFS heartbeat stopped
    [job] = ctl.call("GET", "/jobs", q=["kind=ha-restart"])["items"]
    job = ctl.call("GET", f"/jobs/{job['uuid']}", wait=1)["job"]
    assert (job["resourceUuid"], job["state"]) == (ha, "succeeded"), job
    vm = get(ctl, "vms", plain)
    assert (vm["hostUuid"], vm["state"]) == (h1, "Unknown")  # not restarted

    sim.call(lambda s: setattr(s.agents["host-00001"], "down", False))
    wait_until(lambda: get(ctl, "hosts", h1)["status"] == "Connected", 30, what="host 1 back")
    wait_until(lambda: ha not in domains(sim, "host-00001"), 30, what="the stale copy destroyed")
    assert domains(sim, "host-00001") == {plain: "Running"}
    assert domains(sim, "host-00002") == {ha: "Running"}
    wait_until(lambda: get(ctl, "vms", plain)["state"] == "Running", 30, what="VM 2 re-synced")
    assert get(ctl, "vms", ha)["hostUuid"] == h2
