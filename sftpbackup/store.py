"""The local content-addressed image store (see :mod:`sftpbackup.manifest` for the layout).

Writes are atomic: a chunk is written under ``tmp/``, fsynced and renamed to
its digest; a manifest is written the same way, last, after every chunk it
names is in place. A crash therefore leaves at worst unreferenced chunks and
temporary files, which :meth:`ImageStore.gc` removes.

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
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agentcore.errors import PathEscape
from agentcore.task import TaskContext
from sftpbackup import manifest as layout
from sftpbackup.errors import ImageExists, ImageNotFound, StoreMismatch, StoreNotInitialised
from sftpbackup.manifest import Manifest, chunk_relpath, manifest_relpath
from sftpbackup.models import check_image_id

log = logging.getLogger(__name__)

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
        self.path = store.root / layout.PENDING / token
        self.digests: set[str] = set()
        self._f = open(self.path, "a")  # closed in close()

    def put_chunk(self, digest: str, tmp: Path | None) -> bool:
        """Register ``digest`` and move ``tmp`` into place (or drop it if the
        chunk is already stored). Returns True when the chunk is new.

        ``tmp`` is fsynced before the store lock is taken, so several writers
        flush in parallel; registration and rename happen under the lock."""
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
            os.replace(tmp, self.store.chunk_path(digest))
            return True

    def close(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


class ImageStore:
    """One store directory on this host."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock = _store_lock(self.root)

    # -- opening ------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, storage_uuid: str) -> ImageStore:
        """Create the layout (idempotent); refuse a directory of another storage."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        marker = root / layout.MARKER
        if marker.exists():
            cls._check_marker(marker, storage_uuid)
        for d in (layout.MANIFESTS, layout.PENDING, layout.TMP):
            (root / d).mkdir(exist_ok=True)
        for i in range(256):
            (root / layout.CHUNKS / f"{i:02x}").mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            tmp = root / layout.TMP / f"store.json.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps({"backupStorageUuid": storage_uuid, "version": 1}))
            fsync_file(tmp)
            os.replace(tmp, marker)
            fsync_dir(root)
        return cls(root)

    @classmethod
    def open(cls, root: Path, storage_uuid: str) -> ImageStore:
        marker = Path(root) / layout.MARKER
        if not marker.exists():
            raise StoreNotInitialised(root=str(root))
        cls._check_marker(marker, storage_uuid)
        return cls(Path(root))

    @staticmethod
    def _check_marker(marker: Path, storage_uuid: str) -> None:
        owner = json.loads(marker.read_text()).get("backupStorageUuid")
        if owner != storage_uuid:
            raise StoreMismatch(root=str(marker.parent), owner=owner, requested=storage_uuid)

    # -- paths --------------------------------------------------------------

    def chunk_path(self, digest: str) -> Path:
        return self.root / chunk_relpath(digest)

    def manifest_path(self, image_id: str) -> Path:
        try:
            check_image_id(image_id)
        except ValueError as e:
            raise PathEscape(str(e), image_uuid=image_id) from e
        return self.root / manifest_relpath(image_id)

    def new_tmp(self, hint: str, token: str | None = None) -> Path:
        """A temporary name; one ending in an add's token is kept by GC while it runs."""
        return self.root / layout.TMP / f"{hint}.{token or uuid.uuid4().hex}"

    # -- chunks -------------------------------------------------------------

    def touch_chunk(self, digest: str) -> bool:
        """True if the chunk is stored; refreshes its mtime so GC's grace covers a reuse."""
        try:
            os.utime(self.chunk_path(digest))
            return True
        except FileNotFoundError:
            return False

    def has_chunk(self, digest: str) -> bool:
        return self.chunk_path(digest).exists()

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
        path = self.manifest_path(image_id)
        try:
            return Manifest.loads(path.read_bytes())
        except FileNotFoundError as e:
            raise ImageNotFound(image_uuid=image_id) from e

    def find_manifest(self, image_id: str) -> Manifest | None:
        try:
            return self.read_manifest(image_id)
        except ImageNotFound:
            return None

    def write_manifest(self, m: Manifest) -> bool:
        """Publish ``m`` after checking its chunks are stored; False if the same
        image was already there, :class:`ImageExists` if another one is."""
        path = self.manifest_path(m.image_id)
        with self.lock:
            existing = self.find_manifest(m.image_id)
            if existing is not None:
                if existing.digest != m.digest:
                    raise ImageExists(image_uuid=m.image_id, digest=existing.digest)
                return False
            missing = [d for d in m.unique_digests() if not self.has_chunk(d)]
            if missing:
                raise FileNotFoundError(f"chunks missing before publishing {m.image_id}: {missing[:3]}")
            tmp = self.new_tmp(f"{m.image_id}.json")
            tmp.write_bytes(m.dumps())
            fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            return True

    def delete_manifest(self, image_id: str) -> bool:
        path = self.manifest_path(image_id)
        with self.lock:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            fsync_dir(path.parent)
            return True

    def manifests(self) -> list[Manifest]:
        out: list[Manifest] = []
        for p in sorted((self.root / layout.MANIFESTS).glob("*.json")):
            try:
                out.append(Manifest.loads(p.read_bytes()))
            except (ValueError, OSError):
                log.warning("unreadable manifest %s", p)
        return out

    # -- verify, gc, capacity ----------------------------------------------------

    def iter_chunks(self) -> Iterator[os.DirEntry[str]]:
        for i in range(256):
            d = self.root / layout.CHUNKS / f"{i:02x}"
            with contextlib.suppress(FileNotFoundError), os.scandir(d) as it:
                yield from (e for e in it if layout.DIGEST_RE.fullmatch(e.name))

    def verify(self, image_ids: Iterable[str] | None = None, ctx: TaskContext | None = None) -> VerifyResult:
        """Re-hash every chunk (or those of ``image_ids``) and check every manifest's chunks exist."""
        res = VerifyResult()
        if image_ids is None:
            manifests = self.manifests()
            digests: set[str] = {e.name for e in self.iter_chunks()}
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
                if file_sha256(self.chunk_path(d)) != d:
                    bad.add(d)
            except FileNotFoundError:
                missing.add(d)
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
        files older than ``stale`` seconds (never those of ``active_tokens``)."""
        res = GcResult()
        active = active_tokens or set()
        now = time.time()
        with self.lock:
            keep: set[str] = set()
            for p in (self.root / layout.PENDING).iterdir():
                if p.name not in active and now - p.stat().st_mtime > stale:
                    p.unlink(missing_ok=True)
                    res.temp_files_removed += 1
                    continue
                with contextlib.suppress(FileNotFoundError):
                    keep.update(p.read_text().split())
            for m in self.manifests():
                keep.update(m.unique_digests())
            for e in self.iter_chunks():
                st = e.stat()
                if e.name in keep or now - st.st_mtime < grace:
                    res.chunks_kept += 1
                    continue
                os.unlink(e.path)
                res.chunks_removed += 1
                res.bytes_freed += st.st_size
            for p in (self.root / layout.TMP).iterdir():
                if any(p.name.endswith(t) for t in active):
                    continue
                if now - p.lstat().st_mtime > stale:
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    res.temp_files_removed += 1
        return res

    def capacity(self) -> tuple[int, int, int]:
        """(total, available, bytes of chunk files) of the store's filesystem."""
        st = os.statvfs(self.root)
        used = sum(e.stat().st_size for e in self.iter_chunks())
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize, used
