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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentcore.errors import AgentError, Conflict, InUse, InvalidRequest, ProcessFailed
from agentcore.fsmode import SHARED, make_dirs
from agentcore.task import TaskContext
from storageagent.layout import META_DIR, StorageRoot, atomic_write_json
from storageagent.models import CachedImage
from storageagent.qcow2 import children_of
from storageagent.qemuimg import ImageTool

log = logging.getLogger(__name__)

CACHE_FORMATS = ("qcow2", "raw")
READ_CHUNK = 1 << 20


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
            make_dirs(self.sr.cache, SHARED)
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
    """Download ``url`` with curl while a thread hashes the file as it grows.

    curl moves the bytes (parsing HTTP in Python halved the rate, measured in
    the benchmark); the follower reads them back from the page cache and hashes
    them as they land, so the digest is ready when curl exits. Cancel and the
    deadline kill curl (it runs through the task's runner).
    """

    def fetch(ctx: TaskContext, dest: Path) -> Fetched:
        dest.touch(exist_ok=False)
        finished = threading.Event()
        follower = _Follower(ctx, dest, finished)
        follower.start()
        argv = [
            "curl", "--fail", "--silent", "--show-error", "--location", "--proto", "=http,https",
            "--proto-redir", "=http,https", "--connect-timeout", str(int(min(30.0, read_timeout)) or 1),
            "--speed-limit", "1", "--speed-time", str(max(1, int(read_timeout))),
            "--output", str(dest), url,
        ]
        try:
            ctx.run(argv, timeout=total_timeout)
        except ProcessFailed as e:
            raise DownloadFailed(str(e.details.get("stderr", "")).strip()[-500:] or e.message,
                                 url=url, returncode=e.details.get("returncode")) from e
        finally:
            finished.set()
            follower.join()
        if follower.error is not None:
            raise follower.error
        ctx.progress(100.0, stage="download", done=follower.done, total=follower.done, unit="bytes",
                     force=True)
        return Fetched(f"sha256:{follower.hash.hexdigest()}", follower.done)

    return fetch


class _Follower(threading.Thread):
    """Hashes a file while another process appends to it, until told it is complete."""

    def __init__(self, ctx: TaskContext, path: Path, finished: threading.Event) -> None:
        super().__init__(daemon=True, name=f"hash-{path.name}")
        self.ctx, self.path, self.finished = ctx, path, finished
        self.hash = hashlib.sha256()
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # one reused buffer: a fresh multi-MiB bytes object per read costs page faults
            buf = bytearray(READ_CHUNK)
            view = memoryview(buf)
            with open(self.path, "rb", buffering=0) as f:
                while True:
                    complete = self.finished.is_set()  # read before the read that may hit EOF
                    n = f.readinto(view)
                    if n:
                        self.hash.update(view[:n])
                        self.done += n
                        self.ctx.progress(stage="download", done=self.done, unit="bytes")
                    elif complete:
                        return
                    else:
                        self.finished.wait(0.005)
        except BaseException as e:  # handed to the task's thread
            self.error = e


class DownloadFailed(AgentError):
    """The image source could not be read."""

    code = "DOWNLOAD_FAILED"
    http_status = 502
    default_message = "the image could not be downloaded"
