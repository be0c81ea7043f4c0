"""A real controller process and a small cloud on simulated agents, for the
tests of this package."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from simulator import SimulatorThread
from tests.support.agents import free_port, wait_until

SIM_TOKEN = "flows-sim-token"
API_TOKEN = "flows-api-token"
API = {"Authorization": f"Bearer {API_TOKEN}"}
DIGEST = "sha256:" + "cd" * 32


class Controller:
    """``python -m controller.cli serve`` on a loopback port."""

    def __init__(self, workdir: Path, db_url: str | None = None, node_id: str | None = None,
                 **settings: Any) -> None:
        """On ``workdir``'s SQLite file by default; ``node_id``: one of several nodes on ``db_url``."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"controller{'-' + node_id if node_id else ''}.log"
        extra = [a for k, v in settings.items() for a in ("--setting", f"{k}={v}")]
        if node_id:
            extra += ["--node-id", node_id]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "serve", "--listen", f"127.0.0.1:{port}",
                 "--db", db_url or f"sqlite:///{workdir / 'c.db'}", "--api-token", API_TOKEN,
                 "--agent-token", SIM_TOKEN, *extra], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own group: kill() takes granian's worker too
        self.http = httpx.Client(base_url=f"{self.url}/v1", headers=API, timeout=60)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 60, what="controller /healthz")

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.http.request(method, path, json=body, params=params or None)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def create(self, coll: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.call("POST", f"/{coll}", body, wait=1)
        if "job" in answer:
            assert answer["job"]["state"] == "succeeded", answer["job"]
            return dict(answer["resource"])
        return dict(answer)

    def kill(self) -> None:
        """``kill -9`` the server and its worker process, as a crash would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # the server's graceful shutdown
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def build_cloud(sim: SimulatorThread, ctl: Controller, hosts: int) -> dict[str, str]:
    """Zone, cluster, ``hosts`` simulated hosts, NFS, SFTP, an image, a flat L3, an offering."""
    zone = ctl.create("zones", {"name": "z"})["uuid"]
    cluster = ctl.create("clusters", {"name": "c", "zoneUuid": zone})["uuid"]
    for i in range(1, hosts + 1):
        url = sim.agent_url(f"host-{i:05d}")
        ctl.create("hosts", {"name": f"h{i}", "clusterUuid": cluster,
                             "managementIp": f"127.1.0.{i}", "agentUrl": url,
                             "storageAgentUrl": url})
    ctl.create("primary-storages", {
        "name": "nfs", "zoneUuid": zone, "type": "nfs", "url": "127.0.0.1:/export",
        "mountPath": "/var/lib/kvmcloud/flows", "clusterUuids": [cluster]})
    bs = ctl.create("backup-storages", {
        "name": "bs", "type": "sftp", "hostname": "127.0.0.1", "url": "/store",
        "zoneUuids": [zone], "agentUrl": sim.agent_url("bs-1")})["uuid"]
    image = ctl.create("images", {"name": "cirros", "backupStorageUuids": [bs],
                                  "imageId": "cirros", "digest": DIGEST, "size": 1 << 26})
    l2 = ctl.create("l2-networks", {"name": "l2", "zoneUuid": zone, "type": "novlan",
                                    "physicalInterface": "eth0", "clusterUuids": [cluster]})
    l3 = ctl.create("l3-networks", {"name": "pub", "l2NetworkUuid": l2["uuid"], "ipRanges": [{
        "startIp": "10.9.0.10", "endIp": "10.9.0.50", "netmask": "255.255.255.0",
        "gateway": "10.9.0.1"}]})
    offering = ctl.create("instance-offerings", {"name": "tiny", "cpuNum": 1,
                                                 "memorySize": 64 << 20})
    return {"image": image["uuid"], "l3": l3["uuid"], "offering": offering["uuid"]}


def create_vm(ctl: Controller, env: dict[str, str], name: str) -> dict[str, Any]:
    """Create a VM and wait for its job: ``{"job", "vm"}``."""
    answer = ctl.call("POST", "/vms", {"name": name, "imageUuid": env["image"],
                                       "instanceOfferingUuid": env["offering"],
                                       "l3NetworkUuids": [env["l3"]]}, wait=1)
    return {"job": answer["job"], "vm": answer.get("resource", {})}
