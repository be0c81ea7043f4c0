"""Redirect handling of the streaming GET (an in-process server on loopback, no child process)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sftpbackup.errors import DownloadFailed
from sftpbackup.httpget import open_url

REDIRECTS = {"/a": "/b", "/loop": "/loop", "/away": "ftp://127.0.0.1/x", "/rel": "b"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path in REDIRECTS:
            self.send_response(302)
            self.send_header("Location", REDIRECTS[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"payload of " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path,final", [("/b", "/b"), ("/a", "/b"), ("/rel", "/b")])
def test_follows_http_redirects(base: str, path: str, final: str) -> None:
    conn, resp = open_url(base + path, timeout=10)
    try:
        assert resp.status == 200
        assert resp.read() == b"payload of " + final.encode()
    finally:
        conn.close()


@pytest.mark.parametrize("path,why", [("/loop", "too many redirects"), ("/away", "not http")])
def test_refuses_redirect_loops_and_other_schemes(base: str, path: str, why: str) -> None:
    with pytest.raises(DownloadFailed, match=why):
        open_url(base + path, timeout=10)


def test_connection_refused_is_a_download_failure() -> None:
    with pytest.raises(DownloadFailed, match="cannot GET"):
        open_url("http://127.0.0.1:9/x", timeout=5)
