"""Which processes hold a file open (a running QEMU holding a volume).

Reads ``/proc/<pid>/fd``: matching by device and inode finds holders whatever
path they opened the file by (bind mounts, symlinks, relative backing names).
Only QEMU's processes count (``qemu-system-*``, ``qemu-kvm``, ``qemu-img``,
``qemu-nbd``): a file server running on the same host (an NFS server keeps
its files open) does not make a volume busy. ``/proc/<pid>/fdinfo/<fd>``
tells whether a holder may write: after a live snapshot QEMU keeps the old
file open read-only as the overlay's backing file, and a file only read
stays what it is, so it may be copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
QEMU_PREFIXES = ("qemu",)


@dataclass(frozen=True)
class Holder:
    """A process with the file open."""

    pid: int
    comm: str
    writes: bool = True  # opened for writing (O_WRONLY or O_RDWR)


def holders(path: Path, proc: Path = PROC, prefixes: tuple[str, ...] = QEMU_PREFIXES,
            writers_only: bool = False) -> list[Holder]:
    """Processes (other than this one) whose name starts with one of ``prefixes``
    and that have ``path`` open (``writers_only``: open for writing)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    want = (st.st_dev, st.st_ino)
    me = os.getpid()
    found: list[Holder] = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        comm = _comm(Path(entry.path))
        if prefixes and not comm.startswith(prefixes):
            continue
        fd_dir = Path(entry.path) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                s = os.stat(fd_dir / fd)
            except OSError:
                continue
            if (s.st_dev, s.st_ino) != want:
                continue
            writes = _writes(Path(entry.path) / "fdinfo" / fd)
            if writes or not writers_only:
                found.append(Holder(int(entry.name), comm, writes))
                break
    return found


def _writes(fdinfo: Path) -> bool:
    """Whether the descriptor was opened for writing (unknown: assume it was)."""
    try:
        for line in fdinfo.read_text().splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    except (OSError, ValueError, IndexError):
        pass
    return True


def _comm(pid_dir: Path) -> str:
    try:
        return (pid_dir / "comm").read_text().strip()
    except OSError:
        return "?"
