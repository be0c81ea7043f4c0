"""The kvmagent: config, plugins and console script."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agentcore.plugin import Plugin
from agentcore.serve import agent_main
from kvmagent.config import KvmAgentConfig
from kvmagent.plugins.devices import DevicePlugin
from kvmagent.plugins.host import HostPlugin
from kvmagent.plugins.migrate import MigratePlugin
from kvmagent.plugins.network import NetworkPlugin
from kvmagent.plugins.secgroups import SecurityGroupPlugin
from kvmagent.plugins.vm import VmPlugin
from kvmagent.services import KvmHost

NAME = "kvmagent"

Config = KvmAgentConfig


def make_plugins(config: KvmAgentConfig, *, events: bool = True) -> list[Plugin]:
    """Every plugin of the kvmagent, sharing one libvirt connection."""
    host = KvmHost(config, events=events)
    return [HostPlugin(host), VmPlugin(host), DevicePlugin(host), NetworkPlugin(host), MigratePlugin(host),
            SecurityGroupPlugin(host)]


def main(argv: Sequence[str] | None = None) -> int:
    return agent_main(NAME, KvmAgentConfig, make_plugins, argv)


if __name__ == "__main__":
    sys.exit(main())
