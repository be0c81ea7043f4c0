"""Hosts: add (deploy, connect), reconnect, enable, disable, maintain."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Literal

from pydantic import SecretStr
from sqlalchemy import func, select, update

from controller.api import schemas as sc
from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import Cluster, Host, PrimaryStorage, PrimaryStorageClusterRef, Vm
from controller.declarations import Action, Create, Update
from controller.errors import BadRequest
from controller.jobs import JobContext
from controller.services import networks, sgspecs, vms, vxlan
from controller.services.common import require, to_dict
from controller.services.deploying import agent_config, default_agent_url, deploy_role, register_token
from controller.services.vmhelpers import forget_host
from kvmagent import models as km
from storageagent import models as sm

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 60.0


def add_host(ctl: Controller, body: sc.HostCreate) -> tuple[Job, dict[str, Any]]:
    """Write the host (Connecting), then deploy and connect it in a job."""
    with ctl.db.write() as s:
        cluster = require(s, Cluster, body.cluster_uuid, "clusterUuid")
        if s.scalar(select(Host.uuid).where(Host.management_ip == body.management_ip)):
            raise BadRequest(f"managementIp: a host with {body.management_ip} exists",
                             field="managementIp")
        host = Host(name=body.name, description=body.description, zone_uuid=cluster.zone_uuid,
                    cluster_uuid=cluster.uuid, management_ip=body.management_ip,
                    agent_url=body.agent_url or default_agent_url(body.management_ip, "kvmagent"),
                    storage_agent_url=body.storage_agent_url, status="Connecting",
                    vtep_ip=body.vtep_ip or vxlan.default_vtep(body.management_ip))
        s.add(host)
        s.flush()
        out = to_dict(host)

    def run(ctx: JobContext) -> dict[str, Any]:
        try:
            if body.deploy:
                ctx.progress("deploy", 5.0, force=True)
                _deploy(ctl, ctx, out, ssh_port=body.ssh_port, ssh_user=body.ssh_user,
                        password=body.ssh_password, ship_packages=body.ship_packages)
            ctx.progress("connect", 50.0, force=True)
            return connect(ctl, out["uuid"])
        except Exception:
            with ctl.db.write() as s:
                s.execute(update(Host).where(Host.uuid == out["uuid"]).values(status="Disconnected"))
            raise

    job = ctl.jobs.submit("add-host", "hosts", out["uuid"], [f"hosts:{out['uuid']}"], run)
    return job, out


AGENTS = ("kvmagent", "storageagent")


def _deploy(ctl: Controller, ctx: JobContext, host: dict[str, Any], *, ssh_port: int, ssh_user: str,
            password: SecretStr | None = None, ship_packages: bool = False, force: bool = False,
            only_if_version_differs: bool = False) -> list[dict[str, Any]]:
    """Install kvmagent and storageagent with the playbooks, streaming each task into the job.

    Each agent gets a token of its own (kept when it was deployed before), registered
    with the controller; a storage agent deployed for a host that named none becomes
    the host's. Returns what happened to each agent."""
    from controller.deploy import DeployTarget  # noqa: PLC0415 - Ansible is heavy

    ip = host["managementIp"]
    target = DeployTarget(address=ip, ssh_port=ssh_port, user=ssh_user, password=password,
                          ship_packages=ship_packages)
    urls = {"kvmagent": host["agentUrl"],
            "storageagent": host.get("storageAgentUrl") or default_agent_url(ip, "storageagent")}
    done: list[dict[str, Any]] = []
    for i, role in enumerate(AGENTS):
        result = deploy_role(ctx, target, role, agent_config(ctl, urls[role]), (5.0 + 20.0 * i, 25.0 + 20.0 * i),
                             force=force, only_if_version_differs=only_if_version_differs)
        register_token(ctl, result)
        target = replace(target, password=None)  # the first deploy installed the controller's key
        done.append({"role": role, "agentUrl": urls[role], "redeployed": not result.skipped,
                     "version": result.version, "changedTasks": result.changed, "message": result.message})
    if not host.get("storageAgentUrl"):
        with ctl.db.write() as s:
            s.execute(update(Host).where(Host.uuid == host["uuid"]).values(storage_agent_url=urls["storageagent"]))
    return done


def connect(ctl: Controller, host_uuid: str) -> dict[str, Any]:
    """Connect a host: hand over its identity, read capacity, mount storage, sync VMs."""
    with ctl.db.read() as s:
        host = require(s, Host, host_uuid, "hostUuid")
        refs = select(PrimaryStorageClusterRef.primary_storage_uuid).where(
            PrimaryStorageClusterRef.cluster_uuid == host.cluster_uuid)
        storages = list(s.scalars(select(PrimaryStorage).where(PrimaryStorage.uuid.in_(refs))))
    with ctl.db.write() as s:
        s.execute(update(Host).where(Host.uuid == host_uuid).values(status="Connecting"))
    forget_host(ctl, host_uuid)  # a restarted agent may have lost its bridges
    agents = ctl.agents
    events = f"{ctl.events_url}/{host_uuid}"
    ident = agents.call_sync(host.agent_url, km.ConnectCmd(host_uuid=host_uuid, events_url=events),
                             CONNECT_TIMEOUT)
    facts = agents.call_sync(host.agent_url, km.FactsCmd(), CONNECT_TIMEOUT)
    cap = agents.call_sync(host.agent_url, km.CapacityCmd(), CONNECT_TIMEOUT)
    if host.storage_agent_url:
        for ps in storages:
            mount_storage(ctl, host.storage_agent_url, ps, host_uuid)
    cpu_total = cap.cpu_total or facts.cpu_count
    mem_total = cap.memory_total or facts.memory_total
    with ctl.db.write() as s:
        used_cpu, used_mem = s.execute(
            select(func.coalesce(func.sum(Vm.cpu_num), 0), func.coalesce(func.sum(Vm.memory_size), 0))
            .where(Vm.host_uuid == host_uuid)).one()
        s.execute(update(Host).where(Host.uuid == host_uuid).values(
            status="Connected", cpu_num=cpu_total, total_cpu=cpu_total,
            available_cpu=max(0, cpu_total - int(used_cpu)), total_memory=mem_total,
            available_memory=max(0, mem_total - int(used_mem)),
            architecture=facts.arch or None, agent_version=ident.version or None))
    ctl.tracker.connected(host_uuid)
    ctl.tracker.sync_vms(host_uuid)
    vxlan.host_joined(ctl, host_uuid)
    with ctl.db.read() as s:
        filters = sgspecs.host_command(s, host_uuid)
    if filters is not None:  # rules may have changed while the host was unreachable
        agents.call_sync(host.agent_url, filters, CONNECT_TIMEOUT)
    with ctl.db.read() as s:
        return to_dict(require(s, Host, host_uuid, "hostUuid"))


def mount_storage(ctl: Controller, storage_agent_url: str, ps: PrimaryStorage,
                  host_uuid: str | None = None) -> None:
    """Make a primary storage available on one host (NFS mount, or init a directory).

    The storageagent mounts an NFS export where its config says
    (``<mount_base>/<storageUuid>``); a storage added without ``mountPath``
    gets that path from the first host that mounts it. With ``host_uuid`` the agent
    writes the host's heartbeat on an NFS share while it is mounted (HA fencing).
    """
    if ps.type == "nfs":
        cmd = sm.MountCmd(storage_uuid=ps.uuid, url=ps.url, host_uuid=host_uuid)
        reply = ctl.agents.call_sync(storage_agent_url, cmd, CONNECT_TIMEOUT)
        mounted = reply.mount_path
        if not ps.mount_path and mounted:
            with ctl.db.write() as s:
                s.execute(update(PrimaryStorage).where(PrimaryStorage.uuid == ps.uuid,
                                                       PrimaryStorage.mount_path.is_(None))
                          .values(mount_path=mounted))
            ps.mount_path = mounted
    elif ps.type in ("local", "sharedmountpoint"):
        kind: Literal["local", "sharedmountpoint"] = "local" if ps.type == "local" else "sharedmountpoint"
        ctl.agents.call_sync(storage_agent_url, sm.InitCmd(
            storage_uuid=ps.uuid, mount_path=ps.mount_path or "/", type=kind), CONNECT_TIMEOUT)


def _set_state(ctl: Controller, host_uuid: str, state: str) -> dict[str, Any]:
    with ctl.db.write() as s:
        s.execute(update(Host).where(Host.uuid == host_uuid).values(state=state))
        return to_dict(require(s, Host, host_uuid, "hostUuid"))


def reconnect_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    """Reconnect a host (re-hand its identity, re-read capacity, re-sync VMs)."""
    return ctl.jobs.submit("reconnect-host", "hosts", uuid, [f"hosts:{uuid}"],
                           lambda ctx: connect(ctl, uuid))


def redeploy_action(ctl: Controller, uuid: str, body: sc.HostRedeploy) -> Job:
    """Redeploy the host's agents: those that report another kvmcloud version than the
    controller ships (all of them with ``force``), then reconnect the host."""
    def run(ctx: JobContext) -> dict[str, Any]:
        with ctl.db.read() as s:
            host = to_dict(require(s, Host, uuid, "hostUuid"))
        agents = _deploy(ctl, ctx, host, ssh_port=body.ssh_port, ssh_user=body.ssh_user,
                         ship_packages=body.ship_packages, force=body.force,
                         only_if_version_differs=not body.force)
        ctx.progress("connect", 50.0, force=True)
        return {**connect(ctl, uuid), "agents": agents}

    return ctl.jobs.submit("redeploy-host", "hosts", uuid, [f"hosts:{uuid}"], run)


def enable_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    return ctl.jobs.submit("enable-host", "hosts", uuid, [f"hosts:{uuid}"],
                           lambda ctx: _set_state(ctl, uuid, "Enabled"))


def disable_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    return ctl.jobs.submit("disable-host", "hosts", uuid, [f"hosts:{uuid}"],
                           lambda ctx: _set_state(ctl, uuid, "Disabled"))


def maintain_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    """Put a host into maintenance: no new VMs; its VMs migrate away or stop."""
    def run(ctx: JobContext) -> dict[str, Any]:
        _set_state(ctl, uuid, "Maintenance")
        seen: set[str] = set()
        while True:  # a start queued before the state changed may still land here
            with ctl.db.read() as s:
                on_host = set(s.scalars(select(Vm.uuid).where(Vm.host_uuid == uuid))) - seen
            if not on_host:
                return _set_state(ctl, uuid, "Maintenance")
            for vm_uuid in sorted(on_host):
                ctx.check()
                ctx.progress(f"evacuate vm {vm_uuid}")
                seen.add(vm_uuid)
                vms.evacuate(ctl, ctx, vm_uuid, uuid)

    return ctl.jobs.submit("maintain-host", "hosts", uuid, [f"hosts:{uuid}"], run)


DECLARATIONS = (
    Create("hosts", sc.HostCreate, add_host),
    Update("hosts", sc.HostUpdate, after=networks.vtep_changed),  # a new VTEP goes to the hosts
    Action("hosts", "reconnect", sc.EmptyAction, reconnect_action),
    Action("hosts", "redeploy", sc.HostRedeploy, redeploy_action),
    Action("hosts", "enable", sc.EmptyAction, enable_action),
    Action("hosts", "disable", sc.EmptyAction, disable_action),
    Action("hosts", "maintain", sc.EmptyAction, maintain_action),
)
