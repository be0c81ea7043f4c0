"""Backup storage: add (deploy its agent, connect it), reconnect.

An SFTP backup storage with an agent (``agentUrl``, or ``deploy``) is added
in a job: the row is written ``Connecting``; with ``deploy`` the sftpbackup
role is run on ``hostname`` over SSH (each Ansible task is the job's stage),
then the agent is sent ``/backup/connect`` with the store's directory on its
host, and the capacity it reports is recorded with the status ``Connected``.
A failure fails the job with the agent's or the failing task's message and
leaves the storage ``Disconnected`` (``reconnect`` retries the connect).
A backup storage without an agent is only a record (201, no job).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import update

from controller.api import routes
from controller.api import schemas as sc
from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import BackupStorage
from controller.errors import BadRequest, Conflict
from controller.jobs import JobContext
from controller.services import resources as res
from controller.services.common import require, to_dict
from controller.services.deploying import deploy_role
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
        s.flush()
        out = to_dict(row)
    if not with_agent:
        return None, out
    uuid = out["uuid"]

    def run(ctx: JobContext) -> dict[str, Any]:
        try:
            if body.deploy:
                _deploy(ctl, ctx, body, uuid)
            ctx.progress("connect", 90.0, force=True)
            return connect(ctl, uuid)
        except Exception:
            with ctl.db.write() as s:
                s.execute(update(BackupStorage).where(BackupStorage.uuid == uuid).values(
                    status="Disconnected"))
            raise

    return ctl.jobs.submit("add-backup-storage", "backup-storages", uuid,
                           [f"backup-storages:{uuid}"], run), out


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
                          password=body.ssh_password, host_vars=host_vars)
    config: dict[str, Any] = {"controller_urls": [ctl.settings.callback_base],
                              "token": ctl.settings.agent_token}
    if body.agent_url:
        config["listen"] = urlsplit(body.agent_url).netloc
    result = deploy_role(ctx, target, "sftpbackup", config, (5.0, 85.0))
    agent_root = body.agent_root or _store_dir(default_deployer().role_var("sftpbackup", STORE_ROOT_VAR, target),
                                               body.url)
    with ctl.db.write() as s:
        s.execute(update(BackupStorage).where(BackupStorage.uuid == uuid).values(
            agent_url=body.agent_url or result.agent_url, agent_root=agent_root))


def _store_dir(chroot: str, url: str) -> str:
    return chroot.rstrip("/") + "/" + url.strip("/")


def connect(ctl: Controller, uuid: str) -> dict[str, Any]:
    """Send the agent ``/backup/connect`` (it makes or checks the store) and record its capacity."""
    with ctl.db.read() as s:
        bs = require(s, BackupStorage, uuid, "backupStorageUuid")
    if bs.type != "sftp" or not bs.agent_url:
        raise Conflict(f"backup storage {uuid} has no agent to connect", type=bs.type)
    with ctl.db.write() as s:
        s.execute(update(BackupStorage).where(BackupStorage.uuid == uuid).values(status="Connecting"))
    reply = ctl.dispatcher.call_sync(bs.agent_url, "/backup/connect", bm.ConnectCmd(
        backup_storage_uuid=uuid, root=bs.agent_root or bs.url), CONNECT_TIMEOUT)
    total = int(reply.get("totalCapacity") or 0)
    with ctl.db.write() as s:
        s.execute(update(BackupStorage).where(BackupStorage.uuid == uuid).values(
            status="Connected", total_capacity=total,
            available_capacity=int(reply.get("availableCapacity") or 0)))
        return to_dict(require(s, BackupStorage, uuid, "backupStorageUuid"))


def reconnect_action(ctl: Controller, uuid: str, body: sc.EmptyAction) -> Job:
    """Connect a backup storage's agent again (after the agent or its host came back)."""
    return ctl.jobs.submit("reconnect-backup-storage", "backup-storages", uuid,
                           [f"backup-storages:{uuid}"], lambda ctx: connect(ctl, uuid))


def register() -> None:
    routes.JOB_CREATE["backup-storages"] = (sc.BackupStorageCreate, add_backup_storage)
    routes.ACTIONS[("backup-storages", "reconnect")] = (sc.EmptyAction, reconnect_action)
