"""The controller suite runs twice: on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path,
           component_env: Callable[[str], dict[str, str]]) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/controller.db"
        return
    url, drop = _pg_database(component_env)
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
