"""Long block jobs on a running domain (commit, pull), with progress and cancel."""

from __future__ import annotations

import libvirt

from agentcore.task import TaskContext
from kvmagent.hypervisor import Hypervisor

POLL = 0.1


def _job(dom: libvirt.virDomain, disk: str) -> dict[str, int]:
    info = dom.blockJobInfo(disk, 0)
    return info if isinstance(info, dict) else {}


def wait_block_job(ctx: TaskContext, hv: Hypervisor, dom: libvirt.virDomain, disk: str, *,
                   stage: str, pivot: bool) -> None:
    """Follow the block job on ``disk`` until done, reporting progress.

    With ``pivot`` (active commit) the job never ends by itself: once it is
    ready (cur == end) the domain is switched to the base image. Cancelling the
    task aborts the job, which leaves the chain as it was.
    """
    ctx.on_stop(lambda: _abort(dom, disk))
    while True:
        info = hv.call(lambda _c: _job(dom, disk), disk=disk)
        if not info:
            return  # a pull (or non-active commit) completes by disappearing
        cur, end = info.get("cur", 0), info.get("end", 0)
        if end:
            ctx.progress(100.0 * cur / end, stage=stage, done=cur, total=end, unit="bytes")
        if pivot and end and cur == end:
            try:
                dom.blockJobAbort(disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
            except libvirt.libvirtError as e:  # not ready for pivot yet: keep polling
                ctx.log.debug("pivot of %s not possible yet: %s", disk, e)
            else:
                ctx.progress(100.0, stage=stage, force=True)
                return
        ctx.wait(POLL)


def _abort(dom: libvirt.virDomain, disk: str) -> None:
    try:
        dom.blockJobAbort(disk, 0)
    except libvirt.libvirtError:
        pass
