"""Live migration between two libvirtds on this machine: the system one and a
second one with its own host UUID in a private mount namespace (libvirt2.py).
The disks sit on one filesystem both can see, as on shared primary storage;
libvirt cannot tell that a plain directory is shared, hence ``unsafe``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kvmagent.conftest import (
    console_log,
    domstate,
    ensure_destroyed,
    linked_clone,
    start_agent,
    vm_body,
    wait_console,
)
from tests.integration.kvmagent.libvirt2 import SecondLibvirtd
from tests.support.agents import AgentProcess, CallbackReceiver, free_port, wait_until

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

VM = str(uuid.uuid4())


@pytest.fixture(scope="module")
def lv2(workdir: Path) -> Iterator[SecondLibvirtd]:
    lv = SecondLibvirtd(workdir / "lv2").start()
    yield lv
    lv.stop()


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str]) -> Iterator[AgentProcess]:
    a = start_agent(workdir, receiver, libvirt_env).start()
    yield a
    ensure_destroyed(a, VM)
    a.stop()


def migrate_body(lv2: SecondLibvirtd, **extra: object) -> dict[str, object]:
    return {"vmUuid": VM, "destHostIp": "127.0.0.1", "destUri": lv2.uri, "migrationPort": free_port(),
            "unsafe": True, **extra}


def test_cancel_stops_a_migration_and_the_vm_stays(agent: AgentProcess, receiver: CallbackReceiver,
                                                   lv2: SecondLibvirtd, workdir: Path,
                                                   guest_env: dict[str, str]) -> None:
    root = linked_clone(guest_env, workdir / "mig-root.qcow2")
    assert agent.call("/vm/start", vm_body(VM, root))["success"]
    wait_console(console_log(workdir, VM), guest_env["GUEST_MARKER"])
    task = str(uuid.uuid4())
    r = agent.post("/vm/migrate", migrate_body(lv2, bandwidth=1), taskuuid=task,
                   callbackurl=receiver.url + "/v1/agent-callbacks")
    assert r.status_code == 202
    # 128 MiB of guest RAM at 1 MiB/s: still migrating when the progress shows up
    wait_until(lambda: (agent.client.get(f"/tasks/{task}").json().get("progress") or {}).get("total"), 90,
               interval=0.2, what="migration progress")
    assert agent.post(f"/tasks/{task}/cancel").status_code == 200
    reply = receiver.wait_reply(task, 90)
    assert not reply["success"] and reply["error"]["code"] == "CANCELLED", reply
    assert domstate(VM) == "running"
    assert domstate(VM, lv2.uri) == "absent"


def test_live_migration_moves_the_running_guest(agent: AgentProcess, lv2: SecondLibvirtd, workdir: Path,
                                                guest_env: dict[str, str]) -> None:
    reply = agent.call("/vm/migrate", migrate_body(lv2, bandwidth=1000, downtime=300))
    assert reply["success"], reply
    assert domstate(VM, lv2.uri) == "running"
    assert domstate(VM) == "absent"
    assert agent.call("/vm/check-state", {"vmUuids": [VM]})["states"] == {VM: "Stopped"}
    again = agent.call("/vm/migrate", migrate_body(lv2))
    assert again["success"], again  # re-run after success: the VM is already there
    # the guest kept its console log (append='on') and keeps running on the destination
    assert guest_env["GUEST_MARKER"] in console_log(workdir, VM).read_text()
