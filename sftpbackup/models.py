"""Wire models of the sftpbackup agent (imported by the controller and the simulator).

Every command names its backup storage by ``backupStorageUuid`` plus the
store's ``root`` directory on the agent's host; images are named by
``imageUuid`` (a plain name: no ``/``, no ``..``). A remote store (push,
pull) is named by an :class:`SftpEndpoint`; the SSH key and known_hosts
file are host-side paths from the agent's config, never in a body.
"""

from __future__ import annotations

import posixpath
import re
from typing import Literal

from pydantic import Field, field_validator

from agentcore.digest import HexDigest
from agentcore.models import Command, Reply, Returns, WireModel

IMAGE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
URL_SCHEMES = ("http://", "https://", "sftp://", "file://")

ImageFormat = Literal["raw", "qcow2", "iso"]


def check_image_id(v: str) -> str:
    """A store-safe image name: letters, digits, ``._-``, never ``..``."""
    if not IMAGE_ID_RE.fullmatch(v) or ".." in v:
        raise ValueError("must be 1-128 of [A-Za-z0-9._-], start alphanumeric, and contain no '..'")
    return v


def check_abs_path(v: str) -> str:
    """An absolute, already-normal POSIX path with no ``..`` component."""
    if not v.startswith("/"):
        raise ValueError("must be an absolute path")
    parts = v.split("/")
    if ".." in parts or "." in parts:
        raise ValueError("must not contain '.' or '..' components")
    if posixpath.normpath(v) != v.rstrip("/") and v != "/":
        raise ValueError("must be a normalised path")
    if any(c in v for c in "\"'\\\n\r\t"):
        raise ValueError("must not contain quotes, backslashes or control characters")
    return v.rstrip("/") or "/"


class StoreCommand(Command):
    """A command on one backup storage: its UUID and its root directory."""

    backup_storage_uuid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    root: str = Field(min_length=2, max_length=1024, description="absolute store directory")

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        v = check_abs_path(v)
        if v == "/":
            raise ValueError("the store root cannot be /")
        return v


class ImageCommand(StoreCommand):
    """A command on one image of a store."""

    image_uuid: str = Field(description="the image's name in the store")

    @field_validator("image_uuid")
    @classmethod
    def _image(cls, v: str) -> str:
        return check_image_id(v)


class SftpEndpoint(WireModel):
    """Another store reachable over SFTP (its SSH key comes from the agent's config)."""

    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:_-]+$")
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    store_root: str = Field(default="/", description="the store's directory as the SFTP server shows it")

    @field_validator("store_root")
    @classmethod
    def _store_root(cls, v: str) -> str:
        return check_abs_path(v)


class ImageInfo(WireModel):
    """What the store knows about one image (its manifest, without the chunk list)."""

    image_uuid: str
    name: str = ""
    format: ImageFormat
    virtual_size: int
    size: int = Field(description="bytes of the image file")
    digest: str = Field(description="sha256 (hex) of the whole image file")
    chunk_size: int
    chunk_count: int
    created: str


# -- connect, ping, capacity ---------------------------------------------------


class CapacityReply(Reply):
    total_capacity: int = 0
    available_capacity: int = 0
    used_by_images: int = Field(default=0, description="bytes of chunk files in the store")


class ConnectReply(CapacityReply):
    backup_storage_uuid: str = ""


class ConnectCmd(StoreCommand, Returns[ConnectReply], path="/backup/connect"):
    """Bind a backup storage UUID to a root directory (creates the store layout)."""


class PingReply(Reply):
    backup_storage_uuid: str = ""
    version: str = ""


class PingCmd(StoreCommand, Returns[PingReply], path="/backup/ping"):
    """Check the agent is up and the store is the one named."""


class CapacityCmd(StoreCommand, Returns[CapacityReply], path="/backup/capacity"):
    """Capacity of the filesystem holding the store."""


# -- images ----------------------------------------------------------------------


class AddImageReply(Reply):
    image: ImageInfo | None = None
    new_chunks: int = 0
    new_bytes: int = 0


class AddImageCmd(ImageCommand, Returns[AddImageReply], path="/backup/image/add"):
    """Download an image from a URL into the store."""

    url: str = Field(min_length=8, max_length=4096)
    name: str = Field(default="", max_length=255)
    format: ImageFormat | None = Field(default=None, description="expected format; detected if unset")
    size: int | None = Field(default=None, ge=0, description="expected size in bytes; a mismatch fails")
    sha256: HexDigest | None = Field(default=None, description="expected digest")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.lower().startswith(URL_SCHEMES):
            raise ValueError(f"unsupported URL scheme; use one of {', '.join(URL_SCHEMES)}")
        return v


class DeleteImageReply(Reply):
    deleted: bool = False


class DeleteImageCmd(ImageCommand, Returns[DeleteImageReply], path="/backup/image/delete"):
    """Delete an image's manifest (its chunks go at the next GC)."""


class ImageInfoReply(Reply):
    image: ImageInfo | None = None


class ImageInfoCmd(ImageCommand, Returns[ImageInfoReply], path="/backup/image/info"):
    """Describe an image of the store."""


class TransferReply(Reply):
    image: ImageInfo | None = None
    chunks_total: int = 0
    chunks_sent: int = Field(default=0, description="chunks that crossed the wire")
    bytes_total: int = 0
    bytes_sent: int = 0


class TransferImageCmd(ImageCommand, Returns[TransferReply], path="/backup/image/push"):
    """Push an image from this store to another one."""

    remote: SftpEndpoint


class PullImageCmd(TransferImageCmd, Returns[TransferReply], path="/backup/image/pull"):
    """Pull an image from another store into this one."""

    sha256: HexDigest = Field(description="the image's digest as the caller recorded it; the pulled image must match")


# -- verify, gc, catalogue ---------------------------------------------------------


class VerifyReply(Reply):
    ok: bool = True
    images_checked: int = 0
    chunks_checked: int = 0
    bad_chunks: list[str] = Field(default_factory=list)
    missing_chunks: list[str] = Field(default_factory=list)
    bad_images: list[str] = Field(default_factory=list)


class VerifyCmd(StoreCommand, Returns[VerifyReply], path="/backup/verify"):
    """Re-hash every chunk (or those of the images named) against its name."""

    image_uuids: list[str] | None = None

    @field_validator("image_uuids")
    @classmethod
    def _images(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [check_image_id(i) for i in v]


class GcReply(Reply):
    chunks_removed: int = 0
    bytes_freed: int = 0
    chunks_kept: int = 0
    temp_files_removed: int = 0


class GcCmd(StoreCommand, Returns[GcReply], path="/backup/gc"):
    """Remove chunks no manifest references, and stale temporary files."""

    grace_seconds: float = Field(
        default=3600, ge=0, description="unreferenced chunks younger than this are kept",
    )
    stale_seconds: float = Field(
        default=86400, ge=0, description="temporary files of adds older than this are removed",
    )


class CatalogueReply(Reply):
    images: list[ImageInfo] = Field(default_factory=list)


class ExportCatalogueCmd(StoreCommand, Returns[CatalogueReply], path="/backup/catalogue/export"):
    """Write the store's catalogue (every image) to ``catalogue.json`` and return it."""


class ImportCatalogueCmd(StoreCommand, Returns[CatalogueReply], path="/backup/catalogue/import"):
    """Read every image of an existing store, for a fresh controller to adopt."""

