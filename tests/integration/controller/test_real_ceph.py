"""A VM on Ceph primary storage, through the controller, against the real
cluster: a real cephagent (client.agent, key by reference) and a real
kvmagent (libvirtd, TCG guest), over real HTTP in both directions.

The controller adds the guest image to the Ceph cache from HTTP (qcow2
converted to raw by the cephagent), clones the root volume from its
protected snapshot, sets the libvirt secret of client.agent on the host and
starts the VM, whose guest boots from RBD through librbd (its marker shows on
the serial console). Deleting the VM removes its RBD clone (after QEMU's
watch is gone); deleting the zone removes the cached image too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import rados
import rbd
from werkzeug.serving import make_server

from controller.server import create_app
from controller.settings import Settings
from tests.conftest import ENV_DIR
from tests.integration.cephagent.conftest import Ceph
from tests.integration.controller.realworld import API, agent_home, kvmagent
from tests.integration.storageagent.conftest import sha256_of
from tests.support.agents import TOKEN, AgentProcess, free_port, python_agent, wait_until
from tests.support.httpserver import FileServer

pytestmark = [pytest.mark.ceph, pytest.mark.libvirt, pytest.mark.slow]
KEY_REF = "agent-key"


@dataclass
class CephWorld:
    api: httpx.Client
    ceph: Ceph
    kvm: AgentProcess
    cephagent: AgentProcess
    base: Path
    uplink: str
    image_url: str
    pool: str
    secrets: list[str] = field(default_factory=list)

    def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.api.request(method, path, json=body, params=params or None)
        assert r.status_code in (200, 201, 202), r.text
        return r.json()

    def job(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        r = self.api.request(method, path, json=body, params={"wait": "1", **params}, timeout=900)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()["job"]
        assert job["state"] == "succeeded", job
        return job


@pytest.fixture
def world(component_env: Callable[[str], dict[str, str]]) -> Iterator[CephWorld]:
    libvirt_env, guest, env = component_env("libvirt"), component_env("guest"), component_env("ceph")
    base = ENV_DIR / "kvmagent-tests" / f"ceph-{uuid.uuid4().hex[:10]}"
    for d in (base, base / "console", base / "images"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    keys = base / "keys"  # the controller's ceph_key_dir, and the cephagent's secrets_dir
    keys.mkdir(mode=0o700)
    shutil.copy(env["CEPH_AGENT_KEY_FILE"], keys / KEY_REF)
    shutil.copyfile(guest["GUEST_IMAGE"], base / "images" / "guest.qcow2")
    files = FileServer(base / "images").start()
    uplink = "kcc" + uuid.uuid4().hex[:8]  # the bridge's own uplink: one end of a veth pair
    subprocess.run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", "kcq" + uplink[3:]],
                   check=True, timeout=10)
    subprocess.run(["ip", "link", "set", uplink, "up"], check=True, timeout=10)
    admin = rados.Rados(conffile=env["CEPH_CONF"], name="client.admin")
    admin.connect(timeout=10)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(Settings(db_url=f"sqlite:///{base}/controller.db", listen=f"127.0.0.1:{port}",
                              public_url=url, api_tokens=[API], agent_token=TOKEN, tracker=False,
                              poll_after=10.0, ceph_key_dir=str(keys)))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kvm = kvmagent(base, "kvm", url, libvirt_env["LIBVIRT_URI"], libvirt_env["LIBVIRT_DOMAIN_TYPE"],
                   [base]).start()
    cephagent = AgentProcess(python_agent("cephagent.app"), agent_home(base, "ceph"), controller_urls=[url],
                             extra={"keyring_dirs": [env["CEPH_DIR"]], "secrets_dir": keys,
                                    "op_timeout": 30, "connect_timeout": 5}).start()
    w = CephWorld(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API}"}, timeout=120),
                  Ceph(env, admin), kvm, cephagent, base, uplink, files.url("guest.qcow2"),
                  f"ctl-{uuid.uuid4().hex[:6]}")
    try:
        yield w
    finally:
        for secret in w.secrets:  # the host's libvirt secret of client.agent
            subprocess.run(["virsh", "-c", libvirt_env["LIBVIRT_URI"], "secret-undefine",
                            str(uuid.UUID(secret))], capture_output=True, timeout=30)
        kvm.stop()
        cephagent.stop()
        server.shutdown()
        app.extensions["kvmcloud"].close()
        files.stop()
        w.ceph.remove_pool(w.pool)
        admin.shutdown()
        subprocess.run(["ip", "link", "del", uplink], capture_output=True, timeout=10)
        if not os.environ.get("KVMCLOUD_KEEP_TEST_DIRS"):  # keep logs and consoles for debugging
            shutil.rmtree(base, ignore_errors=True)


def _cloud(w: CephWorld) -> dict[str, str]:
    """Zone, cluster, the Ceph primary storage, the image (by URL), a flat network, the host."""
    ids: dict[str, str] = {}
    ids["zone"] = w.ok("POST", "/v1/zones", {"name": "ceph"})["uuid"]
    ids["cluster"] = w.ok("POST", "/v1/clusters", {"name": "c", "zoneUuid": ids["zone"]})["uuid"]
    ps = w.ok("POST", "/v1/primary-storages", {
        "name": "rbd", "zoneUuid": ids["zone"], "type": "ceph", "url": f"ceph://{w.pool}",
        "agentUrl": w.cephagent.url, "clusterUuids": [ids["cluster"]],
        "ceph": {"monitors": w.ceph.monitors, "pool": w.pool, "user": w.ceph.env["CEPH_AGENT_USER"],
                 "keyRef": KEY_REF, "fsid": w.ceph.env["CEPH_FSID"]}})
    ids["ps"] = ps["uuid"]
    w.secrets.append(ps["cephSecretUuid"])
    bs = w.ok("POST", "/v1/backup-storages", {"name": "b", "type": "sftp", "hostname": "127.0.0.1",
                                               "url": "/srv/store", "zoneUuids": [ids["zone"]]})["uuid"]
    image = w.base / "images" / "guest.qcow2"
    size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                                     capture_output=True, timeout=30).stdout)["virtual-size"]
    made = w.ok("POST", "/v1/images", {
        "name": "guest", "backupStorageUuids": [bs], "imageId": "guest", "digest": sha256_of(image),
        "size": size, "url": w.image_url}, wait=1)
    ids["image"] = made.get("uuid") or made["resource"]["uuid"]
    l2 = w.ok("POST", "/v1/l2-networks", {"name": "flat", "zoneUuid": ids["zone"], "type": "novlan",
                                           "physicalInterface": w.uplink,
                                           "clusterUuids": [ids["cluster"]]})["uuid"]
    ids["l3"] = w.ok("POST", "/v1/l3-networks", {"name": "pub", "l2NetworkUuid": l2, "ipRanges": [{
        "startIp": "10.253.9.10", "endIp": "10.253.9.60", "netmask": "255.255.255.0",
        "gateway": "10.253.9.1"}]})["uuid"]
    ids["offering"] = w.ok("POST", "/v1/instance-offerings", {"name": "tiny", "cpuNum": 1,
                                                              "memorySize": 128 << 20})["uuid"]
    ids["host"] = w.job("POST", "/v1/hosts", {"name": "h1", "clusterUuid": ids["cluster"],
                                              "managementIp": "127.0.0.1",
                                              "agentUrl": w.kvm.url})["resourceUuid"]
    return ids


def test_vm_on_ceph_boots_from_an_rbd_clone_and_its_delete_removes_the_image(
        world: CephWorld, component_env: Callable[[str], dict[str, str]]) -> None:
    w, marker = world, component_env("guest")["GUEST_MARKER"]
    ids = _cloud(w)
    vm = w.job("POST", "/v1/vms", {"name": "rbd1", "imageUuid": ids["image"],
                                   "instanceOfferingUuid": ids["offering"],
                                   "l3NetworkUuids": [ids["l3"]]})["resourceUuid"]
    try:
        assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
        secrets = subprocess.run(["virsh", "-c", "qemu:///system", "secret-list"], check=True,
                                 capture_output=True, text=True, timeout=30).stdout
        assert str(uuid.UUID(w.secrets[0])) in secrets  # set on the host by the controller
        root = w.ok("GET", "/v1/volumes", q=f"vmUuid={vm}")["items"][0]
        pool, name = root["installPath"].split("/")
        assert (pool, name) == (w.pool, f"volume-{root['uuid']}")
        with w.ceph.admin.open_ioctx(pool) as io, rbd.Image(io, name, read_only=True) as img:
            assert img.parent_info() == (pool, f"image-{ids['image']}", "kvmcloud-base")
        console = w.base / "console" / f"{vm}.log"
        wait_until(lambda: console.exists() and marker in console.read_text(errors="replace"),
                   180, 0.5, "the guest booted from its RBD root volume")
    finally:
        w.job("DELETE", f"/v1/vms/{vm}", confirm="1")
    assert w.ceph.images(w.pool) == [f"image-{ids['image']}"]  # only the cache is left
    assert w.kvm.call("/vm/sync")["states"].get(vm) in (None, "Stopped")
    w.job("DELETE", f"/v1/zones/{ids['zone']}", confirm="1")
    assert w.ceph.images(w.pool) == []
