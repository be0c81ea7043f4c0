"""The RBD writer cleans up its partial image even after the task was cancelled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentcore.task import TaskContext
from cephagent.connection import CallRunner, Connection, Limits
from cephagent.rbdio import RbdWriter
from cephagent.rbdstore import RbdStore
from tests.unit.cephagent.test_rbdstore import FakeHandle


@pytest.fixture
def conn() -> Iterator[Connection]:
    runner = CallRunner(Limits(op_timeout=5), max_threads=4)
    yield Connection(FakeHandle(), runner, ("mons", "agent", None, None))  # type: ignore[arg-type]
    runner.shutdown()


@pytest.mark.parametrize("stop", ["cancel", "expire"])
def test_abort_removes_the_partial_image_after_cancel_or_deadline(
        conn: Connection, monkeypatch: pytest.MonkeyPatch, stop: str) -> None:
    deleted: list[str] = []

    def slow_delete(self: RbdStore, pool: str, name: str, purge_snapshots: bool) -> bool:
        def run(h: Any) -> bool:
            time.sleep(0.3)  # longer than one wait step: a cancelled wait would give up
            deleted.append(f"{pool}/{name}")
            return True
        return bool(self.call("delete", run))

    monkeypatch.setattr(RbdStore, "delete", slow_delete)
    ctx = TaskContext("t", "/ceph/image/add")
    getattr(ctx, stop)()
    RbdWriter(RbdStore(conn, ctx), "images", "img", 10).abort()
    assert len(deleted) == 1 and deleted[0].startswith("images/img.kvmcloud-part-")
