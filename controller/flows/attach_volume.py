"""Attach a data volume: claim it for the VM (the next device) → create it on the
storage on first attach → on a running VM, the hot-plug.

A failure gives the volume back: detached, and NotInstantiated again if this
attach was to create it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update

from controller.core import Controller
from controller.db.models import Host, PrimaryStorage, Vm, Volume
from controller.errors import BadRequest, Conflict
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.primary import Op, backend_for
from controller.services.common import require
from kvmagent import models as km


@dataclass
class AttachVolume:
    """What the attach-volume flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    vm: Vm
    host: Host
    root: Volume
    volume_uuid: str
    vol: Volume | None = None
    ps: PrimaryStorage | None = None
    device_id: int = 0
    create: bool = False
    status: str = ""  # the volume's status to return to


def claim(st: AttachVolume) -> None:
    """The volume on the VM as its next device (on the root's storage if it has none)."""
    with st.ctl.db.write() as s:
        vol = require(s, Volume, st.volume_uuid, "volumeUuid")
        if vol.type != "Data":
            raise BadRequest("volumeUuid: only a data volume can be attached", field="volumeUuid")
        if vol.vm_uuid is not None:
            raise Conflict(f"volume {vol.uuid} is attached to vm {vol.vm_uuid}")
        top = s.scalar(select(func.max(Volume.device_id)).where(
            Volume.vm_uuid == st.vm.uuid)) or 0
        vol.primary_storage_uuid = vol.primary_storage_uuid or st.root.primary_storage_uuid
        ps = require(s, PrimaryStorage, vol.primary_storage_uuid, "primaryStorageUuid")
        create = vol.status == "NotInstantiated"
        if create:
            vol.install_path = backend_for(ps).install_path(ps, vol.uuid)
            vol.format = backend_for(ps).volume_format
        vol.status = "Creating" if create else vol.status
        vol.vm_uuid, vol.device_id = st.vm.uuid, top + 1
    st.vol, st.ps, st.device_id, st.create = vol, ps, top + 1, create
    st.status = "NotInstantiated" if create else vol.status


def unclaim(st: AttachVolume) -> None:
    if st.vol is None:
        return
    with st.ctl.db.write() as s:
        s.execute(update(Volume).where(Volume.uuid == st.vol.uuid).values(
            vm_uuid=None, device_id=None, status=st.status))


def create_volume(st: AttachVolume) -> None:
    """A volume never instantiated is created empty on its storage, then Ready."""
    if not st.create:
        return
    assert st.vol is not None and st.ps is not None
    backend_for(st.ps).create_empty(Op(st.ctl, st.ctx), st.ps, st.host, st.vol)
    with st.ctl.db.write() as s:
        s.execute(update(Volume).where(Volume.uuid == st.vol.uuid).values(status="Ready"))


def plug(st: AttachVolume) -> None:
    """On a running VM: the host reaches the storage, then the hot-plug."""
    if st.vm.state != "Running":
        return
    assert st.vol is not None and st.ps is not None
    backend = backend_for(st.ps)
    backend.prepare_host(Op(st.ctl, st.ctx), st.ps, st.host)
    st.ctx.call(st.host.agent_url, km.AttachVolumeCmd(
        vm_uuid=st.vm.uuid, volume=backend.volume_spec(st.ps, st.vol, st.device_id)))


STEPS: list[Step[AttachVolume]] = [
    Step("claim-volume", claim, unclaim),
    Step("create-volume", create_volume),
    Step("plug-volume", plug),
]


def run(st: AttachVolume) -> None:
    Flow("attach-volume", STEPS, guard=st.ctx.uncancellable).run(st)
