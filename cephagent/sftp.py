"""Moving images between RBD and the SFTP backup storage (its store client).

Import fetches the image's chunks into the agent's work directory (verified
by the client), then writes it into RBD (qcow2 converted to raw). Export
reads the image (or one of its snapshots) into a sparse local file and
uploads it; the store only receives chunks it lacks.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from agentcore.errors import InvalidRequest
from agentcore.task import TaskContext
from cephagent.download import import_file
from cephagent.rbdio import is_zero, read_blocks
from cephagent.rbdstore import RbdStore
from sftpbackup.client import ImageRef, SftpTarget, StoreClient


def _client(target: SftpTarget, key_file: Path | None, known_hosts: Path | None) -> StoreClient:
    if key_file is None or known_hosts is None:
        raise InvalidRequest("this agent has no sftp_key_file/sftp_known_hosts configured",
                             field="host")
    return StoreClient(target, key_file, known_hosts)


def import_image(ctx: TaskContext, store: RbdStore, target: SftpTarget, image_id: str,
                 sha256: str, pool: str, name: str, work_dir: Path, key_file: Path | None,
                 known_hosts: Path | None) -> tuple[int, str]:
    """Fetch ``image_id`` from the store into ``pool/name``; (size, digest).

    The fetched file must hash to ``sha256`` (hex; the image's digest as the
    controller recorded it), not just to what the store's manifest claims:
    ``DIGEST_MISMATCH`` otherwise, before anything is written to RBD."""
    scratch = work_dir / f"import-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True, mode=0o700)
    try:
        dest = scratch / "image"
        with _client(target, key_file, known_hosts) as client:
            fetched = client.fetch(image_id, dest, ctx, expected_digest=sha256)
        ctx.check()
        size = import_file(ctx, store, dest, pool, name)
        return size, fetched.digest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def export_image(ctx: TaskContext, store: RbdStore, target: SftpTarget, pool: str, name: str,
                 snapshot: str | None, store_name: str, work_dir: Path, key_file: Path | None,
                 known_hosts: Path | None) -> ImageRef:
    """Upload ``pool/name[@snapshot]`` to the store as raw image ``store_name``."""
    scratch = work_dir / f"export-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True, mode=0o700)
    try:
        local = scratch / f"{store_name}.raw"
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            end = 0
            for offset, data in read_blocks(store, pool, name, snapshot):
                ctx.check()
                if not is_zero(data):
                    os.pwrite(fd, data, offset)
                end = offset + len(data)
                ctx.progress(done=end, unit="bytes", stage="read")
            os.ftruncate(fd, end)
        finally:
            os.close(fd)
        with _client(target, key_file, known_hosts) as client:
            return client.upload(local, store_name, ctx)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
