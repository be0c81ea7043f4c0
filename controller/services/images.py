"""Images: add from a URL into backup storage (a job), register one already there, delete.

The image row is written ``Downloading`` when the request is accepted; the
add-image flow (:mod:`controller.flows.add_image`) fills the stores and marks
it ``Ready``, or drops it again. Deleting removes the image from every store
(``NOT_FOUND`` is fine) before the rows go.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import cascade
from controller.api import schemas as sc
from controller.core import Controller
from controller.db.jobs import Job
from controller.db.models import BackupStorage, Image, ImageBackupStorageRef
from controller.declarations import CascadeStep, Create
from controller.errors import BadRequest
from controller.flows import add_image
from controller.flows.add_image import Store
from controller.jobs import JobContext
from controller.services.common import require, to_dict

log = logging.getLogger(__name__)


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
            add_image.add_cmd(store, row.uuid, body)
        out = to_dict(row)
    uuid = out["uuid"]

    def run(ctx: JobContext) -> dict[str, Any]:
        add_image.run(add_image.AddImage(ctx, uuid, body, stores))
        with ctx.db.read() as s:
            return to_dict(require(s, Image, uuid, "imageUuid"))
    return ctl.jobs.submit("add-image", "images", uuid, [f"images:{uuid}"], run), out


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
        stores.append(Store.of(bs, f))
    return stores


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
    add_image.remove_from_stores(ctx, f"image {uuid}", refs)
    with ctl.db.write() as s:
        cascade.delete_rows(s, coll, uuid)


DECLARATIONS = (
    Create("images", sc.ImageCreate, create),
    CascadeStep("images", "delete", delete_image),
)
