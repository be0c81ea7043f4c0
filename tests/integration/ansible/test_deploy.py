"""The real playbooks, run by the controller's deploy seam over real SSH onto
bare network-namespace hosts (component ``nshost``): every agent comes up and
answers with its token only, a re-run changes nothing, ``--check`` works, a
killed agent is restarted by its service, and a new version redeploys only
the agents that run an older one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from controller.deploy import AGENT_ROLES, Deployer, DeployEvent, DeployResult, DeployTarget, Wheelhouse
from tests.conftest import ENV_DIR, ROOT
from tests.integration.ansible.conftest import HostFactory, make_deployer
from tests.support.agents import wait_until

pytestmark = [pytest.mark.ansible, pytest.mark.netns, pytest.mark.slow]

ROLES_ON_HOST2 = ("storageagent", "sftpbackup", "cephagent")


class Fleet:
    """Agents deployed once for the module: kvmagent on host 1, the storage agents on host 2."""

    def __init__(self, deployer: Deployer, targets: dict[str, DeployTarget], roots: dict[str, Path],
                 results: dict[str, DeployResult], events: dict[str, list[DeployEvent]],
                 config: dict[str, Any]) -> None:
        self.deployer, self.targets, self.roots = deployer, targets, roots
        self.results, self.events, self.config = results, events, config

    def token(self, role: str) -> str:
        token = self.results[role].token
        assert token is not None
        return token.get_secret_value()

    def agent_pid(self, role: str) -> int:
        return int((self.roots[role] / "run" / "kvmcloud" / f"{role}.agent.pid").read_text())

    def redeploy(self, role: str, deployer: Deployer | None = None, **kw: Any) -> DeployResult:
        return (deployer or self.deployer).deploy(
            self.targets[role], role, {**self.config, "token": self.token(role)}, **kw)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, nshost: dict[str, str], wheelhouse: Wheelhouse,
          bare_host: HostFactory) -> Fleet:
    deployer = make_deployer(tmp_path_factory.mktemp("deploy"), nshost, wheelhouse)
    t1, r1 = bare_host(1)
    t2, r2 = bare_host(2)
    targets = {"kvmagent": t1, **{r: t2 for r in ROLES_ON_HOST2}}
    roots = {"kvmagent": r1, **{r: r2 for r in ROLES_ON_HOST2}}
    config = {"controller_urls": [f"http://{nshost['NSHOST_GATEWAY']}:8080"]}
    events: dict[str, list[DeployEvent]] = {r: [] for r in targets}
    results: dict[str, DeployResult] = {}

    def host2() -> None:
        for role in ROLES_ON_HOST2:
            results[role] = deployer.deploy(t2, role, dict(config), events[role].append)

    with ThreadPoolExecutor(2) as pool:  # the two hosts in parallel, as the controller would
        f1 = pool.submit(lambda: deployer.deploy(t1, "kvmagent", dict(config), events["kvmagent"].append))
        f2 = pool.submit(host2)
        results["kvmagent"] = f1.result()
        f2.result()
    return Fleet(deployer, targets, roots, results, events, config)


@pytest.mark.parametrize("role", ["kvmagent", *ROLES_ON_HOST2])
def test_agent_is_deployed_and_answers_only_its_token(fleet: Fleet, role: str) -> None:
    result = fleet.results[role]
    assert result.success, result.message
    assert result.changed > 0
    assert result.version == fleet.deployer.wheelhouse().version
    assert result.agent_url == f"http://{fleet.targets[role].address}:{AGENT_ROLES[role]}"
    health = httpx.get(result.agent_url + "/healthz", timeout=5).json()
    assert health == {"status": "ok", "agent": role, "version": result.version}
    echo = httpx.post(result.agent_url + "/echo", json={"message": "hi"}, timeout=10,
                      headers={"Authorization": f"Bearer {fleet.token(role)}"})
    assert echo.status_code == 200 and echo.json()["message"] == "hi"
    wrong = httpx.post(result.agent_url + "/echo", json={"message": "hi"}, timeout=10,
                       headers={"Authorization": "Bearer not-the-token-of-this-agent"})
    assert wrong.status_code == 401
    kinds = {e.kind for e in fleet.events[role]}
    assert {"start", "task", "changed", "finished"} <= kinds
    config = (fleet.roots[role] / "etc" / "kvmcloud" / f"{role}.toml")
    assert config.stat().st_mode & 0o077 == 0  # the token is readable by root only


def test_agent_port_is_open_to_the_controller_only(fleet: Fleet, nshost: dict[str, str]) -> None:
    url = fleet.results["kvmagent"].agent_url + "/healthz"
    # from host 2's namespace (not a controller address) the port is filtered
    other = subprocess.run(["ip", "netns", "exec", nshost["NSHOST_2_NETNS"], "curl", "-sS", "-m", "2", url],
                           capture_output=True, text=True, timeout=30, check=False)
    assert other.returncode == 28, other  # curl: operation timed out (packets dropped)
    assert httpx.get(url, timeout=5).status_code == 200  # from the controller's address


def test_second_run_changes_nothing_and_check_mode_works(fleet: Fleet) -> None:
    pid = fleet.agent_pid("kvmagent")
    again = fleet.redeploy("kvmagent")
    assert again.success, again.message
    assert again.changed == 0, again.stats
    check = fleet.redeploy("kvmagent", check=True)
    assert check.success, check.message
    assert check.changed == 0, check.stats
    assert fleet.agent_pid("kvmagent") == pid  # not restarted


def test_killed_agent_is_restarted_by_its_service(fleet: Fleet) -> None:
    url = fleet.results["storageagent"].agent_url
    old = fleet.agent_pid("storageagent")
    os.kill(old, signal.SIGKILL)

    def back() -> bool:
        try:
            new = fleet.agent_pid("storageagent")
            return new != old and httpx.get(url + "/healthz", timeout=2).status_code == 200
        except (OSError, ValueError, httpx.HTTPError):
            return False

    wait_until(back, timeout=60, interval=0.5, what="the supervisor to restart the storageagent")
    log = (fleet.roots["storageagent"] / "var" / "log" / "kvmcloud" / "storageagent.out").read_text()
    assert "storageagent exited with 137, restarting" in log


def bumped_wheelhouse(tmp: Path, version: str) -> Wheelhouse:
    """This tree's code packaged as another kvmcloud version."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench", "build", "dist"))
    cfg = src / "setup.cfg"
    cfg.write_text(cfg.read_text().replace("\nversion = ", f"\nversion = {version}\n# was ", 1))
    return Wheelhouse.build(src, ENV_DIR / "ansible-wheels")


def test_new_version_redeploys_only_agents_that_differ(fleet: Fleet, tmp_path: Path,
                                                       nshost: dict[str, str]) -> None:
    old_version = fleet.results["kvmagent"].version
    new = bumped_wheelhouse(tmp_path, old_version + ".post1")
    assert new.version != old_version
    upgrader = make_deployer(tmp_path / "deploy", nshost, new)
    kvm_pid, storage_pid = fleet.agent_pid("kvmagent"), fleet.agent_pid("storageagent")

    upgraded = fleet.redeploy("kvmagent", upgrader, only_if_version_differs=True)
    assert upgraded.success, upgraded.message
    assert not upgraded.skipped and upgraded.changed > 0
    health = httpx.get(upgraded.agent_url + "/healthz", timeout=5).json()
    assert health["version"] == new.version
    assert fleet.agent_pid("kvmagent") != kvm_pid

    # the storageagent already runs the shipped version of its own deployer: untouched
    same = fleet.redeploy("storageagent", only_if_version_differs=True)
    assert same.skipped and same.success, same.message
    assert fleet.agent_pid("storageagent") == storage_pid

    # and the new version again: nothing to do; a forced redeploy reinstalls and restarts
    assert fleet.redeploy("kvmagent", upgrader, only_if_version_differs=True).skipped
    forced = fleet.redeploy("kvmagent", upgrader, force=True)
    assert forced.success and forced.changed > 0, forced.message
    wait_until(lambda: httpx.get(upgraded.agent_url + "/healthz", timeout=5).status_code == 200,
               timeout=30, what="the forced redeploy's agent")


def test_store_key_reaches_only_the_store_over_sftp(fleet: Fleet) -> None:
    """The sftpbackup role confines the controller's store key (installed on the storage
    agents' hosts) to SFTP inside the store: a chroot, no shell."""
    target = fleet.targets["sftpbackup"]
    settings = fleet.deployer.settings
    ssh = paramiko.SSHClient()
    ssh.load_host_keys(str(settings.known_hosts.path))
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect(target.address, target.ssh_port, username="kvmcloud-store", key_filename=str(settings.store_key_file),
                allow_agent=False, look_for_keys=False, timeout=10)
    try:
        sftp = ssh.open_sftp()
        assert sorted(sftp.listdir("/")) == [".ssh", "store"]  # the chroot, not the host's root
        assert sftp.normalize(".") == "/store"
        with pytest.raises(OSError):
            sftp.open("/etc/passwd")
        sftp.close()
    finally:
        ssh.close()
    shell = subprocess.run(
        ["ssh", "-i", str(settings.store_key_file), "-o", f"UserKnownHostsFile={settings.known_hosts.path}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         f"kvmcloud-store@{target.address}", "id"], capture_output=True, text=True, timeout=30, check=False)
    assert "uid=" not in shell.stdout
    # the storage agent's host got the key and the store's host key, and its config names them
    config = (fleet.roots["storageagent"] / "etc" / "kvmcloud" / "storageagent.toml").read_text()
    assert "sftp_key_file" in config and "sftp_known_hosts" in config


def test_migration_key_reaches_libvirt_only(fleet: Fleet) -> None:
    """The kvmagent role installs the controller's migration key and known_hosts for the agent
    and authorizes the key for virt-ssh-helper only: a libvirt client with exactly the
    installed files gets libvirt over SSH (host key checked), a shell command does not run."""
    target = fleet.targets["kvmagent"]
    mig = fleet.roots["kvmagent"] / "etc" / "kvmcloud" / "migration"
    key, known_hosts = mig / "id_ed25519", mig / "known_hosts"
    assert key.stat().st_mode & 0o777 == 0o600 and mig.stat().st_mode & 0o777 == 0o700
    config = tomllib.loads((fleet.roots["kvmagent"] / "etc" / "kvmcloud" / "kvmagent.toml").read_text())
    assert (config["migration_ssh_key"], config["migration_known_hosts"]) == (str(key), str(known_hosts))
    authorized = Path(target.host_vars["kvmagent_migration_authorized_keys"]).read_text()
    assert authorized.count("# BEGIN kvmcloud live migration") == 1
    assert 'restrict,command="virt-ssh-helper qemu:///system" ssh-ed25519 ' in authorized
    uri = (f"qemu+libssh://root@{target.address}:{target.ssh_port}/system?keyfile={key}"
           f"&known_hosts={known_hosts}&known_hosts_verify=normal&sshauth=privkey")
    virsh = subprocess.run(["virsh", "-c", uri, "uri"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, check=False)
    assert virsh.returncode == 0, virsh.stderr
    shell = subprocess.run(
        ["ssh", "-T", "-i", str(key), "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-p", str(target.ssh_port), f"root@{target.address}", "id"],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert "uid=" not in shell.stdout and "virt-ssh-helper" in shell.stderr, shell
