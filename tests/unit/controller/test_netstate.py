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


def _lease(i: int) -> tuple[str, str, str | None]:
    return (f"fa:00:00:00:00:{i:02x}", f"10.0.0.{i}", None)


def test_dhcp_adds_coalesce_after_one_full_set() -> None:
    c = DhcpCoalescer()
    sent: list[list[tuple[str, str, str | None]]] = []
    fulls: list[int] = []
    gate = threading.Event()

    def add(batch: list[tuple[str, str, str | None]]) -> bool:
        gate.wait(10)
        sent.append(batch)
        return True

    c.add([_lease(1)], add, lambda: fulls.append(1))  # nothing sent yet: the full set
    assert fulls == [1] and sent == []
    threads = [threading.Thread(target=c.add, args=([_lease(i)], add, lambda: fulls.append(1)))
               for i in range(2, 12)]
    for t in threads:
        t.start()
    while c.requested < 11:  # every caller has asked; the first add waits on the gate
        time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join(10)
    assert fulls == [1]
    assert sorted(lease for batch in sent for lease in batch) == [_lease(i) for i in range(2, 12)]
    assert len(sent) <= 2  # the first add, then one for everyone who waited


def test_dhcp_add_sends_the_full_set_when_the_agent_has_no_server() -> None:
    c = DhcpCoalescer()
    fulls: list[int] = []
    c.run(lambda: fulls.append(1))
    c.add([_lease(1)], lambda batch: False, lambda: fulls.append(2))
    assert fulls == [1, 2]


def test_a_reconnected_host_gets_the_full_set_on_the_next_add() -> None:
    state = HostNetworkState()
    fulls: list[str] = []
    adds: list[int] = []
    for _ in range(2):
        state.dhcp("h1", "l3").add([_lease(1)], lambda b: adds.append(len(b)) is None,
                                   lambda: fulls.append("h1"))
    state.dhcp("h2", "l3").run(lambda: fulls.append("h2"))
    state.forget_host("h1")
    state.dhcp("h1", "l3").add([_lease(2)], lambda b: adds.append(len(b)) is None,
                               lambda: fulls.append("h1"))
    state.dhcp("h2", "l3").add([_lease(3)], lambda b: adds.append(len(b)) is None,
                               lambda: fulls.append("h2"))
    assert fulls == ["h1", "h2", "h1"] and adds == [1, 1]


def test_a_failed_add_drops_only_its_callers_leases() -> None:
    c = DhcpCoalescer()
    c.run(lambda: None)
    sent: list[list[tuple[str, str, str | None]]] = []
    gate, failing = threading.Event(), threading.Event()

    def flaky(batch: list[tuple[str, str, str | None]]) -> bool:
        if not sent and not failing.is_set():
            failing.set()
            gate.wait(10)
            raise Boom("agent down")
        sent.append(batch)
        return True

    errors: list[BaseException] = []

    def first() -> None:
        try:
            c.add([_lease(1)], flaky, lambda: None)
        except Boom as e:
            errors.append(e)

    t1 = threading.Thread(target=first)
    t1.start()
    failing.wait(10)
    t2 = threading.Thread(target=c.add, args=([_lease(2)], flaky, lambda: None))
    t2.start()
    while c.requested < 3:
        time.sleep(0.001)
    gate.set()
    t1.join(10)
    t2.join(10)
    assert len(errors) == 1 and sent == [[_lease(2)]]  # the waiter sent its own lease only
