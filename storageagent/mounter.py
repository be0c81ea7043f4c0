"""The mount step: a seam between the agent and the kernel's NFS client.

:class:`NfsMounter` runs ``mount -t nfs``. :class:`BindMounter` bind-mounts
the export's directory of a server on this host instead; it exists for hosts
whose kernel has no NFS client (the test machines), where the real NFS server
exports that very directory, so everything after the mount runs on the real
exported tree. Which one runs is the config's ``mount_helper``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from agentcore.task import TaskContext

MOUNT_TIMEOUT = 60.0
MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_source(target: Path, mountinfo: Path = MOUNTINFO) -> tuple[str, str] | None:
    """(fstype, source) of the mount whose mount point is ``target``, or None.

    The last matching line wins (a later mount hides an earlier one).
    """
    want = os.path.realpath(target)
    found = None
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or _unescape(fields[4]) != want:
            continue
        rf = right.split()
        if len(rf) >= 2:
            found = (rf[0], _unescape(rf[1]))
    return found


class Mounter(Protocol):
    """Mounts and unmounts one NFS export."""

    def mount(self, ctx: TaskContext, url: str, version: str, options: list[str], target: Path) -> None: ...

    def unmount(self, ctx: TaskContext, target: Path) -> None: ...

    def is_mounted(self, target: Path) -> bool: ...

    def serves(self, target: Path, url: str) -> bool:
        """Whether the mount at ``target`` is of export ``url``."""
        ...


#: always appended to an NFS mount's options (the last of conflicting options wins)
FORCED_NFS_OPTIONS = ("nosuid", "nodev")


class NfsMounter:
    """The kernel NFS client: ``mount -t nfs -o vers=V,OPTS,nosuid,nodev server:/path TARGET``.

    ``nosuid,nodev`` come last, so that no option of the command undoes them: a
    setuid binary or a device node planted on the export (by the file server or
    any other host mounting it) must not work on this host, where root runs.
    """

    def mount(self, ctx: TaskContext, url: str, version: str, options: list[str], target: Path) -> None:
        opts = ",".join([f"vers={version}", *options, *FORCED_NFS_OPTIONS])
        ctx.run(["mount", "-t", "nfs", "-o", opts, url, str(target)], timeout=MOUNT_TIMEOUT)

    def unmount(self, ctx: TaskContext, target: Path) -> None:
        ctx.run(["umount", str(target)], timeout=MOUNT_TIMEOUT)

    def is_mounted(self, target: Path) -> bool:
        return mount_source(target) is not None

    def serves(self, target: Path, url: str) -> bool:
        src = mount_source(target)
        return src is not None and src[0].startswith("nfs") and src[1].rstrip("/") == url.rstrip("/")


class BindMounter:
    """Stands in for the kernel NFS mount on a host without one: bind-mounts the
    directory that the (local) NFS server exports as ``server:/path``."""

    def export_dir(self, url: str) -> Path:
        return Path(url.split(":", 1)[1])

    def mount(self, ctx: TaskContext, url: str, version: str, options: list[str], target: Path) -> None:
        ctx.run(["mount", "--bind", str(self.export_dir(url)), str(target)], timeout=MOUNT_TIMEOUT)

    def unmount(self, ctx: TaskContext, target: Path) -> None:
        ctx.run(["umount", str(target)], timeout=MOUNT_TIMEOUT)

    def is_mounted(self, target: Path) -> bool:
        return mount_source(target) is not None

    def serves(self, target: Path, url: str) -> bool:
        if not self.is_mounted(target):
            return False
        try:
            a, b = os.stat(target), os.stat(self.export_dir(url))
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
