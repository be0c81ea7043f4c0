"""Cluster-wide operations for one task: monitor commands, facts, pools,
capacity and the heartbeat probe."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import rados
import rbd

from cephagent.connection import TaskCalls, map_error
from cephagent.errors import CephError, PoolNotFound
from cephagent.models import PoolCapacity, PoolState


@contextmanager
def open_pool(handle: rados.Rados, pool: str) -> Iterator[rados.Ioctx]:
    """An I/O context on ``pool``; ``POOL_NOT_FOUND`` if there is none."""
    try:
        ioctx = handle.open_ioctx(pool)
    except rados.ObjectNotFound:
        raise PoolNotFound(f"no pool {pool!r}", pool=pool) from None
    try:
        yield ioctx
    finally:
        ioctx.close()



class PoolStore(TaskCalls):
    """Pools and the cluster as a whole, for one task."""

    def mon_command(self, prefix: str, **args: Any) -> Any:
        """A monitor command answering JSON."""
        def run(h: rados.Rados) -> Any:
            cmd = json.dumps({"prefix": prefix, "format": "json", **args})
            ret, out, status = h.mon_command(cmd, b"", timeout=int(self.conn.runner.limits.op_timeout))
            if ret != 0:
                raise map_error(OSError(-ret, f"{prefix}: {status or os.strerror(-ret)}"),
                                not_found=CephError(f"{prefix}: {status}"), command=prefix)
            return json.loads(out) if out.strip() else {}
        return self.call(prefix, run)

    def facts(self) -> dict[str, Any]:
        version = self.mon_command("version").get("version", "")
        monmap = self.mon_command("mon dump")
        monitors = [m.get("public_addr", m.get("addr", "")).split("/")[0] for m in monmap.get("mons", [])]
        libv = self.call("version", lambda h: str(h.version()))
        return {"fsid": self.conn.fsid, "ceph_version": version, "monitors": monitors,
                "librados_version": libv}

    def pool_state(self, name: str) -> PoolState:
        def run(h: rados.Rados) -> PoolState:
            if not h.pool_exists(name):
                return PoolState(name=name, exists=False)
            with open_pool(h, name) as io:
                apps = io.application_list()
            return PoolState(name=name, exists=True, rbd_enabled="rbd" in apps)
        result: PoolState = self.call(f"check pool {name}", run)
        return result

    def init_pool(self, name: str, pg_num: int, predefined: bool) -> PoolState:
        """Create the pool unless it exists or is predefined; enable rbd on it."""
        state = self.pool_state(name)
        created = False
        if not state.exists:
            if predefined:
                raise PoolNotFound(f"predefined pool {name!r} does not exist", pool=name)
            self.mon_command("osd pool create", pool=name, pg_num=pg_num)  # 0 if it exists
            created = True
        if not state.rbd_enabled:
            self.mon_command("osd pool application enable", pool=name, app="rbd")
            self.call(f"init rbd on {name}", lambda h: _rbd_pool_init(h, name))
        return PoolState(name=name, exists=True, created=created, rbd_enabled=True)

    def capacity(self, pools: list[str]) -> tuple[int | None, int | None, list[PoolCapacity]]:
        df = self.mon_command("df")
        stats = df.get("stats", {})
        by_name = {p["name"]: p.get("stats", {}) for p in df.get("pools", [])}
        caps = []
        for name in pools:
            if name not in by_name:
                raise PoolNotFound(f"no pool {name!r}", pool=name)
            s = by_name[name]
            caps.append(PoolCapacity(name=name, used_bytes=int(s.get("bytes_used", 0)),
                                     objects=int(s.get("objects", 0)),
                                     available_bytes=int(s.get("max_avail", 0))))
        total = stats.get("total_bytes")
        avail = stats.get("total_avail_bytes")
        return (int(total) if total is not None else None,
                int(avail) if avail is not None else None, caps)

    def ping(self, pool: str, obj: str) -> None:
        """Write, read back and remove a heartbeat object."""
        payload = f"kvmcloud-ping {self.ctx.task_uuid}".encode()

        def run(h: rados.Rados) -> None:
            with open_pool(h, pool) as io:
                io.write_full(obj, payload)
                back = io.read(obj, len(payload) + 16)
                if back != payload:
                    raise CephError("the heartbeat object read back differs", pool=pool)
                io.remove_object(obj)
        self.call(f"ping {pool}", run)

def _rbd_pool_init(h: rados.Rados, pool: str) -> None:
    with open_pool(h, pool) as io:
        try:
            rbd.RBD().pool_init(io, False)
        except rbd.PermissionError:
            # pool_init writes pool metadata; a user limited to images can do without it
            pass


