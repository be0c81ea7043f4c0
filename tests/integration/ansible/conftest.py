"""Bare namespace hosts (component ``nshost``), a session wheelhouse, and a deployer."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.deploy import Deployer, DeploySettings, DeployTarget, Wheelhouse
from tests.conftest import ENV_DIR, ROOT


def host_vars(root: Path, nshost: dict[str, str], i: int) -> dict[str, str]:
    """Role paths of a test host: everything under its own root (the namespace hosts share one
    filesystem), and the host's own sshd for the SFTP store. The store is a chroot, which sshd
    wants root-owned all the way up (``/var/tmp`` is not), so it lives under ``/run``."""
    return {
        "sftpbackup_sshd_config_dir": nshost[f"NSHOST_{i}_SSHD_CONFIG_DIR"],
        "sftpbackup_sshd_pidfile": nshost[f"NSHOST_{i}_SSHD_PIDFILE"],
        "sftpbackup_store_root": f"{STORE_BASE}/{root.name}",
        "kvmcloud_prefix": f"{root}/opt/kvmcloud",
        "kvmcloud_etc_dir": f"{root}/etc/kvmcloud",
        "kvmcloud_state_root": f"{root}/var/lib/kvmcloud",
        "kvmcloud_log_dir": f"{root}/var/log/kvmcloud",
        "kvmcloud_run_dir": f"{root}/run/kvmcloud",
        # the host's sshd reads this file (not /root/.ssh, which is this machine's)
        "kvmagent_migration_authorized_keys": str(Path(nshost[f"NSHOST_{i}_SSHD_PIDFILE"]).parent / "authorized_keys"),
    }


STORE_BASE = Path("/run/kvmcloud-test-stores")


def stop_host(netns: str | None, root: Path) -> None:
    """Stop every agent deployed under ``root`` and drop the firewall rules of the namespace
    (none when ``netns`` is None: a host in this machine's own namespace gets no firewall)."""
    run_dir = root / "run" / "kvmcloud"
    pidfiles = sorted(run_dir.glob("*.pid"), key=lambda p: p.name.endswith(".agent.pid"))
    for pidfile in pidfiles:  # supervisor loops first, then any agent they left
        subprocess.run(["start-stop-daemon", "--stop", "--oknodo", "--pidfile", str(pidfile),
                        "--retry", "TERM/15/KILL/5"], capture_output=True, timeout=30, check=False)
    if netns is not None:
        subprocess.run(["ip", "netns", "exec", netns, "iptables", "-F", "INPUT"], capture_output=True,
                       timeout=30, check=False)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(STORE_BASE / root.name, ignore_errors=True)


@pytest.fixture(scope="session")
def nshost(component_env):  # type: ignore[no-untyped-def]
    component_env("libvirt")  # the kvmagent role finds libvirtd running and leaves it alone
    return component_env("nshost")


@pytest.fixture(scope="session")
def wheelhouse() -> Wheelhouse:
    """The kvmcloud wheel of this tree plus its dependencies, built once per session."""
    return Wheelhouse.build(ROOT, ENV_DIR / "ansible-wheels")


def make_deployer(work_dir: Path, nshost: dict[str, str], wheelhouse: Wheelhouse) -> Deployer:
    return Deployer(DeploySettings(work_dir=work_dir, wheelhouse=wheelhouse,
                                   controller_addresses=[nshost["NSHOST_GATEWAY"]]))


@pytest.fixture
def deployer(tmp_path: Path, nshost: dict[str, str], wheelhouse: Wheelhouse) -> Deployer:
    return make_deployer(tmp_path / "deploy", nshost, wheelhouse)


HostFactory = Callable[[int], tuple[DeployTarget, Path]]


@pytest.fixture(scope="module")
def bare_host(nshost: dict[str, str]) -> Iterator[HostFactory]:
    """``bare_host(i)``: namespace host i as a deploy target with a fresh root, cleaned up after."""
    made: list[tuple[str, Path]] = []

    def make(i: int) -> tuple[DeployTarget, Path]:
        base = Path(nshost[f"NSHOST_{i}_ROOT"])
        root = base / f"t-{uuid.uuid4().hex[:8]}"
        made.append((nshost[f"NSHOST_{i}_NETNS"], root))
        target = DeployTarget(nshost[f"NSHOST_{i}_ADDR"], int(nshost["NSHOST_SSH_PORT"]),
                              key_file=Path(nshost["NSHOST_KEY"]), host_vars=host_vars(root, nshost, i))
        return target, root

    yield make
    for netns, root in made:
        stop_host(netns, root)
