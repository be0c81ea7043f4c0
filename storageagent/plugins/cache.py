"""Image cache commands: cache-image, cache/list, cache/evict."""

from __future__ import annotations

from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from storageagent import sftp
from storageagent.cache import Fetcher, ImageCache, http_fetcher
from storageagent.models import (
    CacheImageCmd,
    CacheImageReply,
    EvictCacheCmd,
    EvictCacheReply,
    HttpSource,
    ListCacheCmd,
    ListCacheReply,
    SftpSource,
    image_key,
)
from storageagent.service import StorageService


class CachePlugin(Plugin):
    """The image cache of file-based primary storage."""

    def __init__(self, service: StorageService) -> None:
        self.svc = service

    @command(lock=lambda c: image_key(c.storage_uuid, c.image_id))
    def cache_image(self, ctx: TaskContext, cmd: CacheImageCmd) -> CacheImageReply:
        """Pull an image from backup storage (SFTP) or an http(s) URL into the cache.

        The digest is verified while the bytes arrive; the image appears in
        the cache only when complete. Requests for the same image on the same
        storage run one after the other, so the first downloads and the
        others find it cached (``downloaded: false``).
        """
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        cache = ImageCache(sr, self.svc.tool)
        img, downloaded = cache.fill(ctx, cmd.image_id, cmd.digest, cmd.size,
                                     self._fetcher(cmd.source, cmd.size))
        return CacheImageReply(image=img, downloaded=downloaded)

    def _fetcher(self, source: HttpSource | SftpSource, size: int | None) -> Fetcher:
        cfg = self.svc.config
        if isinstance(source, HttpSource):
            return http_fetcher(source.url, cfg.http_read_timeout, cfg.download_timeout,
                                allow_local=cfg.download_allow_local, max_bytes=size)
        return sftp.fetcher(cfg, source)

    @command()
    def list_cache(self, ctx: TaskContext, cmd: ListCacheCmd) -> ListCacheReply:
        """The images in the storage's cache."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        return ListCacheReply(images=ImageCache(sr, self.svc.tool).list())

    @command(lock=lambda c: image_key(c.storage_uuid, c.image_id))
    def evict_cache(self, ctx: TaskContext, cmd: EvictCacheCmd) -> EvictCacheReply:
        """Remove an image from the cache; refused with ``IN_USE`` while any volume
        is backed by it. Evicting an image that is not cached succeeds."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        with self.svc.evicting(cmd.storage_uuid, cmd.image_id):
            return EvictCacheReply(evicted=ImageCache(sr, self.svc.tool).evict(cmd.image_id))
