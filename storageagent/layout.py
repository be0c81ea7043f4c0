"""Where things live inside one primary storage, and path confinement.

A storage root holds::

    .kvmcloud/storage.json   the marker: which storage this tree belongs to
    .kvmcloud/partial/       partial downloads and conversions (never visible elsewhere)
    imagecache/              cached images (<imageId>.<format>) and their .json metadata
    anything else            volumes, snapshots and templates, by the controller's installPath

Every path a command names is resolved through :meth:`StorageRoot.resolve`,
which refuses ``..``, absolute paths and symlinks that lead out of the root.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from agentcore.errors import AgentError, InvalidRequest, PathEscape
from agentcore.fsmode import SHARED, make_dirs

META_DIR = ".kvmcloud"
TMP_DIR = f"{META_DIR}/partial"
MARKER = f"{META_DIR}/storage.json"
CACHE_DIR = "imagecache"
RESERVED = (META_DIR, CACHE_DIR)


class StorageNotReady(AgentError):
    """The root is not (or no longer) the storage the command names."""

    code = "STORAGE_NOT_READY"
    default_message = "the storage is not mounted or initialised at this path"


class StorageRoot:
    """One primary storage's tree on this host."""

    def __init__(self, storage_uuid: str, root: Path) -> None:
        self.storage_uuid = storage_uuid
        self.root = Path(os.path.realpath(root))

    def __repr__(self) -> str:
        return f"StorageRoot({self.storage_uuid!r}, {str(self.root)!r})"

    # -- confinement ------------------------------------------------------

    def resolve(self, rel: str, field: str = "installPath") -> Path:
        """The absolute path of ``rel`` inside the root; refuses escapes."""
        if not rel or rel.startswith("/") or "\x00" in rel:
            raise PathEscape(f"{field} must be relative to the storage root", field=field, path=rel)
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise PathEscape(f"{field} must not contain '..' or empty parts", field=field, path=rel)
        real = Path(os.path.realpath(self.root / rel))
        if real != self.root and self.root not in real.parents:
            raise PathEscape(f"{field} leads outside the storage root", field=field, path=rel)
        return real

    def resolve_volume(self, rel: str, field: str = "installPath") -> Path:
        """Like :meth:`resolve`, and refuses the agent's own reserved trees."""
        if rel.split("/", 1)[0] in RESERVED:
            raise InvalidRequest(
                f"{field} must not be inside {'/'.join(RESERVED)}", field=field, path=rel
            )
        return self.resolve(rel, field)

    def relative(self, path: Path | str) -> str:
        """``path`` as an installPath; refuses paths outside the root."""
        real = Path(os.path.realpath(path))
        if real == self.root or self.root not in real.parents:
            raise PathEscape("a backing file lies outside the storage root", path=str(path))
        return real.relative_to(self.root).as_posix()

    # -- layout -----------------------------------------------------------

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def tmp(self) -> Path:
        return self.root / TMP_DIR

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    def tmp_file(self, tag: str) -> Path:
        """A fresh name for partial data; renamed into place when complete."""
        make_dirs(self.tmp, SHARED)
        return self.tmp / f"{tag}.{uuid.uuid4().hex[:12]}.partial"

    def sweep_tmp(self) -> int:
        """Remove leftover partial files (only safe when no task uses the root)."""
        removed = 0
        if not self.tmp.is_dir():
            return 0
        for p in self.tmp.iterdir():
            if p.is_file() or p.is_symlink():
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- the marker -------------------------------------------------------

    def read_marker(self) -> str | None:
        """The storage UUID recorded in the root, or None."""
        try:
            data = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            return None
        value = data.get("storageUuid") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    def claim(self, storage_type: str) -> None:
        """Write the marker, or check that it names this storage."""
        owner = self.read_marker()
        if owner == self.storage_uuid:
            return
        if owner is not None:
            raise StorageNotReady(
                "the directory belongs to another storage",
                mountPath=str(self.root), owner=owner, storageUuid=self.storage_uuid,
            )
        make_dirs(self.marker.parent, SHARED)
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"storageUuid": self.storage_uuid, "type": storage_type}))
        os.replace(tmp, self.marker)

    def check(self) -> None:
        """Raise unless the root is mounted/initialised as this storage."""
        owner = self.read_marker()
        if owner != self.storage_uuid:
            raise StorageNotReady(
                mountPath=str(self.root), storageUuid=self.storage_uuid, found=owner
            )


def atomic_write_json(path: Path, data: object) -> None:
    """Write JSON so that readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
