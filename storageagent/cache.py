"""The image cache of one primary storage.

An image is downloaded into ``.kvmcloud/partial``, its digest verified while the
bytes stream in, its format read from its first bytes and checked with
``qemu-img info -f <format>`` (no backing file, no external data file), and only then renamed to
``imagecache/<imageId>.<format>`` beside an ``<imageId>.json`` record. A
half-downloaded image therefore never appears in the cache, and a failed or
cancelled download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentcore.errors import AgentError, Conflict, InUse, InvalidRequest, PathEscape, ProcessFailed
from agentcore.fetchpolicy import MAX_REDIRECTS, Destination, check_url
from agentcore.fsmode import SHARED, make_dirs
from agentcore.task import TaskContext
from storageagent.layout import CACHE_DIR, META_DIR, StorageRoot, atomic_write_json
from storageagent.models import CachedImage
from storageagent.qcow2 import children_of, read_header
from storageagent.qemuimg import ImageInfo, ImageTool

log = logging.getLogger(__name__)

CACHE_FORMATS = ("qcow2", "raw")
#: magic numbers of formats refused rather than cached as raw bytes
REFUSED_MAGIC = {b"KDMV": "vmdk", b"# Disk Descriptor": "vmdk", b"vhdxfile": "vhdx",
                 b"QED\x00": "qed", b"conectix": "vpc", b"LUKS\xba\xbe": "luks"}
READ_CHUNK = 1 << 20


class DigestMismatch(AgentError):
    """The downloaded bytes are not the image the command named."""

    code = "DIGEST_MISMATCH"
    default_message = "the downloaded image does not match its digest"


@dataclass(frozen=True)
class Fetched:
    """What a fetcher wrote: the sha256 digest (``sha256:<hex>``) and size."""

    digest: str
    size: int


#: writes the image to the given path (a new file) and returns what it wrote
Fetcher = Callable[[TaskContext, Path], Fetched]


class ImageCache:
    """The cached images of one storage.

    The metadata (``imagecache/<id>.json``) lives on shared storage, where
    another host or the file server could have written it: a path is never
    taken from it. The image's file is ``imagecache/<id>.<format>``, derived
    from the id and a known format, must be a regular file (not a symlink) in
    the storage's own ``imagecache`` directory, and every unlink stays there.
    """

    def __init__(self, sr: StorageRoot, tool: ImageTool) -> None:
        self.sr = sr
        self.tool = tool

    def _dir(self) -> Path | None:
        """The cache directory, or None if it is missing or not a real directory
        of the storage (a symlink could point anywhere on the host)."""
        d = self.sr.cache
        try:
            st = os.lstat(d)
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode) or os.path.realpath(d) != str(d):
            return None
        return d

    def _meta(self, image_id: str) -> Path:
        return self.sr.cache / f"{image_id}.json"

    def _file(self, image_id: str, fmt: str) -> Path:
        return self.sr.cache / f"{image_id}.{fmt}"

    def get(self, image_id: str) -> CachedImage | None:
        """The cached image, or None if it is not (completely and soundly) in the cache."""
        if self._dir() is None or "/" in image_id or image_id in ("", ".", ".."):
            return None
        try:
            img = CachedImage.model_validate_json(_read_regular(self._meta(image_id)))
        except (OSError, ValueError):
            return None
        if img.image_id != image_id or img.format not in CACHE_FORMATS:
            return None
        if not _is_regular(self._file(image_id, img.format)):
            return None
        # the reply names the derived file, whatever the record says
        return img.model_copy(update={"install_path": f"{CACHE_DIR}/{image_id}.{img.format}"})

    def path(self, img: CachedImage) -> Path:
        """The image's file, derived from its id and format (never from the record's path)."""
        return self._file(img.image_id, img.format)

    def list(self) -> list[CachedImage]:
        d = self._dir()
        if d is None:
            return []
        out = []
        for meta in sorted(d.glob("*.json")):
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
            got, fmt, info = fetch_checked(ctx, self.tool, tmp, digest, size, fetch)
            make_dirs(self.sr.cache, SHARED)
            if self._dir() is None:
                raise PathEscape("the image cache is not a directory of the storage",
                                 path=CACHE_DIR)
            final = self._file(image_id, fmt)
            img = CachedImage(
                image_id=image_id, install_path=f"{CACHE_DIR}/{final.name}",
                format=fmt, virtual_size=info.virtual_size, size=got.size,
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
        if self._dir() is None:
            return False
        meta = self._meta(image_id)
        img = self.get(image_id)
        if img is None:
            _unlink_entry(meta)
            return False
        path = self.path(img)
        users = children_of(self.sr.root, path, skip=(META_DIR,))
        if users:
            raise InUse("volumes are backed by the image", imageId=image_id,
                        volumes=[self.sr.relative(u) for u in users[:20]], count=len(users))
        _unlink_entry(meta)
        _unlink_entry(path)
        return True


def fetch_checked(ctx: TaskContext, tool: ImageTool, tmp: Path, digest: str, size: int | None,
                  fetch: Fetcher) -> tuple[Fetched, str, ImageInfo]:
    """Fetch an untrusted image into ``tmp`` and check it: the digest (and
    size) the command named, a format read from its first bytes, no external
    data file and no backing file (either could name any file of the host).
    Returns what was fetched, the format and qemu-img's word on the file."""
    got = fetch(ctx, tmp)
    if got.digest != digest:
        raise DigestMismatch(field="digest", expected=digest, actual=got.digest)
    if size is not None and got.size != size:
        raise DigestMismatch("the downloaded image has another size", field="size",
                             expected=size, actual=got.size)
    ctx.check()
    fmt = sniff_format(tmp)
    header = read_header(tmp) if fmt == "qcow2" else None
    if header is not None and header.backing_file:
        # refused before qemu-img follows the name anywhere
        raise InvalidRequest("an image with a backing file is refused", field="source",
                             backing=header.backing_file)
    info = tool.info_chain(ctx, tmp, fmt)[0]
    if info.backing_filename:
        raise InvalidRequest("an image with a backing file is refused",
                             field="source", backing=info.backing_filename)
    return got, fmt, info


def sniff_format(path: Path) -> str:
    """``qcow2`` or ``raw`` from a downloaded file's first bytes, without qemu-img.

    qemu-img's own probing would also open formats (vmdk descriptors, for one)
    that name other files; here anything else is refused, or is raw bytes.
    A qcow2 keeping its data in an external file is refused before qemu-img
    ever opens it (the file it names could be any file of the host).
    """
    with open(path, "rb") as f:
        head = f.read(32)
    header = read_header(path)
    if header is not None:
        if header.external_data_file:
            raise InvalidRequest("an image with an external data file cannot be cached",
                                 field="source")
        return "qcow2"
    for magic, name in REFUSED_MAGIC.items():
        if head.startswith(magic):
            raise InvalidRequest(f"image format {name!r} cannot be cached", field="source",
                                 format=name)
    return "raw"


def _read_regular(path: Path) -> str:
    """The text of ``path`` if it is a regular file; a symlink is not followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return f.read(1 << 16).decode()


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _unlink_entry(path: Path) -> None:
    """Remove a file of the cache directory; never anything a symlink leads to
    (unlink removes the link itself) and never outside the directory."""
    if os.path.realpath(path.parent) != str(path.parent):
        raise PathEscape("the image cache is not a directory of the storage", path=CACHE_DIR)
    path.unlink(missing_ok=True)


def http_fetcher(url: str, read_timeout: float, total_timeout: float, *,
                 allow_local: bool = False, max_bytes: int | None = None) -> Fetcher:
    """Download ``url`` with curl while a thread hashes the file as it grows.

    curl moves the bytes (parsing HTTP in Python halved the rate, measured in
    the benchmark); the follower reads them back from the page cache and hashes
    them as they land, so the digest is ready when curl exits. Cancel and the
    deadline kill curl (it runs through the task's runner).

    Redirects are followed here, not by curl: every hop's host is resolved and
    checked (:mod:`agentcore.fetchpolicy`) and curl is pinned to the checked
    address (``--resolve``), so neither the URL nor a redirect reaches the
    host's loopback services or a metadata service unless ``allow_local``.
    """

    def fetch(ctx: TaskContext, dest: Path) -> Fetched:
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                where = check_url(target, allow_local)
            except OSError:
                raise DownloadFailed("the source's host name does not resolve", url=url) from None
            follower, location = _get(ctx, where, dest, read_timeout, total_timeout, max_bytes)
            if location is None:
                ctx.progress(100.0, stage="download", done=follower.done, total=follower.done,
                             unit="bytes", force=True)
                return Fetched(f"sha256:{follower.hash.hexdigest()}", follower.done)
            target = urllib.parse.urljoin(target, location)
        raise DownloadFailed("the source redirects too often", url=url)

    return fetch


#: what a curl exit status means, said briefly (the remote status and body are
#: not echoed: they would make the agent a port scanner of its networks)
_CURL_REASONS = {
    6: "the source's host name does not resolve",
    22: "the source refused the request",
    28: "the download timed out",
    63: "the image is larger than its size",
}


def _get(ctx: TaskContext, where: Destination, dest: Path, read_timeout: float,
         total_timeout: float, max_bytes: int | None) -> tuple[_Follower, str | None]:
    """One GET into a fresh ``dest``; the hashing follower and the redirect target, if any."""
    dest.unlink(missing_ok=True)
    dest.touch(exist_ok=False)
    finished = threading.Event()
    follower = _Follower(ctx, dest, finished)
    follower.start()
    pins = [] if _is_ip(where.host) else [
        arg for a in where.addresses for arg in ("--resolve", f"{where.host}:{where.port}:{_bracket(a)}")]
    argv = [
        # -q first: no ~/.curlrc; no globbing, no proxy from the environment
        "curl", "-q", "--globoff", "--noproxy", "*", "--fail", "--silent", "--show-error",
        "--proto", "=http,https", "--max-redirs", "0", *pins,
        "--connect-timeout", str(int(min(30.0, read_timeout)) or 1),
        "--speed-limit", "1", "--speed-time", str(max(1, int(read_timeout))),
        *(["--max-filesize", str(max_bytes)] if max_bytes is not None else []),
        "--write-out", "%{http_code} %{redirect_url}",
        "--output", str(dest), where.url,
    ]
    try:
        res = ctx.run(argv, timeout=total_timeout)
    except ProcessFailed as e:
        code = e.details.get("returncode")
        log.warning("download of %s failed: curl exit %s: %s", where.url, code,
                    str(e.details.get("stderr", "")).strip()[-300:])
        reason = _CURL_REASONS.get(code, "the source could not be read") \
            if isinstance(code, int) else "the source could not be read"
        raise DownloadFailed(reason, url=where.url) from None
    finally:
        finished.set()
        follower.join()
    if follower.error is not None:
        raise follower.error
    status, _, location = res.stdout.strip().partition(" ")
    if status.startswith("3"):
        if not location:
            raise DownloadFailed("the source redirects without a location", url=where.url)
        return follower, location
    return follower, None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


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
    default_message = "the image could not be downloaded"
