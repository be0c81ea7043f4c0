"""Volume commands: linked clones, empty and template-based volumes, delete,
info, resize, templates, upload and copy."""

from __future__ import annotations

import os
from pathlib import Path

from agentcore.errors import InvalidRequest, NotFound
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from storageagent import sftp
from storageagent.cache import ImageCache, fetch_checked
from storageagent.layout import StorageRoot
from storageagent.models import (
    ChainEntry,
    CopyVolumeCmd,
    CreateEmptyVolumeCmd,
    CreateRootVolumeCmd,
    CreateTemplateCmd,
    CreateVolumeFromStoreCmd,
    CreateVolumeFromTemplateCmd,
    DeleteVolumeCmd,
    DeleteVolumeReply,
    ResizeVolumeCmd,
    UploadTemplateCmd,
    UploadTemplateReply,
    VolumeInfo,
    VolumeInfoCmd,
    VolumeReply,
    volume_key,
)
from storageagent.qcow2 import backing_path, read_header
from storageagent.service import StorageService
from storageagent.volumes import (
    absent,
    backing_name,
    checked_chain,
    existing,
    install,
    refuse_if_backing,
    refuse_if_open,
    volume_info,
)


class VolumePlugin(Plugin):
    """qcow2 volumes on file-based primary storage."""

    def __init__(self, service: StorageService) -> None:
        self.svc = service

    def _cached(self, sr: StorageRoot, image_id: str) -> tuple[ImageCache, Path, str, int]:
        cache = ImageCache(sr, self.svc.tool)
        img = cache.get(image_id)
        if img is None:
            raise NotFound("the image is not in the storage's cache", field="imageId", imageId=image_id)
        return cache, cache.path(img), img.format, img.virtual_size

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def create_root(self, ctx: TaskContext, cmd: CreateRootVolumeCmd) -> VolumeReply:
        """Linked clone of a cached image: a qcow2 overlay whose backing file is the image.

        ``size`` may grow the virtual size beyond the image's (never below it).
        Repeating the command for an existing clone of the same image answers
        the existing volume.
        """
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        dest = sr.resolve_volume(cmd.install_path)
        with self.svc.using_image(cmd.storage_uuid, cmd.image_id):
            _, base, fmt, vsize = self._cached(sr, cmd.image_id)
            if cmd.size is not None and cmd.size < vsize:
                raise InvalidRequest("size is smaller than the image's virtual size",
                                     field="size", size=cmd.size, imageVirtualSize=vsize)
            size = max(cmd.size or 0, vsize)
            backing = ChainEntry(install_path=sr.relative(base), format=fmt, virtual_size=vsize,
                                 actual_size=os.stat(base).st_blocks * 512)
            if dest.exists():
                return self._existing_clone(dest, base, backing, cmd.install_path)
            tmp = sr.tmp_file("clone")
            try:
                self.svc.tool.create(ctx, tmp, "qcow2", size, backing_name(base, dest.parent), fmt)
                install(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        st = os.stat(dest)
        return VolumeReply(volume=VolumeInfo(
            install_path=cmd.install_path, format="qcow2", virtual_size=size,
            actual_size=st.st_blocks * 512, backing_chain=[backing]))

    def _existing_clone(self, dest: Path, base: Path, backing: ChainEntry, rel: str) -> VolumeReply:
        h = read_header(dest)
        b = backing_path(dest, h) if h is not None else None
        if b is None or os.path.realpath(b) != os.path.realpath(base):
            absent(dest, "installPath", rel)  # raises CONFLICT
        assert h is not None
        st = os.stat(dest)
        return VolumeReply(volume=VolumeInfo(
            install_path=rel, format="qcow2", virtual_size=h.virtual_size,
            actual_size=st.st_blocks * 512, backing_chain=[backing]))

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def create_empty(self, ctx: TaskContext, cmd: CreateEmptyVolumeCmd) -> VolumeReply:
        """A new empty volume of ``size`` bytes (qcow2 or raw)."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        dest = absent(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        tmp = sr.tmp_file("empty")
        try:
            self.svc.tool.create(ctx, tmp, cmd.format, cmd.size)
            install(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return VolumeReply(volume=volume_info(ctx, self.svc.tool, sr, dest, cmd.format))

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def create_from_template(self, ctx: TaskContext, cmd: CreateVolumeFromTemplateCmd) -> VolumeReply:
        """A data volume that is a full, independent qcow2 copy of a cached image,
        optionally grown to ``size``; with progress and cancel."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        dest = absent(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        with self.svc.using_image(cmd.storage_uuid, cmd.image_id):
            _, base, base_fmt, vsize = self._cached(sr, cmd.image_id)
            if cmd.size is not None and cmd.size < vsize:
                raise InvalidRequest("size is smaller than the image's virtual size",
                                     field="size", size=cmd.size, imageVirtualSize=vsize)
            self._convert(ctx, sr, base, base_fmt, sr, dest, "qcow2", False, grow_to=cmd.size)
        return VolumeReply(volume=volume_info(ctx, self.svc.tool, sr, dest, "qcow2"))

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def create_from_store(self, ctx: TaskContext, cmd: CreateVolumeFromStoreCmd) -> VolumeReply:
        """A data volume restored from an SFTP backup storage in one pass.

        The store client fetches the image into the storage's tmp dir (same
        filesystem as the volume), checking the digest as the bytes arrive;
        the file's format is read from its header (a backing file or an
        external data file is refused), then a qcow2 is renamed into place and
        a raw image converted to qcow2. A failed or cancelled fetch leaves
        nothing at ``installPath`` and no partial file.
        """
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        dest = absent(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        tmp = sr.tmp_file("restore")
        try:
            fetch = sftp.fetcher(self.svc.config, cmd.source, cmd.digest)
            _, fmt, _ = fetch_checked(ctx, self.svc.tool, tmp, cmd.digest, cmd.size, fetch)
            if fmt == "qcow2":
                ctx.check()
                install(tmp, dest, durable=True)  # the client fsynced the data
            else:
                self._convert(ctx, sr, tmp, fmt, sr, dest, "qcow2", False)
        finally:
            tmp.unlink(missing_ok=True)
            (tmp.parent / f".{tmp.name}.part").unlink(missing_ok=True)  # the client's partial file
        return VolumeReply(volume=volume_info(ctx, self.svc.tool, sr, dest, "qcow2"))

    def _convert(self, ctx: TaskContext, src_sr: StorageRoot, src: Path, src_fmt: str,
                 dst_sr: StorageRoot, dest: Path, fmt: str, compress: bool,
                 grow_to: int | None = None) -> None:
        """Flatten ``src`` (read as ``src_fmt``, never probed; its chain inside its
        storage) into a new ``dest`` of ``fmt``."""
        chain = checked_chain(ctx, self.svc.tool, src_sr, src, src_fmt)
        total = sum(c.actual_size for c in chain) or None
        tmp = dst_sr.tmp_file("convert")

        def progress(done: int) -> None:
            ctx.progress(min(99.0, 100.0 * done / total) if total else None,
                         stage="convert", done=done, total=total, unit="bytes")

        try:
            self.svc.tool.convert(ctx, src, tmp, fmt, src_fmt=src_fmt, compress=compress,
                                  timeout=self.svc.config.convert_timeout, on_progress=progress)
            if grow_to is not None:
                self.svc.tool.resize(ctx, tmp, fmt, grow_to, shrink=False)
            ctx.check()
            install(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        ctx.progress(100.0, stage="convert", force=True)

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def delete(self, ctx: TaskContext, cmd: DeleteVolumeCmd) -> DeleteVolumeReply:
        """Delete a volume, snapshot or template file; ``IN_USE`` while a running QEMU
        holds it or another volume is backed by it. Deleting a missing file succeeds
        with ``deleted: false``."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        path = sr.resolve_volume(cmd.install_path)
        if not path.exists():
            return DeleteVolumeReply(deleted=False)
        if not path.is_file():
            raise InvalidRequest("installPath is not a file", field="installPath")
        refuse_if_open(path, cmd.install_path)
        refuse_if_backing(sr, path, cmd.install_path)
        path.unlink()
        return DeleteVolumeReply(deleted=True)

    @command()
    def info(self, ctx: TaskContext, cmd: VolumeInfoCmd) -> VolumeReply:
        """Format, virtual size, actual size and backing chain of a file of the storage."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        path = existing(sr.resolve(cmd.install_path), "installPath", cmd.install_path)
        return VolumeReply(volume=volume_info(ctx, self.svc.tool, sr, path, cmd.volume_format))

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def resize(self, ctx: TaskContext, cmd: ResizeVolumeCmd) -> VolumeReply:
        """Offline resize to ``size`` bytes; shrinking is refused unless ``force``
        (data beyond the new end is lost)."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        path = existing(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        refuse_if_open(path, cmd.install_path)
        fmt = cmd.volume_format
        top = checked_chain(ctx, self.svc.tool, sr, path, fmt)[0]
        shrink = cmd.size < top.virtual_size
        if shrink and not cmd.force:
            raise InvalidRequest("size is below the volume's virtual size; set force to shrink",
                                 field="size", size=cmd.size, virtualSize=top.virtual_size)
        if cmd.size != top.virtual_size:
            self.svc.tool.resize(ctx, path, fmt, cmd.size, shrink=shrink)
        return VolumeReply(volume=volume_info(ctx, self.svc.tool, sr, path, fmt))

    @command(lock=lambda c: [volume_key(c.storage_uuid, c.install_path),
                                                  volume_key(c.storage_uuid, c.template_path)])
    def create_template(self, ctx: TaskContext, cmd: CreateTemplateCmd) -> VolumeReply:
        """Flatten a volume nobody writes (a stopped VM's, or a running VM's under a live
        snapshot's overlay) into a standalone template at ``templatePath`` with
        ``qemu-img convert``; progress, cancel, and no half template ever at
        ``templatePath`` (the copy is renamed into place when complete)."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        src = existing(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        dest = absent(sr.resolve_volume(cmd.template_path, "templatePath"), "templatePath",
                      cmd.template_path)
        refuse_if_open(src, cmd.install_path, writers_only=True)
        self._convert(ctx, sr, src, cmd.volume_format, sr, dest, cmd.format, cmd.compress)
        return VolumeReply(volume=volume_info(ctx, self.svc.tool, sr, dest, cmd.format))

    @command(lock=lambda c: volume_key(c.storage_uuid, c.install_path))
    def upload_template(self, ctx: TaskContext, cmd: UploadTemplateCmd) -> UploadTemplateReply:
        """Upload a template file of this storage to an SFTP backup storage through
        the store client (key and known_hosts from the agent's config)."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        path = existing(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        ref = sftp.upload(self.svc.config, cmd.target, path, cmd.name, ctx)
        return UploadTemplateReply(image_id=ref.image_id, digest=ref.digest, size=ref.size,
                                   virtual_size=ref.virtual_size, format=ref.format)

    @command(lock=lambda c: [volume_key(c.storage_uuid, c.install_path),
                                       volume_key(c.dst_storage_uuid, c.dst_install_path)])
    def copy(self, ctx: TaskContext, cmd: CopyVolumeCmd) -> VolumeReply:
        """Copy a (stopped) volume, flattened, to another primary storage of this host."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        src = existing(sr.resolve_volume(cmd.install_path), "installPath", cmd.install_path)
        dst_sr = self.svc.open(cmd.dst_storage_uuid, cmd.dst_mount_path, field="dstMountPath")
        dest = absent(dst_sr.resolve_volume(cmd.dst_install_path, "dstInstallPath"),
                      "dstInstallPath", cmd.dst_install_path)
        refuse_if_open(src, cmd.install_path)
        fmt = cmd.volume_format  # the copy keeps the recorded format
        self._convert(ctx, sr, src, fmt, dst_sr, dest, fmt, False)
        return VolumeReply(volume=volume_info(ctx, self.svc.tool, dst_sr, dest, fmt))
