"""Replicate volume backups into another SFTP backup storage: for each backup the
target store's agent pulls it from a store that holds it (``/backup/image/pull``:
only the chunks the target lacks travel, each re-hashed on arrival, the whole
image checked against the digest the controller recorded before its manifest
is written) → the digest the target answers is checked again → one
VolumeBackupStorageRef per backup, all in one transaction.

The target pulls rather than the source pushing: a pull verifies the whole
image against the caller's digest on the receiving side (``DIGEST_MISMATCH``
otherwise), a push only re-hashes chunks before they leave. A backup the
target already holds is skipped; on failure what reached the target in this
job is removed again (``/backup/image/delete``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentcore import digest
from controller.db.models import BackupStorage, VolumeBackupStorageRef
from controller.errors import DigestMismatch
from controller.flows.add_image import Store, remove_from_store
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from sftpbackup import models as bm

PULL_TIMEOUT = 6 * 3600.0  # a large first copy over a slow link; cancel the job to stop sooner


@dataclass(frozen=True)
class Item:
    """One volume backup to copy: its id in the stores, recorded digest, and a source."""

    backup_uuid: str
    image_id: str
    digest: str
    source: BackupStorage


@dataclass
class Replicate:
    """What the replicate flow knows and has done so far."""

    ctx: JobContext
    target: BackupStorage
    items: list[Item]
    copied: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    chunks_sent: int = 0

    @property
    def store(self) -> Store:
        return Store.of(self.target, "backupStorageUuid")


def pull_cmd(target: Store, item: Item) -> bm.PullImageCmd:
    src = item.source
    return bm.PullImageCmd(
        backup_storage_uuid=target.uuid, root=target.root, image_uuid=item.image_id,
        remote=bm.SftpEndpoint(host=src.hostname, port=src.port, user=src.username,
                               store_root=src.url),
        sha256=digest.bare(item.digest))


def same_digest(a: str, b: str) -> bool:
    """Two digests in either form name the same content (a malformed one never does)."""
    try:
        return digest.bare(a) == digest.bare(b)
    except ValueError:
        return False


def _puller(i: int) -> Step[Replicate]:
    def run(st: Replicate) -> None:
        item, n, store = st.items[i], len(st.items), st.store
        reply = st.ctx.call(store.agent_url, pull_cmd(store, item), PULL_TIMEOUT,
                            where=store.name, base=100.0 * i / n, span=100.0 / n)
        st.copied.append(item.image_id)
        got = reply.image.digest if reply.image else ""
        if not same_digest(got, item.digest):
            raise DigestMismatch(f"backup storage {store.name} holds volume backup {item.backup_uuid} "
                                 "under another digest than the recorded one",
                                 volumeBackupUuid=item.backup_uuid, expected=item.digest, actual=got)
        st.bytes_sent += reply.bytes_sent
        st.chunks_sent += reply.chunks_sent

    def undo(st: Replicate) -> None:
        if st.items[i].image_id in st.copied:
            remove_from_store(st.ctx, st.store, st.items[i].image_id)

    return Step(f"pull-{i}", run, undo)


def record(st: Replicate) -> None:
    """A ref per copied backup (one a concurrent job recorded stays as it is)."""
    def write(s: Session) -> None:
        have = set(s.scalars(select(VolumeBackupStorageRef.volume_backup_uuid).where(
            VolumeBackupStorageRef.backup_storage_uuid == st.target.uuid,
            VolumeBackupStorageRef.volume_backup_uuid.in_([i.backup_uuid for i in st.items]))))
        for item in st.items:
            if item.backup_uuid not in have:
                s.add(VolumeBackupStorageRef(volume_backup_uuid=item.backup_uuid,
                                             backup_storage_uuid=st.target.uuid,
                                             install_path=item.image_id))
    st.ctx.db.transaction(write)


def run(st: Replicate) -> None:
    """Run the flow; on failure the copies made so far leave the target again."""
    steps = [*(_puller(i) for i in range(len(st.items))), Step("record-refs", record)]
    Flow("replicate-backup", steps, check=st.ctx.check, guard=st.ctx.uncancellable).run(st)
