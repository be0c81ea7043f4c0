"""Fixtures of the sftpbackup integration tests: the real sshd component, a real
agent process, real HTTP file server, and images made with qemu-img."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sftpbackup.client import StoreClient
from sftpbackup.sftpcli import SftpTarget
from sftpbackup.store import ImageStore
from tests.support.agents import AgentProcess, python_agent
from tests.support.httpserver import FileServer

MiB = 1024 * 1024


@dataclass
class Sshd:
    host: str
    port: int
    user: str
    key: Path
    known_hosts: Path
    store_dir: Path

    def target(self, rel: str) -> SftpTarget:
        return SftpTarget(self.host, self.port, self.user, f"/{rel}")

    def client(self, rel: str) -> StoreClient:
        return StoreClient(self.target(rel), self.key, self.known_hosts)

    def endpoint(self, rel: str) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "storeRoot": f"/{rel}"}


@dataclass
class StoreDir:
    """A store directory inside the SFTP chroot: ``path`` locally, ``/rel`` over SFTP."""

    uuid: str
    rel: str
    path: Path

    def body(self, **extra: Any) -> dict[str, Any]:
        return {"backupStorageUuid": self.uuid, "root": str(self.path), **extra}

    def store(self) -> ImageStore:
        return ImageStore(self.path)

    def chunk_files(self) -> list[Path]:
        return sorted(p for p in (self.path / "chunks").rglob("*") if p.is_file())

    def temp_files(self) -> list[Path]:
        return sorted([*(self.path / "tmp").iterdir(), *(self.path / "pending").iterdir()])


@pytest.fixture(scope="session")
def sshd(component_env: Any) -> Sshd:
    env = component_env("sshd")
    return Sshd(env["SSHD_HOST"], int(env["SSHD_PORT"]), env["SSHD_USER"], Path(env["SSHD_KEY"]),
                Path(env["SSHD_KNOWN_HOSTS"]), Path(env["SSHD_STORE_DIR"]))


@pytest.fixture
def new_store_dir(sshd: Sshd) -> Iterator[Any]:
    """Makes store directories in the chroot; removes them afterwards."""
    made: list[Path] = []

    def make(prefix: str = "store") -> StoreDir:
        rel = f"t-{prefix}-{uuid.uuid4().hex[:10]}"
        path = sshd.store_dir / rel
        made.append(path)
        return StoreDir(str(uuid.uuid4()), rel, path)

    yield make
    for p in made:
        shutil.rmtree(p, ignore_errors=True)


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """One real HTTP server for the session; each test puts its files in ``srcdir``."""
    with FileServer(tmp_path_factory.mktemp("files")) as srv:
        yield srv


@pytest.fixture
def srcdir(files: FileServer) -> Iterator[Path]:
    d = files.root / uuid.uuid4().hex[:10]
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_agent(workdir: Path, sshd: Sshd, files: FileServer, **extra: Any) -> AgentProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    return AgentProcess(python_agent("sftpbackup.app"), workdir, extra={
        "sftp_key_file": sshd.key, "sftp_known_hosts": sshd.known_hosts,
        "file_url_roots": [files.root], "download_allow_local": True, **extra,
    }).start()


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd, files: FileServer) -> Iterator[AgentProcess]:
    """One agent process for the tests that do not stop it."""
    a = start_agent(tmp_path_factory.mktemp("agent"), sshd, files)
    yield a
    a.stop()


@pytest.fixture
def own_agent(tmp_path: Path, sshd: Sshd, files: FileServer) -> Iterator[AgentProcess]:
    """An agent process of this test alone (to kill or restart)."""
    a = start_agent(tmp_path / "agent", sshd, files)
    yield a
    a.stop()


@pytest.fixture
def store_a(agent: AgentProcess, new_store_dir: Any) -> StoreDir:
    s: StoreDir = new_store_dir("a")
    r = agent.call("/backup/connect", s.body())
    assert r["success"], r
    return s


# -- images ------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, timeout=120, capture_output=True)


def make_raw(path: Path, size: int, seed: int, fill: float = 0.7) -> Path:
    """A raw disk: ``fill`` of its MiB blocks random (seeded), the rest zero."""
    rnd = __import__("random").Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, MiB):
            if rnd.random() < fill:
                f.seek(off)
                f.write(rnd.randbytes(MiB))
    return path


def change_fraction(src: Path, dst: Path, fraction: float, seed: int) -> Path:
    """A copy of ``src`` with ``fraction`` of it rewritten in four contiguous runs."""
    changed_chunks(src, dst, fraction, seed)
    return dst


def changed_chunks(src: Path, dst: Path, fraction: float, seed: int, chunk: int = MiB) -> int:
    """Make ``dst`` as :func:`change_fraction` does; return how many chunks the runs touch."""
    shutil.copyfile(src, dst)
    size = src.stat().st_size
    rnd = __import__("random").Random(seed)
    run_len = int(size * fraction) // 4
    touched: set[int] = set()
    with open(dst, "r+b") as f:
        for k in range(4):
            off = (k * size // 4 + rnd.randrange(0, size // 4 - run_len)) & ~4095
            f.seek(off)
            f.write(rnd.randbytes(run_len))
            touched.update(range(off // chunk, (off + run_len - 1) // chunk + 1))
    return len(touched)


def make_qcow2(path: Path, virtual: str = "256M", writes: int = 6, backing: Path | None = None) -> Path:
    if backing is None:
        run("qemu-img", "create", "-q", "-f", "qcow2", path, virtual)
    else:
        run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, path, virtual)
    cmds: list[str] = []
    for i in range(writes):
        cmds += ["-c", f"write -P {0x10 + i} {i * 32}M 4M"]
    run("qemu-io", *cmds, path)
    return path


@pytest.fixture
def qcow2_image(srcdir: Path) -> Path:
    return make_qcow2(srcdir / "disk.qcow2")


@pytest.fixture
def raw_image(srcdir: Path) -> Path:
    return make_raw(srcdir / "disk.raw", 64 * MiB, seed=1)


# -- tasks in the background ---------------------------------------------------------


def add_in_background(agent: AgentProcess, body: dict[str, Any], task: str) -> dict[str, Any]:
    """Run add-image with ``taskuuid`` = ``task`` on a thread; the reply lands in ["reply"]."""
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["reply"] = agent.call("/backup/image/add", body, taskuuid=task)
        except httpx.HTTPError as e:  # the agent was killed under the request
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    out["thread"] = t
    return out


def downloading(agent: AgentProcess, task: str, at_least: int) -> bool:
    """The task is running and has reported at least ``at_least`` bytes."""
    try:
        st = agent.client.get(f"/tasks/{task}").json()
    except httpx.HTTPError:
        return False
    p = st.get("progress") or {}
    return st.get("state") == "running" and (p.get("done") or 0) >= at_least
