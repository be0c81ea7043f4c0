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
UPLOAD_DIGEST_HEX = "cd" * 32  # what the fake storageagent's upload answers
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
        self.pulled: list[str] = []
        #: merged into what a pull stores: {"digest": ...} makes the store answer another digest
        self.stored_digest: dict[str, str] = {}

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
        """An upload from a storageagent to the store whose SFTP root is ``store_root``
        (the digest is the one the fake storageagent's upload answers)."""
        root = next(r for r in self.stores if r.endswith(store_root))
        self.images[(root, image_id)] = {
            "imageUuid": image_id, "name": image_id, "format": "qcow2", "virtualSize": VIRTUAL_SIZE,
            "size": 5 << 20, "digest": UPLOAD_DIGEST_HEX, "chunkSize": 1 << 20, "chunkCount": 5,
            "created": "2026-11-21T00:00:00Z"}

    def image_at(self, store_root: str, image_id: str) -> dict[str, Any] | None:
        """The image ``image_id`` of the store whose SFTP root is ``store_root``, if any."""
        root = next((r for r in self.stores if r.endswith(store_root)), None)
        return self.images.get((root, image_id)) if root is not None else None

    def do_backup_image_pull(self, c: bm.PullImageCmd) -> dict[str, Any]:
        """Like the agent: the remote manifest must name ``sha256``; chunks the store has stay."""
        if self.stores.get(c.root) != c.backup_storage_uuid:
            return fail("STORE_NOT_CONNECTED", f"{c.root} is not a store")
        remote = FakeHost.registry.get(c.remote.host)
        info = remote.image_at(c.remote.store_root, c.image_uuid) \
            if isinstance(remote, FakeBackupAgent) else None
        if info is None:
            return fail("TRANSFER_FAILED", f"no image {c.image_uuid} at {c.remote.host}")
        if info["digest"] != c.sha256:
            return fail("DIGEST_MISMATCH", f"the remote manifest names {info['digest']}")
        have = self.images.get((c.root, c.image_uuid))
        self.images[(c.root, c.image_uuid)] = {**info, **self.stored_digest}
        sent = 0 if have else info["chunkCount"]
        self.pulled.append(c.image_uuid)
        return ok(image=self.images[(c.root, c.image_uuid)], chunksTotal=info["chunkCount"],
                  chunksSent=sent, bytesTotal=info["size"], bytesSent=sent << 20)

    def held(self) -> set[str]:
        """Image ids this agent's stores hold."""
        return {image for (_, image) in self.images}
