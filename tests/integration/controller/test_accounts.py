"""Accounts, roles and the audit log on every database the controller runs on, and the
migration that makes their tables (0008), up and down."""

from __future__ import annotations

import datetime

from alembic import command
from sqlalchemy import inspect, text

from controller.db.base import Database
from controller.db.migrate import alembic_config, upgrade
from tests.unit.controller.harness import Cloud

TABLES = {"accounts", "account_tokens", "audit_events"}


def test_migration_0008_makes_the_account_and_audit_tables_and_takes_them_back(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db, "0007")
        now = datetime.datetime(2026, 1, 1)
        with db.engine.begin() as c:
            c.execute(text("INSERT INTO zones (uuid, name, state, create_date, last_op_date) "
                           "VALUES ('z', 'z', 'Enabled', :d, :d)"), {"d": now})
        assert not TABLES & set(inspect(db.engine).get_table_names())
        upgrade(db)
        assert TABLES <= set(inspect(db.engine).get_table_names())
        with db.engine.begin() as c:
            assert c.execute(text("SELECT name FROM zones")).scalars().all() == ["z"]
            c.execute(text("INSERT INTO accounts (uuid, name, role, create_date) "
                           "VALUES ('a', 'ops', 'admin', :d)"), {"d": now})
            c.execute(text("INSERT INTO account_tokens (token_hash, account_uuid, create_date) "
                           "VALUES (:h, 'a', :d)"), {"h": "ab" * 32, "d": now})
        cfg = alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        upgrade(db)  # and up again: nothing was left behind
        assert TABLES <= set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()


def test_roles_accounts_and_audit_rows(cloud: Cloud) -> None:
    status, viewer = cloud.call("POST", "/v1/accounts", {"name": "viewer", "role": "readonly"})
    assert status == 201, viewer
    assert cloud.call("POST", "/v1/accounts", {"name": "viewer"})[0] == 409  # unique on each DB
    assert cloud.call("POST", "/v1/accounts", {"name": "Viewer"})[0] == 201  # case-sensitive
    zone = cloud.ok("POST", "/v1/zones", {"name": "z"})["uuid"]
    assert cloud.call("GET", "/v1/zones", token=viewer["token"])[0] == 200
    assert cloud.call("POST", "/v1/zones", {"name": "y"}, token=viewer["token"])[0] == 403
    assert cloud.call("DELETE", f"/v1/accounts/{viewer['uuid']}")[0] == 204
    assert cloud.call("GET", "/v1/zones", token=viewer["token"])[0] == 401

    events = cloud.ok("GET", "/v1/audit-events", sort="createDate")["items"]
    assert [(e["accountName"], e["method"], e["path"], e["status"]) for e in events] == [
        (events[0]["accountName"], "POST", "/v1/accounts", 201),
        (events[0]["accountName"], "POST", "/v1/accounts", 409),
        (events[0]["accountName"], "POST", "/v1/accounts", 201),
        (events[0]["accountName"], "POST", "/v1/zones", 201),
        ("viewer", "POST", "/v1/zones", 403),
        (events[0]["accountName"], "DELETE", f"/v1/accounts/{viewer['uuid']}", 204),
    ]
    assert events[3]["resourceUuid"] == zone and events[0]["resourceUuid"] == viewer["uuid"]
    assert cloud.ok("GET", "/v1/audit-events", q=f"resourceUuid={zone}", count="1")["total"] == 1
