"""A controller in-process with a Ceph primary storage, its hosts and cephagent
simulated (the ``simulator`` package) behind the controller's transport seam.

The simulator answers every command synchronously (no ``callbackurl`` is
passed on), so the dispatcher resolves each call from the answer; its state
(domains, RBD images per cluster, recorded commands) is what tests check.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from agentcore.errors import AgentError
from controller.dispatch.transport import AgentRequest, AgentResponse, Handler, TransportError
from simulator import FaultRule, Simulator, SimulatorConfig
from tests.unit.controller.harness import DIGEST, Cloud, GiB

KEY = "QVFEd2QrWm1BQUFBQUJBQXRyd1pCOGtFdU5kMG9IMHc9PQ=="
KEY_REF = "kvmcloud-key"
MONITORS = ["10.7.0.1:6789", "10.7.0.2"]
POOL = "vms"
CEPH_URL = "http://ceph-agent.test:7762"


class SimAgents:
    """Serves agent URLs from one :class:`Simulator`, one command at a time."""

    def __init__(self) -> None:
        self.sim = Simulator(SimulatorConfig(token="unused", events=False))
        self._loop = asyncio.new_event_loop()
        self._mu = threading.Lock()

    def handler(self, agent_id: str) -> Handler:
        def handle(req: AgentRequest) -> AgentResponse:
            with self._mu:
                agent = self.sim.agent_for(agent_id, req.path)
                assert agent is not None
                if req.method == "GET":
                    try:
                        return AgentResponse(200, self.sim.status(agent, req.path.split("/")[2]))
                    except AgentError as e:
                        return AgentResponse(e.http_status, {"success": False, "error": e.to_dict()})
                answer = self._loop.run_until_complete(self.sim.command(
                    agent, req.path, {"taskuuid": req.headers.get("taskuuid", "")},
                    json.dumps(dict(req.body or {})).encode()))
            if answer.disconnect:
                raise TransportError(f"{req.agent_url} dropped the connection")
            return AgentResponse(answer.status, answer.body or {})
        return handle

    def rbd_images(self) -> set[str]:
        """Every RBD image on the simulated clusters."""
        return {p for key, st in self.sim.storages.items() if key.startswith("ceph:")
                for p in st.volumes}

    def domains(self) -> set[str]:
        return {d for a in self.sim.agents.values() for d in a.domains}

    def paths(self, since: int = 0) -> list[str]:
        return [r["path"] for r in list(self.sim.recorded)[since:]]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.sim.recorded if r["path"] == path]

    def close(self) -> None:
        self._loop.close()


def write_key(key_dir: Path) -> None:
    key_dir.mkdir(mode=0o700, exist_ok=True)
    (key_dir / KEY_REF).write_text(KEY + "\n")


def ps_body(ids: dict[str, str], **ceph: Any) -> dict[str, Any]:
    return {"name": "ceph1", "zoneUuid": ids["zone"], "type": "ceph", "url": f"ceph://{POOL}",
            "agentUrl": CEPH_URL, "clusterUuids": [ids["cluster"]],
            "ceph": {"monitors": MONITORS, "pool": POOL, "user": "kvmcloud", "keyRef": KEY_REF,
                     **ceph}}


def build(cloud: Cloud, sims: SimAgents, hosts: int = 2) -> dict[str, str]:
    """Zone, cluster, simulated hosts (kvmagent only), the Ceph primary storage, an
    image registered by URL, a flat L3 network, an instance and a disk offering."""
    ids = cloud.ids
    ids["zone"] = cloud.ok("POST", "/v1/zones", {"name": "z1"})["uuid"]
    ids["cluster"] = cloud.ok("POST", "/v1/clusters", {"name": "c1", "zoneUuid": ids["zone"]})["uuid"]
    cloud.transport.register(CEPH_URL, sims.handler("ceph-00001"))
    ids["ps"] = cloud.ok("POST", "/v1/primary-storages", ps_body(ids))["uuid"]
    ids["bs"] = cloud.ok("POST", "/v1/backup-storages", {
        "name": "sftp1", "type": "sftp", "hostname": "127.0.0.1", "url": "/var/store",
        "zoneUuids": [ids["zone"]]})["uuid"]
    image = cloud.call("POST", "/v1/images", {
        "name": "guest", "backupStorageUuids": [ids["bs"]], "imageId": "img-1", "digest": DIGEST,
        "size": GiB, "url": "http://images.test/guest.qcow2"})[1]
    ids["image"] = image.get("uuid") or image["resource"]["uuid"]
    ids["l2"] = cloud.ok("POST", "/v1/l2-networks", {
        "name": "l2", "zoneUuid": ids["zone"], "type": "novlan", "physicalInterface": "eth0",
        "clusterUuids": [ids["cluster"]]})["uuid"]
    ids["l3"] = cloud.ok("POST", "/v1/l3-networks", {"name": "pub", "l2NetworkUuid": ids["l2"],
                                                     "ipRanges": [{
        "startIp": "192.168.0.10", "endIp": "192.168.0.99", "netmask": "255.255.255.0",
        "gateway": "192.168.0.1"}]})["uuid"]
    ids["offering"] = cloud.ok("POST", "/v1/instance-offerings", {
        "name": "small", "cpuNum": 1, "memorySize": 256 << 20})["uuid"]
    ids["disk"] = cloud.ok("POST", "/v1/disk-offerings", {"name": "d1", "diskSize": GiB})["uuid"]
    for i in range(1, hosts + 1):
        url = f"http://10.7.1.{i}:7070"
        cloud.transport.register(url, sims.handler(f"host-{i:05d}"))
        job = cloud.succeeded("POST", "/v1/hosts", {
            "name": f"h{i}", "clusterUuid": ids["cluster"], "managementIp": f"10.7.1.{i}",
            "agentUrl": url})
        ids[f"h{i}"] = job["resourceUuid"]
    return ids


def fail_once(sims: SimAgents, path: str) -> None:
    """The next command on ``path`` (any agent) fails with INJECTED."""
    sims.sim.faults.add(FaultRule(path=path, action="fail", code="INJECTED", times=1))
