"""Replication of backups into a second SFTP backup storage, and a VM made from a
backup in another zone (fake hosts, two fake sftpbackup agents), on every
database: pull verified against the recorded digest, rollback of what reached
the target, idempotence, bad bodies; create-vm from a backup, rollback of each
step."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from controller.db.models import L3Network, UsedIp, Vm, VmNic, Volume, VolumeBackupStorageRef
from tests.unit.controller.fakeagent import FakeHost, fail
from tests.unit.controller.harness import Cloud, GiB

pytestmark = pytest.mark.sqlite_only

RECORDED = "sha256:" + "cd" * 32  # what the fake storageagent's upload answers


class Sites:
    """Zone A (the harness's basic cloud, a VM backed up into store A) and zone B
    (its own cluster, NFS storage, network, host and store B)."""

    def __init__(self, cloud: Cloud) -> None:
        cloud.basic(hosts=1)
        ids = cloud.ids
        self.cloud = cloud
        self.host_a = cloud.hosts["h1"]
        self.agent_a, self.bs_a = cloud.backup_agent("bsa", [ids["zone"]])
        self.zone_b = cloud.ok("POST", "/v1/zones", {"name": "z2"})["uuid"]
        cluster = cloud.ok("POST", "/v1/clusters", {"name": "c2", "zoneUuid": self.zone_b})["uuid"]
        self.ps_b = cloud.ok("POST", "/v1/primary-storages", {
            "name": "nfs2", "zoneUuid": self.zone_b, "type": "nfs", "url": "127.0.0.2:/export",
            "mountPath": "/mnt/nfs2", "clusterUuids": [cluster], "totalCapacity": 1000 * GiB})["uuid"]
        l2 = cloud.ok("POST", "/v1/l2-networks", {
            "name": "l2b", "zoneUuid": self.zone_b, "type": "novlan", "physicalInterface": "eth1",
            "clusterUuids": [cluster]})["uuid"]
        self.l3_b = cloud.ok("POST", "/v1/l3-networks", {
            "name": "pubb", "l2NetworkUuid": l2, "dns": ["10.20.0.1"],
            "ipRanges": [{"startIp": "10.20.0.10", "endIp": "10.20.0.50",
                          "netmask": "255.255.0.0", "gateway": "10.20.0.1"}]})["uuid"]
        self.host_b = cloud.add_host("hb1", cluster=cluster)
        self.agent_b, self.bs_b = cloud.backup_agent("bsb", [self.zone_b])
        data = cloud.succeeded("POST", "/v1/vms", cloud.vm_body(
            "web1", dataDiskOfferingUuids=[ids["disk"]]))
        self.vm = data["result"]
        cloud.succeeded("POST", f"/v1/vms/{self.vm['uuid']}/actions/stop", {})
        self.vb = cloud.succeeded("POST", f"/v1/vms/{self.vm['uuid']}/actions/backup",
                                  {"backupStorageUuid": self.bs_a})["result"]
        self.backups = cloud.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={self.vb['uuid']}",
                                sort="deviceId")["items"]

    def replicate(self, target: str | None = None) -> dict[str, Any]:
        return self.cloud.job("POST", f"/v1/vm-backups/{self.vb['uuid']}/actions/replicate",
                              {"backupStorageUuid": target or self.bs_b})

    def refs(self) -> set[tuple[str, str]]:
        with self.cloud.ctl.db.read() as s:
            return {(r.volume_backup_uuid, r.backup_storage_uuid)
                    for r in s.scalars(select(VolumeBackupStorageRef))}

    def counts(self) -> tuple[int, ...]:
        """VMs, volumes, NICs and the IPs of VMs (a network's DHCP server keeps its own)."""
        with self.cloud.ctl.db.read() as s:
            servers = [ip for ip in s.scalars(select(L3Network.dhcp_server_ip)) if ip]
            return (*(s.scalar(select(func.count()).select_from(m)) or 0 for m in (Vm, Volume, VmNic)),
                    s.scalar(select(func.count()).select_from(UsedIp).where(UsedIp.ip.not_in(servers)))
                    or 0)


@pytest.fixture
def sites(cloud: Cloud) -> Sites:
    return Sites(cloud)


def _ids(sites: Sites) -> set[str]:
    return {b["uuid"] for b in sites.backups}


def test_replicate_pulls_each_volume_backup_into_the_second_store_and_records_it(
        sites: Sites) -> None:
    assert sites.agent_b.held() == set() and sites.agent_a.held() == _ids(sites)
    job = sites.replicate()
    assert job["state"] == "succeeded", job
    assert job["kind"] == "replicate-vm-backup" and job["resourceUuid"] == sites.vb["uuid"]
    result = job["result"]
    assert set(result["replicated"]) == _ids(sites) and result["alreadyPresent"] == []
    assert result["chunksSent"] == 10 and result["bytesSent"] == 10 << 20
    # the target pulled, from store A's SFTP root, verified against the recorded digest
    pulls = [b for p, b in sites.agent_b.calls if p == "/backup/image/pull"]
    assert {p["imageUuid"] for p in pulls} == _ids(sites)
    assert {(p["remote"]["host"], p["remote"]["storeRoot"], p["sha256"]) for p in pulls} == {
        (sites.agent_a.ip, "/bsa", RECORDED.removeprefix("sha256:"))}
    assert all(p["root"] == "/srv/chroot/bsb" for p in pulls)
    assert not any(p == "/backup/image/push" for p, _ in sites.agent_a.calls)
    assert sites.agent_b.held() == _ids(sites)
    assert sites.refs() == {(u, bs) for u in _ids(sites) for bs in (sites.bs_a, sites.bs_b)}
    # again: nothing travels, nothing changes
    again = sites.replicate()
    assert again["state"] == "succeeded", again
    assert again["result"]["replicated"] == [] and set(again["result"]["alreadyPresent"]) == _ids(sites)
    assert len(sites.agent_b.pulled) == 2 and len(sites.refs()) == 4


def test_replicate_one_volume_backup(sites: Sites) -> None:
    one = sites.backups[1]["uuid"]
    job = sites.cloud.job("POST", f"/v1/volume-backups/{one}/actions/replicate",
                          {"backupStorageUuid": sites.bs_b})
    assert job["state"] == "succeeded" and job["kind"] == "replicate-volume-backup", job
    assert sites.agent_b.held() == {one} and (one, sites.bs_b) in sites.refs()
    # the VM backup's replication then copies only the other one
    job = sites.replicate()
    assert job["result"]["replicated"] == [sites.backups[0]["uuid"]]
    assert job["result"]["alreadyPresent"] == [one]


@pytest.mark.parametrize("where", ["target-answers", "source-manifest"])
def test_a_digest_mismatch_fails_the_job_and_leaves_nothing_in_the_target(
        sites: Sites, where: str) -> None:
    if where == "target-answers":  # the target store holds other content than recorded
        sites.agent_b.stored_digest = {"digest": "ab" * 32}
    else:  # the second backup's manifest in store A names another digest: the target refuses it
        root, image = next(k for k in sites.agent_a.images if k[1] == sites.backups[1]["uuid"])
        sites.agent_a.images[(root, image)]["digest"] = "ef" * 32
    refs = sites.refs()
    job = sites.replicate()
    assert job["state"] == "failed" and job["error"]["code"] == "DIGEST_MISMATCH", job
    assert sites.agent_b.held() == set() and sites.refs() == refs
    if where == "source-manifest":  # the first one had arrived, and left again
        assert sites.agent_b.pulled == [sites.backups[0]["uuid"]]
        assert any(p == "/backup/image/delete" for p, _ in sites.agent_b.calls)


@pytest.mark.parametrize("target,status", [
    ("0" * 32, 400), ("@same", 400), ("@ceph", 400), ("@noagent", 400), ("nope", 400)])
def test_bad_replicate_targets_are_400s_naming_the_field(sites: Sites, target: str, status: int) -> None:
    cloud = sites.cloud
    if target == "@same":
        target = sites.bs_a
    elif target == "@ceph":
        target = cloud.ok("POST", "/v1/backup-storages", {
            "name": "ceph1", "type": "ceph", "hostname": "10.9.9.9", "url": "backups"})["uuid"]
    elif target == "@noagent":
        target = cloud.ids["bs"]
    jobs = cloud.ok("GET", "/v1/jobs", count="1")["total"]
    for path in (f"/v1/vm-backups/{sites.vb['uuid']}/actions/replicate",
                 f"/v1/volume-backups/{sites.backups[0]['uuid']}/actions/replicate"):
        code, data = cloud.call("POST", path, {"backupStorageUuid": target})
        assert code == status and data["error"]["details"]["field"] == "backupStorageUuid", data
    assert cloud.ok("GET", "/v1/jobs", count="1")["total"] == jobs


def _create(sites: Sites, **body: Any) -> dict[str, Any]:
    return sites.cloud.job("POST", f"/v1/vm-backups/{sites.vb['uuid']}/actions/create-vm",
                           {"name": "web1-dr", **body})


def test_a_vm_is_rebuilt_in_the_second_zone_from_the_replicated_backup(sites: Sites) -> None:
    cloud = sites.cloud
    assert sites.replicate()["state"] == "succeeded"
    files_a = {k: v for k, v in cloud.storage.files.items() if k[0] == cloud.ids["ps"]}
    job = _create(sites, zoneUuid=sites.zone_b, l3NetworkUuids=[sites.l3_b])
    assert job["state"] == "succeeded", job
    assert job["kind"] == "create-vm-from-backup"
    vm = job["result"]
    assert vm["uuid"] == job["resourceUuid"] and vm["uuid"] != sites.vm["uuid"]
    assert vm["state"] == "Running" and vm["zoneUuid"] == sites.zone_b
    assert vm["hostUuid"] == sites.host_b.uuid  # type: ignore[attr-defined]
    assert (vm["cpuNum"], vm["memorySize"]) == (sites.vm["cpuNum"], sites.vm["memorySize"])
    vols = cloud.ok("GET", "/v1/volumes", q=f"vmUuid={vm['uuid']}", sort="deviceId")["items"]
    assert [(v["type"], v["status"], v["primaryStorageUuid"]) for v in vols] == [
        ("Root", "Ready", sites.ps_b), ("Data", "Ready", sites.ps_b)]
    assert [v["size"] for v in vols] == [b["size"] for b in sites.backups]
    for v in vols:
        assert (sites.ps_b, v["installPath"]) in cloud.storage.files
    # each volume came from store B (zone B's), hash-checked, straight to its path
    restores = [b for p, b in sites.host_b.calls if p == "/storage/volume/create-from-store"]
    assert [(r["source"]["host"], r["source"]["imageId"], r["digest"], r["installPath"])
            for r in restores] == [
        (sites.agent_b.ip, b["uuid"], RECORDED, v["installPath"])
        for b, v in zip(sites.backups, vols, strict=True)]
    assert not any(k[0] == sites.ps_b for k in cloud.storage.cache)
    nics = cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm['uuid']}")["items"]
    old = cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={sites.vm['uuid']}")["items"]
    assert [n["l3NetworkUuid"] for n in nics] == [sites.l3_b]
    assert nics[0]["mac"] != old[0]["mac"] and nics[0]["ip"].startswith("10.20.0.")
    assert sites.host_b.leases[sites.l3_b] == {nics[0]["mac"]: nics[0]["ip"]}
    start = [b for p, b in sites.host_b.calls if p == "/vm/start"][-1]
    assert start["rootVolume"]["installPath"] == "/mnt/nfs2/" + vols[0]["installPath"]
    assert {k: v for k, v in cloud.storage.files.items() if k[0] == cloud.ids["ps"]} == files_a


def test_a_vm_from_a_backup_in_its_own_zone_takes_the_backed_up_vms_networks(sites: Sites) -> None:
    job = _create(sites)
    assert job["state"] == "succeeded", job
    vm = job["result"]
    assert vm["zoneUuid"] == sites.cloud.ids["zone"]
    assert vm["instanceOfferingUuid"] == sites.cloud.ids["offering"]
    nics = sites.cloud.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm['uuid']}")["items"]
    assert [n["l3NetworkUuid"] for n in nics] == [sites.cloud.ids["l3"]]
    restores = [b for p, b in sites.host_a.calls if p == "/storage/volume/create-from-store"]
    assert {r["source"]["host"] for r in restores[-2:]} == {sites.agent_a.ip}


@pytest.mark.parametrize("body,field", [
    ({"zoneUuid": "@b"}, "l3NetworkUuids"),  # the backup's network is in zone A
    ({"zoneUuid": "@b", "l3NetworkUuids": ["@l3a"]}, "l3NetworkUuids"),
    ({"zoneUuid": "@b", "l3NetworkUuids": ["@l3b"]}, "backupStorageUuid"),  # not replicated
    ({"backupStorageUuid": "@bsb"}, "backupStorageUuid"),  # not attached to zone A
    ({"zoneUuid": "0" * 32}, "zoneUuid"), ({"instanceOfferingUuid": "0" * 32}, "instanceOfferingUuid"),
    ({"clusterUuid": "0" * 32}, "clusterUuid"), ({"name": ""}, "name")])
def test_bad_create_vm_from_backup_bodies_are_400s_naming_the_field(
        sites: Sites, body: dict[str, Any], field: str) -> None:
    subst = {"@b": sites.zone_b, "@l3a": sites.cloud.ids["l3"], "@l3b": sites.l3_b, "@bsb": sites.bs_b}
    body = {k: ([subst.get(x, x) for x in v] if isinstance(v, list) else subst.get(v, v))
            for k, v in body.items()}
    counts = sites.counts()
    code, data = sites.cloud.call("POST", f"/v1/vm-backups/{sites.vb['uuid']}/actions/create-vm",
                                  {"name": "dr", **body})
    assert code == 400 and data["error"]["details"]["field"] == field, data
    assert sites.counts() == counts


@pytest.mark.parametrize("fault", ["/storage/volume/create-from-store", "/network/dhcp/apply",
                                   "/vm/start"])
def test_a_failed_create_vm_from_backup_leaves_no_vm_volume_ip_or_lease(sites: Sites, fault: str) -> None:
    cloud = sites.cloud
    assert sites.replicate()["state"] == "succeeded"
    counts, files = sites.counts(), dict(cloud.storage.files)
    host: FakeHost = sites.host_b
    host.faults[fault] = "INTERNAL"
    job = _create(sites, zoneUuid=sites.zone_b, l3NetworkUuids=[sites.l3_b])
    assert job["state"] == "failed" and job["error"]["code"] == "INTERNAL", job
    assert sites.counts() == counts and cloud.storage.files == files
    assert not host.leases.get(sites.l3_b) and not host.domains
    assert not any(k[0] == sites.ps_b for k in cloud.storage.cache)
    host_row = cloud.ok("GET", f"/v1/hosts/{host.uuid}")  # type: ignore[attr-defined]
    assert (host_row["availableCpu"], host_row["availableMemory"]) == (
        host_row["totalCpu"], host_row["totalMemory"])


def test_a_create_vm_from_backup_failing_on_the_data_volume_removes_the_root_one(sites: Sites) -> None:
    assert sites.replicate()["state"] == "succeeded"
    counts, files = sites.counts(), dict(sites.cloud.storage.files)
    host, seen = sites.host_b, []
    original = host.do_storage_volume_create_from_store

    def second_fails(c: Any) -> dict[str, Any]:
        seen.append(c.install_path)
        return original(c) if len(seen) == 1 else fail("NO_SPACE")
    host.do_storage_volume_create_from_store = second_fails  # type: ignore[method-assign]
    job = _create(sites, zoneUuid=sites.zone_b, l3NetworkUuids=[sites.l3_b])
    assert job["state"] == "failed" and job["error"]["code"] == "NO_SPACE", job
    assert len(seen) == 2 and sites.counts() == counts and sites.cloud.storage.files == files

