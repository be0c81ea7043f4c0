"""RBD images, snapshots and clones over one connection.

Every method is one bounded call into the cluster (see
:mod:`cephagent.connection`), so a stuck cluster fails the command with
``CEPH_TIMEOUT`` instead of hanging it. Long work (flatten, copy) reports
progress and stops on cancel through librbd's progress callback.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import rados
import rbd

from agentcore.errors import InUse, InvalidRequest
from agentcore.task import TaskContext
from cephagent.connection import Connection, TaskCalls
from cephagent.errors import (
    CephError,
    HasChildren,
    HasSnapshots,
    ImageNotFound,
    SnapshotExists,
    SnapshotNotFound,
    SnapshotProtected,
)
from cephagent.models import ParentRef, SnapshotInfo
from cephagent.pools import open_pool

log = logging.getLogger(__name__)

FEATURES = {
    "layering": rbd.RBD_FEATURE_LAYERING,
    "exclusive-lock": rbd.RBD_FEATURE_EXCLUSIVE_LOCK,
    "object-map": rbd.RBD_FEATURE_OBJECT_MAP,
    "fast-diff": rbd.RBD_FEATURE_FAST_DIFF,
    "deep-flatten": rbd.RBD_FEATURE_DEEP_FLATTEN,
}


def feature_bits(names: list[str]) -> int:
    bits = 0
    for n in names:
        bits |= FEATURES[n]
    if bits & FEATURES["object-map"] and not bits & FEATURES["exclusive-lock"]:
        raise InvalidRequest("object-map needs exclusive-lock", field="features")
    if bits & FEATURES["fast-diff"] and not bits & FEATURES["object-map"]:
        raise InvalidRequest("fast-diff needs object-map", field="features")
    return bits


def feature_names(bits: int) -> list[str]:
    return [n for n, b in FEATURES.items() if bits & b]


@contextmanager
def open_image(ioctx: rados.Ioctx, name: str, *, read_only: bool = False,
               snapshot: str | None = None) -> Iterator[rbd.Image]:
    try:
        image = rbd.Image(ioctx, name, snapshot=snapshot, read_only=read_only)
    except rbd.ImageNotFound:
        if snapshot is not None and _image_exists(ioctx, name):
            raise SnapshotNotFound(f"no snapshot {snapshot!r} of {name!r}", snapshot=snapshot) from None
        raise ImageNotFound(f"no image {ioctx.name}/{name}", pool=ioctx.name, name=name) from None
    try:
        yield image
    finally:
        image.close()


def _image_exists(ioctx: rados.Ioctx, name: str) -> bool:
    try:
        rbd.Image(ioctx, name, read_only=True).close()
        return True
    except rbd.ImageNotFound:
        return False


class SnapshotGate:
    """Per-process knowledge of base snapshots: locks keyed by snapshot, so that
    concurrent clones of one image create and protect it once, and a short-lived
    record of snapshots seen protected, so that a clone needs no extra round
    trips. A clone that fails on a stale record re-checks and retries once."""

    TTL = 60.0

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._known: dict[str, tuple[float, int]] = {}
        self._mu = threading.Lock()

    def lock(self, key: str) -> threading.Lock:
        with self._mu:
            return self._locks.setdefault(key, threading.Lock())

    def known_size(self, key: str) -> int | None:
        """The size of a snapshot seen protected within :attr:`TTL` seconds."""
        with self._mu:
            hit = self._known.get(key)
        if hit is None or time.monotonic() - hit[0] > self.TTL:
            return None
        return hit[1]

    def remember(self, key: str, size: int) -> None:
        with self._mu:
            self._known[key] = (time.monotonic(), size)

    def forget(self, prefix: str) -> None:
        """Drop the records of an image's snapshots (``<fsid>/<pool>/<name>@``)."""
        with self._mu:
            for k in [k for k in self._known if k.startswith(prefix)]:
                del self._known[k]


class RbdStore(TaskCalls):
    """Operations on the RBD images and snapshots of one cluster, for one task."""

    def __init__(self, conn: Connection, ctx: TaskContext, gate: SnapshotGate | None = None) -> None:
        super().__init__(conn, ctx)
        self.gate = gate or SnapshotGate()

    # -- images -----------------------------------------------------------

    def create(self, pool: str, name: str, size: int, features: list[str],
               skip_if_existing: bool = False) -> bool:
        """Create an empty image; False if it existed and ``skip_if_existing``."""
        bits = feature_bits(features)

        def run(h: rados.Rados) -> bool:
            with open_pool(h, pool) as io:
                try:
                    rbd.RBD().create(io, name, size, old_format=False, features=bits)
                except rbd.ImageExists:
                    if skip_if_existing:
                        return False
                    raise
            return True
        return bool(self.call(f"create {pool}/{name}", run))

    def info(self, pool: str, name: str, *, usage: bool = True) -> dict[str, Any]:
        """Size, usage, parent, snapshots, features and watchers of an image."""
        def run(h: rados.Rados) -> dict[str, Any]:
            own = h.get_instance_id()
            with open_pool(h, pool) as io, open_image(io, name, read_only=True) as img:
                size = img.size()
                try:
                    p_pool, p_name, p_snap = img.parent_info()
                    parent: ParentRef | None = ParentRef(pool=p_pool, name=p_name, snapshot=p_snap)
                except rbd.ImageNotFound:
                    parent = None
                snaps = [SnapshotInfo(name=s["name"], size=s["size"],
                                      protected=img.is_protected_snap(s["name"]))
                         for s in img.list_snaps()]
                watchers = [w for w in img.watchers_list() if w.get("id") != own]
                actual = _allocated(img, size) if usage else None
                return {"install_path": f"{pool}/{name}", "pool": pool, "name": name, "size": size,
                        "actual_size": actual, "parent": parent, "snapshots": snaps,
                        "features": feature_names(img.features()), "watchers": len(watchers)}
        result: dict[str, Any] = self.call(f"info {pool}/{name}", run)
        return result

    def exists(self, pool: str, name: str) -> bool:
        def run(h: rados.Rados) -> bool:
            with open_pool(h, pool) as io:
                return _image_exists(io, name)
        return bool(self.call(f"stat {pool}/{name}", run))

    def watchers(self, pool: str, name: str) -> list[dict[str, Any]]:
        """Clients holding the image open, other than this agent."""
        def run(h: rados.Rados) -> list[dict[str, Any]]:
            own = h.get_instance_id()
            with open_pool(h, pool) as io, open_image(io, name, read_only=True) as img:
                return [dict(w) for w in img.watchers_list() if w.get("id") != own]
        result: list[dict[str, Any]] = self.call(f"watchers {pool}/{name}", run)
        return result

    def refuse_if_in_use(self, pool: str, name: str) -> None:
        w = self.watchers(pool, name)
        if w:
            raise InUse(f"{pool}/{name} is open by {len(w)} client(s)", installPath=f"{pool}/{name}",
                        watchers=[x.get("addr") for x in w])

    def delete(self, pool: str, name: str, purge_snapshots: bool) -> bool:
        """Remove an image; False if it was already gone (idempotent)."""
        self.gate.forget(self._snap_key(pool, name))
        try:
            self.refuse_if_in_use(pool, name)
        except ImageNotFound:
            return False

        def run(h: rados.Rados) -> bool:
            with open_pool(h, pool) as io:
                try:
                    with open_image(io, name) as img:
                        snaps = [s["name"] for s in img.list_snaps()]
                        if snaps and not purge_snapshots:
                            raise HasSnapshots(installPath=f"{pool}/{name}", snapshots=snaps)
                        for s in snaps:
                            _drop_snapshot(img, s, pool, name)
                    rbd.RBD().remove(io, name)
                except ImageNotFound:
                    return False
                except rbd.ImageNotFound:
                    return False
            return True
        return bool(self.call(f"delete {pool}/{name}", run, long=True))

    def resize(self, pool: str, name: str, size: int, allow_shrink: bool) -> None:
        def run(h: rados.Rados) -> None:
            with open_pool(h, pool) as io, open_image(io, name) as img:
                if size < img.size() and not allow_shrink:
                    raise InvalidRequest("shrinking needs allowShrink", field="size", current=img.size())
                img.resize(size)
        self.call(f"resize {pool}/{name}", run)

    def clone(self, src_pool: str, src_name: str, src_snap: str, pool: str, name: str,
              features: list[str], size: int | None) -> dict[str, Any]:
        """Clone a protected snapshot, creating and protecting it once if missing.

        Answers what :meth:`info` would for the new clone, without reading it back.
        """
        bits = feature_bits(features)
        key = self._snap_key(src_pool, src_name, src_snap)
        snap_size = self.gate.known_size(key)
        try:
            final = self._clone(src_pool, src_name, src_snap, pool, name, bits, size,
                                snap_size if snap_size is not None
                                else self.ensure_protected_snapshot(src_pool, src_name, src_snap))
        except (ImageNotFound, CephError):
            if snap_size is None:
                raise
            self.gate.forget(key)  # the record was stale: check again, once
            final = self._clone(src_pool, src_name, src_snap, pool, name, bits, size,
                                self.ensure_protected_snapshot(src_pool, src_name, src_snap))
        return {"install_path": f"{pool}/{name}", "pool": pool, "name": name, "size": final,
                "actual_size": 0, "parent": ParentRef(pool=src_pool, name=src_name, snapshot=src_snap),
                "snapshots": [], "features": feature_names(bits), "watchers": 0}

    def _clone(self, src_pool: str, src_name: str, src_snap: str, pool: str, name: str, bits: int,
               size: int | None, snap_size: int) -> int:
        def run(h: rados.Rados) -> int:
            with open_pool(h, src_pool) as pio, open_pool(h, pool) as cio:
                try:
                    rbd.RBD().clone(pio, src_name, src_snap, cio, name, features=bits)
                except rbd.ImageNotFound:
                    raise ImageNotFound(f"no image {src_pool}/{src_name}@{src_snap}",
                                        pool=src_pool, name=src_name, snapshot=src_snap) from None
                if size is not None and size > snap_size:
                    with open_image(cio, name) as img:
                        img.resize(size)
                    return size
            return snap_size
        final: int = self.call(f"clone {src_pool}/{src_name}@{src_snap} to {pool}/{name}", run)
        return final

    def _snap_key(self, pool: str, name: str, snap: str = "") -> str:
        return f"{self.conn.fsid}/{pool}/{name}@{snap}"

    def ensure_protected_snapshot(self, pool: str, name: str, snap: str) -> int:
        """Create and protect ``pool/name@snap`` unless it is; the snapshot's size.

        The common case (already protected) is one read-only open; concurrent
        callers in this process serialise on the snapshot, and a race with another
        agent is settled by librbd (EEXIST on create, EBUSY on protect).
        """
        def check(h: rados.Rados) -> int | None:
            with open_pool(h, pool) as io, open_image(io, name, read_only=True) as img:
                for s in img.list_snaps():
                    if s["name"] == snap and img.is_protected_snap(snap):
                        return int(s["size"])
            return None

        def make(h: rados.Rados) -> int:
            with open_pool(h, pool) as io, open_image(io, name) as img:
                if not any(s["name"] == snap for s in img.list_snaps()):
                    try:
                        img.create_snap(snap)
                    except rbd.ImageExists:  # another agent was first
                        pass
                if not img.is_protected_snap(snap):
                    try:
                        img.protect_snap(snap)
                    except rbd.ImageBusy:  # protected meanwhile by another agent
                        pass
                return int(next(s["size"] for s in img.list_snaps() if s["name"] == snap))

        key = self._snap_key(pool, name, snap)
        size = self.call(f"check {pool}/{name}@{snap}", check)
        if size is None:
            with self.gate.lock(key):
                size = self.call(f"check {pool}/{name}@{snap}", check)
                if size is None:
                    size = self.call(f"protect {pool}/{name}@{snap}", make)
        self.gate.remember(key, int(size))
        return int(size)

    def flatten(self, pool: str, name: str) -> None:
        """Copy the parent's data into the clone, with progress; cancel aborts it."""
        ctx = self.ctx

        def progress(done: int, total: int) -> int:
            if ctx.stopped:
                return -errno.ECANCELED
            ctx.progress(done=done, total=total, unit="objects", stage="flatten")
            return 0

        def run(h: rados.Rados) -> None:
            with open_pool(h, pool) as io, open_image(io, name) as img:
                try:
                    img.flatten(on_progress=progress)
                except rbd.InvalidArgument:  # no parent: nothing to do
                    pass
        self.call(f"flatten {pool}/{name}", run, long=True)
        ctx.check()

    def size(self, pool: str, name: str, snapshot: str | None = None) -> int:
        def run(h: rados.Rados) -> int:
            with open_pool(h, pool) as io, open_image(io, name, read_only=True, snapshot=snapshot) as img:
                return int(img.size())
        return int(self.call(f"size {pool}/{name}", run))

    def remove_leftovers(self, pool: str, prefix: str) -> list[str]:
        """Delete images named ``prefix*`` (partial imports of killed agents), best
        effort: one still held by a dead client's watch stays until a later try."""
        names = self.call(f"list {pool}", lambda h: _list_images(h, pool))
        removed = []
        for n in names:
            if n.startswith(prefix):
                try:
                    self.delete(pool, n, purge_snapshots=True)
                    removed.append(n)
                except InUse:
                    log.info("leftover %s/%s is still watched; left for a later attempt", pool, n)
        return removed

    def rename(self, pool: str, src: str, dst: str) -> None:
        def run(h: rados.Rados) -> None:
            with open_pool(h, pool) as io:
                rbd.RBD().rename(io, src, dst)
        self.call(f"rename {pool}/{src}", run)

    # -- snapshots ----------------------------------------------------------

    def snapshot(self, pool: str, name: str, snap: str, op: str, *, skip_if_existing: bool = False,
                 ) -> dict[str, Any]:
        """``create``, ``delete``, ``protect``, ``unprotect`` or ``rollback`` a snapshot."""
        if op == "rollback":
            self.refuse_if_in_use(pool, name)
        if op in ("delete", "unprotect"):
            self.gate.forget(self._snap_key(pool, name))

        def run(h: rados.Rados) -> dict[str, Any]:
            with open_pool(h, pool) as io, open_image(io, name) as img:
                names = {s["name"] for s in img.list_snaps()}
                existed = snap in names
                if op == "create":
                    if existed and not skip_if_existing:
                        raise SnapshotExists(f"snapshot {pool}/{name}@{snap} exists", snapshot=snap)
                    if not existed:
                        img.create_snap(snap)
                    return {"existed": existed, "protected": img.is_protected_snap(snap)}
                if op == "delete":
                    if existed:
                        if img.is_protected_snap(snap):
                            raise SnapshotProtected(snapshot=snap)
                        img.remove_snap(snap)
                    return {"existed": existed, "protected": False}
                if not existed:
                    raise SnapshotNotFound(f"no snapshot {pool}/{name}@{snap}", snapshot=snap)
                _SNAP_OPS[op](img, snap, pool, name)
                return {"existed": True, "protected": img.is_protected_snap(snap)}
        result: dict[str, Any] = self.call(f"snapshot {op} {pool}/{name}@{snap}", run,
                                            long=op == "rollback")
        return result


def _list_images(h: rados.Rados, pool: str) -> list[str]:
    with open_pool(h, pool) as io:
        return [str(n) for n in rbd.RBD().list(io)]


def _protect(img: rbd.Image, snap: str, pool: str, name: str) -> None:
    if not img.is_protected_snap(snap):
        img.protect_snap(snap)


def _unprotect(img: rbd.Image, snap: str, pool: str, name: str) -> None:
    if img.is_protected_snap(snap):
        img.set_snap(snap)
        children = list(img.list_children())
        img.set_snap(None)
        if children:
            raise HasChildren(snapshot=snap, children=[f"{p}/{c}" for p, c in children])
        img.unprotect_snap(snap)


def _rollback(img: rbd.Image, snap: str, pool: str, name: str) -> None:
    img.rollback_to_snap(snap)


_SNAP_OPS: dict[str, Callable[[rbd.Image, str, str, str], None]] = {
    "protect": _protect, "unprotect": _unprotect, "rollback": _rollback,
}


def _drop_snapshot(img: rbd.Image, snap: str, pool: str, name: str) -> None:
    _unprotect(img, snap, pool, name)
    img.remove_snap(snap)


def _allocated(img: rbd.Image, size: int) -> int | None:
    """Bytes of the image's own allocated objects (without the parent's)."""
    total = 0

    def cb(offset: int, length: int, exists: bool) -> None:
        nonlocal total
        if exists:
            total += length

    try:
        img.diff_iterate(0, size, None, cb, include_parent=False, whole_object=True)
    except rbd.Error:
        return None
    return total
