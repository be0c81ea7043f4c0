"""add-image's chunk staging: chunks written while the source is hashed, put in afterwards."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from agentcore.task import TaskContext
from sftpbackup.chunker import hash_file
from sftpbackup.ingest import ChunkStager, put_chunks
from sftpbackup.manifest import Manifest
from sftpbackup.store import ImageStore


def test_staged_chunks_reach_the_store_only_through_put_chunks(tmp_path: Path) -> None:
    store = ImageStore.init(tmp_path / "s", "bs-1")
    stored, new, dup = os.urandom(4096), os.urandom(4096), os.urandom(4096)
    with store.pending() as p, store.workdir() as work:  # one chunk the store already has
        d = hashlib.sha256(stored).hexdigest()
        (work / d).write_bytes(stored)
        p.put_chunk(d, work / d)
    src = tmp_path / "image"
    src.write_bytes(stored + new + dup + dup)
    with store.workdir("t") as work, store.pending("t") as pending:
        stager = ChunkStager(store, work)
        chunks, digest = hash_file(src, chunk_size=4096, on_chunk=stager)
        # written once per digest the store lacks; nothing in the store yet
        assert sorted(stager.files) == sorted({hashlib.sha256(b).hexdigest() for b in (new, dup)})
        assert all(stager.files[c.digest].read_bytes() in (new, dup) for c in chunks[1:])
        assert not any(store.has_chunk(c.digest) for c in chunks[1:])
        m = Manifest(image_id="img", format="raw", virtual_size=4 * 4096, size=4 * 4096, digest=digest,
                     chunk_size=4096, chunks=chunks, created="now")
        assert put_chunks(store, pending, m, src, work, TaskContext("t", ""), stager.files) == (2, 8192)
        store.write_manifest(m, pending)
    assert store.verify().ok
    assert b"".join(store.read_chunk(c.digest) for c in store.read_manifest("img").chunks) == src.read_bytes()
