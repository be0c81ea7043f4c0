"""Restore volumes of a stopped VM from their backups: a new volume from the store
for each (beside the old one) → all the volumes' rows switched to the new files
in one transaction → the old files deleted.

Until the switch the VM's volumes are untouched; a failure before it deletes
the new files, and a failure of the switch itself leaves the rows as they
were. Deleting an old file that fails is logged (the VM is restored by then).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update

from controller.core import Controller
from controller.db.models import BackupStorage, Host, PrimaryStorage, Volume, VolumeBackup
from controller.dispatch.dispatcher import AgentCallError
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.primary import Op, backend_for
from controller.primary.base import StoredVolume
from controller.services.common import to_dict

log = logging.getLogger(__name__)


@dataclass
class Target:
    """One volume to restore from one backup."""

    backup: VolumeBackup
    vol: Volume
    ps: PrimaryStorage
    new_path: str = ""
    actual_size: int = 0


@dataclass
class RestoreVolumes:
    """What the restore flow knows and has done so far."""

    ctl: Controller
    ctx: JobContext
    host: Host
    bs: BackupStorage
    targets: list[Target]
    result: list[dict[str, Any]] = field(default_factory=list)

    @property
    def op(self) -> Op:
        return Op(self.ctl, self.ctx)


def stored(b: VolumeBackup) -> StoredVolume:
    return StoredVolume(b.install_path or b.uuid, b.digest or "", b.actual_size, b.size, b.format)


def _create(i: int) -> Step[RestoreVolumes]:
    def run(st: RestoreVolumes) -> None:
        t = st.targets[i]
        t.new_path = backend_for(t.ps).restore_path(t.ps, t.vol)
        t.actual_size = backend_for(t.ps).create_from_store(st.op, t.ps, st.host, st.bs,
                                                             stored(t.backup), t.new_path)

    def undo(st: RestoreVolumes) -> None:
        t = st.targets[i]
        if t.new_path:
            backend_for(t.ps).drop_file(st.op, t.ps, st.host, t.new_path)

    return Step(f"create-from-backup-{i}", run, undo)


def switch(st: RestoreVolumes) -> None:
    """Every volume onto its new file, in one transaction."""
    with st.ctl.db.write() as s:
        for t in st.targets:
            s.execute(update(Volume).where(Volume.uuid == t.vol.uuid).values(
                install_path=t.new_path, format=backend_for(t.ps).volume_format, size=t.backup.size or t.vol.size,
                actual_size=t.actual_size))


def drop_old(st: RestoreVolumes) -> None:
    for t in st.targets:
        try:
            backend_for(t.ps).drop_file(st.op, t.ps, st.host, t.vol.install_path or "")
        except AgentCallError as e:
            log.warning("restored volume %s: its old file %s stays: %s", t.vol.uuid,
                        t.vol.install_path, e)
    with st.ctl.db.read() as s:
        st.result = [to_dict(v) for v in (s.get(Volume, t.vol.uuid) for t in st.targets) if v]


def run(st: RestoreVolumes) -> list[dict[str, Any]]:
    """Run the flow; the restored volumes as the API shows them."""
    steps = [*(_create(i) for i in range(len(st.targets))), Step("switch-volumes", switch),
             Step("delete-old-files", drop_old)]
    Flow("restore-volumes", steps, check=st.ctx.check, guard=st.ctx.uncancellable).run(st)
    return st.result
