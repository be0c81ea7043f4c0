"""A second backup storage on another "host": the sshd of a network namespace
(the nshost component), reached over a veth and a bridge, not loopback."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpbackup.client import StoreClient
from sftpbackup.sftpcli import SftpTarget
from sftpbackup.store import ImageStore
from tests.integration.sftpbackup.conftest import MiB, StoreDir, changed_chunks, make_raw, sha256_of
from tests.support.agents import AgentProcess, python_agent
from tests.support.httpserver import FileServer

pytestmark = [pytest.mark.sftp, pytest.mark.netns]


@pytest.fixture
def nshost(component_env: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    env = component_env("nshost")
    known = tmp_path / "known_hosts"
    known.write_text(f"{env['NSHOST_2_ADDR']} {env['NSHOST_2_HOST_KEY']}\n")
    root = Path(env["NSHOST_2_ROOT"]) / f"bs-{uuid.uuid4().hex[:10]}"
    yield {"addr": env["NSHOST_2_ADDR"], "key": Path(env["NSHOST_KEY"]), "known": known, "root": root}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def agent_ns(tmp_path: Path, nshost: dict[str, Any], files: FileServer) -> Iterator[AgentProcess]:
    (tmp_path / "agent").mkdir()
    a = AgentProcess(python_agent("sftpbackup.app"), tmp_path / "agent", extra={
        "sftp_key_file": nshost["key"], "sftp_known_hosts": nshost["known"], "file_url_roots": [files.root],
        "download_allow_local": True,
    })
    yield a.start()
    a.stop()


def test_push_and_pull_with_a_store_on_another_host(
    agent_ns: AgentProcess, new_store_dir: Any, nshost: dict[str, Any], files: FileServer,
    srcdir: Path, tmp_path: Path,
) -> None:
    a: StoreDir = new_store_dir("ns-a")
    c: StoreDir = new_store_dir("ns-c")
    for s in (a, c):
        assert agent_ns.call("/backup/connect", s.body())["success"]
    v1 = make_raw(srcdir / "v1.raw", 64 * MiB, seed=81, fill=1.0)
    v2 = srcdir / "v2.raw"
    touched = changed_chunks(v1, v2, 0.05, seed=82)
    for name, src in (("v1", v1), ("v2", v2)):
        assert agent_ns.call("/backup/image/add", a.body(imageUuid=name, url=files.url(src)))["success"]
    remote = {"host": nshost["addr"], "port": 22, "user": "root", "storeRoot": str(nshost["root"])}
    first = agent_ns.call("/backup/image/push", a.body(imageUuid="v1", remote=remote))
    assert first["success"], first
    assert first["bytesSent"] == 64 * MiB
    second = agent_ns.call("/backup/image/push", a.body(imageUuid="v2", remote=remote))
    assert second["chunksSent"] == touched
    assert ImageStore(nshost["root"]).verify().ok
    # the other site's copy comes back into a third store, verified chunk by chunk
    back = agent_ns.call("/backup/image/pull", c.body(imageUuid="v2", remote=remote, sha256=sha256_of(v2)))
    assert back["success"], back
    assert back["bytesSent"] == 64 * MiB
    target = SftpTarget(nshost["addr"], 22, "root", str(nshost["root"]))
    with StoreClient(target, nshost["key"], nshost["known"]) as client:
        got = client.fetch("v2", tmp_path / "v2.raw")
    assert got.digest == sha256_of(v2) == sha256_of(tmp_path / "v2.raw")
    assert agent_ns.call("/backup/verify", c.body())["ok"] is True
