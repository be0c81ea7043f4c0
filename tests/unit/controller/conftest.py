"""The controller test suite's database: SQLite, and PostgreSQL when marked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.controller.harness import Cloud


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(f"sqlite:///{tmp_path}/controller.db", poll_after=2.0)
    yield c
    c.close()
