"""Primary storage backends: how VM disks are made on each kind of primary storage.

A :class:`~controller.primary.base.PrimaryBackend` turns the storage steps of
the VM workflows into agent commands: put an image into the storage's cache,
clone a root volume from it, create an empty volume, delete a volume, evict
the cache, describe a volume to the KVM agent, and prepare a host before it
opens the storage's disks. File storage (nfs, local, sharedmountpoint) goes
through each host's storageagent (:mod:`~controller.primary.file`); Ceph
through the storage's cephagent (:mod:`~controller.primary.ceph`). The flows
ask :func:`backend_for` and never test the storage type themselves.
"""

from __future__ import annotations

from sqlalchemy import select

from controller.db.models import PrimaryStorage, Volume
from controller.errors import Conflict
from controller.primary.base import CachedImage, HostLike, Op, PrimaryBackend
from controller.primary.ceph import CephBackend
from controller.primary.file import FileBackend

BACKENDS: dict[str, PrimaryBackend] = {
    "nfs": FileBackend(), "local": FileBackend(), "sharedmountpoint": FileBackend(),
    "ceph": CephBackend(),
}


def backend_for(ps: PrimaryStorage) -> PrimaryBackend:
    """The backend of a primary storage's type."""
    backend = BACKENDS.get(ps.type)
    if backend is None:
        raise Conflict(f"primary storage {ps.uuid} is of unknown type {ps.type}", type=ps.type)
    return backend


def prepare_host_for_vm(op: Op, host: HostLike, vm_uuid: str) -> None:
    """Make ``host`` able to open every disk of a VM (before a start or a migration there)."""
    with op.ctl.db.read() as s:
        storages = list(s.scalars(select(PrimaryStorage).where(PrimaryStorage.uuid.in_(
            select(Volume.primary_storage_uuid).where(Volume.vm_uuid == vm_uuid)))))
    for ps in storages:
        backend_for(ps).prepare_host(op, ps, host)


__all__ = ["BACKENDS", "CachedImage", "Op", "PrimaryBackend", "backend_for", "prepare_host_for_vm"]
