"""Schema migrations with Alembic (scripts in ``controller/migrations``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from controller.db.base import Database


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "controller:migrations")
    return cfg


#: what tables take on MySQL/MariaDB: every character, compared as SQLite and PostgreSQL do
#: (``Web`` is not ``web``)
MYSQL_CHARSET, MYSQL_COLLATION = "utf8mb4", "utf8mb4_bin"


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the database to ``revision`` (idempotent).

    On MySQL/MariaDB the database's default character set and collation become
    utf8mb4_bin first, so the tables every migration makes take them, whatever
    the database was created with (tables made before keep theirs).
    """
    cfg = alembic_config()
    with db.engine.begin() as conn:
        if conn.dialect.name in ("mysql", "mariadb"):
            default = conn.exec_driver_sql("SELECT @@collation_database").scalar_one()
            if default != MYSQL_COLLATION:
                conn.exec_driver_sql(
                    f"ALTER DATABASE CHARACTER SET {MYSQL_CHARSET} COLLATE {MYSQL_COLLATION}")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def revision(db: Database, message: str) -> None:
    """Autogenerate a new migration from the models (a developer's tool)."""
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
