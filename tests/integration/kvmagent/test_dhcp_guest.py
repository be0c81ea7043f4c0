"""Flat-network DHCP end to end: a guest on a bridge asks by DHCP (busybox
udhcpc) and gets exactly the address the controller allocated (its lease
added to the running server) from the agent's dnsmasq (running as user dnsmasq); the host reaches it from the DHCP
namespace; the DHCP server survives an agent restart (kill -9)."""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kvmagent.conftest import (
    console_log,
    ensure_destroyed,
    linked_clone,
    start_agent,
    vm_body,
    wait_console,
)
from tests.support.agents import AgentProcess, CallbackReceiver

pytestmark = [pytest.mark.libvirt, pytest.mark.netns, pytest.mark.slow]

VM = str(uuid.uuid4())
L3 = str(uuid.uuid4())
BRIDGE = "kvd" + uuid.uuid4().hex[:8]
MAC = "52:54:00:d4:c0:01"
IP = "10.251.17.50"


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str]) -> Iterator[AgentProcess]:
    a = start_agent(workdir, receiver, libvirt_env).start()
    yield a
    ensure_destroyed(a, VM)
    a.call("/network/dhcp/delete", {"l3NetworkUuid": L3})
    a.call("/network/l2/delete", {"type": "novlan", "bridgeName": BRIDGE})
    a.stop()


def dhcp_body(leases: list[dict[str, str]]) -> dict[str, object]:
    return {"l3NetworkUuid": L3, "bridgeName": BRIDGE, "serverIp": "10.251.17.2", "prefixLength": 24,
            "dnsDomain": "kvmcloud.test", "leases": leases}


def test_a_guest_gets_its_allocated_address_and_answers_ping(agent: AgentProcess, workdir: Path,
                                                              guest_env: dict[str, str]) -> None:
    assert agent.call("/network/l2/create", {"type": "novlan", "bridgeName": BRIDGE})["success"]
    applied = agent.call("/network/dhcp/apply", dhcp_body([{"mac": "52:54:00:d4:c0:09", "ip": "10.251.17.9"}]))
    assert applied["success"] and applied["leases"] == 1, applied
    # the guest's lease comes as an add: appended to the hosts file, reread on SIGHUP
    added = agent.call("/network/dhcp/add", {"l3NetworkUuid": L3, "leases": [
        {"mac": MAC, "ip": IP, "hostname": "vm1"}]})
    assert added["success"] and added["leases"] == 2 and added["pid"] == applied["pid"], added
    root = linked_clone(guest_env, workdir / "dhcp-root.qcow2")
    started = agent.call("/vm/start", vm_body(VM, root, nics=[{"mac": MAC, "bridgeName": BRIDGE}]))
    assert started["success"], started
    wait_console(console_log(workdir, VM), f"{guest_env['GUEST_IP_MARKER']} eth0 {IP}\n", timeout=240)
    ping = subprocess.run(["ip", "netns", "exec", applied["namespace"], "ping", "-c", "3", "-W", "2", IP],
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    workdir_ = Path(agent.state_dir) / "dhcp" / L3.replace("-", "")
    leases = (workdir_ / "leases").read_text()
    assert MAC in leases and IP in leases
    # dnsmasq faces the guests: it runs as an unprivileged user, and logs no line per DHCP packet
    uid = next(line.split()[1] for line in Path(f"/proc/{applied['pid']}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    assert uid == str(pwd.getpwnam("dnsmasq").pw_uid)
    assert "DHCPACK" not in (workdir_ / "dnsmasq.log").read_text()


def test_an_agent_restart_keeps_identity_vms_and_the_dhcp_server(agent: AgentProcess,
                                                                   receiver: CallbackReceiver) -> None:
    host = str(uuid.uuid4())
    assert agent.call("/host/connect", {"hostUuid": host, "eventsUrl": f"{receiver.url}/v1/agent-events/{host}"})[
        "success"]
    before = agent.call("/network/dhcp/apply", dhcp_body([{"mac": MAC, "ip": IP, "hostname": "vm1"}]))
    agent.kill9()
    os.kill(before["pid"], 0)  # dnsmasq is a daemon of its own: still there
    agent.start()
    assert agent.call("/host/ping")["hostUuid"] == host  # who it is survives (state_dir/host.json)
    assert agent.call("/vm/sync")["states"][VM] == "Running"  # found again through the domain metadata
    after = agent.call("/network/dhcp/apply", dhcp_body([{"mac": MAC, "ip": IP, "hostname": "vm1"}]))
    assert after["success"] and after["pid"] == before["pid"]
    released = agent.call("/network/dhcp/release", {"l3NetworkUuid": L3, "macs": [MAC]})
    assert released["success"] and released["leases"] == 0
    hosts = Path(f"/run/kvmcloud/dhcp/{after['namespace']}.hosts").read_text()
    assert MAC not in hosts


def test_delete_stops_dnsmasq_and_removes_the_namespace(agent: AgentProcess) -> None:
    applied = agent.call("/network/dhcp/apply", dhcp_body([]))
    assert agent.call("/network/dhcp/delete", {"l3NetworkUuid": L3})["success"]
    assert not Path(f"/run/netns/{applied['namespace']}").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(applied["pid"], 0)
    assert agent.call("/network/dhcp/delete", {"l3NetworkUuid": L3})["success"]


def test_a_namespace_removed_under_a_running_dnsmasq_is_made_again(agent: AgentProcess) -> None:
    """What a host's clean-up that removed the namespace but missed dnsmasq (and its pid file)
    leaves: the old dnsmasq holds the old namespace and the veth's inner end; the next apply
    stops that dnsmasq and plumbs a new pair into a new namespace."""
    assert agent.call("/network/l2/create", {"type": "novlan", "bridgeName": BRIDGE})["success"]
    before = agent.call("/network/dhcp/apply", dhcp_body([{"mac": MAC, "ip": IP}]))
    subprocess.run(["ip", "netns", "del", before["namespace"]], check=True)
    (Path(agent.state_dir) / "dhcp" / L3.replace("-", "") / "dnsmasq.pid").unlink()
    os.kill(before["pid"], 0)  # still running, in a namespace nobody can name

    after = agent.call("/network/dhcp/apply", dhcp_body([{"mac": MAC, "ip": IP}]))
    assert after["success"] and after["pid"] != before["pid"], after
    with pytest.raises(ProcessLookupError):
        os.kill(before["pid"], 0)
    addr = subprocess.run(["ip", "-n", after["namespace"], "-o", "-4", "addr", "show"], capture_output=True,
                          text=True, check=True).stdout
    assert "10.251.17.2/24" in addr, addr
    assert agent.call("/network/dhcp/delete", {"l3NetworkUuid": L3})["success"]
