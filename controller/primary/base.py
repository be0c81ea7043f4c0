"""The contract of a primary storage backend, and what its methods share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentcore.models import Returns
from controller.core import Controller
from controller.db.models import (
    BackupStorage,
    Host,
    Image,
    ImageCache,
    PrimaryStorage,
    PrimaryStorageClusterRef,
    Volume,
)
from controller.dispatch.client import R
from controller.errors import Conflict
from controller.jobs import JobContext
from kvmagent import models as km


class HostLike(Protocol):
    """What a backend needs of a host (a ``Host`` row or an allocation's ``HostRef``)."""

    @property
    def uuid(self) -> str: ...
    @property
    def agent_url(self) -> str: ...
    @property
    def storage_agent_url(self) -> str | None: ...


def storage_agent(host: HostLike) -> str:
    """The host's storage agent URL (a host without one cannot reach file storage)."""
    if not host.storage_agent_url:
        raise Conflict(f"host {host.uuid} has no storage agent", hostUuid=host.uuid)
    return str(host.storage_agent_url)


def any_storage_host(s: Session, ps_uuid: str, storage_agent: bool = True) -> Host | None:
    """A connected host in one of the storage's clusters (with a storage agent, unless
    ``storage_agent`` is False: the storage has an agent of its own)."""
    clusters = select(PrimaryStorageClusterRef.cluster_uuid).where(
        PrimaryStorageClusterRef.primary_storage_uuid == ps_uuid)
    q = select(Host).where(Host.cluster_uuid.in_(clusters), Host.status == "Connected")
    if storage_agent:
        q = q.where(Host.storage_agent_url.is_not(None))
    return s.scalar(q.limit(1))


@dataclass(frozen=True)
class Op:
    """The job a storage operation runs in: its agent calls are waited for there (cancellable)."""

    ctl: Controller
    ctx: JobContext

    def call(self, agent_url: str, cmd: Returns[R]) -> R:
        return self.ctx.call(agent_url, cmd)


@dataclass(frozen=True)
class CachedImage:
    """An image in a primary storage's cache: ``image_id`` is its id in backup
    storage, ``install_path`` where the cache holds it."""

    image_id: str
    install_path: str
    size: int = 0


@dataclass(frozen=True)
class StoredVolume:
    """A volume's content as a backup storage measured it when it took it."""

    image_id: str
    digest: str
    size: int
    virtual_size: int
    format: str


class PrimaryBackend(ABC):
    """How one kind of primary storage makes, describes and removes VM disks.

    ``host`` is the host the disk is for (file storage reaches the storage
    through that host's storageagent); a volume's ``install_path`` is what
    :meth:`install_path` gave it. Deleting what is not there is success.
    """

    #: the format of the volumes it makes (the ``format`` of their rows)
    volume_format: ClassVar[str] = "qcow2"
    #: whether a host reaches the storage through its storageagent (else: the storage's own agent)
    through_storage_agent: ClassVar[bool] = True

    @abstractmethod
    def install_path(self, ps: PrimaryStorage, volume_uuid: str) -> str:
        """Where a new volume will live on this storage."""

    @abstractmethod
    def cache_image(self, op: Op, ps: PrimaryStorage, host: HostLike, image: Image, image_id: str,
                    bs: BackupStorage | None) -> CachedImage:
        """Copy an image into the storage's cache (from its URL or its backup storage)."""

    @abstractmethod
    def create_root(self, op: Op, ps: PrimaryStorage, host: HostLike, cached: CachedImage,
                    vol: Volume) -> int:
        """Make a root volume a linked clone of the cached image; answers its allocated bytes."""

    @abstractmethod
    def create_empty(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume) -> int:
        """Make an empty data volume; answers its allocated bytes."""

    @abstractmethod
    def delete_volume(self, op: Op, ps: PrimaryStorage, host: HostLike | None, vol: Volume) -> None:
        """Remove a volume (``host``: the one it was made through, when known)."""

    @abstractmethod
    def evict_cache(self, op: Op, ps: PrimaryStorage, cached: list[ImageCache]) -> None:
        """Remove cached images (the storage is going away); failures are logged, not raised."""

    @abstractmethod
    def volume_spec(self, ps: PrimaryStorage, vol: Volume, device_id: int) -> km.VolumeSpec:
        """The volume as the KVM agent opens it (``/vm/start``, attach, detach)."""

    @abstractmethod
    def upload_volume(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume,
                      bs: BackupStorage, name: str) -> StoredVolume:
        """Put the volume's content (flattened: no backing chain) into an SFTP store as
        ``name``; only chunks the store lacks travel. The volume must not be written meanwhile."""

    @abstractmethod
    def revert_snapshot(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume,
                        snapshot_path: str) -> None:
        """Put the volume back to a snapshot of it (its VM stopped)."""

    def prepare_host(self, op: Op, ps: PrimaryStorage, host: HostLike) -> None:  # noqa: B027 - optional
        """Make sure ``host`` can open this storage's disks before a VM starts there."""

    # -- backup and restore (through an SFTP backup storage's content-addressed store) --

    def _no_backups(self, ps: PrimaryStorage) -> Conflict:
        return Conflict(f"backups of {ps.type} primary storage are not supported yet", type=ps.type)

    def overlay_path(self, ps: PrimaryStorage, vol: Volume, backup_uuid: str) -> str:
        """Where :meth:`live_snapshot` puts the running VM's writes during a backup
        (empty: the storage takes a point-in-time copy without moving the writes)."""
        raise self._no_backups(ps)

    def export_path(self, ps: PrimaryStorage, vol: Volume, backup_uuid: str) -> str:
        """Where :meth:`export` puts the point-in-time copy that a backup uploads."""
        raise self._no_backups(ps)

    def restore_path(self, ps: PrimaryStorage, vol: Volume) -> str:
        """A new place beside ``vol`` for its content restored from a backup."""
        raise self._no_backups(ps)

    def live_snapshot(self, op: Op, ps: PrimaryStorage, host: HostLike, vm_uuid: str, vol: Volume,
                      overlay: str) -> None:
        """Move the running VM's writes to a new ``overlay``: ``vol``'s file stops changing."""
        raise self._no_backups(ps)

    def live_merge(self, op: Op, ps: PrimaryStorage, host: HostLike, vm_uuid: str, vol: Volume,
                   overlay: str) -> None:
        """Write ``overlay`` back into ``vol``'s file, the VM onto it again, and drop the overlay."""
        raise self._no_backups(ps)

    def export(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume, path: str) -> None:
        """A point-in-time copy of the volume at ``path`` (from :meth:`export_path`), for an
        upload: a flattened file beside it, or a storage snapshot of it."""
        raise self._no_backups(ps)

    def upload(self, op: Op, ps: PrimaryStorage, host: HostLike, path: str, bs: BackupStorage,
               image_id: str) -> StoredVolume:
        """Put the exported file at ``path`` into the store under ``image_id`` (only the
        chunks the store lacks travel)."""
        raise self._no_backups(ps)

    def drop_file(self, op: Op, ps: PrimaryStorage, host: HostLike | None, path: str) -> None:
        """Remove a file the backup or restore made (gone already: fine)."""
        raise self._no_backups(ps)

    def create_from_store(self, op: Op, ps: PrimaryStorage, host: HostLike, bs: BackupStorage,
                          stored: StoredVolume, path: str) -> int:
        """A new standalone volume at ``path`` holding a stored backup; its allocated bytes."""
        raise self._no_backups(ps)
