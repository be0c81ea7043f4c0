"""Wire models of the cephagent: every command body and reply.

Every command names its cluster (:class:`ClusterRef`: monitors, cephx user,
key by reference) so the agent stays stateless; RBD images are named by
``pool`` + ``name`` (never a free ``pool/image@snap`` string), and each part is
validated so that ``/``, ``@`` or a leading ``.`` is a 400 naming the field.
Replies carry ``installPath`` (``pool/name``), which is what libvirt's RBD
disk source and the KVM agent use.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, HttpUrl, StringConstraints, model_validator

from agentcore.digest import HexDigest
from agentcore.models import Command, Reply, Returns, WireModel

_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
PoolName = Annotated[str, StringConstraints(pattern=_NAME, min_length=1, max_length=64)]
ImageName = Annotated[str, StringConstraints(pattern=_NAME, min_length=1, max_length=128)]
SnapName = Annotated[str, StringConstraints(pattern=_NAME, min_length=1, max_length=128)]
CephUser = Annotated[str, StringConstraints(pattern=r"^(client\.)?[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")]
Monitor = Annotated[
    str, StringConstraints(pattern=r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*)(:[0-9]{1,5})?$",
                           max_length=255)
]
KeyRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
Fsid = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F-]{36}$")]
Size = Annotated[int, Field(gt=0, le=1 << 50, description="bytes")]
Feature = Literal["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]

DEFAULT_FEATURES: list[Feature] = ["layering"]
BASE_SNAPSHOT = "kvmcloud-base"


class ClusterRef(WireModel):
    """Which cluster to talk to and as whom. The cephx key is given by
    reference only: ``keyring`` is a keyring file on the agent's host (inside
    the agent's ``keyring_dirs``), ``keyRef`` names a file holding the bare key
    in the agent's ``secrets_dir``. Exactly one of them."""

    monitors: list[Monitor] = Field(min_length=1, max_length=16, description="HOST[:PORT] of monitors")
    user: CephUser = Field(description="cephx user, with or without 'client.'")
    keyring: str | None = Field(default=None, max_length=4096, description="keyring file path on the host")
    key_ref: KeyRef | None = Field(default=None, description="name of a key file in secrets_dir")
    fsid: Fsid | None = Field(default=None, description="expected cluster fsid; checked when given")

    @model_validator(mode="after")
    def _one_key(self) -> ClusterRef:
        if (self.keyring is None) == (self.key_ref is None):
            raise ValueError("give exactly one of keyring and keyRef")
        if self.keyring is not None and not self.keyring.startswith("/"):
            raise ValueError("keyring must be an absolute path")
        return self

    @property
    def user_id(self) -> str:
        """The user without the ``client.`` prefix (what librados calls rados_id)."""
        return self.user.removeprefix("client.")


class CephCommand(Command):
    """Base of every cephagent command: the cluster it is about."""

    cluster: ClusterRef


class ImageCommand(CephCommand):
    """A command about one RBD image (a volume or a backup-storage image)."""

    pool: PoolName
    name: ImageName

    @property
    def install_path(self) -> str:
        return f"{self.pool}/{self.name}"


class SnapshotCommand(ImageCommand):
    snapshot: SnapName


# -- shared reply parts --------------------------------------------------


class PoolCapacity(WireModel):
    name: str
    used_bytes: int
    objects: int
    available_bytes: int | None = None


class ParentRef(WireModel):
    pool: str
    name: str
    snapshot: str


class SnapshotInfo(WireModel):
    name: str
    size: int
    protected: bool


class CapacityMixin(WireModel):
    total_capacity: int | None = None
    available_capacity: int | None = None


# -- cluster -------------------------------------------------------------


class ConnectReply(Reply):
    fsid: str = ""
    user: str = ""
    monitors: list[str] = Field(default_factory=list)


class ConnectCmd(CephCommand, Returns[ConnectReply], path="/ceph/connect"):
    """Open (or re-open) the connection to a cluster and check the credential."""


class PingReply(Reply):
    fsid: str = ""
    latency_ms: float = 0.0


class PingCmd(CephCommand, Returns[PingReply], path="/ceph/ping"):
    """Write and read back a heartbeat object in ``pool``."""

    pool: PoolName
    object_name: ImageName | None = Field(
        default=None, description="heartbeat object; default kvmcloud-heartbeat-<hostname>, one per host",
    )


class FactsReply(Reply):
    fsid: str = ""
    monitors: list[str] = Field(default_factory=list)
    ceph_version: str = ""
    librados_version: str = ""


class FactsCmd(CephCommand, Returns[FactsReply], path="/ceph/facts"):
    """Facts of the cluster."""


class PoolSpec(WireModel):
    name: PoolName
    predefined: bool = Field(default=False, description="exists already: check, never create")
    pg_num: int = Field(default=8, ge=1, le=4096)


class PoolState(WireModel):
    name: str
    exists: bool
    created: bool = False
    rbd_enabled: bool = False


class InitPoolsReply(Reply, CapacityMixin):
    fsid: str = ""
    pools: list[PoolState] = Field(default_factory=list)


class InitPoolsCmd(CephCommand, Returns[InitPoolsReply], path="/ceph/pools/init"):
    """Create the pools (unless predefined) and enable the rbd application."""

    pools: list[PoolSpec] = Field(min_length=1, max_length=32)


class CheckPoolsReply(Reply):
    pools: list[PoolState] = Field(default_factory=list)


class CheckPoolsCmd(CephCommand, Returns[CheckPoolsReply], path="/ceph/pools/check"):
    pools: list[PoolName] = Field(min_length=1, max_length=32)


class CapacityReply(Reply, CapacityMixin):
    pools: list[PoolCapacity] = Field(default_factory=list)


class CapacityCmd(CephCommand, Returns[CapacityReply], path="/ceph/capacity"):
    pools: list[PoolName] = Field(default_factory=list, max_length=32, description="empty: cluster only")


# -- volumes (primary storage) ------------------------------------------


class VolumeInfoReply(Reply):
    install_path: str = ""
    pool: str = ""
    name: str = ""
    size: int = 0
    actual_size: int | None = None
    parent: ParentRef | None = None
    snapshots: list[SnapshotInfo] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    watchers: int = 0


class CreateVolumeCmd(ImageCommand, Returns[VolumeInfoReply], path="/ceph/volume/create"):
    size: Size
    features: list[Feature] = Field(default_factory=lambda: list(DEFAULT_FEATURES))
    skip_if_existing: bool = False


class CreateVolumeFromImageCmd(ImageCommand, Returns[VolumeInfoReply], path="/ceph/volume/create-from-image"):
    """Clone ``pool/name`` from ``srcPool/srcName@srcSnapshot`` (the snapshot is
    created and protected once if missing)."""

    src_pool: PoolName
    src_name: ImageName
    src_snapshot: SnapName = BASE_SNAPSHOT
    size: Size | None = Field(default=None, description="grow the clone to this size")
    features: list[Feature] = Field(default_factory=lambda: list(DEFAULT_FEATURES))


class DeleteVolumeReply(Reply):
    install_path: str = ""
    existed: bool = True


class DeleteVolumeCmd(ImageCommand, Returns[DeleteVolumeReply], path="/ceph/volume/delete"):
    purge_snapshots: bool = False


class ResizeVolumeCmd(ImageCommand, Returns[VolumeInfoReply], path="/ceph/volume/resize"):
    size: Size
    allow_shrink: bool = False


class VolumeInfoCmd(ImageCommand, Returns[VolumeInfoReply], path="/ceph/volume/info"):
    pass


class FlattenVolumeCmd(ImageCommand, Returns[VolumeInfoReply], path="/ceph/volume/flatten"):
    pass


class ImageInfoReply(Reply):
    install_path: str = ""
    size: int = 0
    actual_size: int | None = None
    format: str = "raw"
    source_format: str | None = None
    sha256: str | None = None
    downloaded_bytes: int | None = None
    existed: bool = True


class CreateTemplateCmd(ImageCommand, Returns[ImageInfoReply], path="/ceph/volume/create-template"):
    """Copy ``pool/name`` (or its snapshot) to ``dstPool/dstName`` (backup pool)."""

    snapshot: SnapName | None = None
    dst_pool: PoolName
    dst_name: ImageName


# -- snapshots -----------------------------------------------------------


class SnapshotReply(Reply):
    install_path: str = ""
    snapshot: str = ""
    protected: bool = False
    existed: bool = True


class CreateSnapshotCmd(SnapshotCommand, Returns[SnapshotReply], path="/ceph/snapshot/create"):
    skip_if_existing: bool = False


class DeleteSnapshotCmd(SnapshotCommand, Returns[SnapshotReply], path="/ceph/snapshot/delete"):
    pass


class ProtectSnapshotCmd(SnapshotCommand, Returns[SnapshotReply], path="/ceph/snapshot/protect"):
    pass


class UnprotectSnapshotCmd(SnapshotCommand, Returns[SnapshotReply], path="/ceph/snapshot/unprotect"):
    pass


class RollbackSnapshotCmd(SnapshotCommand, Returns[SnapshotReply], path="/ceph/snapshot/rollback"):
    pass


# -- images (backup storage) ---------------------------------------------


class AddImageCmd(ImageCommand, Returns[ImageInfoReply], path="/ceph/image/add"):
    """Download ``url`` into ``pool/name`` (converted to raw)."""

    url: HttpUrl
    sha256: HexDigest | None = None
    format: Literal["auto", "raw", "qcow2"] = "auto"


class CacheImageCmd(ImageCommand, Returns[ImageInfoReply], path="/ceph/image/cache"):
    """Copy ``srcPool/srcName`` (backup pool) to ``pool/name`` (primary cache)."""

    src_pool: PoolName
    src_name: ImageName


class DeleteImageCmd(ImageCommand, Returns[ImageInfoReply], path="/ceph/image/delete"):
    pass


class ImageInfoCmd(ImageCommand, Returns[ImageInfoReply], path="/ceph/image/info"):
    pass


class SftpImageCommand(ImageCommand):
    """An image moved between RBD and the SFTP backup storage. The SSH key
    and known_hosts come from the agent's config, never from the body."""

    host: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.\-:\[\]]{1,255}$")]
    port: int = Field(default=22, ge=1, le=65535)
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_\-]{0,31}$")]
    store_root: str = Field(min_length=1, max_length=4096)


class ImportFromSftpCmd(SftpImageCommand, Returns[ImageInfoReply], path="/ceph/image/import-from-sftp"):
    """Fetch image ``imageId`` of the SFTP store into ``pool/name``; it must hash to ``sha256``."""

    image_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-:]{1,128}$")]
    sha256: HexDigest = Field(
        description="the image's digest (hex) as the controller recorded it; the fetched bytes must match")


class ExportToSftpReply(Reply):
    image_id: str = ""
    digest: str = ""
    size: int = 0


class ExportToSftpCmd(SftpImageCommand, Returns[ExportToSftpReply], path="/ceph/image/export-to-sftp"):
    snapshot: SnapName | None = None
    store_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,128}$")]

