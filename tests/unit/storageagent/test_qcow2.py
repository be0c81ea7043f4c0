"""qcow2 header reading and backing-chain scans, on hand-made headers."""

from __future__ import annotations

import struct
from pathlib import Path

from storageagent.qcow2 import backing_path, children_of, read_header


def write_qcow2(path: Path, size: int, backing: str | None = None) -> Path:
    """A qcow2 v3 header (enough for the reader; not a usable image)."""
    name = backing.encode() if backing else b""
    off = 104 if name else 0
    header = struct.pack(">4sIQIIQ", b"QFI\xfb", 3, off, len(name), 16, size)
    data = header.ljust(104, b"\0") + name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_reads_version_size_and_backing_name(tmp_path: Path) -> None:
    p = write_qcow2(tmp_path / "v.qcow2", 1 << 30, "../imagecache/img.qcow2")
    h = read_header(p)
    assert h is not None
    assert (h.version, h.virtual_size, h.backing_file) == (3, 1 << 30, "../imagecache/img.qcow2")
    assert backing_path(p, h) == tmp_path.parent / "imagecache" / "img.qcow2"


def test_non_qcow2_files_have_no_header(tmp_path: Path) -> None:
    (tmp_path / "raw").write_bytes(b"\0" * 4096)
    (tmp_path / "short").write_bytes(b"QFI")
    assert read_header(tmp_path / "raw") is None
    assert read_header(tmp_path / "short") is None
    assert read_header(tmp_path / "missing") is None
    assert read_header(tmp_path) is None


def test_protocol_backing_names_are_not_files(tmp_path: Path) -> None:
    p = write_qcow2(tmp_path / "v.qcow2", 1, "nfs://server/x.qcow2")
    h = read_header(p)
    assert h is not None and backing_path(p, h) is None


def test_children_of_finds_relative_and_absolute_backings(tmp_path: Path) -> None:
    base = write_qcow2(tmp_path / "imagecache" / "img.qcow2", 1 << 20)
    write_qcow2(tmp_path / "vols" / "a.qcow2", 1 << 20, "../imagecache/img.qcow2")
    write_qcow2(tmp_path / "vols" / "b.qcow2", 1 << 20, str(base))
    write_qcow2(tmp_path / "vols" / "c.qcow2", 1 << 20, "a.qcow2")
    write_qcow2(tmp_path / ".kvmcloud" / "partial" / "p.partial", 1 << 20, "../../imagecache/img.qcow2")
    found = children_of(tmp_path, base, skip=(".kvmcloud",))
    assert sorted(p.name for p in found) == ["a.qcow2", "b.qcow2"]
    assert [p.name for p in children_of(tmp_path, tmp_path / "vols" / "a.qcow2")] == ["c.qcow2"]
