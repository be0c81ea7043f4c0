"""Scheduled backups of the controller's database: one every ``db_backup_interval``.

The schedule lives in the backup directory itself: the next backup is due one
interval after the newest manifest's time, so a restarted controller neither
runs a backup twice (one was taken a minute ago: it waits) nor misses one (it
was down past the due time: it takes one at start, once). Beyond
``db_backup_keep`` backups the oldest are removed, each with its manifest.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from sqlalchemy.engine import make_url

from controller.background import Background
from controller.db.backup import SUFFIX, DbBackupError, Manifest, backup, kind_of, manifest_path, read_manifest

log = logging.getLogger(__name__)
PREFIX = "kvmcloud-db-"
RETRY_AFTER = 300.0


class DbBackupSchedule(Background):
    """Takes the database's backups into ``directory`` on time, keeping the newest ``keep``."""

    thread_name = "db-backup"

    def __init__(self, db_url: str, directory: Path, interval: float, keep: int) -> None:
        super().__init__()
        self.db_url = db_url
        self.directory = directory
        self.interval = interval
        self.keep = keep
        self.suffix = SUFFIX[kind_of(make_url(db_url))]

    def backups(self) -> list[tuple[Manifest, Path]]:
        """This schedule's backups with a readable manifest, oldest first."""
        found = []
        for path in self.directory.glob(f"{PREFIX}*{self.suffix}"):
            try:
                found.append((read_manifest(path), path))
            except DbBackupError:
                log.warning("ignoring %s: no readable manifest", path)
        return sorted(found, key=lambda mp: mp[0].created)

    def due_in(self, now: dt.datetime | None = None) -> float:
        """Seconds until the next backup is due (0: now)."""
        found = self.backups()
        if not found:
            return 0.0
        now = now or dt.datetime.now(dt.UTC)
        return max(0.0, (found[-1][0].created - now).total_seconds() + self.interval)

    def run_once(self) -> Path:
        """Take a backup now and prune beyond the retention; returns the new file."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        dest = self.directory / f"{PREFIX}{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}{self.suffix}"
        manifest = backup(self.db_url, dest)
        log.info("database backup %s (%d bytes, revision %s)", dest, manifest.size, manifest.revision)
        self.prune()
        return dest

    def prune(self) -> list[Path]:
        """Remove the oldest backups beyond ``keep``; returns what was removed."""
        found = self.backups()
        gone = [path for _, path in found[: max(0, len(found) - self.keep)]]
        for path in gone:
            path.unlink(missing_ok=True)
            manifest_path(path).unlink(missing_ok=True)
        return gone

    def _loop(self) -> None:
        wait = self.due_in()
        while not self._stop.wait(wait):
            try:
                self.run_once()
                wait = self.due_in()
            except (DbBackupError, OSError) as e:
                log.error("database backup failed (next try in %.0fs): %s", RETRY_AFTER, e)
                wait = min(self.interval, RETRY_AFTER)
