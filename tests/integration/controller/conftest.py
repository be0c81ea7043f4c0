"""The controller suite runs on SQLite and on real PostgreSQL and MariaDB servers.

Every test that takes ``db_url`` (or ``cloud``) runs on all three, except in modules marked
``sqlite_only``: those test a feature's flows, which reach the database only through the layers
that test_databases, test_contention, test_query_and_input, the migrations and the rollback
tests check on every server; they run on SQLite, which keeps the suite inside CI's time. A test
there marked ``every_database`` (a migration's, say) still runs on all three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.unit.controller.harness import Cloud, new_db_name


def _pg_database(component_env: Callable[[str], dict[str, str]]) -> tuple[str, Callable[[], None]]:
    env = component_env("postgres")
    base = env["POSTGRES_URL"]
    name = new_db_name()
    conninfo = f"host={env['POSTGRES_HOST']} port={env['POSTGRES_PORT']} user={env['POSTGRES_USER']}"
    with psycopg.connect(conninfo + " dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(conninfo + " dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return base.rsplit("/", 1)[0] + "/" + name, drop


def mariadb_database(component_env: Callable[[str], dict[str, str]],
                     charset: str = "utf8mb4 COLLATE utf8mb4_bin") -> tuple[str, Callable[[], None]]:
    """A new, empty database on the MariaDB server (its URL), and how to drop it."""
    env = component_env("mariadb")
    name = new_db_name()

    def run(sql: str) -> None:
        conn = pymysql.connect(host=env["MARIADB_HOST"], port=int(env["MARIADB_PORT"]),
                               user=env["MARIADB_USER"], password=env["MARIADB_PASSWORD"])
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    run(f"CREATE DATABASE `{name}` CHARACTER SET {charset}")
    base, _, query = env["MARIADB_URL"].partition("?")
    return base.rstrip("/") + "/" + name + "?" + query, lambda: run(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if ("db_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("sqlite_only")
            and not metafunc.definition.get_closest_marker("every_database")):
        # as a mark: the fixture manager then leaves db_url's own params aside
        metafunc.definition.add_marker(pytest.mark.parametrize("db_url", ["sqlite"], indirect=True))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path,
           component_env: Callable[[str], dict[str, str]]) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/controller.db"
        return
    make = _pg_database if request.param == "postgres" else mariadb_database
    url, drop = make(component_env)
    yield url
    drop()


@pytest.fixture
def cloud(db_url: str) -> Iterator[Cloud]:
    c = Cloud(db_url, poll_after=1.0)
    yield c
    c.close()


@pytest.fixture
def make_cloud(db_url: str) -> Iterator[Callable[..., Cloud]]:
    made: list[Cloud] = []

    def make(**settings: Any) -> Cloud:
        c = Cloud(db_url, **settings)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
