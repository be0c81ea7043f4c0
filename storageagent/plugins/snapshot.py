"""Offline snapshots of qcow2 volumes as external backing chains.

A snapshot is a read-only file in the volume's chain::

    image <- snap1 <- snap2 <- volume (installPath, what the VM uses)

``create`` turns the volume's current file into the snapshot and puts a new
empty overlay at the volume's path, so the VM's disk path never changes;
``revert`` replaces the overlay by a new empty one over the chosen snapshot;
``merge`` pulls the data above a base into the volume (``qemu-img rebase``),
after which the snapshots between can be deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentcore.errors import InvalidRequest
from agentcore.fsmode import SHARED, make_dirs
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from storageagent.layout import StorageRoot
from storageagent.models import (
    CreateSnapshotCmd,
    MergeSnapshotsCmd,
    RevertSnapshotCmd,
    VolumeCmd,
    VolumeReply,
    volume_key,
)
from storageagent.service import StorageService
from storageagent.volumes import (
    absent,
    backing_name,
    chain_files,
    checked_chain,
    existing,
    install,
    refuse_if_backing,
    refuse_if_open,
    volume_info,
)


class SnapshotPlugin(Plugin):
    """Offline snapshot, revert and merge of qcow2 volumes."""

    def __init__(self, service: StorageService) -> None:
        self.svc = service

    @command(lock=lambda c: [volume_key(c.storage_uuid, c.install_path),
                                         volume_key(c.storage_uuid, c.snapshot_path)])
    def create(self, ctx: TaskContext, cmd: CreateSnapshotCmd) -> VolumeReply:
        """Offline snapshot: the volume's data becomes ``snapshotPath`` and the volume
        a new empty overlay on it. Refused with ``IN_USE`` while QEMU holds the
        volume or another file is backed by it."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        tool = self.svc.tool
        vol = existing(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        snap = absent(sr.resolve_volume(cmd.snapshot_path, "snapshotPath"), "snapshotPath",
                      cmd.snapshot_path)
        refuse_if_open(vol, cmd.install_path)
        refuse_if_backing(sr, vol, cmd.install_path)
        _require_qcow2(cmd)
        top = checked_chain(ctx, tool, sr, vol, "qcow2")[0]
        backing = chain_files(ctx, tool, sr, vol, "qcow2")
        tmp = sr.tmp_file("overlay")
        make_dirs(snap.parent, SHARED)
        os.rename(vol, snap)
        try:
            if backing and snap.parent != vol.parent:
                # the snapshot keeps its backing file; its relative name must follow it
                b, bfmt = backing[0]
                tool.rebase(ctx, snap, backing_name(b, snap.parent), bfmt, 60, unsafe=True)
            tool.create(ctx, tmp, "qcow2", top.virtual_size, backing_name(snap, vol.parent), "qcow2")
            install(tmp, vol)
        except BaseException:
            tmp.unlink(missing_ok=True)
            if not vol.exists():
                if backing and snap.parent != vol.parent:
                    b, bfmt = backing[0]
                    tool.rebase(ctx, snap, backing_name(b, vol.parent), bfmt, 60, unsafe=True)
                os.rename(snap, vol)
            raise
        return VolumeReply(volume=volume_info(ctx, tool, sr, vol, "qcow2"))

    def _in_chain(self, ctx: TaskContext, sr: StorageRoot, vol: Path, target: Path, field: str,
                  rel: str) -> tuple[Path, str]:
        real = Path(os.path.realpath(target))
        for path, fmt in chain_files(ctx, self.svc.tool, sr, vol, "qcow2"):
            if path == real:
                return path, fmt
        raise InvalidRequest(f"{field} is not in the volume's backing chain", field=field, path=rel)

    @command(lock=lambda c: [volume_key(c.storage_uuid, c.install_path),
                                         volume_key(c.storage_uuid, c.snapshot_path)])
    def revert(self, ctx: TaskContext, cmd: RevertSnapshotCmd) -> VolumeReply:
        """Revert a stopped volume to a snapshot of its chain: its changes since are
        discarded (a new empty overlay on the snapshot replaces it atomically)."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        tool = self.svc.tool
        vol = existing(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        _require_qcow2(cmd)
        snap_rel = sr.resolve(cmd.snapshot_path, "snapshotPath")
        snap, fmt = self._in_chain(ctx, sr, vol, snap_rel, "snapshotPath", cmd.snapshot_path)
        refuse_if_open(vol, cmd.install_path)
        refuse_if_backing(sr, vol, cmd.install_path)
        size = tool.info_chain(ctx, snap, fmt)[0].virtual_size
        tmp = sr.tmp_file("revert")
        try:
            tool.create(ctx, tmp, "qcow2", size, backing_name(snap, vol.parent), fmt)
            install(tmp, vol)
        finally:
            tmp.unlink(missing_ok=True)
        return VolumeReply(volume=volume_info(ctx, tool, sr, vol, "qcow2"))

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def merge(self, ctx: TaskContext, cmd: MergeSnapshotsCmd) -> VolumeReply:
        """Pull the data of the snapshots above ``basePath`` into the stopped volume
        and make ``basePath`` its backing file (``null``: flatten it completely).
        The guest-visible data does not change; the snapshots that left the chain
        can then be deleted."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        tool = self.svc.tool
        vol = existing(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        _require_qcow2(cmd)
        base: tuple[Path, str] | None = None
        if cmd.base_path is not None:
            b = sr.resolve(cmd.base_path, "basePath")
            base = self._in_chain(ctx, sr, vol, b, "basePath", cmd.base_path)
        refuse_if_open(vol, cmd.install_path)
        if base is None:
            tool.rebase(ctx, vol, None, None, self.svc.config.convert_timeout)
        else:
            tool.rebase(ctx, vol, backing_name(base[0], vol.parent), base[1],
                        self.svc.config.convert_timeout)
        return VolumeReply(volume=volume_info(ctx, tool, sr, vol, "qcow2"))


def _require_qcow2(cmd: VolumeCmd) -> None:
    """Snapshots are qcow2 overlays: a volume recorded as another format has none."""
    if cmd.volume_format != "qcow2":
        raise InvalidRequest("only qcow2 volumes have snapshots", field="volumeFormat",
                             format=cmd.volume_format)
