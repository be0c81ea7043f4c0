"""MySQL/MariaDB: DATETIME columns with microseconds

A bare DATETIME keeps whole seconds on MySQL and MariaDB (rows made in one
second lose their creation order, and a job's dates differ from what the
controller answered while it ran). Tables are now made with DATETIME(6) (see
controller.db.base); this widens the columns of a database made before. Other
databases, and a database made with DATETIME(6): nothing to do.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 11:40:00
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name not in ("mysql", "mariadb"):
        return
    widen: dict[str, list[str]] = {}
    for table, column, nullable in bind.execute(text(
            "SELECT TABLE_NAME, COLUMN_NAME, IS_NULLABLE FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = :db AND DATA_TYPE = 'datetime' AND DATETIME_PRECISION < 6"),
            {"db": bind.execute(text("SELECT DATABASE()")).scalar_one()}):
        null = "NULL" if nullable == "YES" else "NOT NULL"
        widen.setdefault(table, []).append(f"MODIFY `{column}` DATETIME(6) {null}")
    for table, changes in sorted(widen.items()):
        op.execute(f"ALTER TABLE `{table}` {', '.join(changes)}")


def downgrade() -> None:
    """Nothing: whole seconds would only lose what upgrade kept."""
