"""Reading qcow2 headers without spawning qemu-img.

Scanning a storage for "which files are backed by X" must be cheap (it runs
before every delete and evict), so it reads the 32-byte qcow2 header and the
backing file name directly, per the qcow2 specification (docs/interop/qcow2.txt
in QEMU): magic, version, backing_file_offset, backing_file_size, cluster_bits,
size, all big-endian; for version 3 also the incompatible feature bits at
offset 72, whose bit 2 says the data lives in an external data file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(">4sIQIIQ")
_INCOMPATIBLE = struct.Struct(">Q")
INCOMPATIBLE_OFFSET = 72
DATA_FILE_BIT = 1 << 2
MAX_BACKING_NAME = 1023


@dataclass(frozen=True)
class Qcow2Header:
    """What the agent needs from a qcow2 header."""

    version: int
    virtual_size: int
    backing_file: str | None
    #: the guest data lives in another file the header names (qcow2 v3 ``data_file``)
    external_data_file: bool = False


def read_header(path: Path) -> Qcow2Header | None:
    """The header of a qcow2 file, or None if ``path`` is not qcow2."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER.size)
            if len(raw) < _HEADER.size:
                return None
            magic, version, bf_off, bf_size, _cluster_bits, size = _HEADER.unpack(raw)
            if magic != MAGIC:
                return None
            external = False
            if version >= 3:
                f.seek(INCOMPATIBLE_OFFSET)
                bits = f.read(_INCOMPATIBLE.size)
                # a short v3 header is malformed: assume the worst
                external = len(bits) < _INCOMPATIBLE.size or bool(
                    _INCOMPATIBLE.unpack(bits)[0] & DATA_FILE_BIT)
            backing = None
            if bf_off and 0 < bf_size <= MAX_BACKING_NAME:
                f.seek(bf_off)
                backing = f.read(bf_size).decode("utf-8", errors="replace")
            return Qcow2Header(version, size, backing, external)
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return None


def backing_path(image: Path, header: Qcow2Header) -> Path | None:
    """The backing file of ``image`` as a path (relative names are relative to its directory)."""
    if not header.backing_file:
        return None
    name = header.backing_file
    if name.startswith("file:"):
        name = name[len("file:"):]
    if ":" in name.split("/", 1)[0] and not name.startswith("/"):
        return None  # a protocol (nfs://, rbd:) - not a file of this storage
    return Path(os.path.normpath(image.parent / name))


def iter_images(root: Path, skip: tuple[str, ...] = ()) -> Iterator[Path]:
    """Every regular file under ``root`` (not following symlinks), minus ``skip`` dirs."""
    for dirpath, dirnames, filenames in os.walk(root):
        if skip and dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                yield p


def children_of(root: Path, target: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Files under ``root`` whose backing file is ``target``."""
    want = os.path.realpath(target)
    found: list[Path] = []
    for p in iter_images(root, skip):
        if p.suffix == ".json":
            continue
        h = read_header(p)
        if h is None or not h.backing_file:
            continue
        b = backing_path(p, h)
        if b is not None and os.path.realpath(b) == want:
            found.append(p)
    return found
