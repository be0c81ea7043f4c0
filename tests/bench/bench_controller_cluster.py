"""Several controller nodes on one PostgreSQL database, driving the simulator.

For 1, 2 and 3 ``kvmcloud serve --node-id`` processes on a fresh database, N
VMs are created (``POST /v1/vms`` spread round-robin over the nodes, as a load
balancer would, from CLIENTS threads), timed from the first request until every
job has ended; every VM must reach Running, once. Reported per node count: the
wall time, the controller CPU seconds per VM (user + system of every node's
processes, from /proc/<pid>/stat), and the ring's skew (the most VMs one node
owns over the fair ``N / nodes``). The machine has 2 cores and runs the
simulator and the clients too, so wall time cannot scale with nodes here: what
would scale is CPU per VM, given beside the 1-node figure measured in the same run.

Then, in a separate run on 3 nodes, one node is killed (``kill -9``) when half
of the creates were sent; the creates it would have taken go to the survivors.
Measured: the time from the kill until every job of the dead node has ended and
a request on a VM it owned (a reboot, sent to a survivor) is served; the VMs lost
(a create answered 202 without a VM row, or a succeeded one not Running) or
duplicated (two rows of one create, or one VM's domain on two hosts); and the
jobs still unfinished once the run settled.

``BENCH_CLUSTER_VMS`` is the batch size (10,000 by default: the issue's size);
``BENCH_CLUSTER_NODES`` the node counts (``1,2,3``) and ``BENCH_CLUSTER_SMALL``
the size of the 2- and 3-node and kill runs (default: the batch size). A run
that sets any of them (other than to the full sizes) prints its results and
leaves ``bench/results/controller_cluster.json`` alone.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import create_engine, text

from controller.cluster.ring import HashRing
from tests.bench.bench_controller import API_TOKEN, SIM_TOKEN, Api, Proc, setup
from tests.bench.common import Result, keep
from tests.conftest import read_component_env
from tests.support.agents import free_port, wait_until

FULL = 10_000
SIZE = int(os.environ.get("BENCH_CLUSTER_VMS", str(FULL)))
SMALL = int(os.environ.get("BENCH_CLUSTER_SMALL", str(SIZE)))
NODE_COUNTS = [int(n) for n in os.environ.get("BENCH_CLUSTER_NODES", "1,2,3").split(",") if n]
HOSTS = int(os.environ.get("BENCH_HOSTS", "100"))
PARTIAL = SIZE != FULL or NODE_COUNTS != [1, 2, 3] or "BENCH_HOSTS" in os.environ
CLIENTS = 16
FINAL = ("succeeded", "failed", "cancelled")
CLI = [sys.executable, "-m", "controller.cli"]


class Database:
    """A fresh database on the test environment's PostgreSQL server, dropped at the end."""

    def __init__(self, name: str) -> None:
        env = read_component_env("postgres")
        self.name = name
        self.conninfo = f"host={env['POSTGRES_HOST']} port={env['POSTGRES_PORT']} user={env['POSTGRES_USER']}"
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}"')
        self.url = env["POSTGRES_URL"].rsplit("/", 1)[0] + "/" + name
        self.engine = create_engine(self.url, pool_size=2)

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.conninfo + " dbname=postgres", autocommit=True) as conn:
            conn.execute(sql)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def drop(self) -> None:
        self.engine.dispose()
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Cluster:
    """The simulator and ``nodes`` controller nodes on one database, with a cloud set up."""

    def __init__(self, workdir: Path, db: Database, nodes: int) -> None:
        self.db = db
        sim_port = free_port()
        self.sim = Proc([*CLI, "simulator", "serve", "--listen", f"127.0.0.1:{sim_port}",
                         "--hosts", str(HOSTS), "--token", SIM_TOKEN],
                        workdir / "simulator.log", f"http://127.0.0.1:{sim_port}")
        self.nodes: dict[str, Proc] = {}
        try:
            self._start(db, nodes, workdir)
        except BaseException:
            self.stop()
            raise

    def _start(self, db: Database, nodes: int, workdir: Path) -> None:
        self.sim.wait_healthy()
        for i in range(1, nodes + 1):  # one after the other: the first brings the schema up
            port = free_port()
            node = Proc([*CLI, "serve", "--listen", f"127.0.0.1:{port}", "--db", db.url,
                         "--api-token", API_TOKEN, "--agent-token", SIM_TOKEN,
                         "--node-id", f"n{i}"], workdir / f"controller-n{i}.log",
                        f"http://127.0.0.1:{port}")
            node.wait_healthy()
            self.nodes[f"n{i}"] = node
        self.apis = {n: Api(p.url) for n, p in self.nodes.items()}
        first = self.apis["n1"]
        wait_until(lambda: all(len(self.live(a)) == nodes for a in self.apis.values()), 30,
                   what=f"{nodes} live nodes in every ring")
        self.env = setup(first, self.sim.url)

    @staticmethod
    def live(api: Api) -> set[str]:
        return {n["nodeId"] for n in api.call("GET", "/cluster")["nodes"] if n["live"]}

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.nodes.values())

    def domains(self) -> Counter[str]:
        """How many hosts of the simulator have a domain of each VM."""
        seen: Counter[str] = Counter()
        with httpx.Client(base_url=f"{self.sim.url}/_sim", timeout=60,
                          headers={"Authorization": f"Bearer {SIM_TOKEN}"}) as sim:
            for i in range(1, HOSTS + 1):
                seen.update(list(sim.get(f"/agents/host-{i:05d}").json().get("domainsByUuid", {})))
        return seen

    def stop(self) -> None:
        for p in self.nodes.values():
            p.stop()
        self.sim.stop()


@dataclass
class Batch:
    """What a batch of creates left: who took each, its job, and when the last job ended."""

    accepted: dict[str, tuple[str, str]] = field(default_factory=dict)  # name: (node, job)
    refused: list[str] = field(default_factory=list)
    #: sent to a node that died before it answered: made or not, the client cannot know
    in_doubt: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # job: final state or error code
    wall: float = 0.0


def run_batch(cluster: Cluster, n: int, prefix: str,
              halfway: Callable[[], None] | None = None) -> Batch:
    """n creates round-robin over the live nodes; ``halfway`` runs once n/2 were sent."""
    batch = Batch()
    down: set[str] = set()
    names = list(cluster.apis)
    turn = itertools.count()
    sent = itertools.count(1)
    mu = threading.Lock()

    def submit(i: int) -> None:
        name = f"{prefix}-{i}"
        body = {"name": name, "imageUuid": cluster.env["image"],
                "instanceOfferingUuid": cluster.env["offering"],
                "l3NetworkUuids": [cluster.env["l3"]]}
        for _ in range(len(names) * 3):
            node = names[next(turn) % len(names)]
            if node in down:
                continue
            try:
                answer = cluster.apis[node].call("POST", "/vms", body)
            except httpx.ConnectError:  # never reached the node: the load balancer's retry
                down.add(node)
                continue
            except httpx.TransportError:  # sent, unanswered: a POST is not sent twice
                down.add(node)
                batch.in_doubt.append(name)
                return
            batch.accepted[name] = (node, str(answer["job"]["uuid"]))
            break
        else:
            batch.refused.append(name)
        if next(sent) == n // 2 and halfway is not None:
            with mu:
                halfway()

    def finish(name: str) -> None:
        node, job = batch.accepted[name]
        while True:
            asked = node if node not in down else next(n for n in names if n not in down)
            try:
                state = cluster.apis[asked].call("GET", f"/jobs/{job}", wait=1, timeout=30)["job"]
            except httpx.TransportError:
                down.add(asked)
                continue
            if state["state"] in FINAL:
                batch.outcomes[job] = ("succeeded" if state["state"] == "succeeded"
                                       else (state.get("error") or {}).get("code", state["state"]))
                return
            if asked != node:
                time.sleep(0.2)  # the survivor answers from the database at once

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(submit, range(n)))
        list(pool.map(finish, list(batch.accepted)))
    batch.wall = time.perf_counter() - start
    return batch


def vm_rows(db: Database, prefix: str) -> dict[str, list[tuple[str, str]]]:
    """Each VM name of the batch: its rows' (uuid, state)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, uuid, state in db.rows("SELECT name, uuid, state FROM vms WHERE name LIKE :p",
                                     p=f"{prefix}-%"):
        out.setdefault(name, []).append((uuid, state))
    return out


def scale_run(workdir: Path, nodes: int, n: int) -> tuple[float, list[Result]]:
    """Create n VMs on ``nodes`` nodes; (CPU seconds per VM, results)."""
    db = Database(f"bench_cluster_{nodes}")
    cluster = Cluster(workdir, db, nodes)
    try:
        cpu0 = cluster.cpu_seconds()
        batch = run_batch(cluster, n, f"s{nodes}")
        cpu = cluster.cpu_seconds() - cpu0
        rows = vm_rows(db, f"s{nodes}")
        running = sum(1 for r in rows.values() for _, s in r if s == "Running")
        bad = Counter(o for o in batch.outcomes.values() if o != "succeeded")
        if running != n or len(rows) != n or any(len(r) != 1 for r in rows.values()) or bad:
            raise RuntimeError(f"{nodes} node(s): {running} of {n} VMs Running, {len(rows)} names, "
                               f"jobs not succeeded: {dict(bad)}, refused {len(batch.refused)}")
        owners = Counter(HashRing(cluster.nodes).owner(r[0][0]) for r in rows.values())
        skew = max(owners.values()) / (n / nodes)
        ring_skew = cluster.apis["n1"].call("GET", "/cluster")["ringSkew"]
        print(f"{nodes} node(s), {n} VMs: {batch.wall:.1f} s, controller CPU {cpu:.1f} s "
              f"({cpu / n * 1000:.2f} ms/VM), VMs per owner {dict(owners)}, skew {skew:.3f} "
              f"(hash space {ring_skew})", flush=True)
        return cpu / n, [
            Result(f"{nodes} node(s): create {n} VMs", round(batch.wall, 2), "s", "lower"),
            Result(f"{nodes} node(s): create {n} VMs: throughput", round(n / batch.wall, 1),
                   "VMs/s", "higher"),
            Result(f"{nodes} node(s): ring skew (most VMs one node owns / fair share)",
                   round(skew, 4), "ratio", "lower"),
        ]
    finally:
        cluster.stop()
        db.drop()


def kill_run(workdir: Path, n: int) -> list[Result]:
    """3 nodes; ``kill -9`` n3 when half of the n creates were sent."""
    db = Database("bench_cluster_kill")
    cluster = Cluster(workdir, db, 3)
    victim, survivor = "n3", "n1"
    killed: list[float] = []

    def kill() -> None:
        os.killpg(cluster.nodes[victim].proc.pid, signal.SIGKILL)
        killed.append(time.monotonic())
        cluster.nodes[victim].proc.wait(10)

    try:
        ring3 = HashRing(cluster.nodes)
        # a VM n3 owns, Running before the kill: the request served on its resources
        probe = cluster.apis[survivor].create("vms", {
            "name": "probe", "imageUuid": cluster.env["image"],
            "instanceOfferingUuid": cluster.env["offering"], "l3NetworkUuids": [cluster.env["l3"]]})
        while ring3.owner(probe["uuid"]) != victim:
            probe = cluster.apis[survivor].create("vms", {
                "name": "probe", "imageUuid": cluster.env["image"],
                "instanceOfferingUuid": cluster.env["offering"],
                "l3NetworkUuids": [cluster.env["l3"]]})
        rehomed: dict[str, float] = {}

        def watch() -> None:
            wait_until(lambda: bool(killed), 3600, what="the kill")
            t0 = killed[0]
            wait_until(lambda: db.scalar("SELECT count(*) FROM jobs WHERE node_id = :n AND state "
                                         "IN ('queued', 'running')", n=victim) == 0,
                       120, what="every job of the killed node ended", interval=0.05)
            rehomed["jobs"] = time.monotonic() - t0
            while True:  # a survivor forwards to n3 (refused 503) until its ring moved on
                r = cluster.apis[survivor].http.post(f"/vms/{probe['uuid']}/actions/reboot", json={})
                if r.status_code < 400:
                    break
                time.sleep(0.05)
            rehomed["request"] = time.monotonic() - t0
            job = r.json()["job"]["uuid"]
            done = cluster.apis[survivor].call("GET", f"/jobs/{job}", wait=1, timeout=120)["job"]
            rehomed["probe"] = 1.0 if done["state"] == "succeeded" else 0.0

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        batch = run_batch(cluster, n, "k", halfway=kill)
        watcher.join(300)
        unfinished = -1
        for _ in range(1200):  # up to 2 min for the last jobs to end; whatever is left is counted
            unfinished = int(db.scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"))
            if unfinished == 0:
                break
            time.sleep(0.1)
        rows = vm_rows(db, "k")
        lost = [name for name in batch.accepted if name not in rows]
        duplicated = [name for name, r in rows.items() if len(r) > 1]
        jobs = [job for _, job in batch.accepted.values()]
        made = dict(db.rows("SELECT j.uuid, v.state FROM jobs j LEFT JOIN vms v "
                            "ON v.uuid = j.resource_uuid WHERE j.uuid = ANY(:jobs)", jobs=jobs))
        not_running = [job for job in jobs
                       if batch.outcomes.get(job) == "succeeded" and made.get(job) != "Running"]
        domains = cluster.domains()
        two_hosts = [u for u, c in domains.items() if c > 1]
        cut = Counter(o for o in batch.outcomes.values() if o != "succeeded")
        t_jobs, t_req = rehomed.get("jobs", float("nan")), rehomed.get("request", float("nan"))
        print(f"kill -9 {victim} after {n // 2} of {n} creates: its jobs ended {t_jobs:.1f} s, "
              f"a request on its VM served {t_req:.1f} s after the kill; {len(lost)} lost, "
              f"{len(not_running)} succeeded but not Running, {len(duplicated)} duplicated rows, "
              f"{len(two_hosts)} VMs on two hosts, {unfinished} jobs unfinished, creates not succeeded: {dict(cut)}, "
              f"refused: {len(batch.refused)}, unanswered by the dead node: {len(batch.in_doubt)}, "
              f"the request's job succeeded: {rehomed.get('probe') == 1.0}",
              flush=True)
        return [
            Result(f"3 nodes, kill -9 one mid-run ({n} VMs): every job of the dead node ended",
                   round(t_jobs, 2), "s", "lower"),
            Result(f"3 nodes, kill -9 one mid-run ({n} VMs): re-homed (its jobs ended and a "
                   "request on its VM served)", round(max(t_jobs, t_req), 2), "s", "lower"),
            Result(f"3 nodes, kill -9 one mid-run ({n} VMs): VMs lost",
                   len(lost) + len(not_running), "VMs", "lower"),
            Result(f"3 nodes, kill -9 one mid-run ({n} VMs): VMs duplicated",
                   len(duplicated) + len(two_hosts), "VMs", "lower"),
            Result(f"3 nodes, kill -9 one mid-run ({n} VMs): jobs left running",
                   unfinished, "jobs", "lower"),
            Result(f"3 nodes, kill -9 one mid-run ({n} VMs): creates ended CONTROLLER_LOST",
                   cut.get("CONTROLLER_LOST", 0), "jobs", "lower"),
            Result(f"3 nodes, kill -9 one mid-run ({n} VMs): creates sent to the dead node and "
                   "unanswered (not sent again)", len(batch.in_doubt), "requests", "lower"),
        ]
    finally:
        cluster.stop()
        db.drop()


def main() -> None:
    results: list[Result] = []
    per_vm: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="kvmcloud-bench-cluster-") as tmp:
        d = Path(tmp)
        try:
            for nodes in NODE_COUNTS:
                n = SIZE if nodes == 1 else SMALL
                per_vm[nodes], more = scale_run(d, nodes, n)
                results += more
            for nodes, cpu in per_vm.items():
                size = SIZE if nodes == 1 else SMALL
                if nodes == 1 or 1 not in per_vm:
                    results.append(Result(f"{nodes} node(s): controller CPU per VM ({size} VMs)",
                                          round(cpu * 1000, 3), "ms", "lower"))
                    continue
                results.append(Result.against(
                    f"{nodes} nodes: controller CPU per VM ({size} VMs)", round(cpu * 1000, 3),
                    "ms", "lower", f"1 node, same run ({SIZE} VMs)", round(per_vm[1] * 1000, 3)))
                # capacity with one core per node: N x (CPU per VM at 1 node / at N); aim >= 0.8 N
                results.append(Result(f"{nodes} nodes: projected speed-up with a core per node "
                                      f"(aim >= {0.8 * nodes:.1f})",
                                      round(nodes * per_vm[1] / cpu, 3), "x", "higher"))
            results += kill_run(d, SMALL)
        except Exception:
            for log in sorted(d.glob("*.log")):
                print(f"{log.name} tail:\n{log.read_text()[-3000:]}", flush=True)
            raise
        finally:
            keep("controller_cluster", results, PARTIAL)


if __name__ == "__main__":
    main()
