"""Agentless installation: the controller runs the Ansible playbooks.

``deploy_agent(target, role, agent_config, on_event=cb) -> DeployResult`` is
the seam the add-host and add-storage workflows call first.
"""

from __future__ import annotations

from controller.deploy.deployer import Deployer, DeploySettings, agent_version, default_deployer, deploy_agent
from controller.deploy.errors import DeployError
from controller.deploy.models import AGENT_ROLES, DeployEvent, DeployResult, DeployTarget
from controller.deploy.wheelhouse import Wheelhouse

__all__ = [
    "AGENT_ROLES",
    "DeployError",
    "DeployEvent",
    "DeployResult",
    "DeploySettings",
    "DeployTarget",
    "Deployer",
    "Wheelhouse",
    "agent_version",
    "default_deployer",
    "deploy_agent",
]
