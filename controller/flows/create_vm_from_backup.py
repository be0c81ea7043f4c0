"""Create a VM from a VM backup: host, primary storage and IPs → each volume made
from its volume backup, read from a backup storage that holds it → L2 + DHCP
lease on the host → start.

The create-VM flow's steps, with the image cache and the root and data
volumes' steps replaced by one that makes every volume from the store
(:meth:`PrimaryBackend.create_from_store`, the restore's). Each step undoes
itself, so a failure leaves no VM row, volume, IP or lease behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.db.models import BackupStorage
from controller.flows import create_vm
from controller.flows.base import Flow, Step
from controller.flows.create_vm import CreateVm
from controller.primary.base import StoredVolume


@dataclass
class CreateVmFromBackup(CreateVm):
    """The create-VM state, plus where the volumes come from (Root first)."""

    bs: BackupStorage | None = None
    stored: list[StoredVolume] = field(default_factory=list)
    made: list[str] = field(default_factory=list)


def create_volumes(st: CreateVm) -> None:
    """Each volume from its backup, at the path its row names; Ready at once."""
    assert isinstance(st, CreateVmFromBackup)
    assert st.ps is not None and st.host is not None and st.bs is not None
    assert st.root_uuid is not None
    for uuid, stored in zip([st.root_uuid, *st.data_uuids], st.stored, strict=True):
        st.ctx.check()
        vol = st.volumes[uuid]
        st.made.append(uuid)  # a half-made file is deleted too (one never made is no error)
        actual = st.backend.create_from_store(st.op, st.ps, st.host, st.bs, stored,
                                              vol.install_path or "")
        create_vm.volume_ready(st, uuid, actual)


def delete_volumes(st: CreateVm) -> None:
    assert isinstance(st, CreateVmFromBackup)
    create_vm.delete_volumes(st, st.made)


def _step(name: str) -> Step[CreateVm]:
    return next(s for s in create_vm.STEPS if s.name == name)


STEPS: list[Step[CreateVm]] = [
    _step("accepted"),
    _step("allocate-host-storage-ips"),
    Step("create-volumes-from-backup", create_volumes, delete_volumes),
    _step("realise-network"),
    _step("start-vm"),
]


def run(st: CreateVmFromBackup) -> None:
    """Run the flow; on failure it rolls back, down to dropping the VM row."""
    def on_step(name: str, i: int, n: int) -> None:
        st.ctx.progress(name, 100.0 * i / n)

    Flow("create-vm-from-backup", STEPS, check=st.ctx.check, on_step=on_step,
         guard=st.ctx.uncancellable).run(st)
