"""The second half of ``make up``: an all-in-one cloud on this machine.

With the controller running (``scripts/up.sh`` starts it), this registers a
zone, a cluster and a local primary storage through the API, adds the SFTP
backup storage with ``deploy: true`` (the controller deploys the sftpbackup
agent over SSH through the playbooks and connects it), adds the guest image
(a ``file://`` URL the store's agent copies in), an L2/L3 network and an offering, adds
this machine as a KVM host (the controller deploys its agents through the
same playbooks), creates a VM, and waits until it runs and its serial
console shows the guest's marker. The deploys' Ansible tasks are printed as
the jobs report them.

    python -m controller.deploy.allinone --api http://127.0.0.1:8080 --token-file T ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)


class AllInOneError(Exception):
    """A step of the all-in-one set-up failed."""


class Api:
    """A small client of the controller's API: create, and wait for jobs."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                   headers={"Authorization": f"Bearer {token}"})

    def ensure(self, collection: str, body: dict[str, Any], key: str = "name") -> dict[str, Any]:
        """The resource whose ``key`` matches (so ``make up`` can run again), or a new one."""
        r = self.client.get(f"/v1/{collection}", params={"q": f"{key}={body[key]}"})
        if r.status_code == 200 and r.json().get("items"):
            return dict(r.json()["items"][0])
        return self.create(collection, body)

    def create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a resource; job-backed ones are followed (each new stage printed) until they
        end. Returns the resource."""
        r = self.client.post(f"/v1/{collection}", json=body)
        data = r.json() if r.content else {}
        if r.status_code >= 400:
            raise AllInOneError(f"POST /v1/{collection} answered {r.status_code}: {json.dumps(data)[:2000]}")
        if isinstance(data, dict) and "job" in data:
            job = self.follow(data["job"])
            if job.get("state") != "succeeded":
                raise AllInOneError(f"creating {collection} failed: {json.dumps(job.get('error') or job)[:2000]}")
            return dict(job.get("result") or data.get("resource") or {})
        return dict(data)

    def action(self, collection: str, uuid: str, verb: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run an action on a resource and wait for it; returns the job's result."""
        r = self.client.post(f"/v1/{collection}/{uuid}/actions/{verb}", json=body or {})
        if r.status_code >= 400:
            raise AllInOneError(f"{verb} {collection} {uuid} answered {r.status_code}: {r.text[:2000]}")
        job = self.follow(r.json()["job"])
        if job.get("state") != "succeeded":
            raise AllInOneError(f"{verb} {collection} {uuid} failed: {json.dumps(job.get('error') or job)[:2000]}")
        return dict(job.get("result") or {})

    def replace(self, collection: str, row: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Delete ``row`` (left broken by an earlier run cut short) with what depends on it,
        then create it again from ``body``."""
        r = self.client.delete(f"/v1/{collection}/{row['uuid']}", params={"confirm": "1"})
        if r.status_code >= 400:
            raise AllInOneError(f"DELETE /v1/{collection}/{row['uuid']} answered {r.status_code}: {r.text[:2000]}")
        if r.status_code == 202:
            self.follow(r.json()["job"])
        return self.create(collection, body)

    def follow(self, job: dict[str, Any]) -> dict[str, Any]:
        """Poll a job until it ends, printing each stage it reports (the deploys' tasks)."""
        stage = None
        while job.get("state") not in ("succeeded", "failed", "cancelled"):
            if job.get("stage") and job["stage"] != stage:
                stage = job["stage"]
                print(f"         {stage}", flush=True)
            time.sleep(0.5)
            job = self.get(f"/v1/jobs/{job['uuid']}")["job"]
        return job

    def get(self, path: str) -> dict[str, Any]:
        r = self.client.get(path)
        r.raise_for_status()
        return dict(r.json())


def answers(agent_url: str | None) -> bool:
    """Whether the agent at ``agent_url`` answers its health check (``make down`` stops them)."""
    if not agent_url:
        return False
    try:
        return httpx.get(f"{agent_url.rstrip('/')}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _running_vm(api: Api, t0: float, args: argparse.Namespace, body: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The VM, running and booted: made, made again (a create cut short), or started (make down
    stopped it). Returns it and its console log."""
    vm = api.ensure("vms", body)
    state = _settled(api, vm["uuid"])
    if state.get("state") in ("Error", "Destroyed"):
        _step(t0, f"VM {vm['uuid']} is {state.get('state')} (a create cut short): creating it again")
        vm = api.replace("vms", vm, body)
        state = api.get(f"/v1/vms/{vm['uuid']}")
    console = Path(args.console_dir) / f"{vm['uuid']}.log"
    seen = 0  # the console log's bytes before this boot (an earlier run's boot does not count)
    if state.get("state") == "Stopped":
        _step(t0, f"starting VM {vm['uuid']}")
        seen = console.stat().st_size if console.exists() else 0
        api.action("vms", vm["uuid"], "start")
        state = api.get(f"/v1/vms/{vm['uuid']}")
    if state.get("state") != "Running":
        raise AllInOneError(f"the VM is {state.get('state')}, not Running")
    _step(t0, f"VM {vm['uuid']} Running; waiting for {args.marker!r} on its serial console")
    end = time.monotonic() + args.boot_timeout
    while not (console.exists() and args.marker in _tail(console, seen)):
        if time.monotonic() > end:
            raise AllInOneError(f"no {args.marker!r} in {console} after {args.boot_timeout:.0f}s")
        time.sleep(0.5)
    return vm, console


def _settled(api: Api, vm_uuid: str, timeout: float = 120) -> dict[str, Any]:
    """The VM once its state is known: after a controller restart a VM caught mid-operation
    is Unknown until the host tracker syncs it from its host."""
    end = time.monotonic() + timeout
    while True:
        vm = api.get(f"/v1/vms/{vm_uuid}")
        if vm.get("state") != "Unknown" or time.monotonic() > end:
            return vm
        time.sleep(1)


def _tail(path: Path, offset: int) -> str:
    """The text of ``path`` after ``offset`` (all of it when the file was truncated since)."""
    with path.open("rb") as f:
        if f.seek(0, 2) < offset:
            offset = 0
        f.seek(offset)
        return f.read().decode(errors="replace")


def _step(t0: float, what: str) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {what}", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    api = Api(args.api, Path(args.api_token_file).read_text().strip(), args.timeout)

    zone = api.ensure("zones", {"name": "zone-1"})
    cluster = api.ensure("clusters", {"name": "cluster-1", "zoneUuid": zone["uuid"]})
    api.ensure("primary-storages", {
        "name": "local-1", "zoneUuid": zone["uuid"], "type": "local", "url": "local",
        "mountPath": args.primary_storage, "clusterUuids": [cluster["uuid"]]})
    _step(t0, "zone, cluster and primary storage registered")

    _step(t0, f"adding the backup storage: the controller deploys sftpbackup to root@127.0.0.1:{args.ssh_port} "
              "(Ansible) and connects it")
    bs = api.ensure("backup-storages", {
        "name": "sftp-1", "type": "sftp", "hostname": "127.0.0.1", "port": args.ssh_port,
        "username": args.store_user, "url": "/store", "deploy": True, "zoneUuids": [zone["uuid"]]})
    if bs.get("status") != "Connected" or not answers(bs.get("agentUrl")):  # an earlier run's, stopped
        _step(t0, "the store's agent is not running: redeploying it (Ansible starts it)")
        bs = api.action("backup-storages", bs["uuid"], "redeploy", {"sshPort": args.ssh_port})
    _step(t0, f"backup storage {bs['uuid']} connected ({bs['agentRoot']})")

    _step(t0, "adding the guest image: the store's agent copies it in")
    image_body = {"name": "tiny-guest", "backupStorageUuids": [bs["uuid"]],
                  "url": f"file://{Path(args.guest_image).resolve()}"}
    image = api.ensure("images", image_body)
    if image.get("status") != "Ready":  # an add cut short by a killed run
        _step(t0, f"the image is {image.get('status')}: adding it again")
        image = api.replace("images", image, image_body)
    _step(t0, f"guest image {image['uuid']} in the store ({image.get('actualSize')} bytes)")

    l2 = api.ensure("l2-networks", {"name": "flat-1", "zoneUuid": zone["uuid"], "type": "novlan",
                                    "physicalInterface": args.interface, "clusterUuids": [cluster["uuid"]]})
    l3 = api.ensure("l3-networks", {"name": "guests", "l2NetworkUuid": l2["uuid"], "ipRanges": [{
        "startIp": "10.233.0.10", "endIp": "10.233.0.200", "netmask": "255.255.255.0", "gateway": "10.233.0.1"}]})
    offering = api.ensure("instance-offerings", {"name": "tiny", "cpuNum": 1, "memorySize": 256 << 20})
    _step(t0, "network and offering registered")

    _step(t0, "adding this machine as a KVM host: the controller deploys kvmagent and storageagent (Ansible)")
    host = api.ensure("hosts", {
        "name": "host-1", "clusterUuid": cluster["uuid"], "managementIp": "127.0.0.1", "deploy": True,
        "sshPort": args.ssh_port, "agentUrl": "http://127.0.0.1:7070",
        "storageAgentUrl": "http://127.0.0.1:7071"}, key="managementIp")
    if host.get("status") != "Connected" or not all(map(answers, (host.get("agentUrl"),
                                                                 host.get("storageAgentUrl")))):
        _step(t0, "the host's agents are not running: redeploying them (Ansible starts them)")
        host = api.action("hosts", host["uuid"], "redeploy", {"sshPort": args.ssh_port})
    _step(t0, f"host {host['uuid']} connected")

    vm, console = _running_vm(api, t0, args, {
        "name": "vm-1", "imageUuid": image["uuid"], "instanceOfferingUuid": offering["uuid"],
        "l3NetworkUuids": [l3["uuid"]]})
    _step(t0, "the guest booted")
    return {"api": args.api, "vm": vm["uuid"], "host": host["uuid"], "console": str(console),
            "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controller.deploy.allinone", description=__doc__.splitlines()[0])
    p.add_argument("--api", required=True, help="the controller's base URL")
    p.add_argument("--api-token-file", required=True)
    p.add_argument("--ssh-port", type=int, required=True, help="sshd of this machine the deploys go through")
    p.add_argument("--guest-image", required=True)
    p.add_argument("--marker", required=True, help="line the guest prints on its serial console")
    p.add_argument("--interface", required=True, help="interface the flat network's bridge enslaves")
    p.add_argument("--primary-storage", default="/var/lib/kvmcloud/storage/local-1")
    p.add_argument("--store-user", default="kvmcloud-store")
    p.add_argument("--console-dir", default="/var/log/kvmcloud/console")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--boot-timeout", type=float, default=120)
    p.add_argument("--summary", help="write the result as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except (AllInOneError, httpx.HTTPError, OSError) as e:
        print(f"make up failed: {e}", file=sys.stderr)
        return 1
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
