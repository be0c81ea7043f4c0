"""Simulated storage commands: file primary storage, Ceph, SFTP backup storage.

A primary storage's state is keyed by its ``storageUuid`` (a Ceph cluster's
by its fsid, or its monitors) and shared by every simulated host, as an NFS
export or a Ceph pool is. Volumes are named by their path relative to the
storage root (``installPath``) or ``pool/name``. Cloning needs the image in
the cache first, as on a real storage, so a controller that skips a step
fails here as it would on real hosts.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from agentcore.errors import Conflict, InUse, InvalidRequest, NotFound
from simulator.behaviours.base import (
    Body,
    Fleet,
    InsufficientCapacity,
    MiB,
    behaves,
)
from simulator.state import SimAgent, StorageState, Volume

DEFAULT_IMAGE_SIZE = 64 * MiB


def _store(body: Body, fleet: Fleet) -> StorageState:
    return fleet.storage(str(body.need("storageUuid")))


def _capacity(store: StorageState) -> dict[str, Any]:
    return {"total_bytes": store.capacity, "available_bytes": store.capacity - store.used(),
            "used_by_kvmcloud_bytes": store.used()}


def _volume_info(vol: Volume) -> dict[str, Any]:
    chain = [{"install_path": vol.backing, "format": "qcow2", "virtual_size": vol.size}] \
        if vol.backing else []
    return {"install_path": vol.path, "format": vol.fmt, "virtual_size": vol.size,
            "actual_size": vol.actual_size, "backing_chain": chain}


def _add_volume(store: StorageState, vol: Volume) -> None:
    if vol.path in store.volumes:
        raise Conflict(f"volume {vol.path} exists", installPath=vol.path)
    if store.used() + vol.size > store.capacity:
        raise InsufficientCapacity("the storage is full", installPath=vol.path)
    store.add_volume(vol)


def _volume(store: StorageState, path: str) -> Volume:
    vol = store.volumes.get(path)
    if vol is None:
        raise NotFound(f"no volume {path}", installPath=path)
    return vol


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# -- file primary storage (storageagent) ------------------------------------


@behaves("/storage/mount")
def mount(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    uuid = store.uuid
    already = uuid in agent.mounts
    agent.mounts[uuid] = f"/var/lib/kvmcloud/mnt/{uuid}"
    if body.get("hostUuid"):
        store.heartbeats[str(body.get("hostUuid"))] = agent.id
    return {"mount_path": agent.mounts[uuid], "already_mounted": already,
            "capacity": _capacity(store)}


@behaves("/storage/heartbeat/age")
def heartbeat_age(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    """A simulated host writes its heartbeat while its agent is up (answering commands)."""
    store = _store(body, fleet)
    beater_id = store.heartbeats.get(str(body.need("hostUuid")))
    beater = fleet.find_agent(beater_id) if beater_id else None
    if beater is None:
        return {"age": None}
    return {"age": max(0.0, time.time() - beater.last_up) if beater.down else 0.0}


@behaves("/storage/unmount")
def unmount(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    path = agent.mounts.pop(str(body.need("storageUuid")), None)
    return {"mount_path": path or "", "was_mounted": path is not None}


@behaves("/storage/init")
def init(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    store.initialised = True
    agent.mounts[store.uuid] = str(body.need("mountPath"))
    return {"mount_path": agent.mounts[store.uuid], "capacity": _capacity(store)}


@behaves("/storage/ping")
def ping(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"storage_uuid": _store(body, fleet).uuid, "latency_ms": 0.1}


@behaves("/storage/capacity")
def capacity(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"capacity": _capacity(_store(body, fleet))}


def _cached(store: StorageState, image: str) -> dict[str, Any]:
    size = store.cache[image]
    return {"image_id": image, "install_path": f"imagecache/{image}.qcow2", "format": "qcow2",
            "virtual_size": size, "size": size, "digest": _digest(image), "cached_at": time.time()}


@behaves("/storage/cache-image")
def cache_image(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    image = str(body.need("imageId"))
    downloaded = image not in store.cache
    if downloaded:
        size = int(body.get("size", default=DEFAULT_IMAGE_SIZE))
        if store.used() + size > store.capacity:
            raise InsufficientCapacity("the storage is full", imageId=image)
        store.cache[image] = size
    return {"image": _cached(store, image), "downloaded": downloaded}


@behaves("/storage/cache/list")
def cache_list(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    return {"images": [_cached(store, image) for image in store.cache]}


@behaves("/storage/cache/evict")
def cache_evict(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    image = str(body.need("imageId"))
    users = [v.path for v in store.volumes.values() if v.backing == image]
    if users:
        raise InUse(f"image {image} backs {len(users)} volumes", volumes=users[:10])
    return {"evicted": store.cache.pop(image, None) is not None}


@behaves("/storage/volume/create-root", "/storage/volume/create-from-template")
def create_root(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    image = str(body.need("imageId"))
    if image not in store.cache:
        raise NotFound(f"image {image} is not in the cache of this storage", imageId=image)
    size = max(int(body.get("size", default=0)), store.cache[image])
    vol = Volume(str(body.need("installPath")), size, backing=image)
    _add_volume(store, vol)
    return {"volume": _volume_info(vol)}


@behaves("/storage/volume/create-from-store")
def create_from_store(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    body.need("source")
    body.need("digest")
    vol = Volume(str(body.need("installPath")), int(body.get("size", default=DEFAULT_IMAGE_SIZE)))
    _add_volume(store, vol)
    return {"volume": _volume_info(vol)}


@behaves("/storage/volume/create-empty")
def create_empty(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    vol = Volume(str(body.need("installPath")), int(body.need("size")),
                 fmt=str(body.get("format", default="qcow2")))
    _add_volume(store, vol)
    return {"volume": _volume_info(vol)}


@behaves("/storage/volume/delete")
def delete(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    path = str(body.need("installPath"))
    gone = store.pop_volume(path) is not None
    store.snapshots = {s: v for s, v in store.snapshots.items() if v != path}
    return {"deleted": gone}


@behaves("/storage/volume/info")
def info(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"volume": _volume_info(_volume(_store(body, fleet), str(body.need("installPath"))))}


@behaves("/storage/volume/resize")
def resize(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    vol = _volume(store, str(body.need("installPath")))
    size = int(body.need("size"))
    if size < vol.size and not body.get("force"):
        raise InvalidRequest("size: a volume does not shrink without force", field="size")
    store.resize_volume(vol, size)
    return {"volume": _volume_info(vol)}


@behaves("/storage/volume/create-template")
def create_template(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    src = _volume(store, str(body.need("installPath")))
    vol = Volume(str(body.need("templatePath")), src.size)
    _add_volume(store, vol)
    return {"volume": _volume_info(vol)}


@behaves("/storage/volume/upload-template")
def upload_template(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    vol = _volume(_store(body, fleet), str(body.need("installPath")))
    name = str(body.need("name"))
    return {"image_id": name, "digest": _digest(name), "size": vol.size,
            "virtual_size": vol.size, "format": vol.fmt}


@behaves("/storage/volume/copy")
def copy(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    src = _volume(_store(body, fleet), str(body.need("installPath")))
    dst_store = fleet.storage(str(body.need("dstStorageUuid")))
    vol = Volume(str(body.need("dstInstallPath")), src.size, fmt=src.fmt)
    _add_volume(dst_store, vol)
    return {"volume": _volume_info(vol)}


@behaves("/storage/snapshot/create")
def snapshot_create(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    vol = _volume(store, str(body.need("installPath")))
    snap = str(body.need("snapshotPath"))
    store.snapshots[snap] = vol.path
    return {"volume": _volume_info(vol)}


@behaves("/storage/snapshot/revert")
def snapshot_revert(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    vol = _volume(store, str(body.need("installPath")))
    snap = str(body.need("snapshotPath"))
    if store.snapshots.get(snap) != vol.path:
        raise NotFound(f"no snapshot {snap} of {vol.path}", snapshotPath=snap)
    return {"volume": _volume_info(vol)}


@behaves("/storage/snapshot/merge")
def snapshot_merge(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _store(body, fleet)
    vol = _volume(store, str(body.need("installPath")))
    store.snapshots = {s: v for s, v in store.snapshots.items() if v != vol.path}
    return {"volume": _volume_info(vol)}


# -- Ceph (cephagent) ------------------------------------------------------------


def _cluster(body: Body, fleet: Fleet) -> StorageState:
    cluster = body.sub("cluster")
    key = cluster.get("fsid") or ",".join(str(m) for m in cluster.list("monitors")) or "ceph"
    return fleet.storage(f"ceph:{key}")


def _rbd(body: Body, fleet: Fleet) -> tuple[StorageState, str]:
    return _cluster(body, fleet), f"{body.need('pool')}/{body.need('name')}"


def _rbd_info(vol: Volume) -> dict[str, Any]:
    pool, _, name = vol.path.partition("/")
    parent = None
    if vol.backing:
        ppath, _, snap = vol.backing.partition("@")
        ppool, _, pname = ppath.partition("/")
        parent = {"pool": ppool, "name": pname, "snapshot": snap}
    return {"install_path": vol.path, "pool": pool, "name": name, "size": vol.size,
            "actual_size": vol.actual_size, "parent": parent, "fmt": "raw", "format": "raw"}


def _fsid(store: StorageState) -> str:
    return store.uuid.removeprefix("ceph:")


@behaves("/ceph/connect", "/ceph/facts", "/ceph/ping")
def ceph_connect(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _cluster(body, fleet)
    cluster = body.sub("cluster")
    return {"fsid": _fsid(store), "user": cluster.get("user", default="admin"),
            "monitors": [str(m) for m in cluster.list("monitors")], "ceph_version": "sim",
            "librados_version": "sim", "latency_ms": 0.1}


def _ceph_capacity(store: StorageState) -> dict[str, Any]:
    return {"total_capacity": store.capacity, "available_capacity": store.capacity - store.used()}


@behaves("/ceph/pools/init", "/ceph/pools/check")
def ceph_pools(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _cluster(body, fleet)
    names = [p.get("name") if isinstance(p, dict) else p for p in body.list("pools")]
    pools = [{"name": str(n), "exists": True, "created": False, "rbd_enabled": True} for n in names]
    return {"fsid": _fsid(store), "pools": pools, **_ceph_capacity(store)}


@behaves("/ceph/capacity")
def ceph_capacity(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store = _cluster(body, fleet)
    pools = [{"name": str(p), "used_bytes": sum(v.size for v in store.volumes.values()
                                                 if v.path.startswith(f"{p}/")),
              "objects": 0, "available_bytes": store.capacity - store.used()}
             for p in body.list("pools")]
    return {**_ceph_capacity(store), "pools": pools}


@behaves("/ceph/volume/create", "/ceph/image/add", "/ceph/image/import-from-sftp")
def ceph_create(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    if path in store.volumes and body.get("skipIfExisting"):
        return _rbd_info(store.volumes[path])
    vol = Volume(path, int(body.get("size", default=DEFAULT_IMAGE_SIZE)), fmt="raw")
    _add_volume(store, vol)
    return {**_rbd_info(vol), "existed": False}


@behaves("/ceph/volume/create-from-image", "/ceph/image/cache")
def ceph_clone(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    src = f"{body.need('srcPool')}/{body.need('srcName')}"
    parent = _volume(store, src)
    snap = str(body.get("srcSnapshot", default="base"))
    vol = Volume(path, max(int(body.get("size", default=0)), parent.size),
                 backing=f"{src}@{snap}", fmt="raw")
    _add_volume(store, vol)
    return _rbd_info(vol)


@behaves("/ceph/volume/delete", "/ceph/image/delete")
def ceph_delete(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    children = [v.path for v in store.volumes.values() if (v.backing or "").startswith(path + "@")]
    if children:
        raise InUse(f"{path} has clones", clones=children[:10])
    existed = store.pop_volume(path) is not None
    store.snapshots = {s: v for s, v in store.snapshots.items() if v != path}
    return {"install_path": path, "existed": existed}


@behaves("/ceph/volume/info", "/ceph/image/info", "/ceph/volume/flatten")
def ceph_info(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    vol = _volume(store, path)
    snaps = [{"name": s.partition("@")[2], "size": vol.size, "protected": True}
             for s, v in store.snapshots.items() if v == path]
    return {**_rbd_info(vol), "snapshots": snaps}


@behaves("/ceph/volume/resize")
def ceph_resize(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    vol = _volume(store, path)
    size = int(body.need("size"))
    if size < vol.size and not body.get("allowShrink"):
        raise InvalidRequest("size: shrinking needs allowShrink", field="size")
    store.resize_volume(vol, size)
    return _rbd_info(vol)


@behaves("/ceph/volume/create-template")
def ceph_template(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    src = _volume(store, path)
    vol = Volume(f"{body.need('dstPool')}/{body.need('dstName')}", src.size, fmt="raw")
    _add_volume(store, vol)
    return _rbd_info(vol)


@behaves("/ceph/snapshot/create", "/ceph/snapshot/protect", "/ceph/snapshot/unprotect",
         "/ceph/snapshot/rollback")
def ceph_snapshot(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    _volume(store, path)
    snap = f"{path}@{body.need('snapshot')}"
    existed = snap in store.snapshots
    store.snapshots[snap] = path
    return {"install_path": snap, "snapshot": str(body.need("snapshot")), "protected": True,
            "existed": existed}


@behaves("/ceph/snapshot/delete")
def ceph_snapshot_delete(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    store, path = _rbd(body, fleet)
    snap = f"{path}@{body.need('snapshot')}"
    if any(v.backing == snap for v in store.volumes.values()):
        raise InUse(f"snapshot {snap} has clones")
    return {"install_path": snap, "existed": store.snapshots.pop(snap, None) is not None}


@behaves("/ceph/image/export-to-sftp")
def ceph_export(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    """The image (or its snapshot) as the store measured it (raw: RBD has no backing file)."""
    store, path = _rbd(body, fleet)
    vol = _volume(store, path)
    snap = body.get("snapshot")
    if snap and f"{path}@{snap}" not in store.snapshots:
        raise NotFound(f"no snapshot {snap} of {path}", snapshot=snap)
    name = str(body.need("storeName"))
    return {"image_id": name, "digest": _digest(name), "size": vol.size}


# -- SFTP backup storage (sftpbackup) -----------------------------------------------


def _backup_capacity(agent: SimAgent, body: Body) -> dict[str, Any]:
    total, used = agent.capacity.storage, agent.used_by_images()
    return {"total_capacity": total, "available_capacity": total - used, "used_by_images": used,
            "backup_storage_uuid": body.get("backupStorageUuid"), "version": "sim"}


@behaves("/backup/connect", "/backup/ping", "/backup/capacity")
def backup_capacity(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return _backup_capacity(agent, body)


def _stored(agent: SimAgent, body: Body) -> dict[str, Any]:
    image = str(body.need("imageUuid"))
    info = agent.images.get(image)
    if info is None:
        raise NotFound(f"no image {image} in this store", imageUuid=image)
    return info


@behaves("/backup/image/add")
def backup_add(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    image = str(body.need("imageUuid"))
    known = agent.images.get(image)
    if known is not None:
        return {"image": known, "new_chunks": 0, "new_bytes": 0}
    size = int(body.get("size", default=DEFAULT_IMAGE_SIZE))
    if agent.used_by_images() + size > agent.capacity.storage:
        raise InsufficientCapacity("the backup storage is full", imageUuid=image)
    fmt = body.get("format", default="qcow2")
    info = {
        "image_uuid": image, "name": str(body.get("name", default=image)),
        "format": "qcow2" if fmt == "auto" else fmt, "virtual_size": size, "size": size,
        "digest": _digest(str(body.get("url", default=image))).removeprefix("sha256:"),
        "chunk_size": 4 * MiB, "chunk_count": -(-size // (4 * MiB)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    agent.images[image] = info
    return {"image": info, "new_chunks": info["chunk_count"], "new_bytes": size}


@behaves("/backup/image/delete")
def backup_delete(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"deleted": agent.images.pop(str(body.need("imageUuid")), None) is not None}


@behaves("/backup/image/info")
def backup_info(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"image": _stored(agent, body)}


@behaves("/backup/image/push", "/backup/image/pull")
def backup_transfer(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    info = _stored(agent, body)
    return {"image": info, "chunks_total": info["chunk_count"], "chunks_sent": 0,
            "bytes_total": info["size"], "bytes_sent": 0}


@behaves("/backup/catalogue/export", "/backup/catalogue/import")
def backup_catalogue(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    return {"images": list(agent.images.values())}


@behaves("/backup/verify")
def backup_verify(agent: SimAgent, body: Body, fleet: Fleet) -> dict[str, Any]:
    wanted = [str(u) for u in body.list("imageUuids")] or list(agent.images)
    missing = [u for u in wanted if u not in agent.images]
    return {"ok": not missing, "images_checked": len(wanted) - len(missing),
            "chunks_checked": sum(agent.images[u]["chunk_count"] for u in wanted
                                  if u in agent.images),
            "bad_chunks": [], "missing_chunks": [], "bad_images": missing}
