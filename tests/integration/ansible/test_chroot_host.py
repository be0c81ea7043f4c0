"""A host with a root filesystem of its own and no package mirror (component
``chroothost``: a debootstrap minbase Debian in a network namespace, sshd
chrooted into it). The controller ships the role's Debian packages as a local
repository; the play installs them into that root only, starts the agent
there, and a second run changes nothing."""

from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from controller.deploy import Deployer, DeployEvent, DeployTarget, Wheelhouse
from tests.conftest import ROOT
from tests.integration.ansible.conftest import make_deployer

pytestmark = [pytest.mark.ansible, pytest.mark.netns, pytest.mark.slow]

COMPONENT = ROOT / "scripts" / "components" / "75-chroothost.sh"
STORE = "/var/lib/kvmcloud/store"


def in_host(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def chroot_host(component_env, nshost: dict[str, str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A fresh copy of the pristine root for this module (packages from earlier runs gone)."""
    env = component_env("chroothost")
    subprocess.run(["bash", str(COMPONENT), "fresh"], check=True, capture_output=True, timeout=600)
    return env


@pytest.fixture(scope="module")
def deployer(tmp_path_factory: pytest.TempPathFactory, nshost: dict[str, str], wheelhouse: Wheelhouse) -> Deployer:
    return make_deployer(tmp_path_factory.mktemp("deploy-chroot"), nshost, wheelhouse)


def test_sftpbackup_on_a_host_without_mirror_gets_shipped_packages(
        chroot_host: dict[str, str], deployer: Deployer) -> None:
    root = Path(chroot_host["CHROOTHOST_ROOT"])
    address = chroot_host["CHROOTHOST_ADDR"]
    # bare: none of the role's packages, and no way to fetch them
    assert in_host(root, "dpkg-query", "-W", "qemu-utils").returncode != 0
    assert in_host(root, "test", "-e", "/usr/bin/qemu-img").returncode != 0
    mirror = socket.gethostbyname("deb.debian.org")
    reach = subprocess.run(["ip", "netns", "exec", chroot_host["CHROOTHOST_NETNS"], "python3", "-c",
                            f"import socket; socket.create_connection(('{mirror}', 80), 3)"],
                           capture_output=True, timeout=30, check=False)
    assert reach.returncode != 0, "the chroot host must not reach a package mirror"

    target = DeployTarget(address, int(chroot_host["CHROOTHOST_SSH_PORT"]),
                          key_file=Path(chroot_host["CHROOTHOST_KEY"]), ship_packages=True)
    config = {"controller_urls": [f"http://{chroot_host['CHROOTHOST_GATEWAY']}:8080"]}
    events: list[DeployEvent] = []
    first = deployer.deploy(target, "sftpbackup", dict(config), events.append)
    assert first.success, first.message
    assert first.changed > 0
    tasks = {e.task for e in events if e.kind in ("ok", "changed")}
    assert "Copy the controller's package repository" in tasks
    assert "Install sshd, the SFTP server and qemu-img" in tasks

    # the packages landed in the host's own root, from the shipped repository
    status = in_host(root, "dpkg-query", "-W", "-f", "${Status}", "qemu-utils")
    assert status.stdout == "install ok installed", status
    assert (root / "usr" / "bin" / "qemu-img").exists()
    assert (root / "opt" / "kvmcloud" / "venvs" / first.version / "bin" / "sftpbackup").exists()
    assert "file:/var/cache/kvmcloud/debs" in (root / "etc/apt/sources.list.d/kvmcloud-local.list").read_text()

    # the agent runs in that host and answers an authenticated command
    assert first.token is not None
    auth = {"Authorization": f"Bearer {first.token.get_secret_value()}"}
    health = httpx.get(first.agent_url + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["version"] == first.version
    bs = str(uuid.uuid4())
    r = httpx.post(first.agent_url + "/backup/connect", json={"backupStorageUuid": bs, "root": f"{STORE}/store"},
                   headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True and r.json()["totalCapacity"] > 0
    assert (root / STORE.lstrip("/") / "store").is_dir()
    assert httpx.post(first.agent_url + "/echo", json={"message": "x"}, timeout=10).status_code == 401

    second = deployer.deploy(target, "sftpbackup", {**config, "token": first.token.get_secret_value()})
    assert second.success, second.message
    assert second.changed == 0, second.stats
