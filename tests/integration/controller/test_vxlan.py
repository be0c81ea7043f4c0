"""VXLAN L2 networks through the controller: VNI, each host's VTEP, peers kept in step.

The hosts are fake agents (each records the commands it got); the agents'
own handling of the commands is tested in tests/unit/kvmagent/test_l2.py and,
in network namespaces, in tests/integration/kvmagent/test_network.py.
"""

from __future__ import annotations

import datetime
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from controller.db.base import Database
from controller.db.migrate import upgrade
from controller.db.models import Host
from tests.unit.controller.fakeagent import FakeHost
from tests.unit.controller.harness import AGENT_TOKEN, API_TOKEN, Cloud

pytestmark = pytest.mark.sqlite_only

VNI = 5001


def _vxlan(cloud: Cloud, vni: int = VNI) -> tuple[str, str]:
    """A vxlan L2 network on the cluster and an L3 network on it: their uuids."""
    l2 = cloud.ok("POST", "/v1/l2-networks", {
        "name": "overlay", "zoneUuid": cloud.ids["zone"], "type": "vxlan", "vni": vni,
        "physicalInterface": "eth0", "clusterUuids": [cloud.ids["cluster"]]})
    assert l2["vni"] == vni and l2["vlan"] is None
    l3 = cloud.ok("POST", "/v1/l3-networks", {
        "name": "tenant", "l2NetworkUuid": l2["uuid"],
        "ipRanges": [{"startIp": "172.16.0.10", "endIp": "172.16.0.200",
                      "netmask": "255.255.255.0", "gateway": "172.16.0.1"}]})
    return str(l2["uuid"]), str(l3["uuid"])


def _vm_on(cloud: Cloud, host: FakeHost, name: str, l3: str) -> str:
    host_uuid = host.uuid  # type: ignore[attr-defined]
    job = cloud.succeeded("POST", "/v1/vms", cloud.vm_body(name, l3NetworkUuids=[l3], hostUuid=host_uuid))
    return str(job["resourceUuid"])


def _creates(host: FakeHost) -> list[dict[str, Any]]:
    return [b for p, b in host.calls if p == "/network/l2/create" and b.get("type") == "vxlan"]


def test_each_host_gets_the_vni_its_vtep_and_the_others_as_peers(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    h1, h2 = cloud.hosts["h1"], cloud.hosts["h2"]
    _, l3 = _vxlan(cloud)
    assert _creates(h1) == [] and _creates(h2) == []  # nothing until a VM needs it

    _vm_on(cloud, h1, "a", l3)
    # the network in use is realised on every connected host of the cluster
    (c1,), (c2,) = _creates(h1), _creates(h2)
    assert (c1["vni"], c1["vtepIp"], c1["peers"]) == (VNI, h1.ip, [h2.ip])
    assert (c2["vni"], c2["vtepIp"], c2["peers"]) == (VNI, h2.ip, [h1.ip])
    assert c1["bridgeName"] == c2["bridgeName"] and c1["physicalInterface"] == "eth0"

    _vm_on(cloud, h2, "b", l3)  # nothing changed: nobody is sent anything again
    assert len(_creates(h1)) == len(_creates(h2)) == 1

    h3 = cloud.add_host("h3")  # a new host joins: it and the earlier ones learn the peer
    assert _creates(h1)[-1]["peers"] == [h2.ip, h3.ip]
    assert _creates(h2)[-1]["peers"] == [h1.ip, h3.ip]
    assert [(c["vtepIp"], c["peers"]) for c in _creates(h3)] == [(h3.ip, [h1.ip, h2.ip])]

    _vm_on(cloud, h3, "c", l3)
    assert len(_creates(h1)) == len(_creates(h2)) == 2 and len(_creates(h3)) == 1


def test_a_host_leaving_is_dropped_from_the_others_peers(cloud: Cloud) -> None:
    cloud.basic(hosts=3)
    h1, h2, h3 = (cloud.hosts[n] for n in ("h1", "h2", "h3"))
    _, l3 = _vxlan(cloud)
    _vm_on(cloud, h1, "a", l3)
    assert _creates(h1)[-1]["peers"] == [h2.ip, h3.ip]

    job = cloud.job("DELETE", f"/v1/hosts/{h3.uuid}?confirm=1")  # type: ignore[attr-defined]
    assert job["state"] == "succeeded", job
    assert _creates(h1)[-1]["peers"] == [h2.ip]
    assert _creates(h2)[-1]["peers"] == [h1.ip]


def test_vtep_ip_is_set_at_add_and_by_update_and_used_as_the_local_address(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    h1, h2 = cloud.hosts["h1"], cloud.hosts["h2"]
    assert cloud.ok("GET", f"/v1/hosts/{h1.uuid}")["vtepIp"] == h1.ip  # type: ignore[attr-defined]
    host = cloud.ok("PATCH", f"/v1/hosts/{h2.uuid}", {"vtepIp": "192.0.2.2"})  # type: ignore[attr-defined]
    assert host["vtepIp"] == "192.0.2.2"
    _, l3 = _vxlan(cloud)
    _vm_on(cloud, h1, "a", l3)
    assert _creates(h1)[-1]["peers"] == ["192.0.2.2"]
    assert _creates(h2)[-1]["vtepIp"] == "192.0.2.2"

    cloud.ok("PATCH", f"/v1/hosts/{h2.uuid}", {"vtepIp": "192.0.2.3"})  # type: ignore[attr-defined]
    jobs = cloud.ok("GET", "/v1/jobs", q=f"resourceUuid={h2.uuid}", sort="-createDate")  # type: ignore[attr-defined]
    job = next(j for j in jobs["items"] if j["kind"] == "sync-vxlan")
    assert cloud.ok("GET", f"/v1/jobs/{job['uuid']}", wait="1")["job"]["state"] == "succeeded"
    assert _creates(h1)[-1]["peers"] == ["192.0.2.3"]
    assert _creates(h2)[-1]["vtepIp"] == "192.0.2.3"
    cloud.succeeded("POST", f"/v1/hosts/{h2.uuid}/actions/reconnect", {})  # type: ignore[attr-defined]
    assert _creates(h2)[-1]["vtepIp"] == "192.0.2.3"  # a reconnect sends the host its lists again


def test_a_host_without_a_vtep_cannot_take_a_vm_on_a_vxlan_network(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    h1 = cloud.hosts["h1"]
    _, l3 = _vxlan(cloud)
    with cloud.ctl.db.write() as s:  # a host added by name: no IPv4 management address
        row = s.get(Host, h1.uuid)  # type: ignore[attr-defined]
        assert row is not None
        row.vtep_ip = None
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body("a", l3NetworkUuids=[l3]), wait="1")
    assert status == 200 and data["job"]["state"] == "failed"
    assert "vtepIp" in str(data["job"]), data


def test_deleting_the_l2_network_removes_the_device_from_every_host(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    l2, l3 = _vxlan(cloud)
    vm = _vm_on(cloud, cloud.hosts["h1"], "a", l3)
    bridge = _creates(cloud.hosts["h1"])[0]["bridgeName"]
    assert all(bridge in h.bridges for h in cloud.hosts.values())
    plan = cloud.ok("DELETE", f"/v1/l2-networks/{l2}")
    assert {(a["type"], a["uuid"]) for a in plan["affected"]} >= {("l2-networks", l2), ("l3-networks", l3)}
    cloud.succeeded("DELETE", f"/v1/l2-networks/{l2}?confirm=1")
    for h in cloud.hosts.values():
        assert bridge not in h.bridges
        deletes = [b for p, b in h.calls if p == "/network/l2/delete"]
        assert [(d["type"], d["vni"], d["bridgeName"]) for d in deletes] == [("vxlan", VNI, bridge)]
    assert cloud.ok("GET", f"/v1/vms/{vm}")["uuid"] == vm
    # the VNI is free again
    _vxlan(cloud)


@pytest.mark.parametrize(("body", "field"), [
    ({"type": "vxlan"}, "vni"),
    ({"type": "vxlan", "vni": 0}, "vni"),
    ({"type": "vxlan", "vni": 16777216}, "vni"),
    ({"type": "vxlan", "vni": 10, "vlan": 10}, "vlan"),
    ({"type": "vlan", "vlan": 10, "vni": 10}, "vni"),
    ({"type": "vlan", "vlan": 4095}, "vlan"),
    ({"type": "vlan"}, "vlan"),
    ({"type": "novlan", "vni": 7}, "vni"),
])
def test_bad_l2_bodies_are_400_naming_the_field(cloud: Cloud, body: dict[str, Any], field: str) -> None:
    cloud.basic(hosts=0)
    status, data = cloud.call("POST", "/v1/l2-networks", {
        "name": "x", "zoneUuid": cloud.ids["zone"], "physicalInterface": "eth0", **body})
    assert status == 400, data
    assert field in str(data["error"]), data


def test_a_vni_is_unique_in_its_zone_and_a_vtep_must_be_ipv4(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    _vxlan(cloud)
    status, data = cloud.call("POST", "/v1/l2-networks", {
        "name": "again", "zoneUuid": cloud.ids["zone"], "type": "vxlan", "vni": VNI,
        "physicalInterface": "eth0"})
    assert status == 400 and data["error"]["details"]["field"] == "vni", data
    other = cloud.ok("POST", "/v1/zones", {"name": "z2"})["uuid"]
    cloud.ok("POST", "/v1/l2-networks", {"name": "elsewhere", "zoneUuid": other, "type": "vxlan",
                                         "vni": VNI, "physicalInterface": "eth0"})
    h1 = cloud.hosts["h1"]
    for bad in ("fd00::1", "10.0.0.256", "host.example"):
        status, data = cloud.call("PATCH", f"/v1/hosts/{h1.uuid}", {"vtepIp": bad})  # type: ignore[attr-defined]
        assert status == 400 and "vtepIp" in str(data["error"]), (bad, data)
    status, data = cloud.call("POST", "/v1/hosts", {
        "name": "h9", "clusterUuid": cloud.ids["cluster"], "managementIp": "10.9.9.9", "vtepIp": "nope"})
    assert status == 400 and "vtepIp" in str(data["error"]), data


@pytest.mark.every_database
def test_migration_0007_moves_old_vnis_and_gives_hosts_their_ipv4_as_vtep(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db, "0006")
        now = datetime.datetime(2026, 1, 1)
        common = {"state": "Enabled", "create_date": now, "last_op_date": now}
        with db.engine.begin() as c:
            c.execute(text("INSERT INTO zones (uuid, name, state, create_date, last_op_date) "
                           "VALUES ('z', 'z', :state, :create_date, :last_op_date)"), common)
            c.execute(text("INSERT INTO clusters (uuid, name, zone_uuid, hypervisor_type, state, create_date, "
                           "last_op_date) VALUES ('c', 'c', 'z', 'KVM', :state, :create_date, :last_op_date)"),
                      common)
            for uuid, ip in (("h4", "10.1.2.3"), ("hn", "kvm-7.example")):
                c.execute(text(
                    "INSERT INTO hosts (uuid, name, zone_uuid, cluster_uuid, management_ip, agent_url, status, "
                    "cpu_num, total_cpu, available_cpu, total_memory, available_memory, state, create_date, "
                    "last_op_date) VALUES (:uuid, :uuid, 'z', 'c', :ip, 'http://x:7070', 'Connected', "
                    "0, 0, 0, 0, 0, :state, :create_date, :last_op_date)"), {"uuid": uuid, "ip": ip, **common})
            for uuid, kind, vlan in (("vx", "vxlan", 5000), ("vl", "vlan", 100)):
                c.execute(text(
                    "INSERT INTO l2_networks (uuid, name, zone_uuid, type, physical_interface, vlan, state, "
                    "create_date, last_op_date) VALUES (:uuid, :uuid, 'z', :kind, 'eth0', :vlan, :state, "
                    ":create_date, :last_op_date)"), {"uuid": uuid, "kind": kind, "vlan": vlan, **common})
        upgrade(db)
        with db.engine.begin() as c:
            assert dict(c.execute(text("SELECT uuid, vtep_ip FROM hosts")).all()) == {"h4": "10.1.2.3", "hn": None}
            assert sorted(c.execute(text("SELECT uuid, vlan, vni FROM l2_networks")).all()) == [
                ("vl", 100, None), ("vx", None, 5000)]
    finally:
        db.engine.dispose()


def test_hosts_joining_while_vms_start_end_with_every_peer_everywhere(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    _, l3 = _vxlan(cloud)
    _vm_on(cloud, cloud.hosts["h1"], "first", l3)
    joining = [FakeHost(f"10.5.0.{i}", cloud.storage, cloud.deliver, AGENT_TOKEN) for i in (1, 2)]
    for h in joining:
        cloud.transport.register(h.kvm_url, h.handle)
        cloud.transport.register(h.storage_url, h.handle)

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = cloud.app.test_client(use_cookies=False)  # one per thread
        r = client.post(path, json=body, query_string={"wait": "1"},
                        headers={"Authorization": f"Bearer {API_TOKEN}"})
        job: dict[str, Any] = r.get_json()["job"]
        return job

    bodies = [("/v1/hosts", {"name": f"j{i}", "clusterUuid": cloud.ids["cluster"], "managementIp": h.ip,
                             "agentUrl": h.kvm_url, "storageAgentUrl": h.storage_url})
              for i, h in enumerate(joining)]
    bodies += [("/v1/vms", cloud.vm_body(f"v{i}", l3NetworkUuids=[l3])) for i in range(4)]
    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(lambda pb: post(*pb), bodies))
    assert [j for j in jobs if j["state"] != "succeeded"] == []
    everyone = [cloud.hosts["h1"], cloud.hosts["h2"], *joining]
    for h in everyone:
        assert _creates(h)[-1]["peers"] == sorted((o.ip for o in everyone if o is not h),
                                                  key=ipaddress.IPv4Address), h.ip
