"""Live migration between two libvirtds on this machine: the system one and a
second one with its own host UUID in a private mount namespace (libvirt2.py).
The disks sit on one filesystem both can see, as on shared primary storage;
libvirt cannot tell that a plain directory is shared, hence ``unsafe``.

The migration goes as in production: over SSH (libvirt's libssh transport) to an
sshd in front of the second libvirtd on 127.0.0.2, with the migration key that
sshd authorizes for virt-ssh-helper only, and its host key checked; the guest's
memory is tunnelled through it. The second libvirtd listens on no TCP port."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kvmagent.conftest import (
    KVMAGENT,
    console_log,
    domstate,
    ensure_destroyed,
    linked_clone,
    vm_body,
    wait_console,
)
from tests.integration.kvmagent.libvirt2 import MigrationSshd, SecondLibvirtd
from tests.support.agents import AgentProcess, CallbackReceiver, free_port, wait_until

pytestmark = [pytest.mark.libvirt, pytest.mark.slow]

VM = str(uuid.uuid4())
DEST = "127.0.0.2"  # the second libvirtd's sshd: a "remote" host's address


@pytest.fixture(scope="module")
def lv2(workdir: Path) -> Iterator[SecondLibvirtd]:
    lv = SecondLibvirtd(workdir / "lv2").start()
    try:
        lv.start_sshd(DEST, free_port())
        yield lv
    finally:
        lv.stop()


def sshd_of(lv: SecondLibvirtd) -> MigrationSshd:
    assert lv.sshd is not None
    return lv.sshd


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str],
          lv2: SecondLibvirtd) -> Iterator[AgentProcess]:
    """A kvmagent configured as the kvmagent role configures one (migration_transport = "ssh")."""
    sshd = sshd_of(lv2)
    home = workdir / "agent"
    home.mkdir(exist_ok=True)
    a = AgentProcess(KVMAGENT, home, controller_urls=[receiver.url], extra={
        "libvirt_uri": libvirt_env["LIBVIRT_URI"], "domain_type": libvirt_env["LIBVIRT_DOMAIN_TYPE"],
        "storage_roots": [str(workdir)], "console_dir": workdir / "console",
        "migration_ssh_key": sshd.key, "migration_known_hosts": sshd.known_hosts,
        "migration_ssh_port": sshd.port,
    }).start()
    yield a
    ensure_destroyed(a, VM)
    a.stop()


def migrate_body(**extra: object) -> dict[str, object]:
    return {"vmUuid": VM, "destHostIp": DEST, "unsafe": True, **extra}


def test_cancel_stops_a_migration_and_the_vm_stays(agent: AgentProcess, receiver: CallbackReceiver,
                                                   lv2: SecondLibvirtd, workdir: Path,
                                                   guest_env: dict[str, str]) -> None:
    root = linked_clone(guest_env, workdir / "mig-root.qcow2")
    assert agent.call("/vm/start", vm_body(VM, root))["success"]
    wait_console(console_log(workdir, VM), guest_env["GUEST_MARKER"])
    task = str(uuid.uuid4())
    r = agent.post("/vm/migrate", migrate_body(bandwidth=1), taskuuid=task,
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


def test_plain_tcp_is_refused(agent: AgentProcess, lv2: SecondLibvirtd) -> None:
    reply = agent.call("/vm/migrate", migrate_body(destUri=f"qemu+tcp://{DEST}/system"))
    assert not reply["success"] and reply["error"]["code"] == "MIGRATION_FAILED", reply
    assert "no authentication" in reply["error"]["message"]
    assert domstate(VM) == "running" and domstate(VM, lv2.uri) == "absent"


@pytest.mark.parametrize("verify", ["no_verify=1", "known_hosts_verify=auto", "known_hosts_verify=ignore"])
def test_a_uri_that_skips_the_host_key_check_is_refused(agent: AgentProcess, lv2: SecondLibvirtd,
                                                        verify: str) -> None:
    sshd = sshd_of(lv2)
    uri = f"qemu+libssh://root@{DEST}:{sshd.port}/system?keyfile={sshd.key}&{verify}"
    reply = agent.call("/vm/migrate", migrate_body(destUri=uri))
    assert not reply["success"] and "host key must be checked" in reply["error"]["message"], reply
    assert domstate(VM) == "running"


def test_an_unknown_destination_host_key_fails_the_migration(agent: AgentProcess, lv2: SecondLibvirtd,
                                                             workdir: Path) -> None:
    sshd = sshd_of(lv2)
    (workdir / "empty_known_hosts").write_text("")
    uri = (f"qemu+libssh://root@{DEST}:{sshd.port}/system?keyfile={sshd.key}"
           f"&known_hosts={workdir / 'empty_known_hosts'}&known_hosts_verify=normal&sshauth=privkey")
    reply = agent.call("/vm/migrate", migrate_body(destUri=uri))
    assert not reply["success"] and reply["error"]["code"] == "MIGRATION_FAILED", reply
    assert "host key" in reply["error"]["message"], reply
    assert domstate(VM) == "running" and domstate(VM, lv2.uri) == "absent"


def test_the_migration_key_opens_no_shell(lv2: SecondLibvirtd) -> None:
    sshd = sshd_of(lv2)
    r = subprocess.run(["ssh", "-T", "-i", str(sshd.key), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-p", str(sshd.port),
                        f"root@{DEST}", "id"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "uid=" not in r.stdout, r.stdout  # the forced command ran, not "id"
    assert "virt-ssh-helper" in r.stderr, r.stderr


def test_live_migration_moves_the_running_guest(agent: AgentProcess, lv2: SecondLibvirtd, workdir: Path,
                                                guest_env: dict[str, str]) -> None:
    sshd_log = lv2.base / "sshd" / "sshd.log"
    logins = sshd_log.read_text().count("Accepted publickey for root")
    reply = agent.call("/vm/migrate", migrate_body(bandwidth=1000, downtime=300))
    assert reply["success"], reply
    # it went through the sshd, with the migration key (the second libvirtd listens on no port)
    assert sshd_log.read_text().count("Accepted publickey for root") > logins
    assert domstate(VM, lv2.uri) == "running"
    assert domstate(VM) == "absent"
    assert agent.call("/vm/check-state", {"vmUuids": [VM]})["states"] == {VM: "Stopped"}
    again = agent.call("/vm/migrate", migrate_body())
    assert again["success"], again  # re-run after success: the VM is already there
    # the guest kept its console log (append='on') and keeps running on the destination
    assert guest_env["GUEST_MARKER"] in console_log(workdir, VM).read_text()
