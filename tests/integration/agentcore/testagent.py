"""A test-only agent: slow, failing and process-spawning commands.

Run as ``python -m tests.integration.agentcore.testagent serve --config F``.
It lives under tests/ so the shipped agents carry no test hooks.
"""

from __future__ import annotations

import os
import sys
import time

from pydantic import Field

from agentcore.config import AgentConfig
from agentcore.errors import InUse
from agentcore.models import Command, Reply, Returns
from agentcore.plugin import Plugin, command
from agentcore.serve import agent_main
from agentcore.task import TaskContext


class SleepReply(Reply):
    slept: float = 0.0
    started: float = 0.0
    ended: float = 0.0


class SleepCmd(Command, Returns[SleepReply], path="/test/sleep"):
    seconds: float = Field(ge=0, le=600)
    resource: str | None = None
    busy: bool = Field(default=False, description="spin without checking cancel")


class SpawnCmd(Command, Returns[Reply], path="/test/spawn"):
    pid_file: str
    seconds: float = 600


class FailCmd(Command, Returns[Reply], path="/test/fail"):
    code: str = "IN_USE"


class NoopCmd(Command, Returns[Reply], path="/test/noop"):
    pass


class TestPlugin(Plugin):
    """Commands that exercise the runtime."""

    @command(lock=lambda c: f"res:{c.resource}" if c.resource else None)
    def sleep(self, ctx: TaskContext, cmd: SleepCmd) -> SleepReply:
        """Sleep, reporting progress; honours cancel unless ``busy``."""
        start = time.time()
        end = time.monotonic() + cmd.seconds
        while (left := end - time.monotonic()) > 0:
            if cmd.busy:
                time.sleep(min(left, 0.05))
            else:
                ctx.wait(min(left, 0.1))
            ctx.progress(100 * (1 - max(left, 0) / cmd.seconds) if cmd.seconds else 100, stage="sleeping")
        return SleepReply(slept=cmd.seconds, started=start, ended=time.time())

    @command()
    def spawn(self, ctx: TaskContext, cmd: SpawnCmd) -> Reply:
        """Run a shell that starts a grandchild; both must die on cancel."""
        script = f"sleep {cmd.seconds} & echo $$ $! > {cmd.pid_file}.tmp && mv {cmd.pid_file}.tmp {cmd.pid_file}; wait"
        ctx.run(["sh", "-c", script], timeout=cmd.seconds + 5)
        return Reply()

    @command()
    def fail(self, ctx: TaskContext, cmd: FailCmd) -> Reply:
        """Fail with a structured error, or crash with an unexpected exception."""
        if cmd.code == "CRASH":
            raise RuntimeError("unexpected crash")
        raise InUse("the volume is held by a running VM", path="/x")

    @command()
    def noop(self, ctx: TaskContext, cmd: NoopCmd) -> Reply:
        """Do nothing (benchmark)."""
        return Reply()


def main() -> int:
    return agent_main("testagent", AgentConfig, lambda cfg: [TestPlugin()], sys.argv[1:])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
