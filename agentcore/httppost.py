"""A lean keep-alive HTTP/1.1 POST for the callback outbox.

The outbox sends many small POSTs and needs only the status of each answer.
``http.client`` parses every response header block with the ``email``
package, which made callback delivery the largest CPU cost of an agent under
load (and an agent is one GIL-bound process, so it slowed accepting commands
too). This client writes a request in one ``sendall`` and reads the answer
with plain byte splitting: status line, ``Content-Length`` or chunked body
(drained and discarded), ``Connection: close``, interim ``1xx`` answers.

The sans-IO ``h11`` library was tried in its place and kept out: with the
same behaviour and tests it cost about 95 us of CPU per POST (about 70 us of
it in h11's event and header validation), against about 11 us for this
client and 80 us for ``http.client``, so it would undo the reason this
module exists (the agent's callback round trip p99 at concurrency 64 went
from about 0.3 s to 1.2-1.5 s in the agent protocol benchmark).
"""

from __future__ import annotations

import re
import socket
import ssl

MAX_HEAD = 64 * 1024
_CHUNK = 65536
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x we can read."""


class PostConnection:
    """One keep-alive connection to an origin; not thread-safe (one per sender thread)."""

    def __init__(self, scheme: str, host: str, port: int | None, *, timeout: float,
                 context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port or (443 if scheme == "https" else 80)
        self.timeout = timeout
        self._context = context if scheme == "https" else None
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal goes in brackets
        self._host_header = name if port is None else f"{name}:{port}"
        self._sock: socket.socket | ssl.SSLSocket | None = None
        self._buf = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buf = b""

    def post(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """POST ``body``; return the answer's status (the body is read and dropped).

        A reused connection the server closed in the meantime raises ``OSError``
        like any network error; the caller retries.
        """
        if _BAD_CHARS.search(path) or any(_BAD_CHARS.search(k) or _BAD_CHARS.search(v) for k, v in headers.items()):
            raise ValueError("a control character in the path or a header of a POST")
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host_header}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        try:
            self._sock.sendall(request)
            status, close = self._read_answer()
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status

    # -- reading --------------------------------------------------------

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._context is not None:
            sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self._sock = sock
        self._buf = b""

    def _recv(self) -> bytes:
        assert self._sock is not None
        data = self._sock.recv(_CHUNK)
        if not data:
            raise ConnectionResetError("connection closed by the server")
        return data

    def _read_until(self, end_mark: bytes, what: str) -> bytes:
        """The bytes before ``end_mark`` (consumed with it); at most MAX_HEAD of them."""
        while (end := self._buf.find(end_mark)) < 0:
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError(f"{what} too long")
            self._buf += self._recv()
        found, self._buf = self._buf[:end], self._buf[end + len(end_mark):]
        return found

    def _read_answer(self) -> tuple[int, bool]:
        while True:
            head = self._read_until(b"\r\n\r\n", "answer head")
            status_line, _, rest = head.partition(b"\r\n")
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"bad status line: {status_line[:100]!r}")
            status = int(parts[1])
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            fields = _fields(rest)
            conn = fields.get(b"connection", b"").lower()
            close = b"close" in conn or (parts[0] == b"HTTP/1.0" and b"keep-alive" not in conn)
            if status in (204, 304):
                return status, close
            if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
                self._drain_chunked()
            elif (length := fields.get(b"content-length")) is not None:
                if not length.strip().isdigit():
                    raise ProtocolError(f"bad Content-Length: {length[:40]!r}")
                self._drain(int(length))
            else:
                self._drain_to_close()
                close = True
            return status, close

    def _drain(self, n: int) -> None:
        while len(self._buf) < n:
            n -= len(self._buf)
            self._buf = self._recv()
        self._buf = self._buf[n:]

    def _drain_chunked(self) -> None:
        while True:
            size_text = self._read_until(b"\r\n", "chunk line").split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_text[:40]!r}") from None
            if size == 0:
                while self._read_until(b"\r\n", "chunk line"):  # trailers, up to the blank line
                    pass
                return
            self._drain(size + 2)

    def _drain_to_close(self) -> None:
        assert self._sock is not None
        while self._sock.recv(_CHUNK):
            pass
        self._buf = b""


def _fields(block: bytes) -> dict[bytes, bytes]:
    """Header fields by lower-case name (a repeated name keeps its last value)."""
    out: dict[bytes, bytes] = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out
