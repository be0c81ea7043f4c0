"""``kill -9`` of the controller node running a create-VM, at each agent step of the flow.

Two nodes stay up; for each step a third node takes the create and is killed while
its agent command is in flight. The simulator pauses the flow there without sleeps:
the command runs but its callback is dropped (``drop-callback``: the agent did the
step, the node never heard of it, the case that leaves things behind), and the node
would wait ``poll_after`` (long) before asking. A survivor takes the dead node over:
its job ends ``CONTROLLER_LOST``, nothing stays running, the VM is not left
``Creating``, every volume the simulator holds has its row, and deleting the VM
through a survivor leaves the simulator and the database as they were before the
create: no domain, volume, lease, VM or NIC. The steps are not hard-coded: they are
the commands the simulator recorded while the cluster created a first VM.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import FaultRule, SimulatorConfig, SimulatorThread
from tests.integration.controller.conftest import _pg_database
from tests.integration.controller.simulator.cloud import SIM_TOKEN, Controller, build_cloud
from tests.integration.controller.simulator.test_controller_flows import flow_paths, sim_state
from tests.support.agents import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]  # a node killed per step: ~5 s a step

#: a short lease: a dead node is out of the ring and taken over within ~2 s
FAST = {"node_lease": 2.0, "heartbeat_interval": 0.5}
FINAL = ("succeeded", "failed", "cancelled")


class Cluster:
    """The simulator, two nodes that stay up, and the next node to kill."""

    def __init__(self, db_url: str, workdir: Path) -> None:
        self.db_url, self.workdir = db_url, workdir
        self.sim = SimulatorThread(SimulatorConfig(token=SIM_TOKEN, hosts=2)).start()
        self.nodes: list[Controller] = []
        self.count = 0
        self._next: Controller | None = None
        self._starting: threading.Thread | None = None
        self.n1 = self.start_node()  # first and alone: it brings the schema up
        self.prepare_victim()
        self.n2 = self.start_node()
        self.env = build_cloud(self.sim, self.n1, hosts=2)
        disk = self.n1.create("disk-offerings", {"name": "d", "diskSize": 1 << 30})
        self.env["disk"] = disk["uuid"]
        self.hosts = {h["name"]: h["uuid"] for h in self.n1.call("GET", "/hosts")["items"]}

    def start_node(self) -> Controller:
        self.count += 1
        node_id = f"n{self.count}"
        node = Controller(self.workdir, db_url=self.db_url, node_id=node_id, **FAST)
        self.nodes.append(node)
        return node

    def prepare_victim(self) -> None:
        """Start the next victim in the background (while a takeover runs)."""
        self.count += 1
        node_id = f"n{self.count}"

        def start() -> None:
            # no host tracker: owning h2, it would connect it and make its bridge, and
            # the create would not send the once-per-host commands the test cuts at
            self._next = Controller(self.workdir, db_url=self.db_url, node_id=node_id,
                                    tracker=False, **FAST)
            self.nodes.append(self._next)
        self._starting = threading.Thread(target=start)
        self._starting.start()

    def victim(self) -> Controller:
        assert self._starting is not None
        self._starting.join(60)
        assert self._next is not None
        node = self._next
        wait_until(lambda: node.url.rstrip("/") in {n["url"] for n in self.n1.call(
            "GET", "/cluster")["nodes"] if n["live"]}, 10, what="the new node in the ring")
        return node

    def create(self, via: Controller, name: str, host: str, wait: bool = False) -> dict[str, Any]:
        body = {"name": name, "imageUuid": self.env["image"],
                "instanceOfferingUuid": self.env["offering"], "l3NetworkUuids": [self.env["l3"]],
                "dataDiskOfferingUuids": [self.env["disk"]], "hostUuid": self.hosts[host]}
        return dict(via.call("POST", "/vms", body, **({"wait": 1} if wait else {})))

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join(60)
        for node in self.nodes:  # throwaway nodes: no graceful stop to wait for
            if node.proc.poll() is None:
                node.kill()
        self.sim.stop()


@pytest.fixture
def cluster(component_env: Callable[[str], dict[str, str]],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """On PostgreSQL only: the takeover is the same SQL on MariaDB (tests/integration/
    controller/simulator/test_cluster.py runs it on both), and each database costs ~40 s."""
    url, drop = _pg_database(component_env)
    c = Cluster(url, tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.close()
        drop()


def unfinished(node: Controller) -> list[dict[str, Any]]:
    return list(node.call("GET", "/jobs", q="state?=queued,running")["items"])


def change(node: Controller, method: str, path: str) -> httpx.Response:
    """A change (``?confirm=1&wait=1``), sent again while it is refused ``OWNER_UNREACHABLE``
    (a ring a heartbeat behind, or a node joined and not listening yet), as a client does."""
    def answered() -> httpx.Response | None:
        r = node.http.request(method, path, params={"confirm": 1, "wait": 1})
        return None if r.status_code == 503 and "OWNER_UNREACHABLE" in r.text else r
    answer: httpx.Response = wait_until(answered, 10, what=f"{method} {path} served")
    return answer


def job_of(node: Controller, job: str) -> dict[str, Any]:
    return dict(node.call("GET", f"/jobs/{job}")["job"])


def kill_at(cluster: Cluster, path: str, name: str) -> dict[str, Any]:
    """Kill the node running a create when it sent ``path``; what the create left
    behind once deleted."""
    sim, n1 = cluster.sim, cluster.n1
    rule = FaultRule(path=path, action="drop-callback", times=1)
    sim.call(lambda s: s.faults.add(rule))
    before = sim_state(sim)
    victim = cluster.victim()
    # on h2, where no create ran to its end: each victim, a new process, mostly sends
    # the once-per-host commands (the L2 bridge, the host's lease set) there again
    job = cluster.create(victim, name, "h2")["job"]["uuid"]
    wait_until(lambda: not sim.call(lambda s: s.faults.list())  # used up: it fired
               or job_of(n1, job)["state"] in FINAL, 30, what=f"the create at {path}")
    if sim.call(lambda s: s.faults.list()):  # not sent: a once-per-host command (the L2
        sim.call(lambda s: s.faults.clear())  # bridge, the lease set) h2 had had already
        assert path.startswith("/network/") and job_of(n1, job)["state"] == "succeeded", path
        victim.kill()  # it knows h2 now: the next step needs a new process
        cluster.prepare_victim()
        return {}
    victim.kill()
    cluster.prepare_victim()

    ended = wait_until(lambda: (j := job_of(n1, job))["state"] in FINAL and j, 30,
                       what=f"the dead node's job at {path} to end")
    assert (ended["state"], (ended["error"] or {}).get("code")) == ("failed", "CONTROLLER_LOST"), \
        (path, ended)
    wait_until(lambda: not unfinished(n1), 30, what="every job ended")
    vms = n1.call("GET", "/vms", q=f"name={name}")["items"]
    assert len(vms) == 1 and vms[0]["state"] != "Creating", (path, vms)
    vm = vms[0]["uuid"]
    vols = n1.call("GET", "/volumes", q=f"vmUuid={vm}")["items"]
    orphans = sim_state(sim)["volumes"] - before["volumes"] - {v["installPath"] for v in vols}
    assert not orphans, (path, orphans, vols)

    # the cut-short VM goes through a survivor, as any VM does, and leaves nothing
    gone = change(n1, "DELETE", f"/vms/{vm}")
    assert gone.status_code < 400 and gone.json()["job"]["state"] == "succeeded", (path, gone.text)
    for vol in vols:
        if vol["type"] == "Data":  # a data volume outlives its VM: deleted on its own
            r = change(n1, "DELETE", f"/volumes/{vol['uuid']}")
            assert r.status_code == 404 or r.json()["job"]["state"] == "succeeded", (path, r.text)
    now = sim_state(sim)
    left: dict[str, Any] = {k: sorted(map(str, now[k] - before[k])) for k in now}
    left["vms"] = n1.call("GET", "/vms", q=f"name={name}")["items"]
    left["nics"] = n1.call("GET", "/vm-nics", q=f"vmUuid={vm}")["items"]
    left["volumes"] += n1.call("GET", "/volumes", q=f"vmUuid={vm}")["items"]
    return left


def test_kill_the_node_running_a_create_at_each_step(cluster: Cluster) -> None:
    sim = cluster.sim
    before = sim.call(lambda s: len(s.recorded))
    made = cluster.create(cluster.n2, "first", "h1", wait=True)
    assert made["job"]["state"] == "succeeded", made["job"]
    steps = [p for p in flow_paths(sim, before) if p != "/storage/cache-image"]
    assert "/vm/start" in steps and "/storage/volume/create-empty" in steps, steps

    left = {}
    for i, path in enumerate(steps):
        t = time.monotonic()
        if any((got := kill_at(cluster, path, f"cut-{i}")).values()):
            left[path] = got
        print(f"{path}: {time.monotonic() - t:.1f} s, {'cut' if got != {} else 'not sent'}")
    assert left == {}, json.dumps(left, indent=1)
    assert not unfinished(cluster.n1)
