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

Backups: a running VM with a known pattern on its RBD root is backed up
through an RBD snapshot (taken while QEMU holds the image) that the cephagent
exports into a real sftpbackup store; the image is wiped, the VM restored
from the store into a new RBD image, and it boots with the pattern there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
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
from tests.integration.controller.realworld import (
    API,
    SftpStore,
    World,
    add_backup_storage,
    agent_home,
    kvmagent,
    sftp_store,
)
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
    store: SftpStore  # a real sftpbackup store the cephagent reaches over SFTP
    secrets: list[str] = field(default_factory=list)


@pytest.fixture
def ceph_world(component_env: Callable[[str], dict[str, str]]) -> Iterator[CephWorld]:
    libvirt_env, guest, env = component_env("libvirt"), component_env("guest"), component_env("ceph")
    sshd = component_env("sshd")
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
                                    "download_allow_local": True, "sftp_key_file": sshd["SSHD_KEY"],
                                    "sftp_known_hosts": sshd["SSHD_KNOWN_HOSTS"]}).start()
    stores = ExitStack()
    store = stores.enter_context(sftp_store(sshd, url, base / "sftp"))
    image = base / "images" / "guest.qcow2"
    size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                                     capture_output=True, timeout=30).stdout)["virtual-size"]
    w = World(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API}"}, timeout=120),
              app, kvm, cephagent, base, base, uplink, url, guest,
              {"image_url": files.url("guest.qcow2"), "digest": sha256_of(image), "size": str(size)})
    cw = CephWorld(w, Ceph(env, admin), f"ctl-{uuid.uuid4().hex[:6]}", store)
    try:
        yield cw
    finally:
        for secret in cw.secrets:  # the host's libvirt secret of client.agent
            subprocess.run(["virsh", "-c", libvirt_env["LIBVIRT_URI"], "secret-undefine",
                            str(uuid.UUID(secret))], capture_output=True, timeout=30)
        kvm.stop()
        cephagent.stop()
        stores.close()
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


PATTERN = b"\x6b" * 65536


def test_a_running_vm_on_ceph_is_backed_up_wiped_restored_and_boots_with_its_data(
        ceph_world: CephWorld) -> None:
    cw, w = ceph_world, ceph_world.world
    ids = _cloud(cw)
    bs = add_backup_storage(w.api, {**cw.store.body, "name": "store", "zoneUuids": [ids["zone"]]})
    vm = w.job("POST", "/v1/vms", {"name": "rbd-bk", "imageUuid": ids["image"],
                                   "instanceOfferingUuid": ids["offering"],
                                   "l3NetworkUuids": [ids["l3"]]})["resourceUuid"]
    root = w.ok("GET", "/v1/volumes", q=f"vmUuid={vm}")["items"][0]
    pool, name = root["installPath"].split("/")
    end = int(root["size"]) - len(PATTERN)  # past the guest's file system
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    cw.ceph.write(pool, name, end, PATTERN)
    w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    # backed up while QEMU runs on the image: an RBD snapshot, exported, then removed
    vb = w.job("POST", f"/v1/vms/{vm}/actions/backup", {"backupStorageUuid": bs})["result"]
    assert vb["status"] == "Ready" and vb["vmState"] == "Running", vb
    assert w.ok("GET", f"/v1/vms/{vm}")["state"] == "Running"
    with cw.ceph.admin.open_ioctx(pool) as io, rbd.Image(io, name, read_only=True) as img:
        assert [snap["name"] for snap in img.list_snaps()] == []
    [backup] = w.ok("GET", "/v1/volume-backups", q=f"vmBackupUuid={vb['uuid']}")["items"]
    manifest = json.loads(cw.store.manifest(backup["installPath"]).read_text())
    assert "sha256:" + manifest["digest"] == backup["digest"] and backup["format"] == "raw"
    assert manifest["virtual_size"] == int(root["size"])
    # the disk wiped where the pattern was, then the VM restored from the store
    w.job("POST", f"/v1/vms/{vm}/actions/stop", {"force": True})
    cw.ceph.write(pool, name, end, bytes(len(PATTERN)))
    assert cw.ceph.read(pool, name, end, len(PATTERN)) != PATTERN
    w.job("POST", f"/v1/vm-backups/{vb['uuid']}/actions/restore", {})
    restored = w.ok("GET", "/v1/volumes", q=f"vmUuid={vm}")["items"][0]
    new_pool, new_name = restored["installPath"].split("/")
    assert new_pool == pool and new_name.startswith(f"volume-{root['uuid']}-")
    assert name not in cw.ceph.images(pool)
    assert cw.ceph.read(pool, new_name, end, len(PATTERN)) == PATTERN
    console = w.console(vm).read_text(errors="replace").count(w.guest["GUEST_MARKER"])
    w.job("POST", f"/v1/vms/{vm}/actions/start", {})
    w.wait_console(vm, w.guest["GUEST_MARKER"], count=console + 1, timeout=180)
    w.job("DELETE", f"/v1/vms/{vm}", confirm="1")
    w.job("DELETE", f"/v1/vm-backups/{vb['uuid']}", confirm="1")
    assert not cw.store.manifest(backup["installPath"]).exists()
