"""The controller against the real agents: a real kvmagent (libvirt, TCG guest,
bridge, dnsmasq in a namespace) and a real storageagent (local primary
storage, image cache filled over HTTP, qcow2 linked clones), over real HTTP in
both directions (commands with callbackurl, callbacks to /v1/agent-callbacks).

A VM created through the API boots and answers ping at the address the
controller allocated; stop/start work; the agent is killed (-9) and restarted
and the controller still drives it; deleting the zone leaves nothing in the
database, on the host (domain, bridge, DHCP namespace) or in the storage.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from controller.db.models import RESOURCES
from controller.server import create_app
from controller.settings import Settings
from tests.conftest import ENV_DIR
from tests.support.agents import TOKEN, AgentProcess, free_port, python_agent, wait_until
from tests.support.httpserver import FileServer

pytestmark = [pytest.mark.libvirt, pytest.mark.netns, pytest.mark.slow]
API = "e2e-api-token-0123456789"


@dataclass
class World:
    api: httpx.Client
    app: Any
    kvm: AgentProcess
    sto: AgentProcess
    base: Path
    ps_root: Path
    dummy: str
    ids: dict[str, str]

    def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.api.request(method, path, json=body, params=params or None)
        assert r.status_code in (200, 201, 202), r.text
        return r.json()

    def job(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        r = self.api.request(method, path, json=body, params={"wait": "1", **params}, timeout=600)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()["job"]
        assert job["state"] == "succeeded", json.dumps(job)
        return job


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


@pytest.fixture(scope="module")
def world(component_env: Callable[[str], dict[str, str]]) -> Iterator[World]:
    libvirt_env, guest = component_env("libvirt"), component_env("guest")
    base = ENV_DIR / "kvmagent-tests" / f"ctl-{uuid.uuid4().hex[:10]}"
    ps_root = base / "ps"
    for d in (base, ps_root, base / "console", base / "images"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    image = base / "images" / "guest.qcow2"
    shutil.copyfile(guest["GUEST_IMAGE"], image)
    files = FileServer(base / "images").start()
    dummy = "kcd" + uuid.uuid4().hex[:8]
    # an uplink of our own for the bridge (no dummy driver here): one end of a veth pair
    subprocess.run(["ip", "link", "add", dummy, "type", "veth", "peer", "name", "kcp" + dummy[3:]],
                   check=True, timeout=10)
    subprocess.run(["ip", "link", "set", dummy, "up"], check=True, timeout=10)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(Settings(db_url=f"sqlite:///{base}/controller.db", listen=f"127.0.0.1:{port}",
                              public_url=url, api_tokens=[API], agent_token=TOKEN, tracker=False,
                              poll_after=10.0))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kvm = AgentProcess(python_agent("kvmagent.app"), _home(base, "kvm"), controller_urls=[url], extra={
        "libvirt_uri": libvirt_env["LIBVIRT_URI"], "domain_type": libvirt_env["LIBVIRT_DOMAIN_TYPE"],
        "storage_roots": [str(ps_root)], "console_dir": base / "console"}).start()
    sto = AgentProcess(python_agent("storageagent.app"), _home(base, "sto"), controller_urls=[url],
                       extra={"storage_base_dirs": [str(base)]}).start()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                     capture_output=True, check=True, timeout=30).stdout)
    w = World(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API}"}, timeout=120),
              app, kvm, sto, base, ps_root, dummy,
              {"image_url": files.url("guest.qcow2"), "digest": _digest(image),
               "size": str(info["virtual-size"])})
    try:
        yield w
    finally:
        for vm in w.ids.get("vms", "").split(","):
            if vm:
                subprocess.run(["virsh", "-c", "qemu:///system", "destroy", vm], capture_output=True,
                               timeout=30)
        kvm.stop()
        sto.stop()
        server.shutdown()
        app.extensions["kvmcloud"].close()
        files.stop()
        subprocess.run(["ip", "link", "del", dummy], capture_output=True, timeout=10)
        shutil.rmtree(base, ignore_errors=True)


def _home(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir()
    return d


def test_build_a_cloud_and_boot_a_vm_that_answers_ping(
        world: World, component_env: Callable[[str], dict[str, str]]) -> None:
    w, ids = world, world.ids
    ids["zone"] = w.ok("POST", "/v1/zones", {"name": "e2e"})["uuid"]
    ids["cluster"] = w.ok("POST", "/v1/clusters", {"name": "c", "zoneUuid": ids["zone"]})["uuid"]
    ids["ps"] = w.ok("POST", "/v1/primary-storages", {
        "name": "local", "zoneUuid": ids["zone"], "type": "local", "url": "local",
        "mountPath": str(w.ps_root), "clusterUuids": [ids["cluster"]]})["uuid"]
    bs = w.ok("POST", "/v1/backup-storages", {"name": "b", "type": "sftp", "hostname": "127.0.0.1",
                                               "url": "/srv/store", "zoneUuids": [ids["zone"]]})["uuid"]
    ids["image"] = w.ok("POST", "/v1/images", {
        "name": "guest", "backupStorageUuids": [bs], "imageId": "guest", "digest": ids["digest"],
        "size": int(ids["size"]), "url": ids["image_url"]})["uuid"]
    l2 = w.ok("POST", "/v1/l2-networks", {"name": "flat", "zoneUuid": ids["zone"], "type": "novlan",
                                           "physicalInterface": w.dummy,
                                           "clusterUuids": [ids["cluster"]]})["uuid"]
    ids["l3"] = w.ok("POST", "/v1/l3-networks", {"name": "pub", "l2NetworkUuid": l2, "ipRanges": [{
        "startIp": "10.253.7.10", "endIp": "10.253.7.60", "netmask": "255.255.255.0",
        "gateway": "10.253.7.1"}]})["uuid"]
    offering = w.ok("POST", "/v1/instance-offerings", {"name": "tiny", "cpuNum": 1,
                                                       "memorySize": 128 << 20})["uuid"]
    host = w.job("POST", "/v1/hosts", {"name": "h1", "clusterUuid": ids["cluster"],
                                       "managementIp": "127.0.0.1", "agentUrl": w.kvm.url,
                                       "storageAgentUrl": w.sto.url})
    ids["host"] = host["resourceUuid"]
    assert w.ok("GET", f"/v1/hosts/{ids['host']}")["status"] == "Connected"

    created = w.job("POST", "/v1/vms", {"name": "web1", "imageUuid": ids["image"],
                                        "instanceOfferingUuid": offering,
                                        "l3NetworkUuids": [ids["l3"]]})
    vm = created["resourceUuid"]
    ids["vms"] = vm
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    ip = w.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm}")["items"][0]["ip"]
    guest = component_env("guest")
    console = w.base / "console" / f"{vm}.log"
    wait_until(lambda: console.exists() and f"{guest['GUEST_IP_MARKER']} eth0 {ip}\n" in
               console.read_text(errors="replace"), 300, interval=0.5, what=f"guest to get {ip}")
    ns = f"kvmcloud-dhcp-{ids['l3'][:12]}"
    ping = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "3", "-W", "2", ip],
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_stop_start_and_an_agent_restart(world: World) -> None:
    w, ids = world, world.ids
    vm = ids["vms"]
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Stopped"
    assert w.kvm.call("/vm/sync")["states"].get(vm) in (None, "Stopped")
    w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    assert w.kvm.call("/vm/sync")["states"][vm] == "Running"
    w.kvm.kill9()
    w.kvm.start()
    ctl = w.app.extensions["kvmcloud"]
    ctl.tracker.ping(ids["host"])
    ctl.tracker.sync_vms(ids["host"])
    assert w.ok("GET", f"/v1/hosts/{ids['host']}")["status"] == "Connected"
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    w.job("POST", f"/v1/vms/{vm}/actions/reboot", {})


def test_delete_zone_leaves_nothing(world: World) -> None:
    w, ids = world, world.ids
    plan = w.ok("DELETE", f"/v1/zones/{ids['zone']}")["affected"]
    assert {"vms", "volumes", "hosts", "primary-storages", "l3-networks"} <= {a["type"] for a in plan}
    w.job("DELETE", f"/v1/zones/{ids['zone']}", confirm="1")
    ctl = w.app.extensions["kvmcloud"]
    with ctl.db.read() as s:
        for coll in ("zones", "clusters", "hosts", "primary-storages", "l2-networks", "l3-networks",
                     "vms", "volumes", "vm-nics", "ip-ranges"):
            assert s.scalar(select(func.count()).select_from(RESOURCES[coll])) == 0, coll
    assert w.kvm.call("/vm/sync")["states"].get(ids["vms"]) in (None, "Stopped")
    assert not Path(f"/run/netns/kvmcloud-dhcp-{ids['l3'][:12]}").exists()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    bridges = [f"br{a['uuid'][:12]}:" for a in plan if a["type"] == "l2-networks"]
    assert bridges and not any(b in links for b in bridges), links
    # only the storage's own identity file stays (the directory is the operator's)
    leftovers = [p for p in w.ps_root.rglob("*") if p.is_file() and ".kvmcloud" not in p.parts]
    assert leftovers == [], leftovers
