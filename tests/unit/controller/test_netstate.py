"""The controller's cache of what it did on its hosts' networks."""

from __future__ import annotations

import threading
import time

import pytest

from controller.netstate import DhcpCoalescer, HostNetworkState


class Boom(Exception):
    pass


def test_a_forgotten_host_loses_its_bridges_secrets_and_peer_lists_only() -> None:
    state = HostNetworkState()
    for host in ("h1", "h2"):
        state.l2_realised.add((host, "l2"))
        state.done_on_host.add((host, "ceph-secret:s"))
        state.vxlan_sent[(host, "vx")] = ("10.0.0.1",)
    state.forget_host("h1")
    assert state.l2_realised == {("h2", "l2")}
    assert state.done_on_host == {("h2", "ceph-secret:s")}
    assert list(state.vxlan_sent) == [("h2", "vx")]


def test_a_deleted_network_loses_its_peer_lists_on_every_host() -> None:
    state = HostNetworkState()
    state.vxlan_sent.update({("h1", "vx"): ("a",), ("h2", "vx"): ("b",), ("h1", "other"): ("a",)})
    state.forget_vxlan(l2_uuid="vx")
    assert list(state.vxlan_sent) == [("h1", "other")]


def test_a_migrating_vm_is_incoming_only_while_it_arrives() -> None:
    state = HostNetworkState()
    with state.arriving("dst", "vm1"):
        assert state.incoming("dst") == ["vm1"]
    assert state.incoming("dst") == []


def test_two_controllers_share_no_state() -> None:
    a, b = HostNetworkState(), HostNetworkState()
    a.l2_realised.add(("h", "l2"))
    assert not b.l2_realised
    assert a.dhcp("h", "l3") is a.dhcp("h", "l3") is not b.dhcp("h", "l3")


def test_dhcp_applies_coalesce_and_each_caller_is_covered_by_a_later_apply() -> None:
    c = DhcpCoalescer()
    mu = threading.Lock()
    committed = 0
    applies: list[int] = []  # how many callers' rows each apply saw
    covered: list[bool] = []

    def apply() -> None:
        with mu:
            seen = committed
        time.sleep(0.01)
        applies.append(seen)

    def caller() -> None:
        nonlocal committed
        with mu:
            committed += 1
            mine = committed
        c.run(apply)
        covered.append(max(applies) >= mine)

    threads = [threading.Thread(target=caller) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(covered) == 40 and all(covered)
    assert len(applies) < 40  # a burst shares applies


def test_a_failed_dhcp_apply_is_retried_by_a_waiter() -> None:
    c = DhcpCoalescer()
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Boom("agent down")

    with pytest.raises(Boom):
        c.run(flaky)
    c.run(flaky)  # the next caller applies again
    assert len(calls) == 2
