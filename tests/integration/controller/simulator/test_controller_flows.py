"""The real controller (``kvmcloud serve`` process) against the simulator over
real HTTP: a VM is created and reaches Running, and a failure injected at each
agent command of the create-VM flow leaves nothing behind: no domain, no volume,
no DHCP lease on the simulated hosts and storage, no VM or NIC in the database.
The steps are not hard-coded: they are the commands the simulator recorded
while the controller created the first VM.
"""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.slow  # a controller process and a few flows: ~10 s


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimulatorThread, Controller, dict[str, str]]]:
    sim = SimulatorThread(SimulatorConfig(token=SIM_TOKEN, hosts=2)).start()
    ctl = Controller(tmp_path_factory.mktemp("controller"))
    try:
        yield sim, ctl, build_cloud(sim, ctl, hosts=2)
    finally:
        ctl.stop()
        sim.stop()


def sim_state(sim: SimulatorThread) -> dict[str, set[Any]]:
    """Every domain, volume and DHCP lease on the simulated hosts and storage."""
    def read(s: Any) -> dict[str, set[Any]]:
        return {
            "domains": {d for a in s.agents.values() for d in a.domains},
            "volumes": {p for st in s.storages.values() for p in st.volumes},
            "leases": {(lease.get("mac"), lease.get("ip")) for a in s.agents.values()
                       for ls in a.dhcp.values() for lease in ls},
        }
    result: dict[str, set[Any]] = sim.call(read)
    return result


def leftovers(sim: SimulatorThread, ctl: Controller, before: dict[str, set[Any]], name: str,
              vm_uuid: str) -> dict[str, Any]:
    """What a failed create left that was not there before it."""
    now = sim_state(sim)
    left: dict[str, Any] = {k: sorted(map(str, now[k] - before[k])) for k in now}
    left["vms"] = ctl.call("GET", "/vms", q=f"name={name}")["items"]
    left["nics"] = ctl.call("GET", "/vm-nics", q=f"vmUuid={vm_uuid}")["items"]
    return left


def flow_paths(sim: SimulatorThread, since: int) -> list[str]:
    """Agent commands recorded since ``since``, in order, without repeats."""
    records = sim.call(lambda s: list(s.recorded)[since:])
    paths: list[str] = []
    for r in records:
        if r["path"] not in paths and not r["path"].endswith(("/ping", "/sync", "/capacity")):
            paths.append(r["path"])
    return paths


def test_create_vm_reaches_running_and_a_failure_at_each_step_leaves_nothing(cloud: Any) -> None:
    sim, ctl, env = cloud
    before = sim.call(lambda s: len(s.recorded))
    made = create_vm(ctl, env, "ok-1")
    assert made["job"]["state"] == "succeeded", made["job"]
    vm = ctl.call("GET", f"/vms/{made['vm']['uuid']}")
    assert vm["state"] == "Running"
    host = sim.call(lambda s: [a for a in s.agents.values() if vm["uuid"] in a.domains])
    assert len(host) == 1 and host[0].domains[vm["uuid"]].state == "Running"
    steps = [p for p in flow_paths(sim, before) if p != "/storage/cache-image"]
    assert "/vm/start" in steps and any(p.startswith("/storage/volume/create") for p in steps)

    failures = {}
    for i, path in enumerate(steps):
        sim.call(lambda s, p=path: s.faults.add(FaultRule(path=p, action="fail", code="INJECTED",
                                                           times=1)))
        name = f"fail-{i}"
        before = sim_state(sim)
        attempt = create_vm(ctl, env, name)
        unfired = sim.call(lambda s: s.faults.list())
        sim.call(lambda s: s.faults.clear())
        if unfired:  # a once-per-host step (the L2 bridge) this VM did not need
            assert attempt["job"]["state"] == "succeeded", (path, attempt["job"])
            continue
        assert attempt["job"]["state"] == "failed", (path, attempt["job"])
        left = leftovers(sim, ctl, before, name, attempt["vm"].get("uuid", "-"))
        if any(left.values()):
            failures[path] = left
    assert failures == {}, json.dumps(failures, indent=1)
