"""HA decisions: when a host is dead, which VMs restart, which domains are stale copies."""

from __future__ import annotations

import pytest

from controller.ha.fencing import heartbeat_verdict
from controller.ha.policy import Verdict, VmOnDeadHost, combine, decide, is_dead, stale_copies

NFS = ("ps-nfs", "nfs")
CEPH = ("ps-ceph", "ceph")
LOCAL = ("ps-local", "local")


def vm(level: str, *storages: tuple[str, str]) -> VmOnDeadHost:
    return VmOnDeadHost("vm-1", level, frozenset(storages))


@pytest.mark.parametrize(("since", "now", "dead"), [
    (None, 100.0, False),  # it answers
    (90.0, 100.0, False),  # 10 s of a 30 s grace
    (70.0, 100.0, True),   # exactly the grace
    (10.0, 100.0, True),
])
def test_a_host_is_dead_once_unreachable_for_the_grace(since: float | None, now: float,
                                                        dead: bool) -> None:
    assert is_dead(since, now, 30.0) is dead


@pytest.mark.parametrize(("verdicts", "want"), [
    ([], Verdict.UNKNOWN),
    ([Verdict.FENCED], Verdict.FENCED),
    ([Verdict.FENCED, Verdict.FENCED], Verdict.FENCED),
    ([Verdict.FENCED, Verdict.UNKNOWN], Verdict.UNKNOWN),
    ([Verdict.FENCED, Verdict.ALIVE], Verdict.ALIVE),
    ([Verdict.UNKNOWN, Verdict.ALIVE], Verdict.ALIVE),
])
def test_one_storage_the_host_still_writes_is_enough_to_hold_the_vm(
        verdicts: list[Verdict], want: Verdict) -> None:
    assert combine(verdicts) is want


def test_a_restart_vm_on_shared_storage_restarts_fenced_or_not_known() -> None:
    for verdict in (Verdict.FENCED, Verdict.UNKNOWN):
        d = decide(vm("restart", NFS, CEPH), {"ps-nfs": verdict, "ps-ceph": Verdict.FENCED})
        assert d.restart, d
    assert decide(vm("restart", NFS), {}).restart  # no fencer: the missed pings decide


def test_a_vm_without_ha_stays() -> None:
    d = decide(vm("none", NFS), {"ps-nfs": Verdict.FENCED})
    assert not d.restart and "haLevel is none" in d.reason


def test_a_vm_whose_host_still_writes_its_storage_stays() -> None:
    d = decide(vm("restart", NFS, CEPH), {"ps-nfs": Verdict.FENCED, "ps-ceph": Verdict.ALIVE})
    assert not d.restart and "not fenced" in d.reason


@pytest.mark.parametrize("storages", [(LOCAL,), (NFS, LOCAL), ()])
def test_a_vm_with_a_disk_no_other_host_reaches_stays(storages: tuple[tuple[str, str], ...]) -> None:
    d = decide(vm("restart", *storages), {})
    assert not d.restart and "no other host reaches" in d.reason


def test_stale_copies_are_the_domains_another_host_owns_now() -> None:
    owners = {"a": "host-1", "b": "host-2", "c": None, "d": "host-2"}
    domains = ["a", "b", "c", "d", "e"]  # e: not in the database
    assert stale_copies("host-1", domains, owners, busy=set()) == ["b", "d"]
    assert stale_copies("host-1", domains, owners, busy={"d"}) == ["b"]  # a migration's
    assert stale_copies("host-2", domains, owners, busy=set()) == ["a"]


@pytest.mark.parametrize(("age", "want"), [
    (None, Verdict.UNKNOWN),  # never written: a share mounted before heartbeats, or by hand
    (0.0, Verdict.ALIVE),
    (29.9, Verdict.ALIVE),
    (30.0, Verdict.FENCED),
    (600.0, Verdict.FENCED),
])
def test_an_nfs_heartbeat_older_than_the_grace_fences(age: float | None, want: Verdict) -> None:
    assert heartbeat_verdict(age, 30.0) is want
