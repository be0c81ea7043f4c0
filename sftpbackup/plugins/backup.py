"""Store-level commands: connect, ping, capacity, verify, GC and the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

from agentcore import __version__
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from sftpbackup.models import (
    CapacityCmd,
    CapacityReply,
    CatalogueReply,
    ConnectCmd,
    ConnectReply,
    ExportCatalogueCmd,
    GcCmd,
    GcReply,
    ImportCatalogueCmd,
    PingCmd,
    PingReply,
    VerifyCmd,
    VerifyReply,
)
from sftpbackup.service import BackupService
from sftpbackup.store import ImageStore

CATALOGUE = "catalogue.json"


def _store_key(c: ConnectCmd | GcCmd) -> str:
    return f"store:{c.root}"


class BackupPlugin(Plugin):
    """The backup storage itself: its store directory, health and maintenance."""

    def __init__(self, service: BackupService) -> None:
        self.service = service

    @command(lock=_store_key)
    def connect(self, ctx: TaskContext, cmd: ConnectCmd) -> ConnectReply:
        """Bind the backup storage UUID to its root directory, creating the store layout.

        Idempotent; refused if the directory already holds another backup storage."""
        store = ImageStore.init(Path(cmd.root), cmd.backup_storage_uuid)
        total, avail, used = store.capacity()
        return ConnectReply(backup_storage_uuid=cmd.backup_storage_uuid, total_capacity=total,
                            available_capacity=avail, used_by_images=used)

    @command()
    def ping(self, ctx: TaskContext, cmd: PingCmd) -> PingReply:
        """Answer with the store's backup storage UUID (checked on disk) and the agent version."""
        self.service.store(cmd)
        return PingReply(backup_storage_uuid=cmd.backup_storage_uuid, version=__version__)

    @command()
    def capacity(self, ctx: TaskContext, cmd: CapacityCmd) -> CapacityReply:
        """Total and available bytes of the store's filesystem, and bytes held by chunks."""
        total, avail, used = self.service.store(cmd).capacity()
        return CapacityReply(total_capacity=total, available_capacity=avail, used_by_images=used)

    @command()
    def verify(self, ctx: TaskContext, cmd: VerifyCmd) -> VerifyReply:
        """Re-hash every chunk (or the chunks of ``imageUuids``) and check every manifest.

        Reports corrupt and missing chunks and the images they break; repairs nothing."""
        res = self.service.store(cmd).verify(cmd.image_uuids, ctx)
        return VerifyReply(
            ok=res.ok, images_checked=res.images_checked, chunks_checked=res.chunks_checked,
            bad_chunks=res.bad_chunks, missing_chunks=res.missing_chunks, bad_images=res.bad_images,
        )

    @command(lock=_store_key)
    def gc(self, ctx: TaskContext, cmd: GcCmd) -> GcReply:
        """Remove chunks no manifest references (older than ``graceSeconds``) and stale temp files.

        Safe while images are being added: chunks of adds in progress are kept."""
        res = self.service.store(cmd).gc(cmd.grace_seconds, cmd.stale_seconds, self.service.active_tokens())
        return GcReply(chunks_removed=res.chunks_removed, bytes_freed=res.bytes_freed,
                       chunks_kept=res.chunks_kept, temp_files_removed=res.temp_files_removed)

    @command()
    def export_catalogue(self, ctx: TaskContext, cmd: ExportCatalogueCmd) -> CatalogueReply:
        """Write ``catalogue.json`` (every image of the store) atomically and return it."""
        store = self.service.store(cmd)
        images = [m.info() for m in store.manifests()]
        store.write_file(CATALOGUE, json.dumps([i.wire() for i in images], indent=1).encode())
        return CatalogueReply(images=images)

    @command()
    def import_catalogue(self, ctx: TaskContext, cmd: ImportCatalogueCmd) -> CatalogueReply:
        """List every image of an existing store (from its manifests) for a fresh controller."""
        store = self.service.store(cmd)
        return CatalogueReply(images=[m.info() for m in store.manifests()])
