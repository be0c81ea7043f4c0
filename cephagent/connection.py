"""Connections to Ceph clusters, and the bounded call that every binding
call goes through.

librados and librbd calls can block for a long time when monitors or OSDs
are gone. Two guards stop that from hanging an agent thread: the client-side
timeouts in the Rados config (``rados_osd_op_timeout``, ``rados_mon_op_timeout``,
``client_mount_timeout``) make librados give up eventually, and every call
runs in a worker of a dedicated pool while the task waits for it at most
its bound (the configured op timeout, and always short of the task's
deadline), then fails with ``CEPH_TIMEOUT``. A connection whose call timed
out is dropped from the cache and shut down once its last call returns; the
next command reconnects.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import rados
import rbd

from agentcore.errors import AgentError, Cancelled, InUse
from agentcore.task import TaskContext
from cephagent.errors import (
    CephError,
    CephPermissionDenied,
    CephTimeout,
    CephUnreachable,
    CredentialRefused,
    FsidMismatch,
    HasSnapshots,
    ImageExists,
    ImageNotFound,
)
from cephagent.models import ClusterRef

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL = 0.05


@dataclass(frozen=True)
class Limits:
    """Time bounds of calls into the cluster, in seconds."""

    op_timeout: float = 30.0
    connect_timeout: float = 10.0
    long_op_timeout: float = 3600.0


_BY_ERRNO: dict[int, Callable[[str, dict[str, Any]], AgentError]] = {
    errno.EPERM: lambda t, d: CephPermissionDenied(f"permission denied: {t}", **d),
    errno.EACCES: lambda t, d: CephPermissionDenied(f"permission denied: {t}", **d),
    errno.ETIMEDOUT: lambda t, d: CephTimeout(f"timed out in librados: {t}", **d),
    errno.EEXIST: lambda t, d: ImageExists(t, **d),
    errno.EBUSY: lambda t, d: InUse(t, **d),
    errno.ENOTEMPTY: lambda t, d: HasSnapshots(t, **d),
    errno.ECANCELED: lambda t, d: Cancelled(),
    errno.ESHUTDOWN: lambda t, d: CephUnreachable(t, **d),
    errno.ENOTCONN: lambda t, d: CephUnreachable(t, **d),
}


def map_error(e: Exception, not_found: AgentError | None = None, **details: Any) -> AgentError:
    """The agent error for an exception raised by librados or librbd."""
    if isinstance(e, AgentError):
        return e
    code = getattr(e, "errno", None)
    code = abs(code) if isinstance(code, int) else None
    if code == errno.ENOENT:
        return not_found or ImageNotFound(str(e), **details)
    if code in _BY_ERRNO:
        return _BY_ERRNO[code](str(e), details)
    if isinstance(e, rados.ConnectionShutdown):
        return CephUnreachable(str(e), **details)
    return CephError(f"{type(e).__name__}: {e}", errno=code, **details)


class CallRunner:
    """Runs blocking binding calls in its own threads, waiting a bounded time."""

    def __init__(self, limits: Limits, max_threads: int = 64) -> None:
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_threads, thread_name_prefix="ceph-call")

    def bound(self, ctx: TaskContext | None, seconds: float) -> float:
        """``seconds``, shortened so that a timeout is answered before the task's deadline."""
        if ctx is None or ctx.deadline is None:
            return seconds
        left = ctx.remaining(seconds)
        return max(0.05, min(seconds, left - min(0.5, left * 0.1)))

    def call(self, ctx: TaskContext | None, fn: Callable[[], T], *, timeout: float,
             what: str, on_timeout: Callable[[], None] | None = None) -> T:
        """``fn()`` in a worker; ``CEPH_TIMEOUT`` past ``timeout``, the stop reason on cancel."""
        limit = self.bound(ctx, timeout)
        end = time.monotonic() + limit
        fut: Future[T] = self._pool.submit(fn)
        while True:
            try:
                return fut.result(timeout=min(POLL, max(0.0, end - time.monotonic())))
            except FutureTimeout:
                pass
            if ctx is not None and ctx.stopped:
                ctx.check()  # cancel or deadline: the call itself may still finish
            if time.monotonic() >= end:
                if on_timeout is not None:
                    on_timeout()
                log.warning("%s did not finish within %.1fs", what, limit)
                raise CephTimeout(f"{what} did not finish within {limit:.1f}s", operation=what,
                                  timeout=round(limit, 3))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Credentials:
    """Resolves a :class:`ClusterRef`'s key reference under the agent's policy."""

    def __init__(self, keyring_dirs: list[Path], secrets_dir: Path | None, allow_admin: bool) -> None:
        self.keyring_dirs = [d.resolve() for d in keyring_dirs]
        self.secrets_dir = secrets_dir.resolve() if secrets_dir else None
        self.allow_admin = allow_admin

    def conf(self, ref: ClusterRef) -> dict[str, str]:
        """The credential part of the Rados config: ``keyring`` or ``key``."""
        if ref.user_id == "admin" and not self.allow_admin:
            raise CredentialRefused("the admin user is refused; give the agent its own cephx user",
                                    field="cluster.user")
        if ref.keyring is not None:
            path = Path(ref.keyring).resolve()
            if not any(path.is_relative_to(d) for d in self.keyring_dirs):
                raise CredentialRefused("keyring is outside the agent's keyring directories",
                                        field="cluster.keyring", allowed=[str(d) for d in self.keyring_dirs])
            if not path.is_file():
                raise CredentialRefused("keyring file does not exist", field="cluster.keyring")
            return {"keyring": str(path)}
        if self.secrets_dir is None:
            raise CredentialRefused("this agent has no secrets_dir for keyRef", field="cluster.keyRef")
        assert ref.key_ref is not None
        path = (self.secrets_dir / ref.key_ref).resolve()
        if not path.is_relative_to(self.secrets_dir) or not path.is_file():
            raise CredentialRefused("no such key reference", field="cluster.keyRef")
        key = path.read_text().strip()
        if not key:
            raise CredentialRefused("the referenced key file is empty", field="cluster.keyRef")
        return {"key": key}


class Connection:
    """One connected ``rados.Rados`` handle for a (cluster, user)."""

    def __init__(self, handle: rados.Rados, runner: CallRunner, key: tuple[Any, ...]) -> None:
        self.handle: Any = handle
        self.runner = runner
        self.key = key
        self.fsid = str(handle.get_fsid())
        self.broken = False
        self._inflight = 0
        self._mu = threading.Lock()

    def call(self, ctx: TaskContext | None, fn: Callable[[rados.Rados], T], *, what: str,
             timeout: float | None = None, not_found: AgentError | None = None) -> T:
        """Run ``fn(handle)`` bounded by ``timeout`` (the op timeout by default)."""
        def run() -> T:
            with self._mu:
                handle = self.handle
                if handle is None:
                    raise CephUnreachable("the connection was closed after a failure; retry")
                self._inflight += 1
            try:
                return fn(handle)
            finally:
                with self._mu:
                    self._inflight -= 1
                    idle = self._inflight == 0
                if idle and self.broken:
                    self._close()

        try:
            return self.runner.call(ctx, run, timeout=timeout or self.runner.limits.op_timeout,
                                    what=what, on_timeout=self.mark_broken)
        except (rados.Error, rbd.Error) as e:
            err = map_error(e, not_found)
            if isinstance(err, CephUnreachable):
                self.mark_broken()
            if isinstance(err, CephPermissionDenied):
                err.details.setdefault("user", f"client.{self.key[1]}")
            raise err from None

    def mark_broken(self) -> None:
        """Stop handing this connection out; shut it down when its calls return."""
        with self._mu:
            self.broken = True
            idle = self._inflight == 0
        if idle:
            self._close()

    def _close(self) -> None:
        with self._mu:
            handle, self.handle = self.handle, None
        if handle is not None:
            threading.Thread(target=_shutdown, args=(handle,), daemon=True).start()


def _shutdown(handle: rados.Rados) -> None:
    try:
        handle.shutdown()
    except Exception:
        log.debug("rados shutdown failed", exc_info=True)


class TaskCalls:
    """Calls into one connection on behalf of one task, each bounded."""

    def __init__(self, conn: Connection, ctx: TaskContext) -> None:
        self.conn = conn
        self.ctx = ctx

    def call(self, what: str, fn: Callable[[rados.Rados], Any], *, long: bool = False) -> Any:
        """``fn(handle)`` bounded by the op timeout (``long``: the long-op timeout)."""
        limits = self.conn.runner.limits
        return self.conn.call(self.ctx, fn, what=what,
                              timeout=limits.long_op_timeout if long else limits.op_timeout)


class ConnectionPool:
    """Connections cached per (monitors, user, credential); reconnects on failure."""

    def __init__(self, credentials: Credentials, runner: CallRunner) -> None:
        self.credentials = credentials
        self.runner = runner
        self._conns: dict[tuple[Any, ...], Connection] = {}
        self._mu = threading.Lock()
        self._connecting: dict[tuple[Any, ...], threading.Lock] = {}

    @staticmethod
    def key_of(ref: ClusterRef) -> tuple[Any, ...]:
        return (tuple(sorted(ref.monitors)), ref.user_id, ref.keyring, ref.key_ref)

    def get(self, ctx: TaskContext | None, ref: ClusterRef, *, fresh: bool = False) -> Connection:
        """A live connection to ``ref``'s cluster as its user (``fresh``: reconnect)."""
        cred = self.credentials.conf(ref)
        key = self.key_of(ref)
        with self._mu:
            conn = self._conns.get(key)
            if conn is not None and (conn.broken or fresh):
                self._conns.pop(key, None)
                conn.mark_broken()
                conn = None
            gate = self._connecting.setdefault(key, threading.Lock())
        if conn is None:
            with gate:
                with self._mu:
                    conn = self._conns.get(key)
                if conn is None or conn.broken:
                    conn = self._connect(ctx, ref, cred, key)
                    with self._mu:
                        self._conns[key] = conn
        if ref.fsid is not None and ref.fsid.lower() != conn.fsid.lower():
            raise FsidMismatch(expected=ref.fsid, actual=conn.fsid)
        return conn

    def _connect(self, ctx: TaskContext | None, ref: ClusterRef, cred: dict[str, str],
                 key: tuple[Any, ...]) -> Connection:
        limits = self.runner.limits
        conf = {
            "mon_host": ",".join(ref.monitors),
            # whole seconds: librados refuses "10.0" for these options
            "rados_osd_op_timeout": str(math.ceil(limits.op_timeout)),
            "rados_mon_op_timeout": str(math.ceil(limits.op_timeout)),
            "client_mount_timeout": str(math.ceil(limits.connect_timeout)),
            **cred,
        }
        try:
            handle = rados.Rados(rados_id=ref.user_id, conf=conf)
        except rados.Error as e:
            raise CephError(f"invalid Rados configuration: {e}") from None

        def connect() -> None:
            handle.connect(timeout=int(max(1, limits.connect_timeout)))

        try:
            self.runner.call(ctx, connect, timeout=limits.connect_timeout + 2,
                             what="connect to the monitors")
        except CephTimeout as e:
            threading.Thread(target=_shutdown, args=(handle,), daemon=True).start()
            raise CephUnreachable("the monitors did not answer in time", monitors=ref.monitors,
                                  timeout=e.details.get("timeout")) from None
        except rados.Error as e:
            err = map_error(e, monitors=ref.monitors, user=ref.user)
            if isinstance(err, CephError | CephTimeout):
                err = CephUnreachable(f"cannot connect to the monitors: {e}",
                                      monitors=ref.monitors, user=ref.user)
            raise err from None
        log.info("connected to ceph %s as client.%s", handle.get_fsid(), ref.user_id)
        return Connection(handle, self.runner, key)

    def drop(self, ref: ClusterRef) -> None:
        with self._mu:
            conn = self._conns.pop(self.key_of(ref), None)
        if conn is not None:
            conn.mark_broken()

    def close(self) -> None:
        with self._mu:
            conns = list(self._conns.values())
            self._conns.clear()
        for c in conns:
            c.mark_broken()
        self.runner.shutdown()
