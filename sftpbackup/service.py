"""What the sftpbackup plugins share: config-derived policy and the adds in progress."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from agentcore.errors import InvalidRequest
from sftpbackup.client import StoreClient
from sftpbackup.ingest import IngestPolicy
from sftpbackup.models import SftpEndpoint, StoreCommand
from sftpbackup.sftpcli import SftpTarget
from sftpbackup.sources import SshIdentity
from sftpbackup.store import ImageStore


class BackupService:
    """Opens stores, SFTP clients and tracks the tokens of adds in progress (GC spares them)."""

    def __init__(self, key_file: Path | None, known_hosts: Path | None, file_roots: list[Path],
                 allow_local_urls: bool = False) -> None:
        self.identity = SshIdentity(key_file, known_hosts) if key_file and known_hosts else None
        self.policy = IngestPolicy(file_roots=file_roots, identity=self.identity,
                                   allow_local_urls=allow_local_urls)
        self._active: set[str] = set()
        self._mu = threading.Lock()

    def store(self, cmd: StoreCommand) -> ImageStore:
        return ImageStore.open(Path(cmd.root), cmd.backup_storage_uuid)

    def client(self, remote: SftpEndpoint) -> StoreClient:
        if self.identity is None:
            raise InvalidRequest("this agent has no sftp_key_file/sftp_known_hosts configured")
        target = SftpTarget(remote.host, remote.port, remote.user, remote.store_root)
        return StoreClient(target, self.identity.key_file, self.identity.known_hosts)

    @contextlib.contextmanager
    def activity(self) -> Iterator[str]:
        """A token for an add or pull in progress, live while the block runs."""
        token = uuid.uuid4().hex
        with self._mu:
            self._active.add(token)
        try:
            yield token
        finally:
            with self._mu:
                self._active.discard(token)

    def active_tokens(self) -> set[str]:
        with self._mu:
            return set(self._active)
