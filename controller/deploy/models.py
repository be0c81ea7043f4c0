"""What the controller hands to a deploy and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

AGENT_ROLES: dict[str, int] = {
    "kvmagent": 7070,
    "storageagent": 7071,
    "sftpbackup": 7171,
    "cephagent": 7762,
}
"""Every agent role the playbooks know, with its default port."""


@dataclass(frozen=True)
class DeployTarget:
    """A bare host reachable over SSH.

    ``key_file`` is the controller's private key; ``password`` is used only once,
    to install the controller's public key (never stored, never passed to
    Ansible). ``host_vars`` overrides role defaults for this host (install
    prefix, state and run directories...). ``ship_packages``: the host reaches
    no package mirror, so the controller ships the role's Debian packages
    (``controller.deploy.debs``).
    """

    address: str
    ssh_port: int = 22
    user: str = "root"
    key_file: Path | None = None
    password: SecretStr | None = None
    python: str = "/usr/bin/python3"
    host_vars: dict[str, Any] = field(default_factory=dict)
    ship_packages: bool = False

    @property
    def label(self) -> str:
        return f"{self.user}@{self.address}:{self.ssh_port}"


EventKind = Literal["start", "task", "ok", "changed", "skipped", "failed", "unreachable", "finished"]


@dataclass(frozen=True)
class DeployEvent:
    """One step of a deploy, streamed to the caller (the controller's job)."""

    kind: EventKind
    task: str = ""
    host: str = ""
    message: str = ""
    done: int = 0
    """tasks finished so far"""


@dataclass
class DeployResult:
    """The outcome of one deploy of one agent onto one host."""

    success: bool
    role: str
    address: str
    message: str = ""
    version: str = ""
    """the kvmcloud version the agent runs after the deploy"""
    agent_url: str = ""
    token: SecretStr | None = None
    """the agent's bearer token: the controller stores it and presents it"""
    changed: int = 0
    """number of tasks that changed something (0 on an idempotent re-run)"""
    failed_task: str = ""
    skipped: bool = False
    """nothing was run: deploys are off, or the agent already runs this version"""
    duration: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
