"""Push and pull of an image between the local store and another store over SFTP.

Only chunks the receiving side lacks cross the wire. The side that reads a
chunk verifies it: a push re-hashes each local chunk before sending it, a pull
re-hashes each chunk it receives before storing it. Chunks land under their
final name one by one (temporary name, fsync, rename) and the manifest goes
last, so an interrupted transfer leaves the chunks it moved, and the next
attempt sends only the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentcore.task import TaskContext
from sftpbackup import manifest as layout
from sftpbackup.client import StoreClient
from sftpbackup.errors import ChunkCorrupt, ImageExists
from sftpbackup.manifest import Manifest
from sftpbackup.store import ImageStore, file_sha256


@dataclass(frozen=True)
class Transfer:
    manifest: Manifest
    chunks_sent: int
    bytes_sent: int


def push(store: ImageStore, image_id: str, client: StoreClient, ctx: TaskContext) -> Transfer:
    """Send ``image_id`` from the local store to the remote store of ``client``."""
    m = store.read_manifest(image_id)

    def stage(lacking: set[str]) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for d in sorted(lacking):
            ctx.check()
            path = store.chunk_path(d)
            if file_sha256(path) != d:
                raise ChunkCorrupt("a local chunk is corrupt; run verify", chunk=d)
            files[d] = path
        return files

    sent, nbytes = client.publish(m, stage, store.root / layout.TMP, ctx)
    return Transfer(m, sent, nbytes)


def pull(store: ImageStore, image_id: str, client: StoreClient, ctx: TaskContext, token: str) -> Transfer:
    """Get ``image_id`` from the remote store of ``client`` into the local store."""
    m = client.manifest(image_id)
    existing = store.find_manifest(image_id)
    if existing is not None:
        if existing.digest != m.digest:
            raise ImageExists(image_uuid=image_id, digest=existing.digest)
        return Transfer(existing, 0, 0)
    with store.pending(token) as pending:
        lacking: dict[str, int] = {}
        for d, size in m.unique_digests().items():
            try:
                pending.put_chunk(d, None)
            except FileNotFoundError:
                lacking[d] = size

        def sink(digest: str, path: Path, data: bytes) -> None:
            pending.put_chunk(digest, path)

        nbytes = client.download(lacking, store.root / layout.TMP, sink, ctx, tag=token)
        store.write_manifest(m)
    return Transfer(m, len(lacking), nbytes)
