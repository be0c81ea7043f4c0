"""Snapshots of volumes: create, delete, protect, unprotect, rollback."""

from __future__ import annotations

from agentcore.plugin import command
from agentcore.task import TaskContext
from cephagent.models import (
    CreateSnapshotCmd,
    DeleteSnapshotCmd,
    ProtectSnapshotCmd,
    RollbackSnapshotCmd,
    SnapshotCommand,
    SnapshotReply,
    UnprotectSnapshotCmd,
)
from cephagent.plugins.base import CephPlugin, image_lock


class SnapshotPlugin(CephPlugin):
    """RBD snapshots of one image; every command holds the image's lock."""

    def _do(self, ctx: TaskContext, cmd: SnapshotCommand, op: str, **kw: bool) -> SnapshotReply:
        r = self.store(ctx, cmd).snapshot(cmd.pool, cmd.name, cmd.snapshot, op, **kw)
        return SnapshotReply(install_path=f"{cmd.install_path}@{cmd.snapshot}", snapshot=cmd.snapshot,
                             protected=r["protected"], existed=r["existed"])

    @command(lock=image_lock)
    def create(self, ctx: TaskContext, cmd: CreateSnapshotCmd) -> SnapshotReply:
        """Take a snapshot (SNAPSHOT_EXISTS unless ``skipIfExisting``)."""
        return self._do(ctx, cmd, "create", skip_if_existing=cmd.skip_if_existing)

    @command(lock=image_lock)
    def delete(self, ctx: TaskContext, cmd: DeleteSnapshotCmd) -> SnapshotReply:
        """Remove a snapshot; idempotent; SNAPSHOT_PROTECTED while it is protected."""
        return self._do(ctx, cmd, "delete")

    @command(lock=image_lock)
    def protect(self, ctx: TaskContext, cmd: ProtectSnapshotCmd) -> SnapshotReply:
        """Protect a snapshot so it can be cloned (idempotent)."""
        return self._do(ctx, cmd, "protect")

    @command(lock=image_lock)
    def unprotect(self, ctx: TaskContext, cmd: UnprotectSnapshotCmd) -> SnapshotReply:
        """Unprotect a snapshot (idempotent); HAS_CHILDREN while clones of it exist."""
        return self._do(ctx, cmd, "unprotect")

    @command(lock=image_lock)
    def rollback(self, ctx: TaskContext, cmd: RollbackSnapshotCmd) -> SnapshotReply:
        """Roll the volume back to the snapshot; IN_USE while a client has it open."""
        return self._do(ctx, cmd, "rollback")
