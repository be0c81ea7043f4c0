"""The controller against the real agents: shared world and helpers.

``world`` (module-scoped) runs a controller in-process over real HTTP, a real
kvmagent (libvirt, TCG guests, bridges, dnsmasq in a namespace) and a real
storageagent (image cache over HTTP, qcow2 linked clones), serves the tiny
guest image over HTTP and gives the bridge an uplink of its own (a veth end).
``build_cloud`` registers a zone, cluster, local primary storage, image,
network, offering and the host through the API. A test module uses them with
``from tests.integration.controller.realworld import world_fixture  # noqa: F401``
(the fixture's name is ``world``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from controller.server import create_app
from controller.settings import Settings
from sftpbackup.sftpcli import SftpTarget
from tests.conftest import ENV_DIR
from tests.integration.storageagent.conftest import sha256_of
from tests.support.agents import TOKEN, AgentProcess, free_port, python_agent, wait_until
from tests.support.httpserver import FileServer

API = "e2e-api-token-0123456789"


@dataclass
class World:
    """A controller, its agents and the ids a test module builds up."""

    api: httpx.Client
    app: Any
    kvm: AgentProcess
    sto: AgentProcess
    base: Path
    ps_root: Path
    dummy: str
    url: str
    guest: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)
    migration_port: int = 22
    """the sshd port the kvmagent migrates to (a second host's sshd listens there)"""

    def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.api.request(method, path, json=body, params=params or None)
        assert r.status_code in (200, 201, 202), r.text
        return r.json()

    def run(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        """Submit a job and wait for it; returns it whatever its end."""
        r = self.api.request(method, path, json=body, params={"wait": "1", **params}, timeout=600)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()["job"]
        return job

    def job(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        job = self.run(method, path, body, **params)
        assert job["state"] == "succeeded", json.dumps(job)
        return job

    @property
    def ctl(self) -> Any:
        return self.app.extensions["kvmcloud"]

    def console(self, vm: str) -> Path:
        return self.base / "console" / f"{vm}.log"

    def wait_console(self, vm: str, text: str, count: int = 1, timeout: float = 300) -> None:
        """Until the VM's serial log holds ``text`` at least ``count`` times."""
        log = self.console(vm)
        wait_until(lambda: log.exists() and log.read_text(errors="replace").count(text) >= count,
                   timeout, interval=0.5, what=f"{count}x {text!r} in the console of {vm}")


def agent_home(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir()
    return d


def kvmagent(base: Path, name: str, url: str, libvirt_uri: str, domain_type: str,
             roots: list[Path], **extra: Any) -> AgentProcess:
    """A kvmagent process (not started) that reports to the controller at ``url``."""
    return AgentProcess(python_agent("kvmagent.app"), agent_home(base, name), controller_urls=[url],
                        extra={"libvirt_uri": libvirt_uri, "domain_type": domain_type,
                               "storage_roots": [str(r) for r in roots],
                               "console_dir": base / "console", **extra})


def serve_controller(db_url: str, api_token: str) -> tuple[Any, str, BaseWSGIServer]:
    """A controller app over real HTTP on a free port (agents use ``TOKEN``): app, URL, server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(Settings(db_url=db_url, listen=f"127.0.0.1:{port}", public_url=url,
                              api_tokens=[api_token], agent_token=TOKEN, tracker=False,
                              poll_after=10.0))
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, url, server


class ControllerProcess:
    """``kvmcloud serve`` as a process of its own on a fixed port and database, so a test
    can kill it (``kill -9``) and start it again where it was."""

    def __init__(self, *settings: str) -> None:
        """``settings``: ``KEY=VALUE`` of the controller's settings (``open_world`` gives it
        its database and log under the world's directory)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = Path("controller.db")
        self.log = Path("controller.log")
        self.settings = ["--setting", "tracker=false", "--setting", "poll_after=10",
                         *(a for kv in settings for a in ("--setting", kv))]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(  # a session of its own: gunicorn's worker dies with it
                [sys.executable, "-m", "controller.cli", "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--db", f"sqlite:///{self.db}", "--api-token", API, "--agent-token", TOKEN,
                 *self.settings], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 60, what="controller /healthz")
        return self

    def _signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the server and its worker: nothing of their own cleanup runs."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None

            def closed() -> bool:
                try:
                    httpx.get(f"{self.url}/healthz", timeout=1)
                except httpx.HTTPError:
                    return True
                return False
            wait_until(closed, 15, what=f"nothing answering on {self.url} any more")

    def stop(self) -> None:
        if self.proc is not None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            self.kill()


def _in_process(base: Path) -> tuple[Any, str, Callable[[], None]]:
    app, url, server = serve_controller(f"sqlite:///{base}/controller.db", API)

    def stop() -> None:
        server.shutdown()
        app.extensions["kvmcloud"].close()
    return app, url, stop


def add_uplink() -> str:
    """An uplink of our own for a bridge (no dummy driver here): one end of a veth pair, up."""
    name = "kcd" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", "kcp" + name[3:]],
                   check=True, timeout=10)
    subprocess.run(["ip", "link", "set", name, "up"], check=True, timeout=10)
    return name


def drop_uplink(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)


@contextmanager
def open_world(component_env: Callable[[str], dict[str, str]],
               sto_extra: dict[str, Any] | None = None, roots: Sequence[Path] = (),
               process: ControllerProcess | None = None) -> Iterator[World]:
    """The world of a test module; ``sto_extra``: more of the storageagent's config,
    ``roots``: more directories the kvmagent opens disks under; ``process``: the controller
    runs as that process (started here, ``w.app`` None) instead of in-process."""
    libvirt_env, guest = component_env("libvirt"), component_env("guest")
    base = ENV_DIR / "kvmagent-tests" / f"ctl-{uuid.uuid4().hex[:10]}"
    ps_root = base / "ps"
    for d in (base, ps_root, base / "console", base / "images"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    image = base / "images" / "guest.qcow2"
    shutil.copyfile(guest["GUEST_IMAGE"], image)
    files = FileServer(base / "images").start()
    dummy = add_uplink()
    if process is None:
        app, url, stop_controller = _in_process(base)
    else:
        process.db, process.log = base / "controller.db", base / "controller.log"
        app, url, stop_controller = None, process.start().url, process.stop
    # live migration over SSH as deployed: the key and known_hosts of the "migration" dir come
    # from the second host's sshd, when a test module starts one (SecondLibvirtd.start_sshd)
    migration_port = free_port()
    kvm = kvmagent(base, "kvm", url, libvirt_env["LIBVIRT_URI"], libvirt_env["LIBVIRT_DOMAIN_TYPE"],
                   [base, *roots], migration_ssh_key=base / "migration" / "id_ed25519",
                   migration_known_hosts=base / "migration" / "known_hosts",
                   migration_ssh_port=migration_port).start()
    sto = AgentProcess(python_agent("storageagent.app"), agent_home(base, "sto"), controller_urls=[url],
                       extra={"storage_base_dirs": [str(base)], "download_allow_local": True,
                              **(sto_extra or {})}).start()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(image)],
                                     capture_output=True, check=True, timeout=30).stdout)
    w = World(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API}"}, timeout=120),
              app, kvm, sto, base, ps_root, dummy, url, guest,
              {"image_url": files.url("guest.qcow2"), "digest": sha256_of(image),
               "size": str(info["virtual-size"])}, migration_port)
    try:
        yield w
    finally:
        if "zone" in w.ids:  # a test failed or ran alone: take down its bridges, DHCP and disks
            w.api.delete(f"/v1/zones/{w.ids['zone']}", params={"confirm": "1", "wait": "1"}, timeout=300)
        for vm in w.ids.get("vms", "").split(","):
            if vm:
                subprocess.run(["virsh", "-c", "qemu:///system", "destroy", vm], capture_output=True,
                               timeout=30)
        kvm.stop()
        sto.stop()
        stop_controller()
        files.stop()
        drop_uplink(dummy)
        if not os.environ.get("KVMCLOUD_KEEP_TEST_DIRS"):  # keep logs and consoles for debugging
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", name="world")
def world_fixture(component_env: Callable[[str], dict[str, str]]) -> Iterator[World]:
    with open_world(component_env) as w:
        yield w


@dataclass
class SftpStore:
    """A real sftpbackup agent and its store in the sshd component's chroot: ``body`` is the
    backup storage as the API takes it (``url`` as SFTP clients see the store, ``agentRoot``
    as the agent reads it)."""

    agent: AgentProcess
    store_dir: Path
    target: SftpTarget
    key: Path
    known_hosts: Path
    body: dict[str, Any]

    def manifest(self, image_id: str) -> Path:
        return self.store_dir / "manifests" / f"{image_id}.json"

    def chunks(self) -> list[Path]:
        return [p for p in (self.store_dir / "chunks").rglob("*") if p.is_file()]


@contextmanager
def _store(target: SftpTarget, store_dir: Path, key: Path, known_hosts: Path, controller_url: str,
           home: Path) -> Iterator[SftpStore]:
    """An sftpbackup agent in ``home`` for the store ``target`` (``store_dir`` where the agent
    reads it); the store is removed at the end."""
    home.mkdir(exist_ok=True)
    agent = AgentProcess(python_agent("sftpbackup.app"), home, controller_urls=[controller_url],
                         extra={"sftp_key_file": key, "sftp_known_hosts": known_hosts,
                                "download_allow_local": True}).start()
    try:
        yield SftpStore(agent, store_dir, target, key, known_hosts, {
            "type": "sftp", "hostname": target.host, "port": target.port, "username": target.user,
            "url": target.store_root, "agentRoot": str(store_dir), "agentUrl": agent.url})
    finally:
        agent.stop()
        shutil.rmtree(store_dir, ignore_errors=True)


@contextmanager
def sftp_store(sshd: dict[str, str], controller_url: str, home: Path) -> Iterator[SftpStore]:
    """A store of its own under the sshd component's store dir, its agent in ``home``."""
    rel = f"t-ctl-{uuid.uuid4().hex[:10]}"
    target = SftpTarget(sshd["SSHD_HOST"], int(sshd["SSHD_PORT"]), sshd["SSHD_USER"], f"/{rel}")
    with _store(target, Path(sshd["SSHD_STORE_DIR"]) / rel, Path(sshd["SSHD_KEY"]),
                Path(sshd["SSHD_KNOWN_HOSTS"]), controller_url, home) as store:
        yield store


def nshost_known_hosts(nshost: dict[str, str], path: Path) -> Path:
    """A known_hosts file with the host key of every nshost host (``path``)."""
    path.write_text("".join(f"{nshost[f'NSHOST_{i}_ADDR']} {nshost[f'NSHOST_{i}_HOST_KEY']}\n"
                            for i in range(1, int(nshost["NSHOST_COUNT"]) + 1)))
    return path


@contextmanager
def nshost_store(nshost: dict[str, str], i: int, known_hosts: Path, controller_url: str,
                 home: Path) -> Iterator[SftpStore]:
    """A store on nshost host ``i``: SFTP clients reach it through that host's sshd (root, in its
    own network namespace, over the nshost bridge); its agent in ``home`` reads it where the host
    keeps it (the hosts share this machine's filesystem)."""
    store_dir = Path(nshost[f"NSHOST_{i}_ROOT"]) / f"bs-{uuid.uuid4().hex[:10]}"
    target = SftpTarget(nshost[f"NSHOST_{i}_ADDR"], int(nshost["NSHOST_SSH_PORT"]), "root", str(store_dir))
    with _store(target, store_dir, Path(nshost["NSHOST_KEY"]), known_hosts, controller_url, home) as store:
        yield store


def add_backup_storage(api: httpx.Client, body: dict[str, Any]) -> str:
    """``POST /v1/backup-storages`` (a job when the storage has an agent to connect): its uuid."""
    r = api.post("/v1/backup-storages", params={"wait": "1"}, json=body, timeout=120)
    assert r.status_code in (200, 201), r.text
    data = r.json()
    if "job" in data:
        assert data["job"]["state"] == "succeeded", data
        return str(data["resource"]["uuid"])
    return str(data["uuid"])


def _zone(w: World, ids: dict[str, str], name: str, ps: dict[str, Any]) -> None:
    ids["zone"] = w.ok("POST", "/v1/zones", {"name": name})["uuid"]
    ids["cluster"] = w.ok("POST", "/v1/clusters", {"name": "c", "zoneUuid": ids["zone"]})["uuid"]
    ids["ps"] = w.ok("POST", "/v1/primary-storages", {
        "name": "ps", "zoneUuid": ids["zone"], "clusterUuids": [ids["cluster"]], **ps})["uuid"]


def _network_and_host(w: World, ids: dict[str, str], subnet: str, uplink: str, host: dict[str, str]) -> None:
    ids["l2"] = w.ok("POST", "/v1/l2-networks", {"name": "flat", "zoneUuid": ids["zone"],
                                                 "type": "novlan", "physicalInterface": uplink,
                                                 "clusterUuids": [ids["cluster"]]})["uuid"]
    ids["l3"] = w.ok("POST", "/v1/l3-networks", {"name": "pub", "l2NetworkUuid": ids["l2"], "ipRanges": [{
        "startIp": f"{subnet}.10", "endIp": f"{subnet}.60", "netmask": "255.255.255.0",
        "gateway": f"{subnet}.1"}]})["uuid"]
    ids["host"] = w.job("POST", "/v1/hosts", {"clusterUuid": ids["cluster"], "storageAgentUrl": w.sto.url,
                                              **host})["resourceUuid"]


def _local(root: Path) -> dict[str, Any]:
    return {"type": "local", "url": "local", "mountPath": str(root)}


def build_cloud(w: World, subnet: str, ps: dict[str, Any] | None = None,
                store: SftpStore | None = None) -> dict[str, str]:
    """Zone, cluster, primary storage (local under ``w.ps_root`` unless ``ps``), image,
    a flat network on ``subnet`` (``10.253.7``), a tiny offering and the host; ids in ``w.ids``.
    The image is registered in a backup storage no agent serves (hosts fetch it over HTTP),
    or, with ``store``, added from its HTTP URL into that real SFTP store (hosts fetch it there)."""
    ids = w.ids
    _zone(w, ids, "e2e", ps or _local(w.ps_root))
    if store is None:
        bs = w.ok("POST", "/v1/backup-storages", {"name": "b", "type": "sftp", "hostname": "127.0.0.1",
                                                   "url": "/srv/store", "zoneUuids": [ids["zone"]]})["uuid"]
        ids["image"] = w.ok("POST", "/v1/images", {
            "name": "guest", "backupStorageUuids": [bs], "imageId": "guest", "digest": ids["digest"],
            "size": int(ids["size"]), "url": ids["image_url"]})["uuid"]
    else:
        ids["bs"] = add_backup_storage(w.api, {"name": "b", "zoneUuids": [ids["zone"]], **store.body})
        ids["image"] = w.job("POST", "/v1/images", {
            "name": "guest", "backupStorageUuids": [ids["bs"]], "url": ids["image_url"],
            "digest": ids["digest"], "platform": "Linux"})["resourceUuid"]
    ids["offering"] = w.ok("POST", "/v1/instance-offerings", {"name": "tiny", "cpuNum": 1,
                                                              "memorySize": 128 << 20})["uuid"]
    _network_and_host(w, ids, subnet, w.dummy, {"name": "h1", "managementIp": "127.0.0.1",
                                                "agentUrl": w.kvm.url})
    return ids


def add_zone(w: World, name: str, subnet: str, ps_root: Path, uplink: str, host: dict[str, str]) -> dict[str, str]:
    """Another zone with a cluster, a local primary storage under ``ps_root``, a flat network
    on ``subnet`` over ``uplink`` and a host (``host``: its name, managementIp and agentUrl; the
    world's storage agent serves it): their ids."""
    ids: dict[str, str] = {}
    ps_root.mkdir(mode=0o755, exist_ok=True)
    _zone(w, ids, name, _local(ps_root))
    _network_and_host(w, ids, subnet, uplink, host)
    return ids


def create_vm(w: World, name: str, **extra: Any) -> str:
    """Create a VM through the API and wait until its guest has its allocated address."""
    created = w.job("POST", "/v1/vms", {"name": name, "imageUuid": w.ids["image"],
                                        "instanceOfferingUuid": w.ids["offering"],
                                        "l3NetworkUuids": [w.ids["l3"]], **extra})
    vm: str = created["resourceUuid"]
    w.ids["vms"] = ",".join(v for v in (w.ids.get("vms", ""), vm) if v)
    ip = w.ok("GET", "/v1/vm-nics", q=f"vmUuid={vm}")["items"][0]["ip"]
    w.wait_console(vm, f"{w.guest['GUEST_IP_MARKER']} eth0 {ip}\n")
    return vm
