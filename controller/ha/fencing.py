"""Storage fencing: does a dead host still hold a storage its VMs' disks are on?

A host that stops answering pings may still run its VMs (a cut management
network); starting them elsewhere would then have two QEMUs write one disk.
Fencing asks the storage: a :class:`Fencer` per primary storage type says
FENCED (the host can no longer write), ALIVE (it still does: do not restart)
or UNKNOWN (the storage cannot tell; the missed pings past the grace are the
only evidence). No storage type fences yet: NFS heartbeat files and Ceph
client blocklisting plug in here (see docs/controller.md, "HA").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from controller.ha.policy import Verdict

if TYPE_CHECKING:
    from controller.core import Controller


class Fencer(Protocol):
    """Fences one kind of primary storage against a dead host."""

    def check(self, ctl: Controller, host_uuid: str, storage_uuid: str) -> Verdict:
        """What the storage says of the host's hold on it."""


class Unfenceable:
    """A storage that cannot tell whether a host still writes to it."""

    def check(self, ctl: Controller, host_uuid: str, storage_uuid: str) -> Verdict:
        return Verdict.UNKNOWN


#: the fencer of each primary storage type (any other type: :class:`Unfenceable`)
FENCERS: dict[str, Fencer] = {}


def fencer_for(storage_type: str) -> Fencer:
    return FENCERS.get(storage_type, Unfenceable())
