"""Image URLs and images that try to make the root cephagent read a host file or
reach the host itself, against the real cluster, real qemu-img and a real HTTP
server."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cephagent.conftest import Ceph, MiB, call, error_code, unique
from tests.support.agents import AgentProcess, free_port, python_agent
from tests.support.httpserver import FileServer

pytestmark = pytest.mark.ceph

SECRET = b"root-only secret of the ceph host\n" * 64


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def host_secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("host") / "secret"
    p.write_bytes(SECRET)
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, host_secret: Path) -> Iterator[FileServer]:
    d = tmp_path_factory.mktemp("evil")
    # qemu-img create (re)writes the data file it names: put the secret back afterwards
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={host_secret},data_file_raw=on",
             str(d / "datafile.qcow2"), "1M")
    host_secret.write_bytes(SECRET)
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(host_secret), "-F", "raw",
             str(d / "backing.qcow2"), "1M")
    (d / "disk.raw").write_bytes(b"\x01" * MiB)
    with FileServer(d) as srv:
        yield srv


@pytest.mark.parametrize("image", ["datafile.qcow2", "backing.qcow2"])
def test_a_qcow2_naming_a_host_file_is_refused(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                                               files: FileServer, image: str) -> None:
    """F3: before the fix the root ``qemu-img convert`` copied the data file (the
    host's secret) into the RBD image."""
    name = unique("evil")
    r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=name, url=files.url(image))
    assert error_code(r) == "IMAGE_FORMAT_UNSUPPORTED", r
    assert not [i for i in ceph.images(pools["images"]) if i.startswith(name)]


class _Redirector:
    """Answers every GET with a redirect to ``target``."""

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


def test_redirects_are_checked(ceph: Ceph, agent: AgentProcess, pools: dict[str, str],
                               files: FileServer) -> None:
    hop = _Redirector(files.url("disk.raw"))
    try:
        name = unique("redir")
        assert call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=name, url=hop.url)["success"]
        for bad in ("file:///etc/passwd", "gopher://127.0.0.1/x", "http://user:pw@127.0.0.1/x"):
            hop.target = bad
            r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=unique("redir"), url=hop.url)
            assert error_code(r) == "URL_REFUSED", (bad, r)
    finally:
        hop.close()


def test_download_errors_do_not_echo_the_remote_answer(ceph: Ceph, agent: AgentProcess,
                                                       pools: dict[str, str], files: FileServer) -> None:
    r = call(agent, ceph, "/ceph/image/add", pool=pools["images"], name=unique("missing"),
             url=files.url("no-such-file"))
    assert error_code(r) == "DOWNLOAD_FAILED"
    assert "404" not in str(r["error"]) and "status" not in r["error"].get("details", {})


@pytest.fixture(scope="module")
def default_agent(ceph: Ceph, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """A cephagent with the default config: no downloads from the host itself."""
    a = AgentProcess(python_agent("cephagent.app"), tmp_path_factory.mktemp("default-cephagent"),
                     extra={"keyring_dirs": [ceph.env["CEPH_DIR"]]}).start()
    yield a
    a.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254"])
def test_by_default_the_host_itself_and_metadata_are_not_download_sources(
        ceph: Ceph, default_agent: AgentProcess, pools: dict[str, str], files: FileServer,
        host: str) -> None:
    url = files.url("disk.raw").replace("127.0.0.1", host)
    r = call(default_agent, ceph, "/ceph/image/add", pool=pools["images"], name=unique("local"), url=url)
    assert error_code(r) == "URL_REFUSED", r
