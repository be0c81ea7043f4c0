"""Membership on one database: leases, the ring of live nodes, takeover exactly once, fencing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from controller.cluster.membership import Membership, Takeover
from controller.db.base import Database, utcnow
from controller.db.cluster import ControllerNode
from controller.db.jobs import Job
from controller.jobs import JobManager
from controller.settings import Settings


def node(db: Database, name: str, **kw: object) -> Membership:
    m = Membership(db, name, f"http://{name}:8080/", **kw)  # type: ignore[arg-type]
    m.join()
    return m


def expire(db: Database, name: str) -> None:
    """The node stopped heartbeating a lease ago (as a kill -9 leaves it)."""
    db.transaction(lambda s: s.execute(update(ControllerNode).where(ControllerNode.node_id == name)
                                       .values(lease_expiry=utcnow() - timedelta(seconds=1))))


def add_job(db: Database, node_id: str, state: str, resource: str) -> str:
    jobs = JobManager(db, None, None, node_id=node_id)  # type: ignore[arg-type]
    job = db.transaction(lambda s: jobs.prepare(s, "create-vm", "vms", resource))
    db.transaction(lambda s: s.execute(update(Job).where(Job.uuid == job.uuid).values(state=state)))
    return job.uuid


def job_states(db: Database) -> dict[str, tuple[str, str | None]]:
    with db.read() as s:
        return {u: (st, (e or {}).get("code")) for u, st, e in s.execute(select(Job.uuid, Job.state, Job.error))}


def test_live_nodes_form_the_ring_and_an_expired_one_leaves_it(db: Database) -> None:
    a, b = node(db, "a"), node(db, "b")
    assert a.refresh().nodes == ("a", "b") == b.refresh().nodes
    assert a.urls["b"] == "http://b:8080"
    expire(db, "b")
    assert a.refresh().nodes == ("a",)
    assert a.owns("0" * 32) and a.owns("f" * 32)
    b.join()  # back (restarted): in the ring again
    assert a.refresh().nodes == ("a", "b")


def test_a_lost_nodes_unfinished_jobs_end_once_and_others_stay(db: Database) -> None:
    a, _b, c = node(db, "a"), node(db, "b"), node(db, "c")
    running = add_job(db, "b", "running", "vm1")
    queued = add_job(db, "b", "queued", "vm2")
    done = add_job(db, "b", "succeeded", "vm3")
    peers = add_job(db, "a", "running", "vm4")
    expire(db, "b")
    taken = a.sweep()
    assert (taken.nodes, sorted(taken.jobs), taken.resources) == (["b"], sorted([running, queued]), ["vm1", "vm2"])
    assert c.sweep() == Takeover()  # taken once: the second sweeper finds nothing
    states = job_states(db)
    assert states[running] == states[queued] == ("failed", "CONTROLLER_LOST")
    assert states[done] == ("succeeded", None)
    assert states[peers] == ("running", None)
    view = {n.node_id: n for n in a.nodes()}
    assert (view["b"].state, view["b"].live, view["b"].taken_over_by) == ("lost", False, "a")
    assert view["a"].live and view["c"].live


def test_a_node_never_takes_itself_over_nor_a_live_peer(db: Database) -> None:
    a, _b = node(db, "a"), node(db, "b")
    add_job(db, "b", "running", "vm1")
    expire(db, "a")
    assert a.sweep() == Takeover()


def test_a_node_declared_lost_is_fenced_at_its_next_heartbeat(db: Database) -> None:
    fenced: list[bool] = []
    taken: list[Takeover] = []
    a = node(db, "a", on_takeover=taken.append, settle=0.0)
    b = node(db, "b", on_fenced=lambda: fenced.append(True))
    add_job(db, "b", "running", "vm1")
    expire(db, "b")
    a.tick()
    assert [t.nodes for t in taken] == [["b"]]
    assert a.ring.nodes == ("a",)
    assert b.renew() is False
    b.tick()
    assert fenced == [True]


def test_a_heartbeat_pushes_the_lease_ahead(db: Database) -> None:
    a = node(db, "a", lease=30.0)
    expire(db, "a")
    assert a.renew()
    with db.read() as s:
        assert s.scalar(select(ControllerNode.lease_expiry)) > utcnow() + timedelta(seconds=20)


def test_a_clean_leave_ends_the_lease_at_once(db: Database) -> None:
    a, b = node(db, "a"), node(db, "b")
    b.leave()
    assert a.refresh().nodes == ("a",)


def test_a_restarted_node_fails_only_its_own_unfinished_jobs(db: Database) -> None:
    mine = add_job(db, "a", "running", "vm1")
    peers = add_job(db, "b", "running", "vm2")
    single = JobManager(db, None, None, node_id="a")  # type: ignore[arg-type]
    assert single.recover() == [mine]
    assert job_states(db)[mine] == ("failed", "CONTROLLER_RESTARTED")
    assert job_states(db)[peers] == ("running", None)


def test_a_node_id_needs_a_server_database() -> None:
    with pytest.raises(ValidationError, match="node_id"):
        Settings(db_url="sqlite:///x.db", node_id="n1")
    with pytest.raises(ValidationError, match="node_id"):
        Settings(db_url="postgresql+psycopg://h/db", node_id="bad id!")
    assert Settings(db_url="postgresql+psycopg://h/db", node_id="n1").node_id == "n1"


def test_a_node_sweeps_only_after_renewing_steadily_for_a_lease(db: Database) -> None:
    """After the database was out of reach, every lease looks run out: a node waits a
    lease of its own renewals before taking anyone over (the live peers renew meanwhile)."""
    taken: list[Takeover] = []
    a = node(db, "a", on_takeover=taken.append, lease=3600.0)
    node(db, "b")
    expire(db, "b")
    a.tick()
    assert taken == []
    with db.read() as s:
        assert s.scalar(select(ControllerNode.state).where(ControllerNode.node_id == "b")) == "up"


def test_the_recovery_of_a_takeover_commits_with_it_or_not_at_all(db: Database) -> None:
    seen: list[list[str]] = []

    def recover(s: object, resources: list[str]) -> list[str]:
        seen.append(resources)
        if len(seen) == 1:
            raise RuntimeError("the recovery failed")
        return ["backup-1"]

    a, _b = node(db, "a", recover=recover), node(db, "b")
    job = add_job(db, "b", "running", "vm1")
    expire(db, "b")
    with pytest.raises(RuntimeError):
        a.sweep()
    assert job_states(db)[job] == ("running", None)  # rolled back with the recovery
    assert {n.node_id: n.state for n in a.nodes()}["b"] == "up"
    taken = a.sweep()
    assert (taken.jobs, taken.resources, taken.backups) == ([job], ["vm1"], ["backup-1"])
    assert seen == [["vm1"], ["vm1"]]
    assert job_states(db)[job] == ("failed", "CONTROLLER_LOST")
