"""Helpers every volume and snapshot command shares."""

from __future__ import annotations

import os
from pathlib import Path

from agentcore.errors import Conflict, InUse, NotFound
from agentcore.fsmode import SHARED, make_dirs
from agentcore.task import TaskContext
from storageagent.holders import holders
from storageagent.layout import META_DIR, StorageRoot
from storageagent.models import ChainEntry, VolumeInfo
from storageagent.qcow2 import children_of
from storageagent.qemuimg import ImageTool


def volume_info(ctx: TaskContext, tool: ImageTool, sr: StorageRoot, path: Path) -> VolumeInfo:
    """The volume and its backing chain, every path relative to the root."""
    chain = tool.info_chain(ctx, path)
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


def chain_files(ctx: TaskContext, tool: ImageTool, path: Path) -> list[tuple[Path, str]]:
    """(real path, format) of the backing files of ``path``, nearest first."""
    return [(Path(os.path.realpath(c.filename)), c.format) for c in tool.info_chain(ctx, path)[1:]]


def existing(path: Path, field: str, rel: str) -> Path:
    if not path.is_file():
        raise NotFound(f"{field} does not exist", field=field, path=rel)
    return path


def absent(path: Path, field: str, rel: str) -> Path:
    if path.exists() or path.is_symlink():
        raise Conflict(f"{field} already exists", field=field, path=rel)
    return path


def refuse_if_open(path: Path, rel: str) -> None:
    """IN_USE when a process (a running QEMU) holds the file open."""
    found = holders(path)
    if found:
        raise InUse("a running process holds the volume", path=rel,
                    holders=[{"pid": h.pid, "comm": h.comm} for h in found])


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


def install(tmp: Path, dest: Path) -> None:
    """Move a completed file from the storage's tmp dir to its installPath."""
    make_dirs(dest.parent, SHARED)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
