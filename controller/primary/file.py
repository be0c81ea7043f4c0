"""File-based primary storage (nfs, local, sharedmountpoint) through the storageagent.

Every host runs a storageagent that mounts the storage; the image cache and
the qcow2 linked clones are files under the storage's root, and the KVM agent
opens them by their host path.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from agentcore import digest
from controller import commands
from controller.db.base import new_uuid
from controller.db.models import (
    BackupStorage,
    Image,
    ImageBackupStorageRef,
    ImageCache,
    PrimaryStorage,
    Volume,
)
from controller.dispatch.dispatcher import AgentCallError
from controller.primary.base import (
    CachedImage,
    HostLike,
    Op,
    PrimaryBackend,
    StoredVolume,
    any_storage_host,
    storage_agent,
)
from kvmagent import models as km
from storageagent import models as sm

log = logging.getLogger(__name__)


class FileBackend(PrimaryBackend):
    """qcow2 files on a mounted storage, made by the host's storageagent."""

    volume_format = "qcow2"

    def install_path(self, ps: PrimaryStorage, volume_uuid: str) -> str:
        return commands.volume_path(volume_uuid)

    def cache_image(self, op: Op, ps: PrimaryStorage, host: HostLike, image: Image, image_id: str,
                    bs: BackupStorage | None) -> CachedImage:
        reply = op.call(storage_agent(host), commands.cache_image(ps, image, image_id, bs))
        if reply.image is None:
            return CachedImage(image_id, image_id)
        return CachedImage(image_id, reply.image.install_path, reply.image.size)

    def create_root(self, op: Op, ps: PrimaryStorage, host: HostLike, cached: CachedImage,
                    vol: Volume) -> int:
        reply = op.call(storage_agent(host), commands.create_root(ps, cached.image_id, vol))
        return reply.volume.actual_size if reply.volume else 0

    def create_empty(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume) -> int:
        reply = op.call(storage_agent(host), commands.create_empty(ps, vol))
        return reply.volume.actual_size if reply.volume else 0

    def delete_volume(self, op: Op, ps: PrimaryStorage, host: HostLike | None, vol: Volume) -> None:
        if host is None or not host.storage_agent_url:
            with op.ctl.db.read() as s:
                host = any_storage_host(s, ps.uuid)
        if host is None:
            log.warning("no connected host reaches %s: volume %s stays", ps.uuid, vol.uuid)
            return
        try:
            op.call(storage_agent(host), commands.delete_volume(ps, vol.install_path or ""))
        except AgentCallError as e:
            if e.code != "NOT_FOUND":
                raise

    def evict_cache(self, op: Op, ps: PrimaryStorage, cached: list[ImageCache]) -> None:
        """Everything in the storage's cache goes: the images of ``cached`` and the copies
        whose image was deleted while VMs still used them (the image took their rows)."""
        with op.ctl.db.read() as s:
            host = any_storage_host(s, ps.uuid)
            refs = {c.image_uuid: s.scalar(select(ImageBackupStorageRef.install_path).where(
                ImageBackupStorageRef.image_uuid == c.image_uuid).limit(1)) for c in cached}
        if host is None:
            return
        mount_path = ps.mount_path or "/"
        ids = {refs[c.image_uuid] or c.install_path.rsplit("/", 1)[-1].split(".", 1)[0] for c in cached}
        try:
            listed = op.call(storage_agent(host), sm.ListCacheCmd(
                storage_uuid=ps.uuid, mount_path=mount_path))
            ids |= {i.image_id for i in listed.images if i.image_id}
        except AgentCallError as e:
            log.warning("listing the cache of %s failed: %s", ps.uuid, e)
        for image_id in sorted(ids):
            try:
                op.call(storage_agent(host), sm.EvictCacheCmd(
                    storage_uuid=ps.uuid, mount_path=mount_path, image_id=image_id))
            except AgentCallError as e:
                log.warning("evicting %s from %s failed: %s", image_id, ps.uuid, e)

    def upload_volume(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume,
                      bs: BackupStorage, name: str) -> StoredVolume:
        """Flatten the volume into a template next to it (a linked clone has a backing
        file, which a store refuses), upload that, drop the template."""
        template = f"templates/{name}.qcow2"
        self.export(op, ps, host, vol, template)
        try:
            return self.upload(op, ps, host, template, bs, name)
        finally:
            self.drop_file(op, ps, host, template)

    def revert_snapshot(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume,
                        snapshot_path: str) -> None:
        op.call(storage_agent(host), sm.RevertSnapshotCmd(
            storage_uuid=ps.uuid, mount_path=ps.mount_path or "/",
            install_path=vol.install_path or "", snapshot_path=snapshot_path))

    def volume_spec(self, ps: PrimaryStorage, vol: Volume, device_id: int) -> km.VolumeSpec:
        return commands.file_volume(ps, vol, device_id)


    # -- backup and restore --------------------------------------------------------

    def overlay_path(self, ps: PrimaryStorage, vol: Volume, backup_uuid: str) -> str:
        return f"volumes/{vol.uuid}-backup-{backup_uuid[:8]}.qcow2"

    def export_path(self, ps: PrimaryStorage, vol: Volume, backup_uuid: str) -> str:
        return f"templates/backup-{backup_uuid}.qcow2"

    def restore_path(self, ps: PrimaryStorage, vol: Volume) -> str:
        return f"volumes/{vol.uuid}-{new_uuid()[:8]}.qcow2"

    def live_snapshot(self, op: Op, ps: PrimaryStorage, host: HostLike, vm_uuid: str, vol: Volume,
                      overlay: str) -> None:
        op.call(host.agent_url, km.SnapshotVolumeCmd(
            vm_uuid=vm_uuid, volume=commands.file_volume(ps, vol, vol.device_id or 0),
            new_install_path=commands.host_path(ps, overlay)))

    def live_merge(self, op: Op, ps: PrimaryStorage, host: HostLike, vm_uuid: str, vol: Volume,
                   overlay: str) -> None:
        top = km.FileVolume(volume_uuid=vol.uuid, device_id=vol.device_id or 0,
                            install_path=commands.host_path(ps, overlay), format="qcow2")
        op.call(host.agent_url, km.MergeSnapshotCmd(
            vm_uuid=vm_uuid, volume=top, mode="commit",
            base_install_path=commands.host_path(ps, vol.install_path or "")))
        self.drop_file(op, ps, host, overlay)

    def export(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume, path: str) -> None:
        op.call(storage_agent(host), sm.CreateTemplateCmd(
            storage_uuid=ps.uuid, mount_path=ps.mount_path or "/", install_path=vol.install_path or "",
            volume_format="raw" if vol.format == "raw" else "qcow2", template_path=path))

    def upload(self, op: Op, ps: PrimaryStorage, host: HostLike, path: str, bs: BackupStorage,
               image_id: str) -> StoredVolume:
        reply = op.call(storage_agent(host), sm.UploadTemplateCmd(
            storage_uuid=ps.uuid, mount_path=ps.mount_path or "/", install_path=path, name=image_id,
            target=sm.SftpTarget(host=bs.hostname, port=bs.port, user=bs.username,
                                 store_root=bs.url)))
        return StoredVolume(reply.image_id or image_id, digest.normalise(reply.digest), reply.size,
                            reply.virtual_size, reply.format or "qcow2")

    def drop_file(self, op: Op, ps: PrimaryStorage, host: HostLike | None, path: str) -> None:
        self.delete_volume(op, ps, host, Volume(uuid=path.rsplit("/", 1)[-1], install_path=path))

    def create_from_store(self, op: Op, ps: PrimaryStorage, host: HostLike, bs: BackupStorage,
                          stored: StoredVolume, path: str) -> int:
        """One storageagent command: fetched from the store into the storage
        (hash-checked) and moved into place at ``path``."""
        reply = op.call(storage_agent(host), sm.CreateVolumeFromStoreCmd(
            storage_uuid=ps.uuid, mount_path=ps.mount_path or "/",
            source=sm.SftpSource(host=bs.hostname, port=bs.port, user=bs.username,
                                 store_root=bs.url, image_id=stored.image_id),
            install_path=path, digest=digest.normalise(stored.digest), size=stored.size or None))
        return reply.volume.actual_size if reply.volume else 0
