"""What the storageagent's plugins share: config, backends, the storages seen."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from agentcore.errors import InUse, InvalidRequest, NotFound
from storageagent.layout import StorageRoot, atomic_write_json
from storageagent.mounter import BindMounter, Mounter, NfsMounter
from storageagent.qemuimg import ImageTool, QemuImg

if TYPE_CHECKING:
    from storageagent.app import Config

log = logging.getLogger(__name__)


class StorageService:
    """Finds a command's storage, and holds the backends the plugins drive."""

    def __init__(self, config: Config, tool: ImageTool | None = None,
                 mounter: Mounter | None = None) -> None:
        self.config = config
        self.tool: ImageTool = tool or QemuImg(config.qemu_img)
        self.mounter: Mounter = mounter or (BindMounter() if config.mount_helper == "bind" else NfsMounter())
        self.bases = [Path(os.path.realpath(b)) for b in [*config.storage_base_dirs, config.mount_base]]
        self._known_file = config.state_dir / "storages.json"
        self._mu = threading.Lock()
        self._clones: Counter[tuple[str, str]] = Counter()
        self._evicting: set[tuple[str, str]] = set()

    # -- finding storages -------------------------------------------------

    def mount_path_of(self, storage_uuid: str) -> Path:
        return self.config.mount_base / storage_uuid

    def root(self, storage_uuid: str, mount_path: str, field: str = "mountPath") -> StorageRoot:
        """The storage at ``mount_path``, which must lie under a configured base dir."""
        real = Path(os.path.realpath(mount_path))
        if not any(b == real or b in real.parents for b in self.bases):
            raise InvalidRequest(
                f"{field} is not under the agent's storage base dirs",
                field=field, path=mount_path, allowed=[str(b) for b in self.bases],
            )
        return StorageRoot(storage_uuid, real)

    def open(self, storage_uuid: str, mount_path: str, field: str = "mountPath") -> StorageRoot:
        """Like :meth:`root`, and checks that it is mounted/initialised as this storage."""
        sr = self.root(storage_uuid, mount_path, field)
        sr.check()
        return sr

    # -- storages this host has seen (for the start-up sweep) -------------

    def known(self) -> dict[str, str]:
        try:
            data = json.loads(self._known_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def remember(self, sr: StorageRoot) -> None:
        with self._mu:
            known = self.known()
            if known.get(sr.storage_uuid) != str(sr.root):
                known[sr.storage_uuid] = str(sr.root)
                atomic_write_json(self._known_file, known)

    def forget(self, storage_uuid: str) -> None:
        with self._mu:
            known = self.known()
            if known.pop(storage_uuid, None) is not None:
                atomic_write_json(self._known_file, known)

    def sweep(self) -> None:
        """Remove partial files a previous run of the agent left behind."""
        for uuid, root in self.known().items():
            sr = StorageRoot(uuid, Path(root))
            if sr.read_marker() != uuid:
                continue
            n = sr.sweep_tmp()
            if n:
                log.info("removed %d partial files from storage %s", n, uuid)

    # -- cached images in use by clone creation ---------------------------

    @contextmanager
    def using_image(self, storage_uuid: str, image_id: str) -> Iterator[None]:
        """Held while a volume is being cloned from an image, so evict waits its turn."""
        key = (storage_uuid, image_id)
        with self._mu:
            if key in self._evicting:
                raise NotFound("the image is being evicted from the cache", field="imageId",
                               imageId=image_id)
            self._clones[key] += 1
        try:
            yield
        finally:
            with self._mu:
                self._clones[key] -= 1
                if self._clones[key] <= 0:
                    del self._clones[key]

    @contextmanager
    def evicting(self, storage_uuid: str, image_id: str) -> Iterator[None]:
        key = (storage_uuid, image_id)
        with self._mu:
            if self._clones.get(key):
                raise InUse("volumes are being cloned from the image", imageId=image_id)
            self._evicting.add(key)
        try:
            yield
        finally:
            with self._mu:
                self._evicting.discard(key)
