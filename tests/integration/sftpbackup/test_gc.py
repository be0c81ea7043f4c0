"""Garbage collection on a store the agent is adding to."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from sftpbackup.store import ImageStore
from tests.integration.sftpbackup.conftest import (
    MiB,
    Sshd,
    StoreDir,
    add_in_background,
    change_fraction,
    downloading,
    make_raw,
    sha256_of,
)
from tests.support.agents import AgentProcess, wait_until
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.sftp


def test_gc_after_deletes_leaves_every_remaining_image_verifiable(
    agent: AgentProcess, store_a: StoreDir, sshd: Sshd, files: FileServer, srcdir: Path, tmp_path: Path,
) -> None:
    v1 = make_raw(srcdir / "v1.raw", 32 * MiB, seed=51, fill=1.0)
    v2 = change_fraction(v1, srcdir / "v2.raw", 0.25, seed=52)
    v3 = make_raw(srcdir / "v3.raw", 16 * MiB, seed=53, fill=1.0)
    for name, src in (("v1", v1), ("v2", v2), ("v3", v3)):
        assert agent.call("/backup/image/add", store_a.body(imageUuid=name, url=files.url(src)))["success"]
    store = ImageStore(store_a.path)
    only_v1 = set(store.read_manifest("v1").unique_digests()) - set(store.read_manifest("v2").unique_digests())
    only_v3 = set(store.read_manifest("v3").unique_digests())
    assert agent.call("/backup/image/delete", store_a.body(imageUuid="v1"))["deleted"] is True
    assert agent.call("/backup/image/delete", store_a.body(imageUuid="v3"))["deleted"] is True
    assert agent.call("/backup/image/delete", store_a.body(imageUuid="v3"))["deleted"] is False
    # within the grace period nothing goes
    kept = agent.call("/backup/gc", store_a.body())
    assert kept["chunksRemoved"] == 0
    gc = agent.call("/backup/gc", store_a.body(graceSeconds=0))
    assert gc["chunksRemoved"] == len(only_v1) + len(only_v3)
    assert gc["bytesFreed"] == (len(only_v1) + len(only_v3)) * MiB
    assert {p.name for p in store_a.chunk_files()} == set(store.read_manifest("v2").unique_digests())
    v = agent.call("/backup/verify", store_a.body())
    assert v["ok"] is True and v["imagesChecked"] == 1
    with sshd.client(store_a.rel) as c:
        assert c.fetch("v2", tmp_path / "v2.raw").digest == sha256_of(v2)


def test_gc_while_an_image_is_being_added(
    agent: AgentProcess, store_a: StoreDir, files: FileServer, srcdir: Path,
) -> None:
    base = make_raw(srcdir / "base.raw", 16 * MiB, seed=61, fill=1.0)
    assert agent.call("/backup/image/add", store_a.body(imageUuid="base", url=files.url(base)))["success"]
    assert agent.call("/backup/image/delete", store_a.body(imageUuid="base"))["deleted"]
    # the new image shares most chunks with the deleted one: GC must not take them from under it
    img = change_fraction(base, srcdir / "new.raw", 0.1, seed=62)
    files.rate[files.url(img).split("/", 3)[3]] = 4 * MiB
    task = str(uuid.uuid4())
    bg = add_in_background(agent, store_a.body(imageUuid="new", url=files.url(img)), task)
    wait_until(lambda: downloading(agent, task, 2 * MiB), timeout=30, what="download progress")
    during = agent.call("/backup/gc", store_a.body(graceSeconds=0, staleSeconds=0))
    assert during["success"]
    bg["thread"].join(60)
    reply: dict[str, Any] = bg["reply"]
    assert reply["success"], reply
    assert list((store_a.path / "tmp").iterdir()) == []
    after = agent.call("/backup/verify", store_a.body())
    assert after["ok"] is True and after["imagesChecked"] == 1
