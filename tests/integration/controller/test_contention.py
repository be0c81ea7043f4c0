"""Many VMs created, moved, stopped, started and deleted at once on a small cloud: no
job fails for a database error (a deadlock victim or a lock wait runs its transaction
again), and the capacity and addresses add up afterwards; and a transaction the
database aborts to break a deadlock runs again."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from controller.db.base import Database
from controller.db.models import Zone
from tests.unit.controller.harness import API_TOKEN, Cloud

VMS = 48
AT_ONCE = 16
#: what each VM goes through after its create; with two hosts the migrations cross
ACTIONS = ("migrate", "stop", "start", "migrate", "migrate")


def test_concurrent_vm_lifecycles_on_two_hosts_fail_no_job(cloud: Cloud) -> None:
    cloud.basic(hosts=2)

    def run(method: str, path: str, body: Any = None) -> dict[str, Any]:
        client = cloud.app.test_client(use_cookies=False)  # one per thread
        r = client.open(path, method=method, json=body,
                        query_string={"wait": "1", "confirm": "1"},
                        headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert r.status_code == 200, r.get_data(as_text=True)
        job: dict[str, Any] = r.get_json()["job"]
        return job

    def lifecycle(i: int) -> list[dict[str, Any]]:
        job = run("POST", "/v1/vms", cloud.vm_body(f"vm{i}"))
        vm = job["resourceUuid"]
        jobs = [job, *(run("POST", f"/v1/vms/{vm}/actions/{a}", {}) for a in ACTIONS)]
        return [*jobs, run("DELETE", f"/v1/vms/{vm}")]

    with ThreadPoolExecutor(AT_ONCE) as pool:
        jobs = [j for js in pool.map(lifecycle, range(VMS)) for j in js]
    assert [(j["kind"], j["error"]) for j in jobs if j["state"] != "succeeded"] == []
    assert len(jobs) == VMS * (len(ACTIONS) + 2)
    assert cloud.ok("GET", "/v1/vms")["items"] == []
    assert cloud.ok("GET", "/v1/vm-nics")["items"] == []
    for h in cloud.ok("GET", "/v1/hosts")["items"]:
        assert (h["availableCpu"], h["availableMemory"]) == (h["totalCpu"], h["totalMemory"])
    for host in cloud.hosts.values():
        assert host.domains == {} and not any(host.leases.values())


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres),
                                    pytest.param("mariadb", marks=pytest.mark.mariadb)],
                         indirect=True)  # SQLite has one writer: it never picks a victim
def test_a_deadlock_victim_runs_its_transaction_again(db_url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    db = Database(db_url)
    try:
        db.create_all()
        with db.write() as s:
            s.add_all([Zone(uuid="a" * 32, name="a"), Zone(uuid="b" * 32, name="b")])
        body_waits = threading.Event()
        attempts: list[int] = []

        def body(s: Session) -> int:
            attempts.append(len(attempts) + 1)
            s.execute(update(Zone).where(Zone.uuid == "b" * 32).values(description="body"))
            body_waits.set()
            s.execute(update(Zone).where(Zone.uuid == "a" * 32).values(description="body"))
            return attempts[-1]

        with db.engine.connect() as other, ThreadPoolExecutor(1) as pool:
            other.begin()
            # make the database pick the body as the victim: on PostgreSQL the waiter
            # whose deadlock_timeout runs out first; on MariaDB the lighter transaction
            if db.engine.dialect.name == "postgresql":
                other.exec_driver_sql("SET LOCAL deadlock_timeout = '600s'")
            else:
                other.execute(insert(Zone), [{"uuid": f"{i:032x}", "name": "heavy"}
                                             for i in range(100)])
            other.execute(update(Zone).where(Zone.uuid == "a" * 32).values(description="other"))
            caplog.set_level(logging.WARNING, logger="controller.db.base")
            done = pool.submit(db.transaction, body)
            body_waits.wait()
            # the body holds b and takes a; this takes b: a cycle the database breaks
            other.execute(update(Zone).where(Zone.uuid == "b" * 32).values(description="other"))
            other.commit()
            assert done.result() == 2
        with db.read() as s:
            assert set(s.scalars(select(Zone.description).where(
                Zone.uuid.in_(["a" * 32, "b" * 32])))) == {"body"}
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [
            "write transaction test_a_deadlock_victim_runs_its_transaction_again.<locals>.body"]
    finally:
        db.dispose()
