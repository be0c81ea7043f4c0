"""What the cephagent's plugins share: the connection pool and a store per task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agentcore.plugin import Plugin
from agentcore.task import TaskContext
from cephagent.connection import ConnectionPool
from cephagent.models import CapacityMixin, CephCommand, ImageCommand
from cephagent.pools import PoolStore
from cephagent.rbdstore import RbdStore, SnapshotGate


@dataclass
class CephContext:
    """Shared by every plugin of one agent process."""

    pool: ConnectionPool
    work_dir: Path
    download_timeout: float = 60.0
    download_allow_local: bool = False
    sftp_key_file: Path | None = None
    sftp_known_hosts: Path | None = None
    gate: SnapshotGate = field(default_factory=SnapshotGate)


class CephPlugin(Plugin):
    """Base of the cephagent's plugins."""

    def __init__(self, ceph: CephContext) -> None:
        self.ceph = ceph

    def store(self, ctx: TaskContext, cmd: CephCommand) -> RbdStore:
        """The image operations on ``cmd``'s cluster, connected as its user."""
        return RbdStore(self.ceph.pool.get(ctx, cmd.cluster), ctx, self.ceph.gate)

    def pools(self, ctx: TaskContext, cmd: CephCommand) -> PoolStore:
        """The pool and cluster operations on ``cmd``'s cluster, connected as its user."""
        return PoolStore(self.ceph.pool.get(ctx, cmd.cluster), ctx)


def image_lock(cmd: ImageCommand) -> str:
    """The per-image lock key of a command (two commands on one image never interleave)."""
    return f"rbd:{cmd.pool}/{cmd.name}"


def fill_capacity(store: PoolStore, reply: CapacityMixin) -> None:
    """Piggy-back the cluster's total and available bytes on a reply."""
    total, avail, _ = store.capacity([])
    reply.total_capacity = total
    reply.available_capacity = avail
