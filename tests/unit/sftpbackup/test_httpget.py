"""Redirects and destination checks of the streaming GET (an in-process server on loopback, no child process)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentcore.fetchpolicy import UrlRefused
from sftpbackup import httpget
from sftpbackup.errors import DownloadFailed
from sftpbackup.httpget import open_url

REDIRECTS = {
    "/a": "/b", "/loop": "/loop", "/away": "ftp://127.0.0.1/x", "/rel": "b",
    "/metadata": "http://169.254.169.254/latest/meta-data/", "/self": "http://127.0.0.1:7171/tasks",
    "/v6": "http://[::1]:7171/", "/mapped": "http://[::ffff:127.0.0.1]:7171/",
}
#: a public-looking name and address (TEST-NET-3) the tests route to the loopback server
PUBLIC_HOST, PUBLIC_ADDR = "images.example", "203.0.113.10"


HITS: list[str] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        HITS.append(self.path)
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
    HITS.clear()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def public(base: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """``http://images.example:<port>``: resolves to a public address, reaches the loopback
    server; yields the base URL and every address the GET connected to."""
    port = int(base.rsplit(":", 1)[1])
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    connected: list[tuple[str, int]] = []

    def getaddrinfo(host: str, *args: Any, **kw: Any) -> Any:
        if host == PUBLIC_HOST:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDR, port))]
        return real_getaddrinfo(host, *args, **kw)

    def create_connection(addr: tuple[str, int], *args: Any, **kw: Any) -> socket.socket:
        connected.append(addr)
        if addr[0] == PUBLIC_ADDR:
            addr = ("127.0.0.1", addr[1])
        return real_connect(addr, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(httpget.socket, "create_connection", create_connection)
    yield f"http://{PUBLIC_HOST}:{port}", connected


@pytest.mark.parametrize("path,final", [("/b", "/b"), ("/a", "/b"), ("/rel", "/b")])
def test_follows_http_redirects(base: str, path: str, final: str) -> None:
    conn, resp = open_url(base + path, timeout=10, allow_local=True)
    try:
        assert resp.status == 200
        assert resp.read() == b"payload of " + final.encode()
    finally:
        conn.close()


@pytest.mark.parametrize("path,why", [("/loop", "too many redirects"), ("/away", "not http")])
def test_refuses_redirect_loops_and_other_schemes(base: str, path: str, why: str) -> None:
    with pytest.raises(DownloadFailed, match=why):
        open_url(base + path, timeout=10, allow_local=True)


def test_connection_refused_is_a_download_failure() -> None:
    with pytest.raises(DownloadFailed, match="cannot GET"):
        open_url("http://127.0.0.1:9/x", timeout=5, allow_local=True)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/b", "http://localhost:{port}/b", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/b", "http://0.0.0.0:{port}/b", "http://[fe80::1]/x",
])
def test_loopback_link_local_and_metadata_urls_are_refused_by_default(base: str, url: str) -> None:
    port = base.rsplit(":", 1)[1]
    with pytest.raises(UrlRefused):
        open_url(url.format(port=port), timeout=5)
    assert HITS == []  # refused before connecting


def test_a_public_host_is_fetched_through_the_address_that_was_checked(
    public: tuple[str, list[tuple[str, int]]],
) -> None:
    url, connected = public
    conn, resp = open_url(url + "/a", timeout=10)
    try:
        assert resp.status == 200 and resp.read() == b"payload of /b"
    finally:
        conn.close()
    assert [a for a, _ in connected] == [PUBLIC_ADDR, PUBLIC_ADDR]  # never re-resolved by name


@pytest.mark.parametrize("path", ["/metadata", "/self", "/v6", "/mapped"])
def test_redirects_to_loopback_or_metadata_are_refused(
    public: tuple[str, list[tuple[str, int]]], path: str,
) -> None:
    url, connected = public
    with pytest.raises(UrlRefused):
        open_url(url + path, timeout=5)
    assert HITS == [path]
    assert [a for a, _ in connected] == [PUBLIC_ADDR]


def test_https_is_not_redirected_down_to_http(monkeypatch: pytest.MonkeyPatch) -> None:
    class Redirecting:
        status = 302

        def getheader(self, name: str, default: str | None = None) -> str | None:
            return "http://images.example/x" if name == "Location" else default

    class Conn:
        def request(self, *args: Any, **kw: Any) -> None:
            pass

        def getresponse(self) -> Redirecting:
            return Redirecting()

        def close(self) -> None:
            pass

    monkeypatch.setattr(httpget, "_connect", lambda url, timeout, allow_local: Conn())
    with pytest.raises(DownloadFailed, match="https to plain http"):
        open_url("https://images.example/x", timeout=5)
