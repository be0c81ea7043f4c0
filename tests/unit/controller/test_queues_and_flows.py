"""Per-resource queues and flows with rollback."""

from __future__ import annotations

import threading
import time

import pytest

from controller.flows.base import Flow, Step
from controller.queues import ResourceQueues
from tests.support.agents import wait_until


def test_one_resource_runs_in_order_others_in_parallel() -> None:
    q = ResourceQueues(8)
    order: list[int] = []
    running: set[str] = set()
    overlap: list[str] = []
    mu = threading.Lock()

    def work(key: str, i: int) -> None:
        with mu:
            if key in running:
                overlap.append(key)
            running.add(key)
        time.sleep(0.005)
        with mu:
            running.discard(key)
            if key == "vm:a":
                order.append(i)

    gate = threading.Event()
    q.submit(["vm:b"], gate.wait)  # a long job on b must not hold back a
    for i in range(20):
        q.submit(["vm:a"], lambda i=i: work("vm:a", i))
    wait_until(lambda: len(order) == 20, 10, what="vm:a work")
    assert order == list(range(20)) and overlap == []
    assert "vm:b" in q.busy()
    gate.set()
    wait_until(lambda: not q.busy(), 5, what="queues idle")
    q.shutdown()


def test_parked_work_can_be_withdrawn() -> None:
    q = ResourceQueues(2)
    gate = threading.Event()
    ran: list[str] = []
    q.submit(["h:1"], gate.wait)
    w = q.submit(["h:1"], lambda: ran.append("second"))
    assert q.withdraw(w)
    gate.set()
    wait_until(lambda: not q.busy(), 5)
    assert ran == []
    q.shutdown()


def test_hold_takes_a_key_in_turn_from_inside_running_work() -> None:
    q = ResourceQueues(2)
    gate = threading.Event()
    entered = threading.Event()
    order: list[str] = []

    def earlier() -> None:
        gate.wait()
        order.append("earlier")

    q.submit(["vm:a"], earlier)

    def host_job() -> None:
        entered.set()
        with q.hold(["vm:a"]):
            order.append("host")

    q.submit(["host:1"], host_job)
    assert entered.wait(5)
    time.sleep(0.05)  # the hold is parked behind the earlier work
    q.submit(["vm:a"], lambda: order.append("later"))  # arrives after the hold
    gate.set()
    wait_until(lambda: len(order) == 3, 5, what="all work")
    assert order == ["earlier", "host", "later"]
    q.shutdown()


def test_a_cancelled_hold_gives_up_waiting() -> None:
    q = ResourceQueues(2)
    gate = threading.Event()
    q.submit(["vm:a"], gate.wait)
    cancelled = threading.Event()

    def check() -> None:
        if cancelled.is_set():
            raise Boom()

    def wait_for_it() -> None:
        with q.hold(["vm:a"], check):
            raise AssertionError("never held")

    def run() -> None:
        with pytest.raises(Boom):
            wait_for_it()

    t = threading.Thread(target=run)
    t.start()
    cancelled.set()
    t.join(5)
    assert not t.is_alive()
    gate.set()
    wait_until(lambda: not q.busy(), 5, what="vm:a free")  # nothing left parked on it
    q.shutdown()


class Boom(Exception):
    pass


def test_flow_rolls_back_done_and_failing_steps_in_reverse() -> None:
    log: list[str] = []

    def step(name: str, fail: bool = False) -> Step[list[str]]:
        def run(st: list[str]) -> None:
            st.append(f"run {name}")
            if fail:
                raise Boom(name)
        return Step(name, run, lambda st: st.append(f"undo {name}"))

    flow = Flow("t", [step("a"), Step("b", lambda st: st.append("run b")), step("c", fail=True),
                      step("d")])
    with pytest.raises(Boom):
        flow.run(log)
    assert log == ["run a", "run b", "run c", "undo c", "undo a"]


def test_a_failing_rollback_does_not_stop_the_others() -> None:
    log: list[str] = []

    def bad_undo(st: list[str]) -> None:
        raise RuntimeError("undo failed")

    flow = Flow("t", [Step("a", lambda st: None, lambda st: st.append("undo a")),
                      Step("b", lambda st: None, bad_undo),
                      Step("c", lambda st: (_ for _ in ()).throw(Boom()))])
    with pytest.raises(Boom):
        flow.run(log)
    assert log == ["undo a"] and [n for n, _ in flow.rollback_errors] == ["b"]


def test_check_between_steps_stops_the_flow() -> None:
    calls: list[str] = []

    def check() -> None:
        if len(calls) == 1:
            raise Boom("cancelled")

    flow = Flow("t", [Step("a", lambda st: calls.append("a"), lambda st: calls.append("undo a")),
                      Step("b", lambda st: calls.append("b"))], check=check)
    with pytest.raises(Boom):
        flow.run(None)
    assert calls == ["a", "undo a"]
