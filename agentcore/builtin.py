"""Commands every agent serves."""

from __future__ import annotations

from agentcore import __version__
from agentcore.models import EchoCmd, EchoReply
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext


class CorePlugin(Plugin):
    """Built-in commands: liveness."""

    @command()
    def echo(self, ctx: TaskContext, cmd: EchoCmd) -> EchoReply:
        """Answer with the message sent and the agent version (liveness probe)."""
        return EchoReply(message=cmd.message, version=__version__)
