"""The manifest format and the store layout paths."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from sftpbackup.manifest import ChunkRef, Manifest, chunk_relpath, manifest_relpath, zero_digest

D1 = hashlib.sha256(b"one").hexdigest()
D2 = hashlib.sha256(b"two").hexdigest()


def manifest(**over: object) -> Manifest:
    fields: dict[str, object] = dict(
        image_id="img", format="raw", virtual_size=5, size=5, digest=D1, chunk_size=3,
        chunks=[ChunkRef(digest=D1, size=3), ChunkRef(digest=D2, size=2)], created="2026-01-01T00:00:00+00:00",
    )
    fields.update(over)
    return Manifest.model_validate(fields)


def test_round_trip_and_offsets() -> None:
    m = manifest()
    assert Manifest.loads(m.dumps()) == m
    assert [(off, c.digest) for off, c in m.offsets()] == [(0, D1), (3, D2)]
    assert m.unique_digests() == {D1: 3, D2: 2}
    info = m.info()
    assert (info.image_uuid, info.chunk_count, info.size) == ("img", 2, 5)


def test_sizes_must_add_up() -> None:
    with pytest.raises(ValidationError, match="add up"):
        manifest(size=6)


def test_only_sha256() -> None:
    with pytest.raises(ValidationError, match="algorithm"):
        manifest(algorithm="md5")


def test_paths() -> None:
    assert chunk_relpath(D1) == f"chunks/{D1[:2]}/{D1}"
    assert manifest_relpath("img") == "manifests/img.json"
    with pytest.raises(ValueError):
        chunk_relpath("../../etc/passwd")


def test_zero_digest() -> None:
    assert zero_digest(4) == hashlib.sha256(bytes(4)).hexdigest()
