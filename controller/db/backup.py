"""The controller's own database, backed up and restored (``kvmcloud db backup|restore``).

SQLite is copied with its online backup API: a consistent copy while the
controller writes. PostgreSQL goes through ``pg_dump`` (custom format, one
snapshot) and ``pg_restore --clean``; MariaDB/MySQL through ``mariadb-dump
--single-transaction`` and the ``mariadb`` client. Passwords reach those tools
through the environment (PostgreSQL) or a 0600 option file (MariaDB), never
their argv, which ``ps`` shows.

Each backup ``F`` has a manifest ``F.json`` beside it: the database kind, the
schema revision, the size and SHA-256 of ``F`` and when it was taken. A restore
checks the kind and the hash before it touches the database, and needs the
controller stopped (it replaces every table).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

Kind = Literal["sqlite", "postgresql", "mysql"]
SUFFIX: dict[str, str] = {"sqlite": ".sqlite3", "postgresql": ".pgdump", "mysql": ".sql"}
TOOL_TIMEOUT = 3600.0


class DbBackupError(Exception):
    """A backup or restore that could not be done; the message says why."""


class Manifest(BaseModel):
    """What a backup file holds, written beside it as ``<file>.json``."""

    kind: Kind
    revision: str | None
    created: dt.datetime
    size: int
    sha256: str
    file: str


def kind_of(url: URL) -> Kind:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return "sqlite"
    if backend == "postgresql":
        return "postgresql"
    if backend in ("mysql", "mariadb"):
        return "mysql"
    raise DbBackupError(f"cannot back up a {backend} database (sqlite, postgresql or mysql/mariadb)")


def backup(db_url: str, dest: Path) -> Manifest:
    """Back the database at ``db_url`` up into ``dest`` (made whole or not at all), and its manifest."""
    url = make_url(db_url)
    kind = kind_of(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    try:
        if kind == "sqlite":
            _sqlite_copy(_sqlite_path(url), partial)
        elif kind == "postgresql":
            _run(["pg_dump", "--format=custom", "--no-owner", f"--file={partial}"], _pg_env(url))
        else:
            with _mysql_options(url) as options:
                _run([_tool("mariadb-dump", "mysqldump"), f"--defaults-extra-file={options}",
                      "--single-transaction", "--add-drop-table", "--skip-lock-tables",
                      f"--result-file={partial}", _database(url)], None)
        os.chmod(partial, 0o600)  # the controller's secrets (agent tokens) are in it
        partial.rename(dest)
    finally:
        partial.unlink(missing_ok=True)
    manifest = Manifest(kind=kind, revision=revision(db_url), created=dt.datetime.now(dt.UTC),
                        size=dest.stat().st_size, sha256=_sha256(dest), file=dest.name)
    manifest_path(dest).write_text(manifest.model_dump_json(indent=2) + "\n")
    os.chmod(manifest_path(dest), 0o600)
    return manifest


def restore(db_url: str, src: Path) -> Manifest:
    """Replace the database at ``db_url`` with the backup ``src`` (checked against its manifest)."""
    manifest = read_manifest(src)
    url = make_url(db_url)
    kind = kind_of(url)
    if manifest.kind != kind:
        raise DbBackupError(f"{src} is a {manifest.kind} backup; this {kind} database needs a {kind} one")
    if src.stat().st_size != manifest.size or _sha256(src) != manifest.sha256:
        raise DbBackupError(f"{src} does not match its manifest (size or SHA-256 differ): not restored")
    if kind == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(src, target)
    elif kind == "postgresql":
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
              f"--dbname={_database(url)}", str(src)], _pg_env(url))
    else:
        with _mysql_options(url) as options, src.open("rb") as dump:
            _run([_tool("mariadb", "mysql"), f"--defaults-extra-file={options}", _database(url)], None,
                 stdin=dump)
    return manifest


def manifest_path(backup_file: Path) -> Path:
    return backup_file.with_name(backup_file.name + ".json")


def read_manifest(backup_file: Path) -> Manifest:
    path = manifest_path(backup_file)
    try:
        return Manifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise DbBackupError(f"{backup_file} has no manifest {path.name} beside it: "
                            "not a kvmcloud backup") from None
    except ValueError as e:
        raise DbBackupError(f"{path} is not a backup manifest: {e}") from None


def revision(db_url: str) -> str | None:
    """The schema revision (Alembic's) the database is at, None before any migration."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise DbBackupError("an in-memory SQLite database has nothing to back up")
    return Path(url.database)


def _sqlite_copy(src: Path, dest: Path) -> None:
    if not src.exists():
        raise DbBackupError(f"no SQLite database at {src}")
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)  # page by page, consistent even while others write
    finally:
        target.close()
        source.close()


def _database(url: URL) -> str:
    if not url.database:
        raise DbBackupError("the database URL names no database")
    return url.database


def _pg_env(url: URL) -> dict[str, str]:
    env = {**os.environ, "PGDATABASE": _database(url)}
    for var, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username),
                       ("PGPASSWORD", url.password)):
        if value is not None:
            env[var] = str(value)
    return env


@contextmanager
def _mysql_options(url: URL) -> Iterator[Path]:
    """A 0600 option file with the connection (the password never in argv), removed after."""
    lines = ["[client]"]
    for key, value in (("host", url.host), ("port", url.port), ("user", url.username),
                       ("password", url.password)):
        if value is not None:
            lines.append(f"{key}={value}")
    charset = url.query.get("charset")
    if isinstance(charset, str):
        lines.append(f"default-character-set={charset}")
    with tempfile.TemporaryDirectory(prefix="kvmcloud-db-") as tmp:
        path = Path(tmp) / "client.cnf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        yield path


def _tool(*names: str) -> str:
    for name in names:
        if shutil.which(name):
            return name
    raise DbBackupError(f"{' or '.join(names)} is not installed (apt-get install mariadb-client)")


def _run(argv: list[str], env: dict[str, str] | None, stdin: IO[bytes] | None = None) -> None:
    if not shutil.which(argv[0]):
        raise DbBackupError(f"{argv[0]} is not installed")
    try:
        proc = subprocess.run(argv, env=env, stdin=stdin, capture_output=True,
                              timeout=TOOL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise DbBackupError(f"{argv[0]} ran longer than {TOOL_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise DbBackupError(f"{argv[0]} failed ({proc.returncode}): {err}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
