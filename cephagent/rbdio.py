"""Streaming data into and out of RBD images.

:class:`RbdWriter` keeps a window of asynchronous writes in flight (librbd's
``aio_write``), skips all-zero blocks so images stay sparse, and waits for
each completion at most the op timeout, so a stuck cluster surfaces as
``CEPH_TIMEOUT``. Writes go to a temporary image that is renamed into place
only when all data is in, so a failed or cancelled import leaves nothing
under the final name.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import rados
import rbd

from agentcore.task import TaskContext, detached_context
from cephagent.connection import map_error
from cephagent.errors import CephTimeout
from cephagent.pools import open_pool
from cephagent.rbdstore import RbdStore, open_image

log = logging.getLogger(__name__)

BLOCK = 4 << 20
WINDOW = 32
GROW_STEP = 1 << 30
TMP_SUFFIX = ".kvmcloud-part"


_ZERO = bytes(BLOCK)
#: a block of data: bytes, or a bytearray handed on without copying
Buffer = bytes | bytearray


def is_zero(buf: Buffer) -> bool:
    """True if ``buf`` holds only zero bytes."""
    if len(buf) == BLOCK:
        return buf == _ZERO
    return buf.count(0) == len(buf)


class RbdWriter:
    """Sequential writer into a new image ``pool/<name>.kvmcloud-part``."""

    def __init__(self, store: RbdStore, pool: str, name: str, size: int) -> None:
        self.store = store
        self.pool = pool
        self.name = name
        # unique per attempt: a part left by a killed agent keeps that agent's
        # watch until the OSD expires it, and must not block the next attempt
        self.tmp = f"{name}{TMP_SUFFIX}-{uuid.uuid4().hex[:8]}"
        self.size = size
        self.offset = 0
        self.written = 0
        self._sem = threading.Semaphore(WINDOW)
        self._errors: list[int] = []
        self._mu = threading.Lock()
        self._inflight = 0
        self._idle = threading.Condition(self._mu)
        self._ioctx: rados.Ioctx | None = None
        self._image: rbd.Image | None = None

    def open(self) -> RbdWriter:
        """Create and open the temporary image, after removing what earlier attempts left."""
        self.store.remove_leftovers(self.pool, self.name + TMP_SUFFIX)
        self.store.create(self.pool, self.tmp, max(self.size, 1), ["layering"])

        def run(h: rados.Rados) -> tuple[Any, Any]:
            io = h.open_ioctx(self.pool)
            return io, rbd.Image(io, self.tmp)
        self._ioctx, self._image = self.store.call(f"open {self.pool}/{self.tmp}", run)
        return self

    @property
    def op_timeout(self) -> float:
        return self.store.conn.runner.limits.op_timeout

    def write(self, data: Buffer) -> None:
        """Append ``data`` (any length) at the current offset."""
        assert self._image is not None
        end = self.offset + len(data)
        if end > self.size:
            self._grow(max(end, self.size + GROW_STEP))
        if not is_zero(data):
            self._submit(self.offset, data)
            self.written += len(data)
        self.offset = end

    def _submit(self, offset: int, data: Buffer) -> None:
        assert self._image is not None
        if not self._sem.acquire(timeout=self.store.conn.runner.bound(self.store.ctx, self.op_timeout)):
            raise CephTimeout("RBD writes did not complete in time", operation="aio_write")
        self._raise_failed()
        with self._mu:
            self._inflight += 1

        def done(completion: Any) -> None:
            rv = completion.get_return_value()
            with self._mu:
                if rv < 0:
                    self._errors.append(rv)
                self._inflight -= 1
                self._idle.notify_all()
            self._sem.release()

        self._image.aio_write(data, offset, done)

    def _raise_failed(self) -> None:
        if self._errors:
            code = -self._errors[0]
            raise map_error(OSError(code, f"RBD write to {self.pool}/{self.tmp} failed"))

    def _drain(self) -> None:
        limit = self.store.conn.runner.bound(self.store.ctx, self.op_timeout)
        with self._mu:
            if not self._idle.wait_for(lambda: self._inflight == 0, timeout=limit):
                raise CephTimeout("RBD writes did not complete in time", operation="aio_write")
        self._raise_failed()

    def _grow(self, size: int) -> None:
        self._drain()
        image = self._image
        assert image is not None
        self.store.call(f"resize {self.pool}/{self.tmp}", lambda h: image.resize(size))
        self.size = size

    def commit(self) -> None:
        """Wait for every write, trim to the bytes written, and rename into place."""
        self._drain()
        image = self._image
        assert image is not None
        final = self.offset

        def finish(h: rados.Rados) -> None:
            if image.size() != final:
                image.resize(final)
            image.flush()
            image.close()
        self.store.call(f"finish {self.pool}/{self.tmp}", finish)
        self._image = None
        self._close_ioctx()
        self.store.rename(self.pool, self.tmp, self.name)

    def abort(self) -> None:
        """Drop the temporary image (best effort; used on failure and cancel).

        The cleanup runs outside the task's cancel and deadline (which have
        usually fired by now), still bounded by the op timeout.
        """
        self.store = RbdStore(self.store.conn, detached_context(f"abort {self.tmp}"), self.store.gate)
        image, self._image = self._image, None
        try:
            self._drain()
        except Exception:
            log.warning("writes to %s/%s still pending while aborting", self.pool, self.tmp)
        try:
            if image is not None:
                self.store.call("close", lambda h: image.close())
            self._close_ioctx()
            self.store.delete(self.pool, self.tmp, purge_snapshots=True)
        except Exception:
            log.warning("could not remove %s/%s", self.pool, self.tmp, exc_info=True)

    def _close_ioctx(self) -> None:
        io, self._ioctx = self._ioctx, None
        if io is not None:
            io.close()


def write_file(store: RbdStore, src: Path, pool: str, name: str, ctx: TaskContext,
               stage: str = "import") -> int:
    """Write a local raw file into a new image ``pool/name`` (sparse); its size."""
    size = src.stat().st_size
    writer = RbdWriter(store, pool, name, size).open()
    try:
        with open(src, "rb") as f:
            while chunk := f.read(BLOCK):
                ctx.check()
                writer.write(chunk)
                ctx.progress(done=writer.offset, total=size, unit="bytes", stage=stage)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return size


def read_blocks(store: RbdStore, pool: str, name: str, snapshot: str | None = None,
                ) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of an image's blocks in order, each read bounded."""
    def open_(h: rados.Rados) -> tuple[Any, Any]:
        with open_pool(h, pool) as io, open_image(io, name, read_only=True, snapshot=snapshot):
            pass  # POOL_NOT_FOUND, IMAGE_NOT_FOUND, SNAPSHOT_NOT_FOUND, precisely
        io = h.open_ioctx(pool)
        try:
            return io, rbd.Image(io, name, snapshot=snapshot, read_only=True)
        except rbd.Error:
            io.close()
            raise
    io, image = store.call(f"open {pool}/{name}", open_)

    def reader(offset: int, n: int) -> Callable[[rados.Rados], bytes]:
        return lambda h: bytes(image.read(offset, n))

    try:
        size = image.size()
        for offset in range(0, size, BLOCK):
            data: bytes = store.call(f"read {pool}/{name}", reader(offset, min(BLOCK, size - offset)))
            yield offset, data
    finally:
        image.close()
        io.close()


def copy_image(ctx: TaskContext, store: RbdStore, src_pool: str, src_name: str, dst_pool: str,
               dst_name: str, snapshot: str | None = None) -> int:
    """Copy an image (or one snapshot of it) into a new flat, sparse image; its size.

    Progress in bytes; cancel and deadline stop it between blocks, and the
    partial copy (under the temporary name) is removed.
    """
    size = store.size(src_pool, src_name, snapshot)
    writer = RbdWriter(store, dst_pool, dst_name, size).open()
    try:
        for offset, data in read_blocks(store, src_pool, src_name, snapshot):
            ctx.check()
            writer.write(data)
            ctx.progress(done=offset + len(data), total=size, unit="bytes", stage="copy")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return size
