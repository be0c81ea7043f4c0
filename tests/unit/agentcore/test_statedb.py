"""The state database's group commit and background checkpoints."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path

from agentcore.journal import SCHEMA, TaskJournal
from agentcore.statedb import StateDB


def _visible(path: Path, task_uuid: str) -> bool:
    """Whether another connection (another process, after a crash) sees the task."""
    with sqlite3.connect(path) as c:
        return c.execute("SELECT 1 FROM tasks WHERE task_uuid=?", (task_uuid,)).fetchone() is not None


def test_concurrent_submissions_are_all_journaled_and_durable_when_acknowledged(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db", SCHEMA)
    journal = TaskJournal(db)
    unseen: list[str] = []
    start = threading.Barrier(32)

    def submit(i: int) -> None:
        start.wait()
        for k in range(20):
            tid = f"t-{i}-{k}"
            assert journal.begin(tid, "/x", None) is None
            if not _visible(tmp_path / "s.db", tid):  # acknowledged, so committed
                unseen.append(tid)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert unseen == []
    assert journal.count_by_state() == {"queued": 32 * 20}
    db.close()


def test_no_write_is_acknowledged_before_its_batch_commits(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db", SCHEMA)
    journal = TaskJournal(db)
    inside, release = threading.Event(), threading.Event()

    def slow(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO tasks(task_uuid, path, state, created, updated) VALUES ('lead', '/x', 'queued', 0, 0)")
        inside.set()
        release.wait(10)

    leader = threading.Thread(target=lambda: db.write(slow).result())
    leader.start()
    assert inside.wait(10)
    # queued behind the open transaction: the leader commits them in its next batch
    followers: list[Future[None]] = [journal.set_state("lead", "running")]
    followers += [db.write(lambda c, i=i: c.execute(  # type: ignore[misc]
        "INSERT INTO tasks(task_uuid, path, state, created, updated) VALUES (?, '/x', 'queued', 0, 0)",
        (f"f-{i}",))) for i in range(10)]
    # a crash now loses the open transaction and the queued writes, none of which was acknowledged
    assert not any(f.done() for f in followers)
    assert not _visible(tmp_path / "s.db", "lead") and not _visible(tmp_path / "s.db", "f-0")
    release.set()
    leader.join(10)
    for f in followers:
        f.result(10)
    assert all(_visible(tmp_path / "s.db", f"f-{i}") for i in range(10))
    db.close()


def test_checkpoints_copy_the_wal_into_the_database_file(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.db", SCHEMA)
    journal = TaskJournal(db)
    for i in range(50):
        journal.begin(f"t-{i}", "/x", None)
    busy, frames, copied = db.checkpoint()
    assert busy == 0 and frames > 0 and copied == frames
    # the database file alone (no WAL beside it) now holds every committed task
    shutil.copy(tmp_path / "s.db", tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "copy.db") as c:
        assert c.execute("SELECT count(*) FROM tasks").fetchone() == (50,)
    db.close()
    assert not (tmp_path / "s.db-wal").exists()  # closed cleanly: everything is in the file
