"""The local content-addressed image store (see :mod:`sftpbackup.manifest` for the layout).

Writes are atomic: a chunk is written in a private work directory under
``tmp/``, fsynced and renamed to its digest; a manifest is written the same
way, last, after every chunk it names is in place. A crash therefore leaves
at worst unreferenced chunks and temporary files, which :meth:`ImageStore.gc`
removes. No link below the root is ever followed (the SFTP store user can
plant them): see :mod:`sftpbackup.storefs`.

GC and adds of this process serialise on a per-store lock: an add registers
each chunk in its pending file and puts the chunk under the lock, and GC reads
pending files, then manifests, then deletes, all under the lock. Writers on
other hosts (hosts uploading over SFTP) write their pending file first and
touch the chunks they reuse; GC's grace period (by mtime) covers them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agentcore.errors import PathEscape
from agentcore.task import TaskContext
from sftpbackup import manifest as layout
from sftpbackup.errors import ImageExists, ImageNotFound, StoreMismatch, StoreNotInitialised
from sftpbackup.manifest import Manifest, chunk_relpath, manifest_relpath
from sftpbackup.models import check_image_id
from sftpbackup.storefs import LinkRefused, StoreFs

log = logging.getLogger(__name__)

#: threads fsyncing chunk directories at the end of an add
SYNC_THREADS = 32

_LOCKS: dict[Path, threading.RLock] = {}
_LOCKS_MU = threading.Lock()


def _store_lock(root: Path) -> threading.RLock:
    with _LOCKS_MU:
        return _LOCKS.setdefault(root, threading.RLock())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class VerifyResult:
    images_checked: int = 0
    chunks_checked: int = 0
    bad_chunks: list[str] = field(default_factory=list)
    missing_chunks: list[str] = field(default_factory=list)
    bad_images: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad_chunks or self.missing_chunks or self.bad_images)


@dataclass
class GcResult:
    chunks_removed: int = 0
    bytes_freed: int = 0
    chunks_kept: int = 0
    temp_files_removed: int = 0


class Pending:
    """The chunks an add in progress has put; GC keeps them until the manifest is in."""

    def __init__(self, store: ImageStore, token: str) -> None:
        self.store = store
        self.token = token
        self.rel = f"{layout.PENDING}/{token}"
        self.digests: set[str] = set()
        self._unsynced: set[str] = set()  # chunk directories renamed into since the last sync()
        fd = store.fs.open(self.rel, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._f = os.fdopen(fd, "a")  # closed in close()

    def put_chunk(self, digest: str, tmp: Path | None) -> bool:
        """Register ``digest`` and move ``tmp`` (a work file in a private dir) into
        place, or drop it if the chunk is already stored. Returns True when the
        chunk is new.

        ``tmp`` is fsynced before the store lock is taken, so several writers
        flush in parallel; registration and rename happen under the lock. The
        chunk's directory is fsynced later by :meth:`sync`, once for all the
        chunks an add put there (a journal commit per chunk, under the lock,
        was the add's largest cost)."""
        if tmp is not None:
            fsync_file(tmp)
        with self.store.lock:
            if digest not in self.digests:
                self._f.write(digest + "\n")
                self._f.flush()
                self.digests.add(digest)
            if self.store.touch_chunk(digest):
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
                return False
            if tmp is None:
                raise FileNotFoundError(f"chunk {digest} is neither stored nor given")
            rel = chunk_relpath(digest)
            self.store.fs.publish(tmp, rel, sync=False)
            self._unsynced.add(rel.rpartition("/")[0])
            return True

    def sync(self) -> None:
        """Make the renames of :meth:`put_chunk` durable: fsync each chunk directory
        it renamed into. :meth:`ImageStore.write_manifest` calls it before the manifest."""
        with self.store.lock:
            dirs = sorted(self._unsynced)
            self._unsynced.clear()
        if len(dirs) <= 1:
            for rel in dirs:
                self.store.fs.sync_dir(rel)
            return
        # in parallel: each fsync waits for a disk cache flush, and concurrent ones share it
        with ThreadPoolExecutor(min(SYNC_THREADS, len(dirs)), thread_name_prefix="dir-sync") as pool:
            list(pool.map(self.store.fs.sync_dir, dirs))

    def close(self) -> None:
        self._f.close()
        self.store.fs.unlink(self.rel)


class ImageStore:
    """One store directory on this host (see :mod:`sftpbackup.storefs` for how it is walked)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.fs = StoreFs(self.root)
        self.lock = _store_lock(self.root)

    # -- opening ------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, storage_uuid: str) -> ImageStore:
        """Create the layout (idempotent); refuse a directory of another storage."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root)
        marker = store.read_marker()
        if marker is not None:
            cls._check_marker(root, marker, storage_uuid)
        for d in (layout.MANIFESTS, layout.PENDING, layout.TMP):
            store.fs.makedirs(d)
        for i in range(256):
            store.fs.makedirs(f"{layout.CHUNKS}/{i:02x}")
        if marker is None:
            store.write_file(layout.MARKER, json.dumps({"backupStorageUuid": storage_uuid, "version": 1}).encode())
        return store

    @classmethod
    def open(cls, root: Path, storage_uuid: str) -> ImageStore:
        store = cls(Path(root))
        marker = store.read_marker()
        if marker is None:
            raise StoreNotInitialised(root=str(root))
        cls._check_marker(store.root, marker, storage_uuid)
        return store

    def read_marker(self) -> bytes | None:
        try:
            return self.fs.read(layout.MARKER)
        except FileNotFoundError:
            return None

    @staticmethod
    def _check_marker(root: Path, marker: bytes, storage_uuid: str) -> None:
        owner = json.loads(marker).get("backupStorageUuid")
        if owner != storage_uuid:
            raise StoreMismatch(root=str(root), owner=owner, requested=storage_uuid)

    # -- paths and files ----------------------------------------------------

    def chunk_path(self, digest: str) -> Path:
        """Where a chunk is (for messages and tests: the agent itself goes through ``fs``)."""
        return self.root / chunk_relpath(digest)

    def _manifest_rel(self, image_id: str) -> str:
        try:
            check_image_id(image_id)
        except ValueError as e:
            raise PathEscape(str(e), image_uuid=image_id) from e
        return manifest_relpath(image_id)

    def manifest_path(self, image_id: str) -> Path:
        return self.root / self._manifest_rel(image_id)

    @contextlib.contextmanager
    def workdir(self, token: str | None = None) -> Iterator[Path]:
        """A private directory for work files (under ``tmp/``, named after ``token``
        so GC spares it while the add runs); removed with its content on exit."""
        with self.fs.private_dir(layout.TMP, f"work.{token or uuid.uuid4().hex}") as d:
            yield d

    def write_file(self, rel: str, data: bytes) -> None:
        """Write ``rel`` atomically: a private work file, fsynced, renamed into place."""
        with self.workdir() as work:
            tmp = work / "file"
            tmp.write_bytes(data)
            fsync_file(tmp)
            self.fs.publish(tmp, rel)

    # -- chunks -------------------------------------------------------------

    def touch_chunk(self, digest: str) -> bool:
        """True if the chunk is stored; refreshes its mtime so GC's grace covers a reuse."""
        return self.fs.touch(chunk_relpath(digest))

    def has_chunk(self, digest: str) -> bool:
        return self.fs.lstat(chunk_relpath(digest)) is not None

    def read_chunk(self, digest: str) -> bytes:
        return self.fs.read(chunk_relpath(digest))

    def chunk_sha256(self, digest: str) -> str:
        """The sha256 of the stored chunk's bytes (read without following links)."""
        with os.fdopen(self.fs.open(chunk_relpath(digest)), "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def link_chunk(self, digest: str, dst: Path) -> None:
        """Hard-link the stored chunk into a private work dir (its inode, never a link's target)."""
        self.fs.link_out(chunk_relpath(digest), dst)

    @contextlib.contextmanager
    def pending(self, token: str | None = None) -> Iterator[Pending]:
        """Register an add in progress for as long as the block runs."""
        p = Pending(self, token or uuid.uuid4().hex)
        try:
            yield p
        finally:
            p.close()

    # -- manifests ----------------------------------------------------------

    def read_manifest(self, image_id: str) -> Manifest:
        rel = self._manifest_rel(image_id)
        try:
            return Manifest.loads(self.fs.read(rel))
        except FileNotFoundError as e:
            raise ImageNotFound(image_uuid=image_id) from e

    def find_manifest(self, image_id: str) -> Manifest | None:
        try:
            return self.read_manifest(image_id)
        except ImageNotFound:
            return None

    def write_manifest(self, m: Manifest, pending: Pending | None = None) -> bool:
        """Publish ``m`` after checking its chunks are stored; False if the same
        image was already there, :class:`ImageExists` if another one is.

        ``pending`` (the add that put the chunks) is synced first, so every
        chunk the manifest names is durable before the manifest is."""
        rel = self._manifest_rel(m.image_id)
        if pending is not None:
            pending.sync()
        with self.lock:
            existing = self.find_manifest(m.image_id)
            if existing is not None:
                if existing.digest != m.digest:
                    raise ImageExists(image_uuid=m.image_id, digest=existing.digest)
                return False
            missing = [d for d in m.unique_digests() if not self.has_chunk(d)]
            if missing:
                raise FileNotFoundError(f"chunks missing before publishing {m.image_id}: {missing[:3]}")
            self.write_file(rel, m.dumps())
            return True

    def delete_manifest(self, image_id: str) -> bool:
        rel = self._manifest_rel(image_id)
        with self.lock:
            return self.fs.unlink(rel)

    def manifests(self) -> list[Manifest]:
        out: list[Manifest] = []
        with self.fs.scandir(layout.MANIFESTS) as it:
            names = sorted(e.name for e in it if e.name.endswith(".json"))
        for name in names:
            try:
                out.append(Manifest.loads(self.fs.read(f"{layout.MANIFESTS}/{name}")))
            except (ValueError, OSError, LinkRefused):
                log.warning("unreadable manifest %s", name)
        return out

    # -- verify, gc, capacity ----------------------------------------------------

    def iter_chunks(self) -> Iterator[tuple[int, os.DirEntry[str]]]:
        """Each chunk entry with the fd of its directory (valid while iterating)."""
        for i in range(256):
            try:
                fd = self.fs.open_dir(f"{layout.CHUNKS}/{i:02x}")
            except FileNotFoundError:
                continue
            try:
                with os.scandir(fd) as it:
                    yield from ((fd, e) for e in it if layout.DIGEST_RE.fullmatch(e.name))
            finally:
                os.close(fd)

    def verify(self, image_ids: Iterable[str] | None = None, ctx: TaskContext | None = None) -> VerifyResult:
        """Re-hash every chunk (or those of ``image_ids``) and check every manifest's chunks exist."""
        res = VerifyResult()
        if image_ids is None:
            manifests = self.manifests()
            digests: set[str] = {e.name for _, e in self.iter_chunks()}
        else:
            manifests = [self.read_manifest(i) for i in image_ids]
            digests = set()
        for m in manifests:
            digests.update(m.unique_digests())
        bad: set[str] = set()
        missing: set[str] = set()
        for n, d in enumerate(sorted(digests)):
            if ctx is not None:
                ctx.check()
                ctx.progress(done=n, total=len(digests), unit="chunks", stage="verify")
            try:
                if self.chunk_sha256(d) != d:
                    bad.add(d)
            except FileNotFoundError:
                missing.add(d)
            except LinkRefused:
                bad.add(d)
            res.chunks_checked += 1
        for m in manifests:
            res.images_checked += 1
            if any(d in bad or d in missing for d in m.unique_digests()):
                res.bad_images.append(m.image_id)
        res.bad_chunks = sorted(bad)
        res.missing_chunks = sorted(missing)
        return res

    def gc(self, grace: float, stale: float, active_tokens: set[str] | None = None) -> GcResult:
        """Remove unreferenced chunks older than ``grace`` seconds and temporary
        files older than ``stale`` seconds (never those of ``active_tokens``).
        Links planted in the store are removed like stale files, never followed."""
        res = GcResult()
        active = active_tokens or set()
        now = time.time()
        with self.lock:
            keep: set[str] = set()
            with self.fs.scandir(layout.PENDING) as it:
                pending = [(e.name, e.stat(follow_symlinks=False)) for e in it]
            for name, st in pending:
                rel = f"{layout.PENDING}/{name}"
                if not stat.S_ISREG(st.st_mode) or (name not in active and now - st.st_mtime > stale):
                    self.fs.unlink(rel)
                    res.temp_files_removed += 1
                    continue
                with contextlib.suppress(FileNotFoundError):
                    keep.update(self.fs.read(rel).decode(errors="replace").split())
            for m in self.manifests():
                keep.update(m.unique_digests())
            for fd, e in self.iter_chunks():
                st = e.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and (e.name in keep or now - st.st_mtime < grace):
                    res.chunks_kept += 1
                    continue
                os.unlink(e.name, dir_fd=fd)
                res.chunks_removed += 1
                res.bytes_freed += st.st_size if stat.S_ISREG(st.st_mode) else 0
            with self.fs.scandir(layout.TMP) as it:
                tmp = [(e.name, e.stat(follow_symlinks=False)) for e in it]
            for name, st in tmp:
                if any(name.endswith(t) for t in active) or now - st.st_mtime <= stale:
                    continue
                rel = f"{layout.TMP}/{name}"
                if stat.S_ISDIR(st.st_mode):
                    self.fs.rmtree(rel)
                else:
                    self.fs.unlink(rel)
                res.temp_files_removed += 1
        return res

    def capacity(self) -> tuple[int, int, int]:
        """(total, available, bytes of chunk files) of the store's filesystem."""
        st = os.statvfs(self.root)
        used = 0
        for _, e in self.iter_chunks():
            est = e.stat(follow_symlinks=False)
            used += est.st_size if stat.S_ISREG(est.st_mode) else 0
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, used
