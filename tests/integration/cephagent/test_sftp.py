"""Images between RBD and the SFTP backup storage, through the sftpbackup
store client, against the real sshd component and the real cluster."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpbackup.client import StoreClient
from sftpbackup.sftpcli import SftpTarget
from tests.integration.cephagent.conftest import Ceph, MiB, call, error_code, make_raw, unique
from tests.support.agents import AgentProcess, python_agent

pytestmark = [pytest.mark.ceph, pytest.mark.sftp]

SIZE = 12 * MiB


@pytest.fixture(scope="module")
def sshd(component_env: Any) -> dict[str, str]:
    return dict(component_env("sshd"))


@pytest.fixture(scope="module")
def store(sshd: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A fresh store directory in the SFTP chroot; the endpoint fields of a command."""
    rel = f"ceph-{uuid.uuid4().hex[:10]}"
    path = Path(sshd["SSHD_STORE_DIR"]) / rel
    path.mkdir()
    yield {"host": sshd["SSHD_HOST"], "port": int(sshd["SSHD_PORT"]), "user": sshd["SSHD_USER"],
           "storeRoot": f"/{rel}"}
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sftp_agent(ceph: Ceph, sshd: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[AgentProcess]:
    work = tmp_path_factory.mktemp("cephagent-sftp")
    proc = AgentProcess(
        python_agent("cephagent.app"), work,
        extra={"keyring_dirs": [ceph.env["CEPH_DIR"]], "sftp_key_file": sshd["SSHD_KEY"],
               "sftp_known_hosts": sshd["SSHD_KNOWN_HOSTS"]},
    ).start()
    yield proc
    proc.stop()


def client(sshd: dict[str, str], store: dict[str, Any]) -> StoreClient:
    return StoreClient(SftpTarget(store["host"], store["port"], store["user"], store["storeRoot"]),
                       Path(sshd["SSHD_KEY"]), Path(sshd["SSHD_KNOWN_HOSTS"]))


def test_export_then_import(ceph: Ceph, sftp_agent: AgentProcess, pools: dict[str, str],
                            sshd: dict[str, str], store: dict[str, Any], tmp_path: Path) -> None:
    data = make_raw(tmp_path / "src.raw", SIZE, seed=3)
    vol = unique("exp")
    assert call(sftp_agent, ceph, "/ceph/volume/create", pool=pools["volumes"], name=vol, size=SIZE)["success"]
    ceph.write(pools["volumes"], vol, 0, data)
    image_id = f"img-{uuid.uuid4().hex[:8]}"
    r = call(sftp_agent, ceph, "/ceph/image/export-to-sftp", pool=pools["volumes"], name=vol,
             storeName=image_id, **store)
    assert r["success"], r
    assert r["imageId"] == image_id and r["size"] == SIZE
    with client(sshd, store) as c:
        fetched = c.fetch(image_id, tmp_path / "back.raw")
    assert (tmp_path / "back.raw").read_bytes() == data and fetched.digest == r["digest"]

    name = unique("imp")
    r = call(sftp_agent, ceph, "/ceph/image/import-from-sftp", pool=pools["images"], name=name,
             imageId=image_id, sha256=r["digest"], **store)
    assert r["success"], r
    assert r["size"] == SIZE and r["sha256"] == fetched.digest
    assert ceph.read(pools["images"], name, 0, SIZE) == data
    r = call(sftp_agent, ceph, "/ceph/image/import-from-sftp", pool=pools["images"], name=unique("none"),
             imageId="no-such-image", sha256=fetched.digest, **store)
    assert r["success"] is False
    # the image's recorded digest, not the store's manifest, decides: nothing reaches RBD
    other = unique("other")
    r = call(sftp_agent, ceph, "/ceph/image/import-from-sftp", pool=pools["images"], name=other,
             imageId=image_id, sha256="0" * 64, **store)
    assert r["error"]["code"] == "DIGEST_MISMATCH", r
    assert other not in ceph.images(pools["images"])


def test_import_qcow2_from_sftp_is_raw_in_rbd(ceph: Ceph, sftp_agent: AgentProcess, pools: dict[str, str],
                                              sshd: dict[str, str], store: dict[str, Any],
                                              tmp_path: Path) -> None:
    data = make_raw(tmp_path / "d.raw", SIZE, seed=5)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "d.raw"),
                    str(tmp_path / "d.qcow2")], check=True, timeout=60)
    image_id = f"q-{uuid.uuid4().hex[:8]}"
    with client(sshd, store) as c:
        ref = c.upload(tmp_path / "d.qcow2", image_id)
    assert ref.format == "qcow2"
    name = unique("impq")
    r = call(sftp_agent, ceph, "/ceph/image/import-from-sftp", pool=pools["images"], name=name,
             imageId=image_id, sha256=ref.digest, **store)
    assert r["success"], r
    assert r["size"] == SIZE
    assert ceph.read(pools["images"], name, 0, SIZE) == data


def test_sftp_endpoint_is_validated(ceph: Ceph, sftp_agent: AgentProcess, pools: dict[str, str],
                                    store: dict[str, Any]) -> None:
    r = sftp_agent.post("/ceph/image/import-from-sftp", {
        "cluster": ceph.cluster(), "pool": pools["images"], "name": "x", "imageId": "../etc",
        **{**store, "user": "root; rm"}})
    assert r.status_code == 400
    fields = {f["field"] for f in r.json()["error"]["details"]["fields"]}
    assert fields == {"imageId", "user", "sha256"}  # an import must name the digest it expects
    r = call(sftp_agent, ceph, "/ceph/image/export-to-sftp", pool=pools["volumes"], name=unique("none"),
             storeName="x", **store)
    assert error_code(r) == "IMAGE_NOT_FOUND"
