"""A real threaded HTTP file server for URL downloads in tests.

Serves the files of one directory over HTTP/1.1 on loopback, with
``Content-Length`` and single ``Range: bytes=a-b`` requests. A slow mode
(``rate`` bytes per second, for a whole server or one file) keeps a transfer
running long enough to cancel it or pass its deadline; ``announce`` makes the
server lie about a file's length; ``fail`` answers a status code instead::

    with FileServer(tmp_path) as srv:
        srv.rate["big.img"] = 1 << 20       # 1 MiB/s for this file
        url = srv.url("big.img")
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.agents import free_port

BLOCK = 256 * 1024
RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


class FileServer:
    """Serves ``root`` on 127.0.0.1; see the module docstring for the knobs."""

    def __init__(self, root: Path, port: int | None = None, rate: float | None = None) -> None:
        self.root = Path(root).resolve()
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.default_rate = rate
        self.rate: dict[str, float] = {}
        self.announce: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.requests: list[str] = []
        self.aborted: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._mu = threading.Lock()

    def url(self, name: str | Path) -> str:
        """The URL of a file: a name relative to ``root``, or a path inside it."""
        if isinstance(name, Path):
            name = name.resolve().relative_to(self.root).as_posix()
        return f"{self.base}/{name}"

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> FileServer:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                srv._serve(self, body=False)

            def do_GET(self) -> None:
                srv._serve(self, body=True)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="file-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        name = unquote(urlsplit(h.path).path).lstrip("/")
        with self._mu:
            self.requests.append(name)
        path = (self.root / name).resolve()
        if name in self.fail:
            self._empty(h, self.fail[name])
            return
        if not path.is_relative_to(self.root) or not path.is_file():
            self._empty(h, 404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        m = RANGE_RE.match(h.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            status = 206
        length = self.announce.get(name, end - start + 1)
        if length != end - start + 1:
            h.close_connection = True  # a lying length: end the body by closing
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(length))
        h.send_header("Accept-Ranges", "bytes")
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if body:
            self._send(h, name, path, start, end - start + 1)

    def _send(self, h: BaseHTTPRequestHandler, name: str, path: Path, start: int, count: int) -> None:
        rate = self.rate.get(name, self.default_rate)
        t0 = time.monotonic()
        sent = 0
        try:
            with open(path, "rb") as f:
                f.seek(start)
                while sent < count:
                    block = f.read(min(BLOCK if rate is None else max(4096, int(rate / 20)), count - sent))
                    if not block:
                        break
                    h.wfile.write(block)
                    sent += len(block)
                    if rate is not None:
                        ahead = sent / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            with self._mu:
                self.aborted.append(name)

    @staticmethod
    def _empty(h: BaseHTTPRequestHandler, status: int) -> None:
        h.send_response(status)
        h.send_header("Content-Length", "0")
        h.end_headers()
