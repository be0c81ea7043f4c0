"""Push and pull of an image between the local store and another store over SFTP.

Only chunks the receiving side lacks cross the wire. The side that reads a
chunk verifies it: a push re-hashes each local chunk before sending it, a pull
re-hashes each chunk it receives before storing it, and the whole image
against the digest the caller expects before publishing its manifest. Chunks land under their
final name one by one (temporary name, fsync, rename) and the manifest goes
last, so an interrupted transfer leaves the chunks it moved, and the next
attempt sends only the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentcore.task import TaskContext
from sftpbackup.chunker import OrderedDigest
from sftpbackup.client import StoreClient
from sftpbackup.errors import ChunkCorrupt, DigestMismatch, ImageExists
from sftpbackup.manifest import Manifest
from sftpbackup.store import ImageStore, file_sha256


@dataclass(frozen=True)
class Transfer:
    manifest: Manifest
    chunks_sent: int
    bytes_sent: int


def push(store: ImageStore, image_id: str, client: StoreClient, ctx: TaskContext) -> Transfer:
    """Send ``image_id`` from the local store to the remote store of ``client``.

    Each lacking chunk is hard-linked into a private work directory, then
    re-hashed there: ``sftp`` sends exactly the inode that was verified, never
    what a name in the store points at by then."""
    m = store.read_manifest(image_id)
    with store.workdir() as work:

        def stage(lacking: set[str]) -> dict[str, Path]:
            files: dict[str, Path] = {}
            for d in sorted(lacking):
                ctx.check()
                files[d] = work / d
                store.link_chunk(d, files[d])
                if file_sha256(files[d]) != d:
                    raise ChunkCorrupt("a local chunk is corrupt; run verify", chunk=d)
            return files

        sent, nbytes = client.publish(m, stage, work, ctx)
    return Transfer(m, sent, nbytes)


def pull(store: ImageStore, image_id: str, client: StoreClient, ctx: TaskContext, token: str,
         expected_digest: str) -> Transfer:
    """Get ``image_id`` from the remote store of ``client`` into the local store.

    The whole image's sha256 is computed in file order as the chunks land
    (chunks this store already has are read from it) and must be
    ``expected_digest`` (and the remote manifest's) before the manifest is
    written: a remote manifest that lists other chunks under the right digest
    is refused with :class:`DigestMismatch`."""
    m = client.manifest(image_id)
    if m.digest != expected_digest:
        raise DigestMismatch("the remote store's manifest names another digest than the image's",
                             image_uuid=image_id, expected=expected_digest, manifest=m.digest)
    existing = store.find_manifest(image_id)
    if existing is not None:
        if existing.digest != m.digest:
            raise ImageExists(image_uuid=image_id, digest=existing.digest)
        return Transfer(existing, 0, 0)
    at: dict[str, list[int]] = {}
    for off, c in m.offsets():
        at.setdefault(c.digest, []).append(off)
    digest_at = {off: d for d, offs in at.items() for off in offs}
    whole = OrderedDigest(m.offsets(), lambda off, n: store.read_chunk(digest_at[off]))
    with store.workdir(token) as work, store.pending(token) as pending:
        lacking: dict[str, int] = {}
        for d, size in m.unique_digests().items():
            try:
                pending.put_chunk(d, None)
            except FileNotFoundError:
                lacking[d] = size
                continue
            for off in at[d]:
                whole.add(off)

        def sink(digest: str, path: Path, data: bytes) -> None:
            pending.put_chunk(digest, path)
            for off in at[digest]:
                whole.add(off, data)

        nbytes = client.download(lacking, work, sink, ctx, tag=token)
        actual = whole.hexdigest()
        if actual != m.digest:
            raise DigestMismatch("the image assembled from the remote store's chunks does not match its digest",
                                 image_uuid=image_id, expected=m.digest, actual=actual)
        store.write_manifest(m, pending)
    return Transfer(m, len(lacking), nbytes)
