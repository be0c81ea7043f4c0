"""A controller in-process with fake hosts behind its transport seam (for tests)."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from controller.dispatch.transport import InProcessTransport
from controller.server import create_app
from controller.settings import Settings
from tests.unit.controller.fakeagent import FakeHost, SharedStorage
from tests.unit.controller.fakebackup import FakeBackupAgent

API_TOKEN = "api-token-0123456789abcdef"
AGENT_TOKEN = "agent-token-0123456789abcdef"
DIGEST = "sha256:" + "ab" * 32
GiB = 1 << 30


class Cloud:
    """The controller app, its API client and the fake hosts it manages."""

    def __init__(self, db_url: str, transport: InProcessTransport | None = None, **settings: Any) -> None:
        self.transport = transport or InProcessTransport()  # another Cloud's: the same fake agents
        settings.setdefault("backup_schedule", False)  # tests tick it with their own clock
        self.settings = Settings(db_url=db_url, api_tokens=[API_TOKEN], agent_token=AGENT_TOKEN,
                                 tracker=False, public_url="http://controller.test",
                                 **settings)
        self.app = create_app(self.settings, self.transport)
        self.ctl = self.app.extensions["kvmcloud"]
        self.client = self.app.test_client(use_cookies=False)
        self.storage = SharedStorage()
        self.hosts: dict[str, FakeHost] = {}
        self.ids: dict[str, str] = {}

    def close(self) -> None:
        self.ctl.close()

    def deliver(self, task_uuid: str, kind: str, body: dict[str, Any]) -> None:
        client = self.app.test_client(use_cookies=False)
        r = client.post("/v1/agent-callbacks", json=body, headers={
            "taskuuid": task_uuid, "kind": kind, "Authorization": f"Bearer {AGENT_TOKEN}"})
        assert r.status_code == 200, r.get_data(as_text=True)

    # -- API --------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, token: str = API_TOKEN,
             **query: Any) -> tuple[int, Any]:
        r = self.client.open(path, method=method, json=body, query_string=query or None,
                             headers={"Authorization": f"Bearer {token}"})
        return r.status_code, r.get_json(silent=True)

    def ok(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        status, data = self.call(method, path, body, **query)
        assert status in (200, 201, 202), (status, data)
        return data

    def job(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """Run a job-backed call with wait=1; returns the finished job."""
        path, _, qs = path.partition("?")
        query = dict(kv.split("=", 1) for kv in qs.split("&") if kv)
        status, data = self.call(method, path, body, wait="1", **query)
        assert status == 200, (status, data)
        job: dict[str, Any] = data["job"]
        return job

    def succeeded(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        job = self.job(method, path, body)
        assert job["state"] == "succeeded", job
        return job

    # -- a small cloud ---------------------------------------------------------

    def add_host(self, name: str, cluster: str | None = None, cpu: int = 32,
                 memory: int = 128 * GiB) -> FakeHost:
        ip = f"10.{len(self.hosts) // 250}.{len(self.hosts) % 250}.{10 + len(self.hosts) % 200}"
        host = FakeHost(ip, self.storage, self.deliver, AGENT_TOKEN, cpu, memory)
        self.transport.register(host.kvm_url, host.handle)
        self.transport.register(host.storage_url, host.handle)
        job = self.succeeded("POST", "/v1/hosts", {
            "name": name, "clusterUuid": cluster or self.ids["cluster"], "managementIp": ip,
            "agentUrl": host.kvm_url, "storageAgentUrl": host.storage_url})
        host.uuid = job["resourceUuid"]  # type: ignore[attr-defined]
        self.hosts[name] = host
        return host

    def basic(self, hosts: int = 2, range_size: int = 200) -> Cloud:
        """Zone, cluster, NFS primary storage, SFTP backup storage, image, networks, offering."""
        ids = self.ids
        ids["zone"] = self.ok("POST", "/v1/zones", {"name": "z1"})["uuid"]
        ids["cluster"] = self.ok("POST", "/v1/clusters", {"name": "c1", "zoneUuid": ids["zone"]})["uuid"]
        ids["ps"] = self.ok("POST", "/v1/primary-storages", {
            "name": "nfs1", "zoneUuid": ids["zone"], "type": "nfs", "url": "127.0.0.1:/export",
            "mountPath": "/mnt/nfs1", "clusterUuids": [ids["cluster"]],
            "totalCapacity": 1000 * GiB})["uuid"]
        ids["bs"] = self.ok("POST", "/v1/backup-storages", {
            "name": "sftp1", "type": "sftp", "hostname": "127.0.0.1", "port": 22,
            "username": "kvmcloud", "url": "/var/store", "zoneUuids": [ids["zone"]]})["uuid"]
        ids["image"] = self.ok("POST", "/v1/images", {
            "name": "cirros", "backupStorageUuids": [ids["bs"]], "imageId": "img-1",
            "digest": DIGEST, "size": GiB})["uuid"]
        ids["l2"] = self.ok("POST", "/v1/l2-networks", {
            "name": "l2", "zoneUuid": ids["zone"], "type": "novlan", "physicalInterface": "eth0",
            "clusterUuids": [ids["cluster"]]})["uuid"]
        last = 10 + range_size - 1
        ids["l3"] = self.ok("POST", "/v1/l3-networks", {
            "name": "pub", "l2NetworkUuid": ids["l2"], "dns": ["192.168.0.1"],
            "ipRanges": [{"startIp": "192.168.0.10", "endIp": f"192.168.{last // 256}.{last % 256}",
                          "netmask": "255.255.0.0", "gateway": "192.168.0.1"}]})["uuid"]
        ids["offering"] = self.ok("POST", "/v1/instance-offerings", {
            "name": "small", "cpuNum": 1, "memorySize": 256 << 20})["uuid"]
        ids["disk"] = self.ok("POST", "/v1/disk-offerings", {"name": "d10", "diskSize": 10 * GiB})["uuid"]
        for i in range(hosts):
            self.add_host(f"h{i + 1}")
        return self

    def backup_agent(self, name: str, zones: list[str] | None = None) -> tuple[FakeBackupAgent, str]:
        """A fake sftpbackup agent and an SFTP backup storage served by it (its uuid in ids[name]),
        attached to ``zones``."""
        agent = FakeBackupAgent(f"10.9.0.{10 + len(self.ids)}", self.deliver, AGENT_TOKEN)
        self.transport.register(agent.url, agent.handle)
        self.ids[name] = self.backup_storage({
            "name": name, "type": "sftp", "hostname": agent.ip, "username": "kvmcloud",
            "url": f"/{name}", "agentRoot": f"/srv/chroot/{name}", "agentUrl": agent.url,
            "zoneUuids": zones or []})
        return agent, self.ids[name]

    def backup_storage(self, body: dict[str, Any]) -> str:
        """Add a backup storage (connected in a job when it has an agent); its uuid."""
        data = self.ok("POST", "/v1/backup-storages", body, wait="1")
        if "job" in data:
            assert data["job"]["state"] == "succeeded", data
            return str(data["resource"]["uuid"])
        return str(data["uuid"])

    def vm_body(self, name: str = "web1", **extra: Any) -> dict[str, Any]:
        return {"name": name, "imageUuid": self.ids["image"],
                "instanceOfferingUuid": self.ids["offering"], "l3NetworkUuids": [self.ids["l3"]],
                **extra}


def new_db_name() -> str:
    return "kc_" + uuidlib.uuid4().hex[:12]
