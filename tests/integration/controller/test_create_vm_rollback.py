"""A failure injected at each step of create-VM leaves nothing behind."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controller.db.models import L3Network, UsedIp, Vm, VmNic, Volume
from tests.unit.controller.harness import Cloud

AGENT_STEPS = [
    "/storage/cache-image",
    "/storage/volume/create-root",
    "/storage/volume/create-empty",
    "/network/l2/create",
    "/network/dhcp/apply",
    "/vm/start",
]


def assert_nothing_left(cloud: Cloud) -> None:
    with cloud.ctl.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Vm)) == 0
        assert s.scalar(select(func.count()).select_from(Volume)) == 0
        assert s.scalar(select(func.count()).select_from(VmNic)) == 0
        server_ips = [ip for ip in s.scalars(select(L3Network.dhcp_server_ip)) if ip]
        assert list(s.scalars(select(UsedIp.ip).where(UsedIp.ip.not_in(server_ips)))) == []
    assert cloud.storage.files == {}
    for host in cloud.hosts.values():
        assert host.domains == {}
        assert all(not leases for leases in host.leases.values())
        h = cloud.ok("GET", f"/v1/hosts/{host.host_uuid}")
        assert h["availableCpu"] == h["totalCpu"] and h["availableMemory"] == h["totalMemory"]
    ps = cloud.ok("GET", f"/v1/primary-storages/{cloud.ids['ps']}")
    assert ps["availableCapacity"] == ps["totalCapacity"]


@pytest.mark.parametrize("path", AGENT_STEPS)
def test_failure_at_agent_step_rolls_back(cloud: Cloud, path: str) -> None:
    cloud.basic(hosts=1)
    host = next(iter(cloud.hosts.values()))
    host.faults[path] = "INJECTED"
    status, data = cloud.call("POST", "/v1/vms",
                              cloud.vm_body(dataDiskOfferingUuids=[cloud.ids["disk"]]), wait="1")
    assert status == 200
    job = data["job"]
    assert job["state"] == "failed" and job["error"]["code"] == "INJECTED", job
    assert job["error"]["details"]["path"] == path
    assert_nothing_left(cloud)
    # and the cloud still works once the fault is gone
    host.faults.clear()
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body(), wait="1")
    assert data["job"]["state"] == "succeeded", data


def test_no_host_with_capacity(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    cloud.succeeded("POST", f"/v1/hosts/{next(iter(cloud.hosts.values())).host_uuid}/actions/disable", {})
    data = cloud.call("POST", "/v1/vms", cloud.vm_body(), wait="1")[1]
    assert data["job"]["error"]["code"] == "NO_CAPACITY"
    assert_nothing_left(cloud)


def test_no_free_ip(cloud: Cloud) -> None:
    cloud.basic(hosts=1, range_size=2)  # one address for DHCP, one for the first VM
    first = cloud.call("POST", "/v1/vms", cloud.vm_body("a"), wait="1")[1]
    assert first["job"]["state"] == "succeeded"
    data = cloud.call("POST", "/v1/vms", cloud.vm_body("b"), wait="1")[1]
    assert data["job"]["state"] == "failed" and data["job"]["error"]["code"] == "NO_CAPACITY"
    with cloud.ctl.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Vm)) == 1
        assert s.scalar(select(func.count()).select_from(Volume)) == 1
    host = next(iter(cloud.hosts.values()))
    assert len(host.domains) == 1


def test_cancel_mid_flow_rolls_back(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    host = next(iter(cloud.hosts.values()))
    host.hang.add("/vm/start")
    data = cloud.ok("POST", "/v1/vms", cloud.vm_body())
    job_uuid = data["job"]["uuid"]
    from tests.support.agents import wait_until

    wait_until(lambda: any(p == "/vm/start" for p, _ in host.calls), 10, what="start sent")
    cloud.ok("POST", f"/v1/jobs/{job_uuid}/cancel")
    job = cloud.ok("GET", f"/v1/jobs/{job_uuid}", wait="1")["job"]
    assert job["state"] == "cancelled", job
    assert_nothing_left(cloud)
