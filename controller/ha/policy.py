"""What HA decides, as pure functions: when a host is dead, which of its VMs restart
elsewhere, and which domains of a host that comes back are stale copies."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

#: primary storage types whose disks other hosts of the cluster reach too
SHARED_STORAGE = frozenset({"nfs", "sharedmountpoint", "ceph"})


class Verdict(StrEnum):
    """What fencing found out about a dead host's hold on a storage."""

    FENCED = "fenced"  #: it can no longer write there: another host may open the disks
    ALIVE = "alive"  #: it still writes there: starting the VM elsewhere would corrupt the disks
    UNKNOWN = "unknown"  #: the storage cannot tell: the missed pings are the only evidence


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """One verdict for a VM's storages: any ALIVE wins, FENCED only if all are."""
    seen = set(verdicts)
    if Verdict.ALIVE in seen:
        return Verdict.ALIVE
    if seen and seen == {Verdict.FENCED}:
        return Verdict.FENCED
    return Verdict.UNKNOWN


def is_dead(down_since: float | None, now: float, grace: float) -> bool:
    """Whether a host unreachable since ``down_since`` (None: it answers) is past the grace."""
    return down_since is not None and now - down_since >= grace


@dataclass(frozen=True)
class VmOnDeadHost:
    """What the decision needs of one VM of a dead host: its storages as (uuid, type)."""

    uuid: str
    ha_level: str
    storages: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Decision:
    """Restart the VM on another host, or leave it Unknown (``reason`` says why)."""

    vm_uuid: str
    restart: bool
    reason: str


def decide(vm: VmOnDeadHost, verdicts: Mapping[str, Verdict]) -> Decision:
    """Restart a ``restart`` VM whose disks other hosts reach, unless its host still holds
    them; ``verdicts``: fencing's, by storage UUID (a storage missing is UNKNOWN)."""
    if vm.ha_level != "restart":
        return Decision(vm.uuid, False, f"haLevel is {vm.ha_level}")
    local = sorted({kind for _, kind in vm.storages} - SHARED_STORAGE)
    if local or not vm.storages:
        return Decision(vm.uuid, False, "its disks are on storage no other host reaches: "
                        + (", ".join(local) or "none known"))
    verdict = combine(verdicts.get(ps, Verdict.UNKNOWN) for ps, _ in vm.storages)
    if verdict is Verdict.ALIVE:
        return Decision(vm.uuid, False, "its host still writes to the storage (not fenced)")
    return Decision(vm.uuid, True, f"storage {verdict.value}")


def stale_copies(host_uuid: str, domains: Collection[str], owners: Mapping[str, str | None],
                 busy: Collection[str]) -> list[str]:
    """The domains on ``host_uuid`` whose VM another host owns now (restarted there while
    this one was dead): they must go. A VM with an operation under way is left to it
    (a migration has a copy on both hosts for a moment)."""
    return sorted(u for u in domains
                  if u not in busy and owners.get(u) not in (None, host_uuid))
