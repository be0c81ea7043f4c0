"""Volume backup benchmark: the storageagent's backup path against plain tools, side by side.

A volume (qcow2, :data:`DISK` virtual, :data:`FILLED` of it written with
incompressible data) on a local primary storage, backed up the way the
controller's backup flow does it: ``/storage/volume/create-template`` (a
flattened copy) then ``/storage/volume/upload-template`` into a
content-addressed store reached over SFTP (the sshd component's chroot).

- full backup throughput vs ``qemu-img convert`` of the same volume +
  OpenSSH ``sftp put`` of the result (alternating, best of :data:`ROUNDS`);
- incremental: after 5% of the disk is rewritten (through ``qemu-io``, as a
  guest writes: four contiguous runs, or 64 KiB writes scattered over the
  written half), the bytes of new chunks the second backup adds to the store,
  for a qcow2 copy and for a raw copy (the store's chunks are 1 MiB: a
  scattered 64 KiB write costs a whole chunk);
- restore: the backup brought back into primary storage (one
  ``create-from-store``: fetched hash-checked, renamed into place) vs OpenSSH
  ``sftp get`` of the flattened file + ``cp`` into place.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sftpbackup.sftpcli import quote, ssh_options
from tests.bench.common import Result, write
from tests.conftest import read_component_env
from tests.support.agents import AgentProcess, python_agent

MiB = 1 << 20
DISK = int(os.environ.get("BACKUP_BENCH_MIB", "1024")) * MiB
FILLED = DISK // 2
ROUNDS = 2


def _ok(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("success"):
        raise RuntimeError(f"command failed: {reply}")
    return reply


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _sh(*argv: str | Path, stdin: bytes | None = None) -> None:
    subprocess.run([str(a) for a in argv], input=stdin, check=True, timeout=1200, capture_output=True)


def _write(vol: Path, offset: int, length: int, seed: int) -> None:
    """Incompressible bytes into the volume as a guest would write them (through qemu-io)."""
    data = vol.parent / f".w-{seed}"
    data.write_bytes(random.Random(seed).randbytes(length))
    raw = vol.parent / f".w-{seed}.raw"
    _sh("qemu-img", "create", "-q", "-f", "raw", raw, str(length))
    raw.write_bytes(data.read_bytes())
    # qemu-img dd cannot seek the output; qemu-io writes a file's content at an offset
    _sh("qemu-io", "-f", "qcow2", "-c", f"write -s {raw} {offset} {length}", vol)
    data.unlink()
    raw.unlink()


class Rig:
    def __init__(self, work: Path) -> None:
        env = read_component_env("sshd")
        self.key, self.known = Path(env["SSHD_KEY"]), Path(env["SSHD_KNOWN_HOSTS"])
        self.host, self.port, self.user = env["SSHD_HOST"], int(env["SSHD_PORT"]), env["SSHD_USER"]
        rel = f"bench-backup-{uuid.uuid4().hex[:8]}"
        self.rel = rel
        self.store_dir = Path(env["SSHD_STORE_DIR"]) / rel
        self.store_dir.mkdir()
        self.work = work
        self.agent = AgentProcess(python_agent("storageagent.app"), work / "agent", extra={
            "storage_base_dirs": [work / "ps"], "mount_base": work / "mnt",
            "sftp_key_file": self.key, "sftp_known_hosts": self.known})
        self.ref = {"storageUuid": f"bench-{uuid.uuid4().hex[:8]}", "mountPath": str(work / "ps" / "s1")}
        self.target = {"host": self.host, "port": self.port, "user": self.user, "storeRoot": f"/{rel}"}

    @property
    def ps(self) -> Path:
        return self.work / "ps" / "s1"

    def call(self, path: str, **body: Any) -> dict[str, Any]:
        return _ok(self.agent.call(path, {**self.ref, **body}))

    def chunk_bytes(self) -> dict[str, int]:
        root = self.store_dir / "chunks"
        return {p.name: p.stat().st_size for p in root.rglob("*") if p.is_file()} if root.exists() else {}

    def backup(self, vol: str, name: str, fmt: str) -> dict[str, Any]:
        """The controller's backup path for a stopped volume: flattened copy, upload, drop."""
        template = f"templates/{name}.{fmt}"
        self.call("/storage/volume/create-template", installPath=vol, volumeFormat="qcow2",
                  templatePath=template, format=fmt)
        try:
            return self.call("/storage/volume/upload-template", installPath=template, name=name,
                             target=self.target)
        finally:
            self.call("/storage/volume/delete", installPath=template)

    def sftp(self, *lines: str) -> None:
        argv = ["sftp", "-q", "-b", "-", "-P", str(self.port), *ssh_options(self.key, self.known),
                f"{self.user}@{self.host}"]
        _sh(*argv, stdin="".join(line + "\n" for line in lines).encode())


def full_backup(rig: Rig, vol: str) -> list[Result]:
    src = rig.ps / vol
    plain = rig.work / "plain.qcow2"

    def ours(i: int) -> float:
        return _timed(lambda: rig.backup(vol, f"full-{i}", "qcow2"))

    def bare(i: int) -> float:
        def go() -> None:
            plain.unlink(missing_ok=True)
            _sh("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", src, plain)
            rig.sftp(f"put {quote(str(plain))} {quote(f'/{rig.rel}/plain-{i}.qcow2')}")
        return _timed(go)

    t_ours, t_bare = [], []
    for i in range(ROUNDS):
        t_bare.append(bare(i))
        for f in list(rig.store_dir.rglob("*")):  # every round starts from an empty store
            if f.is_file():
                f.unlink()
        t_ours.append(ours(i))
    rate = FILLED / min(t_ours) / MiB
    return [Result.against(
        f"full backup of a {DISK // MiB} MiB volume ({FILLED // MiB} MiB written): flattened "
        "copy + upload into the store", round(rate, 1), "MiB/s", "higher",
        "qemu-img convert + OpenSSH sftp put of the same volume", round(FILLED / min(t_bare) / MiB, 1))]


def _runs(rig: Rig, vol: str, seed: int) -> None:
    """5% of the disk rewritten in four contiguous runs (as the store benchmark changes an
    image), within the written half, where a guest rewrites its files."""
    rnd = random.Random(seed)
    run = (DISK // 20) // 4
    for k in range(4):
        off = (k * FILLED // 4 + rnd.randrange(0, FILLED // 4 - run)) & ~65535
        _write(rig.ps / vol, off, run, seed=seed * 10 + k)


def _scattered(rig: Rig, vol: str, seed: int) -> None:
    """5% of the disk rewritten as 64 KiB writes scattered over the written half."""
    rnd = random.Random(seed)
    piece = 64 << 10
    src = rig.work / "piece.raw"
    src.write_bytes(rnd.randbytes(piece))  # the same piece everywhere: each 1 MiB chunk differs
    writes = [a for slot in rnd.sample(range(FILLED // piece), (DISK // 20) // piece)
              for a in ("-c", f"write -s {src} {slot * piece} {piece}")]
    _sh("qemu-io", "-f", "qcow2", *writes, rig.ps / vol)


def incremental(rig: Rig, vol: str) -> list[Result]:
    out: list[Result] = []
    for label, fmt, change in (("contiguous runs", "qcow2", _runs), ("contiguous runs", "raw", _runs),
                               ("scattered 64 KiB writes", "qcow2", _scattered)):
        for f in list(rig.store_dir.rglob("*")):
            if f.is_file():
                f.unlink()
        rig.backup(vol, f"inc-{fmt}-1", fmt)
        before = rig.chunk_bytes()
        change(rig, vol, len(out) + 7)
        rig.backup(vol, f"inc-{fmt}-2", fmt)
        added = sum(size for name, size in rig.chunk_bytes().items() if name not in before)
        out.append(Result.against(
            f"second backup after 5% of the disk changed in {label} ({fmt} copy): new chunk bytes",
            round(100 * added / DISK, 2), "% of disk", "lower", "changed bytes", 5.0))
    return out


def restore(rig: Rig, vol: str) -> list[Result]:
    for f in list(rig.store_dir.rglob("*")):
        if f.is_file():
            f.unlink()
    up = rig.backup(vol, "restore-src", "qcow2")
    flat = rig.work / "flat.qcow2"
    _sh("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", rig.ps / vol, flat)
    rig.sftp(f"put {quote(str(flat))} {quote(f'/{rig.rel}/flat.qcow2')}")
    source = {"kind": "sftp", "imageId": up["imageId"], **rig.target}
    digest = up["digest"] if up["digest"].startswith("sha256:") else "sha256:" + up["digest"]

    def ours(i: int) -> float:
        def go() -> None:
            rig.call("/storage/volume/create-from-store", source=source, digest=digest,
                     size=up["size"], installPath=f"restored/{i}.qcow2")
        return _timed(go)

    def bare(i: int) -> float:
        got = rig.work / "got.qcow2"

        def go() -> None:
            got.unlink(missing_ok=True)
            rig.sftp(f"get {quote(f'/{rig.rel}/flat.qcow2')} {quote(str(got))}")
            _sh("cp", got, rig.ps / f"plain-restored-{i}.qcow2")
        return _timed(go)

    t_ours, t_bare = [], []
    for i in range(ROUNDS):
        t_bare.append(bare(i))
        t_ours.append(ours(i))
    return [Result.against("restore of the backup into primary storage (fetch, verify, volume)",
                           round(min(t_ours), 2), "s", "lower",
                           "OpenSSH sftp get of the flattened file + cp into place",
                           round(min(t_bare), 2))]


def main() -> None:
    work = Path(os.environ.get("KVMCLOUD_TEST_ENV", "/var/tmp/kvmcloud-test")) / \
        f"bench-backup-{uuid.uuid4().hex[:8]}"
    (work / "agent").mkdir(parents=True)
    rig = Rig(work)
    try:
        rig.agent.start()
        _ok(rig.agent.call("/storage/init", {**rig.ref, "type": "local"}))
        vol = "volumes/bench.qcow2"
        (rig.ps / "volumes").mkdir(exist_ok=True)
        _sh("qemu-img", "create", "-q", "-f", "qcow2", rig.ps / vol, str(DISK))
        for i in range(FILLED // (64 * MiB)):
            _write(rig.ps / vol, i * 64 * MiB, 64 * MiB, seed=i)
        results = full_backup(rig, vol)
        results += restore(rig, vol)
        results += incremental(rig, vol)
        write("backup", results, command="make bench BENCH=backup")
    finally:
        rig.agent.stop()
        shutil.rmtree(rig.store_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
