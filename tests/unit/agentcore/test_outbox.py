"""The callback outbox against an in-thread HTTP receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentcore.journal import SCHEMA as JOURNAL_SCHEMA
from agentcore.outbox import SCHEMA, CallbackOutbox
from agentcore.statedb import StateDB


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.got: list[tuple[str, str, bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.got.append((self.path, self.headers.get("taskuuid", ""), body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    srv = _Receiver()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _until(what: str, check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _rows(db: StateDB) -> int:
    return int(db.read(lambda c: c.execute("SELECT count(*) FROM outbox").fetchone()[0]))


def test_delivered_items_are_forgotten_after_the_last_delivery(tmp_path: Path, receiver: _Receiver) -> None:
    db = StateDB(tmp_path / "s.db", JOURNAL_SCHEMA + SCHEMA)
    outbox = CallbackOutbox(db, senders=2)
    outbox.start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/cb?x=1"
    for i in range(3):  # fewer than a flush batch: forgotten by the delay, not the count
        outbox.enqueue(url, {"n": i}, {"taskuuid": f"t-{i}", "kind": "reply"})
    _until("three deliveries", lambda: len(receiver.got) == 3)
    assert sorted(g[1] for g in receiver.got) == ["t-0", "t-1", "t-2"]
    assert {g[0] for g in receiver.got} == {"/cb?x=1"}
    _until("the delivered rows to be deleted", lambda: _rows(db) == 0)
    outbox.stop()
    db.close()


def test_an_undeliverable_header_is_dropped_not_retried(tmp_path: Path, receiver: _Receiver) -> None:
    db = StateDB(tmp_path / "s.db", JOURNAL_SCHEMA + SCHEMA)
    results: list[str] = []
    outbox = CallbackOutbox(db, senders=1, on_result=results.append)
    outbox.start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/cb"
    outbox.enqueue(url, {}, {"kind": "bad\r\nvalue"})
    outbox.enqueue(url, {}, {"kind": "reply"})
    _until("both items handled", lambda: sorted(results) == ["delivered", "dropped"])
    _until("both rows deleted", lambda: _rows(db) == 0)
    assert len(receiver.got) == 1
    outbox.stop()
    db.close()
