"""The jobs that act on a dead host: ``host-dead`` fences and decides, then each VM
to restart gets a job of its own, ``ha-restart``, on the VM's queue.

An ``ha-restart`` takes the VM off the dead host (its capacity given back) and
starts it through the start flow on another connected host of its cluster
(its last host, the dead one, has no room: it is not Connected). If the start
fails, the start flow leaves the VM Stopped and this flow's rollback puts it
back on the dead host as Unknown, as before the job: when the host comes back
the tracker's sync tells what it really is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import Host, PrimaryStorage, Vm, Volume
from controller.flows.base import Flow, Step
from controller.ha.fencing import fencer_for
from controller.ha.policy import Verdict, VmOnDeadHost, decide
from controller.jobs import JobContext
from controller.services import vms
from controller.services.allocate import mark_stopped
from controller.services.common import require, to_dict

log = logging.getLogger(__name__)


def host_dead(ctl: Controller, host_uuid: str) -> Job:
    """The tracker declared the host Dead: fence and decide in a ``host-dead`` job."""
    return ctl.jobs.submit("host-dead", "hosts", host_uuid, [f"hosts:{host_uuid}"],
                           lambda ctx: handle_dead_host(ctl, ctx, host_uuid))


def handle_dead_host(ctl: Controller, ctx: JobContext, host_uuid: str) -> dict[str, Any]:
    """Fence the host's storages, then queue an ``ha-restart`` job per VM to restart."""
    with ctl.db.read() as s:
        on_host = _vms_on(s, host_uuid)
        kinds = {ps: kind for vm in on_host for ps, kind in vm.storages}
    verdicts: dict[str, Verdict] = {}
    for ps, kind in sorted(kinds.items()):
        ctx.progress(f"fence storage {ps}")
        verdicts[ps] = fencer_for(kind).check(ctl, host_uuid, ps)
    decisions = [decide(vm, verdicts) for vm in on_host]
    jobs = {d.vm_uuid: _restart_job(ctl, d.vm_uuid, host_uuid).uuid for d in decisions if d.restart}
    for d in decisions:
        log.warning("host %s is dead: vm %s %s (%s)", host_uuid, d.vm_uuid,
                    "restarts elsewhere" if d.restart else "stays Unknown", d.reason)
    return {"hostUuid": host_uuid, "fencing": {ps: v.value for ps, v in verdicts.items()},
            "restarts": jobs, "left": {d.vm_uuid: d.reason for d in decisions if not d.restart}}


def _vms_on(s: Session, host_uuid: str) -> list[VmOnDeadHost]:
    rows = s.execute(select(Vm.uuid, Vm.ha_level).where(Vm.host_uuid == host_uuid)
                     .order_by(Vm.uuid)).all()
    storages: dict[str, set[tuple[str, str]]] = {u: set() for u, _ in rows}
    for vm_uuid, ps_uuid, kind in s.execute(
            select(Volume.vm_uuid, PrimaryStorage.uuid, PrimaryStorage.type)
            .join(PrimaryStorage, PrimaryStorage.uuid == Volume.primary_storage_uuid)
            .where(Volume.vm_uuid.in_(list(storages)))):
        if vm_uuid is not None:
            storages[vm_uuid].add((ps_uuid, kind))
    return [VmOnDeadHost(u, level, frozenset(storages[u])) for u, level in rows]


def _restart_job(ctl: Controller, vm_uuid: str, host_uuid: str) -> Job:
    return ctl.jobs.submit("ha-restart", "vms", vm_uuid, [f"vms:{vm_uuid}"],
                           lambda ctx: restart_vm(ctl, ctx, vm_uuid, host_uuid))


@dataclass
class HaRestart:
    """One VM of a dead host, on its way to another host."""

    ctl: Controller
    ctx: JobContext
    vm_uuid: str
    dead_host: str
    released: bool = False


def release(st: HaRestart) -> None:
    """The VM no longer runs on the dead host: its capacity there is given back."""
    st.ctl.db.transaction(lambda s: mark_stopped(s, st.vm_uuid))
    st.released = True


def reclaim(st: HaRestart) -> None:
    """Back on the dead host as Unknown, its capacity there taken again."""
    def back(s: Session) -> None:
        vm = s.get(Vm, st.vm_uuid, with_for_update=True)
        if vm is None or vm.host_uuid is not None:
            return
        s.execute(update(Host).where(Host.uuid == st.dead_host).values(
            available_cpu=Host.available_cpu - vm.cpu_num,
            available_memory=Host.available_memory - vm.memory_size))
        vm.host_uuid, vm.state = st.dead_host, "Unknown"
    if st.released:
        st.ctl.db.transaction(back)


def start_elsewhere(st: HaRestart) -> None:
    vms.start_vm(st.ctl, st.ctx, st.vm_uuid)


STEPS: list[Step[HaRestart]] = [
    Step("release", release, reclaim),
    Step("start-elsewhere", start_elsewhere),
]


def restart_vm(ctl: Controller, ctx: JobContext, vm_uuid: str, host_uuid: str) -> dict[str, Any]:
    """Start the VM on another host, if it still is the dead host's and wants it."""
    with ctl.db.read() as s:
        vm = require(s, Vm, vm_uuid, "vmUuid")
        host = s.get(Host, host_uuid)
    why = _not_now(vm, host, host_uuid)
    if why is not None:  # things changed since the host-dead job decided
        log.info("vm %s: no HA restart: %s", vm_uuid, why)
        return to_dict(vm)
    Flow("ha-restart", STEPS, guard=ctx.uncancellable).run(HaRestart(ctl, ctx, vm_uuid, host_uuid))
    with ctl.db.read() as s:
        return to_dict(require(s, Vm, vm_uuid, "vmUuid"))


def _not_now(vm: Vm, host: Host | None, host_uuid: str) -> str | None:
    if vm.host_uuid != host_uuid:
        return f"it is no longer on host {host_uuid}"
    if host is None or host.status != "Dead":
        return f"host {host_uuid} is no longer Dead"
    if vm.ha_level != "restart":
        return f"its haLevel is {vm.ha_level}"
    return None
