"""Where add-image reads an image from: ``http(s)://`` (streamed), ``sftp://`` and ``file://``.

Each source hands back a local file plus its chunk list and sha256, computed
while the bytes arrive (http) or in one pass over the file (sftp, file).
"""

from __future__ import annotations

import http.client
import logging
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agentcore.errors import AgentError
from agentcore.task import TaskContext
from sftpbackup.chunker import READ_SIZE, SINK_WORKERS, ChunkHasher, ChunkSink, hash_file
from sftpbackup.client import StoreClient, transfer_timeout
from sftpbackup.errors import DownloadFailed, SizeMismatch, UnsupportedUrl
from sftpbackup.httpget import abort, open_url
from sftpbackup.manifest import ChunkRef
from sftpbackup.sftpcli import SftpTarget, quote

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 60.0
POLL = 0.2


@dataclass(frozen=True)
class Hashed:
    """A local file with its chunks and whole-file digest."""

    path: Path
    chunks: list[ChunkRef]
    digest: str
    size: int


@dataclass(frozen=True)
class SshIdentity:
    """The host-side key and known_hosts file used for ``sftp://`` URLs."""

    key_file: Path
    known_hosts: Path


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()


def from_file(url: str, roots: list[Path], ctx: TaskContext, on_chunk: ChunkSink | None = None) -> Hashed:
    """A ``file://`` URL: only below one of ``roots`` (the agent's ``file_url_roots``).

    In every source ``on_chunk`` gets each chunk with its digest as it is hashed
    (see :class:`~sftpbackup.chunker.ChunkHasher`)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UnsupportedUrl("file:// URLs must name a local path", url=url)
    raw = unquote(parts.path)
    if ".." in raw.split("/"):
        raise UnsupportedUrl("file:// path must not contain '..'", url=url)
    path = Path(raw).resolve()
    if not any(path.is_relative_to(r.resolve()) for r in roots):
        raise UnsupportedUrl("file:// path is outside the directories this agent may import from",
                             url=url, allowed=[str(r) for r in roots])
    if not path.is_file():
        raise DownloadFailed("no such file", url=url)
    total = path.stat().st_size
    chunks, digest = hash_file(
        path, on_bytes=lambda n: ctx.progress(done=n, total=total, unit="bytes", stage="hash"),
        on_chunk=on_chunk,
    )
    return Hashed(path, chunks, digest, sum(c.size for c in chunks))


def from_http(url: str, dest: Path, ctx: TaskContext, expected_size: int | None,
              allow_local: bool = False, on_chunk: ChunkSink | None = None) -> Hashed:
    """Stream an ``http(s)://`` URL into ``dest``, hashing as it arrives.

    The URL and its redirects must not lead to loopback, link-local or
    metadata addresses unless ``allow_local`` (see :mod:`sftpbackup.httpget`).
    A failure names the HTTP status, never the body."""
    conn, resp = open_url(url, HTTP_TIMEOUT, allow_local)
    ctx.on_stop(lambda: abort(conn))
    hasher = ChunkHasher(on_chunk=on_chunk, workers=SINK_WORKERS if on_chunk is not None else 2)
    try:
        if resp.status != 200:
            raise DownloadFailed(f"HTTP {resp.status} from the server", url=url, status=resp.status)
        total = resp.length
        if expected_size is not None and total is not None and total != expected_size:
            raise SizeMismatch(f"the server announces {total} bytes, the command {expected_size}",
                               announced=total, expected=expected_size)
        buf = bytearray(READ_SIZE)
        view = memoryview(buf)
        with open(dest, "wb") as f:
            while n := resp.readinto(buf):
                ctx.check()
                f.write(view[:n])
                hasher.update(view[:n])
                ctx.progress(done=hasher.size, total=total or expected_size, unit="bytes", stage="download")
        if total is not None and hasher.size != total:
            raise DownloadFailed(f"the server sent {hasher.size} of {total} bytes", url=url)
        chunks, digest = hasher.finish()
    except AgentError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as e:
        ctx.check()  # a cancel closes the connection: report the cancel, not the error
        raise DownloadFailed(f"download failed: {e}", url=url) from e
    finally:
        conn.close()
        hasher.close()
    return Hashed(dest, chunks, digest, hasher.size)


def from_sftp(url: str, dest: Path, ctx: TaskContext, identity: SshIdentity | None,
              on_chunk: ChunkSink | None = None) -> Hashed:
    """Get an ``sftp://user@host:port/path`` file with OpenSSH's client, then hash it."""
    if identity is None:
        raise UnsupportedUrl("this agent has no sftp_key_file/sftp_known_hosts configured", url=url)
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not parts.hostname or not path.startswith("/") or posixpath.normpath(path) != path:
        raise UnsupportedUrl("sftp:// URL must be sftp://[user@]host[:port]/absolute/path", url=url)
    target = SftpTarget(parts.hostname, parts.port or 22, parts.username or "root", "/")
    with StoreClient(target, identity.key_file, identity.known_hosts) as client:
        try:
            total = client.sftp.stat(path).st_size or 0
        except FileNotFoundError as e:
            raise DownloadFailed("no such file on the SFTP server", url=url) from e
        job = client.cli.start([f"get {quote(path)} {quote(dest)}"], ctx, transfer_timeout(total),
                               dest.parent)
        while not job.done.wait(POLL):
            ctx.check()
            done = dest.stat().st_size if dest.exists() else 0
            ctx.progress(done=done, total=total, unit="bytes", stage="download")
        job.join()
    ctx.check()
    t0 = time.monotonic()
    chunks, digest = hash_file(dest, on_chunk=on_chunk)
    log.debug("hashed %s in %.1fs", dest.name, time.monotonic() - t0)
    return Hashed(dest, chunks, digest, sum(c.size for c in chunks))
