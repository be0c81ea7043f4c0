"""Why a deploy could not run."""

from __future__ import annotations


class DeployError(Exception):
    """A deploy failed before or outside Ansible (SSH unreachable, bad key...)."""
