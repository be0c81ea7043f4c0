"""Adding an image to the local store: fetch from a source, check it, chunk it in, publish."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from agentcore.task import TaskContext
from sftpbackup import sources
from sftpbackup.chunker import copy_range
from sftpbackup.errors import DigestMismatch, ImageExists, SizeMismatch, UnsupportedUrl
from sftpbackup.imageinfo import detect
from sftpbackup.manifest import CHUNK_SIZE, Manifest
from sftpbackup.models import AddImageCmd
from sftpbackup.store import ImageStore, Pending

log = logging.getLogger(__name__)

#: threads copying and fsyncing new chunks
WRITERS = 8


@dataclass(frozen=True)
class AddResult:
    manifest: Manifest
    new_chunks: int
    new_bytes: int


@dataclass(frozen=True)
class IngestPolicy:
    """What the agent's config allows add-image to read."""

    file_roots: list[Path]
    identity: sources.SshIdentity | None
    allow_local_urls: bool = False


def add_image(store: ImageStore, cmd: AddImageCmd, policy: IngestPolicy, ctx: TaskContext,
              token: str) -> AddResult:
    """Download ``cmd.url`` into the store as ``cmd.image_uuid``.

    Nothing becomes visible unless the size, digest and format checks pass:
    chunks go in under a pending registration and the manifest is written last.
    """
    existing = store.find_manifest(cmd.image_uuid)
    if existing is not None:
        if cmd.sha256 is None or cmd.sha256 == existing.digest:
            return AddResult(existing, 0, 0)
        raise ImageExists(image_uuid=cmd.image_uuid, digest=existing.digest)
    scheme = sources.scheme_of(cmd.url)
    with store.workdir(token) as work, store.pending(token) as pending:
        download = work / "download"
        stager = ChunkStager(store, work)
        if scheme == "file":
            got = sources.from_file(cmd.url, policy.file_roots, ctx, stager)
        elif scheme in ("http", "https"):
            got = sources.from_http(cmd.url, download, ctx, cmd.size, policy.allow_local_urls, stager)
        elif scheme == "sftp":
            got = sources.from_sftp(cmd.url, download, ctx, policy.identity, stager)
        else:
            raise UnsupportedUrl(url=cmd.url)
        ctx.check()
        if cmd.size is not None and got.size != cmd.size:
            raise SizeMismatch(f"got {got.size} bytes, the command announced {cmd.size}",
                               actual=got.size, expected=cmd.size)
        if cmd.sha256 is not None and got.digest != cmd.sha256:
            raise DigestMismatch(actual=got.digest, expected=cmd.sha256)
        detected = detect(got.path, ctx, cmd.format)
        m = Manifest(
            image_id=cmd.image_uuid, name=cmd.name, format=detected.format,  # type: ignore[arg-type]
            virtual_size=detected.virtual_size, size=got.size, digest=got.digest,
            chunk_size=CHUNK_SIZE, chunks=got.chunks,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        new_chunks, new_bytes = put_chunks(store, pending, m, got.path, work, ctx, stager.files)
        if got.path == download:
            # done with; gone before the syncs below, so they never wait to write it out
            download.unlink()
        store.write_manifest(m, pending)
    log.info("added image %s: %d bytes, %d chunks (%d new)", m.image_id, m.size, len(m.chunks), new_chunks)
    return AddResult(m, new_chunks, new_bytes)


class ChunkStager:
    """Writes each chunk the store lacks to its own file in ``work`` while the
    source is hashed (a :data:`~sftpbackup.chunker.ChunkSink`), so the copy
    overlaps the download and the kernel writes the chunks out meanwhile;
    :func:`put_chunks` then fsyncs them (in parallel) and renames them in.

    Called from several hashing threads; a digest seen twice is written once.
    Nothing reaches the store here: a failed check later removes ``work``."""

    def __init__(self, store: ImageStore, work: Path) -> None:
        self.store = store
        self.work = work
        self.files: dict[str, Path] = {}
        self._seen: set[str] = set()
        self._mu = threading.Lock()

    def __call__(self, index: int, offset: int, digest: str, data: bytes) -> None:
        with self._mu:
            if digest in self._seen:
                return
            self._seen.add(digest)
        if self.store.has_chunk(digest):
            return
        path = self.work / f"chunk-{digest}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        with self._mu:
            self.files[digest] = path


def put_chunks(store: ImageStore, pending: Pending, m: Manifest, src: Path, work: Path,
               ctx: TaskContext, staged: dict[str, Path] | None = None) -> tuple[int, int]:
    """Put the chunks of ``src`` the store lacks into it, through the private
    directory ``work``. Returns (new chunks, new bytes).

    ``staged`` chunks (already written, see :class:`ChunkStager`) are fsynced
    and renamed in; the others are first copied in the kernel. Several writers
    flush at once: parallel flushes keep the disk's queue full (measured: ~2x
    one writer)."""
    staged = staged or {}
    firsts: dict[str, int] = {}
    for off, c in m.offsets():
        firsts.setdefault(c.digest, off)
    sizes = m.unique_digests()
    to_write: list[str] = []
    for d in firsts:
        if d not in staged and store.has_chunk(d):
            try:
                pending.put_chunk(d, None)  # registered and touched: reused
                continue
            except FileNotFoundError:
                pass  # collected just now: write it again
        to_write.append(d)
    fd = os.open(src, os.O_RDONLY)

    def write(d: str) -> bool:
        ctx.check()
        if d in staged:
            return pending.put_chunk(d, staged[d])
        tmp = work / d
        copy_range(fd, tmp, firsts[d], sizes[d])
        return pending.put_chunk(d, tmp)

    new_chunks = new_bytes = done = 0
    total = sum(sizes[d] for d in to_write)
    pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="chunk-write")
    try:
        futures = {pool.submit(write, d): d for d in to_write}
        for f in as_completed(futures):
            d = futures[f]
            done += sizes[d]
            if f.result():
                new_chunks += 1
                new_bytes += sizes[d]
            ctx.progress(done=done, total=total, unit="bytes", stage="store")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        os.close(fd)
    return new_chunks, new_bytes
