"""Primary storage: volumes as RBD images, root volumes as clones of images."""

from __future__ import annotations

from agentcore.plugin import command
from agentcore.task import TaskContext
from cephagent.errors import ImageExists
from cephagent.models import (
    CreateTemplateCmd,
    CreateVolumeCmd,
    CreateVolumeFromImageCmd,
    DeleteVolumeCmd,
    DeleteVolumeReply,
    FlattenVolumeCmd,
    ImageInfoReply,
    ResizeVolumeCmd,
    VolumeInfoCmd,
    VolumeInfoReply,
)
from cephagent.plugins.base import CephPlugin, image_lock
from cephagent.rbdio import copy_image
from cephagent.rbdstore import RbdStore


def _info(store: RbdStore, pool: str, name: str, usage: bool = False) -> VolumeInfoReply:
    return VolumeInfoReply(**store.info(pool, name, usage=usage))


class VolumePlugin(CephPlugin):
    """Volumes on Ceph primary storage."""

    @command(lock=image_lock)
    def create(self, ctx: TaskContext, cmd: CreateVolumeCmd) -> VolumeInfoReply:
        """Create an empty RBD image of ``size`` bytes with the given features
        (IMAGE_EXISTS unless ``skipIfExisting``)."""
        store = self.store(ctx, cmd)
        store.create(cmd.pool, cmd.name, cmd.size, list(cmd.features), cmd.skip_if_existing)
        return _info(store, cmd.pool, cmd.name)

    @command(lock=image_lock)
    def create_from_image(self, ctx: TaskContext, cmd: CreateVolumeFromImageCmd) -> VolumeInfoReply:
        """Clone ``srcPool/srcName@srcSnapshot`` into ``pool/name``. The image's
        snapshot is created and protected once if missing, also under concurrent
        requests; the clone is grown to ``size`` when that is larger."""
        store = self.store(ctx, cmd)
        return VolumeInfoReply(**store.clone(cmd.src_pool, cmd.src_name, cmd.src_snapshot, cmd.pool,
                                             cmd.name, list(cmd.features), cmd.size))

    @command(lock=image_lock)
    def delete(self, ctx: TaskContext, cmd: DeleteVolumeCmd) -> DeleteVolumeReply:
        """Delete a volume. Idempotent (a missing image succeeds with existed=false);
        IN_USE while a client has it open; HAS_SNAPSHOTS unless ``purgeSnapshots``
        (a snapshot with clones is HAS_CHILDREN)."""
        existed = self.store(ctx, cmd).delete(cmd.pool, cmd.name, cmd.purge_snapshots)
        return DeleteVolumeReply(install_path=cmd.install_path, existed=existed)

    @command(lock=image_lock)
    def resize(self, ctx: TaskContext, cmd: ResizeVolumeCmd) -> VolumeInfoReply:
        """Grow a volume to ``size`` bytes (shrinking needs ``allowShrink``)."""
        store = self.store(ctx, cmd)
        store.resize(cmd.pool, cmd.name, cmd.size, cmd.allow_shrink)
        return _info(store, cmd.pool, cmd.name)

    @command()
    def info(self, ctx: TaskContext, cmd: VolumeInfoCmd) -> VolumeInfoReply:
        """Size, allocated bytes (without the parent's), parent, snapshots, features
        and the number of other clients that have the image open."""
        return _info(self.store(ctx, cmd), cmd.pool, cmd.name, usage=True)

    @command(lock=image_lock)
    def flatten(self, ctx: TaskContext, cmd: FlattenVolumeCmd) -> VolumeInfoReply:
        """Copy the parent's data into a clone so it no longer depends on it; reports
        progress in objects and stops on cancel or deadline."""
        store = self.store(ctx, cmd)
        store.flatten(cmd.pool, cmd.name)
        return _info(store, cmd.pool, cmd.name)

    @command(lock=lambda c: [image_lock(c), f"rbd:{c.dst_pool}/{c.dst_name}"])
    def create_template(self, ctx: TaskContext, cmd: CreateTemplateCmd) -> ImageInfoReply:
        """Copy a volume, or one of its snapshots, into ``dstPool/dstName`` (the backup
        pool) as a flat, sparse image that new volumes can be cloned from; progress
        in bytes; cancel and deadline remove the partial copy."""
        store = self.store(ctx, cmd)
        if store.exists(cmd.dst_pool, cmd.dst_name):
            raise ImageExists(installPath=f"{cmd.dst_pool}/{cmd.dst_name}")
        copy_image(ctx, store, cmd.pool, cmd.name, cmd.dst_pool, cmd.dst_name, snapshot=cmd.snapshot)
        info = store.info(cmd.dst_pool, cmd.dst_name, usage=True)
        return ImageInfoReply(install_path=info["install_path"], size=info["size"],
                              actual_size=info["actual_size"])
