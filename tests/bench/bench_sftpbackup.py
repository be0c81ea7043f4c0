"""sftpbackup: throughput of the store against OpenSSH and curl, delta pushes, and
the dedupe that chose the chunking. Writes bench/results/sftpbackup.json.

Each figure is measured beside its baseline in the same run (alternating, best
of ``ROUNDS``, since other work shares this machine):

- fetch of a 1 GiB image through :class:`StoreClient` vs OpenSSH ``sftp`` get of
  the same bytes as one file;
- add-image of that image from a local HTTP server vs ``curl`` to disk;
- bytes sent by a second push after 5% of the image changed;
- new bytes between real image pairs for fixed and content-defined chunking.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sftpbackup.chunker import hash_file
from sftpbackup.client import StoreClient
from sftpbackup.sftpcli import SftpTarget, quote, ssh_options
from tests.bench.common import Result, write
from tests.conftest import read_component_env
from tests.support.agents import AgentProcess, python_agent
from tests.support.httpserver import FileServer

MiB = 1024 * 1024
GiB = int(os.environ.get("SFTPBACKUP_BENCH_MIB", "1024")) * MiB  # a smaller image for a quick check
ROUNDS = 2
PAIR_SIZE = 256 * MiB


def best(fn: Callable[[], float], rounds: int = ROUNDS) -> float:
    return min(fn() for _ in range(rounds))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def random_file(path: Path, size: int, seed: int) -> Path:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(rnd.randbytes(MiB))
    return path


def change_runs(src: Path, dst: Path, fraction: float, seed: int) -> Path:
    """``dst`` = ``src`` with ``fraction`` rewritten in four contiguous runs."""
    shutil.copyfile(src, dst)
    size = src.stat().st_size
    rnd = random.Random(seed)
    run_len = int(size * fraction) // 4
    with open(dst, "r+b") as f:
        for k in range(4):
            f.seek((k * size // 4 + rnd.randrange(0, size // 4 - run_len)) & ~4095)
            f.write(rnd.randbytes(run_len))
    return dst


def sh(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, timeout=600, capture_output=True)


# -- chunking dedupe on real image pairs -------------------------------------------


def fixed_chunks(path: Path, size: int) -> list[tuple[str, int]]:
    return [(c.digest, c.size) for c in hash_file(path, chunk_size=size)[0]]


def cdc_chunks(path: Path, avg: int) -> list[tuple[str, int]] | None:
    try:
        from fastcdc import fastcdc  # type: ignore[import-untyped]  # only for this comparison
    except ImportError:
        return None
    return [(c.hash, c.length) for c in
            fastcdc(str(path), min_size=avg // 4, avg_size=avg, max_size=avg * 4, fat=False,
                    hf=hashlib.sha256)]


def new_fraction(old: list[tuple[str, int]], new: list[tuple[str, int]]) -> float:
    have = {d for d, _ in old}
    seen: set[str] = set()
    n = 0
    for d, s in new:
        if d not in have and d not in seen:
            seen.add(d)
            n += s
    return n / sum(s for _, s in new)


def image_pairs(work: Path) -> dict[str, tuple[Path, Path]]:
    """Two versions of a qcow2 (converted, and updated in place) and a raw disk and its clone."""
    rnd = random.Random(7)
    raw = work / "raw1.img"
    with open(raw, "wb") as f:
        f.truncate(PAIR_SIZE)
        for off in range(0, PAIR_SIZE, MiB):
            if rnd.random() < 0.6:
                f.seek(off)
                f.write(rnd.randbytes(MiB))
    clone = change_runs(raw, work / "raw2.img", 0.05, seed=8)
    q1 = work / "q1.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, q1)
    writes = ["-c", "write -P 0xab 100M 6M", "-c", "write -P 0xcd 200M 7M"]
    ov = work / "ov.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", q1, ov)
    sh("qemu-io", *writes, ov)
    q2 = work / "q2.qcow2"
    sh("qemu-img", "convert", "-O", "qcow2", ov, q2)
    q2b = work / "q2b.qcow2"
    shutil.copyfile(q1, q2b)
    sh("qemu-io", *writes, q2b)
    return {"raw clone, 5% rewritten": (raw, clone), "qcow2 v2 re-converted": (q1, q2),
            "qcow2 updated in place": (q1, q2b)}


def chunking_results(work: Path) -> list[Result]:
    out: list[Result] = []
    for pair, (a, b) in image_pairs(work).items():
        chosen = 100 * new_fraction(fixed_chunks(a, MiB), fixed_chunks(b, MiB))
        variants: dict[str, float] = {}
        for size in (256 * 1024, 4 * MiB):
            variants[f"fixed {size // 1024} KiB"] = 100 * new_fraction(fixed_chunks(a, size), fixed_chunks(b, size))
        ca, cb = cdc_chunks(a, MiB), cdc_chunks(b, MiB)
        if ca is not None and cb is not None:
            variants["FastCDC avg 1 MiB"] = 100 * new_fraction(ca, cb)
        for name, value in variants.items():
            out.append(Result.against(f"new bytes, {pair}: fixed 1 MiB (chosen) vs {name}", round(chosen, 2),
                                      "% of image", "lower", name, round(value, 2)))
    return out


# -- throughput ------------------------------------------------------------------


def main() -> None:
    env = read_component_env("sshd")
    key, known = Path(env["SSHD_KEY"]), Path(env["SSHD_KNOWN_HOSTS"])
    host, port = env["SSHD_HOST"], int(env["SSHD_PORT"])
    rel = f"bench-{uuid.uuid4().hex[:8]}"
    base = Path(env["SSHD_STORE_DIR"]) / rel
    base.mkdir()
    work = Path(os.environ.get("KVMCLOUD_TEST_ENV", "/var/tmp/kvmcloud-test")) / f"bench-sftpbackup-{rel}"
    (work / "files").mkdir(parents=True)
    results: list[Result] = []
    agent: AgentProcess | None = None
    try:
        image = random_file(work / "files" / "image.raw", GiB, seed=1)
        os.link(image, base / "image.raw")  # the same bytes as one file for the sftp baseline
        with FileServer(work / "files") as files:
            (work / "agent").mkdir()
            agent = AgentProcess(python_agent("sftpbackup.app"), work / "agent", extra={
                "sftp_key_file": key, "sftp_known_hosts": known, "file_url_roots": [work / "files"],
                "download_allow_local": True,
            }).start()
            results += add_image_vs_curl(agent, files, base, image, work)
            results += fetch_vs_sftp(host, port, rel, key, known, work)
            results += delta_push(agent, host, port, rel, base, image, work)
        results += chunking_results(work)
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    write("sftpbackup", results, command="make bench  (BENCH=sftpbackup .venv/bin/python -m tests.bench.run)")


def store_body(base: Path, name: str, **extra: Any) -> dict[str, Any]:
    return {"backupStorageUuid": f"bench-{name}", "root": str(base / name), **extra}


def add_image_vs_curl(agent: AgentProcess, files: FileServer, base: Path, image: Path, work: Path) -> list[Result]:
    assert agent.call("/backup/connect", store_body(base, "a"))["success"]
    url = files.url(image)

    def add() -> float:
        agent.call("/backup/image/delete", store_body(base, "a", imageUuid="img"))
        agent.call("/backup/gc", store_body(base, "a", graceSeconds=0))
        t0 = time.perf_counter()
        r = agent.call("/backup/image/add", store_body(base, "a", imageUuid="img", url=url))
        assert r["success"], r
        return time.perf_counter() - t0

    def curl(durable: bool) -> float:
        dest = work / "curl.out"
        dest.unlink(missing_ok=True)

        def go() -> None:
            sh("curl", "-sf", "-o", dest, url)
            if durable:  # what the store guarantees: the bytes are on disk
                sh("sync", "--data", dest)

        return timed(go)

    t_add, t_curl, t_curl_sync = [], [], []
    for _ in range(ROUNDS):
        t_curl.append(curl(False))
        t_curl_sync.append(curl(True))
        t_add.append(add())
    rate = round(GiB / min(t_add) / MiB, 1)
    name = f"add-image {GiB // MiB} MiB from local HTTP (hash, detect, chunk, fsync)"
    return [
        Result.against(name, rate, "MiB/s", "higher", "curl to disk (page cache)", round(GiB / min(t_curl) / MiB, 1)),
        Result.against(name, rate, "MiB/s", "higher", "curl to disk, then sync --data",
                       round(GiB / min(t_curl_sync) / MiB, 1)),
    ]


def fetch_vs_sftp(host: str, port: int, rel: str, key: Path, known: Path, work: Path) -> list[Result]:
    target = SftpTarget(host, port, "root", f"/{rel}/a")
    dest = work / "fetched.raw"

    def fetch() -> float:
        dest.unlink(missing_ok=True)
        with StoreClient(target, key, known) as c:
            return timed(lambda: c.fetch("img", dest))

    def sftp() -> float:
        out = work / "sftp.out"
        out.unlink(missing_ok=True)
        argv = ["sftp", "-q", "-b", "-", "-P", str(port), *ssh_options(key, known), f"root@{host}"]
        line = f"get {quote(f'/{rel}/image.raw')} {quote(out)}\n".encode()
        return timed(lambda: subprocess.run(argv, input=line, check=True, timeout=600, capture_output=True))

    t_fetch, t_sftp = [], []
    for _ in range(ROUNDS):
        t_sftp.append(sftp())
        t_fetch.append(fetch())
    return [Result.against(f"fetch {GiB // MiB} MiB through StoreClient (chunks verified)",
                           round(GiB / min(t_fetch) / MiB, 1), "MiB/s", "higher",
                           "OpenSSH sftp get of the same bytes", round(GiB / min(t_sftp) / MiB, 1))]


def delta_push(agent: AgentProcess, host: str, port: int, rel: str, base: Path, image: Path,
               work: Path) -> list[Result]:
    assert agent.call("/backup/connect", store_body(base, "b"))["success"]
    remote = {"host": host, "port": port, "user": "root", "storeRoot": f"/{rel}/b"}
    out: dict[str, Any] = {}

    def first_push() -> None:
        out["first"] = agent.call("/backup/image/push", store_body(base, "a", imageUuid="img", remote=remote))

    t_first = timed(first_push)
    assert out["first"]["success"], out["first"]
    v2 = change_runs(image, work / "files" / "image-v2.raw", 0.05, seed=2)
    r = agent.call("/backup/image/add", store_body(base, "a", imageUuid="img-v2", url=v2.as_uri()))
    assert r["success"], r
    t0 = time.perf_counter()
    second = agent.call("/backup/image/push", store_body(base, "a", imageUuid="img-v2", remote=remote))
    elapsed = time.perf_counter() - t0
    assert second["success"], second
    return [
        Result.against("second push after a 5% change: bytes sent", round(100 * second["bytesSent"] / GiB, 2),
                       "% of image", "lower", "changed bytes", 5.0),
        Result("second push after a 5% change: wall time", round(elapsed, 2), "s", "lower"),
        Result(f"first push of {GiB // MiB} MiB to an empty store (chunks re-hashed, put, fsync, rename)",
               round(GiB / t_first / MiB, 1), "MiB/s", "higher"),
    ]


if __name__ == "__main__":
    main()
    sys.exit(0)
