"""The data path to SFTP backup storage, through the sftpbackup store client.

The private key and known_hosts are this host's files named in the agent's
config (provisioned by Ansible), never part of a command body.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agentcore.errors import AgentError
from agentcore.task import TaskContext
from storageagent.cache import Fetched, Fetcher
from storageagent.models import SftpSource, SftpTarget

if TYPE_CHECKING:
    from storageagent.app import Config


class SourceUnavailable(AgentError):
    """The agent cannot reach this kind of backup storage."""

    code = "SOURCE_UNAVAILABLE"
    default_message = "SFTP backup storage is not available on this agent"


def _client(config: Config, field: str) -> tuple[ModuleType, Path, Path]:
    if config.sftp_key_file is None or config.sftp_known_hosts is None:
        raise SourceUnavailable("sftp_key_file and sftp_known_hosts are not configured", field=field)
    try:
        # imported on use: the storage agent runs without the sftpbackup part installed
        mod = importlib.import_module("sftpbackup.client")
    except ImportError as e:
        raise SourceUnavailable("the SFTP store client is not installed", field=field) from e
    return mod, config.sftp_key_file, config.sftp_known_hosts


def _store(mod: ModuleType, t: SftpTarget, key: Path, known: Path) -> Any:
    return mod.StoreClient(mod.SftpTarget(t.host, t.port, t.user, t.store_root), key, known)


def fetcher(config: Config, source: SftpSource, digest: str | None = None) -> Fetcher:
    """Fetch an image of the store into a file.

    The client verifies every chunk and hashes the whole file as it writes
    it; the digest handed back is that hash, never the store manifest's
    claim, so :meth:`ImageCache.fill` compares the bytes themselves with the
    controller's digest. With ``digest`` (``sha256:<hex>``, the command's) the
    client also refuses a manifest that names another digest before any chunk
    moves, and fails with ``DIGEST_MISMATCH`` leaving no file.
    """
    mod, key, known = _client(config, "source")
    expected = digest.removeprefix("sha256:") if digest else None

    def fetch(ctx: TaskContext, dest: Path) -> Fetched:
        with _store(mod, source, key, known) as client:
            got = client.fetch(source.image_id, dest, ctx=ctx, expected_digest=expected)
        return Fetched(f"sha256:{got.digest}", int(got.size))

    return fetch


def upload(config: Config, target: SftpTarget, src: Path, name: str, ctx: TaskContext) -> Any:
    """Upload ``src`` to the store; returns the client's ImageRef."""
    mod, key, known = _client(config, "target")
    with _store(mod, target, key, known) as client:
        return client.upload(src, name, ctx=ctx)
