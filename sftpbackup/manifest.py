"""The store's on-disk layout and its manifest format, shared by the agent and the client.

A store is a directory::

    store.json                 which backup storage this is
    manifests/<image>.json     one manifest per image, written last, atomically
    chunks/<ab>/<sha256>       chunk files named by the sha256 of their bytes
    pending/<token>            chunks an add in progress has written (GC keeps them)
    tmp/                       temporary names; renamed into place when complete

A manifest is the image's format, sizes, whole-file digest and the ordered
list of its chunks. Identical chunks are stored once and shared.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sftpbackup.models import ImageFormat, ImageInfo

CHUNK_SIZE = 1024 * 1024
ALGORITHM = "sha256"
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")

MANIFESTS = "manifests"
CHUNKS = "chunks"
PENDING = "pending"
TMP = "tmp"
MARKER = "store.json"


def chunk_relpath(digest: str) -> str:
    """Where a chunk lives, relative to the store root."""
    if not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"{CHUNKS}/{digest[:2]}/{digest}"


def manifest_relpath(image_id: str) -> str:
    return f"{MANIFESTS}/{image_id}.json"


def zero_digest(size: int) -> str:
    """The digest of ``size`` zero bytes (chunks that fetches leave sparse)."""
    return _zero_digest(size)


_ZERO_CACHE: dict[int, str] = {}


def _zero_digest(size: int) -> str:
    d = _ZERO_CACHE.get(size)
    if d is None:
        d = hashlib.sha256(bytes(size)).hexdigest()
        _ZERO_CACHE[size] = d
    return d


class ChunkRef(BaseModel):
    """One chunk of an image, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)


class Manifest(BaseModel):
    """An image in the store: immutable once written."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    image_id: str
    name: str = ""
    format: ImageFormat
    virtual_size: int = Field(ge=0)
    size: int = Field(ge=0)
    algorithm: str = ALGORITHM
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    chunk_size: int = Field(gt=0)
    chunks: list[ChunkRef]
    created: str

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if sum(c.size for c in self.chunks) != self.size:
            raise ValueError("the chunk sizes do not add up to the image size")
        if self.algorithm != ALGORITHM:
            raise ValueError(f"unsupported digest algorithm {self.algorithm!r}")
        return self

    def offsets(self) -> list[tuple[int, ChunkRef]]:
        """Each chunk with its offset in the image."""
        out: list[tuple[int, ChunkRef]] = []
        pos = 0
        for c in self.chunks:
            out.append((pos, c))
            pos += c.size
        return out

    def unique_digests(self) -> dict[str, int]:
        """Each distinct chunk digest with its size."""
        return {c.digest: c.size for c in self.chunks}

    def info(self) -> ImageInfo:
        return ImageInfo(
            image_uuid=self.image_id, name=self.name, format=self.format,
            virtual_size=self.virtual_size, size=self.size, digest=self.digest,
            chunk_size=self.chunk_size, chunk_count=len(self.chunks), created=self.created,
        )

    def dumps(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes | str) -> Manifest:
        raw: Any = json.loads(data)
        return cls.model_validate(raw)
