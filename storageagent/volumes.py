"""Helpers every volume and snapshot command shares."""

from __future__ import annotations

import os
from pathlib import Path

from agentcore.errors import Conflict, InUse, InvalidRequest, NotFound, PathEscape
from agentcore.fsmode import SHARED, make_dirs
from agentcore.task import TaskContext
from storageagent.holders import holders
from storageagent.layout import META_DIR, StorageRoot
from storageagent.models import ChainEntry, VolumeInfo
from storageagent.qcow2 import backing_path, children_of, read_header
from storageagent.qemuimg import ImageInfo, ImageTool


def checked_chain(ctx: TaskContext, tool: ImageTool, sr: StorageRoot, path: Path,
                  fmt: str) -> list[ImageInfo]:
    """``path`` (of format ``fmt``) and its backing files, each inside the storage root.

    The qcow2 headers are read first, without qemu-img, so that qemu-img never
    opens a file a header names outside the root (a raw volume mistaken for
    qcow2 carries a header the guest wrote), then qemu-img's answer is checked
    again.
    """
    _confine_headers(sr, path, fmt)
    chain = tool.info_chain(ctx, path, fmt)
    for c in chain[1:]:
        sr.relative(c.filename)  # PATH_OUTSIDE_ROOT
    return chain


def _confine_headers(sr: StorageRoot, path: Path, fmt: str) -> None:
    seen: set[str] = set()
    cur = path
    while fmt == "qcow2":
        h = read_header(cur)
        if h is None:
            return  # not qcow2 after all: qemu-img -f qcow2 says so
        if h.external_data_file:
            raise InvalidRequest("an image with an external data file is refused",
                                 path=sr.relative(cur))
        if not h.backing_file:
            return
        b = backing_path(cur, h)
        if b is None:
            raise PathEscape("a backing file is not a file of the storage", path=sr.relative(cur))
        real = os.path.realpath(b)
        sr.relative(real)  # PATH_OUTSIDE_ROOT
        if real in seen:
            raise InvalidRequest("the backing chain has a loop", path=sr.relative(cur))
        seen.add(real)
        cur = Path(real)


def volume_info(ctx: TaskContext, tool: ImageTool, sr: StorageRoot, path: Path,
                fmt: str) -> VolumeInfo:
    """The volume (of format ``fmt``) and its backing chain, every path relative to the root."""
    chain = checked_chain(ctx, tool, sr, path, fmt)
    top, rest = chain[0], chain[1:]
    return VolumeInfo(
        install_path=sr.relative(path),
        format=top.format,
        virtual_size=top.virtual_size,
        actual_size=top.actual_size,
        backing_chain=[
            ChainEntry(install_path=sr.relative(c.filename), format=c.format,
                       virtual_size=c.virtual_size, actual_size=c.actual_size)
            for c in rest
        ],
    )


def chain_files(ctx: TaskContext, tool: ImageTool, sr: StorageRoot, path: Path,
                fmt: str) -> list[tuple[Path, str]]:
    """(real path, format) of the backing files of ``path``, nearest first."""
    return [(Path(os.path.realpath(c.filename)), c.format)
            for c in checked_chain(ctx, tool, sr, path, fmt)[1:]]


def existing(path: Path, field: str, rel: str) -> Path:
    if not path.is_file():
        raise NotFound(f"{field} does not exist", field=field, path=rel)
    return path


def absent(path: Path, field: str, rel: str) -> Path:
    if path.exists() or path.is_symlink():
        raise Conflict(f"{field} already exists", field=field, path=rel)
    return path


def refuse_if_open(path: Path, rel: str, writers_only: bool = False) -> None:
    """IN_USE when a process (a running QEMU) holds the file open (``writers_only``:
    open for writing; a copy may read a file QEMU only reads, such as the backing
    file of a live snapshot's overlay)."""
    found = holders(path, writers_only=writers_only)
    if found:
        raise InUse("a running process " + ("writes to" if writers_only else "holds")
                    + " the volume", path=rel,
                    holders=[{"pid": h.pid, "comm": h.comm, "writes": h.writes} for h in found])


def refuse_if_backing(sr: StorageRoot, path: Path, rel: str) -> None:
    """IN_USE when another file of the storage is backed by ``path``."""
    users = children_of(sr.root, path, skip=(META_DIR,))
    if users:
        raise InUse("other volumes are backed by this file", path=rel,
                    backedBy=[sr.relative(u) for u in users[:20]], count=len(users))


def backing_name(backing: Path, image_dir: Path) -> str:
    """The backing file name to record in an image living in ``image_dir``:
    relative, so the storage works wherever it is mounted."""
    return os.path.relpath(backing, image_dir)


def install(tmp: Path, dest: Path, durable: bool = False) -> None:
    """Move a completed file from the storage's tmp dir to its installPath
    (``durable``: and fsync the directory, so the rename survives a crash)."""
    make_dirs(dest.parent, SHARED)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
    if durable:
        fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
