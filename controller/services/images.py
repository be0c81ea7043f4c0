"""Images: add from a URL into backup storage (a job), register one already there, delete.

Adding asks each backup storage's agent to download the URL into its store
(``/backup/image/add``: the image's UUID is its id in the store), one store
after the other, and the agent's progress shows in the job. The image row is
written ``Downloading`` when the request is accepted and becomes ``Ready``,
with the size, digest and format the store measured and one
ImageBackupStorageRef per store, in the job's last transaction. When a store
fails, the stores already done are emptied again (``/backup/image/delete``)
and the row is removed: a failed add leaves nothing but the failed job, which
keeps the agent's error. Deleting removes the image from every store
(``NOT_FOUND`` is fine) before the rows go.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from agentcore import digest
from agentcore.models import Returns
from controller import cascade
from controller.api import schemas as sc
from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import BackupStorage, Image, ImageBackupStorageRef, Tag
from controller.declarations import CascadeStep, Create
from controller.dispatch.client import R, route
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import BadRequest, Conflict
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.services.common import require, to_dict
from sftpbackup import models as bm

log = logging.getLogger(__name__)
ADD_TIMEOUT = 6 * 3600.0  # a large image over a slow link; cancel the job to stop sooner
GONE = ("NOT_FOUND", "IMAGE_NOT_FOUND", "STORE_NOT_CONNECTED")


def create(ctl: Controller, body: sc.ImageCreate) -> tuple[Job | None, dict[str, Any]]:
    """``imageId`` given: register the image (no job); otherwise add it from ``url`` in a job."""
    if body.image_id is not None:
        with ctl.db.write() as s:
            row = record_existing(s, body)
            s.flush()
            return None, to_dict(row)
    with ctl.db.write() as s:
        stores = _stores_for_add(s, body)
        row = Image(name=body.name, description=body.description, source_url=body.url,
                    format=body.format or "raw", media_type=body.media_type,
                    platform=body.platform, size=0, actual_size=body.actual_size or 0,
                    digest=body.digest, status="Downloading")
        s.add(row)
        s.flush()
        for store in stores:  # the agent's own model: what it would refuse is a 400 now
            _add_cmd(store, row.uuid, body)
        out = to_dict(row)
    st = AddImage(ctl, out["uuid"], body, stores)
    job = ctl.jobs.submit("add-image", "images", st.uuid, [f"images:{st.uuid}"],
                          lambda ctx: run_add(ctx, st))
    return job, out


def record_existing(s: Session, body: sc.ImageCreate) -> Image:
    """Record an image that is already in the stores, under its id there."""
    if body.digest is None:
        raise BadRequest("digest: required with imageId", field="digest")
    if body.size is None:
        raise BadRequest("size: the virtual size is required with imageId", field="size")
    if body.url is not None and not body.url.startswith(("http://", "https://")):
        raise BadRequest("url: with imageId, url is where hosts fetch the image: http(s) only",
                         field="url")
    for i, bu in enumerate(body.backup_storage_uuids):
        require(s, BackupStorage, bu, f"backupStorageUuids.{i}")
    row = Image(name=body.name, description=body.description, url=body.url,
                format=body.format or "qcow2", media_type=body.media_type,
                platform=body.platform, size=body.size, actual_size=body.actual_size or 0,
                digest=body.digest, status="Ready")
    s.add(row)
    s.flush()
    for bu in body.backup_storage_uuids:
        s.add(ImageBackupStorageRef(image_uuid=row.uuid, backup_storage_uuid=bu,
                                    install_path=body.image_id))
    return row


@dataclass(frozen=True)
class Store:
    """A backup storage an image goes to, as its agent names it."""

    uuid: str
    name: str
    agent_url: str
    root: str
    field: str


def _stores_for_add(s: Session, body: sc.ImageCreate) -> list[Store]:
    if body.url is None:
        raise BadRequest("url: give url (to add the image) or imageId and digest (to register it)",
                         field="url")
    if body.size is not None:
        raise BadRequest("size: the virtual size is read from the image; actualSize checks "
                         "the file's bytes", field="size")
    stores = []
    for i, bu in enumerate(body.backup_storage_uuids):
        f = f"backupStorageUuids.{i}"
        bs = require(s, BackupStorage, bu, f)
        if bs.type != "sftp":
            raise BadRequest(f"{f}: adding from a URL needs SFTP backup storage ({bs.type} backup "
                             "storage has no cluster credentials in the model)", field=f)
        if not bs.agent_url:
            raise BadRequest(f"{f}: backup storage {bu} has no agentUrl", field=f)
        stores.append(Store(bs.uuid, bs.name, bs.agent_url, bs.agent_root or bs.url, f))
    return stores


def _add_cmd(store: Store, image_uuid: str, body: sc.ImageCreate) -> bm.AddImageCmd:
    """The agent's command, validated by the agent's model (a 400 naming our field if not)."""
    try:
        return bm.AddImageCmd(
            backup_storage_uuid=store.uuid, root=store.root, image_uuid=image_uuid,
            url=body.url or "", name=body.name,
            format=body.format, size=body.actual_size,
            sha256=digest.bare(body.digest) if body.digest else None)
    except ValidationError as e:
        loc = str(e.errors()[0]["loc"][0]) if e.errors() and e.errors()[0]["loc"] else "url"
        ours = {"url": "url", "root": store.field, "size": "actualSize",
                "format": "format"}.get(loc, "url")
        raise BadRequest(f"{ours}: {e.errors()[0]['msg']}", field=ours) from None


# -- the add job -----------------------------------------------------------------


@dataclass
class AddImage:
    """What the add-image job knows and has done."""

    ctl: Controller
    uuid: str
    body: sc.ImageCreate
    stores: list[Store]
    ctx: JobContext | None = None
    infos: dict[str, bm.ImageInfo] = field(default_factory=dict)


def _call(st: AddImage, store: Store, cmd: Returns[R], timeout: float,
          base: float = 0.0, span: float = 0.0) -> R:
    """An agent command in the job; its progress shows as ``<path> on <store>: <stage>``."""
    ctx = st.ctx
    assert ctx is not None
    ctx.check()
    path = route(cmd)[1]

    def progress(p: dict[str, Any]) -> None:
        pct = p.get("percent")
        done, total = p.get("done"), p.get("total")
        stage = f"{path} on {store.name}: {p.get('stage') or ''}".rstrip()
        if isinstance(done, int) and isinstance(total, int) and total:
            stage += f" {done}/{total} {p.get('unit') or ''}".rstrip()
        ctx.progress(stage, base + span * float(pct) / 100 if isinstance(pct, int | float)
                     else None)

    return ctx.wait_call(st.ctl.agents.call(store.agent_url, cmd, timeout, on_progress=progress))


def _adder(i: int) -> Step[AddImage]:
    def run(st: AddImage) -> None:
        store, n = st.stores[i], len(st.stores)
        ctx = st.ctx
        assert ctx is not None
        ctx.progress(f"connect {store.name}", 100.0 * i / n)
        _call(st, store, bm.ConnectCmd(backup_storage_uuid=store.uuid, root=store.root),
              st.ctl.settings.command_timeout)
        info = _call(st, store, _add_cmd(store, st.uuid, st.body),
                     ADD_TIMEOUT, base=100.0 * i / n, span=100.0 / n).image
        if info is None:
            raise Conflict(f"the agent of {store.name} answered no image")
        st.infos[store.uuid] = info

    def undo(st: AddImage) -> None:
        remove_from_store(st.ctl, st.ctx, st.stores[i], st.uuid)

    return Step(f"add-to-store-{i}", run, undo)


def remove_from_store(ctl: Controller, ctx: JobContext | None, store: Store,
                      image_id: str) -> None:
    """``/backup/image/delete``; an image or store already gone is fine."""
    assert ctx is not None
    try:
        ctx.wait_call(ctl.agents.call(store.agent_url, bm.DeleteImageCmd(
            backup_storage_uuid=store.uuid, root=store.root, image_uuid=image_id),
            ctl.settings.command_timeout))
    except AgentCallError as e:
        if e.code not in GONE:
            raise


def record(st: AddImage) -> None:
    """Size, digest, format and the refs from what the stores measured; Ready, job done."""
    ctx = st.ctx
    assert ctx is not None
    infos = list(st.infos.values())
    digests = {digest.normalise(i.digest) for i in infos}
    if len(digests) != 1:
        raise Conflict(f"the stores measured different digests: {sorted(digests)}")
    first = infos[0]
    with st.ctl.db.write() as s:
        for store in st.stores:
            s.add(ImageBackupStorageRef(image_uuid=st.uuid, backup_storage_uuid=store.uuid,
                                        install_path=st.infos[store.uuid].image_uuid))
        s.execute(update(Image).where(Image.uuid == st.uuid).values(
            status="Ready", size=first.virtual_size, actual_size=first.size,
            digest=digests.pop(), format=first.format))
        row = s.get(Image, st.uuid, populate_existing=True)
        assert row is not None
        ctx.complete(s, to_dict(row))


def run_add(ctx: JobContext, st: AddImage) -> dict[str, Any]:
    """Add to every store, then record; on failure empty the stores and drop the row."""
    st.ctx = ctx
    steps = [_adder(i) for i in range(len(st.stores))] + [Step("record", record)]
    try:
        Flow("add-image", steps, check=ctx.check, guard=ctx.uncancellable).run(st)
    except BaseException:
        with st.ctl.db.write() as s:
            s.execute(delete(ImageBackupStorageRef).where(ImageBackupStorageRef.image_uuid == st.uuid))
            s.execute(delete(Tag).where(Tag.resource_uuid == st.uuid))
            s.execute(delete(Image).where(Image.uuid == st.uuid))
        raise
    with st.ctl.db.read() as s:
        return to_dict(require(s, Image, st.uuid, "imageUuid"))


# -- delete ------------------------------------------------------------------------


def delete_image(ctl: Controller, ctx: JobContext, coll: str, uuid: str) -> None:
    """Remove the image from every store it is in (through their agents), then the rows.

    VMs made from it keep running (their ``imageUuid`` is cleared by the
    cascade's detach) and primary storages keep their cached copy, which the
    root volumes are clones of; only the cache rows go.
    """
    with ctl.db.read() as s:
        refs = list(s.execute(select(ImageBackupStorageRef.install_path, BackupStorage).join(
            BackupStorage, BackupStorage.uuid == ImageBackupStorageRef.backup_storage_uuid)
            .where(ImageBackupStorageRef.image_uuid == uuid)))
    for image_id, bs in refs:
        if bs.type != "sftp" or not bs.agent_url:
            log.warning("image %s: cannot remove it from %s backup storage %s (no agent)",
                        uuid, bs.type, bs.uuid)
            continue
        remove_from_store(ctl, ctx, Store(bs.uuid, bs.name, bs.agent_url,
                                          bs.agent_root or bs.url, ""), image_id)
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)


DECLARATIONS = (
    Create("images", sc.ImageCreate, create),
    CascadeStep("images", "delete", delete_image),
)
