"""Backup storage: images in an RBD pool, added from URLs or the SFTP store,
cached into primary pools, and exported back to the SFTP store."""

from __future__ import annotations

from agentcore.plugin import command
from agentcore.task import TaskContext
from cephagent import download, sftp
from cephagent.errors import ImageExists
from cephagent.models import (
    AddImageCmd,
    CacheImageCmd,
    DeleteImageCmd,
    ExportToSftpCmd,
    ExportToSftpReply,
    ImageInfoCmd,
    ImageInfoReply,
    ImportFromSftpCmd,
    SftpImageCommand,
)
from cephagent.plugins.base import CephPlugin, image_lock
from cephagent.rbdio import TMP_SUFFIX, copy_image
from cephagent.rbdstore import RbdStore
from sftpbackup.client import SftpTarget


def _info(store: RbdStore, pool: str, name: str, **extra: object) -> ImageInfoReply:
    i = store.info(pool, name, usage=True)
    return ImageInfoReply(install_path=i["install_path"], size=i["size"], actual_size=i["actual_size"],
                          **extra)  # type: ignore[arg-type]


def _target(cmd: SftpImageCommand) -> SftpTarget:
    return SftpTarget(cmd.host, cmd.port, cmd.user, cmd.store_root)


class ImagePlugin(CephPlugin):
    """Images on Ceph backup storage (and the image cache of primary pools)."""

    def _refuse_existing(self, store: RbdStore, pool: str, name: str) -> None:
        if store.exists(pool, name):
            raise ImageExists(installPath=f"{pool}/{name}")

    @command(lock=image_lock)
    def add(self, ctx: TaskContext, cmd: AddImageCmd) -> ImageInfoReply:
        """Stream an image from an http(s) URL into ``pool/name``: sha256 computed on
        the fly (checked against ``sha256`` when given), format detected (qcow2 is
        converted to raw so clones can be made), progress reported, cancel and
        deadline honoured; a partial image never appears under the final name."""
        store = self.store(ctx, cmd)
        self._refuse_existing(store, cmd.pool, cmd.name)
        added = download.add_image(
            ctx, store, str(cmd.url), cmd.pool, cmd.name, work_dir=self.ceph.work_dir,
            want_format=cmd.format, sha256=cmd.sha256, timeout=self.ceph.download_timeout,
            allow_local=self.ceph.download_allow_local,
        )
        return _info(store, cmd.pool, cmd.name, source_format=added.source_format,
                     sha256=added.sha256, downloaded_bytes=added.downloaded)

    @command(lock=image_lock)
    def cache(self, ctx: TaskContext, cmd: CacheImageCmd) -> ImageInfoReply:
        """Copy ``srcPool/srcName`` (backup pool) into ``pool/name`` (the primary
        pool's image cache), flat and sparse, with progress; cancel and deadline
        remove the partial copy. Idempotent: an existing cache entry is answered
        with existed=true."""
        store = self.store(ctx, cmd)
        if store.exists(cmd.pool, cmd.name):
            return _info(store, cmd.pool, cmd.name, existed=True)
        copy_image(ctx, store, cmd.src_pool, cmd.src_name, cmd.pool, cmd.name)
        return _info(store, cmd.pool, cmd.name, existed=False)

    @command(lock=image_lock)
    def delete(self, ctx: TaskContext, cmd: DeleteImageCmd) -> ImageInfoReply:
        """Delete an image and its snapshots; idempotent; HAS_CHILDREN while volumes
        are still cloned from it, IN_USE while a client has it open. Partial imports
        of the name left by killed agents are removed too (when no longer watched)."""
        store = self.store(ctx, cmd)
        existed = store.delete(cmd.pool, cmd.name, purge_snapshots=True)
        store.remove_leftovers(cmd.pool, cmd.name + TMP_SUFFIX)
        return ImageInfoReply(install_path=cmd.install_path, existed=existed)

    @command()
    def info(self, ctx: TaskContext, cmd: ImageInfoCmd) -> ImageInfoReply:
        """Size and allocated bytes of an image."""
        return _info(self.store(ctx, cmd), cmd.pool, cmd.name)

    @command(lock=image_lock)
    def import_from_sftp(self, ctx: TaskContext, cmd: ImportFromSftpCmd) -> ImageInfoReply:
        """Fetch image ``imageId`` from the SFTP backup storage into ``pool/name`` as raw:
        every chunk and the whole image are verified, the whole against ``sha256``
        (``DIGEST_MISMATCH`` otherwise); the SSH key and known_hosts are the agent's own."""
        store = self.store(ctx, cmd)
        self._refuse_existing(store, cmd.pool, cmd.name)
        _, digest = sftp.import_image(ctx, store, _target(cmd), cmd.image_id, cmd.sha256, cmd.pool, cmd.name,
                                      self.ceph.work_dir, self.ceph.sftp_key_file,
                                      self.ceph.sftp_known_hosts)
        return _info(store, cmd.pool, cmd.name, sha256=digest)

    @command(lock=image_lock)
    def export_to_sftp(self, ctx: TaskContext, cmd: ExportToSftpCmd) -> ExportToSftpReply:
        """Upload ``pool/name`` (or its ``snapshot``) to the SFTP backup storage as raw
        image ``storeName``; only chunks the store lacks are sent."""
        store = self.store(ctx, cmd)
        ref = sftp.export_image(ctx, store, _target(cmd), cmd.pool, cmd.name, cmd.snapshot,
                                cmd.store_name, self.ceph.work_dir, self.ceph.sftp_key_file,
                                self.ceph.sftp_known_hosts)
        return ExportToSftpReply(image_id=ref.image_id, digest=ref.digest, size=ref.size)
