"""VMs: create (a flow), lifecycle actions, NICs, and their cascade executors."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, bindparam, delete, select, true, update
from sqlalchemy.orm import Session

from controller.api import schemas as sc
from controller.core import Controller
from controller.db.base import insert_row, new_uuid, utcnow
from controller.db.jobs import Job
from controller.db.models import (
    DiskOffering,
    Host,
    Image,
    InstanceOffering,
    L3Network,
    SecurityGroup,
    Snapshot,
    Tag,
    UsedIp,
    Vm,
    VmBackupPolicyRef,
    VmNic,
    Volume,
)
from controller.declarations import Action, CascadeStep, Create, Update
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import BadRequest, Conflict
from controller.flows import attach_nic, create_vm, vm_state
from controller.flows import migrate_vm as migrate
from controller.flows import start_vm as start
from controller.jobs import JobContext
from controller.services import sgspecs
from controller.services.allocate import mark_stopped
from controller.services.common import require, require_row, to_dict
from controller.services.vmhelpers import (
    delete_volume_files,
    host_of,
    nic_l3s,
    resend_leases,
)
from kvmagent import models as km

log = logging.getLogger(__name__)


def _keys(uuid: str) -> list[str]:
    return [f"vms:{uuid}"]


def create(ctl: Controller, body: sc.VmCreate) -> tuple[Job, dict[str, Any]]:
    """Validate references, write the VM (Creating) and queue the create flow."""
    job, out, image, offering, sizes, zone_uuid = ctl.db.transaction_core(
        lambda conn: _create_rows(ctl, conn, body))
    st = create_vm.CreateVm(
        ctl=ctl, ctx=None,  # type: ignore[arg-type]
        vm_uuid=out["uuid"], cpu=offering.cpu_num, memory=offering.memory_size,
        image_uuid=image.uuid, l3_uuids=list(body.l3_network_uuids), data_sizes=sizes,
        zone_uuid=zone_uuid, cluster_uuid=body.cluster_uuid, want_host=body.host_uuid,
        want_ps=body.primary_storage_uuid, image_size=image.size, vm_name=body.name,
        security_groups=list(dict.fromkeys(body.security_group_uuids)))

    def run(ctx: JobContext) -> dict[str, Any]:
        st.ctx = ctx
        create_vm.run(ctl, ctx, st)
        if st.result is not None:
            return st.result
        with ctl.db.read() as s:
            return to_dict(require(s, Vm, st.vm_uuid, "vmUuid"))

    return ctl.jobs.start(job, _keys(out["uuid"]), run), out


def _create_rows(ctl: Controller, s: Connection, body: sc.VmCreate) -> tuple[
        Job, dict[str, Any], Any, Any, list[int], str]:
    """The VM's and its job's rows, checked references read as plain rows (core statements)."""
    image, offering, zones = _references(s, body)
    sizes = [require_row(s, DiskOffering, u, f"dataDiskOfferingUuids.{i}").disk_size
             for i, u in enumerate(body.data_disk_offering_uuids)]
    if len(zones) != 1 or (body.zone_uuid and body.zone_uuid not in zones):
        raise BadRequest("l3NetworkUuids: networks must be in one zone (the VM's)",
                         field="l3NetworkUuids")
    zone_uuid = zones.pop()
    if body.host_uuid:
        require_row(s, Host, body.host_uuid, "hostUuid")
    for i, group in enumerate(body.security_group_uuids):
        require_row(s, SecurityGroup, group, f"securityGroupUuids.{i}")
    now = utcnow()
    vm = Vm(uuid=new_uuid(), name=body.name, description=body.description,
            zone_uuid=zone_uuid, image_uuid=image.uuid, instance_offering_uuid=offering.uuid,
            cpu_num=offering.cpu_num, memory_size=offering.memory_size,
            platform=image.platform, ha_level=body.ha_level, state="Creating", cluster_uuid=None, host_uuid=None,
            last_host_uuid=None, root_volume_uuid=None, create_date=now, last_op_date=now)
    insert_row(s, vm)
    out = to_dict(vm)
    job = ctl.jobs.prepare(s, "create-vm", "vms", out["uuid"])
    return job, out, image, offering, sizes, zone_uuid


IMAGES: Table = Image.__table__  # type: ignore[assignment]
OFFERINGS: Table = InstanceOffering.__table__  # type: ignore[assignment]
L3S: Table = L3Network.__table__  # type: ignore[assignment]


# the image, the offering and each L3 network of a create in one statement (a row per
# network), joined ON true: each side is one row by its key, so no product grows; the
# usual create names one network, which needs no expanding IN rendered on each call
def _references_stmt(l3_match: Any) -> Any:
    return select(
        IMAGES.c.uuid, IMAGES.c.media_type, IMAGES.c.status, IMAGES.c.platform, IMAGES.c.size,
        OFFERINGS.c.uuid.label("offering_uuid"), OFFERINGS.c.cpu_num, OFFERINGS.c.memory_size,
        L3S.c.uuid.label("l3_uuid"), L3S.c.zone_uuid,
    ).select_from(IMAGES.join(OFFERINGS, true()).join(L3S, true())).where(
        IMAGES.c.uuid == bindparam("image"), OFFERINGS.c.uuid == bindparam("offering"), l3_match)


_REFERENCES = _references_stmt(L3S.c.uuid.in_(bindparam("l3s", expanding=True)))
_REFERENCES_ONE = _references_stmt(L3S.c.uuid == bindparam("l3"))


class _Offering(NamedTuple):
    uuid: str
    cpu_num: int
    memory_size: int


def _references(s: Connection, body: sc.VmCreate) -> tuple[Any, _Offering, set[str]]:
    """The image and the offering (as rows) and the zones of the L3 networks, checked.

    One statement when they all exist; when one does not, they are read again one by
    one, in the order the body names them, for the error that names the first missing."""
    l3s = list(body.l3_network_uuids)
    params = {"image": body.image_uuid, "offering": body.instance_offering_uuid}
    if len(l3s) == 1:
        rows = s.execute(_REFERENCES_ONE, {**params, "l3": l3s[0]}).all()
    else:
        rows = s.execute(_REFERENCES, {**params, "l3s": l3s}).all()
    offering: _Offering | None = None
    if rows and {r.l3_uuid for r in rows} == set(body.l3_network_uuids):
        image = rows[0]
        offering = _Offering(image.offering_uuid, image.cpu_num, image.memory_size)
        zones = {r.zone_uuid for r in rows}
    else:
        image = require_row(s, Image, body.image_uuid, "imageUuid")
    if image.media_type != "RootVolumeTemplate":
        raise BadRequest("imageUuid: not a root volume template", field="imageUuid")
    if image.status != "Ready":
        raise BadRequest(f"imageUuid: the image is {image.status}, not Ready", field="imageUuid")
    if offering is None:
        row = require_row(s, InstanceOffering, body.instance_offering_uuid,
                          "instanceOfferingUuid")
        offering = _Offering(row.uuid, row.cpu_num, row.memory_size)
        zones = {require_row(s, L3Network, u, f"l3NetworkUuids.{i}").zone_uuid
                 for i, u in enumerate(body.l3_network_uuids)}
    return image, offering, zones


def _vm(ctl: Controller, uuid: str) -> Vm:
    with ctl.db.read() as s:
        return require(s, Vm, uuid, "vmUuid")


def _set(ctl: Controller, uuid: str, **values: Any) -> dict[str, Any]:
    def set_values(s: Session) -> dict[str, Any]:
        s.execute(update(Vm).where(Vm.uuid == uuid).values(**values))
        return to_dict(require(s, Vm, uuid, "vmUuid"))
    return ctl.db.transaction(set_values)


def _stopped(ctl: Controller, uuid: str) -> None:
    ctl.db.transaction(lambda s: mark_stopped(s, uuid))


def start_vm(ctl: Controller, ctx: JobContext, uuid: str, host_uuid: str | None = None) -> dict[str, Any]:
    vm = _vm(ctl, uuid)
    if vm.state == "Running":
        return to_dict(vm)
    if vm.state not in ("Stopped", "Unknown", "Crashed"):
        raise Conflict(f"vm {uuid} is {vm.state}; only a stopped VM can start", state=vm.state)
    start.run(start.StartVm(ctl, ctx, vm, want_host=host_uuid))
    return _set(ctl, uuid, state="Running")


def stop_vm(ctl: Controller, ctx: JobContext, uuid: str, force: bool = False) -> dict[str, Any]:
    vm = _vm(ctl, uuid)
    if vm.host_uuid is None or vm.state == "Stopped":
        _stopped(ctl, uuid)
        return _set(ctl, uuid)
    with ctl.db.read() as s:
        host = host_of(s, vm.host_uuid)
    vm_state.run(ctx, vm, "Stopping", host.agent_url,
                 km.StopVmCmd(vm_uuid=uuid, type="force" if force else "grace"))
    _stopped(ctl, uuid)
    return _set(ctl, uuid)


#: the VM commands that only change its state: reboot, pause, resume
SimpleVmCmd = km.RebootVmCmd | km.PauseVmCmd | km.ResumeVmCmd


def _simple(verb: str, model: type[SimpleVmCmd], during: str, after: str, need: tuple[str, ...]) -> Any:
    def action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
        def run(ctx: JobContext) -> dict[str, Any]:
            vm = _vm(ctl, uuid)
            if vm.state not in need:
                raise Conflict(f"vm {uuid} is {vm.state}; {verb} needs {'/'.join(need)}",
                               state=vm.state)
            with ctl.db.read() as s:
                host = host_of(s, vm.host_uuid)
            vm_state.run(ctx, vm, during, host.agent_url, model(vm_uuid=uuid))
            return _set(ctl, uuid, state=after)
        return ctl.jobs.submit(f"{verb}-vm", "vms", uuid, _keys(uuid), run)
    action.__doc__ = f"{verb.capitalize()} a VM."
    return action


def start_action(ctl: Controller, uuid: str, body: sc.MigrateAction) -> Job:
    """Start a stopped VM (on its last host if it has room, or the chosen host)."""
    return ctl.jobs.submit("start-vm", "vms", uuid, _keys(uuid),
                           lambda ctx: start_vm(ctl, ctx, uuid, body.host_uuid))


def stop_action(ctl: Controller, uuid: str, body: sc.StopAction) -> Job:
    """Stop a VM (ACPI shutdown, or force)."""
    return ctl.jobs.submit("stop-vm", "vms", uuid, _keys(uuid),
                           lambda ctx: stop_vm(ctl, ctx, uuid, body.force))


def migrate_vm(ctl: Controller, ctx: JobContext, uuid: str, host_uuid: str | None) -> dict[str, Any]:
    """Live-migrate the VM (the migrate-vm flow): a failure before the move undoes the
    destination; after it the VM has moved and the job succeeds."""
    vm = _vm(ctl, uuid)
    if vm.state != "Running" or vm.host_uuid is None:
        raise Conflict(f"vm {uuid} is {vm.state}; only a running VM migrates", state=vm.state)
    return migrate.run(migrate.MigrateVm(ctl, ctx, vm, want_host=host_uuid))


def migrate_action(ctl: Controller, uuid: str, body: sc.MigrateAction) -> Job:
    """Live-migrate a running VM to another host of its cluster."""
    return ctl.jobs.submit("migrate-vm", "vms", uuid, _keys(uuid),
                           lambda ctx: migrate_vm(ctl, ctx, uuid, body.host_uuid))


def migrate_or_stop(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """A host is going away: move the VM if another host can take it, else stop it."""
    vm = _vm(ctl, uuid)
    if vm.state == "Running":
        try:
            migrate_vm(ctl, ctx, uuid, None)
            return
        except Exception as e:
            log.info("vm %s cannot migrate (%s); stopping it", uuid, e)
    try:
        stop_vm(ctl, ctx, uuid, force=True)
    except AgentCallError as e:
        log.warning("stopping vm %s failed (%s); marking it stopped", uuid, e)
        _stopped(ctl, uuid)


def evacuate(ctl: Controller, ctx: JobContext, uuid: str, host_uuid: str) -> None:
    """Move a VM off a host in maintenance, on the VM's own queue (its earlier jobs first).

    The host's job holds the host's queue; a VM job never waits for a host's, so no deadlock.
    """
    with ctx.hold(_keys(uuid)):
        with ctl.db.read() as s:
            vm = s.get(Vm, uuid)
        if vm is not None and vm.host_uuid == host_uuid:  # not stopped or moved meanwhile
            migrate_or_stop(ctl, ctx, "vms", uuid)


def delete_vm(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Destroy the domain, drop leases, root volume, IPs and the row; data volumes detach."""
    vm = _vm(ctl, uuid)
    with ctl.db.read() as s:
        host = s.get(Host, vm.host_uuid) if vm.host_uuid else None
        vols = list(s.scalars(select(Volume).where(Volume.vm_uuid == uuid)))
        nics = nic_l3s(s, uuid)
        groups = sgspecs.groups_of_vm_nics(s, s.scalars(select(VmNic.uuid).where(VmNic.vm_uuid == uuid)))
    if host is not None and host.status == "Connected":
        _set(ctl, uuid, state="Destroying")
        ctx.call(host.agent_url, km.DestroyVmCmd(vm_uuid=uuid))
    roots = [v for v in vols if v.type == "Root"]
    delete_volume_files(ctl, ctx, host if host and host.status == "Connected" else None, roots)
    ctl.db.transaction(lambda s: _delete_rows(s, uuid))
    if host is not None and host.status == "Connected":
        resend_leases(ctl, ctx, host.uuid, host.agent_url, list(dict.fromkeys(l3 for l3, _ in nics)))
    sgspecs.nics_gone(ctl, ctx, groups)  # its addresses leave the rules naming its groups


def _delete_rows(s: Session, uuid: str) -> None:
    mark_stopped(s, uuid)
    used = list(s.scalars(select(VmNic.used_ip_uuid).where(VmNic.vm_uuid == uuid)))
    s.execute(delete(VmNic).where(VmNic.vm_uuid == uuid))
    s.execute(delete(UsedIp).where(UsedIp.uuid.in_([u for u in used if u])))
    s.execute(delete(Volume).where(Volume.vm_uuid == uuid, Volume.type == "Root"))
    s.execute(update(Volume).where(Volume.vm_uuid == uuid).values(vm_uuid=None, device_id=None))
    s.execute(delete(Tag).where(Tag.resource_uuid == uuid))
    s.execute(delete(VmBackupPolicyRef).where(VmBackupPolicyRef.vm_uuid == uuid))  # its policy's
    s.execute(delete(Vm).where(Vm.uuid == uuid))


def delete_volume(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    with ctl.db.read() as s:
        vol = s.get(Volume, uuid)
    if vol is None:
        return
    delete_volume_files(ctl, ctx, None, [vol])
    with ctl.db.write() as s:
        s.execute(delete(Snapshot).where(Snapshot.volume_uuid == uuid))
        s.execute(delete(Tag).where(Tag.resource_uuid == uuid))
        s.execute(delete(Volume).where(Volume.uuid == uuid))


def detach_nic(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Unplug a NIC from its VM and give its address back."""
    with ctl.db.read() as s:
        nic = s.get(VmNic, uuid)
        vm = s.get(Vm, nic.vm_uuid) if nic else None
        host = s.get(Host, vm.host_uuid) if vm and vm.host_uuid else None
        groups = sgspecs.groups_of_vm_nics(s, [uuid])
    if nic is None or vm is None:
        return
    if host is not None and vm.state == "Running":
        ctx.call(host.agent_url, km.DetachNicCmd(vm_uuid=vm.uuid, mac=nic.mac))

    def drop_rows(s: Session) -> None:
        s.execute(delete(VmNic).where(VmNic.uuid == uuid))
        if nic.used_ip_uuid:
            s.execute(delete(UsedIp).where(UsedIp.uuid == nic.used_ip_uuid))
    ctl.db.transaction(drop_rows)
    if host is not None and vm.state == "Running":
        resend_leases(ctl, ctx, host.uuid, host.agent_url, [nic.l3_network_uuid])
    sgspecs.nics_gone(ctl, ctx, groups)


def attach_nic_action(ctl: Controller, uuid: str, body: sc.NicAttachAction) -> Job:
    """Add a NIC on an L3 network (hot-plugged when the VM runs)."""
    def run(ctx: JobContext) -> dict[str, Any]:
        vm = _vm(ctl, uuid)
        nic_uuid = attach_nic.run(attach_nic.AttachNic(ctl, ctx, vm, body.l3_network_uuid))
        with ctl.db.read() as s:
            return to_dict(require(s, VmNic, nic_uuid, "nicUuid"))
    return ctl.jobs.submit("attach-nic", "vms", uuid, _keys(uuid), run)


def _with_its_vm(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """A NIC whose VM is deleted in the same cascade goes with the VM (delete_vm)."""


def detach_nic_action(ctl: Controller, uuid: str, body: sc.NicDetachAction) -> Job:
    """Remove a NIC from the VM."""
    def run(ctx: JobContext) -> dict[str, Any]:
        with ctl.db.read() as s:
            nic = require(s, VmNic, body.nic_uuid, "nicUuid")
        if nic.vm_uuid != uuid:
            raise BadRequest("nicUuid: the NIC belongs to another VM", field="nicUuid")
        detach_nic(ctl, ctx, "vm-nics", body.nic_uuid)
        return {"detached": body.nic_uuid}
    return ctl.jobs.submit("detach-nic", "vms", uuid, _keys(uuid), run)


DECLARATIONS = (
    Create("vms", sc.VmCreate, create),
    Update("vms", sc.VmUpdate),
    Action("vms", "start", sc.MigrateAction, start_action),
    Action("vms", "stop", sc.StopAction, stop_action),
    Action("vms", "reboot", sc.EmptyAction,
           _simple("reboot", km.RebootVmCmd, "Rebooting", "Running", ("Running",))),
    Action("vms", "pause", sc.EmptyAction,
           _simple("pause", km.PauseVmCmd, "Pausing", "Paused", ("Running",))),
    Action("vms", "resume", sc.EmptyAction,
           _simple("resume", km.ResumeVmCmd, "Resuming", "Running", ("Paused",))),
    Action("vms", "migrate", sc.MigrateAction, migrate_action),
    Action("vms", "attach-nic", sc.NicAttachAction, attach_nic_action),
    Action("vms", "detach-nic", sc.NicDetachAction, detach_nic_action),
    CascadeStep("vms", "delete", delete_vm),
    CascadeStep("vms", "migrate-or-stop", migrate_or_stop),
    CascadeStep("volumes", "delete", delete_volume),
    CascadeStep("vm-nics", "detach", detach_nic),
    CascadeStep("vm-nics", "delete", _with_its_vm),
)
