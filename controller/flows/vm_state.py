"""One agent command that moves a VM between states (stop, reboot, pause, resume).

The VM shows the transitional state (``Stopping``, ``Rebooting`` …) while the
agent works; if the command fails or the job is cancelled, the VM's state goes
back to what it was. What the VM becomes on success is the caller's to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from agentcore.models import Returns
from controller.db.models import Vm
from controller.flows.base import Flow, Step
from controller.jobs import JobContext


@dataclass
class Transition:
    """A VM, the command for its host's agent, and the state it shows meanwhile."""

    ctx: JobContext
    vm_uuid: str
    was: str
    during: str
    agent_url: str
    cmd: Returns[Any]


def _state(st: Transition, state: str) -> None:
    st.ctx.db.transaction(lambda s: s.execute(
        update(Vm).where(Vm.uuid == st.vm_uuid).values(state=state)))


def mark(st: Transition) -> None:
    _state(st, st.during)


def unmark(st: Transition) -> None:
    _state(st, st.was)


def send(st: Transition) -> None:
    st.ctx.call(st.agent_url, st.cmd)


STEPS: list[Step[Transition]] = [Step("mark", mark, unmark), Step("agent", send)]


def run(ctx: JobContext, vm: Vm, during: str, agent_url: str, cmd: Returns[Any]) -> None:
    """Show ``during``, send ``cmd``; on failure the VM's state is as before."""
    Flow(f"vm-{during.lower()}", STEPS, check=ctx.check, guard=ctx.uncancellable).run(
        Transition(ctx, vm.uuid, vm.state, during, agent_url, cmd))
