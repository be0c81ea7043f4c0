"""Backup-storage commands against the real cluster: images added from a real
HTTP server (raw and qcow2), cancel and deadline of a transfer, caching into
a primary pool, templates, and the SFTP backup storage through its client."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cephagent.conftest import Ceph, MiB, call, error_code, make_raw, unique
from tests.support.agents import AgentProcess, CallbackReceiver, python_agent, wait_until
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.ceph

SIZE = 20 * MiB + 4096  # not a multiple of the block size


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileServer, Path, bytes]]:
    root = tmp_path_factory.mktemp("http")
    data = make_raw(root / "disk.raw", SIZE)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(root / "disk.raw"),
                    str(root / "disk.qcow2")], check=True, timeout=60)
    (root / "disk.vmdk").write_bytes(b"KDMV" + bytes(4092))
    with FileServer(root) as srv:
        yield srv, root, data


def leftovers(ceph: Ceph, pool: str, name: str) -> list[str]:
    return [i for i in ceph.images(pool) if i.startswith(name)]


def test_add_raw_image_from_http(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                 files: tuple[FileServer, Path, bytes]) -> None:
    srv, root, data = files
    name = unique("raw")
    digest = hashlib.sha256(data).hexdigest()
    r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=name, url=srv.url("disk.raw"),
             sha256=digest)
    assert r["success"], r
    assert (r["size"], r["sourceFormat"], r["sha256"], r["downloadedBytes"]) == (SIZE, "raw", digest, SIZE)
    assert r["actualSize"] < SIZE  # the zero stretches were not written
    assert ceph.read(pools["images"], name, 0, SIZE) == data
    assert leftovers(ceph, pools["images"], name) == [name]
    r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=name, url=srv.url("disk.raw"))
    assert error_code(r) == "IMAGE_EXISTS"


def test_add_qcow2_image_is_converted_to_raw(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                             files: tuple[FileServer, Path, bytes]) -> None:
    srv, root, data = files
    name = unique("qcow")
    r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=name, url=srv.url("disk.qcow2"))
    assert r["success"], r
    assert r["sourceFormat"] == "qcow2" and r["size"] == SIZE
    assert r["sha256"] == hashlib.sha256((root / "disk.qcow2").read_bytes()).hexdigest()
    assert ceph.read(pools["images"], name, 0, SIZE) == data
    # a root volume can be cloned from it at once
    vol = unique("fromqcow")
    r = call(agent, ceph, "/ceph/volume/create-from-image", pool=pools["volumes"], name=vol,
             srcPool=pools["images"], srcName=name)
    assert r["success"], r
    assert ceph.read(pools["volumes"], vol, 0, MiB) == data[:MiB]


def test_add_image_refusals_leave_nothing(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                          files: tuple[FileServer, Path, bytes]) -> None:
    srv, _, _ = files
    pool = pools["images"]
    name = unique("refused")
    r = call(agent, ceph, "/ceph/image/add", pool=pool, name=name, url=srv.url("disk.raw"), sha256="0" * 64)
    assert error_code(r) == "DIGEST_MISMATCH"
    r = call(agent, ceph, "/ceph/image/add", pool=pool, name=name, url=srv.url("disk.qcow2"), sha256="0" * 64)
    assert error_code(r) == "DIGEST_MISMATCH"
    assert error_code(call(agent, ceph, "/ceph/image/add", pool=pool, name=name,
                           url=srv.url("disk.vmdk"))) == "IMAGE_FORMAT_UNSUPPORTED"
    assert error_code(call(agent, ceph, "/ceph/image/add", pool=pool, name=name, url=srv.url("disk.qcow2"),
                           format="raw")) == "IMAGE_FORMAT_UNSUPPORTED"
    assert error_code(call(agent, ceph, "/ceph/image/add", pool=pool, name=name,
                           url=srv.url("missing"))) == "DOWNLOAD_FAILED"
    srv.announce["disk.raw"] = SIZE + MiB
    try:
        r = call(agent, ceph, "/ceph/image/add", pool=pool, name=name, url=srv.url("disk.raw"))
    finally:
        del srv.announce["disk.raw"]
    assert error_code(r) == "DOWNLOAD_FAILED"
    assert leftovers(ceph, pool, name) == []
    bad = agent.post("/ceph/image/add", {"cluster": ceph.cluster(), "pool": pool, "name": name,
                                         "url": "file:///etc/passwd"})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["fields"][0]["field"] == "url"


def _start_slow_add(ceph: Ceph, agent: AgentProcess, receiver: CallbackReceiver, pool: str, name: str,
                    url: str, **extra: Any) -> str:
    task = unique("add")
    r = agent.post("/ceph/image/add", {"cluster": ceph.cluster(), "pool": pool, "name": name, "url": url,
                                       **extra}, taskuuid=task, callbackurl=receiver.url + "/cb")
    assert r.status_code == 202, r.text
    return task


def test_add_image_cancel_removes_the_partial_image(ceph: Ceph, agent: AgentProcess, receiver: CallbackReceiver,
                                                    pools: dict[str, str],
                                                    files: tuple[FileServer, Path, bytes]) -> None:
    srv, _, _ = files
    srv.rate["disk.raw"] = 2 * MiB
    name = unique("cancel")
    try:
        task = _start_slow_add(ceph, agent, receiver, pools["images"], name, srv.url("disk.raw"))

        def progressing() -> bool:
            st = agent.client.get(f"/tasks/{task}").json()
            p = st.get("progress") or {}
            return st["state"] == "running" and (p.get("done") or 0) >= 4 * MiB
        wait_until(progressing, 60, what="download progress")
        assert agent.client.post(f"/tasks/{task}/cancel").status_code == 200
        reply = receiver.wait_reply(task, 60)
    finally:
        del srv.rate["disk.raw"]
    assert reply["error"]["code"] == "CANCELLED"
    wait_until(lambda: leftovers(ceph, pools["images"], name) == [], 60, what="partial image removed")


def test_add_image_deadline(ceph: Ceph, agent: AgentProcess, receiver: CallbackReceiver,
                            pools: dict[str, str], files: tuple[FileServer, Path, bytes]) -> None:
    srv, _, _ = files
    srv.rate["disk.raw"] = 2 * MiB
    name = unique("late")
    try:
        task = _start_slow_add(ceph, agent, receiver, pools["images"], name, srv.url("disk.raw"), timeout=2)
        reply = receiver.wait_reply(task, 60)
    finally:
        del srv.rate["disk.raw"]
    assert reply["error"]["code"] == "DEADLINE_EXCEEDED"
    wait_until(lambda: leftovers(ceph, pools["images"], name) == [], 60, what="partial image removed")


def test_cache_image_and_create_template(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                         files: tuple[FileServer, Path, bytes]) -> None:
    srv, _, data = files
    img = unique("src")
    assert call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=img, url=srv.url("disk.raw"))["success"]
    cached = unique("cache")
    r = call(agent, ceph, "/ceph/image/cache", pool=pools["volumes"], name=cached, srcPool=pools["images"],
             srcName=img)
    assert r["success"] and r["existed"] is False and r["size"] == SIZE, r
    assert r["actualSize"] < SIZE  # the copy stays sparse
    assert ceph.read(pools["volumes"], cached, 0, SIZE) == data
    again = call(agent, ceph, "/ceph/image/cache", pool=pools["volumes"], name=cached, srcPool=pools["images"],
                 srcName=img)
    assert again["success"] and again["existed"] is True

    vol = unique("tvol")
    assert call(agent, ceph, "/ceph/volume/create-from-image", pool=pools["volumes"], name=vol,
                srcPool=pools["volumes"], srcName=cached)["success"]
    ceph.write(pools["volumes"], vol, 0, b"TEMPLATE!")
    assert call(agent, ceph, "/ceph/snapshot/create", pool=pools["volumes"], name=vol, snapshot="t")["success"]
    ceph.write(pools["volumes"], vol, 0, b"LATER....")
    tmpl = unique("tmpl")
    r = call(agent, ceph, "/ceph/volume/create-template", pool=pools["volumes"], name=vol, snapshot="t",
             dstPool=pools["images"], dstName=tmpl)
    assert r["success"] and r["installPath"] == f"{pools['images']}/{tmpl}", r
    assert ceph.read(pools["images"], tmpl, 0, 9) == b"TEMPLATE!"
    assert call(agent, ceph, "/ceph/image/info", pool=pools["images"], name=tmpl)["size"] == SIZE
    r = call(agent, ceph, "/ceph/volume/create-template", pool=pools["volumes"], name=vol,
             dstPool=pools["images"], dstName=tmpl)
    assert error_code(r) == "IMAGE_EXISTS"
    ghost = unique("tmpl")
    r = call(agent, ceph, "/ceph/volume/create-template", pool=pools["volumes"], name=vol, snapshot="nope",
             dstPool=pools["images"], dstName=ghost)
    assert error_code(r) == "SNAPSHOT_NOT_FOUND"
    assert leftovers(ceph, pools["images"], ghost) == []
    r = call(agent, ceph, "/ceph/image/delete", pool=pools["images"], name=tmpl)
    assert r["success"] and r["existed"] is True
    assert tmpl not in ceph.images(pools["images"])


def test_agent_killed_mid_import_then_the_import_is_redone(ceph: Ceph, pools: dict[str, str],
                                                           receiver: CallbackReceiver,
                                                           files: tuple[FileServer, Path, bytes],
                                                           tmp_path: Path) -> None:
    srv, _, data = files
    extra = {"keyring_dirs": [ceph.env["CEPH_DIR"]], "download_allow_local": True}
    agent = AgentProcess(python_agent("cephagent.app"), tmp_path, controller_urls=[receiver.url],
                         extra=extra).start()
    name = unique("killed")
    srv.rate["disk.raw"] = 2 * MiB
    try:
        task = _start_slow_add(ceph, agent, receiver, pools["images"], name, srv.url("disk.raw"))
        wait_until(lambda: leftovers(ceph, pools["images"], name), 60, what="the partial image")
        agent.kill9()
        [part] = leftovers(ceph, pools["images"], name)
        assert part.startswith(f"{name}.kvmcloud-part-")
    finally:
        del srv.rate["disk.raw"]
    agent = AgentProcess(python_agent("cephagent.app"), tmp_path, controller_urls=[receiver.url],
                         extra=extra, port=agent.port).start()
    try:
        assert agent.client.get(f"/tasks/{task}").json()["state"] == "interrupted"
        assert receiver.wait_reply(task, 30)["error"]["code"] == "INTERRUPTED"
        # the dead agent's watch still holds its part: the new import does not wait for it
        r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=name, url=srv.url("disk.raw"))
        assert r["success"], r
        assert ceph.read(pools["images"], name, 0, SIZE) == data
        assert set(leftovers(ceph, pools["images"], name)) <= {name, part}
    finally:
        agent.stop()
