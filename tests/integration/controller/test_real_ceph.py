"""A VM on Ceph primary storage, through the controller, against the real
cluster: a real cephagent (client.agent, key by reference) and a real
kvmagent (libvirtd, TCG guest), over real HTTP in both directions.

The controller adds the guest image to the Ceph cache from HTTP (qcow2
converted to raw by the cephagent), clones the root volume from its
protected snapshot, sets the libvirt secret of client.agent on the host and
starts the VM, whose guest boots from RBD through librbd (its marker shows on
the serial console). A create that fails after the clone (its network's
uplink does not exist) leaves only the cached image in the pool. Deleting the VM removes its RBD clone (after QEMU's
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

import httpx
import pytest
import rados
import rbd
from werkzeug.serving import make_server

from controller.server import create_app
from controller.settings import Settings
from tests.conftest import ENV_DIR
from tests.integration.cephagent.conftest import Ceph
from tests.integration.controller.realworld import API, World, agent_home, kvmagent
from tests.integration.storageagent.conftest import sha256_of
from tests.support.agents import TOKEN, AgentProcess, free_port, python_agent
from tests.support.httpserver import FileServer

pytestmark = [pytest.mark.ceph, pytest.mark.libvirt, pytest.mark.slow]
KEY_REF = "agent-key"


@dataclass
class CephWorld:
    """The controller world (``world.sto`` is the cephagent) and the cluster's side."""

    world: World
    ceph: Ceph
    pool: str
    secrets: list[str] = field(default_factory=list)


@pytest.fixture
def ceph_world(component_env: Callable[[str], dict[str, str]]) -> Iterator[CephWorld]:
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
                                    "op_timeout": 30, "connect_timeout": 5,
                                    "download_allow_local": True}).start()
    image = base / "images" / "guest.qcow2"
    size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                                     capture_output=True, timeout=30).stdout)["virtual-size"]
    w = World(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API}"}, timeout=120),
              app, kvm, cephagent, base, base, uplink, url, guest,
              {"image_url": files.url("guest.qcow2"), "digest": sha256_of(image), "size": str(size)})
    cw = CephWorld(w, Ceph(env, admin), f"ctl-{uuid.uuid4().hex[:6]}")
    try:
        yield cw
    finally:
        for secret in cw.secrets:  # the host's libvirt secret of client.agent
            subprocess.run(["virsh", "-c", libvirt_env["LIBVIRT_URI"], "secret-undefine",
                            str(uuid.UUID(secret))], capture_output=True, timeout=30)
        kvm.stop()
        cephagent.stop()
        server.shutdown()
        app.extensions["kvmcloud"].close()
        files.stop()
        cw.ceph.remove_pool(cw.pool)
        admin.shutdown()
        subprocess.run(["ip", "link", "del", uplink], capture_output=True, timeout=10)
        if not os.environ.get("KVMCLOUD_KEEP_TEST_DIRS"):  # keep logs and consoles for debugging
            shutil.rmtree(base, ignore_errors=True)


def _cloud(cw: CephWorld) -> dict[str, str]:
    """Zone, cluster, the Ceph primary storage, the image (by URL), a flat network, the host."""
    w, ids = cw.world, cw.world.ids
    ids["zone"] = w.ok("POST", "/v1/zones", {"name": "ceph"})["uuid"]
    ids["cluster"] = w.ok("POST", "/v1/clusters", {"name": "c", "zoneUuid": ids["zone"]})["uuid"]
    ps = w.ok("POST", "/v1/primary-storages", {
        "name": "rbd", "zoneUuid": ids["zone"], "type": "ceph", "url": f"ceph://{cw.pool}",
        "agentUrl": w.sto.url, "clusterUuids": [ids["cluster"]],
        "ceph": {"monitors": cw.ceph.monitors, "pool": cw.pool, "user": cw.ceph.env["CEPH_AGENT_USER"],
                 "keyRef": KEY_REF, "fsid": cw.ceph.env["CEPH_FSID"]}})
    ids["ps"] = ps["uuid"]
    cw.secrets.append(ps["cephSecretUuid"])
    bs = w.ok("POST", "/v1/backup-storages", {"name": "b", "type": "sftp", "hostname": "127.0.0.1",
                                               "url": "/srv/store", "zoneUuids": [ids["zone"]]})["uuid"]
    made = w.ok("POST", "/v1/images", {
        "name": "guest", "backupStorageUuids": [bs], "imageId": "guest", "digest": ids["digest"],
        "size": int(ids["size"]), "url": ids["image_url"]}, wait=1)
    ids["image"] = made.get("uuid") or made["resource"]["uuid"]
    l2 = w.ok("POST", "/v1/l2-networks", {"name": "flat", "zoneUuid": ids["zone"], "type": "novlan",
                                           "physicalInterface": w.dummy,
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
        ceph_world: CephWorld) -> None:
    cw, w = ceph_world, ceph_world.world
    ids = _cloud(cw)
    # a failure after the clone (the L2 uplink does not exist) leaves only the cache in the pool
    l2 = w.ok("POST", "/v1/l2-networks", {"name": "broken", "zoneUuid": ids["zone"], "type": "novlan",
                                           "physicalInterface": "kcnosuch0", "clusterUuids": [ids["cluster"]]})
    l3 = w.ok("POST", "/v1/l3-networks", {"name": "broken", "l2NetworkUuid": l2["uuid"], "ipRanges": [{
        "startIp": "10.253.10.10", "endIp": "10.253.10.20", "netmask": "255.255.255.0",
        "gateway": "10.253.10.1"}]})["uuid"]
    failed = w.run("POST", "/v1/vms", {"name": "doomed", "imageUuid": ids["image"],
                                       "instanceOfferingUuid": ids["offering"], "l3NetworkUuids": [l3]})
    assert failed["state"] == "failed" and "kcnosuch0" in json.dumps(failed["error"]), failed
    assert cw.ceph.images(cw.pool) == [f"image-{ids['image']}"]
    assert w.ok("GET", "/v1/vms")["items"] == [] and w.ok("GET", "/v1/volumes")["items"] == []

    vm = w.job("POST", "/v1/vms", {"name": "rbd1", "imageUuid": ids["image"],
                                   "instanceOfferingUuid": ids["offering"],
                                   "l3NetworkUuids": [ids["l3"]]})["resourceUuid"]
    try:
        assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
        secrets = subprocess.run(["virsh", "-c", "qemu:///system", "secret-list"], check=True,
                                 capture_output=True, text=True, timeout=30).stdout
        assert str(uuid.UUID(cw.secrets[0])) in secrets  # set on the host by the controller
        root = w.ok("GET", "/v1/volumes", q=f"vmUuid={vm}")["items"][0]
        pool, name = root["installPath"].split("/")
        assert (pool, name) == (cw.pool, f"volume-{root['uuid']}")
        with cw.ceph.admin.open_ioctx(pool) as io, rbd.Image(io, name, read_only=True) as img:
            assert img.parent_info() == (pool, f"image-{ids['image']}", "kvmcloud-base")
        w.wait_console(vm, w.guest["GUEST_MARKER"], timeout=180)  # booted from its RBD root
    finally:
        w.job("DELETE", f"/v1/vms/{vm}", confirm="1")
    assert cw.ceph.images(cw.pool) == [f"image-{ids['image']}"]  # only the cache is left
    assert w.kvm.call("/vm/sync")["states"].get(vm) in (None, "Stopped")
    w.job("DELETE", f"/v1/zones/{ids['zone']}", confirm="1")
    assert cw.ceph.images(cw.pool) == []
