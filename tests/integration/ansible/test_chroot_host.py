"""Hosts with a root filesystem of their own and no package mirror: component
``chroothost`` (a debootstrap minbase Debian in a network namespace, sshd
chrooted into it) and component ``systemdhost`` (the same root plus systemd,
booted by systemd-nspawn: PID 1 is systemd there, unlike on this machine). The
controller ships the role's Debian packages as a local repository; the play
installs them into that root only, starts the agent (under the supervisor loop,
or as a systemd unit where systemd runs), and a second run changes nothing."""

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
from tests.support.agents import wait_until

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
    venvs = list((root / "opt" / "kvmcloud" / "venvs").glob(f"kvmcloud-{first.version}-*"))
    assert len(venvs) == 1 and (venvs[0] / "bin" / "sftpbackup").exists(), venvs
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


SYSTEMD_COMPONENT = ROOT / "scripts" / "components" / "76-systemdhost.sh"


@pytest.fixture(scope="module")
def systemd_host(component_env, nshost: dict[str, str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A host whose PID 1 is systemd (booted by systemd-nspawn), fresh for this module."""
    env = component_env("systemdhost")
    subprocess.run(["bash", str(SYSTEMD_COMPONENT), "fresh"], check=True, capture_output=True, timeout=600)
    return env


def in_machine(env: dict[str, str], *argv: str) -> str:
    """Run a command on the systemd host (over SSH: its processes live in the container)."""
    proc = subprocess.run(
        ["ssh", "-i", env["SYSTEMDHOST_KEY"], "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", f"root@{env['SYSTEMDHOST_ADDR']}", *argv],
        capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout.strip()


def test_agent_runs_as_a_systemd_unit_restarted_on_failure(systemd_host: dict[str, str], deployer: Deployer) -> None:
    env = systemd_host
    assert in_machine(env, "cat", "/proc/1/comm") == "systemd"
    target = DeployTarget(env["SYSTEMDHOST_ADDR"], int(env["SYSTEMDHOST_SSH_PORT"]),
                          key_file=Path(env["SYSTEMDHOST_KEY"]), ship_packages=True)
    config = {"controller_urls": [f"http://{env['SYSTEMDHOST_GATEWAY']}:8080"]}
    events: list[DeployEvent] = []
    first = deployer.deploy(target, "sftpbackup", dict(config), events.append)
    assert first.success, first.message
    done = {e.task for e in events if e.kind in ("ok", "changed")}
    assert "Enable and start kvmcloud-sftpbackup" in done
    assert "Install the supervisor loop of sftpbackup" not in done  # the systemd path, not the fallback

    unit = "kvmcloud-sftpbackup"
    assert in_machine(env, "systemctl", "is-enabled", unit) == "enabled"
    assert in_machine(env, "systemctl", "is-active", unit) == "active"
    assert in_machine(env, "systemctl", "show", "-p", "Restart", "--value", unit) == "on-failure"
    pid = in_machine(env, "systemctl", "show", "-p", "MainPID", "--value", unit)
    assert pid.isdigit() and int(pid) > 0

    # killed: systemd starts it again (Restart=on-failure), and it serves again
    in_machine(env, "kill", "-9", pid)

    def restarted() -> bool:
        now = in_machine(env, "systemctl", "show", "-p", "MainPID", "--value", unit)
        return now.isdigit() and now not in ("0", pid) and in_machine(env, "systemctl", "is-active", unit) == "active"

    wait_until(restarted, timeout=60, interval=0.5, what="systemd to restart the killed agent")
    assert first.token is not None
    token = first.token.get_secret_value()

    def serves() -> bool:
        try:
            return httpx.post(first.agent_url + "/echo", json={"message": "again"}, timeout=5,
                              headers={"Authorization": f"Bearer {token}"}).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(serves, timeout=60, interval=0.5, what="the restarted agent")

    second = deployer.deploy(target, "sftpbackup", {**config, "token": token})
    assert second.success, second.message
    assert second.changed == 0, second.stats
