"""Storage fencing: does a dead host still hold a storage its VMs' disks are on?

A host that stops answering pings may still run its VMs (a cut management
network); starting them elsewhere would then have two QEMUs write one disk.
Fencing asks the storage: a :class:`Fencer` per primary storage type says
FENCED (the host has stopped writing there), ALIVE (it still does: do not
restart) or UNKNOWN (the storage cannot tell; the missed pings past the grace
are the only evidence).

NFS: each host's storageagent rewrites a heartbeat file on every share it
mounted (``/storage/heartbeat/age`` reads its age); another connected host of
the storage reads it. A heartbeat older than ``host_dead_after`` is FENCED: the
host lost the share or died. It is evidence, not a lock: a host that later
regains the share is not stopped from writing (the host does not kill its
own VMs when its heartbeat fails). Ceph blocklisting is not built.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select

from controller.db.models import Host, PrimaryStorageClusterRef
from controller.dispatch.dispatcher import AgentCallError
from controller.ha.policy import Verdict
from storageagent import models as sm

if TYPE_CHECKING:
    from controller.core import Controller

log = logging.getLogger(__name__)
#: witnesses asked in turn (the first that answers decides)
WITNESSES = 2
AGE_TIMEOUT = 30.0


class Fencer(Protocol):
    """Fences one kind of primary storage against a dead host."""

    def check(self, ctl: Controller, host_uuid: str, storage_uuid: str) -> Verdict:
        """What the storage says of the host's hold on it."""


class Unfenceable:
    """A storage that cannot tell whether a host still writes to it."""

    def check(self, ctl: Controller, host_uuid: str, storage_uuid: str) -> Verdict:
        return Verdict.UNKNOWN


def heartbeat_verdict(age: float | None, grace: float) -> Verdict:
    """A heartbeat ``age`` seconds old (None: never written) against the grace."""
    if age is None:
        return Verdict.UNKNOWN
    return Verdict.FENCED if age >= grace else Verdict.ALIVE


class NfsHeartbeat:
    """Another connected host of the share reads the dead host's heartbeat age."""

    def check(self, ctl: Controller, host_uuid: str, storage_uuid: str) -> Verdict:
        for url in self._witnesses(ctl, host_uuid, storage_uuid)[:WITNESSES]:
            try:
                reply = ctl.agents.call_sync(url, sm.HeartbeatAgeCmd(
                    storage_uuid=storage_uuid, host_uuid=host_uuid), AGE_TIMEOUT)
            except AgentCallError as e:
                log.warning("heartbeat of host %s on %s not read through %s: %s", host_uuid,
                            storage_uuid, url, e)
                continue
            verdict = heartbeat_verdict(reply.age, ctl.settings.host_dead_after)
            log.info("host %s's heartbeat on %s: %s s old, %s", host_uuid, storage_uuid,
                     reply.age, verdict.value)
            return verdict
        return Verdict.UNKNOWN

    @staticmethod
    def _witnesses(ctl: Controller, host_uuid: str, storage_uuid: str) -> list[str]:
        clusters = select(PrimaryStorageClusterRef.cluster_uuid).where(
            PrimaryStorageClusterRef.primary_storage_uuid == storage_uuid)
        with ctl.db.read() as s:
            return [u for u in s.scalars(select(Host.storage_agent_url).where(
                Host.cluster_uuid.in_(clusters), Host.uuid != host_uuid,
                Host.status == "Connected", Host.storage_agent_url.is_not(None))
                .order_by(Host.uuid)) if u]


#: the fencer of each primary storage type (any other type: :class:`Unfenceable`)
FENCERS: dict[str, Fencer] = {"nfs": NfsHeartbeat()}


def fencer_for(storage_type: str) -> Fencer:
    return FENCERS.get(storage_type, Unfenceable())
