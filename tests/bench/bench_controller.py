"""ZStack's published simulator table, reproduced on kvmcloud's controller.

ZStack's home page measures its management node against its in-process
simulator: creating 1, 10, 100, 1,000 and 10,000 VMs took 0.51 s, 1.55 s,
11.33 s, 103 s and 23 min. Here the real controller (``kvmcloud serve``,
granian, SQLite) drives simulated hosts (``kvmcloud simulator serve``, a
separate process) over real HTTP with the agent protocol (202 + callbacks),
and each batch is timed from its first ``POST /v1/vms`` until every VM's job
has ended; every VM must reach Running. Also: the p50/p99 latency of the
``POST /v1/vms`` answers, a filtered, sorted, paged query over 100,000 VMs
(rows inserted through the controller's DB layer), and the controller's RSS.

ZStack's figures are published numbers from another machine, not measured in
this run, so they are given as ``baseline`` without a ``ratio``.

``BENCH_VMS=1,10,100`` picks the batch sizes, ``BENCH_HOSTS`` the host count (100)
and ``BENCH_QUERY_VMS`` the rows of the query test; such a run prints its
results and leaves ``bench/results/controller.json`` alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import Result, keep, percentile
from tests.support.agents import AgentProcess, free_port, python_agent, wait_until

ZSTACK_SECONDS = {1: 0.51, 10: 1.55, 100: 11.33, 1000: 103.0, 10000: 23 * 60.0}
ZSTACK = "ZStack published (simulator, home page)"
SIZES = [int(n) for n in os.environ.get("BENCH_VMS", "1,10,100,1000,10000").split(",") if n]
HOSTS = int(os.environ.get("BENCH_HOSTS", "100"))
QUERY_ROWS = int(os.environ.get("BENCH_QUERY_VMS", "100000"))
PARTIAL = any(k in os.environ for k in ("BENCH_VMS", "BENCH_HOSTS", "BENCH_QUERY_VMS"))
CLIENTS = 16
CONCURRENCY = 32
PROTOCOL_COMMANDS = 5000
SIM_TOKEN = "bench-simulator-token"
API_TOKEN = "bench-api-token"
DIGEST = "sha256:" + "ab" * 32


class Proc:
    """A server process in its own session, stopped by its pid."""

    def __init__(self, argv: list[str], log: Path, url: str) -> None:
        self.url = url
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.url} exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(healthy, timeout, what=f"{self.url}/healthz")

    def _session(self) -> Iterator[tuple[Path, list[str]]]:
        """(/proc/<pid>, stat fields after the command name) of every process of the session."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.proc.pid:  # process group id
                    yield stat.parent, fields
            except (OSError, IndexError, ValueError):
                continue

    def rss_bytes(self) -> int:
        """RSS of every process of the session (the server's main process and its worker)."""
        total = 0
        for proc, _ in self._session():
            try:
                status = (proc / "status").read_text()
                total += 1024 * next(int(line.split()[1]) for line in status.splitlines()
                                     if line.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                continue
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the session's processes."""
        ticks = sum(int(f[11]) + int(f[12]) for _, f in self._session())
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Api:
    """The controller's API, failing loudly."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/v1", timeout=120,
                                 headers={"Authorization": f"Bearer {API_TOKEN}"},
                                 limits=httpx.Limits(max_connections=CLIENTS * 2))

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.http.request(method, path, json=body, params=params or None)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def create(self, coll: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create and, when it is a job, wait for it; returns the resource."""
        answer = self.call("POST", f"/{coll}", body, wait=1)
        job = answer.get("job") if isinstance(answer, dict) else None
        if job is not None:
            if job["state"] != "succeeded":
                raise RuntimeError(f"creating {coll} failed: {job}")
            return dict(answer["resource"])
        return dict(answer)


def setup(api: Api, sim_url: str) -> dict[str, str]:
    """A zone with HOSTS simulated hosts, NFS and SFTP storage, an image, a flat network."""
    zone = api.create("zones", {"name": "bench"})["uuid"]
    cluster = api.create("clusters", {"name": "bench", "zoneUuid": zone})["uuid"]

    def add_host(i: int) -> None:
        url = f"{sim_url}/agents/host-{i:05d}"
        api.create("hosts", {"name": f"h{i}", "clusterUuid": cluster,
                             "managementIp": f"127.1.{(i - 1) // 250}.{(i - 1) % 250 + 1}",
                             "agentUrl": url, "storageAgentUrl": url})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add_host, range(1, HOSTS + 1)))
    api.create("primary-storages", {
        "name": "nfs", "zoneUuid": zone, "type": "nfs", "url": "127.0.0.1:/export",
        "mountPath": "/var/lib/kvmcloud/bench", "clusterUuids": [cluster],
        "agentUrl": f"{sim_url}/agents/ps-00001"})
    bs = api.create("backup-storages", {
        "name": "sftp", "type": "sftp", "hostname": "127.0.0.1", "url": "/store",
        "zoneUuids": [zone], "agentUrl": f"{sim_url}/agents/bs-00001"})["uuid"]
    image = api.create("images", {"name": "cirros", "backupStorageUuids": [bs],
                                  "imageId": "cirros", "digest": DIGEST, "size": 117440512})["uuid"]
    l2 = api.create("l2-networks", {"name": "flat", "zoneUuid": zone, "type": "novlan",
                                    "physicalInterface": "eth0", "clusterUuids": [cluster]})["uuid"]
    l3 = api.create("l3-networks", {"name": "pub", "l2NetworkUuid": l2, "ipRanges": [{
        "startIp": "10.0.0.10", "endIp": "10.0.254.250", "netmask": "255.255.0.0",
        "gateway": "10.0.0.1"}]})["uuid"]
    offering = api.create("instance-offerings", {"name": "tiny", "cpuNum": 1,
                                                 "memorySize": 64 << 20})["uuid"]
    return {"zone": zone, "image": image, "l3": l3, "offering": offering}


def create_vms(api: Api, env: dict[str, str], n: int, ctl: Proc, sim: Proc) -> list[Result]:
    """Submit n creates from CLIENTS threads, then wait for every job."""
    latencies: list[float] = []
    cpu0 = (ctl.cpu_seconds(), sim.cpu_seconds())

    def submit(i: int) -> str:
        t = time.perf_counter()
        answer = api.call("POST", "/vms", {
            "name": f"b{n}-{i}", "imageUuid": env["image"], "instanceOfferingUuid": env["offering"],
            "l3NetworkUuids": [env["l3"]]})
        latencies.append(time.perf_counter() - t)
        return str(answer["job"]["uuid"])

    def finish(job: str) -> str:
        while True:
            state = api.call("GET", f"/jobs/{job}", wait=1, timeout=60)["job"]
            if state["state"] in ("succeeded", "failed", "cancelled"):
                return str(state["state"]) if state["state"] == "succeeded" else str(state)

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        jobs = list(pool.map(submit, range(n)))
        outcomes = list(pool.map(finish, jobs))
    wall = time.perf_counter() - start
    ctl_cpu, sim_cpu = ctl.cpu_seconds() - cpu0[0], sim.cpu_seconds() - cpu0[1]
    failed = [o for o in outcomes if o != "succeeded"]
    running = api.call("GET", "/vms", q=[f"name~=b{n}-%", "state=Running"], count=1,
                       limit=1, fields="uuid")["total"]
    print(f"create {n} VMs: {wall:.2f}s, {running} Running, {len(failed)} failed; CPU "
          f"controller {ctl_cpu:.1f}s, simulator {sim_cpu:.1f}s"
          + (f" (first: {failed[0][:300]})" if failed else ""), flush=True)
    if running != n:
        raise RuntimeError(f"only {running} of {n} VMs reached Running; failed: {failed[:3]}")
    out = [Result(f"create {n} VMs", round(wall, 3), "s", "lower",
                  baseline_name=ZSTACK, baseline=ZSTACK_SECONDS.get(n))]
    if n >= 100:
        out += [Result(f"create {n} VMs: POST /v1/vms p50 latency",
                       round(percentile(latencies, 50) * 1000, 2), "ms", "lower"),
                Result(f"create {n} VMs: POST /v1/vms p99 latency",
                       round(percentile(latencies, 99) * 1000, 2), "ms", "lower"),
                Result(f"create {n} VMs: throughput", round(n / wall, 1), "VMs/s", "higher"),
                Result(f"create {n} VMs: controller CPU per VM", round(ctl_cpu / n * 1000, 2),
                       "ms", "lower"),
                Result(f"create {n} VMs: simulator CPU per VM", round(sim_cpu / n * 1000, 2),
                       "ms", "lower")]
    return out


def insert_vms(db_url: str, env: dict[str, str], total: int) -> int:
    """Top the VM table up to ``total`` rows through the controller's DB layer."""
    from sqlalchemy import func, insert, select

    from controller.db.base import Database, new_uuid
    from controller.db.models import Vm

    db = Database(db_url)
    with db.read() as s:
        have = int(s.scalar(select(func.count()).select_from(Vm)) or 0)
    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    states = ["Running"] * 6 + ["Stopped"] * 3 + ["Error"]
    for start in range(have, total, 10000):
        rows = [{
            "uuid": new_uuid(), "name": f"q{i}", "state": rng.choice(states),
            "create_date": now - dt.timedelta(seconds=rng.randrange(10**7)),
            "last_op_date": now, "zone_uuid": env["zone"], "image_uuid": env["image"],
            "instance_offering_uuid": env["offering"], "cpu_num": rng.choice([1, 2, 4, 8]),
            "memory_size": rng.choice([512, 1024, 2048, 4096, 8192]) << 20, "platform": "Linux",
        } for i in range(start, min(total, start + 10000))]
        with db.write() as s:
            s.execute(insert(Vm), rows)
    db.engine.dispose()
    return total - have


def query_vms(api: Api, ctl: Proc) -> list[Result]:
    params = {"q": ["state=Running", "memorySize>1073741824"], "sort": "-createDate",
              "limit": 50, "offset": 500, "fields": "uuid,name,state,memorySize,createDate"}
    total = api.call("GET", "/vms", count=1, limit=1, fields="uuid")["total"]
    samples = []
    for i in range(40):
        t = time.perf_counter()
        page = api.call("GET", "/vms", **params)
        if i >= 5:  # the first few warm the page cache
            samples.append(time.perf_counter() - t)
        if total >= 10000 and len(page["items"]) != 50:
            raise RuntimeError(f"the query found {len(page['items'])} VMs, not a page of 50")
    rss = ctl.rss_bytes()
    print(f"query over {total} VMs: p50 {percentile(samples, 50) * 1000:.1f} ms; "
          f"RSS {rss / 2**20:.0f} MiB", flush=True)
    return [
        Result(f"query {total} VMs (2 filters, sort, page of 50): p50",
               round(percentile(samples, 50) * 1000, 2), "ms", "lower"),
        Result(f"query {total} VMs (2 filters, sort, page of 50): p99",
               round(percentile(samples, 99) * 1000, 2), "ms", "lower"),
        Result(f"controller RSS at {total} VMs", round(rss / 2**20, 1), "MiB", "lower"),
    ]


async def _blast(base: str, token: str, n: int, receiver_port: int) -> float:
    """n async ``/echo`` commands at CONCURRENCY; seconds until every reply was called back."""
    from aiohttp import ClientSession, TCPConnector, web

    got: set[str] = set()
    done = asyncio.Event()

    async def callback(request: web.Request) -> web.Response:
        await request.read()
        if request.headers.get("kind") == "reply":
            got.add(request.headers.get("taskuuid", ""))
            if len(got) >= n:
                done.set()
        return web.Response(text="{}")

    app = web.Application()
    app.router.add_post("/cb", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
    headers = {"Authorization": f"Bearer {token}"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    run = uuid.uuid4().hex[:8]
    try:
        async with ClientSession(connector=TCPConnector(limit=CONCURRENCY)) as session:
            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    h = {**headers, "taskuuid": f"{run}-{i}",
                         "callbackurl": f"http://127.0.0.1:{receiver_port}/cb"}
                    async with session.post(f"{base}/echo", json={"message": "x"}, headers=h) as r:
                        if r.status != 202:
                            raise RuntimeError(f"{base}/echo: {r.status} {await r.text()}")
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
            await asyncio.wait_for(done.wait(), 300)
            return time.perf_counter() - start
    finally:
        await runner.cleanup()


def agent_protocol_rate(sim_url: str, tmp: Path) -> list[Result]:
    """The simulator's async command rate beside a real agentcore agent's, same load."""
    receiver_port = free_port()
    agent = AgentProcess(python_agent("tests.integration.agentcore.testagent"), tmp,
                         token=SIM_TOKEN, controller_urls=[f"http://127.0.0.1:{receiver_port}"])
    agent.start()
    try:
        asyncio.run(_blast(agent.url, SIM_TOKEN, 200, receiver_port))  # warm up
        real = PROTOCOL_COMMANDS / asyncio.run(_blast(agent.url, SIM_TOKEN, PROTOCOL_COMMANDS,
                                                      receiver_port))
    finally:
        agent.stop()
    sim_base = f"{sim_url}/agents/host-00001"
    asyncio.run(_blast(sim_base, SIM_TOKEN, 200, receiver_port))
    sim = PROTOCOL_COMMANDS / asyncio.run(_blast(sim_base, SIM_TOKEN, PROTOCOL_COMMANDS,
                                                 receiver_port))
    print(f"async /echo: simulator {sim:.0f}/s, agentcore agent {real:.0f}/s", flush=True)
    return [Result.against(
        f"async commands/s (202 + callback, {CONCURRENCY} in flight): simulated agent",
        round(sim, 1), "commands/s", "higher",
        "a real agentcore agent (testagent under gunicorn, journal, outbox), same load",
        round(real, 1))]


def main() -> None:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="kvmcloud-bench-ctl-") as tmp:
        d = Path(tmp)
        sim_port, ctl_port = free_port(), free_port()
        sim_url, ctl_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{ctl_port}"
        db_url = f"sqlite:///{d / 'controller.db'}"
        cli = [sys.executable, "-m", "controller.cli"]
        sim = Proc([*cli, "simulator", "serve", "--listen", f"127.0.0.1:{sim_port}",
                    "--hosts", str(HOSTS), "--token", SIM_TOKEN], d / "simulator.log", sim_url)
        ctl = Proc([*cli, "serve", "--listen", f"127.0.0.1:{ctl_port}", "--db", db_url,
                    "--api-token", API_TOKEN, "--agent-token", SIM_TOKEN],
                   d / "controller.log", ctl_url)
        try:
            sim.wait_healthy()
            ctl.wait_healthy()
            api = Api(ctl_url)
            results += agent_protocol_rate(sim_url, d)
            env = setup(api, sim_url)
            for n in SIZES:
                results += create_vms(api, env, n, ctl, sim)
            inserted = insert_vms(db_url, env, QUERY_ROWS)
            print(f"inserted {inserted} VM rows through the DB layer", flush=True)
            results += query_vms(api, ctl)
        except Exception:
            print(f"controller log tail:\n{(d / 'controller.log').read_text()[-3000:]}", flush=True)
            raise
        finally:
            keep("controller", results, PARTIAL)
            ctl.stop()
            sim.stop()


if __name__ == "__main__":
    main()
