"""The storageagent: config, plugins and console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agentcore.config import AgentConfig
from agentcore.plugin import Plugin
from agentcore.serve import agent_main

NAME = "storageagent"


class Config(AgentConfig):
    """Config of the storageagent (the fields every agent has, so far)."""


def make_plugins(config: Config) -> list[Plugin]:
    return []


def main(argv: Sequence[str] | None = None) -> int:
    return agent_main(NAME, Config, make_plugins, argv)


if __name__ == "__main__":
    sys.exit(main())
