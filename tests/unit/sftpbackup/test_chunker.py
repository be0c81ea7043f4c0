"""Fixed-size chunking and hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sftpbackup.chunker import ChunkHasher, copy_range, hash_file


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
