"""HA on the in-process controller with fake hosts, the tracker driven by hand: a dead
host's haLevel=restart VM starts on the other host (its own ha-restart job), the others
stay Unknown, and the host that comes back loses its stale copy; a restart that finds no
room rolls back to how the VM was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.ha import restart
from controller.services.hosts import connect
from controller.tracker import HostTracker
from tests.unit.controller.fakeagent import FakeHost
from tests.unit.controller.harness import Cloud


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    # a grace shorter than any ping: the first failed reconnect declares the host dead
    c = Cloud(f"sqlite:///{tmp_path}/controller.db", poll_after=2.0, host_dead_after=1e-6)
    yield c
    c.close()


def vm_on(cloud: Cloud, host: FakeHost, name: str, **extra: Any) -> str:
    answer = cloud.ok("POST", "/v1/vms", cloud.vm_body(name, hostUuid=host.uuid, **extra),  # type: ignore[attr-defined]
                      wait="1")
    assert answer["job"]["state"] == "succeeded", answer
    return str(answer["resource"]["uuid"])


def kill(cloud: Cloud, host: FakeHost) -> dict[str, Any]:
    """Its agent stops answering until the tracker declares it dead: the host-dead job."""
    tracker, uuid = cloud.ctl.tracker, host.uuid  # type: ignore[attr-defined]
    host.down = True
    tracker.ping(uuid)
    tracker.ping(uuid)
    assert cloud.ok("GET", f"/v1/hosts/{uuid}")["status"] == "Disconnected"
    tracker.reconnect(uuid, "Disconnected")
    assert cloud.ok("GET", f"/v1/hosts/{uuid}")["status"] == "Dead"
    [job] = cloud.ok("GET", "/v1/jobs", q=["kind=host-dead", f"resourceUuid={uuid}"])["items"]
    return finished(cloud, job["uuid"])


def finished(cloud: Cloud, job_uuid: str) -> dict[str, Any]:
    job = cloud.ctl.jobs.wait(job_uuid, 30)
    assert job is not None and job.state in ("succeeded", "failed"), job
    return dict(cloud.ok("GET", f"/v1/jobs/{job_uuid}")["job"])


def test_a_dead_hosts_ha_vm_restarts_elsewhere_and_its_stale_copy_goes(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    h1, h2 = cloud.hosts["h1"], cloud.hosts["h2"]
    ha = vm_on(cloud, h1, "ha", haLevel="restart")
    plain = vm_on(cloud, h1, "plain")
    free = cloud.ok("GET", f"/v1/hosts/{h1.uuid}")["availableCpu"]  # type: ignore[attr-defined]

    dead = kill(cloud, h1)
    assert dead["state"] == "succeeded", dead
    assert set(dead["result"]["restarts"]) == {ha}
    assert "haLevel is none" in dead["result"]["left"][plain]
    assert dead["result"]["fencing"] == {cloud.ids["ps"]: "fenced"}  # its NFS heartbeat stopped
    restart = finished(cloud, dead["result"]["restarts"][ha])
    assert (restart["kind"], restart["state"]) == ("ha-restart", "succeeded"), restart
    got = cloud.ok("GET", f"/v1/vms/{ha}")
    assert (got["hostUuid"], got["state"], got["lastHostUuid"]) == (h2.uuid, "Running", h1.uuid)  # type: ignore[attr-defined]
    assert h2.domains.get(ha) == "Running"
    assert cloud.ok("GET", f"/v1/vms/{plain}")["state"] == "Unknown"
    assert cloud.ok("GET", f"/v1/hosts/{h1.uuid}")["availableCpu"] == free + 1  # type: ignore[attr-defined]

    cloud.ctl.tracker.reconnect(h1.uuid, "Dead")  # type: ignore[attr-defined]
    assert cloud.ok("GET", f"/v1/hosts/{h1.uuid}")["status"] == "Dead"  # still unreachable
    h1.down = False
    cloud.ctl.tracker.reconnect(h1.uuid, "Dead")  # type: ignore[attr-defined]
    assert cloud.ok("GET", f"/v1/hosts/{h1.uuid}")["status"] == "Connected"
    assert ha not in h1.domains  # the stale copy is destroyed
    assert h2.domains.get(ha) == "Running"
    assert cloud.ok("GET", f"/v1/vms/{plain}")["state"] == "Running"  # it ran there all along
    assert cloud.ok("GET", f"/v1/vms/{ha}")["hostUuid"] == h2.uuid  # type: ignore[attr-defined]


def test_a_host_that_still_writes_its_nfs_heartbeat_keeps_its_vms(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    h1, h2 = cloud.hosts["h1"], cloud.hosts["h2"]
    ha = vm_on(cloud, h1, "ha", haLevel="restart")
    h1.still_writes = True  # only its management network is cut: it runs the VM on the share
    dead = kill(cloud, h1)
    assert dead["result"]["fencing"] == {cloud.ids["ps"]: "alive"}
    assert dead["result"]["restarts"] == {}
    assert "not fenced" in dead["result"]["left"][ha]
    got = cloud.ok("GET", f"/v1/vms/{ha}")
    assert (got["hostUuid"], got["state"]) == (h1.uuid, "Unknown")  # type: ignore[attr-defined]
    assert ha not in h2.domains


def test_a_restart_with_no_host_to_go_to_rolls_back(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    h1, h2 = cloud.hosts["h1"], cloud.hosts["h2"]
    ha = vm_on(cloud, h1, "ha", haLevel="restart")
    cloud.succeeded("POST", f"/v1/hosts/{h2.uuid}/actions/disable", {})  # type: ignore[attr-defined]
    before = cloud.ok("GET", f"/v1/hosts/{h1.uuid}")["availableMemory"]  # type: ignore[attr-defined]

    dead = kill(cloud, h1)
    restart = finished(cloud, dead["result"]["restarts"][ha])
    assert restart["state"] == "failed" and restart["error"]["code"] == "NO_CAPACITY", restart
    got = cloud.ok("GET", f"/v1/vms/{ha}")
    assert (got["hostUuid"], got["state"]) == (h1.uuid, "Unknown")  # type: ignore[attr-defined]
    assert cloud.ok("GET", f"/v1/hosts/{h1.uuid}")["availableMemory"] == before  # type: ignore[attr-defined]
    assert ha not in h2.domains


def test_ha_level_is_set_at_create_changed_by_patch_and_checked(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    status, body = cloud.call("POST", "/v1/vms", cloud.vm_body(haLevel="always"))
    assert status == 400 and body["error"]["details"]["field"] == "haLevel", body
    vm = vm_on(cloud, cloud.hosts["h1"], "web", haLevel="restart")
    assert cloud.ok("GET", f"/v1/vms/{vm}")["haLevel"] == "restart"
    assert cloud.ok("PATCH", f"/v1/vms/{vm}", {"haLevel": "none"})["haLevel"] == "none"
    for bad in ("Restart", None, 1):
        status, body = cloud.call("PATCH", f"/v1/vms/{vm}", {"haLevel": bad})
        assert status == 400 and body["error"]["details"]["field"] == "haLevel", body
    assert cloud.ok("GET", f"/v1/vms/{vm}")["haLevel"] == "none"
    assert [v["uuid"] for v in cloud.ok("GET", "/v1/vms", q="haLevel=none")["items"]] == [vm]


def test_a_restarted_controller_hands_a_dead_host_over_again(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    h1, h2 = cloud.hosts["h1"], cloud.hosts["h2"]
    ha = vm_on(cloud, h1, "ha", haLevel="restart")
    cloud.succeeded("POST", f"/v1/hosts/{h2.uuid}/actions/disable", {})  # type: ignore[attr-defined]
    dead = kill(cloud, h1)
    assert finished(cloud, dead["result"]["restarts"][ha])["state"] == "failed"
    cloud.succeeded("POST", f"/v1/hosts/{h2.uuid}/actions/enable", {})  # type: ignore[attr-defined]
    cloud.ctl.tracker.reconnect(h1.uuid, "Dead")  # type: ignore[attr-defined]
    assert len(cloud.ok("GET", "/v1/jobs", q="kind=host-dead")["items"]) == 1  # once per tracker

    restarted = HostTracker(cloud.ctl, connect, restart.host_dead)  # as after a restart
    try:
        restarted.reconnect(h1.uuid, "Dead")  # type: ignore[attr-defined]
    finally:
        restarted.stop()
    jobs = cloud.ok("GET", "/v1/jobs", q=["kind=host-dead"], sort="createDate")["items"]
    assert len(jobs) == 2
    again = finished(cloud, jobs[1]["uuid"])
    assert finished(cloud, again["result"]["restarts"][ha])["state"] == "succeeded"
    got = cloud.ok("GET", f"/v1/vms/{ha}")
    assert (got["hostUuid"], got["state"]) == (h2.uuid, "Running")  # type: ignore[attr-defined]
