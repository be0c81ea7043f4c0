"""The task journal: a small SQLite file under the agent's state directory.

It is a cache of replies, not a source of truth: it lets a duplicate
``taskuuid`` get its stored reply, lets ``GET /tasks/<id>`` answer after the
callback was lost, and lets a restarted agent report the tasks it was running
as ``interrupted``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from agentcore.statedb import StateDB

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


class TaskJournal:
    """Durable record of every task the agent accepted (table ``tasks`` of the state DB)."""

    def __init__(self, db: StateDB) -> None:
        self._db = db

    def begin(self, task_uuid: str, path: str, callback_url: str | None) -> TaskRecord | None:
        """Record a new task as queued; return the existing record if there is one."""
        now = time.time()

        def op(c: sqlite3.Connection) -> TaskRecord | None:
            cur = c.execute(
                "INSERT OR IGNORE INTO tasks(task_uuid, path, state, callback_url, created, updated)"
                " VALUES (?, ?, 'queued', ?, ?, ?)",
                (task_uuid, path, callback_url, now, now),
            )
            return None if cur.rowcount == 1 else _get(c, task_uuid)

        return self._db.write(op).result()

    def set_state(self, task_uuid: str, state: str) -> Future[None]:
        return self._db.write(lambda c: _exec(
            c, "UPDATE tasks SET state=?, updated=? WHERE task_uuid=?", (state, time.time(), task_uuid)))

    def set_progress(self, task_uuid: str, progress: dict[str, Any]) -> Future[None]:
        return self._db.write(lambda c: _exec(
            c, "UPDATE tasks SET progress=?, updated=? WHERE task_uuid=?",
            (json.dumps(progress), time.time(), task_uuid)))

    def finish_op(self, task_uuid: str, state: str, reply: dict[str, Any]) -> Callable[[sqlite3.Connection], None]:
        """The write that records a task's end (to combine with others in one transaction)."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        data = json.dumps(reply)
        return lambda c: _exec(
            c, "UPDATE tasks SET state=?, reply=?, updated=? WHERE task_uuid=?",
            (state, data, time.time(), task_uuid))

    def finish(self, task_uuid: str, state: str, reply: dict[str, Any]) -> Future[None]:
        return self._db.write(self.finish_op(task_uuid, state, reply))

    def get(self, task_uuid: str) -> TaskRecord | None:
        return self._db.read(lambda c: _get(c, task_uuid))

    def interrupt_unfinished(self, reply_for: dict[str, Any]) -> list[TaskRecord]:
        """Mark tasks left queued or running by a dead agent as interrupted."""
        def op(c: sqlite3.Connection) -> list[TaskRecord]:
            rows = c.execute("SELECT task_uuid FROM tasks WHERE state IN ('queued', 'running')").fetchall()
            c.execute(
                "UPDATE tasks SET state='interrupted', reply=?, updated=? WHERE state IN ('queued', 'running')",
                (json.dumps(reply_for), time.time()),
            )
            return [r for r in (_get(c, row[0]) for row in rows) if r is not None]

        return self._db.write(op).result()

    def prune(self, older_than: float) -> int:
        """Forget finished tasks last updated before ``older_than`` (epoch seconds)."""
        return self._db.write(lambda c: c.execute(
            "DELETE FROM tasks WHERE state IN ('succeeded','failed','cancelled','interrupted') AND updated < ?",
            (older_than,)).rowcount).result()

    def count_by_state(self) -> dict[str, int]:
        return self._db.read(lambda c: dict(c.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall()))


def _exec(c: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    c.execute(sql, params)


def _get(c: sqlite3.Connection, task_uuid: str) -> TaskRecord | None:
    row = c.execute(
        "SELECT task_uuid, path, state, callback_url, progress, reply, created, updated FROM tasks WHERE task_uuid=?",
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
