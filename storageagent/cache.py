"""The image cache of one primary storage.

An image is downloaded into ``.kvmcloud/partial``, its digest verified while the
bytes stream in, its format checked with qemu-img, and only then renamed to
``imagecache/<imageId>.<format>`` beside an ``<imageId>.json`` record. A
half-downloaded image therefore never appears in the cache, and a failed or
cancelled download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from agentcore.errors import AgentError, Conflict, InUse, InvalidRequest
from agentcore.task import TaskContext
from storageagent.layout import META_DIR, StorageRoot, atomic_write_json
from storageagent.models import CachedImage
from storageagent.qcow2 import children_of
from storageagent.qemuimg import ImageTool

log = logging.getLogger(__name__)

CACHE_FORMATS = ("qcow2", "raw")


class DigestMismatch(AgentError):
    """The downloaded bytes are not the image the command named."""

    code = "DIGEST_MISMATCH"
    http_status = 502
    default_message = "the downloaded image does not match its digest"


@dataclass(frozen=True)
class Fetched:
    """What a fetcher wrote: the sha256 digest (``sha256:<hex>``) and size."""

    digest: str
    size: int


#: writes the image to the given path (a new file) and returns what it wrote
Fetcher = Callable[[TaskContext, Path], Fetched]


class ImageCache:
    """The cached images of one storage."""

    def __init__(self, sr: StorageRoot, tool: ImageTool) -> None:
        self.sr = sr
        self.tool = tool

    def _meta(self, image_id: str) -> Path:
        return self.sr.cache / f"{image_id}.json"

    def get(self, image_id: str) -> CachedImage | None:
        """The cached image, or None if it is not (completely) in the cache."""
        try:
            img = CachedImage.model_validate_json(self._meta(image_id).read_text())
        except (OSError, ValueError):
            return None
        if not (self.sr.root / img.install_path).is_file():
            return None
        return img

    def path(self, img: CachedImage) -> Path:
        return self.sr.root / img.install_path

    def list(self) -> list[CachedImage]:
        if not self.sr.cache.is_dir():
            return []
        out = []
        for meta in sorted(self.sr.cache.glob("*.json")):
            img = self.get(meta.stem)
            if img is not None:
                out.append(img)
        return out

    def fill(self, ctx: TaskContext, image_id: str, digest: str, size: int | None,
             fetch: Fetcher) -> tuple[CachedImage, bool]:
        """The cached image, downloading it first if needed; (image, downloaded)."""
        have = self.get(image_id)
        if have is not None:
            if have.digest != digest:
                raise Conflict("the cache holds another image under this imageId",
                               field="digest", imageId=image_id, cached=have.digest)
            return have, False
        tmp = self.sr.tmp_file(f"cache-{image_id}")
        try:
            got = fetch(ctx, tmp)
            if got.digest != digest:
                raise DigestMismatch(field="digest", expected=digest, actual=got.digest)
            if size is not None and got.size != size:
                raise DigestMismatch("the downloaded image has another size", field="size",
                                     expected=size, actual=got.size)
            ctx.check()
            info = self.tool.info_chain(ctx, tmp)[0]
            if info.format not in CACHE_FORMATS:
                raise InvalidRequest(f"image format {info.format!r} cannot be cached",
                                     field="source", format=info.format)
            if info.backing_filename:
                # a backing file could name any file of the host: refuse it
                raise InvalidRequest("an image with a backing file cannot be cached",
                                     field="source", backing=info.backing_filename)
            self.sr.cache.mkdir(parents=True, exist_ok=True)
            final = self.sr.cache / f"{image_id}.{info.format}"
            img = CachedImage(
                image_id=image_id, install_path=self.sr.relative(self.sr.cache) + "/" + final.name,
                format=info.format, virtual_size=info.virtual_size, size=got.size,
                digest=got.digest, cached_at=time.time(),
            )
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            atomic_write_json(self._meta(image_id), img.wire())
            return img, True
        finally:
            tmp.unlink(missing_ok=True)

    def evict(self, image_id: str) -> bool:
        """Remove the image unless a file of the storage is backed by it."""
        img = self.get(image_id)
        meta = self._meta(image_id)
        if img is None:
            meta.unlink(missing_ok=True)
            return False
        path = self.path(img)
        users = children_of(self.sr.root, path, skip=(META_DIR,))
        if users:
            raise InUse("volumes are backed by the image", imageId=image_id,
                        volumes=[self.sr.relative(u) for u in users[:20]], count=len(users))
        meta.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return True


def http_fetcher(url: str, read_timeout: float, total_timeout: float) -> Fetcher:
    """Download ``url``, hashing as the bytes arrive; cancel and deadline stop it."""

    def fetch(ctx: TaskContext, dest: Path) -> Fetched:
        h = hashlib.sha256()
        done = 0
        timeout = httpx.Timeout(ctx.remaining(read_timeout), connect=min(10.0, read_timeout))
        end = time.monotonic() + total_timeout
        try:
            with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as r:
                if r.status_code != 200:
                    raise DownloadFailed(f"GET returned HTTP {r.status_code}", url=url,
                                         status=r.status_code)
                total = int(r.headers.get("content-length") or 0) or None
                ctx.on_stop(r.close)  # unblocks a read waiting on a stalled server
                with open(dest, "xb") as f:
                    for chunk in r.iter_bytes():
                        ctx.check()
                        if time.monotonic() > end:
                            raise DownloadFailed("the download took too long", url=url)
                        f.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        ctx.progress(stage="download", done=done, total=total, unit="bytes")
        except AgentError:
            raise
        except Exception as e:
            ctx.check()  # a cancel closes the stream: report the cancel, not the broken read
            if isinstance(e, httpx.HTTPError | httpx.StreamError):
                raise DownloadFailed(f"{type(e).__name__}: {e}", url=url) from e
            raise
        ctx.progress(100.0, stage="download", done=done, total=done, unit="bytes", force=True)
        return Fetched(f"sha256:{h.hexdigest()}", done)

    return fetch


class DownloadFailed(AgentError):
    """The image source could not be read."""

    code = "DOWNLOAD_FAILED"
    http_status = 502
    default_message = "the image could not be downloaded"
