"""Snapshot a volume: the snapshot's row (Creating) → the snapshot, online (the
running VM moves to a new overlay, the old file is the snapshot) or offline (the
storage agent copies it) → the rows Ready.

A failure before the rows are Ready drops the snapshot's row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, update

from controller import commands
from controller.core import Controller
from controller.db.models import Host, PrimaryStorage, Snapshot, Vm, Volume
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.primary.base import storage_agent
from controller.services.common import require, to_dict
from kvmagent import models as km
from storageagent import models as sm


@dataclass
class SnapshotVolume:
    """What the snapshot flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    vol: Volume
    ps: PrimaryStorage
    vm: Vm | None
    host: Host
    name: str
    description: str | None = None
    snap_uuid: str | None = None
    snap_path: str = ""
    vol_path: str = ""
    result: dict[str, Any] | None = None


def add_row(st: SnapshotVolume) -> None:
    with st.ctl.db.write() as s:
        snap = Snapshot(name=st.name, description=st.description, volume_uuid=st.vol.uuid,
                        primary_storage_uuid=st.ps.uuid, status="Creating")
        s.add(snap)
        s.flush()
        st.snap_uuid = snap.uuid


def drop_row(st: SnapshotVolume) -> None:
    if st.snap_uuid is not None:
        with st.ctl.db.write() as s:
            s.execute(delete(Snapshot).where(Snapshot.uuid == st.snap_uuid))


def take(st: SnapshotVolume) -> None:
    """Online through the KVM agent when the VM runs, else offline through the storage's."""
    vol, ps, vm, snap_uuid = st.vol, st.ps, st.vm, st.snap_uuid
    assert snap_uuid is not None
    if vm is not None and vm.state == "Running":
        new_path = f"volumes/{vol.uuid}-{snap_uuid[:8]}.qcow2"
        st.ctx.call(st.host.agent_url, km.SnapshotVolumeCmd(
            vm_uuid=vm.uuid, volume=commands.file_volume(ps, vol, vol.device_id or 0),
            new_install_path=commands.host_path(ps, new_path)))
        st.snap_path, st.vol_path = vol.install_path or "", new_path
    else:
        snap_path = f"snapshots/{snap_uuid}.qcow2"
        st.ctx.call(storage_agent(st.host), sm.CreateSnapshotCmd(
            storage_uuid=ps.uuid, mount_path=ps.mount_path or "/",
            install_path=vol.install_path or "", snapshot_path=snap_path))
        st.snap_path, st.vol_path = snap_path, vol.install_path or ""


def record(st: SnapshotVolume) -> None:
    with st.ctl.db.write() as s:
        s.execute(update(Snapshot).where(Snapshot.uuid == st.snap_uuid).values(
            install_path=st.snap_path, status="Ready"))
        s.execute(update(Volume).where(Volume.uuid == st.vol.uuid).values(
            install_path=st.vol_path))
        st.result = to_dict(require(s, Snapshot, st.snap_uuid or "", "snapshotUuid"))


STEPS: list[Step[SnapshotVolume]] = [
    Step("add-snapshot-row", add_row, drop_row),
    Step("take-snapshot", take),
]


def run(st: SnapshotVolume) -> dict[str, Any]:
    """Run the flow, then mark the rows Ready; the snapshot's row."""
    Flow("snapshot-volume", STEPS, guard=st.ctx.uncancellable).run(st)
    record(st)
    assert st.result is not None
    return st.result
