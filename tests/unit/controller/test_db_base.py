"""Which database errors make a write transaction run again, and that it does."""

from __future__ import annotations

import sqlite3

import psycopg
import pymysql
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from controller.db.base import Database, is_transient


@pytest.mark.parametrize(("orig", "transient"), [
    (psycopg.errors.DeadlockDetected("deadlock detected"), True),
    (psycopg.errors.SerializationFailure("could not serialize access"), True),
    (psycopg.errors.UniqueViolation("duplicate key"), False),
    (pymysql.err.OperationalError(1213, "Deadlock found"), True),
    (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), True),
    (pymysql.err.OperationalError(2013, "Lost connection"), False),
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("no such table: vms"), False),
])
def test_transient_errors(orig: Exception, transient: bool) -> None:
    assert is_transient(OperationalError("UPDATE hosts", {}, orig)) is transient


def test_a_transient_error_runs_the_body_again_and_others_do_not() -> None:
    db = Database("sqlite://")
    runs: list[str] = []

    def busy_once(s: Session) -> str:
        runs.append("busy")
        if len(runs) == 1:
            raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
        return "done"

    def duplicate(s: Session) -> None:
        runs.append("duplicate")
        raise IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))

    try:
        assert db.transaction(busy_once) == "done"
        with pytest.raises(IntegrityError):
            db.transaction(duplicate)
        assert runs == ["busy", "busy", "duplicate"]
    finally:
        db.dispose()
