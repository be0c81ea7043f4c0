"""Storage agent benchmark, each figure beside its bare baseline in the same run:

- linked-clone creation through the agent (a synchronous ``create-root`` over
  HTTP) vs a bare ``qemu-img create -f qcow2 -F qcow2 -b base ov`` (median of
  alternating runs);
- 100 linked clones requested at once (100 client threads) vs 100 bare
  ``qemu-img create -b`` started at once;
- image-cache fill rate (download, sha256, format check, rename) vs a plain
  ``curl -o`` of the same bytes from the same HTTP server.

The storage is a local directory (the agent's file operations are the same on
NFS; the kernel NFS client cannot run on this machine).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.bench.common import Result, write
from tests.support.agents import AgentProcess, python_agent
from tests.support.httpserver import FileServer

SEQUENTIAL = 60
CONCURRENT = 100
FILL_BYTES = 512 << 20
FILL_RUNS = 3
BURST_ROUNDS = 3
BASE_SIZE = 1 << 30


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _ok(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("success"):
        raise RuntimeError(f"command failed: {reply}")
    return reply


def _bare_clone(base: Path, dest: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(dest)],
                   check=True, timeout=60)


def clone_latency(agent: AgentProcess, ref: dict[str, str], base: Path, bare_dir: Path) -> list[Result]:
    agent_ms: list[float] = []
    bare_ms: list[float] = []
    for i in range(SEQUENTIAL):
        t0 = time.perf_counter()
        _ok(agent.call("/storage/volume/create-root",
                       {**ref, "imageId": "base", "installPath": f"seq/{i}.qcow2"}))
        agent_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        _bare_clone(base, bare_dir / f"seq-{i}.qcow2")
        bare_ms.append((time.perf_counter() - t0) * 1000)
    a, b = statistics.median(agent_ms), statistics.median(bare_ms)
    return [Result.against("linked clone via agent (median)", round(a, 2), "ms", "lower",
                           "bare qemu-img create -b (median)", round(b, 2))]


def clone_burst(agent: AgentProcess, ref: dict[str, str], base: Path, bare_dir: Path) -> list[Result]:
    def one(tag: str, i: int) -> None:
        _ok(agent.call("/storage/volume/create-root",
                       {**ref, "imageId": "base", "installPath": f"burst-{tag}/{i}.qcow2"}))

    agent_s: list[float] = []
    bare_s: list[float] = []
    for r in range(BURST_ROUNDS):  # alternating rounds: background load hits both sides alike
        with ThreadPoolExecutor(CONCURRENT) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda i, r=r: one(str(r), i), range(CONCURRENT)))
            agent_s.append(time.perf_counter() - t0)
        with ThreadPoolExecutor(CONCURRENT) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda i, r=r: _bare_clone(base, bare_dir / f"burst-{r}-{i}.qcow2"),
                          range(CONCURRENT)))
            bare_s.append(time.perf_counter() - t0)
    a, b = statistics.median(agent_s), statistics.median(bare_s)
    return [
        Result.against(f"{CONCURRENT} concurrent linked clones via agent (median of {BURST_ROUNDS})",
                       round(a, 3), "s", "lower",
                       f"{CONCURRENT} concurrent bare qemu-img create -b", round(b, 3)),
        Result.against("concurrent clone rate via agent", round(CONCURRENT / a, 1), "clones/s", "higher",
                       "concurrent bare qemu-img rate", round(CONCURRENT / b, 1)),
    ]


def cache_fill(agent: AgentProcess, ref: dict[str, str], work: Path) -> list[Result]:
    src = work / "src"
    src.mkdir()
    image = src / "fill.raw"
    with open(image, "wb") as f:  # incompressible, so no layer can cheat
        for _ in range(FILL_BYTES >> 24):
            f.write(os.urandom(1 << 24))
    digest = _sha256(image)
    fill: list[float] = []
    plain: list[float] = []
    with FileServer(src) as srv:
        for i in range(FILL_RUNS):
            t0 = time.perf_counter()
            _ok(agent.call("/storage/cache-image", {**ref, "imageId": f"fill-{i}", "digest": digest,
                                                    "source": {"kind": "http", "url": srv.url("fill.raw")}}))
            fill.append(FILL_BYTES / (time.perf_counter() - t0) / 2**20)
            _ok(agent.call("/storage/cache/evict", {**ref, "imageId": f"fill-{i}"}))
            out = work / f"curl-{i}.raw"
            t0 = time.perf_counter()
            subprocess.run(["curl", "-sf", "-o", str(out), srv.url("fill.raw")], check=True, timeout=600)
            plain.append(FILL_BYTES / (time.perf_counter() - t0) / 2**20)
            out.unlink()
    return [Result.against("image cache fill (HTTP, sha256 verified)", round(statistics.median(fill), 1),
                           "MiB/s", "higher", "plain curl -o of the same bytes", round(statistics.median(plain), 1))]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-storageagent-", dir="/var/tmp"))
    agent = AgentProcess(python_agent("storageagent.app"), work,
                         extra={"storage_base_dirs": [work / "ps"], "mount_base": work / "mnt",
                                "download_allow_local": True})
    try:
        agent.start()
        ref = {"storageUuid": f"bench-{uuid.uuid4().hex[:8]}", "mountPath": str(work / "ps" / "s1")}
        _ok(agent.call("/storage/init", {**ref, "type": "local"}))
        images = work / "images"
        images.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(images / "base.qcow2"), str(BASE_SIZE)],
                       check=True, timeout=60)
        with FileServer(images) as srv:
            cached = _ok(agent.call("/storage/cache-image", {
                **ref, "imageId": "base", "digest": _sha256(images / "base.qcow2"),
                "source": {"kind": "http", "url": srv.url("base.qcow2")}}))
        base = work / "ps" / "s1" / cached["image"]["installPath"]
        bare_dir = work / "bare"
        bare_dir.mkdir()
        results = clone_latency(agent, ref, base, bare_dir)
        results += clone_burst(agent, ref, base, bare_dir)
        results += cache_fill(agent, ref, work)
        write("storageagent", results, command="make bench BENCH=storageagent")
    finally:
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
