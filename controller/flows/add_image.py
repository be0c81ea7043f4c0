"""Add an image from a URL: the accepted row → each store downloads it → record.

Each backup storage's agent downloads the URL into its store
(``/backup/image/add``: the image's UUID is its id in the store), one store
after the other, and the agent's progress shows in the job. The last step
writes size, digest, format and one ImageBackupStorageRef per store and marks
the image ``Ready`` in the job's last transaction. On failure the stores
already done are emptied again (``/backup/image/delete``) and the row the API
wrote is dropped: a failed add leaves nothing but the failed job, which keeps
the agent's error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from agentcore import digest
from controller.api import schemas as sc
from controller.db.models import BackupStorage, Image, ImageBackupStorageRef, Tag
from controller.dispatch.dispatcher import AgentCallError
from controller.errors import BadRequest, Conflict
from controller.flows.base import Flow, Step
from controller.jobs import JobContext
from controller.services.common import to_dict
from sftpbackup import models as bm

log = logging.getLogger(__name__)
ADD_TIMEOUT = 6 * 3600.0  # a large image over a slow link; cancel the job to stop sooner
GONE = ("NOT_FOUND", "IMAGE_NOT_FOUND", "STORE_NOT_CONNECTED")


@dataclass(frozen=True)
class Store:
    """A backup storage an image goes to, as its agent names it."""

    uuid: str
    name: str
    agent_url: str
    root: str
    field: str

    @classmethod
    def of(cls, bs: BackupStorage, field: str = "") -> Store:
        return cls(bs.uuid, bs.name, bs.agent_url or "", bs.agent_root or bs.url, field)


def add_cmd(store: Store, image_uuid: str, body: sc.ImageCreate) -> bm.AddImageCmd:
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


@dataclass
class AddImage:
    """What the add-image job knows and has done."""

    ctx: JobContext
    uuid: str
    body: sc.ImageCreate
    stores: list[Store]
    infos: dict[str, bm.ImageInfo] = field(default_factory=dict)


def drop_row(st: AddImage) -> None:
    """The row the API wrote (``Downloading``), its tags and any refs."""
    def drop(s: Session) -> None:
        s.execute(delete(ImageBackupStorageRef).where(ImageBackupStorageRef.image_uuid == st.uuid))
        s.execute(delete(Tag).where(Tag.resource_uuid == st.uuid))
        s.execute(delete(Image).where(Image.uuid == st.uuid))
    st.ctx.db.transaction(drop)


def _adder(i: int) -> Step[AddImage]:
    def run(st: AddImage) -> None:
        store, n = st.stores[i], len(st.stores)
        ctx = st.ctx
        ctx.progress(f"connect {store.name}", 100.0 * i / n)
        ctx.call(store.agent_url, bm.ConnectCmd(backup_storage_uuid=store.uuid, root=store.root),
                 where=store.name, base=100.0 * i / n, span=0.0)
        info = ctx.call(store.agent_url, add_cmd(store, st.uuid, st.body), ADD_TIMEOUT,
                        where=store.name, base=100.0 * i / n, span=100.0 / n).image
        if info is None:
            raise Conflict(f"the agent of {store.name} answered no image")
        st.infos[store.uuid] = info

    def undo(st: AddImage) -> None:
        remove_from_store(st.ctx, st.stores[i], st.uuid)

    return Step(f"add-to-store-{i}", run, undo)


def remove_from_store(ctx: JobContext, store: Store, image_id: str) -> None:
    """``/backup/image/delete``; an image or store already gone is fine."""
    try:
        ctx.call(store.agent_url, bm.DeleteImageCmd(
            backup_storage_uuid=store.uuid, root=store.root, image_uuid=image_id))
    except AgentCallError as e:
        if e.code not in GONE:
            raise


def remove_from_stores(ctx: JobContext, what: str,
                       refs: Iterable[tuple[str, BackupStorage]]) -> None:
    """Remove ``what`` from each (id there, backup storage) of ``refs`` through the store's agent."""
    for image_id, bs in refs:
        if bs.type != "sftp" or not bs.agent_url:
            log.warning("%s: cannot remove it from %s backup storage %s (no agent)",
                        what, bs.type, bs.uuid)
            continue
        remove_from_store(ctx, Store.of(bs), image_id)


def record(st: AddImage) -> None:
    """Size, digest, format and the refs from what the stores measured; Ready, job done."""
    infos = list(st.infos.values())
    digests = {digest.normalise(i.digest) for i in infos}
    if len(digests) != 1:
        raise Conflict(f"the stores measured different digests: {sorted(digests)}")
    first = infos[0]
    with st.ctx.db.write() as s:
        for store in st.stores:
            s.add(ImageBackupStorageRef(image_uuid=st.uuid, backup_storage_uuid=store.uuid,
                                        install_path=st.infos[store.uuid].image_uuid))
        s.execute(update(Image).where(Image.uuid == st.uuid).values(
            status="Ready", size=first.virtual_size, actual_size=first.size,
            digest=digests.pop(), format=first.format))
        row = s.get(Image, st.uuid, populate_existing=True)
        assert row is not None
        st.ctx.complete(s, to_dict(row))


def steps(n_stores: int) -> list[Step[AddImage]]:
    return ([Step("accepted", lambda st: None, drop_row)]
            + [_adder(i) for i in range(n_stores)] + [Step("record", record)])


def run(st: AddImage) -> None:
    """Add to every store, then record; on failure the stores are emptied and the row dropped."""
    Flow("add-image", steps(len(st.stores)), check=st.ctx.check,
         guard=st.ctx.uncancellable).run(st)
