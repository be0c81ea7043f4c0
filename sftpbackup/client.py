"""The store client: hosts fetch images from, and upload images to, a store over SFTP.

Used by the primary-storage agents (storageagent, cephagent) and by the
sftpbackup agent itself for push and pull::

    with StoreClient(SftpTarget(host, port, user, "/"), key_file, known_hosts) as c:
        c.fetch("image-uuid", Path("/mnt/ps/imagecache/x.qcow2"), ctx, expected_digest=hex_digest)
        ref = c.upload(Path("/mnt/ps/templates/t.qcow2"), "template-uuid", ctx)

Metadata (manifests, stats) goes over one paramiko SFTP session; chunk data
goes over OpenSSH's ``sftp`` client (see :mod:`sftpbackup.sftpcli`). Host
keys are checked against ``known_hosts`` (paramiko ``RejectPolicy`` and
``StrictHostKeyChecking=yes``); unknown hosts are refused.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import functools
import hashlib
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko

from agentcore.task import TaskContext
from sftpbackup import manifest as layout
from sftpbackup.chunker import OrderedDigest, hash_file
from sftpbackup.errors import ChunkCorrupt, DigestMismatch, ImageExists, ImageNotFound, TransferFailed
from sftpbackup.imageinfo import detect
from sftpbackup.manifest import CHUNK_SIZE, Manifest, chunk_relpath, manifest_relpath, zero_digest
from sftpbackup.models import check_image_id
from sftpbackup.sftpcli import BatchStream, SftpCli, SftpTarget, quote
from sftpbackup.store import fsync_dir

__all__ = ["FetchResult", "ImageRef", "SftpTarget", "StoreClient"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 20.0
#: seconds a bulk transfer may take per GiB before it is killed (plus a floor)
SECONDS_PER_GIB = 600.0
#: a chunk stream's own time limit: it starts before its transfer's size is known, so
#: the getter holds each transfer to :func:`transfer_timeout` of its size instead
STREAM_LIMIT = 7 * 24 * 3600.0
#: OpenSSH connections a bulk transfer is split over (see docs/sftpbackup.md)
STREAMS = 3


def transfer_timeout(nbytes: int) -> float:
    return 120.0 + SECONDS_PER_GIB * nbytes / 2**30


@dataclass(frozen=True)
class FetchResult:
    """A fetched image: the sha256 (hex) of the bytes written, and their size."""

    digest: str
    size: int
    chunks_fetched: int = 0
    bytes_fetched: int = 0


@dataclass(frozen=True)
class ImageRef:
    """An image now in the store."""

    image_id: str
    digest: str
    size: int
    virtual_size: int
    format: str
    chunks_sent: int = 0
    bytes_sent: int = 0


ChunkSink = Callable[[str, Path, bytes], None]


class _Progress:
    """Bytes done, reported to the task from several threads."""

    def __init__(self, ctx: TaskContext | None, total: int, stage: str) -> None:
        self.ctx = ctx
        self.total = total
        self.stage = stage
        self.done = 0
        self._mu = threading.Lock()

    def add(self, n: int) -> None:
        with self._mu:
            self.done += n
            if self.ctx is not None:
                self.ctx.progress(done=self.done, total=self.total, unit="bytes", stage=self.stage)


class StoreClient:
    """A connection to one store over SFTP; use it as a context manager."""

    def __init__(self, target: SftpTarget, key_file: Path, known_hosts: Path,
                 streams: int = STREAMS) -> None:
        self.target = target
        self.streams = max(1, streams)
        self.key_file = Path(key_file)
        self.known_hosts = Path(known_hosts)
        self.cli = SftpCli(target, self.key_file, self.known_hosts)
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._connecting = threading.Lock()

    # -- connection -------------------------------------------------------

    def __enter__(self) -> StoreClient:
        return self  # the SFTP session opens on first use (a fetch opens it beside its streams)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        """Open the SFTP session for metadata; :class:`TransferFailed` if the host refuses."""
        with self._connecting:
            if self._sftp is None:
                self._connect()

    def _connect(self) -> None:
        ssh = paramiko.SSHClient()
        ssh.load_host_keys(str(self.known_hosts))
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            ssh.connect(
                self.target.host, port=self.target.port, username=self.target.user,
                key_filename=str(self.key_file), look_for_keys=False, allow_agent=False,
                timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
            )
            self._sftp = ssh.open_sftp()
        except (paramiko.SSHException, OSError) as e:
            ssh.close()
            raise TransferFailed(f"cannot open SFTP to {self.target.host}:{self.target.port}: {e}",
                                 host=self.target.host, port=self.target.port) from e
        self._ssh = ssh

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self._ssh is not None:
            self._ssh.close()
        self._sftp = self._ssh = None

    def open_channel(self) -> paramiko.SFTPClient:
        """Another SFTP session over the same SSH connection (for another thread)."""
        self.connect()
        assert self._ssh is not None
        return self._ssh.open_sftp()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        self.connect()
        assert self._sftp is not None
        return self._sftp

    def path(self, rel: str) -> str:
        return self.target.path(rel)

    # -- metadata ---------------------------------------------------------

    def manifest(self, image_id: str) -> Manifest:
        """The manifest of ``image_id``; :class:`ImageNotFound` if there is none."""
        check_image_id(image_id)
        try:
            with self.sftp.open(self.path(manifest_relpath(image_id)), "rb") as f:
                return Manifest.loads(f.read())
        except FileNotFoundError as e:
            raise ImageNotFound(image_id=image_id) from e

    def find_manifest(self, image_id: str) -> Manifest | None:
        try:
            return self.manifest(image_id)
        except ImageNotFound:
            return None

    def missing(self, digests: Iterable[str]) -> set[str]:
        """The digests whose chunk the store lacks; present ones are touched (GC grace)."""
        now = time.time()
        lacking: set[str] = set()
        for d in digests:
            try:
                self.sftp.utime(self.path(chunk_relpath(d)), (now, now))
            except FileNotFoundError:
                lacking.add(d)
        return lacking

    def ensure_layout(self) -> None:
        """Create the store's directories if this is a fresh store."""
        try:
            self.sftp.stat(self.path(layout.CHUNKS + "/ff"))
            return
        except FileNotFoundError:
            pass
        try:
            self.sftp.stat(self.target.store_root)
        except FileNotFoundError:
            self.sftp.mkdir(self.target.store_root)
        dirs = [layout.MANIFESTS, layout.CHUNKS, layout.PENDING, layout.TMP]
        dirs += [f"{layout.CHUNKS}/{i:02x}" for i in range(256)]
        for d in dirs:
            try:
                self.sftp.mkdir(self.path(d))
            except OSError as e:
                if getattr(e, "errno", None) not in (None, errno.EEXIST):
                    raise
                try:
                    self.sftp.stat(self.path(d))
                except FileNotFoundError:
                    raise TransferFailed(f"cannot create {d} in the store: {e}") from e

    # -- fetch ------------------------------------------------------------

    def fetch(self, image_id: str, dest: Path, ctx: TaskContext | None = None,
              seeds: Iterable[Path] = (), expected_digest: str | None = None) -> FetchResult:
        """Fetch an image into ``dest``; its bytes are hashed once, as they are written.

        The whole file's sha256 is computed in one pass while the chunks are
        written (in file order; see :class:`OrderedDigest`) and must equal
        ``expected_digest`` (hex; the digest the caller recorded for the image)
        and the manifest's; a manifest naming another digest is refused before
        any chunk moves. That one hash proves every byte, so a fetched chunk is
        not hashed on its own as well: only when the whole does not match are
        the chunks re-hashed from the file, to name a corrupt one
        (:class:`ChunkCorrupt`) or else blame the manifest
        (:class:`DigestMismatch`). Either leaves neither ``dest`` nor a partial
        file. The returned digest is always the one computed from the bytes
        written, never the manifest's claim.

        The OpenSSH streams are started before the manifest is read, so their
        handshakes overlap it. A partial file left by an interrupted fetch
        (``.<name>.part``) is reused: its chunks that already match are not
        fetched again; so are chunks found in ``seeds`` (local files such as an
        earlier version of the image in an image cache). All-zero chunks are
        not transferred and leave the file sparse.
        """
        dest = Path(dest)
        getter = _ChunkGetter(self, dest.parent, ctx)
        try:
            return self._fetch(getter, image_id, dest, ctx, seeds, expected_digest)
        finally:
            getter.close()

    def _fetch(self, getter: _ChunkGetter, image_id: str, dest: Path, ctx: TaskContext | None,
               seeds: Iterable[Path], expected_digest: str | None) -> FetchResult:
        m = self.manifest(image_id)
        if expected_digest is not None and m.digest != expected_digest:
            raise DigestMismatch("the store's manifest names another digest than the image's",
                                 image_id=image_id, expected=expected_digest, manifest=m.digest)
        part = dest.parent / f".{dest.name}.part"
        reused = part.exists()
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            whole = OrderedDigest(m.offsets(), lambda off, n: os.pread(fd, n, off))
            have = _matching_chunks(fd, m, whole) if reused else set()
            os.ftruncate(fd, m.size)
            want: dict[str, list[int]] = {}
            for i, (off, c) in enumerate(m.offsets()):
                if i in have:
                    continue
                if c.digest == zero_digest(c.size):
                    if reused:
                        os.pwrite(fd, bytes(c.size), off)
                    continue
                want.setdefault(c.digest, []).append(off)

            writeback = _Writeback(fd)

            def sink(digest: str, path: Path, data: bytes) -> None:
                for off in want[digest]:
                    os.pwrite(fd, data, off)
                    whole.add(off, data)
                writeback.advance(whole.hashed_upto)

            sizes = m.unique_digests()
            for d in _copy_from_seeds(seeds, want, sizes, fd, whole):
                del want[d]
            fetched = getter.get({d: sizes[d] for d in want}, sink, verify=False)
            actual = whole.hexdigest()
            if actual != m.digest:
                bad = _corrupt_chunk(fd, m)
                if bad is not None:
                    raise ChunkCorrupt(chunk=bad, store=f"{self.target.host}:{self.target.store_root}")
                raise DigestMismatch("the image assembled from the store's chunks does not match its digest",
                                     image_id=image_id, expected=m.digest, actual=actual)
            os.fsync(fd)
        except (DigestMismatch, ChunkCorrupt):
            os.close(fd)
            fd = -1
            part.unlink(missing_ok=True)
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        os.replace(part, dest)
        fsync_dir(dest.parent)
        return FetchResult(actual, m.size, len(want), fetched)

    def download(self, digests: dict[str, int], workdir: Path, sink: ChunkSink,
                 ctx: TaskContext | None = None, tag: str | None = None) -> int:
        """Get chunks into a staging directory, verify each and hand it to ``sink``.

        The chunks are split over ``streams`` OpenSSH connections; each chunk
        is hashed and handed to ``sink`` (digest, file, bytes) as soon as it
        has landed, while later ones are in flight. A chunk whose bytes do not
        hash to its name fails the whole transfer with :class:`ChunkCorrupt`.
        ``sink`` may move the file away (it may be called from several threads
        at once). The staging directory's name ends in ``tag``. Returns the
        bytes transferred.
        """
        if not digests:
            return 0
        getter = _ChunkGetter(self, workdir, ctx, tag)
        try:
            return getter.get(digests, sink, verify=True)
        finally:
            getter.close()

    # -- upload -----------------------------------------------------------

    def upload(self, src: Path, name: str, ctx: TaskContext | None = None) -> ImageRef:
        """Upload a local image file as image ``name`` (its format is detected).

        One pass over the file: each chunk is hashed and, if the store lacks
        it, staged and handed at once to the ``streams`` OpenSSH connections,
        which send it while later chunks are read and hashed; the manifest
        goes last, once every chunk is in place. Only chunks the store lacks
        are sent. Re-uploading the same bytes under the same name is a no-op;
        other bytes under an existing name fail with :class:`ImageExists`.
        """
        check_image_id(name)
        src = Path(src)
        detected = detect(src, ctx)
        existing = self.find_manifest(name)
        if existing is not None:
            chunks, digest = hash_file(src)
            if existing.digest != digest:
                raise ImageExists(image_id=name, digest=existing.digest)
            return ImageRef(name, digest, existing.size, existing.virtual_size, existing.format)
        self.ensure_layout()
        total = os.stat(src).st_size
        staging = src.parent / f".upload-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            sender = _StreamingUpload(self, staging, ctx, transfer_timeout(total))
            try:
                def on_bytes(done: int) -> None:
                    if ctx is not None:
                        ctx.progress(stage="upload", done=done, total=total, unit="bytes")
                        ctx.check()

                chunks, digest = hash_file(src, on_bytes=on_bytes, on_chunk=sender.chunk)
                m = Manifest(
                    image_id=name, format=detected.format,  # type: ignore[arg-type]
                    virtual_size=detected.virtual_size, size=sum(c.size for c in chunks),
                    digest=digest, chunk_size=CHUNK_SIZE, chunks=chunks, created=_now(),
                )
                sender.finish(self._manifest_lines(m, sender.token, staging))
            except BaseException:
                sender.abort()
                raise
            finally:
                sender.drop_pending()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return ImageRef(name, m.digest, m.size, m.virtual_size, m.format, sender.sent, sender.nbytes)

    def publish(self, m: Manifest, stage: Callable[[set[str]], dict[str, Path]],
                workdir: Path, ctx: TaskContext | None = None) -> tuple[int, int]:
        """Send the chunks of ``m`` the store lacks, then its manifest, atomically.

        ``stage(lacking)`` gives a local file for each lacking digest. Chunks go
        to a temporary name with fsync and are renamed into place; the manifest
        goes last. A pending file names the chunks while the upload runs, so a
        GC on the store keeps them. Returns (chunks sent, bytes sent).
        """
        existing = self.find_manifest(m.image_id)
        if existing is not None:
            if existing.digest != m.digest:
                raise ImageExists(image_id=m.image_id, digest=existing.digest)
            return 0, 0
        self.ensure_layout()
        token = uuid.uuid4().hex
        sizes = m.unique_digests()
        pending = self.path(f"{layout.PENDING}/{token}")
        with self.sftp.open(pending, "w") as f:
            f.write("\n".join(sizes) + "\n")
        try:
            lacking = self.missing(sizes)
            files = stage(lacking)
            order = sorted(lacking)
            batches: list[list[str]] = []
            for i in range(min(self.streams, len(order))):
                lines: list[str] = []
                for d in order[i::self.streams]:
                    tmp = self.path(f"{layout.TMP}/{d}.{token}")
                    lines.append(f"put -f {quote(files[d])} {quote(tmp)}")
                    lines.append(f"rename {quote(tmp)} {quote(self.path(chunk_relpath(d)))}")
                batches.append(lines)
            nbytes = sum(sizes[d] for d in lacking)
            if ctx is not None:
                ctx.progress(0, stage="upload", done=0, total=nbytes, unit="bytes", force=True)
            jobs = [self.cli.start(b, ctx, transfer_timeout(nbytes), workdir) for b in batches]
            try:
                for job in jobs:
                    job.join()
            except BaseException:
                for job in jobs:
                    job.stop()
                raise
            self._put_manifest(m, token, workdir, ctx)
        finally:
            try:
                self.sftp.remove(pending)
            except OSError:
                log.warning("could not remove pending file %s", pending)
        return len(lacking), nbytes


    def _put_manifest(self, m: Manifest, token: str, workdir: Path, ctx: TaskContext | None) -> None:
        """The manifest last, once every chunk it names is in place (tmp, fsync, rename)."""
        self.cli.run(self._manifest_lines(m, token, workdir), ctx, transfer_timeout(0), workdir)
        (workdir / f".manifest-{token}.json").unlink(missing_ok=True)

    def _manifest_lines(self, m: Manifest, token: str, workdir: Path) -> list[str]:
        """The batch lines that put ``m`` (written to a local file in ``workdir``) in place."""
        local_manifest = workdir / f".manifest-{token}.json"
        local_manifest.write_bytes(m.dumps())
        tmp_manifest = self.path(f"{layout.TMP}/{m.image_id}.json.{token}")
        return [f"put -f {quote(local_manifest)} {quote(tmp_manifest)}",
                f"rename {quote(tmp_manifest)} {quote(self.path(manifest_relpath(m.image_id)))}"]


class _StreamingUpload:
    """The chunks of an upload sent while the file is still being hashed.

    :meth:`chunk` runs on the hasher's threads with each chunk: a chunk the
    store already holds is touched (GC grace) and skipped; a lacking one is
    named in the upload's pending file (so a GC on the store keeps it), written
    to the staging directory and queued on one of the OpenSSH streams (put
    with fsync to a temporary name, rename into place).

    The presence checks are one round trip each: they run on ``CHECKERS``
    SFTP channels of the client's one SSH connection, so the hasher's threads
    wait on them side by side. The pending file is written pipelined (no wait
    for each line's acknowledgement): a chunk put before its line lands is
    covered by GC's grace anyway, its mtime being the upload's.
    """

    CHECKERS = 4
    #: chunks staged and not yet sent: a slow transfer slows the hashing instead
    STAGED = 32

    def __init__(self, client: StoreClient, staging: Path, ctx: TaskContext | None, timeout: float) -> None:
        self.client = client
        self.staging = staging
        self.token = uuid.uuid4().hex
        self.sent = 0
        self.nbytes = 0
        self._mu = threading.Lock()
        self._seen: set[str] = set()
        self._pending_path = client.path(f"{layout.PENDING}/{self.token}")
        self._pending = client.sftp.open(self._pending_path, "w")
        self._pending.set_pipelined(True)
        self._channels: queue.SimpleQueue[paramiko.SFTPClient] = queue.SimpleQueue()
        self._open: list[paramiko.SFTPClient] = []
        self._streams: list[BatchStream] = []
        self._slots = threading.Semaphore(self.STAGED)
        self._queued: list[collections.deque[str]] = []
        try:
            for _ in range(self.CHECKERS):
                self._open.append(client.open_channel())
                self._channels.put(self._open[-1])
            for i in range(client.streams):
                self._queued.append(collections.deque())
                self._streams.append(client.cli.stream(ctx, timeout, staging, functools.partial(self._echo, i)))
        except BaseException:
            self.abort()
            self.drop_pending()
            raise

    def chunk(self, index: int, offset: int, digest: str, data: bytes) -> None:
        with self._mu:
            if digest in self._seen:
                return
            self._seen.add(digest)
        if not self._lacks(digest):
            return
        with self._mu:
            self._pending.write(digest + "\n")
            self._pending.flush()
        while not self._slots.acquire(timeout=0.2):
            for stream in self._streams:
                stream.check()
        local = self.staging / digest
        local.write_bytes(data)
        tmp = self.client.path(f"{layout.TMP}/{digest}.{self.token}")
        lines = [f"put -f {quote(local)} {quote(tmp)}",
                 f"rename {quote(tmp)} {quote(self.client.path(chunk_relpath(digest)))}"]
        with self._mu:  # one chunk's lines stay together on its stream
            i = self.sent % len(self._streams)
            self._queued[i].append(digest)
            self._streams[i].send(lines)
            self.sent += 1
            self.nbytes += len(data)

    def _echo(self, i: int, line: str) -> None:
        """sftp of stream ``i`` starts a command: at a rename, its chunk's put is done."""
        if not line.startswith("sftp> rename "):
            return
        with self._mu:
            digest = self._queued[i].popleft() if self._queued[i] else None
        if digest is not None:
            (self.staging / digest).unlink(missing_ok=True)
            self._slots.release()

    def _lacks(self, digest: str) -> bool:
        """True if the store lacks the chunk; a present one is touched (GC grace)."""
        sftp = self._channels.get()
        try:
            now = time.time()
            sftp.utime(self.client.path(chunk_relpath(digest)), (now, now))
            return False
        except FileNotFoundError:
            return True
        finally:
            self._channels.put(sftp)

    def finish(self, manifest_lines: list[str]) -> None:
        """Wait until every queued chunk is in place, then put the manifest.

        The manifest goes last on the first stream, once the other streams
        have finished (a batch runs its lines in order): no extra connection.
        """
        for stream in self._streams[1:]:
            stream.close()
        self._streams[0].send(manifest_lines)
        self._streams[0].close()

    def abort(self) -> None:
        for stream in self._streams:
            stream.stop()

    def drop_pending(self) -> None:
        for sftp in self._open:
            sftp.close()
        try:
            self._pending.close()
            self.client.sftp.remove(self._pending_path)
        except OSError:
            log.warning("could not remove pending file %s", self._pending_path)


class _GetStream:
    """One OpenSSH connection getting chunks into a staging directory, in the order asked.

    sftp echoes each batch command as it starts it: the echo of a ``get``
    says the one before it is complete, and a batch that ended cleanly says
    its last one is.
    """

    def __init__(self, cli: SftpCli, staging: Path, ctx: TaskContext | None) -> None:
        self._asked: list[str] = []
        self._begun = 0
        self._reported = 0
        self._ended = False
        self._cv = threading.Condition()
        self.stream = cli.stream(ctx, STREAM_LIMIT, staging, self._echo)

    def get(self, remote: str, local: Path, digest: str) -> None:
        with self._cv:
            self._asked.append(digest)
        self.stream.send([f"get {quote(remote)} {quote(local)}"])

    def _echo(self, line: str) -> None:
        if line.startswith("sftp> get "):
            with self._cv:
                self._begun += 1
                self._cv.notify()

    def _complete(self) -> int:
        return len(self._asked) if self._ended else max(self._begun - 1, 0)

    def landed(self, timeout: float) -> str | None:
        """The next chunk that has landed; None if none did within ``timeout``.

        Raises the batch's failure if it ended on one."""
        with self._cv:
            if self._reported >= self._complete():
                self._cv.wait(timeout)
            if self._reported >= self._complete() and self.stream.job.done.is_set():
                self.stream.job.join()
                self._ended = True
            if self._reported < self._complete():
                self._reported += 1
                return self._asked[self._reported - 1]
        return None


class _ChunkGetter:
    """Chunks got over the client's OpenSSH streams into a staging directory.

    The streams start at once, so their handshakes overlap whatever the
    caller does next (a fetch reads the manifest). :meth:`get` deals the
    chunks' ``get`` lines round robin in the order given (file order, so they
    land roughly in order) and a thread per stream hands each chunk on as it
    lands (see :class:`_GetStream`), while later ones are in flight.
    """

    def __init__(self, client: StoreClient, workdir: Path, ctx: TaskContext | None,
                 tag: str | None = None) -> None:
        self.client = client
        self.ctx = ctx
        self.staging = Path(workdir) / f".chunks-{tag or uuid.uuid4().hex}"
        self.staging.mkdir(parents=True)
        self._streams: list[_GetStream] = []
        self._error: BaseException | None = None
        try:
            for _ in range(client.streams):
                self._streams.append(_GetStream(client.cli, self.staging, ctx))
        except BaseException:
            self.close()
            raise

    def get(self, digests: dict[str, int], sink: ChunkSink, verify: bool) -> int:
        """Get ``digests`` (with their sizes) and hand each to ``sink``; returns the bytes got.

        A chunk of another size than asked fails with :class:`ChunkCorrupt`;
        so does one whose bytes do not hash to its name, if ``verify``.
        """
        if not digests:
            return 0
        order = list(digests)
        total = sum(digests.values())
        progress = _Progress(self.ctx, total, "fetch")
        deadline = time.monotonic() + transfer_timeout(total)
        streams = self._streams[:len(order)]
        counts = [len(order[i::len(streams)]) for i in range(len(streams))]
        with ThreadPoolExecutor(len(streams), thread_name_prefix="chunk-land") as pool:
            futures = [pool.submit(self._consume, s, n, digests, sink, verify, progress, deadline)
                       for s, n in zip(streams, counts, strict=True)]
            try:
                for k, d in enumerate(order):
                    streams[k % len(streams)].get(self.client.path(chunk_relpath(d)), self.staging / d, d)
                for s in streams:
                    s.stream.end()
                for f in as_completed(futures):
                    f.result()
            except BaseException as e:
                self.stop()
                raise self._error or e from None
        return progress.done

    def _consume(self, s: _GetStream, count: int, sizes: dict[str, int], sink: ChunkSink,
                 verify: bool, progress: _Progress, deadline: float) -> None:
        try:
            for _ in range(count):
                while (d := s.landed(0.2)) is None:
                    if self.ctx is not None:
                        self.ctx.check()
                    if time.monotonic() > deadline:
                        raise TransferFailed("the transfer took too long", host=self.client.target.host)
                self._land(d, sizes[d], sink, verify)
                progress.add(sizes[d])
        except BaseException as e:
            self._error = self._error or e
            self.stop()  # the other streams' threads and the sender stop at once
            raise

    def _land(self, digest: str, size: int, sink: ChunkSink, verify: bool) -> None:
        path = self.staging / digest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TransferFailed(f"chunk {digest} did not arrive", host=self.client.target.host) from None
        if len(data) != size or (verify and hashlib.sha256(data).hexdigest() != digest):
            raise ChunkCorrupt(chunk=digest, store=f"{self.client.target.host}:{self.client.target.store_root}")
        sink(digest, path, data)
        path.unlink(missing_ok=True)

    def stop(self) -> None:
        for s in self._streams:
            s.stream.stop()

    def close(self) -> None:
        """Stop the streams (ending any still running) and remove the staging directory."""
        self.stop()
        shutil.rmtree(self.staging, ignore_errors=True)


class _Writeback:
    """Has the kernel start writing out what the whole-file hash has passed.

    The fetch fsyncs before its rename; writing back behind the hash as the
    chunks land (``POSIX_FADV_DONTNEED`` starts writeback of dirty pages and
    drops the clean ones, which are never read again) leaves that fsync only
    the tail, and keeps a large fetch from filling the page cache.
    """

    STEP = 64 * CHUNK_SIZE

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = 0
        self._mu = threading.Lock()

    def advance(self, upto: int) -> None:
        with self._mu:
            if upto - self.done < self.STEP:
                return
            start, self.done = self.done, upto
        os.posix_fadvise(self.fd, start, upto - start, os.POSIX_FADV_DONTNEED)


def _matching_chunks(fd: int, m: Manifest, whole: OrderedDigest) -> set[int]:
    """Indices of the chunks a partial file already holds intact (added to ``whole``)."""
    ok: set[int] = set()
    size = os.fstat(fd).st_size
    for i, (off, c) in enumerate(m.offsets()):
        if off + c.size > size:
            break
        data = os.pread(fd, c.size, off)
        if hashlib.sha256(data).hexdigest() == c.digest:
            ok.add(i)
            whole.add(off, data)
    return ok


def _corrupt_chunk(fd: int, m: Manifest) -> str | None:
    """The digest of the first chunk of the file that does not hash to its name, if any."""
    for off, c in m.offsets():
        if hashlib.sha256(os.pread(fd, c.size, off)).hexdigest() != c.digest:
            return c.digest
    return None


def _copy_from_seeds(seeds: Iterable[Path], want: dict[str, list[int]], sizes: dict[str, int],
                     fd: int, whole: OrderedDigest) -> list[str]:
    """Write the wanted chunks that local ``seeds`` hold (re-verified as read); return their digests."""
    found: set[str] = set()
    for seed in seeds:
        if not want.keys() - found:
            break
        with open(seed, "rb") as f:
            for off, c in enumerate(hash_file(Path(seed))[0]):
                if c.digest not in want or c.digest in found:
                    continue
                f.seek(off * CHUNK_SIZE)
                data = f.read(sizes[c.digest])
                if hashlib.sha256(data).hexdigest() != c.digest:
                    continue  # the seed changed under us: fetch it instead
                for dst in want[c.digest]:
                    os.pwrite(fd, data, dst)
                    whole.add(dst, data)
                found.add(c.digest)
    return sorted(found)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
