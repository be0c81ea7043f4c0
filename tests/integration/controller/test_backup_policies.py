"""Backup policies through the API and their scheduler (fake hosts and a fake sftpbackup
agent), on every database, with the scheduler ticked by the test's own clock: due
detection, one run per slot across controller restarts, retention, the bound on
jobs in flight, bad bodies, cascades, and the migration that makes the tables."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, select, text, update

from controller.backup_schedule import BackupSchedule, next_run
from controller.db.base import Database, utcnow
from controller.db.migrate import alembic_config, upgrade
from controller.db.models import VmBackupPolicyRef
from tests.integration.controller.test_backups import _setup
from tests.support.agents import wait_until
from tests.unit.controller.harness import Cloud

pytestmark = pytest.mark.sqlite_only

HOUR = dt.timedelta(hours=1)
TABLES = {"backup_policies", "vm_backup_policy_refs"}


def _policy(cloud: Cloud, bs: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "nightly", "backupStorageUuid": bs, "retentionCount": 2, **extra}
    if "cronExpression" not in extra:
        body.setdefault("intervalSeconds", 3600)
    status, data = cloud.call("POST", "/v1/backup-policies", body)
    assert status == 201, data
    return data  # type: ignore[no-any-return]


def _attach(cloud: Cloud, policy: str, *vms: str) -> dt.datetime:
    """Attach the VMs; the attach time the scheduler counts from (the last VM's)."""
    job = cloud.succeeded("POST", f"/v1/backup-policies/{policy}/actions/attach", {"vmUuids": list(vms)})
    assert set(vms) <= set(job["result"]["vmUuids"])
    with cloud.ctl.db.read() as s:
        return s.scalar(select(VmBackupPolicyRef.attach_date).where(  # type: ignore[return-value]
            VmBackupPolicyRef.vm_uuid == vms[-1]))


def _schedule(cloud: Cloud) -> BackupSchedule:
    assert cloud.ctl.backup_schedule is not None
    return cloud.ctl.backup_schedule


def _finish(cloud: Cloud, jobs: dict[str, str], state: str = "succeeded") -> None:
    for uuid in jobs.values():
        job = cloud.ok("GET", f"/v1/jobs/{uuid}", wait="1")["job"]
        assert job["state"] == state, job


def _vm_backups(cloud: Cloud, vm: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cloud.ok("GET", "/v1/vm-backups", q=f"vmUuid={vm}",
                                           sort="createDate")["items"]
    return items


def test_next_run_of_an_interval_and_of_a_cron_expression() -> None:
    base = dt.datetime(2026, 3, 1, 10, 17, 5)
    assert next_run(base, 600, None) == dt.datetime(2026, 3, 1, 10, 27, 5)
    assert next_run(base, None, "0 3 * * *") == dt.datetime(2026, 3, 2, 3, 0)
    assert next_run(base, None, "*/15 * * * *") == dt.datetime(2026, 3, 1, 10, 30)


def test_an_interval_policy_backs_up_when_due_and_marks_its_backups(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    policy = _policy(cloud, bs)
    assert policy["intervalSeconds"] == 3600 and policy["cronExpression"] is None
    attached = _attach(cloud, policy["uuid"], vm["uuid"])
    sched = _schedule(cloud)
    assert sched.tick(attached + HOUR - dt.timedelta(seconds=1)).started == {}
    tick = sched.tick(attached + HOUR)
    assert list(tick.started) == [vm["uuid"]]
    _finish(cloud, tick.started)
    [vb] = _vm_backups(cloud, vm["uuid"])
    assert vb["status"] == "Ready" and vb["backupPolicyUuid"] == policy["uuid"]
    assert sched.tick(attached + HOUR + dt.timedelta(minutes=59)).started == {}
    assert list(sched.tick(attached + 2 * HOUR).started) == [vm["uuid"]]
    # disabled: nothing runs, however late
    cloud.ok("PATCH", f"/v1/backup-policies/{policy['uuid']}", {"state": "Disabled"})
    _finish(cloud, sched.in_flight())
    assert sched.tick(attached + 10 * HOUR).started == {}


def test_a_cron_policy_runs_at_the_expression_times(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    policy = _policy(cloud, bs, cronExpression="30 * * * *")
    attached = _attach(cloud, policy["uuid"], vm["uuid"])
    slot = next_run(attached, None, "30 * * * *")
    assert slot.minute == 30 and slot.second == 0 and slot > attached
    sched = _schedule(cloud)
    assert sched.tick(slot - dt.timedelta(seconds=1)).started == {}
    tick = sched.tick(slot)
    assert list(tick.started) == [vm["uuid"]]
    _finish(cloud, tick.started)
    assert sched.tick(slot + dt.timedelta(minutes=59)).started == {}
    assert list(sched.tick(slot + HOUR).started) == [vm["uuid"]]
    # switched to an interval: one hour after the last run
    changed = cloud.ok("PATCH", f"/v1/backup-policies/{policy['uuid']}", {"intervalSeconds": 7200})
    assert changed["intervalSeconds"] == 7200 and changed["cronExpression"] is None


class Relay:
    """Fake agents' callbacks to the controller process that runs now (held while none does)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.ready = threading.Event()
        self.ready.set()

    def hold(self) -> None:
        self.ready.clear()

    def switch(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.ready.set()

    def __call__(self, task_uuid: str, kind: str, body: dict[str, Any]) -> None:
        self.ready.wait(30)
        self.cloud.deliver(task_uuid, kind, body)


def _copies(cloud: Cloud) -> list[str]:
    return sorted(path for _, path in cloud.storage.files if path.startswith("templates/backup-"))


def test_a_slot_runs_once_across_a_controller_restart(make_cloud: Callable[..., Cloud]) -> None:
    first = make_cloud()
    vm, host, agent, bs = _setup(first, running=False)
    policy = _policy(first, bs)
    attached = _attach(first, policy["uuid"], vm["uuid"])
    host.hang.add("/storage/volume/upload-template")
    relay = Relay(first)
    agent.deliver = host.deliver = relay
    slot = attached + HOUR
    job = _schedule(first).tick(slot).started[vm["uuid"]]
    wait_until(lambda: any(p == "/storage/volume/upload-template" for p, _ in host.calls), 10,
               what="upload sent")
    [cut] = _vm_backups(first, vm["uuid"])
    copies = _copies(first)
    assert len(copies) == 2  # the flow's flattened copies wait on primary storage for the upload
    relay.hold()
    second = make_cloud(transport=first.transport)  # the first process died with the job running
    relay.switch(second)
    assert second.ok("GET", f"/v1/jobs/{job}")["job"]["error"]["code"] == "CONTROLLER_RESTARTED"
    # the dead job's upload, still running on the agent, is cancelled before the cleanup
    uploads = [t for t in host.tasks.values() if t["path"] == "/storage/volume/upload-template"]
    wait_until(lambda: all(t["state"] == "cancelled" for t in uploads), 10, what="upload cancelled")
    assert uploads and all(t["taskUuid"].startswith(f"{job}.") for t in uploads)
    # the backup it cut short is deleted at start: its copies and what reached the store go
    wait_until(lambda: _vm_backups(second, vm["uuid"]) == [], 10, what="cut-short backup deleted")
    assert _copies(first) == []
    stored = {b["imageUuid"] for p, b in agent.calls if p == "/backup/image/delete"}
    assert {c.rsplit("backup-", 1)[1].removesuffix(".qcow2") for c in copies} <= stored
    def jobs() -> list[tuple[str, str]]:
        items = second.ok("GET", "/v1/jobs", q=f"resourceUuid={cut['uuid']}")["items"]
        return [(j["kind"], j["state"]) for j in items]
    wait_until(lambda: jobs() == [("delete-vm-backups", "succeeded")], 10, what=f"the delete job: {jobs()}")
    host.hang.clear()
    sched = _schedule(second)
    # the claimed slot is not run again, however often the new process ticks
    assert sched.tick(slot).started == {}
    assert sched.tick(slot + dt.timedelta(minutes=30)).started == {}
    # the next slot runs normally
    tick = sched.tick(slot + HOUR)
    assert list(tick.started) == [vm["uuid"]]
    _finish(second, tick.started)
    assert [b["status"] for b in _vm_backups(second, vm["uuid"])] == ["Ready"]
    # down through three slots: one run at start, not three
    third = make_cloud()
    third.transport = first.transport
    third.ctl.dispatcher.transport = first.transport
    agent.deliver = host.deliver = third.deliver
    late = slot + 5 * HOUR
    tick = _schedule(third).tick(late)
    assert list(tick.started) == [vm["uuid"]]
    _finish(third, tick.started)
    assert _schedule(third).tick(late + dt.timedelta(minutes=1)).started == {}
    assert _schedule(second).tick(late + dt.timedelta(minutes=2)).started == {}  # another process
    assert len(_vm_backups(third, vm["uuid"])) == 2


# an hour back, in the database's own arithmetic (SQLite's datetime() keeps whole seconds
# and writes them without a fraction, unlike the rows the controller writes)
_HOUR_BACK = {"sqlite": "datetime(last_run_at, '-3600 seconds')",
              "postgresql": "last_run_at - interval '1 hour'",
              "mysql": "last_run_at - INTERVAL 1 HOUR"}


def test_a_last_run_moved_back_by_hand_makes_the_next_slot_due_once(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    policy = _policy(cloud, bs)
    attached = _attach(cloud, policy["uuid"], vm["uuid"])
    sched = _schedule(cloud)
    slot = attached + HOUR + dt.timedelta(microseconds=250)  # a run time with a fraction
    tick = sched.tick(slot)
    _finish(cloud, tick.started)
    with cloud.ctl.db.write() as s:  # what an operator (or a test standing in for the wait) does
        back = _HOUR_BACK[s.get_bind().dialect.name]
        s.execute(text(f"UPDATE vm_backup_policy_refs SET last_run_at = {back}"))
    tick = sched.tick(slot)
    assert list(tick.started) == [vm["uuid"]]
    _finish(cloud, tick.started)
    assert sched.tick(slot).started == {}
    assert sched.tick(slot + dt.timedelta(minutes=59)).started == {}
    assert [b["status"] for b in _vm_backups(cloud, vm["uuid"])] == ["Ready", "Ready"]


def test_a_running_vm_left_on_its_overlays_by_a_restart_is_merged_back(
        make_cloud: Callable[..., Cloud]) -> None:
    first = make_cloud()
    vm, host, agent, bs = _setup(first, running=True)
    host.hang.add("/storage/volume/create-template")  # after the live snapshots, before the merge
    relay = Relay(first)
    agent.deliver = host.deliver = relay
    status, _ = first.call("POST", f"/v1/vms/{vm['uuid']}/actions/backup", {"backupStorageUuid": bs})
    assert status == 202
    wait_until(lambda: any(p == "/storage/volume/create-template" for p, _ in host.calls), 10,
               what="copy asked for")
    vols = {v["uuid"]: v["installPath"]
            for v in first.ok("GET", "/v1/volumes", q=f"vmUuid={vm['uuid']}")["items"]}
    on_overlays = {k[1]: p for k, p in host.active.items()}
    assert set(on_overlays) == set(vols) and all("-backup-" in p for p in on_overlays.values())
    relay.hold()
    second = make_cloud(transport=first.transport)  # the first process died mid-backup
    relay.switch(second)
    wait_until(lambda: _vm_backups(second, vm["uuid"]) == [], 10, what="cut-short backup deleted")
    # the VM writes to its own files again, and neither an overlay nor a copy is left
    assert all(host.active[(vm["uuid"], v)].endswith("/" + p) for v, p in vols.items()), host.active
    assert _copies(first) == []
    assert not [p for _, p in first.storage.files if "-backup-" in p]
    host.hang.clear()


def test_the_controller_runs_the_schedule_at_start_and_stops_it(
        make_cloud: Callable[..., Cloud]) -> None:
    first = make_cloud()
    vm, host, agent, bs = _setup(first, running=False)
    policy = _policy(first, bs)
    _attach(first, policy["uuid"], vm["uuid"])
    with first.ctl.db.write() as s:  # the last run two hours ago: due while "down"
        s.execute(update(VmBackupPolicyRef).values(last_run_at=utcnow() - 2 * HOUR))
    second = make_cloud(backup_schedule=True, backup_schedule_period=3600)
    second.transport = first.transport
    second.ctl.dispatcher.transport = first.transport
    agent.deliver = host.deliver = second.deliver
    sched = _schedule(second)
    wait_until(lambda: [b["status"] for b in _vm_backups(second, vm["uuid"])] == ["Ready"], 10,
               what="the backup at start")
    assert [b["backupPolicyUuid"] for b in _vm_backups(second, vm["uuid"])] == [policy["uuid"]]
    second.close()
    assert sched._thread is not None and not sched._thread.is_alive()


def test_retention_prunes_the_oldest_policy_backups_from_the_store(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    manual = cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/backup",
                             {"backupStorageUuid": bs, "name": "by-hand"})["result"]
    policy = _policy(cloud, bs, retentionCount=2)
    attached = _attach(cloud, policy["uuid"], vm["uuid"])
    sched = _schedule(cloud)
    made = []
    for i in range(1, 5):
        tick = sched.tick(attached + i * HOUR)
        _finish(cloud, tick.started)
        made.append(_vm_backups(cloud, vm["uuid"])[-1]["uuid"])
        _finish(cloud, tick.pruned)
    tick = sched.tick(attached + 4 * HOUR)
    _finish(cloud, tick.pruned)
    left = [b["uuid"] for b in _vm_backups(cloud, vm["uuid"])]
    assert left == [manual["uuid"], *made[-2:]]
    held = {b["uuid"] for b in cloud.ok("GET", "/v1/volume-backups")["items"]}
    assert len(held) == 6 and agent.held() == held
    deleted = {b["imageUuid"] for p, b in agent.calls if p == "/backup/image/delete"}
    assert len(deleted) == 4 and not deleted & held
    assert sched.tick(attached + 4 * HOUR).pruned == {}


def test_scheduled_jobs_are_bounded_in_total_and_one_per_vm(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud(backup_schedule_max_jobs=2)
    vm, host, agent, bs = _setup(cloud, running=False)
    others = [cloud.ok("POST", "/v1/vms", cloud.vm_body(f"web{i}"), wait="1")["resource"]["uuid"]
              for i in (2, 3)]
    for other in others:
        cloud.succeeded("POST", f"/v1/vms/{other}/actions/stop", {})
    policy = _policy(cloud, bs, intervalSeconds=600)
    attached = _attach(cloud, policy["uuid"], vm["uuid"], *others)
    host.hang.add("/storage/volume/upload-template")
    sched = _schedule(cloud)
    first = sched.tick(attached + HOUR).started
    assert len(first) == 2
    # the next slot of the busy VMs waits for their jobs; the third VM waits for room
    assert sched.tick(attached + 2 * HOUR).started == {}
    assert sched.in_flight() == first
    for job in first.values():
        cloud.ok("POST", f"/v1/jobs/{job}/cancel")
    _finish(cloud, first, "cancelled")
    host.hang.clear()
    second = sched.tick(attached + 2 * HOUR).started
    assert len(second) == 2 and set(first) | set(second) == {vm["uuid"], *others}
    _finish(cloud, second)


@pytest.mark.parametrize(("body", "field"), [
    ({"cronExpression": "61 * * * *"}, "cronExpression"),
    ({"cronExpression": "every day"}, "cronExpression"),
    ({"cronExpression": "0 3 * * *", "intervalSeconds": 3600}, "intervalSeconds"),
    ({"intervalSeconds": None}, "intervalSeconds"),
    ({"intervalSeconds": 3600, "retentionCount": 0}, "retentionCount"),
    ({"intervalSeconds": 5}, "intervalSeconds"),
    ({"intervalSeconds": 3600, "backupStorageUuid": "0" * 32}, "backupStorageUuid"),
])
def test_bad_policy_bodies_are_refused_naming_the_field(cloud: Cloud, body: dict[str, Any],
                                                        field: str) -> None:
    cloud.basic(hosts=0)
    full = {"name": "p", "retentionCount": 1, "backupStorageUuid": cloud.ids["bs"], **body}
    if body.get("backupStorageUuid") is None:
        full["backupStorageUuid"] = cloud.backup_agent("bsa")[1]
    full = {k: v for k, v in full.items() if v is not None}
    status, data = cloud.call("POST", "/v1/backup-policies", full)
    assert status == 400 and data["error"]["details"]["field"] == field, data
    assert cloud.ok("GET", "/v1/backup-policies")["items"] == []


def test_bad_policy_changes_and_attachments_are_refused(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    policy = _policy(cloud, bs)["uuid"]
    for body, field in [({"cronExpression": "0 25 * * *"}, "cronExpression"),
                        ({"retentionCount": 0}, "retentionCount"),
                        ({"intervalSeconds": None}, "intervalSeconds"),
                        ({"cronExpression": "0 3 * * *", "intervalSeconds": 60}, "intervalSeconds")]:
        status, data = cloud.call("PATCH", f"/v1/backup-policies/{policy}", body)
        assert status == 400 and data["error"]["details"]["field"] == field, (body, data)
    status, data = cloud.call("POST", f"/v1/backup-policies/{policy}/actions/attach",
                              {"vmUuids": ["f" * 32]})
    assert status == 400 and data["error"]["details"]["field"] == "vmUuids.0", data
    _attach(cloud, policy, vm["uuid"])
    _attach(cloud, policy, vm["uuid"])  # again: nothing changes
    other = _policy(cloud, bs, name="other")["uuid"]
    status, data = cloud.call("POST", f"/v1/backup-policies/{other}/actions/attach",
                              {"vmUuids": [vm["uuid"]]})
    assert status == 409, data
    job = cloud.succeeded("POST", f"/v1/backup-policies/{policy}/actions/detach", {"vmUuids": [vm["uuid"]]})
    assert job["result"]["vmUuids"] == []
    _attach(cloud, other, vm["uuid"])


def _refs(cloud: Cloud) -> list[tuple[str, str]]:
    with cloud.ctl.db.read() as s:
        return [(r.backup_policy_uuid, r.vm_uuid) for r in s.scalars(select(VmBackupPolicyRef))]


def test_deleting_a_policy_detaches_it_and_deleting_a_vm_drops_its_attachment(cloud: Cloud) -> None:
    vm, host, agent, bs = _setup(cloud, running=False)
    other = cloud.ok("POST", "/v1/vms", cloud.vm_body("web2"), wait="1")["resource"]["uuid"]
    policy = _policy(cloud, bs)["uuid"]
    attached = _attach(cloud, policy, vm["uuid"], other)
    tick = _schedule(cloud).tick(attached + HOUR)
    _finish(cloud, tick.started)
    cloud.succeeded("DELETE", f"/v1/vms/{other}?confirm=1")
    assert _refs(cloud) == [(policy, vm["uuid"])]
    plan = cloud.ok("DELETE", f"/v1/backup-policies/{policy}")["affected"]
    assert [(i["type"], i["uuid"]) for i in plan] == [("backup-policies", policy)]
    cloud.succeeded("DELETE", f"/v1/backup-policies/{policy}?confirm=1")
    assert _refs(cloud) == []
    assert cloud.ok("GET", f"/v1/vms/{vm['uuid']}")["uuid"] == vm["uuid"]
    # its backups stay (the policy's retention no longer applies to them)
    assert [b["status"] for b in _vm_backups(cloud, vm["uuid"])] == ["Ready"]
    # deleting the backup storage deletes the policies that back up into it
    policy = _policy(cloud, bs)["uuid"]
    plan = cloud.ok("DELETE", f"/v1/backup-storages/{bs}")["affected"]
    assert ("backup-policies", policy) in [(i["type"], i["uuid"]) for i in plan]


@pytest.mark.every_database
def test_migration_0010_makes_the_policy_tables_and_takes_them_back(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db, "0009")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        upgrade(db)
        assert TABLES <= set(inspect(db.engine).get_table_names())
        assert "backup_policy_uuid" in {c["name"] for c in inspect(db.engine).get_columns("vm_backups")}
        now = dt.datetime(2026, 1, 1)
        with db.engine.begin() as c:
            c.execute(text("INSERT INTO vm_backups (uuid, name, state, create_date, last_op_date, "
                           "vm_uuid, vm_state, vm_metadata, status, backup_policy_uuid) VALUES "
                           "('b', 'b', 'Enabled', :d, :d, 'v', 'Stopped', '{}', 'Ready', 'p')"),
                      {"d": now})
        cfg = alembic_config()
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0009")
        assert not TABLES & set(inspect(db.engine).get_table_names())
        assert "backup_policy_uuid" not in {
            c["name"] for c in inspect(db.engine).get_columns("vm_backups")}
        with db.engine.begin() as c:
            assert c.execute(text("SELECT status FROM vm_backups")).scalar() == "Ready"
        upgrade(db)
        assert TABLES <= set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()


def test_a_vm_whose_create_fails_goes_with_its_attachment(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    host = next(iter(cloud.hosts.values()))
    agent, bs = cloud.backup_agent("bsa")
    policy = _policy(cloud, bs)["uuid"]
    host.hang.add("/vm/start")
    vm = cloud.ok("POST", "/v1/vms", cloud.vm_body())["resource"]["uuid"]
    wait_until(lambda: any(p == "/vm/start" for p, _ in host.calls), 10, what="start sent")
    _attach(cloud, policy, vm)  # while it is Creating
    [job] = cloud.ok("GET", "/v1/jobs", q="kind=create-vm")["items"]
    cloud.ok("POST", f"/v1/jobs/{job['uuid']}/cancel")
    assert cloud.ok("GET", f"/v1/jobs/{job['uuid']}", wait="1")["job"]["state"] == "cancelled"
    assert _refs(cloud) == []
    assert cloud.call("GET", f"/v1/vms/{vm}")[0] == 404
