"""``deploy_agent``: install one agent onto one host with the real playbooks.

This is the seam the controller's add-host / add-storage workflows call as
their first step. With ``mode="none"`` (the simulator, or tests that start
their agents themselves) it only answers "already deployed".
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import SecretStr

from controller.deploy import debs
from controller.deploy.errors import DeployError
from controller.deploy.keys import ensure_controller_key, install_public_key
from controller.deploy.known_hosts import KnownHosts
from controller.deploy.models import AGENT_ROLES, DeployEvent, DeployResult, DeployTarget
from controller.deploy.playbook import EventCallback, run_playbook
from controller.deploy.wheelhouse import Wheelhouse

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parents[2]
SFTP_CLIENT_ROLES = ("storageagent", "sftpbackup", "cephagent")
"""roles whose agents have ``sftp_key_file`` / ``sftp_known_hosts``"""


@dataclass
class DeploySettings:
    """How this controller deploys agents."""

    work_dir: Path
    """controller key, known_hosts, wheel cache and per-run directories"""
    ansible_dir: Path = SOURCE_DIR / "ansible"
    source_dir: Path = SOURCE_DIR
    """the kvmcloud tree whose wheel is shipped"""
    wheelhouse: Wheelhouse | None = None
    """a prebuilt wheelhouse; built from ``source_dir`` on first use when None"""
    controller_addresses: list[str] = field(default_factory=list)
    """addresses the agents' ports are opened to (iptables); empty: no firewall rules"""
    mode: Literal["ansible", "none"] = "ansible"
    timeout: float = 900.0
    agent_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    """per role, config fields every deployed agent of that role gets (the call's own win)"""
    host_vars: dict[str, Any] = field(default_factory=dict)
    """role variables for every host (install prefix...); a target's own win"""

    @classmethod
    def from_env(cls) -> DeploySettings:
        """From ``KVMCLOUD_DEPLOY_DIR``, ``KVMCLOUD_DEPLOY_MODE`` (ansible|none),
        ``KVMCLOUD_CONTROLLER_ADDRESSES`` (comma list), ``KVMCLOUD_DEPLOY_AGENT_CONFIG``
        and ``KVMCLOUD_DEPLOY_HOST_VARS`` (JSON objects)."""
        env = os.environ
        mode = env.get("KVMCLOUD_DEPLOY_MODE", "ansible")
        if mode not in ("ansible", "none"):
            raise DeployError(f"KVMCLOUD_DEPLOY_MODE must be ansible or none, not {mode!r}")
        try:
            agent_defaults = json.loads(env.get("KVMCLOUD_DEPLOY_AGENT_CONFIG") or "{}")
            host_vars = json.loads(env.get("KVMCLOUD_DEPLOY_HOST_VARS") or "{}")
        except ValueError as e:
            raise DeployError(f"KVMCLOUD_DEPLOY_AGENT_CONFIG / KVMCLOUD_DEPLOY_HOST_VARS: {e}") from None
        return cls(
            work_dir=Path(env.get("KVMCLOUD_DEPLOY_DIR", "/var/lib/kvmcloud/deploy")),
            controller_addresses=[a for a in env.get("KVMCLOUD_CONTROLLER_ADDRESSES", "").split(",") if a],
            mode="none" if mode == "none" else "ansible",
            agent_defaults=agent_defaults,
            host_vars=host_vars,
        )

    @property
    def key_file(self) -> Path:
        return self.work_dir / "id_ed25519"

    @property
    def store_key_file(self) -> Path:
        return self.work_dir / "store_ed25519"

    @property
    def migration_key_file(self) -> Path:
        return self.work_dir / "migration_ed25519"

    @property
    def known_hosts(self) -> KnownHosts:
        return KnownHosts(self.work_dir / "known_hosts")


class Deployer:
    """Deploys agents with one controller's key, known_hosts and wheelhouse."""

    def __init__(self, settings: DeploySettings) -> None:
        self.settings = settings
        self._wheel_lock = threading.Lock()
        self._debs_lock = threading.Lock()

    def wheelhouse(self) -> Wheelhouse:
        with self._wheel_lock:
            if self.settings.wheelhouse is None:
                self.settings.wheelhouse = Wheelhouse.build(
                    self.settings.source_dir, self.settings.work_dir / "wheels")
            return self.settings.wheelhouse

    def public_key(self) -> str:
        """The controller's public key (operators may install it by hand)."""
        return ensure_controller_key(self.settings.key_file).read_text().strip()

    def role_var(self, role: str, name: str, target: DeployTarget) -> Any:
        """A role variable as a deploy of ``role`` to ``target`` sees it: the target's own,
        this controller's ``host_vars``, or the role's default."""
        for source in (target.host_vars, self.settings.host_vars):
            if name in source:
                return source[name]
        defaults = self.settings.ansible_dir / "roles" / role / "defaults" / "main.yml"
        return (yaml.safe_load(defaults.read_text()) or {}).get(name)

    def deploy(
        self,
        target: DeployTarget,
        role: str,
        agent_config: dict[str, Any],
        on_event: EventCallback | None = None,
        *,
        force: bool = False,
        check: bool = False,
        only_if_version_differs: bool = False,
        secret_vars: dict[str, Any] | None = None,
    ) -> DeployResult:
        """Install, configure and start ``role`` on ``target``; never raises for a failed deploy.

        ``secret_vars`` are role variables holding keys (``cephagent_keyring``...): they go to
        Ansible as extra variables, whose file is removed after the run, never into the
        inventory, the run's artifacts or the result."""
        started = time.monotonic()
        if role not in AGENT_ROLES:
            raise ValueError(f"unknown agent role {role!r}; known: {', '.join(AGENT_ROLES)}")
        config = {**self.settings.agent_defaults.get(role, {}), **agent_config}
        token = str(config.pop("token", "") or secrets.token_urlsafe(32))
        config.setdefault("listen", f"{target.address}:{AGENT_ROLES[role]}")
        agent_url = "http://" + str(config["listen"])
        if self.settings.mode == "none":
            return DeployResult(True, role, target.address, "already deployed (deploys are off)",
                                agent_url=agent_url, token=SecretStr(token), skipped=True)
        try:
            house = self.wheelhouse()
            if only_if_version_differs and not force:
                running = agent_version(agent_url)
                if running == house.version:
                    return DeployResult(True, role, target.address, f"already runs kvmcloud {running}",
                                        version=running, agent_url=agent_url, token=SecretStr(token),
                                        skipped=True, duration=time.monotonic() - started)
            target = self._prepare(target)
            shipped = self._packages(target, role)
        except DeployError as e:
            return self._failed(role, target, str(e), started, on_event)
        run_dir = self.settings.work_dir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{role}-{uuid.uuid4().hex[:6]}"
        extravars = {
            **self._store_access(role),
            **self._migration_access(role),
            **shipped,
            "kvmcloud_version": house.version,
            "kvmcloud_wheelhouse_tar": str(house.tar),
            "kvmcloud_force": force,
            "kvmcloud_agent_token": token,
            "kvmcloud_agent_config": config,
            "kvmcloud_controller_addresses": list(self.settings.controller_addresses),
            **(secret_vars or {}),
        }
        outcome = run_playbook(
            self.settings.ansible_dir, f"{role}.yml", role, target, self.settings.known_hosts,
            extravars, run_dir, on_event=on_event, check=check, timeout=self.settings.timeout,
        )
        ok = outcome.status == "successful"
        if ok:
            message = f"{role} {house.version} deployed to {target.address}, {outcome.changed} changes"
        elif outcome.failed_task:
            message = f"task '{outcome.failed_task}' failed on {target.address}: {outcome.message}"
        else:
            message = f"deploy to {target.address} failed: {outcome.message}"
        return DeployResult(
            ok, role, target.address, message, version=house.version if ok else "",
            agent_url=agent_url, token=SecretStr(token), changed=outcome.changed,
            failed_task=outcome.failed_task, duration=time.monotonic() - started,
            stats=outcome.stats, run_dir=run_dir,
        )

    def _packages(self, target: DeployTarget, role: str) -> dict[str, Any]:
        """The role's Debian packages as a local repository, for hosts that reach no mirror."""
        if not target.ship_packages:
            return {}
        with self._debs_lock:
            repo = debs.build(debs.role_packages(self.settings.ansible_dir, role), self.settings.work_dir / "debs")
        return {"kvmcloud_local_repo_tar": str(repo.tar)}

    def _store_access(self, role: str) -> dict[str, Any]:
        """The controller's store key: installed on the agents that reach SFTP backup
        storage, authorized (SFTP only, in the store) on the backup storage hosts."""
        if role not in SFTP_CLIENT_ROLES:
            return {}
        pub = ensure_controller_key(self.settings.store_key_file)
        access: dict[str, Any] = {
            "kvmcloud_sftp_key": str(self.settings.store_key_file),
            "kvmcloud_sftp_known_hosts": str(self.settings.known_hosts.path),
        }
        if role == "sftpbackup":
            access["sftpbackup_authorized_keys"] = [pub.read_text().strip()]
        return access

    def _migration_access(self, role: str) -> dict[str, Any]:
        """The controller's migration key for the kvmagent role: every host gets it, authorizes
        it for libvirt only (virt-ssh-helper) and checks its peers' host keys against this
        controller's known_hosts, so live migration is SSH-authenticated and encrypted."""
        if role != "kvmagent":
            return {}
        pub = ensure_controller_key(self.settings.migration_key_file, comment="kvmcloud-migration")
        return {
            "kvmagent_migration_key": str(self.settings.migration_key_file),
            "kvmagent_migration_known_hosts": str(self.settings.known_hosts.path),
            "kvmagent_migration_public_key": pub.read_text().strip(),
        }

    def _prepare(self, target: DeployTarget) -> DeployTarget:
        """Record the host key (first contact) and install the controller key if a password was given."""
        kh = self.settings.known_hosts
        kh.ensure(target.address, target.ssh_port)
        if target.key_file is None:
            pub = ensure_controller_key(self.settings.key_file)
            if target.password is not None:
                install_public_key(target.address, target.ssh_port, target.user,
                                   target.password.get_secret_value(), pub.read_text(), kh)
            target = replace(target, key_file=self.settings.key_file, password=None)
        if self.settings.host_vars:
            target = replace(target, host_vars={**self.settings.host_vars, **target.host_vars})
        return target

    def _failed(self, role: str, target: DeployTarget, message: str, started: float,
                on_event: EventCallback | None) -> DeployResult:
        log.warning("deploy of %s to %s failed: %s", role, target.label, message)
        if on_event is not None:
            on_event(DeployEvent("failed", task="prepare", host=target.address, message=message))
        return DeployResult(False, role, target.address, message, failed_task="prepare",
                            duration=time.monotonic() - started)


def agent_version(agent_url: str, timeout: float = 3.0) -> str | None:
    """The kvmcloud version an agent reports on ``/healthz``; None if it does not answer."""
    try:
        r = httpx.get(agent_url.rstrip("/") + "/healthz", timeout=timeout)
        if r.status_code == 200:
            return str(r.json().get("version") or "") or None
    except (httpx.HTTPError, ValueError):
        pass
    return None


_default: Deployer | None = None
_default_lock = threading.Lock()


def default_deployer() -> Deployer:
    """The process-wide deployer configured from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Deployer(DeploySettings.from_env())
        return _default


def deploy_agent(
    target: DeployTarget,
    role: str,
    agent_config: dict[str, Any],
    on_event: EventCallback | None = None,
    *,
    deployer: Deployer | None = None,
    force: bool = False,
    check: bool = False,
    only_if_version_differs: bool = False,
    secret_vars: dict[str, Any] | None = None,
) -> DeployResult:
    """Deploy ``role`` (kvmagent, storageagent, sftpbackup, cephagent) onto ``target``.

    ``agent_config`` holds the agent's config fields (``controller_urls``,
    ``listen``, the agent's own); a ``token`` is generated when absent and
    returned in the result for the controller to store. ``force`` reinstalls
    and restarts even when nothing changed; ``only_if_version_differs`` skips
    the playbook when the agent already reports the shipped version.
    """
    return (deployer or default_deployer()).deploy(
        target, role, agent_config, on_event, force=force, check=check,
        only_if_version_differs=only_if_version_differs, secret_vars=secret_vars,
    )
