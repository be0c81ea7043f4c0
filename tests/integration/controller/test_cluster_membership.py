"""Takeover on a real PostgreSQL or MariaDB server: while one node holds a lost peer's
row locked (its takeover in flight), another's sweep skips it instead of waiting or
taking it twice (``SELECT ... FOR UPDATE SKIP LOCKED``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from controller.cluster.membership import Membership, Takeover
from controller.db.base import Database, utcnow
from controller.db.cluster import ControllerNode
from tests.integration.controller.conftest import _pg_database, mariadb_database


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db(request: pytest.FixtureRequest, component_env: Callable[[str], dict[str, str]]) -> Iterator[Database]:
    make = _pg_database if request.param == "postgres" else mariadb_database
    url, drop = make(component_env)
    d = Database(url)
    d.create_all()
    yield d
    d.dispose()
    drop()


def test_a_takeover_in_flight_is_skipped_by_the_other_sweepers(db: Database) -> None:
    a, b, c = (Membership(db, n, f"http://{n}") for n in ("a", "b", "c"))
    for m in (a, b, c):
        m.join()
    db.transaction(lambda s: s.execute(update(ControllerNode).where(ControllerNode.node_id == "c")
                                       .values(lease_expiry=utcnow() - timedelta(seconds=1))))
    with db.write() as s:  # a's takeover, holding c's row
        s.execute(select(ControllerNode).where(ControllerNode.node_id == "c").with_for_update())
        assert b.sweep() == Takeover()  # skipped at once, not waited for
    assert b.sweep().nodes == ["c"]  # released: taken, once
    assert a.sweep() == Takeover()
