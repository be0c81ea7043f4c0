"""An in-process stand-in for the sftpbackup agent (unit and simulator-level tests).

It speaks the same protocol as :class:`FakeHost` (it is one, with the
sftpbackup command models), keeps each store's images by root, reports one
progress event per add, and injects faults per command path.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from agentcore.models import Command, commands_in
from sftpbackup import models as bm
from tests.unit.controller.fakeagent import Deliver, FakeHost, SharedStorage, fail, ok

BACKUP_MODELS: dict[str, type[Command]] = commands_in(bm)
DIGEST_HEX = "5e" * 32
FILE_SIZE = 3 << 20
VIRTUAL_SIZE = 1 << 30


class FakeBackupAgent(FakeHost):
    """The sftpbackup agent of one backup storage host, at ``url``."""

    models: ClassVar[dict[str, type[Command]]] = BACKUP_MODELS

    def __init__(self, ip: str, deliver: Deliver, token: str) -> None:
        super().__init__(ip, SharedStorage(), deliver, token)
        self.url = f"http://{ip}:7171"
        self.stores: dict[str, str] = {}  # root -> backup storage uuid
        self.images: dict[tuple[str, str], dict[str, Any]] = {}  # (root, image) -> ImageInfo

    def _run_async(self, task_uuid: str, path: str, cmd: BaseModel) -> None:
        if path == "/backup/image/add" and path not in self.faults:
            self.deliver(task_uuid, "progress", {"taskUuid": task_uuid, "progress": {
                "stage": "download", "percent": 50.0, "done": FILE_SIZE // 2,
                "total": FILE_SIZE, "unit": "bytes"}})
        super()._run_async(task_uuid, path, cmd)

    def do_backup_connect(self, c: bm.ConnectCmd) -> dict[str, Any]:
        owner = self.stores.setdefault(c.root, c.backup_storage_uuid)
        if owner != c.backup_storage_uuid:
            return fail("STORE_MISMATCH", f"{c.root} belongs to {owner}")
        return ok(backupStorageUuid=owner, totalCapacity=1 << 40, availableCapacity=1 << 39)

    def do_backup_image_add(self, c: bm.AddImageCmd) -> dict[str, Any]:
        if self.stores.get(c.root) != c.backup_storage_uuid:
            return fail("STORE_NOT_CONNECTED", f"{c.root} is not a store")
        if c.sha256 is not None and c.sha256 != DIGEST_HEX:
            return fail("DIGEST_MISMATCH", f"expected {c.sha256}, got {DIGEST_HEX}")
        info = {"imageUuid": c.image_uuid, "name": c.name, "format": c.format or "qcow2",
                "virtualSize": VIRTUAL_SIZE, "size": FILE_SIZE, "digest": DIGEST_HEX,
                "chunkSize": 1 << 20, "chunkCount": 3, "created": "2026-11-21T00:00:00Z"}
        self.images[(c.root, c.image_uuid)] = info
        return ok(image=info, newChunks=3, newBytes=FILE_SIZE)

    def do_backup_image_delete(self, c: bm.DeleteImageCmd) -> dict[str, Any]:
        return ok(deleted=self.images.pop((c.root, c.image_uuid), None) is not None)

    def receive(self, store_root: str, image_id: str) -> None:
        """An upload from a storageagent to the store whose SFTP root is ``store_root``."""
        root = next(r for r in self.stores if r.endswith(store_root))
        self.images[(root, image_id)] = {"imageUuid": image_id, "name": image_id}

    def held(self) -> set[str]:
        """Image ids this agent's stores hold."""
        return {image for (_, image) in self.images}
