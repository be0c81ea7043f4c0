"""A volume restored from the SFTP store in one command (create-from-store):
fetched into the storage hash-checked, then moved into place, or nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpbackup.client import SftpTarget, StoreClient
from tests.integration.storageagent.conftest import Storage, qemu_img, sha256_of

pytestmark = [pytest.mark.nfs, pytest.mark.sftp]


class Store:
    def __init__(self, sshd_env: dict[str, str], root: str) -> None:
        self.root = root
        self.target = SftpTarget(sshd_env["SSHD_HOST"], int(sshd_env["SSHD_PORT"]),
                                 sshd_env["SSHD_USER"], root)
        self.key, self.known = Path(sshd_env["SSHD_KEY"]), Path(sshd_env["SSHD_KNOWN_HOSTS"])
        self.dir = Path(sshd_env["SSHD_STORE_DIR"]) / root.lstrip("/")

    def forge(self, path: Path, name: str) -> dict[str, Any]:
        """``path`` listed in the store as ``name`` behind the client's back (the
        client refuses to upload an image with a backing file; the store's
        key holder need not)."""
        data = path.read_bytes()
        src = self.upload(path.with_suffix(".decoy"), name)
        manifest = json.loads((self.dir / "manifests" / f"{name}.json").read_bytes())
        chunks = []
        for off in range(0, len(data), 1 << 20):
            block = data[off:off + (1 << 20)]
            d = hashlib.sha256(block).hexdigest()
            (self.dir / "chunks" / d[:2]).mkdir(exist_ok=True)
            (self.dir / "chunks" / d[:2] / d).write_bytes(block)
            chunks.append({"digest": d, "size": len(block)})
        manifest.update(chunks=chunks, digest=hashlib.sha256(data).hexdigest(), size=len(data))
        (self.dir / "manifests" / f"{name}.json").write_text(json.dumps(manifest))
        return src

    def upload(self, path: Path, name: str) -> dict[str, Any]:
        with StoreClient(self.target, self.key, self.known) as c:
            c.ensure_layout()
            c.upload(path, name)
        return {"kind": "sftp", "host": self.target.host, "port": self.target.port,
                "user": self.target.user, "storeRoot": self.root, "imageId": name}


@pytest.fixture
def store(sshd_env: dict[str, str]) -> Iterator[Store]:
    root = "/" + f"rs-{uuid.uuid4().hex[:8]}"
    d = Path(sshd_env["SSHD_STORE_DIR"]) / root.lstrip("/")
    d.mkdir()
    try:
        yield Store(sshd_env, root)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def leftovers(s: Storage) -> list[Path]:
    d = s.root / ".kvmcloud" / "partial"
    return list(d.iterdir()) if d.is_dir() else []


def _qcow2_with_data(path: Path) -> None:
    raw = path.with_suffix(".raw")
    raw.write_bytes(os.urandom(3 << 20))
    qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    raw.unlink()


def test_a_qcow2_backup_is_restored_byte_for_byte(workdir: Path, store: Store, nfs_storage: Storage) -> None:
    img = workdir / f"b-{uuid.uuid4().hex[:6]}.qcow2"
    _qcow2_with_data(img)
    digest = sha256_of(img)
    src = store.upload(img, "vol-backup")
    r = nfs_storage.ok("/storage/volume/create-from-store", source=src, digest=digest,
                       size=img.stat().st_size, installPath="restored/a.qcow2")
    vol = r["volume"]
    assert (vol["installPath"], vol["format"], vol["backingChain"]) == ("restored/a.qcow2", "qcow2", [])
    assert vol["virtualSize"] == 3 << 20
    dest = nfs_storage.path("restored/a.qcow2")
    assert sha256_of(dest) == digest and dest.stat().st_mode & 0o777 == 0o644
    assert leftovers(nfs_storage) == []
    again = nfs_storage.call("/storage/volume/create-from-store", source=src, digest=digest,
                             installPath="restored/a.qcow2")
    assert again["error"]["code"] == "CONFLICT" and sha256_of(dest) == digest
    nfs_storage.ok("/storage/volume/delete", installPath="restored/a.qcow2")


def test_a_raw_backup_is_converted_to_qcow2(workdir: Path, store: Store, nfs_storage: Storage) -> None:
    raw = workdir / f"b-{uuid.uuid4().hex[:6]}.raw"
    raw.write_bytes(os.urandom(2 << 20))
    src = store.upload(raw, "raw-backup")
    r = nfs_storage.ok("/storage/volume/create-from-store", source=src, digest=sha256_of(raw),
                       installPath="restored/raw.qcow2")
    assert (r["volume"]["format"], r["volume"]["virtualSize"]) == ("qcow2", 2 << 20)
    qemu_img("compare", "-q", "-f", "raw", "-F", "qcow2", str(raw),
             str(nfs_storage.path("restored/raw.qcow2")))
    assert leftovers(nfs_storage) == []
    nfs_storage.ok("/storage/volume/delete", installPath="restored/raw.qcow2")


def test_a_digest_mismatch_leaves_nothing(workdir: Path, store: Store, nfs_storage: Storage) -> None:
    img = workdir / f"b-{uuid.uuid4().hex[:6]}.qcow2"
    _qcow2_with_data(img)
    src = store.upload(img, "other")
    wrong = "sha256:" + hashlib.sha256(b"another image").hexdigest()
    r = nfs_storage.call("/storage/volume/create-from-store", source=src, digest=wrong,
                         installPath="restored/bad.qcow2")
    assert r["success"] is False and r["error"]["code"] == "DIGEST_MISMATCH", r
    assert not nfs_storage.path("restored/bad.qcow2").exists()
    assert leftovers(nfs_storage) == []


def test_a_qcow2_with_a_backing_file_is_refused(workdir: Path, store: Store, nfs_storage: Storage) -> None:
    base = workdir / f"base-{uuid.uuid4().hex[:6]}.qcow2"
    _qcow2_with_data(base)
    top = workdir / f"top-{uuid.uuid4().hex[:6]}.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(top))
    top.with_suffix(".decoy").write_bytes(os.urandom(4096))
    src = store.forge(top, "backed")
    r = nfs_storage.call("/storage/volume/create-from-store", source=src, digest=sha256_of(top),
                         installPath="restored/backed.qcow2")
    assert r["success"] is False and r["error"]["code"] == "INVALID_REQUEST", r
    assert r["error"]["details"]["field"] == "source"
    assert not nfs_storage.path("restored/backed.qcow2").exists()
    assert leftovers(nfs_storage) == []

