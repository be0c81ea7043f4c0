"""Security groups through the API on the fake hosts: what the hosts are sent when
rules change, NICs join and leave, VMs start, migrate and go, and groups are
deleted; bad bodies are 400s naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from controller.db.models import VmNicSecurityGroupRef
from tests.unit.controller.fakeagent import FakeHost
from tests.unit.controller.harness import Cloud

pytestmark = pytest.mark.sqlite_only

APPLY = "/network/security-groups/apply"


def _vm(cloud: Cloud, name: str) -> tuple[dict[str, Any], dict[str, Any], FakeHost]:
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body(name), wait="1")
    assert status == 200 and data["job"]["state"] == "succeeded", data
    vm = cloud.ok("GET", f"/v1/vms/{data['resource']['uuid']}")
    nic = cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm['uuid']}")["items"][0]
    host = next(h for h in cloud.hosts.values() if h.host_uuid == vm["hostUuid"])
    return vm, nic, host


def _group(cloud: Cloud, name: str) -> str:
    return str(cloud.ok("POST", "/v1/security-groups", {"name": name})["uuid"])


def _applies(host: FakeHost) -> list[dict[str, Any]]:
    return [b for p, b in host.calls if p == APPLY]


def _members(cloud: Cloud, group: str) -> list[str]:
    with cloud.ctl.db.read() as s:
        return list(s.scalars(select(VmNicSecurityGroupRef.vm_nic_uuid).where(
            VmNicSecurityGroupRef.security_group_uuid == group)))


def _rule(cloud: Cloud, group: str, **rule: Any) -> dict[str, Any]:
    return cloud.job("POST", "/v1/security-group-rules", {"securityGroupUuid": group, **rule})


def test_a_new_group_allows_all_egress_and_nothing_reaches_hosts_until_a_nic_joins(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    _vm(cloud, "web1")
    g = _group(cloud, "web")
    [rule] = cloud.ok("GET", "/v1/security-group-rules", q=f"securityGroupUuid={g}")["items"]
    assert (rule["direction"], rule["protocol"], rule["cidr"]) == ("egress", "all", "0.0.0.0/0")
    job = _rule(cloud, g, direction="ingress", protocol="tcp", portStart=22)
    assert job["state"] == "succeeded", job
    assert all(not _applies(h) for h in cloud.hosts.values()), "no NIC in the group: no host needs it"


def test_attaching_a_nic_sends_its_filter_and_rules_follow_live(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    vm, nic, host = _vm(cloud, "web1")
    g = _group(cloud, "web")
    job = cloud.job("POST", f"/v1/security-groups/{g}/actions/attach", {"vmNicUuids": [nic["uuid"]]})
    assert job["state"] == "succeeded" and job["result"]["vmNicUuids"] == [nic["uuid"]], job
    [sent] = _applies(host)
    assert sent["nics"] == [{"vmUuid": vm["uuid"], "mac": nic["mac"], "ip": nic["ip"], "securityGroups": [g]}]
    assert [x["uuid"] for x in sent["groups"]] == [g]
    _rule(cloud, g, direction="ingress", protocol="tcp", portStart=80, portEnd=81, cidr="10.0.0.0/8")
    last = _applies(host)[-1]
    assert last["nics"] == [] and last["groups"][0]["rules"][-1] == {
        "direction": "ingress", "protocol": "tcp", "portStart": 80, "portEnd": 81, "cidr": "10.0.0.0/8"}
    # a stop and start carries the NIC's groups in the start
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/stop", {})
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/start", {})
    start = [b for p, b in host.calls if p == "/vm/start"][-1]
    assert start["nics"][0]["securityGroups"] == [g]
    assert [x["uuid"] for x in start["securityGroups"]] == [g] and len(start["securityGroups"][0]["rules"]) == 2
    # a reconnecting host is sent its group NICs again (rules may have changed meanwhile)
    before = len(_applies(host))
    cloud.succeeded("POST", f"/v1/hosts/{host.host_uuid}/actions/reconnect", {})
    assert len(_applies(host)) == before + 1 and _applies(host)[-1]["nics"][0]["mac"] == nic["mac"]
    # leaving the group: the NIC's filter with no groups (open again)
    cloud.succeeded("POST", f"/v1/security-groups/{g}/actions/detach", {"vmNicUuids": [nic["uuid"]]})
    assert _applies(host)[-1]["nics"][0]["securityGroups"] == []


def test_a_groups_members_are_read_with_their_vms_and_addresses(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    web_vm, web_nic, _ = _vm(cloud, "web1")
    _, other_nic, _ = _vm(cloud, "web2")
    g = _group(cloud, "web")
    assert cloud.ok("GET", f"/v1/security-groups/{g}/members") == {
        "securityGroupUuid": g, "total": 0, "members": []}
    cloud.succeeded("POST", f"/v1/security-groups/{g}/actions/attach", {"vmNicUuids": [web_nic["uuid"]]})
    assert cloud.ok("GET", f"/v1/security-groups/{g}/members")["members"] == [{
        "vmNicUuid": web_nic["uuid"], "vmUuid": web_vm["uuid"], "l3NetworkUuid": web_nic["l3NetworkUuid"],
        "ip": web_nic["ip"], "mac": web_nic["mac"]}]
    cloud.succeeded("POST", f"/v1/security-groups/{g}/actions/attach", {"vmNicUuids": [other_nic["uuid"]]})
    read = cloud.ok("GET", f"/v1/security-groups/{g}/members")
    assert read["total"] == 2 and {m["vmNicUuid"] for m in read["members"]} == set(_members(cloud, g))
    status, err = cloud.call("GET", "/v1/security-groups/00000000-0000-4000-8000-000000000000/members")
    assert status == 404, err


def test_a_rule_naming_a_group_follows_its_members(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    _, web_nic, host = _vm(cloud, "web1")
    _, app_nic, _ = _vm(cloud, "app1")
    web, app = _group(cloud, "web"), _group(cloud, "app")
    cloud.succeeded("POST", f"/v1/security-groups/{web}/actions/attach", {"vmNicUuids": [web_nic["uuid"]]})
    _rule(cloud, web, direction="ingress", protocol="tcp", portStart=5432, remoteGroupUuid=app)
    rules = _applies(host)[-1]["groups"][0]["rules"]
    assert not [r for r in rules if r.get("portStart") == 5432], "app has no member yet: no address"
    cloud.succeeded("POST", f"/v1/security-groups/{app}/actions/attach", {"vmNicUuids": [app_nic["uuid"]]})
    web_sent = [b for b in _applies(host) if b["groups"] and b["groups"][0]["uuid"] == web][-1]
    assert {"direction": "ingress", "protocol": "tcp", "portStart": 5432,
            "cidr": f"{app_nic['ip']}/32"} in web_sent["groups"][0]["rules"]
    # the app VM goes: its address leaves web's rules
    cloud.succeeded("DELETE", f"/v1/vms/{app_nic['vmUuid']}?confirm=1")
    web_sent = [b for b in _applies(host) if b["groups"] and b["groups"][0]["uuid"] == web][-1]
    assert not [r for r in web_sent["groups"][0]["rules"] if r.get("portStart") == 5432]


def test_a_migration_prepares_the_nic_filters_on_the_destination_first(cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    vm, nic, src = _vm(cloud, "web1")
    dst = next(h for h in cloud.hosts.values() if h is not src)
    g = _group(cloud, "web")
    cloud.succeeded("POST", f"/v1/security-groups/{g}/actions/attach", {"vmNicUuids": [nic["uuid"]]})
    cloud.succeeded("POST", f"/v1/vms/{vm['uuid']}/actions/migrate", {})
    paths = [p for p, _ in dst.calls]
    assert APPLY in paths
    [prepared] = _applies(dst)
    assert prepared["nics"][0]["mac"] == nic["mac"] and prepared["nics"][0]["securityGroups"] == [g]
    assert [p for p, _ in src.calls].index("/vm/migrate") >= 0


def test_a_failed_push_undoes_the_attach_and_the_rule(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    _, nic, host = _vm(cloud, "web1")
    g = _group(cloud, "web")
    host.faults[APPLY] = "HYPERVISOR_BUSY"
    job = cloud.job("POST", f"/v1/security-groups/{g}/actions/attach", {"vmNicUuids": [nic["uuid"]]})
    assert job["state"] == "failed" and job["error"]["code"] == "HYPERVISOR_BUSY", job
    del host.faults[APPLY]
    cloud.succeeded("POST", f"/v1/security-groups/{g}/actions/attach", {"vmNicUuids": [nic["uuid"]]})
    host.faults[APPLY] = "HYPERVISOR_BUSY"
    job = _rule(cloud, g, direction="ingress", protocol="udp", portStart=53)
    assert job["state"] == "failed", job
    del host.faults[APPLY]
    rules = cloud.ok("GET", "/v1/security-group-rules", q=f"securityGroupUuid={g}")["items"]
    assert [r["protocol"] for r in rules] == ["all"], "the failed rule must not stay"


def test_deleting_a_group_takes_its_nics_out_and_removes_it_from_the_hosts(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    _, nic, host = _vm(cloud, "web1")
    web, app = _group(cloud, "web"), _group(cloud, "app")
    cloud.succeeded("POST", f"/v1/security-groups/{web}/actions/attach", {"vmNicUuids": [nic["uuid"]]})
    _rule(cloud, web, direction="ingress", protocol="tcp", portStart=1, portEnd=65535, remoteGroupUuid=app)
    preview = cloud.ok("DELETE", f"/v1/security-groups/{app}")
    assert {i["type"] for i in preview["affected"]} == {"security-groups", "security-group-rules"}, preview
    cloud.succeeded("DELETE", f"/v1/security-groups/{app}?confirm=1")
    assert [r["protocol"] for r in cloud.ok("GET", "/v1/security-group-rules",
                                             q=f"securityGroupUuid={web}")["items"]] == ["all"]
    cloud.succeeded("DELETE", f"/v1/security-groups/{web}?confirm=1")
    assert _applies(host)[-1]["nics"][0]["securityGroups"] == []
    deleted = [b["groupUuids"] for p, b in host.calls if p == "/network/security-groups/delete"]
    assert deleted == [[app], [web]]
    assert cloud.ok("GET", "/v1/security-groups")["items"] == []


def test_bad_bodies_name_the_field(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    g = _group(cloud, "web")
    for body, field in (
        ({"direction": "in", "protocol": "tcp"}, "direction"),
        ({"direction": "ingress", "protocol": "icmp", "portStart": 8}, "portStart"),
        ({"direction": "ingress", "protocol": "tcp", "portStart": 90, "portEnd": 80}, "portEnd"),
        ({"direction": "ingress", "protocol": "tcp", "cidr": "10.0.0.1/8"}, "cidr"),
        ({"direction": "ingress", "protocol": "tcp", "cidr": "10.0.0.0/8", "remoteGroupUuid": g}, "remoteGroupUuid"),
        ({"direction": "ingress", "protocol": "tcp", "remoteGroupUuid": "0" * 32}, "remoteGroupUuid"),
    ):
        status, data = cloud.call("POST", "/v1/security-group-rules", {"securityGroupUuid": g, **body})
        assert status == 400 and field in str(data), (body, status, data)
    status, data = cloud.call("POST", "/v1/security-group-rules",
                              {"securityGroupUuid": "0" * 32, "direction": "ingress", "protocol": "all"})
    assert status == 400 and "securityGroupUuid" in str(data)
    status, data = cloud.call("POST", f"/v1/security-groups/{g}/actions/attach", {"vmNicUuids": ["1" * 32]})
    assert status == 400 and "vmNicUuids.0" in str(data), data


def test_a_vm_created_in_groups_starts_with_their_filters_and_joins_the_rules_naming_them(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    db_vm, db_nic, host = _vm(cloud, "db1")
    web, dbg = _group(cloud, "web"), _group(cloud, "db")
    cloud.succeeded("POST", f"/v1/security-groups/{dbg}/actions/attach", {"vmNicUuids": [db_nic["uuid"]]})
    _rule(cloud, dbg, direction="ingress", protocol="tcp", portStart=5432, remoteGroupUuid=web)
    _rule(cloud, web, direction="ingress", protocol="tcp", portStart=443)

    body = cloud.vm_body("web1", securityGroupUuids=[web, web])  # a repeat is one membership
    status, data = cloud.call("POST", "/v1/vms", body, wait="1")
    assert status == 200 and data["job"]["state"] == "succeeded", data
    vm = data["resource"]
    nic = cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm['uuid']}")["items"][0]
    assert _members(cloud, web) == [nic["uuid"]]
    start = [b for p, b in host.calls if p == "/vm/start" and b["vmUuid"] == vm["uuid"]][-1]
    assert start["nics"][0]["securityGroups"] == [web]
    assert [g["uuid"] for g in start["securityGroups"]] == [web]
    assert {"direction": "ingress", "protocol": "tcp", "portStart": 443,
            "cidr": "0.0.0.0/0"} in start["securityGroups"][0]["rules"]
    # db's rule naming web now lets the new VM's address in, on the host running db1
    db_sent = [b for b in _applies(host) if b["groups"] and b["groups"][0]["uuid"] == dbg][-1]
    assert {"direction": "ingress", "protocol": "tcp", "portStart": 5432,
            "cidr": f"{nic['ip']}/32"} in db_sent["groups"][0]["rules"]
    assert db_vm["uuid"] != vm["uuid"]


def test_a_create_naming_an_unknown_group_is_a_400_and_writes_nothing(cloud: Cloud) -> None:
    cloud.basic(hosts=1)
    web = _group(cloud, "web")
    missing = "0" * 32
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body("web1", securityGroupUuids=[web, missing]))
    assert status == 400 and data["error"]["details"]["field"] == "securityGroupUuids.1", data
    assert cloud.ok("GET", "/v1/vms")["items"] == []
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body("web1", securityGroupUuids=["not a uuid"]))
    assert status == 400 and "securityGroupUuids" in str(data["error"]), data


class _Once(dict[str, str]):
    """Faults that fail the next call of their path only."""

    def __getitem__(self, path: str) -> str:
        return self.pop(path)


def test_a_create_failing_after_its_start_leaves_no_membership_and_takes_its_address_back(
        cloud: Cloud) -> None:
    cloud.basic(hosts=2)
    _, db_nic, db_host = _vm(cloud, "db1")
    other = next(h for h in cloud.hosts.values() if h is not db_host)
    web, dbg = _group(cloud, "web"), _group(cloud, "db")
    cloud.succeeded("POST", f"/v1/security-groups/{dbg}/actions/attach", {"vmNicUuids": [db_nic["uuid"]]})
    _rule(cloud, dbg, direction="ingress", protocol="tcp", portStart=5432, remoteGroupUuid=web)
    # the VM starts on the other host; telling db1's host of its address fails once
    db_host.faults = _Once({APPLY: "INJECTED"})
    status, data = cloud.call("POST", "/v1/vms", cloud.vm_body("web1", securityGroupUuids=[web],
                                                               hostUuid=other.host_uuid), wait="1")
    assert status == 200 and data["job"]["state"] == "failed", data
    assert data["job"]["error"]["code"] == "INJECTED", data["job"]
    assert [p for p, _ in other.calls].count("/vm/start") == 1 and not other.domains  # started, destroyed
    assert _members(cloud, web) == []
    db_sent = [b for b in _applies(db_host) if b["groups"] and b["groups"][0]["uuid"] == dbg][-1]
    assert not [r for r in db_sent["groups"][0]["rules"] if r.get("portStart") == 5432]
