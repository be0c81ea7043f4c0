"""Migration 0013 on each database: VMs get haLevel ``none``, and lose it going back."""

from __future__ import annotations

import datetime

from alembic import command
from sqlalchemy import inspect, text

from controller.db.base import Database
from controller.db.migrate import alembic_config, upgrade


def _columns(db: Database) -> set[str]:
    return {c["name"] for c in inspect(db.engine).get_columns("vms")}


def test_migration_0013_gives_every_vm_ha_level_none_and_takes_it_back(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db, "0012")
        assert "ha_level" not in _columns(db)
        now = datetime.datetime(2026, 1, 1)
        with db.engine.begin() as c:
            c.execute(text("INSERT INTO zones (uuid, name, state, create_date, last_op_date) "
                           "VALUES ('z', 'z', 'Enabled', :d, :d)"), {"d": now})
            c.execute(text("INSERT INTO vms (uuid, name, state, create_date, last_op_date, "
                           "zone_uuid, cpu_num, memory_size, platform) VALUES "
                           "('v', 'v', 'Running', :d, :d, 'z', 1, 1024, 'Linux')"), {"d": now})
        upgrade(db)
        with db.engine.begin() as c:
            assert c.execute(text("SELECT ha_level FROM vms")).scalar() == "none"
        cfg = alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0012")
        assert "ha_level" not in _columns(db)
        with db.engine.begin() as c:
            assert c.execute(text("SELECT state FROM vms")).scalar() == "Running"
        upgrade(db)
        assert "ha_level" in _columns(db)
    finally:
        db.dispose()
