"""SQLite backups of the controller's database (online, with a manifest), their restore, the
schedule that survives a restart (no doubled run, no missed one), and ``kvmcloud db``."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.db.backup import DbBackupError, backup, read_manifest, restore
from controller.db.base import Database
from controller.db_schedule import DbBackupSchedule


def _db(path: Path) -> str:
    url = f"sqlite:///{path}"
    db = Database(url)
    db.create_all()
    db.dispose()
    return url


def _zones(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM zones ORDER BY name")]


def _add_zone(path: Path, name: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO zones (uuid, name, state, create_date, last_op_date) VALUES (?, ?, ?, ?, ?)",
                     (uuid.uuid4().hex, name, "Enabled", "2026-01-01 00:00:00", "2026-01-01 00:00:00"))


def test_online_backup_while_another_connection_writes(tmp_path: Path) -> None:
    path = tmp_path / "kvmcloud.db"
    url = _db(path)
    _add_zone(path, "z-first")
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            _add_zone(path, f"w{i}")
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        m = backup(url, tmp_path / "b" / "one.sqlite3")
    finally:
        stop.set()
        writer.join()
    copy = tmp_path / "b" / "one.sqlite3"
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "z-first" in _zones(copy)
    assert m.kind == "sqlite" and m.revision and m.file == "one.sqlite3"
    assert json.loads((tmp_path / "b" / "one.sqlite3.json").read_text())["sha256"] == m.sha256
    assert not list((tmp_path / "b").glob("*.partial"))


def test_restore_brings_back_the_backup_and_refuses_what_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / "kvmcloud.db"
    url = _db(path)
    _add_zone(path, "z1")
    dest = tmp_path / "b.sqlite3"
    backup(url, dest)
    _add_zone(path, "z2")
    restore(url, dest)
    assert _zones(path) == ["z1"]

    # into a database file that is gone (the disk was wiped): made again
    path.unlink()
    restore(url, dest)
    assert _zones(path) == ["z1"]

    with pytest.raises(DbBackupError, match="is a sqlite backup; this postgresql database"):
        restore("postgresql+psycopg://u@127.0.0.1/kvmcloud", dest)
    dest.write_bytes(dest.read_bytes() + b"x")
    with pytest.raises(DbBackupError, match="does not match its manifest"):
        restore(url, dest)
    (tmp_path / "b.sqlite3.json").unlink()
    with pytest.raises(DbBackupError, match="no manifest"):
        restore(url, dest)
    with pytest.raises(DbBackupError, match="cannot back up a oracle"):
        backup("oracle://u@h/db", tmp_path / "x")


def test_schedule_takes_one_per_interval_across_restarts_and_keeps_the_newest(tmp_path: Path) -> None:
    url = _db(tmp_path / "kvmcloud.db")
    where = tmp_path / "backups"
    first = DbBackupSchedule(url, where, interval=3600, keep=3)
    assert first.due_in() == 0.0  # none yet: due now
    made = first.run_once()
    assert 3590 < first.due_in() <= 3600

    # a restarted controller: the newest backup is a minute old, so none is taken now
    again = DbBackupSchedule(url, where, interval=3600, keep=3)
    later = read_manifest(made).created + dt.timedelta(minutes=1)
    assert again.due_in(now=later) == pytest.approx(3540, abs=1)
    # down for two intervals: one backup is due at once (not two)
    assert again.due_in(now=later + dt.timedelta(hours=2)) == 0.0

    for _ in range(4):
        again.run_once()
    kept = again.backups()
    assert len(kept) == 3 and made not in [p for _, p in kept]
    assert not (where / (made.name + ".json")).exists()
    assert sorted(p.name for p in where.iterdir()) == sorted(
        [p.name for _, p in kept] + [p.name + ".json" for _, p in kept])


def test_schedule_thread_takes_the_first_backup_at_start(tmp_path: Path) -> None:
    url = _db(tmp_path / "kvmcloud.db")
    schedule = DbBackupSchedule(url, tmp_path / "backups", interval=3600, keep=2)
    schedule.start()
    try:
        for _ in range(100):
            if schedule.backups():
                break
            threading.Event().wait(0.05)
    finally:
        schedule.stop()
    assert len(schedule.backups()) == 1


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    path = tmp_path / "kvmcloud.db"
    url = _db(path)
    _add_zone(path, "z1")
    runner = CliRunner()
    out = runner.invoke(cli, ["db", "backup", "--db", url, str(tmp_path / "x.sqlite3")])
    assert out.exit_code == 0, out.output
    assert "sqlite backup" in out.output
    _add_zone(path, "z2")
    out = runner.invoke(cli, ["db", "restore", "--db", url, str(tmp_path / "x.sqlite3")], input="n\n")
    assert out.exit_code == 1 and _zones(path) == ["z1", "z2"]  # declined: nothing changed
    out = runner.invoke(cli, ["db", "restore", "--db", url, "--yes", str(tmp_path / "x.sqlite3")])
    assert out.exit_code == 0, out.output
    assert _zones(path) == ["z1"]
    (tmp_path / "bad").write_bytes(b"x")
    out = runner.invoke(cli, ["db", "restore", "--db", url, "--yes", str(tmp_path / "bad")])
    assert out.exit_code == 1 and "no manifest" in out.output
