"""Lifecycle events and libvirtd restarts, against a libvirtd of the test's own.

The agent drives a second libvirtd (private mount namespace, see libvirt2.py)
so that killing and restarting it disturbs nobody else on the machine. Events
the agent's own commands cause are not reported; events from outside (virsh,
the guest powering itself off, QEMU dying) are, and they keep coming after
libvirtd was killed and started again, while the agent kept answering.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kvmagent.conftest import (
    console_log,
    ensure_destroyed,
    events_for,
    linked_clone,
    start_agent,
    virsh,
    vm_body,
    wait_console,
    wait_event,
)
from tests.integration.kvmagent.libvirt2 import SecondLibvirtd, kill_libvirtd, restart_libvirtd
from tests.support.agents import AgentProcess, CallbackReceiver, wait_until

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

VM = str(uuid.uuid4())
HOST = str(uuid.uuid4())


@pytest.fixture(scope="module")
def lv2(workdir: Path) -> Iterator[SecondLibvirtd]:
    lv = SecondLibvirtd(workdir / "lv2").start()
    yield lv
    lv.stop()


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str],
          lv2: SecondLibvirtd) -> Iterator[AgentProcess]:
    a = start_agent(workdir, receiver, libvirt_env, uri=lv2.uri).start()
    reply = a.call("/host/connect", {"hostUuid": HOST, "eventsUrl": f"{receiver.url}/v1/agent-events/{HOST}"})
    assert reply["success"], reply
    yield a
    ensure_destroyed(a, VM, lv2.uri)
    a.stop()


@pytest.fixture(scope="module")
def running(agent: AgentProcess, workdir: Path, guest_env: dict[str, str]) -> None:
    root = linked_clone(guest_env, workdir / "ev-root.qcow2")
    assert agent.call("/vm/start", vm_body(VM, root))["success"]
    wait_console(console_log(workdir, VM), guest_env["GUEST_MARKER"])


def test_own_commands_cause_no_events_outside_changes_do(agent: AgentProcess, running: None,
                                                         receiver: CallbackReceiver, lv2: SecondLibvirtd) -> None:
    assert agent.call("/vm/pause", {"vmUuid": VM})["state"] == "Paused"
    assert agent.call("/vm/resume", {"vmUuid": VM})["state"] == "Running"
    time.sleep(3)  # past the settle time: an own event would have been sent by now
    assert events_for(receiver, VM) == []
    virsh("suspend", VM.replace("-", ""), uri=lv2.uri)
    paused = wait_event(receiver, VM, "Paused")
    assert paused["hostUuid"] == HOST
    paths = {p["path"] for p in receiver.posts if p["body"].get("vmUuid") == VM}
    assert paths == {f"/v1/agent-events/{HOST}"}
    virsh("resume", VM.replace("-", ""), uri=lv2.uri)
    wait_event(receiver, VM, "Running")


def test_the_agent_keeps_answering_while_libvirtd_is_down_and_recovers(
    agent: AgentProcess, running: None, receiver: CallbackReceiver, lv2: SecondLibvirtd,
    workdir: Path, guest_env: dict[str, str],
) -> None:
    kill_libvirtd(lv2)
    ping = agent.call("/host/ping")
    assert ping["success"] and ping["hostUuid"] == HOST
    down = agent.call("/vm/sync")
    assert not down["success"] and down["error"]["code"] == "HYPERVISOR_UNAVAILABLE", down
    restart_libvirtd(lv2)
    synced = wait_until(lambda: (r := agent.call("/vm/sync"))["success"] and r, 120, interval=0.3,
                        what="sync after libvirtd restart")
    assert synced["states"] == {VM: "Running"}
    # the event registration came back with the connection: a shutdown from the guest is reported
    seen = len(events_for(receiver, VM))
    virsh("shutdown", VM.replace("-", ""), uri=lv2.uri)
    stopped = wait_event(receiver, VM, "Stopped", timeout=120)
    assert stopped["reason"] == "shut down from inside the guest"
    assert len(events_for(receiver, VM)) > seen
    assert guest_env["GUEST_POWEROFF_MARKER"] in console_log(workdir, VM).read_text()
    assert agent.call("/vm/check-state", {"vmUuids": [VM]})["states"] == {VM: "Stopped"}


def test_a_qemu_that_dies_is_reported_crashed(agent: AgentProcess, receiver: CallbackReceiver,
                                              lv2: SecondLibvirtd, workdir: Path) -> None:
    assert agent.call("/vm/start", vm_body(VM, workdir / "ev-root.qcow2"))["success"]
    pid_file = lv2.base / "run" / "qemu" / f"{VM.replace('-', '')}.pid"
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, what="qemu pid"))
    os.kill(pid, signal.SIGKILL)
    crashed = wait_event(receiver, VM, "Crashed")
    assert crashed["reason"] == "QEMU failed"
    assert agent.call("/vm/sync")["states"].get(VM, "Stopped") == "Stopped"
