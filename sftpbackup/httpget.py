"""A streaming HTTP(S) GET on the standard library's ``http.client``.

add-image reads the body with ``readinto`` into one 1 MiB buffer: measured
here it keeps pace with curl, where httpx's 64 KiB iteration managed about
two thirds of it. TLS certificates are verified (the system's CA store).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from urllib.parse import urljoin, urlsplit

from sftpbackup.errors import DownloadFailed

MAX_REDIRECTS = 5


def open_url(url: str, timeout: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET ``url`` following up to five http(s) redirects; the caller closes the connection."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DownloadFailed("redirected to a URL that is not http(s)", url=url)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            conn.request("GET", path, headers={"Accept-Encoding": "identity"})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise DownloadFailed(f"cannot GET the URL: {e}", url=url) from e
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            url = urljoin(url, resp.getheader("Location", ""))
            conn.close()
            continue
        return conn, resp
    raise DownloadFailed("too many redirects", url=url)


def abort(conn: http.client.HTTPConnection) -> None:
    """Wake a read blocked on ``conn`` from another thread (a cancel), then close it."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    conn.close()
