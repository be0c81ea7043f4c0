"""The task journal: a small SQLite file under the agent's state directory.

It is a cache of replies, not a source of truth: it lets a duplicate
``taskuuid`` get its stored reply, lets ``GET /tasks/<id>`` answer after the
callback was lost, and lets a restarted agent report the tasks it was running
as ``interrupted``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_uuid    TEXT PRIMARY KEY,
    path         TEXT NOT NULL,
    state        TEXT NOT NULL,
    callback_url TEXT,
    progress     TEXT,
    reply        TEXT,
    created      REAL NOT NULL,
    updated      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE INDEX IF NOT EXISTS tasks_updated ON tasks(updated);
"""

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class TaskRecord:
    task_uuid: str
    path: str
    state: str
    callback_url: str | None
    progress: dict[str, Any] | None
    reply: dict[str, Any] | None
    created: float
    updated: float

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


def open_db(path: Path) -> sqlite3.Connection:
    """A WAL-mode SQLite connection shared by the agent's threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class TaskJournal:
    """Durable record of every task the agent accepted."""

    def __init__(self, path: Path) -> None:
        self._db = open_db(path)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def begin(self, task_uuid: str, path: str, callback_url: str | None) -> TaskRecord | None:
        """Record a new task as queued; return the existing record if there is one."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO tasks(task_uuid, path, state, callback_url, created, updated)"
                " VALUES (?, ?, 'queued', ?, ?, ?)",
                (task_uuid, path, callback_url, now, now),
            )
            if cur.rowcount == 1:
                return None
            return self._get(task_uuid)

    def set_state(self, task_uuid: str, state: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET state=?, updated=? WHERE task_uuid=?", (state, time.time(), task_uuid)
            )

    def set_progress(self, task_uuid: str, progress: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET progress=?, updated=? WHERE task_uuid=?",
                (json.dumps(progress), time.time(), task_uuid),
            )

    def finish(self, task_uuid: str, state: str, reply: dict[str, Any]) -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET state=?, reply=?, updated=? WHERE task_uuid=?",
                (state, json.dumps(reply), time.time(), task_uuid),
            )

    def get(self, task_uuid: str) -> TaskRecord | None:
        with self._lock:
            return self._get(task_uuid)

    def _get(self, task_uuid: str) -> TaskRecord | None:
        row = self._db.execute(
            "SELECT task_uuid, path, state, callback_url, progress, reply, created, updated"
            " FROM tasks WHERE task_uuid=?",
            (task_uuid,),
        ).fetchone()
        if row is None:
            return None
        return TaskRecord(
            row[0], row[1], row[2], row[3],
            json.loads(row[4]) if row[4] else None,
            json.loads(row[5]) if row[5] else None,
            row[6], row[7],
        )

    def interrupt_unfinished(self, reply_for: dict[str, Any]) -> list[TaskRecord]:
        """Mark tasks left queued or running by a dead agent as interrupted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT task_uuid FROM tasks WHERE state IN ('queued', 'running')"
            ).fetchall()
            now = time.time()
            self._db.execute(
                "UPDATE tasks SET state='interrupted', reply=?, updated=?"
                " WHERE state IN ('queued', 'running')",
                (json.dumps(reply_for), now),
            )
            records = [self._get(r[0]) for r in rows]
        return [r for r in records if r is not None]

    def prune(self, older_than: float) -> int:
        """Forget finished tasks last updated before ``older_than`` (epoch seconds)."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM tasks WHERE state IN ('succeeded','failed','cancelled','interrupted')"
                " AND updated < ?",
                (older_than,),
            )
            return cur.rowcount

    def count_by_state(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())
