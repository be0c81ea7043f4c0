"""Root's access to a store the SFTP store user can also write: no link below the root is followed.

Every host holds the store key (docs/sftpbackup.md), and SFTP lets that user
plant symlinks anywhere in a store. The agent runs as root outside the SFTP
chroot, where an absolute link target means the host's real ``/``: a planted
``chunks/ab -> /etc/cron.d`` would turn the next stored chunk into a root-owned
file there. So below the store's root (the admin's path, which may itself be
reached through links) every path is walked one component at a time from a
directory fd with ``O_NOFOLLOW``; files are opened with ``O_NOFOLLOW`` relative
to their directory's fd, created with ``O_EXCL``, and renamed, linked and
unlinked with directory fds. A link, or anything other than a directory or a
regular file where the store keeps one, is refused with :class:`LinkRefused`.

Work files (downloads, fetched chunks before they are stored) go to a private
directory made by :meth:`StoreFs.private_dir`: root's, mode 0700, pinned by
an fd and named through ``/proc/<pid>/fd/<fd>``, so code and subprocesses that
take a path (``sftp``, ``qemu-img``) reach exactly that directory even if the
store user renames its name away.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from agentcore.errors import AgentError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR)


class LinkRefused(AgentError):
    """A symlink (or another non-regular file) where the store keeps its own files."""

    code = "STORE_LINK_REFUSED"
    default_message = "a symbolic link or special file inside the store was refused"


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


class StoreFs:
    """Paths relative to one store root, resolved without following links."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _refused(self, rel: str, e: OSError | None = None) -> LinkRefused:
        return LinkRefused(f"{rel} in the store is a symbolic link or not a plain file or directory",
                           root=str(self.root), path=rel, errno=None if e is None else e.errno)

    # -- directories -----------------------------------------------------------

    def open_dir(self, rel: str = "") -> int:
        """An fd of directory ``rel`` ("" is the root); the caller closes it."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for part in filter(None, rel.split("/")):
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as e:
                os.close(fd)
                if e.errno in _LINK_ERRNOS:
                    raise self._refused(rel, e) from e
                raise
            os.close(fd)
            fd = nxt
        return fd

    @contextlib.contextmanager
    def dir(self, rel: str = "") -> Iterator[int]:
        fd = self.open_dir(rel)
        try:
            yield fd
        finally:
            os.close(fd)

    def makedirs(self, rel: str) -> None:
        """Create ``rel`` and its parents as needed (a link on the way is refused)."""
        done = ""
        for part in filter(None, rel.split("/")):
            with self.dir(done) as fd, contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            done = f"{done}/{part}" if done else part
        with self.dir(done):
            pass

    @contextlib.contextmanager
    def scandir(self, rel: str) -> Iterator[Iterator[os.DirEntry[str]]]:
        """The entries of ``rel`` (their ``path`` is the bare name; stat them unfollowed)."""
        with self.dir(rel) as fd, os.scandir(fd) as it:
            yield it

    # -- files -------------------------------------------------------------------

    def open(self, rel: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
        """An fd of regular file ``rel``; links and special files are refused."""
        parent, name = _split(rel)
        with self.dir(parent) as dfd:
            try:
                fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dfd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise self._refused(rel, e) from e
                raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise self._refused(rel)
        os.set_blocking(fd, True)
        return fd

    def read(self, rel: str) -> bytes:
        with os.fdopen(self.open(rel), "rb") as f:
            return f.read()

    def lstat(self, rel: str) -> os.stat_result | None:
        """The entry ``rel`` itself (None if missing); a link or special file is refused."""
        parent, name = _split(rel)
        with self.dir(parent) as dfd:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise self._refused(rel)
        return st

    def touch(self, rel: str) -> bool:
        """Refresh the mtime of regular file ``rel``; False if it is missing."""
        parent, name = _split(rel)
        with self.dir(parent) as dfd:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISREG(st.st_mode):
                raise self._refused(rel)
            os.utime(name, dir_fd=dfd, follow_symlinks=False)
            return True

    def unlink(self, rel: str) -> bool:
        """Remove the entry ``rel`` (a link is removed, never followed); False if missing."""
        parent, name = _split(rel)
        with self.dir(parent) as dfd:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                return False
            os.fsync(dfd)
            return True

    def rmtree(self, rel: str) -> None:
        """Remove directory ``rel`` and everything in it (links are removed, not followed)."""
        parent, name = _split(rel)
        with self.dir(parent) as dfd:
            shutil.rmtree(name, ignore_errors=True, dir_fd=dfd)

    def publish(self, src: Path, rel: str, sync: bool = True) -> None:
        """Rename work file ``src`` (in a private dir) to ``rel``, replacing it; fsync the
        directory unless ``sync`` is False (the caller then fsyncs it with :meth:`sync_dir`)."""
        parent, name = _split(rel)
        with self.dir(parent) as dfd:
            os.replace(src, name, dst_dir_fd=dfd)
            if sync:
                os.fsync(dfd)

    def sync_dir(self, rel: str) -> None:
        """fsync directory ``rel`` (its renames are then durable)."""
        with self.dir(rel) as dfd:
            os.fsync(dfd)

    def link_out(self, rel: str, dst: Path) -> None:
        """Hard-link the inode at ``rel`` (never a link's target) to ``dst`` in a private dir."""
        parent, name = _split(rel)
        with self.dir(parent) as dfd:
            os.link(name, dst, src_dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(os.lstat(dst).st_mode):
            dst.unlink()
            raise self._refused(rel)

    # -- private work directories ----------------------------------------------------

    @contextlib.contextmanager
    def private_dir(self, parent: str, name: str) -> Iterator[Path]:
        """A new root-only directory ``parent/name`` as a pinned path; removed on exit."""
        with self.dir(parent) as pfd:
            os.mkdir(name, 0o700, dir_fd=pfd)
            fd = os.open(name, _DIR, dir_fd=pfd)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise self._refused(f"{parent}/{name}")  # someone else's directory took its place
            yield Path(f"/proc/{os.getpid()}/fd/{fd}")
        finally:
            try:
                for entry in os.listdir(fd):
                    shutil.rmtree(entry, ignore_errors=True, dir_fd=fd)
                    with contextlib.suppress(OSError):
                        os.unlink(entry, dir_fd=fd)
            finally:
                os.close(fd)
            with contextlib.suppress(OSError), self.dir(parent) as pfd:
                os.rmdir(name, dir_fd=pfd)
