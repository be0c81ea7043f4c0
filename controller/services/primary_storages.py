"""Adding primary storage: the record, and for Ceph its spec and key reference checked."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from controller.api import schemas as sc
from controller.core import Controller
from controller.db.jobs import Job
from controller.declarations import Create
from controller.primary.ceph import read_key
from controller.services import resources as res
from controller.services import storages
from controller.services.common import to_dict


def create(ctl: Controller, body: sc.PrimaryStorageCreate) -> tuple[Job | None, dict[str, Any]]:
    """Write the primary storage (no agent is reached: answered 201); a Ceph one with
    ``deploy`` is a job that deploys its cephagent and connects it (``storages``).

    A Ceph storage's key reference must name a key in the controller's
    ``ceph_key_dir`` (a 400 naming ``ceph.keyRef`` otherwise): the controller
    hands that key to the hosts' libvirt; the storage gets the UUID of that
    libvirt secret.
    """
    if body.ceph is not None:
        read_key(ctl.settings, body.ceph.key_ref, field="ceph.keyRef")
    with ctl.db.write() as s:
        row = res.create_primary_storage(s, body)
        if body.ceph is not None:
            spec = body.ceph
            row.ceph_monitors, row.ceph_pool = ",".join(spec.monitors), spec.pool
            row.ceph_cache_pool, row.ceph_user = spec.cache_pool, spec.user
            row.ceph_key_ref, row.ceph_fsid = spec.key_ref, spec.fsid
            row.ceph_secret_uuid = uuidlib.uuid4().hex
            if body.deploy:
                row.status = "Connecting"
        s.flush()
        out = to_dict(row)
    if not body.deploy:
        return None, out
    return storages.add_ceph_primary_storage(ctl, body, out["uuid"]), out


DECLARATIONS = (
    Create("primary-storages", sc.PrimaryStorageCreate, create),
)
