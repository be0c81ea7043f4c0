"""Adding an image from an ``http(s)://`` URL to an RBD pool.

The body is streamed once: every block goes into a running sha256, and the
first bytes decide the format. A raw image goes straight into RBD (sparse,
through :class:`~cephagent.rbdio.RbdWriter`); a qcow2 is spooled to the
agent's work directory, checked with ``qemu-img info -f qcow2`` (a backing
file or an external data file is refused: either could name any file on the
host, which the root ``qemu-img convert`` would then copy into RBD),
converted to raw with ``qemu-img convert -f qcow2`` and then written into
RBD, so that clones can be made of it. Cancel and deadline stop the transfer
between blocks and kill ``qemu-img``; the partial image is removed.

The URL and every redirect go through :mod:`agentcore.fetchpolicy` (http(s)
only; no loopback, link-local or metadata address unless the agent's
``download_allow_local``), and each connection checks the address it reached,
so a name that resolves differently the second time gains nothing. Errors
give a short reason, never the remote status or body.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import queue
import shutil
import socket
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcore.fetchpolicy import MAX_REDIRECTS, check_address, check_url
from agentcore.task import TaskContext
from cephagent.errors import DigestMismatch, DownloadFailed, UnsupportedImage
from cephagent.rbdio import BLOCK, Buffer, RbdWriter, write_file
from cephagent.rbdstore import RbdStore

log = logging.getLogger(__name__)

QCOW2_MAGIC = b"QFI\xfb"
#: magic numbers of formats that are refused rather than imported as raw bytes
REFUSED = {b"KDMV": "vmdk", b"vhdxfile": "vhdx", b"QED\x00": "qed", b"conectix": "vpc"}
QEMU_IMG_TIMEOUT = 3600.0
#: qcow2 v3 incompatible feature bits (offset 72); bit 2: the data is in an external file
_INCOMPATIBLE = struct.Struct(">Q")
_DATA_FILE_BIT = 1 << 2


def detect_format(head: bytes | bytearray) -> str:
    """``qcow2`` or ``raw`` from an image's first bytes (at least 80 for a qcow2);
    other formats, and a qcow2 with an external data file, are refused."""
    if head.startswith(QCOW2_MAGIC):
        version = int.from_bytes(head[4:8], "big")
        if version >= 3 and (len(head) < 80 or _INCOMPATIBLE.unpack_from(head, 72)[0] & _DATA_FILE_BIT):
            raise UnsupportedImage("qcow2 images with an external data file are refused",
                                   format="qcow2")
        return "qcow2"
    for magic, name in REFUSED.items():
        if head.startswith(magic):
            raise UnsupportedImage(f"{name} images are not supported; give raw or qcow2", format=name)
    return "raw"


@dataclass
class Added:
    """What was imported."""

    size: int
    downloaded: int
    source_format: str
    sha256: str


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows at most :data:`MAX_REDIRECTS` redirects, each to an allowed URL."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, allow_local: bool) -> None:
        super().__init__()
        self.allow_local = allow_local

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                       headers: Any) -> Any:
        # checked before the standard library's own scheme test, so that every
        # refused redirect answers URL_REFUSED alike
        location = headers.get("location") or headers.get("uri")
        if location:
            _checked(urllib.parse.urljoin(req.full_url, location), self.allow_local)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        _checked(newurl, self.allow_local)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """Refuses to talk to a peer the policy forbids, whatever the name resolved to."""

    def __init__(self, *args: Any, allow_local: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_local = allow_local

    def connect(self) -> None:
        super().connect()  # for https: before the TLS handshake (see the MRO below)
        peer = self.sock.getpeername()[0] if self.sock.family in (socket.AF_INET, socket.AF_INET6) else ""
        try:
            check_address(str(peer), self.allow_local, self.host)
        except BaseException:
            self.sock.close()
            raise


class _CheckedHTTPSConnection(http.client.HTTPSConnection, _CheckedHTTPConnection):
    def __init__(self, *args: Any, allow_local: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_local = allow_local


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, allow_local: bool) -> None:
        super().__init__()
        self.allow_local = allow_local

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_CheckedHTTPConnection, req, allow_local=self.allow_local)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, allow_local: bool) -> None:
        super().__init__()
        self.allow_local = allow_local

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_CheckedHTTPSConnection, req, context=self._context,  # type: ignore[attr-defined]
                            allow_local=self.allow_local)


def _opener(allow_local: bool) -> urllib.request.OpenerDirector:
    # The standard library's client, not httpx: reading into a reused buffer it
    # moved a local 256 MiB image at about 3x httpx's rate on this 2-core machine,
    # which is what add-image's throughput is measured by. No proxies from the
    # environment: the agent fetches what the controller names, directly.
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _CheckedHTTPHandler(allow_local),
        _CheckedHTTPSHandler(allow_local), _CheckedRedirects(allow_local))


def _checked(url: str, allow_local: bool) -> None:
    """Raises URL_REFUSED for a URL the agent must not fetch; DOWNLOAD_FAILED if
    its host name does not resolve."""
    try:
        check_url(url, allow_local)
    except OSError:
        raise DownloadFailed("the source's host name does not resolve") from None


class _Hasher:
    """sha256 in its own thread, fed in order through a bounded queue.

    hashlib releases the GIL on large buffers, so hashing a block overlaps with
    reading the next one and with the RBD writes; on this 2-core machine
    hashing inline was the bottleneck of add-image.
    """

    def __init__(self, depth: int = 8) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[Buffer | None] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._digest.update(block)

    def update(self, block: Buffer) -> None:
        self._queue.put(block)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()


class _Body:
    """The response body in blocks of :data:`BLOCK`, hashed as it is read."""

    def __init__(self, response: Any, ctx: TaskContext) -> None:
        self.response = response
        self.ctx = ctx
        self.digest = _Hasher()
        self.read = 0
        length = response.headers.get("Content-Length")
        self.total = int(length) if length and length.isdigit() else None

    def blocks(self) -> Iterator[Buffer]:
        try:
            while True:
                self.ctx.check()
                # a fresh buffer per block, handed on without a copy: the hash
                # thread and librbd's write may still hold the previous one
                buf = bytearray(BLOCK)
                view = memoryview(buf)
                n = 0
                while n < BLOCK:
                    k = self.response.readinto(view[n:])
                    if not k:
                        break
                    n += k
                view.release()
                if n == 0:
                    break
                block = bytes(buf[:n]) if n < BLOCK else buf
                self.digest.update(block)
                self.read += n
                self.ctx.progress(done=self.read, total=self.total, unit="bytes", stage="download")
                yield block
                if n < BLOCK:
                    break
        finally:
            self.digest.close()
        if self.total is not None and self.read != self.total:
            raise DownloadFailed(f"the body ended after {self.read} of {self.total} bytes",
                                 received=self.read, expected=self.total)


def add_image(ctx: TaskContext, store: RbdStore, url: str, pool: str, name: str, *,
              work_dir: Path, want_format: str, sha256: str | None,
              timeout: float, allow_local: bool = False) -> Added:
    """Download ``url`` into ``pool/name`` as a raw image."""
    _checked(url, allow_local)
    try:
        with _opener(allow_local).open(url, timeout=timeout) as response:
            if response.status != 200:
                log.warning("GET %s answered %s", url, response.status)
                raise DownloadFailed("the source did not send the image")
            body = _Body(response, ctx)
            blocks = body.blocks()
            first = next(blocks, b"")  # a whole BLOCK unless the image is smaller
            fmt = detect_format(first)
            if want_format not in ("auto", fmt):
                raise UnsupportedImage(f"the image is {fmt}, not {want_format}", format=fmt)
            if fmt == "raw":
                size = _stream_raw(store, pool, name, first, blocks, body, sha256)
            else:
                size = _via_qcow2(ctx, store, pool, name, first, blocks, work_dir, body, sha256)
    except urllib.error.HTTPError as e:
        log.warning("GET %s answered %s", url, e.code)
        raise DownloadFailed("the source refused the request", url=url) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        log.warning("GET %s failed: %s: %s", url, type(e).__name__, e)
        raise DownloadFailed("the source could not be read", url=url) from None
    return Added(size=size, downloaded=body.read, source_format=fmt, sha256=body.digest.hexdigest())


def _check_digest(body: _Body, sha256: str | None) -> None:
    digest = body.digest.hexdigest()
    if sha256 is not None and digest != sha256:
        raise DigestMismatch(expected=sha256, actual=digest)


def _stream_raw(store: RbdStore, pool: str, name: str, first: Buffer,
                blocks: Iterator[Buffer], body: _Body, sha256: str | None) -> int:
    writer = RbdWriter(store, pool, name, body.total or 0).open()
    try:
        writer.write(first)
        for block in blocks:
            writer.write(block)
        _check_digest(body, sha256)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.offset


def _via_qcow2(ctx: TaskContext, store: RbdStore, pool: str, name: str, first: Buffer,
               blocks: Iterator[Buffer], work_dir: Path, body: _Body, sha256: str | None) -> int:
    scratch = work_dir / f"add-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True, mode=0o700)
    try:
        src = scratch / "image.qcow2"
        with open(src, "wb") as f:
            f.write(first)
            for block in blocks:
                f.write(block)
        _check_digest(body, sha256)
        return import_file(ctx, store, src, pool, name, "qcow2")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def import_file(ctx: TaskContext, store: RbdStore, src: Path, pool: str, name: str,
                fmt: str | None = None) -> int:
    """Write a local raw or qcow2 file into a new raw image ``pool/name``; its size.

    A qcow2 is checked (no backing file) and converted next to ``src``.
    """
    with open(src, "rb") as f:
        sniffed = detect_format(f.read(512))  # refuses an external data file before qemu-img
    fmt = fmt or sniffed
    if fmt == "raw":
        return write_file(store, src, pool, name, ctx)
    info = json.loads(ctx.run(["qemu-img", "info", "--output=json", "-f", "qcow2", str(src)],
                              timeout=60).stdout)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise UnsupportedImage("qcow2 images with a backing file are refused",
                               backing=info.get("backing-filename"))
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if isinstance(data, dict) and data.get("data-file"):
        raise UnsupportedImage("qcow2 images with an external data file are refused",
                               dataFile=data.get("data-file"))
    raw = src.with_name(src.name + ".raw")
    try:
        ctx.progress(None, stage="convert", force=True)
        ctx.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(src), str(raw)],
                timeout=ctx.remaining(QEMU_IMG_TIMEOUT))
        return write_file(store, raw, pool, name, ctx)
    finally:
        raw.unlink(missing_ok=True)
