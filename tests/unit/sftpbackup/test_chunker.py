"""Fixed-size chunking and hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sftpbackup.chunker import ChunkHasher, OrderedDigest, copy_range, hash_file
from sftpbackup.manifest import ChunkRef


def test_streamed_pieces_give_the_same_chunks_as_the_file(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    chunks, whole = hash_file(path, chunk_size=4096)
    assert whole == hashlib.sha256(data).hexdigest()
    assert [c.size for c in chunks] == [4096, 4096, 1808]
    assert [c.digest for c in chunks] == [
        hashlib.sha256(data[i:i + 4096]).hexdigest() for i in range(0, len(data), 4096)
    ]
    h = ChunkHasher(4096)
    for i in range(0, len(data), 777):  # odd-sized network reads
        h.update(data[i:i + 777])
    assert h.finish() == (chunks, whole)


def test_empty_input() -> None:
    chunks, whole = ChunkHasher(4096).finish()
    assert chunks == [] and whole == hashlib.sha256(b"").hexdigest()


def test_copy_range(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 40)
    fd = os.open(src, os.O_RDONLY)
    try:
        copy_range(fd, tmp_path / "dst", 100, 300)
    finally:
        os.close(fd)
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()[100:400]


def _image(sizes: list[int], zero: set[int] = frozenset()) -> tuple[bytes, list[tuple[int, ChunkRef]]]:
    blocks = [bytes(n) if i in zero else os.urandom(n) for i, n in enumerate(sizes)]
    chunks, off = [], 0
    for b in blocks:
        chunks.append((off, ChunkRef(digest=hashlib.sha256(b).hexdigest(), size=len(b))))
        off += len(b)
    return b"".join(blocks), chunks


def test_ordered_digest_hashes_chunks_written_out_of_order() -> None:
    data, chunks = _image([4096, 4096, 4096, 100], zero={1})
    reads: list[int] = []
    whole = OrderedDigest(chunks, lambda off, n: reads.append(off) or data[off:off + n])
    for off, c in (chunks[3], chunks[0], chunks[2]):  # the zero chunk is never added
        whole.add(off, data[off:off + c.size])
    assert whole.hexdigest() == hashlib.sha256(data).hexdigest()
    assert reads == []  # held in memory, no read back


def test_ordered_digest_reads_back_what_it_could_not_hold() -> None:
    data, chunks = _image([4096] * 6)
    reads: list[int] = []
    whole = OrderedDigest(chunks, lambda off, n: reads.append(off) or data[off:off + n], budget=8192)
    for off, c in reversed(chunks):
        whole.add(off, data[off:off + c.size])
    assert whole.hexdigest() == hashlib.sha256(data).hexdigest()
    assert reads == [0, 4096, 8192, 12288]  # the two last ones fitted the budget


def test_ordered_digest_of_other_bytes_differs_and_a_missing_chunk_is_an_error() -> None:
    data, chunks = _image([4096, 4096])
    whole = OrderedDigest(chunks, lambda off, n: b"")
    whole.add(0, data[:4096])
    with pytest.raises(RuntimeError, match="never written"):
        whole.hexdigest()
    whole.add(4096, b"x" * 4096)  # what a lying manifest's chunk would put there
    assert whole.hexdigest() != hashlib.sha256(data).hexdigest()


def test_many_chunks_hash_in_parallel_to_the_same_digests() -> None:
    """The whole digest runs on its own thread beside the chunk digests: every
    chunk queued must be in it when finish() returns, in order."""
    data = os.urandom(300 * 1024 + 17)
    seen: list[tuple[int, int, str, bytes]] = []
    h = ChunkHasher(1024, on_chunk=lambda i, off, d, b: seen.append((i, off, d, b)), workers=4)
    for i in range(0, len(data), 5000):
        h.update(memoryview(data)[i:i + 5000])
    chunks, whole = h.finish()
    assert whole == hashlib.sha256(data).hexdigest()
    assert [c.digest for c in chunks] == [
        hashlib.sha256(data[i:i + 1024]).hexdigest() for i in range(0, len(data), 1024)]
    assert sorted(s[:3] for s in seen) == [
        (i, i * 1024, c.digest) for i, c in enumerate(chunks)]
    assert all(b == data[off:off + len(b)] for _, off, _, b in seen)


def test_a_failing_chunk_sink_fails_the_hashing() -> None:
    def sink(index: int, offset: int, digest: str, data: bytes) -> None:
        if index == 3:
            raise OSError("disk full")

    h = ChunkHasher(1024, on_chunk=sink)
    with pytest.raises(OSError, match="disk full"):
        for _ in range(200):
            h.update(os.urandom(1024))
        h.finish()
    h.close()
