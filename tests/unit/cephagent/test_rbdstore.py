"""The image store's logic on in-process fakes of librbd's objects: flatten
progress and cancel, and the base snapshot made and protected once under
concurrent clones."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import rbd

from agentcore.errors import Cancelled
from agentcore.models import Progress
from agentcore.task import TaskContext
from cephagent import rbdstore
from cephagent.connection import CallRunner, Connection, Limits
from cephagent.rbdstore import RbdStore, SnapshotGate


class FakeHandle:
    def get_fsid(self) -> str:
        return "fsid-1"

    def get_instance_id(self) -> int:
        return 1


class FakeImage:
    """Just enough of rbd.Image: snapshots, protection, a slow flatten."""

    def __init__(self) -> None:
        self.snaps: dict[str, bool] = {}
        self.created = 0
        self.flatten_steps = 0
        self.mu = threading.Lock()

    def list_snaps(self) -> list[dict[str, Any]]:
        with self.mu:
            return [{"name": n, "size": 64} for n in self.snaps]

    def create_snap(self, name: str) -> None:
        time.sleep(0.01)  # widen the race window
        with self.mu:
            if name in self.snaps:
                raise rbd.ImageExists("exists", errno=errno.EEXIST)
            self.snaps[name] = False
            self.created += 1

    def is_protected_snap(self, name: str) -> bool:
        with self.mu:
            return self.snaps[name]

    def protect_snap(self, name: str) -> None:
        with self.mu:
            if self.snaps[name]:
                raise rbd.ImageBusy("busy", errno=errno.EBUSY)
            self.snaps[name] = True

    def flatten(self, on_progress: Any) -> None:
        for i in range(200):
            if on_progress(i, 200) < 0:
                raise rbd.OperationCanceled("canceled", errno=errno.ECANCELED)
            self.flatten_steps += 1
            time.sleep(0.005)


@pytest.fixture
def image(monkeypatch: pytest.MonkeyPatch) -> FakeImage:
    img = FakeImage()

    @contextmanager
    def fake_pool(h: Any, pool: str) -> Iterator[Any]:
        yield object()

    @contextmanager
    def fake_image(io: Any, name: str, **kw: Any) -> Iterator[FakeImage]:
        yield img

    monkeypatch.setattr(rbdstore, "open_pool", fake_pool)
    monkeypatch.setattr(rbdstore, "open_image", fake_image)
    return img


@pytest.fixture
def conn() -> Iterator[Connection]:
    runner = CallRunner(Limits(op_timeout=5, long_op_timeout=5), max_threads=16)
    yield Connection(FakeHandle(), runner, ("mons", "agent", None, None))  # type: ignore[arg-type]
    runner.shutdown()


def test_flatten_reports_progress_and_stops_on_cancel(image: FakeImage, conn: Connection) -> None:
    seen: list[Progress] = []
    ctx = TaskContext("t", "/ceph/volume/flatten", progress_sink=lambda c, p: seen.append(p))
    threading.Timer(0.2, ctx.cancel).start()
    with pytest.raises(Cancelled):
        RbdStore(conn, ctx).flatten("vols", "v")
    assert 0 < image.flatten_steps < 200
    assert seen and seen[0].stage == "flatten" and seen[0].unit == "objects" and seen[0].total == 200


def test_flatten_runs_to_the_end(image: FakeImage, conn: Connection) -> None:
    RbdStore(conn, TaskContext("t", "/x")).flatten("vols", "v")
    assert image.flatten_steps == 200


def test_concurrent_clones_make_and_protect_the_snapshot_once(image: FakeImage, conn: Connection) -> None:
    gate = SnapshotGate()
    sizes: list[int] = []
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            sizes.append(RbdStore(conn, TaskContext("t", "/x"), gate)
                         .ensure_protected_snapshot("images", "img", "base"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ensure) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert image.created == 1 and image.snaps == {"base": True}
    assert sizes == [64] * 10
    assert gate.known_size("fsid-1/images/img@base") == 64
    gate.forget("fsid-1/images/img@")
    assert gate.known_size("fsid-1/images/img@base") is None
