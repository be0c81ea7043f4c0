"""Image commands: add from a URL, delete, info, and push/pull between stores."""

from __future__ import annotations

from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from sftpbackup import replicate
from sftpbackup.errors import ImageNotFound
from sftpbackup.ingest import add_image
from sftpbackup.models import (
    AddImageCmd,
    AddImageReply,
    DeleteImageCmd,
    DeleteImageReply,
    ImageCommand,
    ImageInfoCmd,
    ImageInfoReply,
    PullImageCmd,
    TransferImageCmd,
    TransferReply,
)
from sftpbackup.replicate import Transfer
from sftpbackup.service import BackupService


def _image_key(c: ImageCommand) -> str:
    return f"image:{c.root}:{c.image_uuid}"


def _transfer_reply(t: Transfer) -> TransferReply:
    m = t.manifest
    return TransferReply(image=m.info(), chunks_total=len(m.unique_digests()),
                         chunks_sent=t.chunks_sent, bytes_total=sum(m.unique_digests().values()),
                         bytes_sent=t.bytes_sent)


class ImagePlugin(Plugin):
    """Images of a backup storage."""

    def __init__(self, service: BackupService) -> None:
        self.service = service

    @command(lock=_image_key)
    def add(self, ctx: TaskContext, cmd: AddImageCmd) -> AddImageReply:
        """Add an image from an ``http(s)://``, ``sftp://`` or ``file://`` URL.

        The body is streamed and hashed as it arrives (sha256 of the whole and of
        each chunk); then its size and digest are checked against ``size`` and
        ``sha256`` when given, and its format is detected with ``qemu-img info``
        (a qcow2 with a backing file or data file is refused). Only then do its
        chunks go into the store and its manifest is published. Cancel and the
        deadline stop the download and leave no image behind."""
        store = self.service.store(cmd)
        with self.service.activity() as token:
            res = add_image(store, cmd, self.service.policy, ctx, token)
        return AddImageReply(image=res.manifest.info(), new_chunks=res.new_chunks, new_bytes=res.new_bytes)

    @command(lock=_image_key)
    def delete(self, ctx: TaskContext, cmd: DeleteImageCmd) -> DeleteImageReply:
        """Delete an image's manifest; its chunks are freed by the next GC. Idempotent."""
        return DeleteImageReply(deleted=self.service.store(cmd).delete_manifest(cmd.image_uuid))

    @command()
    def info(self, ctx: TaskContext, cmd: ImageInfoCmd) -> ImageInfoReply:
        """Format, virtual size, size, digest and chunk count of an image."""
        m = self.service.store(cmd).find_manifest(cmd.image_uuid)
        if m is None:
            raise ImageNotFound(image_uuid=cmd.image_uuid)
        return ImageInfoReply(image=m.info())

    @command(lock=_image_key)
    def push(self, ctx: TaskContext, cmd: TransferImageCmd) -> TransferReply:
        """Push an image to another store over SFTP, sending only the chunks it lacks.

        Local chunks are re-hashed before they are sent; an interrupted push
        resumes where it stopped (chunks already there are not sent again)."""
        store = self.service.store(cmd)
        with self.service.client(cmd.remote) as client:
            return _transfer_reply(replicate.push(store, cmd.image_uuid, client, ctx))

    @command(lock=_image_key)
    def pull(self, ctx: TaskContext, cmd: PullImageCmd) -> TransferReply:
        """Pull an image from another store over SFTP, getting only the chunks this one lacks.

        Every received chunk is re-hashed before it is stored, and the whole
        image must hash to ``sha256`` before its manifest is written
        (``DIGEST_MISMATCH`` otherwise); an interrupted pull resumes where it
        stopped."""
        store = self.service.store(cmd)
        with self.service.activity() as token, self.service.client(cmd.remote) as client:
            return _transfer_reply(replicate.pull(store, cmd.image_uuid, client, ctx, token,
                                                          cmd.sha256))
