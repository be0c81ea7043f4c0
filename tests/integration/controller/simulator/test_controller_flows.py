"""The real controller (``kvmcloud serve`` process) against the simulator over
real HTTP: a VM is created and reaches Running, and a failure injected at each
agent command of the create-VM flow leaves nothing behind: no domain, no volume,
no DHCP lease on the simulated hosts and storage, no VM or NIC in the database.
The steps are not hard-coded: they are the commands the simulator recorded
while the controller created the first VM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.simulator import FaultRule, SimulatorConfig, SimulatorThread
from tests.support.agents import free_port, wait_until

SIM_TOKEN = "flows-sim-token"
API = {"Authorization": "Bearer flows-api-token"}
DIGEST = "sha256:" + "cd" * 32


class Controller:
    """``python -m controller.cli serve`` on a loopback port."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / "controller.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "serve", "--listen", f"127.0.0.1:{port}",
                 "--db", f"sqlite:///{workdir / 'c.db'}", "--api-token", "flows-api-token",
                 "--agent-token", SIM_TOKEN], stdout=out, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"{self.url}/v1", headers=API, timeout=60)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 60, what="controller /healthz")

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.http.request(method, path, json=body, params=params or None)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def create(self, coll: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.call("POST", f"/{coll}", body, wait=1)
        if "job" in answer:
            assert answer["job"]["state"] == "succeeded", answer["job"]
            return dict(answer["resource"])
        return dict(answer)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimulatorThread, Controller, dict[str, str]]]:
    sim = SimulatorThread(SimulatorConfig(token=SIM_TOKEN, hosts=2)).start()
    ctl = Controller(tmp_path_factory.mktemp("controller"))
    try:
        zone = ctl.create("zones", {"name": "z"})["uuid"]
        cluster = ctl.create("clusters", {"name": "c", "zoneUuid": zone})["uuid"]
        for i in (1, 2):
            url = sim.agent_url(f"host-{i:05d}")
            ctl.create("hosts", {"name": f"h{i}", "clusterUuid": cluster,
                                 "managementIp": f"127.1.0.{i}", "agentUrl": url,
                                 "storageAgentUrl": url})
        ctl.create("primary-storages", {
            "name": "nfs", "zoneUuid": zone, "type": "nfs", "url": "127.0.0.1:/export",
            "mountPath": "/var/lib/kvmcloud/flows", "clusterUuids": [cluster]})
        bs = ctl.create("backup-storages", {
            "name": "bs", "type": "sftp", "hostname": "127.0.0.1", "url": "/store",
            "zoneUuids": [zone], "agentUrl": sim.agent_url("bs-1")})["uuid"]
        image = ctl.create("images", {"name": "cirros", "backupStorageUuids": [bs],
                                      "imageId": "cirros", "digest": DIGEST, "size": 1 << 26})
        l2 = ctl.create("l2-networks", {"name": "l2", "zoneUuid": zone, "type": "novlan",
                                        "physicalInterface": "eth0", "clusterUuids": [cluster]})
        l3 = ctl.create("l3-networks", {"name": "pub", "l2NetworkUuid": l2["uuid"], "ipRanges": [{
            "startIp": "10.9.0.10", "endIp": "10.9.0.50", "netmask": "255.255.255.0",
            "gateway": "10.9.0.1"}]})
        offering = ctl.create("instance-offerings", {"name": "tiny", "cpuNum": 1,
                                                     "memorySize": 64 << 20})
        env = {"image": image["uuid"], "l3": l3["uuid"], "offering": offering["uuid"]}
        yield sim, ctl, env
    finally:
        ctl.stop()
        sim.stop()


def create_vm(ctl: Controller, env: dict[str, str], name: str) -> dict[str, Any]:
    answer = ctl.call("POST", "/vms", {"name": name, "imageUuid": env["image"],
                                       "instanceOfferingUuid": env["offering"],
                                       "l3NetworkUuids": [env["l3"]]}, wait=1)
    return {"job": answer["job"], "vm": answer.get("resource", {})}


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
