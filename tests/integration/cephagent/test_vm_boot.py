"""A VM booted from an RBD root volume: the guest image is added to Ceph over
HTTP (qcow2 converted to raw), a root volume is cloned from it by the cephagent,
and the real KVM agent (libvirtd, TCG) boots it through librbd with a cephx
secret. While QEMU holds the volume the cephagent refuses to delete it."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cephagent.conftest import Ceph, MiB, call, error_code, unique
from tests.support.agents import AgentProcess, CallbackReceiver, python_agent, wait_until
from tests.support.httpserver import FileServer

pytestmark = [pytest.mark.ceph, pytest.mark.libvirt, pytest.mark.slow]


@pytest.fixture(scope="module")
def guest(component_env: Any) -> dict[str, str]:
    return dict(component_env("guest"))


@pytest.fixture
def kvmagent(component_env: Any, tmp_path: Path) -> Iterator[AgentProcess]:
    libvirt = component_env("libvirt")
    receiver = CallbackReceiver().start()
    a = AgentProcess(python_agent("kvmagent.app"), tmp_path, controller_urls=[receiver.url], extra={
        "libvirt_uri": libvirt["LIBVIRT_URI"], "domain_type": libvirt["LIBVIRT_DOMAIN_TYPE"],
        "storage_roots": [str(tmp_path)], "console_dir": tmp_path / "console",
    }).start()
    yield a
    a.stop()
    receiver.stop()


def test_vm_boots_from_an_rbd_root_volume(ceph: Ceph, agent: AgentProcess, kvmagent: AgentProcess,
                                          pools: dict[str, str], guest: dict[str, str]) -> None:
    image = Path(guest["GUEST_IMAGE"])
    vsize = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                                      capture_output=True, timeout=30).stdout)["virtual-size"]
    img = unique("guest")
    with FileServer(image.parent) as srv:
        r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=img, url=srv.url(image.name))
    assert r["success"] and r["size"] == vsize, r
    root = unique("root")
    r = call(agent, ceph, "/ceph/volume/create-from-image", pool=pools["volumes"], name=root,
             srcPool=pools["images"], srcName=img, size=vsize + 64 * MiB)
    assert r["success"], r

    secret = str(uuid.uuid4())
    key = Path(ceph.env["CEPH_AGENT_KEY_FILE"]).read_text().strip()
    s = kvmagent.call("/host/ceph-secret/set", {"secretUuid": secret, "userName": ceph.env["CEPH_AGENT_USER"],
                                                "userKey": key})
    assert s["success"], s
    host, _, port = ceph.monitors[0].rpartition(":")
    vm = str(uuid.uuid4())
    body = {"vmUuid": vm, "vmName": "ceph-" + vm[:8], "cpuNum": 1, "memorySize": 128 * MiB,
            "rootVolume": {"type": "rbd", "volumeUuid": str(uuid.uuid4()), "deviceId": 0,
                           "installPath": r["installPath"], "monitors": [{"host": host, "port": int(port)}],
                           "authUser": ceph.env["CEPH_AGENT_USER"], "secretUuid": secret}}
    started = kvmagent.call("/vm/start", body)
    assert started["success"], started
    console = kvmagent.workdir / "console" / f"{vm.replace('-', '')}.log"
    try:
        wait_until(lambda: console.exists() and guest["GUEST_MARKER"] in console.read_text(errors="replace"),
                   120, 0.2, "the guest booted from the RBD clone")
        busy = call(agent, ceph, "/ceph/volume/delete", pool=pools["volumes"], name=root)
        assert error_code(busy) == "IN_USE"
        assert call(agent, ceph, "/ceph/volume/info", pool=pools["volumes"], name=root)["watchers"] >= 1
    finally:
        assert kvmagent.call("/vm/destroy", {"vmUuid": vm})["success"]
    wait_until(lambda: call(agent, ceph, "/ceph/volume/delete", pool=pools["volumes"], name=root)["success"],
               30, 0.5, "QEMU let go of the volume")
    assert root not in ceph.images(pools["volumes"])
