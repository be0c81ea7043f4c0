"""The agent's state file: one SQLite database (WAL) holding the task journal
and the callback outbox, written in group commits.

Many threads submit writes. The first to arrive while no commit is under way
becomes the leader: it runs every pending write in one transaction, resolves
their futures after the commit, and repeats until nothing is pending. So an
uncontended write costs no thread hand-off, a burst of commands costs one
commit rather than one each, and a write is never reported done before it is
durable.

Checkpoints (copying the WAL back into the database file, with an fsync of
each) run in a thread of their own, not inside a commit: SQLite's automatic
checkpoint would otherwise make every thousandth page's commit wait for two
fsyncs, and with it every command waiting for its journal entry. A commit is
durable once it is in the WAL (``synchronous=NORMAL``), so moving the
checkpoint changes no guarantee.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH = 1024
CHECKPOINT_EVERY = 256
"""commits between two background checkpoints"""
CHECKPOINT_PERIOD = 1.0
"""seconds after which commits since the last checkpoint are checkpointed anyway"""


def open_db(path: Path) -> sqlite3.Connection:
    """A WAL-mode SQLite connection usable from any thread (callers serialise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class StateDB:
    """Group-committing writer plus a read connection over one SQLite file."""

    def __init__(self, path: Path, schema: str) -> None:
        self._wconn = open_db(path)
        self._wconn.executescript(schema)
        self._rconn = open_db(path)
        self._rlock = threading.Lock()
        self._pending: deque[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._leader = False
        # the writer never checkpoints inside a commit; the checkpointer thread does
        self._wconn.execute("PRAGMA wal_autocheckpoint=0")
        self._cconn = open_db(path)
        self._commits = 0
        self._checkpoint_wanted = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="statedb-checkpoint", daemon=True)
        self._checkpointer.start()

    def write(self, op: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run ``op`` inside the next group transaction; the future resolves after commit."""
        fut: Future[T] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("state database is closed")
            self._pending.append((op, fut))
            if self._leader:
                return fut  # the current leader commits it before stepping down
            self._leader = True
        self._lead()
        return fut

    def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the committed state."""
        with self._rlock:
            return op(self._rconn)

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy committed WAL frames into the database file without blocking writers.

        Returns SQLite's (busy, frames in the WAL, frames checkpointed).
        """
        row = self._cconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        with self._cv:
            self._closed = True
            while self._leader:
                self._cv.wait(0.1)
        self._checkpoint_wanted.set()
        self._checkpointer.join(30)
        with self._rlock:
            self._rconn.close()
        self._cconn.close()
        self._wconn.close()  # the last connection: SQLite checkpoints and removes the WAL

    def _checkpoint_loop(self) -> None:
        while not self._closed:
            self._checkpoint_wanted.wait(CHECKPOINT_PERIOD)
            self._checkpoint_wanted.clear()
            with self._cv:
                commits, self._commits = self._commits, 0
            if commits and not self._closed:
                try:
                    self.checkpoint()
                except sqlite3.Error:
                    log.exception("state database checkpoint failed")

    def _lead(self) -> None:
        while True:
            with self._cv:
                if not self._pending:
                    self._leader = False
                    self._cv.notify_all()
                    return
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]
            self._commit(batch)
            with self._cv:
                self._commits += 1
                if self._commits >= CHECKPOINT_EVERY:
                    self._checkpoint_wanted.set()

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]) -> None:
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            self._wconn.execute("BEGIN IMMEDIATE")
            for op, fut in batch:
                try:
                    results.append((fut, op(self._wconn), None))
                except Exception as e:  # one bad write must not sink the batch
                    results.append((fut, None, e))
            self._wconn.execute("COMMIT")
        except sqlite3.Error as e:
            log.exception("state database commit failed")
            if self._wconn.in_transaction:
                self._wconn.execute("ROLLBACK")
            for _, fut in batch:
                fut.set_exception(e)
            return
        for fut, value, err in results:
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(value)
