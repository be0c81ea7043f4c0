"""Ceph primary storage through the storage's cephagent (librbd, no kernel RBD).

The image cache is an RBD image per image (``<cache pool>/image-<uuid>``,
added from the image's URL, imported from SFTP backup storage, or copied from
a Ceph backup pool); a root volume is a clone of its protected snapshot
(``<pool>/volume-<uuid>``), a data volume a plain RBD image. The KVM agent
opens them through librbd as the storage's cephx user, whose key it holds in
a libvirt secret that the controller sets once per host
(``/host/ceph-secret/set``). The key is read from the controller's
``ceph_key_dir`` by the reference the storage names, never taken from a
request; the cephagent finds the same reference in its own ``secrets_dir``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from agentcore import digest
from agentcore.models import Returns
from cephagent import models as cm
from controller.db.base import new_uuid
from controller.db.models import BackupStorage, Image, ImageCache, PrimaryStorage, Volume
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import BadRequest, Conflict
from controller.primary.base import CachedImage, HostLike, Op, PrimaryBackend, StoredVolume
from controller.settings import Settings
from kvmagent import models as km

log = logging.getLogger(__name__)

#: how long a delete waits for a destroyed QEMU's watch on the image to expire
IN_USE_PATIENCE = 90.0
_KEY = re.compile(r"^[A-Za-z0-9+/=]{16,256}$")


def _in_use(e: BaseException) -> bool:
    return isinstance(e, AgentCallError) and e.code == "IN_USE"


class CephBackend(PrimaryBackend):
    """RBD images in the storage's pools, made by its cephagent."""

    volume_format = "raw"
    through_storage_agent = False

    def install_path(self, ps: PrimaryStorage, volume_uuid: str) -> str:
        return f"{ps.ceph_pool}/volume-{volume_uuid}"

    def cache_image(self, op: Op, ps: PrimaryStorage, host: HostLike, image: Image, image_id: str,
                    bs: BackupStorage | None) -> CachedImage:
        self._init_pools(op, ps)
        pool, name = cache_pool(ps), f"image-{image.uuid}"
        cmd = _image_source(ps, pool, name, image, image_id, bs)
        try:
            reply = op.call(_agent(ps), cmd)
        except AgentCallError as e:
            if e.code != "IMAGE_EXISTS":  # another VM's flow cached it meanwhile
                raise
            reply = op.call(_agent(ps), cm.ImageInfoCmd(cluster=cluster_ref(ps), pool=pool, name=name))
        return CachedImage(image_id, reply.install_path or f"{pool}/{name}", reply.size)

    def create_root(self, op: Op, ps: PrimaryStorage, host: HostLike, cached: CachedImage,
                    vol: Volume) -> int:
        src_pool, _, src_name = cached.install_path.partition("/")
        pool, name = _split(vol)
        reply = op.call(_agent(ps), cm.CreateVolumeFromImageCmd(
            cluster=cluster_ref(ps), pool=pool, name=name, src_pool=src_pool, src_name=src_name,
            size=vol.size or None))
        return reply.actual_size or 0

    def create_empty(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume) -> int:
        self._init_pools(op, ps)
        pool, name = _split(vol)
        reply = op.call(_agent(ps), cm.CreateVolumeCmd(
            cluster=cluster_ref(ps), pool=pool, name=name, size=vol.size))
        return reply.actual_size or 0

    @retry(retry=retry_if_exception(_in_use), wait=wait_exponential(multiplier=0.5, max=5),
           stop=stop_after_delay(IN_USE_PATIENCE), reraise=True)
    def delete_volume(self, op: Op, ps: PrimaryStorage, host: HostLike | None, vol: Volume) -> None:
        pool, name = _split(vol)
        op.call(_agent(ps), cm.DeleteVolumeCmd(cluster=cluster_ref(ps), pool=pool, name=name))

    def evict_cache(self, op: Op, ps: PrimaryStorage, cached: list[ImageCache]) -> None:
        for c in cached:
            pool, _, name = c.install_path.partition("/")
            try:
                op.call(_agent(ps), cm.DeleteImageCmd(cluster=cluster_ref(ps), pool=pool, name=name))
            except AgentCallError as e:
                log.warning("removing cached image %s from %s failed: %s", c.install_path, ps.uuid, e)

    def upload_volume(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume,
                      bs: BackupStorage, name: str) -> StoredVolume:
        """``rbd export`` of the volume into the store (raw: RBD keeps no backing file)."""
        pool, rbd_name = _split(vol)
        reply = op.call(_agent(ps), cm.ExportToSftpCmd(
            cluster=cluster_ref(ps), pool=pool, name=rbd_name, host=bs.hostname, port=bs.port,
            user=bs.username, store_root=bs.url, store_name=name))
        return StoredVolume(reply.image_id or name, reply.digest, reply.size, vol.size or reply.size, "raw")

    # -- backup and restore: an RBD snapshot is the point-in-time copy ------------------

    def overlay_path(self, ps: PrimaryStorage, vol: Volume, backup_uuid: str) -> str:
        return ""  # no overlay: the snapshot is taken while QEMU writes (crash-consistent)

    def export_path(self, ps: PrimaryStorage, vol: Volume, backup_uuid: str) -> str:
        return f"{vol.install_path}@backup-{backup_uuid}"

    def restore_path(self, ps: PrimaryStorage, vol: Volume) -> str:
        return f"{ps.ceph_pool}/volume-{vol.uuid}-{new_uuid()[:8]}"

    def export(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume, path: str) -> None:
        pool, name, snap = _split_snapshot(path)
        op.call(_agent(ps), cm.CreateSnapshotCmd(cluster=cluster_ref(ps), pool=pool, name=name,
                                                 snapshot=snap, skip_if_existing=True))

    def upload(self, op: Op, ps: PrimaryStorage, host: HostLike, path: str, bs: BackupStorage,
               image_id: str) -> StoredVolume:
        """The snapshot read by the cephagent into the store (only missing chunks travel)."""
        pool, name, snap = _split_snapshot(path)
        reply = op.call(_agent(ps), cm.ExportToSftpCmd(
            cluster=cluster_ref(ps), pool=pool, name=name, snapshot=snap or None, host=bs.hostname,
            port=bs.port, user=bs.username, store_root=bs.url, store_name=image_id))
        return StoredVolume(reply.image_id or image_id, digest.normalise(reply.digest), reply.size,
                            reply.size, "raw")

    def drop_file(self, op: Op, ps: PrimaryStorage, host: HostLike | None, path: str) -> None:
        """A backup's snapshot (``pool/name@snap``) or a restore's image (gone: fine)."""
        pool, name, snap = _split_snapshot(path)
        if snap:
            try:
                op.call(_agent(ps), cm.DeleteSnapshotCmd(cluster=cluster_ref(ps), pool=pool,
                                                         name=name, snapshot=snap))
            except AgentCallError as e:
                if e.code not in ("IMAGE_NOT_FOUND", "POOL_NOT_FOUND"):  # went with its image
                    raise
        elif path:
            self.delete_volume(op, ps, host, Volume(uuid=name, install_path=path))

    def create_from_store(self, op: Op, ps: PrimaryStorage, host: HostLike, bs: BackupStorage,
                          stored: StoredVolume, path: str) -> int:
        """The cephagent fetches the backup (hash-checked before anything reaches RBD) and
        writes it as a standalone image at ``path`` (qcow2 backups converted to raw)."""
        self._init_pools(op, ps)
        if not stored.digest:
            raise Conflict(f"backup {stored.image_id} has no recorded digest to check the store's "
                           "copy by", imageId=stored.image_id)
        pool, name, _ = _split_snapshot(path)
        reply = op.call(_agent(ps), cm.ImportFromSftpCmd(
            cluster=cluster_ref(ps), pool=pool, name=name, host=bs.hostname, port=bs.port,
            user=bs.username, store_root=bs.url, image_id=stored.image_id,
            sha256=digest.bare(stored.digest)))
        return reply.size

    def revert_snapshot(self, op: Op, ps: PrimaryStorage, host: HostLike, vol: Volume,
                        snapshot_path: str) -> None:
        raise Conflict(f"volume {vol.uuid} is on Ceph primary storage {ps.uuid}: the controller "
                       "makes no snapshots there yet, so there is none to revert to",
                       volumeUuid=vol.uuid)

    def volume_spec(self, ps: PrimaryStorage, vol: Volume, device_id: int) -> km.VolumeSpec:
        return km.RbdVolume(type="rbd", volume_uuid=vol.uuid, device_id=device_id,
                            install_path=vol.install_path or "", monitors=monitors(ps),
                            auth_user=user_id(ps), secret_uuid=ps.ceph_secret_uuid)

    def prepare_host(self, op: Op, ps: PrimaryStorage, host: HostLike) -> None:
        """Set the libvirt secret of the storage's user on the host, once (until it reconnects)."""
        secret = ps.ceph_secret_uuid or ""
        op.ctl.host_network.once(host.uuid, f"ceph-secret:{secret}", lambda: op.call(
            host.agent_url, km.SetCephSecretCmd(
                secret_uuid=secret, user_name=user_id(ps),
                user_key=read_key(op.ctl.settings, ps.ceph_key_ref or ""))))

    def _init_pools(self, op: Op, ps: PrimaryStorage) -> None:
        """Create the pools if missing and enable rbd on them, once per storage and process."""
        ready = op.ctl.ceph_pools_ready
        if ps.uuid in ready:
            return
        names = list(dict.fromkeys([ps.ceph_pool or "", cache_pool(ps)]))
        op.call(_agent(ps), cm.InitPoolsCmd(
            cluster=cluster_ref(ps), pools=[cm.PoolSpec(name=n) for n in names]))
        ready.add(ps.uuid)


def _image_source(ps: PrimaryStorage, pool: str, name: str, image: Image, image_id: str,
                  bs: BackupStorage | None) -> Returns[cm.ImageInfoReply]:
    """The cephagent command that brings ``image`` into ``pool/name``."""
    cluster = cluster_ref(ps)
    if image.url:  # registered by URL: fetched from there (digest checked when it is a sha256)
        sha = digest.bare(image.digest) if image.digest else None
        return cm.AddImageCmd(cluster=cluster, pool=pool, name=name,
                              url=image.url, sha256=sha)  # type: ignore[arg-type]
    if bs is not None and bs.type == "sftp":
        if not image.digest:  # the store's own claim is never trusted: the agent checks the bytes
            raise Conflict(f"image {image.uuid} has no recorded digest to check the store's copy by",
                           imageUuid=image.uuid)
        return cm.ImportFromSftpCmd(
            cluster=cluster, pool=pool, name=name, host=bs.hostname, port=bs.port,
            user=bs.username, store_root=bs.url, image_id=image_id, sha256=digest.bare(image.digest))
    if bs is not None and bs.type == "ceph":  # a backup pool of the same cluster
        return cm.CacheImageCmd(cluster=cluster, pool=pool, name=name, src_pool=bs.url, src_name=image_id)
    raise Conflict(f"image {image.uuid} has no source this storage can read", imageUuid=image.uuid)


def _agent(ps: PrimaryStorage) -> str:
    if not ps.agent_url:
        raise Conflict(f"ceph primary storage {ps.uuid} has no agent URL")
    return ps.agent_url


def _split_snapshot(path: str) -> tuple[str, str, str]:
    """``pool/name[@snapshot]`` → (pool, name, snapshot or "")."""
    image, _, snap = path.partition("@")
    pool, _, name = image.partition("/")
    return pool, name, snap


def _split(vol: Volume) -> tuple[str, str]:
    pool, _, name = (vol.install_path or "").partition("/")
    return pool, name


def cache_pool(ps: PrimaryStorage) -> str:
    return ps.ceph_cache_pool or ps.ceph_pool or ""


def user_id(ps: PrimaryStorage) -> str:
    """The cephx user without ``client.``."""
    return (ps.ceph_user or "").removeprefix("client.")


def cluster_ref(ps: PrimaryStorage) -> cm.ClusterRef:
    """Who the cephagent is towards the cluster: monitors, user, key by reference."""
    return cm.ClusterRef(monitors=(ps.ceph_monitors or "").split(","), user=ps.ceph_user or "",
                         key_ref=ps.ceph_key_ref, fsid=ps.ceph_fsid)


def monitors(ps: PrimaryStorage) -> list[km.CephMon]:
    """The monitors as the KVM agent takes them (``[v6]:port`` and ``host`` forms too)."""
    out = []
    for m in (ps.ceph_monitors or "").split(","):
        if m.startswith("["):
            host, _, rest = m[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = m.partition(":")
        out.append(km.CephMon(host=host, port=int(port or 6789)))
    return out


def read_key(settings: Settings, key_ref: str, field: str | None = None) -> str:
    """The bare cephx key named ``key_ref`` in the controller's ``ceph_key_dir``.

    With ``field``, a missing or unusable key is a 400 naming that field;
    without, a conflict (the storage was added, the file went away since).
    """
    def refuse(why: str) -> Exception:
        msg = f"keyRef {key_ref!r}: {why}"
        return BadRequest(f"{field}: {msg}", field=field) if field else Conflict(msg)

    if not settings.ceph_key_dir:
        raise refuse("the controller has no ceph_key_dir")
    base = Path(settings.ceph_key_dir).resolve()
    path = (base / key_ref).resolve()
    if path.parent != base or not path.is_file():
        raise refuse("no such key file in the controller's ceph_key_dir")
    key = path.read_text(errors="replace").strip()
    if not _KEY.match(key):
        raise refuse("the file does not hold a bare base64 cephx key")
    return key
