"""A migrated SQLite database per test, copied from one migrated once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.db.base import Database


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "c.db"
    d = Database(f"sqlite:///{path}")
    d.create_all()
    d.dispose()
    return path


@pytest.fixture
def db(migrated: Path, tmp_path: Path) -> Iterator[Database]:
    shutil.copy(migrated, tmp_path / "c.db")
    d = Database(f"sqlite:///{tmp_path}/c.db")
    yield d
    d.dispose()
