"""Directory modes that do not depend on the process umask.

libvirt runs QEMU as its own user (``libvirt-qemu`` on Debian), so every
directory on the way to a disk, a cached image or an ISO must be searchable by
others, while journals and secrets stay private. ``Path.mkdir(mode=...)`` is
masked by the umask and leaves the parents it creates at the umask's default,
so an agent started under ``umask 077`` would make 0700 trees that QEMU cannot
enter. The rule, applied by the agents, ``make up`` and the Ansible roles alike:

- ``SHARED`` (0755): storage roots and every directory under them;
- ``TRAVERSE`` (0711): the state root (``/var/lib/kvmcloud``): others may pass
  through to a storage root below it but not list it;
- ``PRIVATE`` (0700): an agent's own state directory (journal, outbox, keys).

Files QEMU opens are owned by root and relabelled by libvirt's dynamic
ownership when a domain starts; cached images are installed 0644.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SHARED = 0o755
TRAVERSE = 0o711
PRIVATE = 0o700


def make_dirs(path: Path, mode: int, *, parents_mode: int | None = None) -> Path:
    """Create ``path`` and its missing parents with exact modes, whatever the umask.

    ``path`` gets ``mode``; each parent created on the way gets ``parents_mode``
    (default ``mode``). Directories that exist already keep their mode: this
    never loosens or tightens what an operator set up.
    """
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue  # made by a concurrent caller: theirs
        os.chmod(d, mode if d == path else (mode if parents_mode is None else parents_mode))
    if not path.is_dir():
        raise NotADirectoryError(str(path))
    return path


def ensure_mode(path: Path, mode: int) -> None:
    """Set ``path``'s permission bits to ``mode`` if they differ (an existing directory)."""
    if stat.S_IMODE(os.stat(path).st_mode) != mode:
        os.chmod(path, mode)


def unsearchable_ancestor(path: Path) -> Path | None:
    """The first directory from ``/`` down to ``path`` that others cannot search
    (no ``o+x``), or None: QEMU, running as another user, could not reach a file there."""
    real = Path(os.path.realpath(path))
    for d in [*reversed(real.parents), real]:
        try:
            st = os.stat(d)
        except OSError:
            return d
        if not st.st_mode & stat.S_IXOTH:
            return d
    return None
