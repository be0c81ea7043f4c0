"""Host tracking (ping, reconnect after an agent restart, events, sync) and controller restarts."""

from __future__ import annotations

from collections.abc import Callable

from controller.services.allocate import mark_stopped
from tests.support.agents import wait_until
from tests.unit.controller.harness import AGENT_TOKEN, Cloud


def _vm(cloud: Cloud, name: str = "v") -> str:
    data = cloud.call("POST", "/v1/vms", cloud.vm_body(name), wait="1")[1]
    assert data["job"]["state"] == "succeeded", data
    return str(data["resource"]["uuid"])


def test_agent_restart_reconnects_host_and_resyncs_vms(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud)
    host = next(iter(cloud.hosts.values()))
    # the agent restarts: it forgot its identity, and the VM died meanwhile
    host.host_uuid = None
    host.domains.clear()
    host.bridges.clear()
    cloud.ctl.tracker.ping(host.uuid)  # type: ignore[attr-defined]
    assert host.host_uuid == host.uuid  # type: ignore[attr-defined]  # connect was sent again
    assert cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")["status"] == "Connected"
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Stopped" and got["hostUuid"] is None
    # it can be started again: the bridge is realised anew after the reconnect
    cloud.succeeded("POST", f"/v1/vms/{vm}/actions/start", {})
    assert host.domains == {vm: "Running"}


def test_unreachable_host_is_disconnected_then_reconnected(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud)
    host = next(iter(cloud.hosts.values()))
    host.down = True
    tracker = cloud.ctl.tracker
    tracker.ping(host.host_uuid)
    assert cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")["status"] == "Connected"  # one miss
    tracker.ping(host.host_uuid)
    assert cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")["status"] == "Disconnected"
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Unknown"
    host.down = False
    tracker._check(host.host_uuid, "Disconnected")
    assert cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")["status"] == "Connected"
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"


def test_pushed_events_update_vm_state(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud)
    host = next(iter(cloud.hosts.values()))
    r = cloud.client.post(f"/v1/agent-events/{host.host_uuid}",
                          json={"hostUuid": host.host_uuid, "vmUuid": vm, "state": "Paused",
                                "reason": "paused by the guest"},
                          headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert r.status_code == 200
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Paused"
    # an event from a host the VM is not on changes nothing
    cloud.client.post(f"/v1/agent-events/{'0' * 32}", json={"vmUuid": vm, "state": "Running"},
                      headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Paused"


def test_tracker_loop_pings_with_jitter(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud(ping_interval=0.2, sync_interval=0.5)
    cloud.basic(hosts=1)
    cloud.ctl.tracker.start()
    host = next(iter(cloud.hosts.values()))
    wait_until(lambda: sum(p == "/host/ping" for p, _ in host.calls) >= 3, 10, what="pings")
    wait_until(lambda: sum(p == "/vm/sync" for p, _ in host.calls) >= 2, 10, what="syncs")


def test_controller_restart_fails_unfinished_jobs(make_cloud: Callable[..., Cloud]) -> None:
    first = make_cloud()
    first.basic(hosts=1)
    host = next(iter(first.hosts.values()))
    host.hang.add("/vm/start")
    data = first.ok("POST", "/v1/vms", first.vm_body())
    wait_until(lambda: any(p == "/vm/start" for p, _ in host.calls), 10, what="start sent")
    # a second process on the same database: the first one is gone
    second = make_cloud()
    job = second.ok("GET", f"/v1/jobs/{data['job']['uuid']}")["job"]
    assert job["state"] == "failed" and job["error"]["code"] == "CONTROLLER_RESTARTED"
    assert second.ok("GET", f"/v1/vms/{data['resource']['uuid']}")["state"] == "Error"
    # and the operator can clean it up
    second.transport = first.transport
    second.ctl.dispatcher.transport = first.transport
    host.deliver = second.deliver
    host.hang.clear()
    job = second.job("DELETE", f"/v1/vms/{data['resource']['uuid']}?confirm=1")
    assert job["state"] == "succeeded", job
    assert first.storage.files == {}


def test_sync_adopts_a_vm_that_runs_though_stopped_in_the_database(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud)
    host = next(iter(cloud.hosts.values()))
    free = cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")["availableCpu"]
    # a start whose outcome was lost: the controller marked the VM stopped, the domain runs
    with cloud.ctl.db.write() as s:
        mark_stopped(s, vm)
    cloud.ctl.tracker.sync_vms(host.host_uuid)
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Running" and got["hostUuid"] == host.host_uuid
    assert cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")["availableCpu"] == free
