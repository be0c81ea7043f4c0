"""Anti-spoofing on VM NICs with a real guest (libvirt nwfilter kvmcloud-clean-traffic).

One guest has two NICs on a bridge, with addresses the controller allocated
(DHCP leases from the agent's dnsmasq, and the ``ip`` of each NIC). Once it
has its leases the guest attacks, from inside, as a tenant would:

- eth0 adds an address it was not given (IP spoofing; its ARP replies for it
  are ARP spoofing) and runs a rogue DHCP server (busybox udhcpd);
- eth1 changes its MAC (MAC spoofing).

A peer on the bridge (a namespace standing in for the host side and the
other tenants) checks that the honest address answers and the forged ones do
not, and that it gets no lease from the rogue DHCP server.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kvmagent.conftest import (
    console_log,
    ensure_destroyed,
    in_namespace,
    peer_namespace,
    scripted_guest,
    start_agent,
    virsh,
    vm_body,
    wait_console,
)
from tests.support.agents import AgentProcess, CallbackReceiver

pytestmark = [pytest.mark.libvirt, pytest.mark.netns, pytest.mark.slow]

VM = str(uuid.uuid4())
L3 = str(uuid.uuid4())
TAG = uuid.uuid4().hex[:6]
BRIDGE = "kvf" + TAG
PEER_NS = "kvmcloud-test-peer-" + TAG
MAC0, IP0 = "52:54:00:5f:00:10", "10.251.19.10"
MAC1, IP1 = "52:54:00:5f:00:11", "10.251.19.11"
PEER_IP = "10.251.19.3"
FORGED_IP = "10.251.19.77"
FORGED_MAC = "52:54:00:66:66:66"
READY = "KVMCLOUD-TEST-ATTACKING"

ETH0_ATTACK = f"""
ip addr add {FORGED_IP}/24 dev eth0
mkdir -p /tmp/rogue && touch /tmp/rogue/leases
printf 'start 10.251.19.100\\nend 10.251.19.110\\ninterface eth0\\nlease_file /tmp/rogue/leases\\n\
option subnet 255.255.255.0\\n' > /tmp/rogue/udhcpd.conf
udhcpd /tmp/rogue/udhcpd.conf
echo "{READY} eth0"
"""
ETH1_ATTACK = f"""
ip link set eth1 down
ip link set eth1 address {FORGED_MAC}
ip link set eth1 up
ip addr add "$1/$2" dev eth1 2>/dev/null
echo "{READY} eth1"
"""


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str]) -> Iterator[AgentProcess]:
    a = start_agent(workdir, receiver, libvirt_env).start()
    yield a
    ensure_destroyed(a, VM)
    a.call("/network/dhcp/delete", {"l3NetworkUuid": L3})
    a.call("/network/l2/delete", {"type": "novlan", "bridgeName": BRIDGE})
    a.stop()


@pytest.fixture(scope="module")
def peer(agent: AgentProcess) -> Iterator[str]:
    """A namespace on the bridge at PEER_IP."""
    with peer_namespace(agent, BRIDGE, PEER_NS, f"kvp{TAG}", PEER_IP) as name:
        yield name


@pytest.fixture(scope="module")
def attacker(agent: AgentProcess, peer: str, workdir: Path, guest_env: dict[str, str]) -> Path:
    """The guest, booted and attacking; returns its console log."""
    applied = agent.call("/network/dhcp/apply", {
        "l3NetworkUuid": L3, "bridgeName": BRIDGE, "serverIp": "10.251.19.2", "prefixLength": 24,
        "leases": [{"mac": MAC0, "ip": IP0}, {"mac": MAC1, "ip": IP1}]})
    assert applied["success"], applied
    root = scripted_guest(guest_env, workdir / "spoof-root.raw", {"eth0": ETH0_ATTACK, "eth1": ETH1_ATTACK})
    body = vm_body(VM, root, nics=[{"mac": MAC0, "bridgeName": BRIDGE, "ip": IP0},
                                   {"mac": MAC1, "bridgeName": BRIDGE, "ip": IP1}])
    body["rootVolume"]["format"] = "raw"
    started = agent.call("/vm/start", body)
    assert started["success"], started
    log = console_log(workdir, VM)
    wait_console(log, f"{READY} eth0", timeout=300)
    wait_console(log, f"{READY} eth1", timeout=60)
    return log


def in_peer(*argv: str) -> subprocess.CompletedProcess[str]:
    return in_namespace(PEER_NS, *argv)


def ping(ip: str, count: int = 3) -> bool:
    return in_peer("ping", "-c", str(count), "-W", "2", ip).returncode == 0


def test_libvirt_binds_the_filter_with_the_allocated_ip_to_each_nic(attacker: Path) -> None:
    dom = VM.replace("-", "")
    rows = [line.split() for line in virsh("domiflist", dom).splitlines()]
    taps = {cols[4]: cols[0] for cols in rows if len(cols) == 5}  # Interface Type Source Model MAC
    assert set(taps) == {MAC0, MAC1}
    bindings = dict(line.split() for line in virsh("nwfilter-binding-list").splitlines())
    for mac, ip in ((MAC0, IP0), (MAC1, IP1)):
        assert bindings.get(taps[mac]) == "kvmcloud-clean-traffic", bindings
        xml = virsh("nwfilter-binding-dumpxml", taps[mac])
        assert f"<parameter name='IP' value='{ip}'/>" in xml, xml


def test_the_honest_address_answers(attacker: Path) -> None:
    assert ping(IP0), "the guest's own address must work through the filter"


def test_a_forged_source_ip_and_its_arp_replies_are_dropped(attacker: Path) -> None:
    assert not ping(FORGED_IP, count=2)
    neigh = in_peer("ip", "neigh", "show", FORGED_IP).stdout
    assert MAC0 not in neigh, f"the guest's ARP reply for {FORGED_IP} got through: {neigh}"
    # even told where FORGED_IP is, the peer gets no reply: packets from it are dropped at the tap
    assert in_peer("ip", "neigh", "replace", FORGED_IP, "lladdr", MAC0, "dev", "peer", "nud", "permanent"
                   ).returncode == 0
    assert not ping(FORGED_IP, count=2)
    assert ping(IP0), "the same NIC's honest address still works"


def test_a_nic_with_a_forged_mac_is_cut_off(attacker: Path) -> None:
    assert not ping(IP1, count=2)
    neigh = in_peer("ip", "neigh", "show", IP1).stdout
    assert FORGED_MAC not in neigh, neigh


def test_a_dhcp_server_in_the_guest_hands_out_nothing(attacker: Path) -> None:
    # the agent's dnsmasq answers only its known MACs, so any lease here would be the rogue's
    r = in_peer("busybox", "udhcpc", "-i", "peer", "-n", "-q", "-f", "-t", "4", "-T", "2", "-s", "/bin/true")
    assert r.returncode != 0, f"the peer got a lease from the guest's DHCP server: {r.stdout}{r.stderr}"
