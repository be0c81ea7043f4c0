"""Deploys that cannot work fail fast with a message that says why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from controller.deploy import Deployer, DeployError, DeployEvent, DeployTarget
from controller.deploy.keys import install_public_key
from controller.deploy.known_hosts import host_pattern
from tests.integration.ansible.conftest import HostFactory

pytestmark = [pytest.mark.ansible, pytest.mark.netns]


def test_wrong_ssh_key_fails_with_permission_denied(deployer: Deployer, bare_host: HostFactory,
                                                    tmp_path: Path) -> None:
    target, _ = bare_host(1)
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    events: list[DeployEvent] = []
    wrong = DeployTarget(target.address, target.ssh_port, key_file=key, host_vars=target.host_vars)
    result = deployer.deploy(wrong, "kvmagent", {}, events.append)
    assert not result.success
    assert "unreachable" in result.message and "Permission denied (publickey" in result.message
    assert result.failed_task
    assert any(e.kind == "unreachable" for e in events)


def test_changed_host_key_is_refused(deployer: Deployer, bare_host: HostFactory, tmp_path: Path) -> None:
    target, _ = bare_host(1)
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    kh = deployer.settings.known_hosts.path
    kh.parent.mkdir(parents=True, exist_ok=True)
    pub = (other.with_suffix(".pub") if other.with_suffix(".pub").exists() else Path(f"{other}.pub")).read_text()
    kh.write_text(f"{host_pattern(target.address, target.ssh_port)} {' '.join(pub.split()[:2])}\n")
    result = deployer.deploy(target, "kvmagent", {})
    assert not result.success
    assert "Host key verification failed" in result.message or "IDENTIFICATION HAS CHANGED" in result.message
    # the recorded key is kept: the controller never re-trusts a host silently
    assert pub.split()[1] in kh.read_text()


def test_unreachable_address_fails_before_ansible(deployer: Deployer, nshost: dict[str, str]) -> None:
    gone = nshost["NSHOST_GATEWAY"].rsplit(".", 1)[0] + ".99"
    result = deployer.deploy(DeployTarget(gone, key_file=Path(nshost["NSHOST_KEY"])), "kvmagent", {})
    assert not result.success
    assert result.message.startswith(f"cannot reach SSH on {gone}:22")
    assert result.failed_task == "prepare"


def test_password_is_used_once_to_install_the_controller_key(deployer: Deployer, nshost: dict[str, str],
                                                             tmp_path: Path) -> None:
    address, user = nshost["NSHOST_1_ADDR"], nshost["NSHOST_PASSWORD_USER"]
    password = Path(nshost["NSHOST_PASSWORD_FILE"]).read_text().strip()
    kh = deployer.settings.known_hosts
    kh.ensure(address, 22)
    key = tmp_path / "controller"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    pub = Path(f"{key}.pub").read_text()
    with pytest.raises(DeployError, match="password authentication failed"):
        install_public_key(address, 22, user, password + "x", pub, kh)
    assert install_public_key(address, 22, user, password, pub, kh) is True
    assert install_public_key(address, 22, user, password, pub, kh) is False  # already there: not twice
    login = subprocess.run(
        ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={kh.path}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"{user}@{address}", "id -un"],
        capture_output=True, text=True, timeout=30, check=False)
    assert login.returncode == 0 and login.stdout.strip() == user, login.stderr
    home = Path(f"~{user}").expanduser()
    lines = (home / ".ssh" / "authorized_keys").read_text().splitlines()
    assert lines.count(pub.strip()) == 1
