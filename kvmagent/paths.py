"""Where volume and ISO files may live on this host.

The agent's config names its storage roots (the mount points of its primary
storages and ISO stores). Wire models check every file path against them while
the request is validated, so a path outside them is a 400 naming the field and
nothing runs. Processes that only build or send commands (the controller, the
simulator) never set roots; for them the check is only "absolute and
normalised".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import PurePosixPath

_lock = threading.Lock()
_roots: tuple[PurePosixPath, ...] = ()


def set_storage_roots(roots: Iterable[str | os.PathLike[str]]) -> None:
    """Confine every file path in validated commands to ``roots`` (process-wide)."""
    global _roots
    with _lock:
        _roots = tuple(PurePosixPath(os.path.normpath(os.fspath(r))) for r in roots)


def storage_roots() -> tuple[PurePosixPath, ...]:
    return _roots


def check_file_path(value: str) -> str:
    """Validate a host file path; raise ValueError (becomes a 400) if it escapes."""
    if "\x00" in value:
        raise ValueError("path contains a NUL byte")
    p = PurePosixPath(value)
    if not p.is_absolute():
        raise ValueError("path must be absolute")
    if ".." in p.parts or os.path.normpath(value) != value:
        raise ValueError("path must be normalised (no '..', '.', or '//')")
    roots = _roots
    if roots and not any(p == r or r in p.parents for r in roots):
        raise ValueError(f"path is outside the storage roots {[str(r) for r in roots]}")
    return value
