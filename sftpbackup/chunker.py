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
#: hashing threads when each chunk also goes to a sink (which writes it to a file)
SINK_WORKERS = 4


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: called on a hashing thread with each chunk: (index, offset, digest, bytes)
ChunkSink = Callable[[int, int, str, bytes], None]


class ChunkHasher:
    """Feed a byte stream in order; get its chunk list and whole-file sha256.

    The stream is hashed once: each chunk's bytes go to the whole-file digest
    on one thread (in order) and to the chunk's own digest on a pool beside it
    (hashlib releases the GIL), so the two digests advance in parallel and
    the caller's thread only receives and writes. ``on_chunk`` (if given)
    runs on the pool with each chunk and its digest, in no particular order;
    an exception it raises fails the next :meth:`update` or :meth:`finish`.
    At most ``MAX_QUEUED`` chunks wait for the helpers: a slow hash (or a
    slow ``on_chunk``) slows the feeder instead of buffering the image in memory.
    """

    MAX_QUEUED = 32

    def __init__(self, chunk_size: int = CHUNK_SIZE, on_chunk: ChunkSink | None = None,
                 workers: int = 2) -> None:
        self.chunk_size = chunk_size
        self._on_chunk = on_chunk
        self._whole = hashlib.sha256()
        self._buf = bytearray()
        self._futures: list[tuple[int, Future[str]]] = []
        self._ordered = ThreadPoolExecutor(1, thread_name_prefix="whole-hash")
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="chunk-hash")
        # one slot per queued job (two per chunk: its digest and the whole's)
        self._slots = threading.BoundedSemaphore(2 * self.MAX_QUEUED)
        self._error: BaseException | None = None
        self.size = 0

    def _hash_whole(self, chunk: bytes) -> None:
        try:
            self._whole.update(chunk)
        finally:
            self._slots.release()

    def _hash_chunk(self, index: int, offset: int, chunk: bytes) -> str:
        try:
            digest = _digest(chunk)
            if self._on_chunk is not None:
                self._on_chunk(index, offset, digest, chunk)
            return digest
        except BaseException as e:
            self._error = e
            raise
        finally:
            self._slots.release()

    def _submit(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        index = len(self._futures)
        self._slots.acquire()
        self._ordered.submit(self._hash_whole, chunk)
        self._slots.acquire()
        self._futures.append((len(chunk), self._pool.submit(
            self._hash_chunk, index, index * self.chunk_size, chunk)))

    def update(self, data: bytes | memoryview | bytearray) -> None:
        """Feed the next bytes of the stream (copied: the caller may reuse ``data``)."""
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
        try:
            if self._buf:
                chunk = bytes(self._buf)
                self._buf.clear()
                self._submit(chunk)
            chunks = [ChunkRef(digest=f.result(), size=n) for n, f in self._futures]
            self._ordered.shutdown(wait=True)  # every queued chunk into the whole digest
        finally:
            self.close()
        return chunks, self._whole.hexdigest()

    def close(self) -> None:
        """Stop the helpers, dropping queued work (after :meth:`finish`, or on an abort)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._ordered.shutdown(wait=True, cancel_futures=True)


def hash_file(
    path: Path, chunk_size: int = CHUNK_SIZE, on_bytes: Callable[[int], None] | None = None,
    on_chunk: ChunkSink | None = None,
) -> tuple[list[ChunkRef], str]:
    """Chunk and hash a local file; ``on_bytes(done)`` is called as it goes,
    ``on_chunk`` with each chunk (see :class:`ChunkHasher`)."""
    hasher = ChunkHasher(chunk_size, on_chunk, SINK_WORKERS if on_chunk is not None else 2)
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                hasher.update(view[:n])
                if on_bytes is not None:
                    on_bytes(hasher.size)
    except BaseException:
        hasher.close()
        raise
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

    @property
    def hashed_upto(self) -> int:
        """The end of the prefix of the file hashed so far."""
        return self._hashed_upto

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
