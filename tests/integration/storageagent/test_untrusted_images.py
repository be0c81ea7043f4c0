"""Images and volumes that try to make the root agent read a host file, and image
URLs that lead to the host itself: the real agent, real qemu-img and curl, on a
local storage (``nfs`` marker: the session's agent mounts the ganesha export)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.storageagent.conftest import (
    Storage,
    agent_extra,
    local_storage,
    qemu_img,
    sha256_of,
    tree,
)
from tests.support.agents import AgentProcess, free_port, python_agent
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.nfs

SECRET = b"root-only secret of the host\n" * 64
MiB = 1 << 20


@pytest.fixture(scope="module")
def host_secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of the host that no image may expose (stands for /etc/shadow, a keyring)."""
    p = tmp_path_factory.mktemp("host") / "secret"
    p.write_bytes(SECRET)
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory, host_secret: Path) -> Iterator[FileServer]:
    """A file server of crafted images."""
    d = tmp_path_factory.mktemp("evil")
    # qemu-img create (re)writes the data file it names: put the secret back afterwards
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={host_secret},data_file_raw=on",
             str(d / "datafile.qcow2"), "1M")
    host_secret.write_bytes(SECRET)
    assert f'"data-file": "{host_secret}"' in qemu_img("info", "--output=json", "-f", "qcow2",
                                                       "-U", str(d / "datafile.qcow2"))
    with FileServer(d) as srv:
        yield srv


@pytest.fixture(scope="module")
def storage(agent: AgentProcess, workdir: Path) -> Storage:
    return local_storage(agent, workdir)


def cache(s: Storage, image_id: str, url: str, digest: str) -> dict[str, Any]:
    return s.call("/storage/cache-image", imageId=image_id, digest=digest,
                  source={"kind": "http", "url": url})


def test_a_qcow2_with_an_external_data_file_is_not_cached(storage: Storage, evil: FileServer) -> None:
    """F3: before the fix the image was cached, and a VM or a template copy of it
    read the host file as its disk."""
    r = cache(storage, "datafile", evil.url("datafile.qcow2"), sha256_of(evil.root / "datafile.qcow2"))
    assert not r["success"], r
    assert r["error"]["code"] == "INVALID_REQUEST"
    assert "external data file" in r["error"]["message"]
    assert not list(storage.root.glob("imagecache/datafile*"))
    assert not list(storage.root.glob(".kvmcloud/partial/*"))


@pytest.fixture
def raw_volume_with_a_forged_header(storage: Storage, host_secret: Path,
                                    tmp_path: Path) -> Iterator[str]:
    """A raw volume whose first bytes the guest wrote as a qcow2 header naming a host file."""
    rel = f"vols/{uuid.uuid4().hex[:8]}.raw"
    storage.ok("/storage/volume/create-empty", installPath=rel, size=4 * MiB, format="raw")
    header = tmp_path / "header.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(host_secret), "-F", "raw",
             str(header), "4M")
    data = header.read_bytes()
    with open(storage.path(rel), "r+b") as f:  # what the guest can do through its disk
        f.write(data)
    yield rel
    storage.call("/storage/volume/delete", installPath=rel)


def test_a_raw_volume_is_copied_as_raw_whatever_its_first_bytes(
        storage: Storage, raw_volume_with_a_forged_header: str) -> None:
    """F13: before the fix qemu-img probed the volume as qcow2, followed the backing
    file the guest named, and the copy held the host file."""
    rel = raw_volume_with_a_forged_header
    raw = storage.path(rel).read_bytes()
    r = storage.ok("/storage/volume/copy", installPath=rel, volumeFormat="raw",
                   dstStorageUuid=storage.uuid, dstMountPath=str(storage.root),
                   dstInstallPath=f"copies/{uuid.uuid4().hex[:8]}.raw")
    copy = storage.path(r["volume"]["installPath"])
    assert r["volume"]["format"] == "raw" and r["volume"]["backingChain"] == []
    assert copy.read_bytes() == raw and SECRET not in copy.read_bytes()
    storage.ok("/storage/volume/delete", installPath=r["volume"]["installPath"])

    tpl = f"templates/{uuid.uuid4().hex[:8]}.raw"
    r = storage.ok("/storage/volume/create-template", installPath=rel, volumeFormat="raw",
                   templatePath=tpl, format="raw")
    assert storage.path(tpl).read_bytes() == raw
    storage.ok("/storage/volume/delete", installPath=tpl)


def test_a_forged_header_never_leads_out_of_the_storage(
        storage: Storage, raw_volume_with_a_forged_header: str) -> None:
    """Read as qcow2 (a command that does not say the format), the guest's header
    names a file outside the storage: refused before qemu-img opens it."""
    rel = raw_volume_with_a_forged_header
    before = tree(storage.root)
    tpl = f"templates/{uuid.uuid4().hex[:8]}.qcow2"
    r = storage.call("/storage/volume/create-template", installPath=rel, templatePath=tpl)
    assert not r["success"] and r["error"]["code"] == "PATH_OUTSIDE_ROOT", r
    r = storage.call("/storage/volume/copy", installPath=rel, dstStorageUuid=storage.uuid,
                     dstMountPath=str(storage.root), dstInstallPath=f"copies/{uuid.uuid4().hex}.qcow2")
    assert not r["success"] and r["error"]["code"] == "PATH_OUTSIDE_ROOT", r
    assert tree(storage.root) == before


# -- where downloads may go (F12) --------------------------------------------


class _Redirector:
    """An HTTP server that answers every GET with a redirect to ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", outer.target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/image"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    d = tmp_path_factory.mktemp("plain")
    (d / "disk.raw").write_bytes(b"\x01" * MiB)
    with FileServer(d) as srv:
        yield srv


@pytest.fixture(scope="module")
def default_agent(workdir: Path, mount_base: Path) -> Iterator[AgentProcess]:
    """An agent with the default config: no downloads from the host itself."""
    home = workdir / f"agent-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    extra = agent_extra(workdir, mount_base)
    del extra["download_allow_local"]
    a = AgentProcess(python_agent("storageagent.app"), home, extra=extra)
    a.start()
    yield a
    a.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "169.254.169.254"])
def test_by_default_the_host_itself_and_metadata_are_not_download_sources(
        default_agent: AgentProcess, workdir: Path, plain: FileServer, host: str) -> None:
    s = local_storage(default_agent, workdir)
    url = plain.url("disk.raw").replace("127.0.0.1", host)
    r = cache(s, "x", url, sha256_of(plain.root / "disk.raw"))
    assert not r["success"] and r["error"]["code"] == "URL_REFUSED", r
    assert not (s.root / "imagecache").exists()


def test_redirects_are_checked_hop_by_hop(storage: Storage, plain: FileServer,
                                          default_agent: AgentProcess, workdir: Path) -> None:
    digest = sha256_of(plain.root / "disk.raw")
    hop = _Redirector(plain.url("disk.raw"))
    try:
        # allowed to reach 127.0.0.1 (the test config): the redirect is followed
        r = cache(storage, f"r-{uuid.uuid4().hex[:6]}", hop.url, digest)
        assert r["success"], r
        for bad in ("file:///etc/passwd", "gopher://127.0.0.1/x", "http://user:pw@127.0.0.1/x"):
            hop.target = bad
            r = cache(storage, f"r-{uuid.uuid4().hex[:6]}", hop.url, digest)
            assert not r["success"] and r["error"]["code"] == "URL_REFUSED", (bad, r)
    finally:
        hop.close()


def test_download_errors_do_not_echo_the_remote_answer(storage: Storage, plain: FileServer) -> None:
    r = cache(storage, "missing", plain.url("no-such-file"), "sha256:" + "0" * 64)
    assert not r["success"] and r["error"]["code"] == "DOWNLOAD_FAILED", r
    text = str(r["error"])
    assert "404" not in text and "returncode" not in text
