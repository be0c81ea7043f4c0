"""Wire models of the storageagent (file-based primary storage).

Every command names its storage by ``storageUuid`` plus the storage's root
(``mountPath``); volumes, snapshots and templates are named by paths relative
to that root (``installPath``), never by free absolute paths. Sizes are bytes.
The controller and the simulator import these models, so field names only
ever change additively.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from agentcore.digest import PrefixedDigest
from agentcore.models import Command, Reply, Returns, WireModel

#: the largest volume or image the agent accepts (64 TiB)
MAX_SIZE = 64 * 2**40


def _relative_path(v: str) -> str:
    if "\x00" in v or "\\" in v:
        raise ValueError("must not contain NUL or backslash")
    if v.startswith("/"):
        raise ValueError("must be relative to the storage root, not absolute")
    parts = v.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError("must be a normalised relative path without '.', '..' or empty parts")
    return v


def _absolute_path(v: str) -> str:
    if "\x00" in v or not v.startswith("/") or posixpath.normpath(v) != v or v == "/":
        raise ValueError("must be a normalised absolute path other than '/'")
    return v


InstallPath = Annotated[
    str,
    Field(min_length=1, max_length=1024, description="path relative to the storage root"),
    AfterValidator(_relative_path),
]
MountPath = Annotated[
    str,
    Field(min_length=2, max_length=1024, description="absolute root of the storage on this host"),
    AfterValidator(_absolute_path),
]
Uuid = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")]
ImageId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
Size = Annotated[int, Field(gt=0, le=MAX_SIZE, description="bytes")]
NfsUrl = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9.:\[\]-]+:/[A-Za-z0-9._/-]*$",
        max_length=1024,
        description="NFS export as server:/path",
    ),
]
MountOption = Annotated[str, Field(pattern=r"^[a-z0-9_]+(=[A-Za-z0-9._:-]+)?$", max_length=128)]
VolumeFormat = Literal["qcow2", "raw"]
StorageType = Literal["nfs", "local", "sharedmountpoint"]


class StorageCmd(Command):
    """Base of every command that works inside one primary storage."""

    storage_uuid: Uuid
    mount_path: MountPath


def volume_key(storage_uuid: str, install_path: str) -> str:
    """The lock key of one file of one storage."""
    return f"file:{storage_uuid}:{install_path}"


def image_key(storage_uuid: str, image_id: str) -> str:
    """The lock key of one cached image of one storage."""
    return f"image:{storage_uuid}:{image_id}"


# -- storage ---------------------------------------------------------------


class Capacity(WireModel):
    """Space of a storage's filesystem and what kvmcloud's files take of it."""

    total_bytes: int = 0
    available_bytes: int = 0
    used_by_kvmcloud_bytes: int = 0


class MountReply(Reply):
    mount_path: str = ""
    already_mounted: bool = False
    capacity: Capacity | None = None


class MountCmd(Command, Returns[MountReply], path="/storage/mount"):
    """Mount an NFS export at the mount path derived from the storage UUID."""

    storage_uuid: Uuid
    url: NfsUrl
    nfs_version: Literal["3", "4", "4.0", "4.1", "4.2"] = "4.1"
    options: list[MountOption] = Field(default_factory=list, max_length=32)
    host_uuid: Uuid | None = Field(default=None, description=(
        "the host this agent serves: while mounted, its heartbeat file on the share is "
        "rewritten every few seconds (HA fencing, see /storage/heartbeat/age)"))


class UnmountReply(Reply):
    mount_path: str = ""
    was_mounted: bool = False


class UnmountCmd(Command, Returns[UnmountReply], path="/storage/unmount"):
    """Unmount the storage's NFS export (a no-op when it is not mounted)."""

    storage_uuid: Uuid


class InitReply(Reply):
    mount_path: str = ""
    capacity: Capacity | None = None


class InitCmd(StorageCmd, Returns[InitReply], path="/storage/init"):
    """Claim a local directory or an operator-mounted shared filesystem."""

    type: Literal["local", "sharedmountpoint"]


class HeartbeatAgeReply(Reply):
    age: float | None = Field(default=None, description=(
        "seconds since the host last wrote its heartbeat file (None: it never did)"))


class HeartbeatAgeCmd(Command, Returns[HeartbeatAgeReply], path="/storage/heartbeat/age"):
    """How long ago a host last wrote its heartbeat on a mounted NFS storage."""

    storage_uuid: Uuid
    host_uuid: Uuid


class PingReply(Reply):
    storage_uuid: str = ""
    latency_ms: float = 0.0


class PingCmd(StorageCmd, Returns[PingReply], path="/storage/ping"):
    """Write-and-read test of the storage, with its own timeout."""

    url: NfsUrl | None = Field(default=None, description="for NFS: also probe the server")
    probe_timeout: float = Field(default=10.0, gt=0, le=300)


class CapacityReply(Reply):
    capacity: Capacity | None = None


class CapacityCmd(StorageCmd, Returns[CapacityReply], path="/storage/capacity"):
    """Total, available and kvmcloud-used bytes of the storage."""


# -- image cache -----------------------------------------------------------


class HttpSource(WireModel):
    """An image served over http(s)."""

    kind: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://", max_length=4096)


class SftpTarget(WireModel):
    """An SFTP backup storage; its key and known_hosts come from the agent's config."""

    host: str = Field(pattern=r"^[A-Za-z0-9.:\[\]-]+$", max_length=255)
    port: int = Field(default=22, gt=0, lt=65536)
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    store_root: str = Field(min_length=1, max_length=1024)


class SftpSource(SftpTarget):
    """An image in an SFTP backup storage."""

    kind: Literal["sftp"] = "sftp"
    image_id: str = Field(min_length=1, max_length=256)


class CachedImage(WireModel):
    """An image in the cache."""

    image_id: str
    install_path: str
    format: str
    virtual_size: int
    size: int
    digest: str
    cached_at: float = 0.0


class CacheImageReply(Reply):
    image: CachedImage | None = None
    downloaded: bool = False


class CacheImageCmd(StorageCmd, Returns[CacheImageReply], path="/storage/cache-image"):
    """Pull an image into the storage's image cache and verify its digest."""

    image_id: ImageId
    source: Annotated[HttpSource | SftpSource, Field(discriminator="kind")]
    digest: PrefixedDigest
    size: Size | None = Field(default=None, description="expected size in bytes, if known")


class ListCacheReply(Reply):
    images: list[CachedImage] = Field(default_factory=list)


class ListCacheCmd(StorageCmd, Returns[ListCacheReply], path="/storage/cache/list"):
    """The images in the storage's cache."""


class EvictCacheReply(Reply):
    evicted: bool = False


class EvictCacheCmd(StorageCmd, Returns[EvictCacheReply], path="/storage/cache/evict"):
    """Remove an image from the cache unless a volume is backed by it."""

    image_id: ImageId


# -- volumes ---------------------------------------------------------------


class ChainEntry(WireModel):
    """One file of a backing chain."""

    install_path: str
    format: str
    virtual_size: int
    actual_size: int = 0


class VolumeInfo(WireModel):
    """A volume file and its backing chain (nearest backing first)."""

    install_path: str
    format: str
    virtual_size: int
    actual_size: int
    backing_chain: list[ChainEntry] = Field(default_factory=list)


class VolumeReply(Reply):
    volume: VolumeInfo | None = None


class CreateRootVolumeCmd(StorageCmd, Returns[VolumeReply], path="/storage/volume/create-root"):
    """Linked clone of a cached image: a qcow2 overlay backed by the image."""

    image_id: ImageId
    install_path: InstallPath
    size: Size | None = Field(default=None, description="grow the virtual size to this")


class CreateEmptyVolumeCmd(StorageCmd, Returns[VolumeReply], path="/storage/volume/create-empty"):
    """A new empty volume."""

    install_path: InstallPath
    size: Size
    format: VolumeFormat = "qcow2"


class CreateVolumeFromTemplateCmd(StorageCmd, Returns[VolumeReply], path="/storage/volume/create-from-template"):
    """A data volume that is a full (flattened) copy of a cached image."""

    image_id: ImageId
    install_path: InstallPath
    size: Size | None = None


class CreateVolumeFromStoreCmd(StorageCmd, Returns[VolumeReply], path="/storage/volume/create-from-store"):
    """A data volume restored from an image of an SFTP backup storage: fetched
    into the storage, its digest checked, then renamed (qcow2) or converted
    (raw) into place at ``installPath``."""

    source: SftpSource
    install_path: InstallPath
    digest: PrefixedDigest
    size: Size | None = Field(default=None, description="expected size in bytes, if known")


class VolumeCmd(StorageCmd):
    """A command on one volume.

    ``volumeFormat`` is the volume's format as the controller recorded it when it
    made the volume. The agent hands it to qemu-img (``-f``) and never probes:
    the first bytes of a raw volume are the guest's, and a qcow2 header written
    there would make a probing qemu-img read the host file it names.
    """

    install_path: InstallPath
    volume_format: VolumeFormat = Field(
        default="qcow2", description="the volume's format as recorded when it was made")


class DeleteVolumeReply(Reply):
    deleted: bool = False


class DeleteVolumeCmd(VolumeCmd, Returns[DeleteVolumeReply], path="/storage/volume/delete"):
    """Delete a volume unless QEMU holds it or another volume is backed by it."""


class VolumeInfoCmd(VolumeCmd, Returns[VolumeReply], path="/storage/volume/info"):
    """Virtual size, actual size and backing chain of a volume."""


class ResizeVolumeCmd(VolumeCmd, Returns[VolumeReply], path="/storage/volume/resize"):
    """Offline resize; shrinking needs ``force``."""

    size: Size
    force: bool = False


class CreateTemplateCmd(VolumeCmd, Returns[VolumeReply], path="/storage/volume/create-template"):
    """Flatten a volume into a standalone template file on the same storage."""

    template_path: InstallPath
    format: VolumeFormat = "qcow2"
    compress: bool = False


class UploadTemplateReply(Reply):
    image_id: str = ""
    digest: str = ""
    size: int = 0
    virtual_size: int = 0
    format: str = ""


class UploadTemplateCmd(VolumeCmd, Returns[UploadTemplateReply], path="/storage/volume/upload-template"):
    """Upload a file of this storage to an SFTP backup storage."""

    target: SftpTarget
    name: ImageId = Field(description="the image's name (id) in the store")


class CopyVolumeCmd(VolumeCmd, Returns[VolumeReply], path="/storage/volume/copy"):
    """Copy (flattened) a volume to another primary storage of this host."""

    dst_storage_uuid: Uuid
    dst_mount_path: MountPath
    dst_install_path: InstallPath


# -- snapshots -------------------------------------------------------------


class CreateSnapshotCmd(VolumeCmd, Returns[VolumeReply], path="/storage/snapshot/create"):
    """Offline snapshot: the volume's data becomes ``snapshotPath`` (never written
    again by the agent) and the volume becomes a new overlay on top of it."""

    snapshot_path: InstallPath


class RevertSnapshotCmd(VolumeCmd, Returns[VolumeReply], path="/storage/snapshot/revert"):
    """Throw away the volume's changes since ``snapshotPath`` (in its chain)."""

    snapshot_path: InstallPath


class MergeSnapshotsCmd(VolumeCmd, Returns[VolumeReply], path="/storage/snapshot/merge"):
    """Pull the data of the chain above ``basePath`` into the volume and make
    ``basePath`` its backing file (``null``: flatten the volume completely)."""

    base_path: InstallPath | None = None
