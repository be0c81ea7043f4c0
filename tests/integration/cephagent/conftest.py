"""Fixtures of the cephagent integration tests: the real single-node Ceph
cluster of scripts/components/30-ceph.sh, a real agent process connected as
the least-privilege ``client.agent``, and an admin handle for checking what
the agent did (and cleaning up)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rados
import rbd

from tests.support.agents import AgentProcess, CallbackReceiver, python_agent

MiB = 1024 * 1024


@dataclass
class Ceph:
    """The test cluster's facts and an admin connection."""

    env: dict[str, str]
    admin: rados.Rados
    made_pools: list[str] = field(default_factory=list)

    @property
    def monitors(self) -> list[str]:
        return self.env["CEPH_MONITORS"].split(",")

    def cluster(self, user: str | None = None, keyring: str | None = None, **extra: Any) -> dict[str, Any]:
        """The ``cluster`` part of a command body."""
        body: dict[str, Any] = {"monitors": self.monitors, "user": user or self.env["CEPH_AGENT_USER"]}
        if "keyRef" not in extra:
            body["keyring"] = keyring or self.env["CEPH_AGENT_KEYRING"]
        body.update(extra)
        return body

    def images(self, pool: str) -> list[str]:
        with self.admin.open_ioctx(pool) as io:
            return sorted(rbd.RBD().list(io))

    def read(self, pool: str, name: str, offset: int, length: int, snapshot: str | None = None) -> bytes:
        with self.admin.open_ioctx(pool) as io, rbd.Image(io, name, snapshot=snapshot, read_only=True) as img:
            return bytes(img.read(offset, length))

    def write(self, pool: str, name: str, offset: int, data: bytes) -> None:
        with self.admin.open_ioctx(pool) as io, rbd.Image(io, name) as img:
            img.write(data, offset)

    def pool_exists(self, name: str) -> bool:
        return bool(self.admin.pool_exists(name))

    def remove_pool(self, name: str) -> None:
        if self.admin.pool_exists(name):
            cmd = {"prefix": "osd pool rm", "pool": name, "pool2": name,
                   "yes_i_really_really_mean_it": True}
            self.admin.mon_command(json.dumps(cmd), b"", timeout=30)


@pytest.fixture(scope="session")
def ceph(component_env: Any) -> Iterator[Ceph]:
    env = component_env("ceph")
    admin = rados.Rados(conffile=env["CEPH_CONF"], name="client.admin")
    admin.connect(timeout=10)
    c = Ceph(env, admin)
    yield c
    for p in c.made_pools:
        c.remove_pool(p)
    admin.shutdown()


@pytest.fixture(scope="session")
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def agent(ceph: Ceph, receiver: CallbackReceiver, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[AgentProcess]:
    """A real cephagent process; its key reference ``agent-key`` is client.agent's key."""
    work = tmp_path_factory.mktemp("cephagent")
    secrets = work / "secrets"
    secrets.mkdir(mode=0o700)
    shutil.copy(ceph.env["CEPH_AGENT_KEY_FILE"], secrets / "agent-key")
    proc = AgentProcess(
        python_agent("cephagent.app"), work, controller_urls=[receiver.url],
        extra={"keyring_dirs": [ceph.env["CEPH_DIR"]], "secrets_dir": secrets,
               "op_timeout": 15, "connect_timeout": 3, "workers": 16,
               "download_allow_local": True},  # the test image servers listen on 127.0.0.1
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def pools(ceph: Ceph, agent: AgentProcess) -> dict[str, str]:
    """A backup (images) and a primary (volumes) pool, initialised by the agent."""
    tag = uuid.uuid4().hex[:6]
    names = {"images": f"it-{tag}-images", "volumes": f"it-{tag}-volumes"}
    ceph.made_pools.extend(names.values())
    reply = agent.call("/ceph/pools/init", {
        "cluster": ceph.cluster(), "pools": [{"name": n} for n in names.values()]})
    assert reply["success"], reply
    return names


def call(agent: AgentProcess, ceph: Ceph, path: str, **body: Any) -> dict[str, Any]:
    """A synchronous cephagent command as client.agent."""
    body.setdefault("cluster", ceph.cluster())
    return agent.call(path, body)


def error_code(reply: dict[str, Any]) -> str:
    assert reply["success"] is False, reply
    return str(reply["error"]["code"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_raw(path: Path, size: int, seed: int = 7) -> bytes:
    """A raw disk image of ``size`` bytes: patterned data with all-zero stretches."""
    block = bytes((i * seed + 13) % 251 for i in range(MiB))
    data = bytearray(size)
    for off in range(0, size, 8 * MiB):
        n = min(MiB, size - off)
        data[off:off + n] = block[:n]
    path.write_bytes(bytes(data))
    return bytes(data)
