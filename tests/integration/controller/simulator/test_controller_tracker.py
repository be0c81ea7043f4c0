"""The controller's host tracker against simulated agents over real HTTP: VM
states follow pushed events and syncs, a host whose agent stops answering
becomes Disconnected and comes back, and an agent restarted without its
identity is reconnected and its VMs re-synced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from simulator import SimulatorConfig, SimulatorThread
from tests.integration.controller.simulator.cloud import (
    SIM_TOKEN,
    Controller,
    build_cloud,
    create_vm,
)
from tests.support.agents import wait_until

Cloud = tuple[SimulatorThread, Controller, dict[str, str]]

pytestmark = pytest.mark.slow  # a controller process and a few flows: ~10 s


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    sim = SimulatorThread(SimulatorConfig(token=SIM_TOKEN, hosts=1)).start()
    ctl = Controller(tmp_path_factory.mktemp("controller"), ping_interval=0.5, ping_jitter=0,
                     sync_interval=1)
    try:
        yield sim, ctl, build_cloud(sim, ctl, hosts=1)
    finally:
        ctl.stop()
        sim.stop()


def running_vm(ctl: Controller, env: dict[str, str], name: str) -> dict[str, Any]:
    made = create_vm(ctl, env, name)
    assert made["job"]["state"] == "succeeded", made["job"]
    return dict(ctl.call("GET", f"/vms/{made['vm']['uuid']}"))


def state_of(ctl: Controller, coll: str, uuid: str, field: str = "state") -> Any:
    return ctl.call("GET", f"/{coll}/{uuid}")[field]


def test_a_crash_pushed_as_an_event_changes_the_vm_state(cloud: Cloud) -> None:
    sim, ctl, env = cloud
    vm = running_vm(ctl, env, "crashy")
    sim.call(lambda s: (s.agents["host-00001"].set_state(s.agents["host-00001"].domains[vm["uuid"]],
                                                          "Crashed"),
                        s.emit_event(s.agents["host-00001"], vm["uuid"], "Crashed", "oom")))
    wait_until(lambda: state_of(ctl, "vms", vm["uuid"]) == "Crashed", 30, what="VM Crashed")


def test_a_silent_agent_disconnects_its_host_and_comes_back_with_its_vms(cloud: Cloud) -> None:
    sim, ctl, env = cloud
    vm = running_vm(ctl, env, "patient")
    host = vm["hostUuid"]
    sim.call(lambda s: setattr(s.agents["host-00001"], "down", True))
    wait_until(lambda: state_of(ctl, "hosts", host, "status") == "Disconnected", 30,
               what="host Disconnected")
    assert state_of(ctl, "vms", vm["uuid"]) == "Unknown"
    sim.call(lambda s: setattr(s.agents["host-00001"], "down", False))
    wait_until(lambda: state_of(ctl, "hosts", host, "status") == "Connected", 30,
               what="host Connected again")
    wait_until(lambda: state_of(ctl, "vms", vm["uuid"]) == "Running", 30, what="VM Running again")


def test_an_agent_restarted_without_identity_is_reconnected_and_resynced(cloud: Cloud) -> None:
    sim, ctl, env = cloud
    vm = running_vm(ctl, env, "stopped-behind-our-back")
    host = vm["hostUuid"]
    agent = "host-00001"
    # the agent is reinstalled, and meanwhile the VM was stopped: only a sync can tell
    sim.call(lambda s: (s.agents[agent].set_state(s.agents[agent].domains[vm["uuid"]], "Stopped"),
                        s.restart(s.agents[agent], forget_identity=True)))
    assert sim.call(lambda s: s.agents[agent].host_uuid) is None
    wait_until(lambda: sim.call(lambda s: s.agents[agent].host_uuid) == host, 30,
               what="the controller to connect the agent again")
    wait_until(lambda: state_of(ctl, "vms", vm["uuid"]) == "Stopped", 30, what="VM re-synced")
    assert state_of(ctl, "hosts", host, "status") == "Connected"
