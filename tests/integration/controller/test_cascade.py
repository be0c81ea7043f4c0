"""Deleting with cascade: the affected list first, then (confirmed) everything goes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controller.db.models import RESOURCES, UsedIp, VmNic
from tests.unit.controller.harness import Cloud

pytestmark = pytest.mark.sqlite_only


def _vm(cloud: Cloud, name: str) -> str:
    data = cloud.call("POST", "/v1/vms", cloud.vm_body(name, dataDiskOfferingUuids=[cloud.ids["disk"]]),
                      wait="1")[1]
    assert data["job"]["state"] == "succeeded", data
    return str(data["resource"]["uuid"])


def test_delete_zone_lists_then_deletes_everything(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    vms = [_vm(cloud, f"v{i}") for i in range(3)]
    zone = cloud.ids["zone"]
    plan = cloud.ok("DELETE", f"/v1/zones/{zone}")
    assert plan["deleted"] is False
    kinds = [a["type"] for a in plan["affected"]]
    assert kinds[-1] == "zones"
    assert {a["uuid"] for a in plan["affected"] if a["type"] == "vms"} == set(vms)
    assert kinds.index("vms") < kinds.index("l2-networks") < kinds.index("hosts") < kinds.index("clusters")
    # nothing was deleted yet
    assert cloud.ok("GET", "/v1/vms", count="1")["total"] == 3
    job = cloud.job("DELETE", f"/v1/zones/{zone}?confirm=1")
    assert job["state"] == "succeeded", job
    with cloud.ctl.db.read() as s:
        for coll, model in RESOURCES.items():
            if coll in ("images", "backup-storages", "instance-offerings", "disk-offerings"):
                continue
            assert s.scalar(select(func.count()).select_from(model)) == 0, coll
        assert s.scalar(select(func.count()).select_from(UsedIp)) == 0
    assert cloud.storage.files == {} and cloud.storage.cache == {}
    for host in cloud.hosts.values():
        assert host.domains == {} and host.bridges == set() and host.leases == {}


def test_delete_host_migrates_its_vms(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    vm = _vm(cloud, "v")
    src = cloud.ok("GET", f"/v1/vms/{vm}")["hostUuid"]
    plan = cloud.ok("DELETE", f"/v1/hosts/{src}")["affected"]
    assert {"type": "vms", "uuid": vm, "name": "v", "action": "migrate-or-stop"} in plan
    assert cloud.job("DELETE", f"/v1/hosts/{src}?confirm=1")["state"] == "succeeded"
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Running" and got["hostUuid"] not in (None, src)


def test_delete_last_host_stops_its_vms(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud, "v")
    host = next(iter(cloud.hosts.values()))
    assert cloud.job("DELETE", f"/v1/hosts/{host.host_uuid}?confirm=1")["state"] == "succeeded"
    got = cloud.ok("GET", f"/v1/vms/{vm}")
    assert got["state"] == "Stopped" and got["hostUuid"] is None
    assert host.domains == {}


def test_delete_primary_storage_deletes_vms_rooted_there(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud, "v")
    plan = cloud.ok("DELETE", f"/v1/primary-storages/{cloud.ids['ps']}")["affected"]
    assert any(a["type"] == "vms" and a["uuid"] == vm and a["action"] == "delete" for a in plan)
    assert cloud.job("DELETE", f"/v1/primary-storages/{cloud.ids['ps']}?confirm=1")["state"] == "succeeded"
    assert cloud.call("GET", f"/v1/vms/{vm}")[0] == 404
    assert cloud.storage.files == {}


def test_delete_ip_range_detaches_nics(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud, "v")
    rng = cloud.ok("GET", "/v1/ip-ranges", q=f"l3NetworkUuid={cloud.ids['l3']}")["items"][0]
    plan = cloud.ok("DELETE", f"/v1/ip-ranges/{rng['uuid']}")["affected"]
    assert [a["action"] for a in plan if a["type"] == "vm-nics"] == ["detach"]
    assert cloud.job("DELETE", f"/v1/ip-ranges/{rng['uuid']}?confirm=1")["state"] == "succeeded"
    with cloud.ctl.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VmNic)) == 0
    assert cloud.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"


def test_delete_vm(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm = _vm(cloud, "v")
    cloud.ok("POST", "/v1/tags", {"resourceUuid": vm, "tag": "web"})
    assert cloud.job("DELETE", f"/v1/vms/{vm}?confirm=1")["state"] == "succeeded"
    host = next(iter(cloud.hosts.values()))
    assert host.domains == {}
    data = cloud.ok("GET", "/v1/volumes", q="type=Data")["items"]
    assert len(data) == 1 and data[0]["vmUuid"] is None  # data volumes survive, detached
    assert cloud.ok("GET", "/v1/tags", count="1")["total"] == 0
