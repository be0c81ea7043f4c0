"""The cephagent role against the real single-node Ceph cluster (scripts/components/30-ceph.sh).

The monitor and the OSD listen on 127.0.0.1 only, which the namespace hosts cannot reach (their
127.0.0.1 is their own loopback, and their only route leads to the kcnsh0 bridge). So this test
deploys to an sshd of its own on this machine's loopback, with Ansible over real SSH as for any
host: the role installs the least-privilege ``client.agent``'s keyring and bare key (0600), the
agent starts, and commands that name the key only by path or by reference create, list and
delete an RBD image in the cluster. The key is in no request body, in no agent log line and in
nothing the deploy left in the controller's run directory. Then the same through the API: a Ceph
primary storage added with ``deploy`` gets its cephagent and the key its keyRef names, and is
connected.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import rados
import rbd

from controller.deploy import Deployer, DeploySettings, DeployTarget, Wheelhouse
from controller.deploy import deployer as deployer_module
from controller.server import create_app
from controller.settings import Settings
from tests.conftest import ENV_DIR
from tests.integration.ansible.conftest import stop_host
from tests.support.agents import TOKEN, free_port, wait_until

pytestmark = [pytest.mark.ansible, pytest.mark.ceph, pytest.mark.slow]
API = "cephagent-deploy-api-token-0123456789"


@pytest.fixture
def loopback_host(tmp_path: Path) -> Iterator[DeployTarget]:
    """An sshd on 127.0.0.1 that trusts a fresh key: a deploy target in the root namespace."""
    ssh = tmp_path / "sshd"
    ssh.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / name)],
                       check=True, timeout=30)
    shutil.copy(ssh / "client_key.pub", ssh / "authorized_keys")
    port = free_port()
    (ssh / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {ssh / 'host_key'}", f"PidFile {ssh / 'sshd.pid'}",
        f"AuthorizedKeysFile {ssh / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
    ]) + "\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    subprocess.run(["/usr/sbin/sshd", "-f", str(ssh / "sshd_config"), "-E", str(ssh / "sshd.log")],
                   check=True, timeout=30)
    root = ENV_DIR / "ansible-loopback" / f"t-{uuid.uuid4().hex[:8]}"
    yield DeployTarget("127.0.0.1", port, key_file=ssh / "client_key", host_vars={
        "kvmcloud_prefix": f"{root}/opt/kvmcloud", "kvmcloud_etc_dir": f"{root}/etc/kvmcloud",
        "kvmcloud_state_root": f"{root}/var/lib/kvmcloud", "kvmcloud_log_dir": f"{root}/var/log/kvmcloud",
        "kvmcloud_run_dir": f"{root}/run/kvmcloud", "cephagent_client_name": "client.agent"})
    stop_host(None, root)
    pid = (ssh / "sshd.pid").read_text().strip()
    subprocess.run(["kill", pid], check=False, timeout=10)


@pytest.fixture
def ceph_admin(component_env: Any) -> Iterator[tuple[dict[str, str], rados.Rados]]:
    env = component_env("ceph")
    admin = rados.Rados(conffile=env["CEPH_CONF"], name="client.admin")
    admin.connect(timeout=10)
    yield env, admin
    admin.shutdown()


def test_cephagent_deploy_with_a_keyring_reaches_the_cluster(
        tmp_path: Path, wheelhouse: Wheelhouse, loopback_host: DeployTarget,
        ceph_admin: tuple[dict[str, str], rados.Rados]) -> None:
    env, admin = ceph_admin
    keyring = Path(env["CEPH_AGENT_KEYRING"]).read_text()
    key = Path(env["CEPH_AGENT_KEY_FILE"]).read_text().strip()
    work = tmp_path / "deploy"
    # no controller addresses: no firewall rules in this machine's own namespace
    deployer = Deployer(DeploySettings(work_dir=work, wheelhouse=wheelhouse))
    port = free_port()
    result = deployer.deploy(loopback_host, "cephagent", {"listen": f"127.0.0.1:{port}", "token": TOKEN},
                             secret_vars={"cephagent_keyring": keyring, "cephagent_keys": {"agent-key": key}})
    assert result.success, result.message

    etc = Path(loopback_host.host_vars["kvmcloud_etc_dir"]) / "ceph"
    keyring_file, key_file = etc / "ceph.client.agent.keyring", etc / "secrets" / "agent-key"
    for f in (keyring_file, key_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(etc.stat().st_mode) == 0o700

    agent = httpx.Client(base_url=result.agent_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    wait_until(lambda: httpx.get(f"{result.agent_url}/healthz", timeout=2).status_code == 200, 60,
               what="deployed cephagent /healthz")
    by_path = {"monitors": env["CEPH_MONITORS"].split(","), "user": env["CEPH_AGENT_USER"],
               "keyring": str(keyring_file)}
    by_ref = {"monitors": env["CEPH_MONITORS"].split(","), "user": env["CEPH_AGENT_USER"], "keyRef": "agent-key"}
    pool, image = f"dep-{uuid.uuid4().hex[:6]}", "vol-1"
    bodies: list[dict[str, Any]] = []

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        bodies.append(body)
        reply = agent.post(path, json=body).json()
        assert reply["success"], (path, reply)
        return dict(reply)

    try:
        connected = call("/ceph/connect", {"cluster": by_path})
        assert connected["fsid"] == env["CEPH_FSID"]
        call("/ceph/pools/init", {"cluster": by_ref, "pools": [{"name": pool}]})
        call("/ceph/volume/create", {"cluster": by_path, "pool": pool, "name": image, "size": 8 << 20})
        with admin.open_ioctx(pool) as io:
            assert rbd.RBD().list(io) == [image]  # the agent really made it in the cluster
        capacity = call("/ceph/capacity", {"cluster": by_ref, "pools": [pool]})
        assert capacity["totalCapacity"] > 0 and capacity["pools"][0]["name"] == pool
        call("/ceph/volume/delete", {"cluster": by_ref, "pool": pool, "name": image})
        with admin.open_ioctx(pool) as io:
            assert rbd.RBD().list(io) == []
    finally:
        if admin.pool_exists(pool):
            admin.mon_command(json.dumps({"prefix": "osd pool rm", "pool": pool, "pool2": pool,
                                          "yes_i_really_really_mean_it": True}), b"", timeout=30)

    secret = key.encode()
    assert all(key not in json.dumps(b) for b in bodies)
    logs = Path(loopback_host.host_vars["kvmcloud_log_dir"])
    assert any(logs.iterdir()), "the agent logs"
    for f in logs.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f"the key is in {f}"
    for f in work.rglob("*"):  # inventory, artifacts, events of the run
        if f.is_file() and f.name not in ("id_ed25519", "store_ed25519"):
            assert secret not in f.read_bytes(), f"the key is in {f}"


def test_ceph_primary_storage_added_with_deploy_connects_its_agent(
        tmp_path: Path, wheelhouse: Wheelhouse, loopback_host: DeployTarget,
        ceph_admin: tuple[dict[str, str], rados.Rados], monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /v1/primary-storages (ceph, deploy): the controller deploys the cephagent to agentUrl's
    host with the key its keyRef names in the controller's ceph_key_dir, then connects it."""
    env, _ = ceph_admin
    key = Path(env["CEPH_AGENT_KEY_FILE"]).read_text().strip()
    keys = tmp_path / "ceph-keys"
    keys.mkdir(mode=0o700)
    (keys / "agent-key").write_text(key + "\n")
    work = tmp_path / "deploy"
    work.mkdir(mode=0o700)
    assert loopback_host.key_file is not None
    shutil.copy(loopback_host.key_file, work / "id_ed25519")  # the key the host trusts is the controller's
    monkeypatch.setattr(deployer_module, "_default", Deployer(DeploySettings(
        work_dir=work, wheelhouse=wheelhouse, host_vars=loopback_host.host_vars)))
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/controller.db", api_tokens=[API], agent_token=TOKEN,
                              tracker=False, ceph_key_dir=str(keys)))
    client, headers = app.test_client(use_cookies=False), {"Authorization": f"Bearer {API}"}
    try:
        zone = client.post("/v1/zones", json={"name": "z"}, headers=headers).get_json()["uuid"]
        r = client.post("/v1/primary-storages", query_string={"wait": "1"}, headers=headers, json={
            "name": "rbd", "zoneUuid": zone, "type": "ceph", "url": "ceph://kvmcloud",
            "agentUrl": f"http://127.0.0.1:{free_port()}", "deploy": True, "sshPort": loopback_host.ssh_port,
            "ceph": {"monitors": env["CEPH_MONITORS"].split(","), "pool": "kvmcloud", "user": env["CEPH_AGENT_USER"],
                     "keyRef": "agent-key", "fsid": env["CEPH_FSID"]}})
        job = r.get_json()["job"]
        assert job["state"] == "succeeded", job
        ps = job["result"]
        assert ps["status"] == "Connected" and ps["totalCapacity"] > 0 and ps["cephFsid"] == env["CEPH_FSID"], ps
        secret = Path(loopback_host.host_vars["kvmcloud_etc_dir"]) / "ceph" / "secrets" / "agent-key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text().strip() == key
        assert key not in json.dumps(r.get_json())
    finally:
        app.extensions["kvmcloud"].close()
