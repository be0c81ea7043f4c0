"""Storage with an agent of its own: add (deploy the agent, connect it), reconnect.

An SFTP backup storage with an agent (``agentUrl``, or ``deploy``) is added
in a job: the row is written ``Connecting``; with ``deploy`` the sftpbackup
role is run on ``hostname`` over SSH (each Ansible task is the job's stage),
then the agent is sent ``/backup/connect`` with the store's directory on its
host, and the capacity it reports is recorded with the status ``Connected``.
A failure fails the job with the agent's or the failing task's message and
leaves the storage ``Disconnected`` (``reconnect`` retries the connect).
A backup storage without an agent is only a record (201, no job).

Ceph primary storage (its own cephagent) is added the same way by
:func:`add_ceph_primary_storage`: with ``deploy`` the cephagent role runs on
``agentUrl``'s host, given the key that ``ceph.keyRef`` names in the
controller's ``ceph_key_dir`` (as a role secret: never in a body or the
inventory); then ``/ceph/connect`` checks the credential (and fsid) and
``/ceph/capacity`` gives the cluster's capacity. File primary storage needs
no job: its storageagent is deployed with each host, which mounts it on connect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import update

from cephagent import models as cm
from controller.api import schemas as sc
from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import BackupStorage, PrimaryStorage
from controller.declarations import Action, ActionFn, Create
from controller.errors import BadRequest, Conflict
from controller.jobs import JobContext
from controller.primary.ceph import cluster_ref, read_key
from controller.services import resources as res
from controller.services.common import require, to_dict
from controller.services.deploying import agent_config, default_agent_url, deploy_role, register_token
from sftpbackup import models as bm

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 60.0
STORE_ROOT_VAR = "sftpbackup_store_root"
"""the role variable naming the store user's chroot; the store is ``url`` inside it"""


def add_backup_storage(ctl: Controller, body: sc.BackupStorageCreate) -> tuple[Job | None, dict[str, Any]]:
    """Write the backup storage; when it has an agent, deploy (optional) and connect it in a job."""
    with_agent = body.type == "sftp" and (body.deploy or body.agent_url is not None)
    if body.deploy and body.agent_root and not body.agent_root.endswith(body.url.rstrip("/")):
        raise BadRequest("agentRoot: with deploy, the store is url inside the store user's chroot, "
                         "so agentRoot must end with url", field="agentRoot")
    if with_agent and not body.deploy:
        _check_root(body.agent_root or body.url, "agentRoot" if body.agent_root else "url")
    with ctl.db.write() as s:
        row = res.create_backup_storage(s, body)
        if with_agent:
            row.status = "Connecting"
        if body.deploy and not row.agent_url:  # known from the start: a deploy cut short is redeployed
            row.agent_url = default_agent_url(body.hostname, "sftpbackup")
        s.flush()
        out = to_dict(row)
    if not with_agent:
        return None, out
    uuid = out["uuid"]
    deploy = (lambda ctx: _deploy(ctl, ctx, body, uuid)) if body.deploy else None
    return _agent_job(ctl, "add-backup-storage", BackupStorage, uuid, deploy,
                      lambda: connect(ctl, uuid)), out


def add_ceph_primary_storage(ctl: Controller, body: sc.PrimaryStorageCreate, uuid: str) -> Job:
    """The job that deploys (optional) and connects the cephagent of a written Ceph primary storage."""
    deploy = (lambda ctx: _deploy_cephagent(ctl, ctx, body)) if body.deploy else None
    return _agent_job(ctl, "add-primary-storage", PrimaryStorage, uuid, deploy,
                      lambda: connect_primary(ctl, uuid))


def _agent_job(ctl: Controller, kind: str, model: type[Storage], uuid: str,
               deploy: Callable[[JobContext], None] | None, connect_fn: Callable[[], dict[str, Any]]) -> Job:
    """Deploy (when asked), then connect; any failure leaves the storage ``Disconnected``."""
    coll = "backup-storages" if model is BackupStorage else "primary-storages"

    def run(ctx: JobContext) -> dict[str, Any]:
        try:
            if deploy is not None:
                deploy(ctx)
            ctx.progress("connect", 90.0, force=True)
            return connect_fn()
        except Exception:
            _set(ctl, model, uuid, status="Disconnected")
            raise

    return ctl.jobs.submit(kind, coll, uuid, [f"{coll}:{uuid}"], run)


def _check_root(root: str, field: str) -> None:
    """What the agent would refuse as a store directory is a 400 before anything is written."""
    try:
        bm.ConnectCmd(backup_storage_uuid="check", root=root)
    except ValidationError as e:
        raise BadRequest(f"{field}: {e.errors()[0]['msg']}", field=field) from None


def _deploy(ctl: Controller, ctx: JobContext, body: sc.BackupStorageCreate, uuid: str) -> None:
    """Run the sftpbackup role on the store's host; record where its agent listens and the store is."""
    from controller.deploy import DeployTarget, default_deployer  # noqa: PLC0415 - Ansible is heavy

    host_vars: dict[str, Any] = {}
    if body.agent_root:  # the chroot is agentRoot without url
        host_vars[STORE_ROOT_VAR] = body.agent_root[: len(body.agent_root) - len(body.url.rstrip("/"))] or "/"
    target = DeployTarget(address=body.hostname, ssh_port=body.ssh_port or body.port, user=body.ssh_user,
                          password=body.ssh_password, host_vars=host_vars, ship_packages=body.ship_packages)
    agent_url = body.agent_url or default_agent_url(body.hostname, "sftpbackup")
    result = deploy_role(ctx, target, "sftpbackup", agent_config(ctl, agent_url), (5.0, 85.0))
    register_token(ctl, result)
    agent_root = body.agent_root or _store_dir(default_deployer().role_var("sftpbackup", STORE_ROOT_VAR, target),
                                               body.url)
    _set(ctl, BackupStorage, uuid, agent_url=body.agent_url or result.agent_url, agent_root=agent_root)


def redeploy_action(ctl: Controller, uuid: str, body: sc.BackupStorageRedeploy) -> Job:
    """Run the sftpbackup role again on the store's host (its agent is silent, or another
    kvmcloud version; always with ``force``), keeping the agent's token, then connect."""
    with ctl.db.read() as s:
        row = require(s, BackupStorage, uuid, "uuid")
    if row.type != "sftp" or not row.agent_url:
        raise Conflict(f"{uuid} is {row.type} backup storage without an agent to redeploy", type=row.type)

    def deploy(ctx: JobContext) -> None:
        from controller.deploy import DeployTarget, default_deployer  # noqa: PLC0415 - Ansible is heavy

        with ctl.db.read() as s:
            bs = require(s, BackupStorage, uuid, "uuid")
        _set(ctl, BackupStorage, uuid, status="Connecting")
        host_vars: dict[str, Any] = {}
        suffix = "/" + bs.url.strip("/")
        if bs.agent_root and bs.agent_root.endswith(suffix):  # the chroot the first deploy made
            host_vars[STORE_ROOT_VAR] = bs.agent_root[: -len(suffix)] or "/"
        target = DeployTarget(address=bs.hostname, ssh_port=body.ssh_port or bs.port, user=body.ssh_user,
                              host_vars=host_vars, ship_packages=body.ship_packages)
        result = deploy_role(ctx, target, "sftpbackup", agent_config(ctl, bs.agent_url or ""), (5.0, 85.0),
                             force=body.force, only_if_version_differs=not body.force)
        register_token(ctl, result)
        if not bs.agent_root:  # the first deploy was cut short before it recorded the store
            _set(ctl, BackupStorage, uuid, agent_root=_store_dir(
                default_deployer().role_var("sftpbackup", STORE_ROOT_VAR, target), bs.url))

    return _agent_job(ctl, "redeploy-backup-storage", BackupStorage, uuid, deploy, lambda: connect(ctl, uuid))


def _deploy_cephagent(ctl: Controller, ctx: JobContext, body: sc.PrimaryStorageCreate) -> None:
    """Run the cephagent role on agentUrl's host with the key ``ceph.keyRef`` names."""
    from controller.deploy import DeployTarget  # noqa: PLC0415 - Ansible is heavy

    assert body.ceph is not None and body.agent_url is not None  # the schema requires both for ceph
    where = urlsplit(body.agent_url)
    target = DeployTarget(address=where.hostname or "", ssh_port=body.ssh_port, user=body.ssh_user,
                          password=body.ssh_password, ship_packages=body.ship_packages)
    key = read_key(ctl.settings, body.ceph.key_ref)
    result = deploy_role(ctx, target, "cephagent", agent_config(ctl, body.agent_url), (5.0, 85.0),
                         secret_vars={"cephagent_keys": {body.ceph.key_ref: key}})
    register_token(ctl, result)


def _store_dir(chroot: str, url: str) -> str:
    return chroot.rstrip("/") + "/" + url.strip("/")


Storage = BackupStorage | PrimaryStorage


def _set(ctl: Controller, model: type[Storage], uuid: str, **values: Any) -> dict[str, Any]:
    with ctl.db.write() as s:
        s.execute(update(model).where(model.uuid == uuid).values(**values))
        return to_dict(require(s, model, uuid, "uuid"))


def _connecting(ctl: Controller, model: type[Storage], uuid: str, kind: str) -> Any:
    """The storage's row, once it is marked ``Connecting``; a 409 if it has no agent of ``kind``."""
    with ctl.db.read() as s:
        row = require(s, model, uuid, "uuid")
    if row.type != kind or not row.agent_url:
        raise Conflict(f"{uuid} is {row.type} storage without an agent of its own to connect", type=row.type)
    _set(ctl, model, uuid, status="Connecting")
    return row


def connect(ctl: Controller, uuid: str) -> dict[str, Any]:
    """Send the agent ``/backup/connect`` (it makes or checks the store) and record its capacity."""
    bs: BackupStorage = _connecting(ctl, BackupStorage, uuid, "sftp")
    reply = ctl.agents.call_sync(bs.agent_url or "", bm.ConnectCmd(
        backup_storage_uuid=uuid, root=bs.agent_root or bs.url), CONNECT_TIMEOUT)
    return _set(ctl, BackupStorage, uuid, status="Connected", total_capacity=reply.total_capacity,
                available_capacity=reply.available_capacity)


def connect_primary(ctl: Controller, uuid: str) -> dict[str, Any]:
    """Connect a Ceph primary storage's agent: credential and fsid checked, capacity recorded."""
    ps: PrimaryStorage = _connecting(ctl, PrimaryStorage, uuid, "ceph")
    ref, url = cluster_ref(ps), ps.agent_url or ""
    hello = ctl.agents.call_sync(url, cm.ConnectCmd(cluster=ref), CONNECT_TIMEOUT)
    cap = ctl.agents.call_sync(url, cm.CapacityCmd(cluster=ref), CONNECT_TIMEOUT)
    return _set(ctl, PrimaryStorage, uuid, status="Connected", ceph_fsid=ps.ceph_fsid or hello.fsid or None,
                total_capacity=cap.total_capacity or 0, available_capacity=cap.available_capacity or 0)


def _reconnect(coll: str, connect_fn: Callable[[Controller, str], dict[str, Any]]) -> ActionFn:
    def action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
        """Connect the storage's agent again (after the agent or its host came back)."""
        return ctl.jobs.submit(f"reconnect-{coll[:-1]}", coll, uuid, [f"{coll}:{uuid}"],
                               lambda ctx: connect_fn(ctl, uuid))
    return action


DECLARATIONS = (
    Create("backup-storages", sc.BackupStorageCreate, add_backup_storage),
    Action("backup-storages", "reconnect", sc.EmptyAction, _reconnect("backup-storages", connect)),
    Action("backup-storages", "redeploy", sc.BackupStorageRedeploy, redeploy_action),
    Action("primary-storages", "reconnect", sc.EmptyAction,
           _reconnect("primary-storages", connect_primary)),
)
