"""``kvmcloud db backup|restore``: the controller's own database, to a file and back."""

from __future__ import annotations

from pathlib import Path

import click

DB_OPTION = click.option("--db", "db_url", envvar="KVMCLOUD_DB", default="sqlite:///kvmcloud.db",
                         show_default=True, help="database URL, as for `kvmcloud serve`")


@click.group("db", help="the controller's database: backup, restore")
def db_group() -> None:
    pass


@db_group.command("backup")
@DB_OPTION
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def backup_cmd(db_url: str, dest: Path) -> None:
    """Back the database up into DEST (SQLite: online, while the controller runs; PostgreSQL:
    pg_dump; MariaDB: mariadb-dump), with a manifest DEST.json (kind, schema revision, SHA-256)."""
    from controller.db.backup import DbBackupError, backup  # noqa: PLC0415 - SQLAlchemy is heavy

    try:
        m = backup(db_url, dest)
    except DbBackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{dest}: {m.kind} backup, {m.size} bytes, schema revision {m.revision}, sha256 {m.sha256}")


@db_group.command("restore")
@DB_OPTION
@click.argument("src", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--yes", is_flag=True, help="do not ask (the controller must be stopped either way)")
def restore_cmd(db_url: str, src: Path, yes: bool) -> None:
    """Replace the database with the backup SRC, after checking it against SRC.json.
    Stop the controller first: every table is replaced."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from controller.db.backup import DbBackupError, restore  # noqa: PLC0415 - SQLAlchemy is heavy

    if not yes:
        click.confirm(f"replace the {make_url(db_url).drivername} database with {src}?", abort=True)
    try:
        m = restore(db_url, src)
    except DbBackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"restored {src} ({m.kind}, schema revision {m.revision}, taken {m.created:%Y-%m-%d %H:%M:%S} UTC)")
