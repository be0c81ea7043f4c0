"""The outbox's lean POST client against scripted servers (threads, no processes)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from agentcore.httppost import PostConnection, ProtocolError

Script = Callable[[socket.socket], None]


def _read_request(conn: socket.socket) -> bytes:
    """One request (head and Content-Length body) from the client."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def server() -> Iterator[Callable[[list[Script]], tuple[int, list[bytes]]]]:
    """A server that answers each accepted connection with the next script."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def start(scripts: list[Script]) -> tuple[int, list[bytes]]:
        requests: list[bytes] = []

        def serve() -> None:
            for script in scripts:
                conn, _ = listener.accept()
                with conn:
                    original = conn.recv

                    def recording_recv(n: int, original: Callable[[int], bytes] = original) -> bytes:
                        chunk = original(n)
                        requests.append(chunk)
                        return chunk

                    script(_Recorder(conn, recording_recv))  # type: ignore[arg-type]

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return listener.getsockname()[1], requests

    yield start
    listener.close()
    for t in threads:
        t.join(5)


class _Recorder:
    def __init__(self, conn: socket.socket, recv: Callable[[int], bytes]) -> None:
        self._conn = conn
        self.recv = recv

    def sendall(self, data: bytes) -> None:
        self._conn.sendall(data)


def _answers(*answers: bytes) -> Script:
    def script(conn: socket.socket) -> None:
        for answer in answers:
            _read_request(conn)
            conn.sendall(answer)
    return script


def test_keep_alive_posts_read_length_and_chunked_bodies(server: Callable[..., tuple[int, list[bytes]]]) -> None:
    port, requests = server([_answers(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n",
    )])
    conn = PostConnection("http", "127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/json", "taskuuid": "t-1"}
    assert [conn.post("/cb?x=1", headers, b'{"a": 1}') for _ in range(4)] == [200, 202, 204, 503]
    conn.close()
    sent = b"".join(requests)
    assert sent.count(b"POST /cb?x=1 HTTP/1.1\r\n") == 4  # one connection carried all four
    assert b"taskuuid: t-1\r\n" in sent and b"Content-Length: 8\r\n" in sent
    assert sent.endswith(b'{"a": 1}')


def test_connection_close_and_read_to_end(server: Callable[..., tuple[int, list[bytes]]]) -> None:
    def until_close(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nbody without a length")

    port, requests = server([
        _answers(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
        until_close,
        _answers(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ])
    conn = PostConnection("http", "127.0.0.1", port, timeout=5)
    assert conn.post("/", {}, b"{}") == 200
    assert conn.post("/", {}, b"{}") == 200  # a new connection: the first was closed
    assert conn.post("/", {}, b"{}") == 200  # and again: the second ended with its body
    conn.close()


def test_a_closed_keep_alive_connection_is_an_oserror(server: Callable[..., tuple[int, list[bytes]]]) -> None:
    port, _ = server([_answers(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")])
    conn = PostConnection("http", "127.0.0.1", port, timeout=5)
    assert conn.post("/", {}, b"{}") == 200
    with pytest.raises(OSError):  # the server closed it after one answer; no new accept follows
        conn.post("/", {}, b"{}")


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_unreadable_answers_are_protocol_errors(server: Callable[..., tuple[int, list[bytes]]],
                                                 answer: bytes) -> None:
    port, _ = server([_answers(answer)])
    conn = PostConnection("http", "127.0.0.1", port, timeout=5)
    with pytest.raises(ProtocolError):
        conn.post("/", {}, b"{}")


def test_control_characters_are_refused_before_sending() -> None:
    conn = PostConnection("http", "127.0.0.1", 9, timeout=5)
    with pytest.raises(ValueError):
        conn.post("/", {"taskuuid": "t\r\nX-Injected: 1"}, b"{}")
    with pytest.raises(ValueError):
        conn.post("/a b\n", {}, b"{}")


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("ctl.example", None, "ctl.example"),
    ("ctl.example", 8080, "ctl.example:8080"),
    ("::1", None, "[::1]"),
    ("::1", 8080, "[::1]:8080"),
])
def test_host_header(host: str, port: int | None, expected: str) -> None:
    assert PostConnection("http", host, port, timeout=1)._host_header == expected
