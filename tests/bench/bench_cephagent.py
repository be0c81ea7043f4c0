"""Ceph agent benchmark against the real single-node cluster, each figure beside
its baseline measured in the same run:

- clone creation through the agent (a synchronous ``/ceph/volume/create-from-image``
  over HTTP, as ``client.agent``) vs a direct ``RBD().clone`` through the same
  Python bindings and the same user (median of alternating runs);
- clones per second with 16 requests in flight through the agent vs 16 threads
  calling ``RBD().clone`` directly (median of 3 alternating rounds of 96);
- add-image throughput (HTTP download from a local busybox httpd, sha256,
  format detection, sparse RBD writes, rename) vs ``rbd import`` of the same
  file (median of 5 alternating runs of 256 MiB).

The cluster is one memstore OSD: absolute numbers are those of RAM-backed
storage on this machine; the ratios are the point.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import rados
import rbd

from tests.bench.common import Result, write
from tests.conftest import read_component_env
from tests.support.agents import AgentProcess, free_port, python_agent

SEQUENTIAL = 40
CONCURRENCY = 16
CONCURRENT_CLONES = 96
IMPORT_BYTES = 256 << 20
IMPORT_RUNS = 5
RATE_ROUNDS = 3
MiB = 1 << 20


def _ok(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("success"):
        raise RuntimeError(f"command failed: {reply}")
    return reply


class Bench:
    def __init__(self, env: dict[str, str], agent: AgentProcess, pools: dict[str, str]) -> None:
        self.env = env
        self.agent = agent
        self.pools = pools
        self.cluster = {"monitors": env["CEPH_MONITORS"].split(","), "user": env["CEPH_AGENT_USER"],
                        "keyring": env["CEPH_AGENT_KEYRING"]}
        self.direct = rados.Rados(rados_id=env["CEPH_AGENT_USER"], conf={
            "mon_host": env["CEPH_MON_HOST"], "keyring": env["CEPH_AGENT_KEYRING"]})
        self.direct.connect(timeout=10)
        self.src_io = self.direct.open_ioctx(pools["images"])
        self.dst_io = self.direct.open_ioctx(pools["volumes"])

    def close(self) -> None:
        self.src_io.close()
        self.dst_io.close()
        self.direct.shutdown()

    def agent_clone(self, base: str, name: str) -> float:
        t = time.perf_counter()
        _ok(self.agent.call("/ceph/volume/create-from-image", {
            "cluster": self.cluster, "pool": self.pools["volumes"], "name": name,
            "srcPool": self.pools["images"], "srcName": base}))
        return time.perf_counter() - t

    def direct_clone(self, base: str, name: str) -> float:
        t = time.perf_counter()
        rbd.RBD().clone(self.src_io, base, "kvmcloud-base", self.dst_io, name,
                        features=rbd.RBD_FEATURE_LAYERING)
        return time.perf_counter() - t

    def make_base(self) -> str:
        base = f"bench-base-{uuid.uuid4().hex[:6]}"
        _ok(self.agent.call("/ceph/volume/create", {"cluster": self.cluster, "pool": self.pools["images"],
                                                    "name": base, "size": 64 * MiB}))
        # the first clone creates and protects the base snapshot; not timed
        self.agent_clone(base, f"warm-{uuid.uuid4().hex[:6]}")
        return base


def clone_latency(b: Bench) -> list[Result]:
    base = b.make_base()
    agent_s: list[float] = []
    direct_s: list[float] = []
    for i in range(SEQUENTIAL):
        agent_s.append(b.agent_clone(base, f"a{i}-{uuid.uuid4().hex[:6]}"))
        direct_s.append(b.direct_clone(base, f"d{i}-{uuid.uuid4().hex[:6]}"))
    a, d = statistics.median(agent_s) * 1000, statistics.median(direct_s) * 1000
    return [Result.against("clone_latency_median", round(a, 2), "ms", "lower",
                           "direct_rbd_clone_median", round(d, 2))]


def clone_rate(b: Bench) -> list[Result]:
    base = b.make_base()

    def run(fn: Any) -> float:
        names = [f"c{i}-{uuid.uuid4().hex[:6]}" for i in range(CONCURRENT_CLONES)]
        t = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(lambda n: fn(base, n), names))
        return CONCURRENT_CLONES / (time.perf_counter() - t)

    agent_rates: list[float] = []
    direct_rates: list[float] = []
    for _ in range(RATE_ROUNDS):  # alternating rounds, medians: the machine is shared
        agent_rates.append(run(b.agent_clone))
        direct_rates.append(run(b.direct_clone))
    return [Result.against(f"clones_per_s_concurrency_{CONCURRENCY}", round(statistics.median(agent_rates), 1),
                           "clones/s", "higher", f"direct_rbd_clones_per_s_concurrency_{CONCURRENCY}",
                           round(statistics.median(direct_rates), 1))]


class StaticServer:
    """busybox httpd serving a directory on loopback (a C server, as an image
    server would be; the Python test server would eat the CPU being measured)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{self.port}",
                                      "-h", str(root)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("busybox httpd did not start")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def add_image_throughput(b: Bench, workdir: Path) -> list[Result]:
    src = workdir / "image.raw"
    with open(src, "wb") as f:
        for _ in range(IMPORT_BYTES // (16 * MiB)):
            f.write(os.urandom(16 * MiB))
    agent_mibs: list[float] = []
    import_mibs: list[float] = []
    pool = b.pools["images"]
    srv = StaticServer(workdir)
    try:
        for i in range(IMPORT_RUNS):
            name = f"add-{i}-{uuid.uuid4().hex[:6]}"
            t = time.perf_counter()
            _ok(b.agent.call("/ceph/image/add", {"cluster": b.cluster, "pool": pool, "name": name,
                                                 "url": srv.url("image.raw")}))
            agent_mibs.append(IMPORT_BYTES / MiB / (time.perf_counter() - t))
            _ok(b.agent.call("/ceph/image/delete", {"cluster": b.cluster, "pool": pool, "name": name}))

            name = f"imp-{i}-{uuid.uuid4().hex[:6]}"
            t = time.perf_counter()
            subprocess.run(["rbd", "import", "--no-progress", "--id", b.env["CEPH_AGENT_USER"],
                            "--keyring", b.env["CEPH_AGENT_KEYRING"], "-m", b.env["CEPH_MON_HOST"],
                            "--image-feature", "layering", str(src), f"{pool}/{name}"],
                           check=True, timeout=600, env={**os.environ, "CEPH_CONF": "/dev/null"})
            import_mibs.append(IMPORT_BYTES / MiB / (time.perf_counter() - t))
            _ok(b.agent.call("/ceph/image/delete", {"cluster": b.cluster, "pool": pool, "name": name}))
    finally:
        srv.stop()
    return [Result.against("add_image_from_http_throughput_median", round(statistics.median(agent_mibs), 1),
                           "MiB/s", "higher", "rbd_import_throughput_median",
                           round(statistics.median(import_mibs), 1))]


def main() -> None:
    env = read_component_env("ceph")
    tag = uuid.uuid4().hex[:6]
    pools = {"images": f"bench-{tag}-images", "volumes": f"bench-{tag}-volumes"}
    admin = rados.Rados(conffile=env["CEPH_CONF"], name="client.admin")
    admin.connect(timeout=10)
    with tempfile.TemporaryDirectory(prefix="bench-ceph-") as tmp:
        workdir = Path(tmp)
        agent = AgentProcess(python_agent("cephagent.app"), workdir, extra={
            "keyring_dirs": [env["CEPH_DIR"]], "workers": 32, "log_level": "WARNING",
            "download_allow_local": True}).start()
        try:
            cluster = {"monitors": env["CEPH_MONITORS"].split(","), "user": env["CEPH_AGENT_USER"],
                       "keyring": env["CEPH_AGENT_KEYRING"]}
            _ok(agent.call("/ceph/pools/init", {"cluster": cluster,
                                                "pools": [{"name": p} for p in pools.values()]}))
            b = Bench(env, agent, pools)
            try:
                results = clone_latency(b) + clone_rate(b)
                http_dir = workdir / "http"
                http_dir.mkdir()
                results += add_image_throughput(b, http_dir)
            finally:
                b.close()
        finally:
            agent.stop()
            for p in pools.values():
                admin.mon_command(json.dumps({"prefix": "osd pool rm", "pool": p, "pool2": p,
                                              "yes_i_really_really_mean_it": True}), b"", timeout=60)
            admin.shutdown()
    write("cephagent", results, command="BENCH=cephagent .venv/bin/python -m tests.bench.run")


if __name__ == "__main__":
    main()
