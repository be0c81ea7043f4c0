"""Fixed-size chunking with sha256 per chunk and over the whole, in one pass.

Fixed 1 MiB chunks were chosen over content-defined chunking (FastCDC) by
measuring dedupe on real image pairs (see docs/sftpbackup.md): disk images
change in place at block-aligned offsets, so boundaries never shift and fixed
chunks dedupe as well or better, at no rolling-hash cost.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from sftpbackup.manifest import CHUNK_SIZE, ChunkRef, zero_digest

READ_SIZE = 1024 * 1024


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ChunkHasher:
    """Feed a byte stream in order; get its chunk list and whole-file sha256.

    Both digests are computed on one helper thread, in order (hashlib releases
    the GIL), so the caller's thread only receives and writes. At most
    ``MAX_QUEUED`` chunks wait for the helper: a slow hash slows the feeder
    instead of buffering the image in memory.
    """

    MAX_QUEUED = 16

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._whole = hashlib.sha256()
        self._buf = bytearray()
        self._futures: list[tuple[int, Future[str]]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chunk-hash")
        self.size = 0

    def _hash(self, chunk: bytes) -> str:
        self._whole.update(chunk)
        return _digest(chunk)

    def _submit(self, chunk: bytes) -> None:
        if len(self._futures) >= self.MAX_QUEUED:
            self._futures[-self.MAX_QUEUED][1].result()
        self._futures.append((len(chunk), self._pool.submit(self._hash, chunk)))

    def update(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if not self._buf and len(data) == self.chunk_size:
            self._submit(bytes(data))
            return
        self._buf += data
        while len(self._buf) >= self.chunk_size:
            chunk = bytes(self._buf[: self.chunk_size])
            del self._buf[: self.chunk_size]
            self._submit(chunk)

    def finish(self) -> tuple[list[ChunkRef], str]:
        """The chunk list and the whole-file digest (hex)."""
        if self._buf:
            chunk = bytes(self._buf)
            self._buf.clear()
            self._submit(chunk)
        try:
            chunks = [ChunkRef(digest=f.result(), size=n) for n, f in self._futures]
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return chunks, self._whole.hexdigest()


def hash_file(
    path: Path, chunk_size: int = CHUNK_SIZE, on_bytes: Callable[[int], None] | None = None,
) -> tuple[list[ChunkRef], str]:
    """Chunk and hash a local file; ``on_bytes(done)`` is called as it goes."""
    hasher = ChunkHasher(chunk_size)
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hasher.update(view[:n])
            if on_bytes is not None:
                on_bytes(hasher.size)
    return hasher.finish()


def copy_range(src_fd: int, dst: Path, offset: int, size: int) -> None:
    """Copy ``size`` bytes at ``offset`` of an open file to a new file, in the kernel."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        done = 0
        while done < size:
            n = os.copy_file_range(src_fd, fd, size - done, offset + done)
            if n == 0:
                raise OSError(f"short copy of {dst.name}: {done} of {size} bytes")
            done += n
    finally:
        os.close(fd)


def read_verified(path: Path, digest: str) -> bytes | None:
    """The bytes of a chunk file if they hash to ``digest``, else None."""
    data = path.read_bytes()
    return data if _digest(data) == digest else None


class OrderedDigest:
    """The sha256 of a file whose chunks are written out of order, hashed in file order.

    ``add(offset, data)`` reports a chunk as written; the whole-file hash
    advances over every chunk that is now contiguous with what it has hashed.
    Chunks that land ahead of the cursor are held in memory up to ``budget``
    bytes; past that only their place is kept and ``read_back(offset, size)``
    reads them from the file when the cursor reaches them (a fetch's streams
    run close together, so that is rare). All-zero chunks are known without
    being written or read. Thread-safe: fetch's verifiers call it in parallel.
    """

    def __init__(self, chunks: list[tuple[int, ChunkRef]], read_back: Callable[[int, int], bytes],
                 budget: int = 32 * CHUNK_SIZE) -> None:
        self._chunks = chunks
        self._read_back = read_back
        self._budget = budget
        self._held: dict[int, bytes | None] = {}
        self._held_bytes = 0
        self._next = 0
        self._hashed_upto = 0
        self._sha = hashlib.sha256()
        self._mu = threading.Lock()

    def add(self, offset: int, data: bytes | None = None) -> None:
        """The chunk at ``offset`` is in the file (``data``: its bytes, if at hand)."""
        with self._mu:
            if offset < self._hashed_upto:
                return  # an all-zero chunk the cursor already took as zeros
            if data is not None and self._held_bytes + len(data) <= self._budget:
                self._held[offset] = data
                self._held_bytes += len(data)
            else:
                self._held[offset] = None
            self._advance()

    def _advance(self) -> None:
        while self._next < len(self._chunks):
            off, c = self._chunks[self._next]
            if off in self._held:
                data = self._held.pop(off)
                if data is None:
                    data = self._read_back(off, c.size)
                else:
                    self._held_bytes -= len(data)
            elif c.digest == zero_digest(c.size):
                data = _zeros(c.size)
            else:
                return
            self._sha.update(data)
            self._next += 1
            self._hashed_upto = off + c.size

    def hexdigest(self) -> str:
        """The digest of the whole file; every non-zero chunk must have been added."""
        with self._mu:
            if self._next != len(self._chunks):
                raise RuntimeError(f"chunk at offset {self._chunks[self._next][0]} was never written")
            return self._sha.hexdigest()


_ZEROS: dict[int, bytes] = {}


def _zeros(size: int) -> bytes:
    z = _ZEROS.get(size)
    if z is None:
        z = _ZEROS.setdefault(size, bytes(size))
    return z
