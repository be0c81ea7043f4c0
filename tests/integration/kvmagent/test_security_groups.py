"""Security groups on real guests (libvirt nwfilter, kvmagent.secgroups).

The guest serves HTTP on ports 8080 and 9090 (busybox httpd). Its NIC is in
a group that allows TCP 8080 from anywhere. A peer on the bridge (a
namespace standing in for another tenant) finds 8080 open, 9090 and ping
closed although something listens there; the group then gains rules for 9090
from the peer's address and for ICMP, and both answer at once, without a
reboot; the NIC leaves all groups and everything answers; it joins again and
the rules hold again. A second guest on the bridge, in a group of its own,
probes the first from inside every second (its console shows the answers):
it reaches 8080 but not 9090, then 9090 too once a rule allows its address
(the peer, another address, still does not), and nothing once its own group
loses its egress rule. Destroying a VM removes its NIC filter, and deleting
the group its filter.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
CLIENT = str(uuid.uuid4())
L3 = str(uuid.uuid4())
GROUP = str(uuid.uuid4())
CLIENT_GROUP = str(uuid.uuid4())
TAG = uuid.uuid4().hex[:6]
BRIDGE = "kvs" + TAG
PEER_NS = "kvmcloud-test-sg-" + TAG
MAC, IP = "52:54:00:5f:01:10", "10.251.21.10"
CLIENT_MAC, CLIENT_IP = "52:54:00:5f:01:11", "10.251.21.11"
PEER_IP = "10.251.21.3"
READY = "KVMCLOUD-TEST-SERVING"
NIC_FILTER = "kvmcloud-nic-5254005f0110"

SERVE = f"""
mkdir -p /www && echo open > /www/index.html
httpd -p 8080 -h /www
httpd -p 9090 -h /www
echo "{READY} $1"
"""

PROBE = "KVMCLOUD-TEST-PROBE"
PROBING = f"""
i=0
while true; do
  i=$((i+1))
  for p in 8080 9090; do
    if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {IP} $p | grep -q open; then r=open; else r=closed; fi
    echo "{PROBE} $i $p $r"
  done
  sleep 1
done
"""

WEB = {"direction": "ingress", "protocol": "tcp", "portStart": 8080}
FROM_PEER = {"direction": "ingress", "protocol": "tcp", "portStart": 9090, "cidr": f"{PEER_IP}/32"}
ICMP = {"direction": "ingress", "protocol": "icmp"}
EGRESS = {"direction": "egress", "protocol": "all"}


def group(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"uuid": GROUP, "rules": [EGRESS, *rules]}


@pytest.fixture(scope="module")
def agent(workdir: Path, receiver: CallbackReceiver, libvirt_env: dict[str, str]) -> Iterator[AgentProcess]:
    a = start_agent(workdir, receiver, libvirt_env).start()
    yield a
    ensure_destroyed(a, VM)
    ensure_destroyed(a, CLIENT)
    a.call("/network/security-groups/delete", {"groupUuids": [GROUP, CLIENT_GROUP]})
    a.call("/network/dhcp/delete", {"l3NetworkUuid": L3})
    a.call("/network/l2/delete", {"type": "novlan", "bridgeName": BRIDGE})
    a.stop()


@pytest.fixture(scope="module")
def peer(agent: AgentProcess) -> Iterator[str]:
    """A namespace on the bridge at PEER_IP."""
    with peer_namespace(agent, BRIDGE, PEER_NS, f"kvs{TAG}", PEER_IP) as name:
        yield name


@pytest.fixture(scope="module")
def server(agent: AgentProcess, peer: str, workdir: Path, guest_env: dict[str, str]) -> Path:
    """The guest, booted with its NIC in the group and serving; returns its console log."""
    applied = agent.call("/network/dhcp/apply", {
        "l3NetworkUuid": L3, "bridgeName": BRIDGE, "serverIp": "10.251.21.2", "prefixLength": 24,
        "leases": [{"mac": MAC, "ip": IP}, {"mac": CLIENT_MAC, "ip": CLIENT_IP}]})
    assert applied["success"], applied
    root = scripted_guest(guest_env, workdir / "sg-root.raw", {"eth0": SERVE})
    body = vm_body(VM, root, nics=[{"mac": MAC, "bridgeName": BRIDGE, "ip": IP, "securityGroups": [GROUP]}],
                   securityGroups=[group(WEB)])
    body["rootVolume"]["format"] = "raw"
    started = agent.call("/vm/start", body)
    assert started["success"], started
    log = console_log(workdir, VM)
    wait_console(log, f"{READY} {IP}", timeout=300)
    return log


@pytest.fixture(scope="module")
def client(agent: AgentProcess, server: Path, workdir: Path, guest_env: dict[str, str]) -> Path:
    """The second guest, in a group allowing only egress, probing the first; its console log."""
    root = scripted_guest(guest_env, workdir / "sg-client.raw", {"eth0": PROBING})
    body = vm_body(CLIENT, root, nics=[{"mac": CLIENT_MAC, "bridgeName": BRIDGE, "ip": CLIENT_IP,
                                        "securityGroups": [CLIENT_GROUP]}],
                   securityGroups=[{"uuid": CLIENT_GROUP, "rules": [EGRESS]}])
    body["rootVolume"]["format"] = "raw"
    started = agent.call("/vm/start", body)
    assert started["success"], started
    log = console_log(workdir, CLIENT)
    wait_console(log, f"{PROBE} 2 9090", timeout=300)
    return log


def probe(log: Path, port: int) -> str:
    """What the client sees on ``port`` in a round that started after this call."""
    def rounds() -> list[tuple[int, int, str]]:
        out = []
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == PROBE:
                out.append((int(parts[1]), int(parts[2]), parts[3]))
        return out
    first = max((n for n, _, _ in rounds()), default=0) + 1  # the round under way may predate the change
    wait_console(log, f"{PROBE} {first + 1} {port} ", timeout=60)
    return next(state for n, p, state in rounds() if n == first + 1 and p == port)


def in_peer(*argv: str) -> subprocess.CompletedProcess[str]:
    return in_namespace(PEER_NS, *argv)


def answers(port: int) -> bool:
    r = in_peer("curl", "-s", "-m", "3", f"http://{IP}:{port}/")
    return r.returncode == 0 and r.stdout.strip() == "open"


def pings() -> bool:
    return in_peer("ping", "-c", "2", "-W", "2", IP).returncode == 0


def apply(agent: AgentProcess, groups: list[dict[str, Any]], nic_groups: list[str] | None = None) -> None:
    body: dict[str, Any] = {"groups": groups}
    if nic_groups is not None:
        body["nics"] = [{"vmUuid": VM, "mac": MAC, "ip": IP, "securityGroups": nic_groups}]
    reply = agent.call("/network/security-groups/apply", body)
    assert reply["success"], reply


def test_the_nic_is_bound_to_its_own_filter_with_its_address(server: Path) -> None:
    bindings = dict(line.split() for line in virsh("nwfilter-binding-list").splitlines())
    assert NIC_FILTER in bindings.values(), bindings
    tap = next(t for t, f in bindings.items() if f == NIC_FILTER)
    assert f"<parameter name='IP' value='{IP}'/>" in virsh("nwfilter-binding-dumpxml", tap)


def test_only_the_allowed_port_answers(server: Path) -> None:
    assert answers(8080)
    assert not answers(9090), "9090 has a listener but no rule: it must not answer"
    assert not pings()


def test_new_rules_take_effect_on_the_running_guest(agent: AgentProcess, server: Path) -> None:
    apply(agent, [group(WEB, FROM_PEER, ICMP)])
    assert answers(9090)
    assert pings()
    assert answers(8080)


def test_leaving_every_group_opens_the_nic_and_joining_closes_it_again(agent: AgentProcess, server: Path) -> None:
    apply(agent, [group(WEB)], nic_groups=[])
    assert answers(9090) and pings()
    apply(agent, [group(WEB)], nic_groups=[GROUP])
    assert not answers(9090) and not pings()
    assert answers(8080)


def test_a_second_guest_reaches_what_the_group_allows_it(agent: AgentProcess, client: Path) -> None:
    assert probe(client, 8080) == "open"
    assert probe(client, 9090) == "closed"
    apply(agent, [group(WEB, {**FROM_PEER, "cidr": f"{CLIENT_IP}/32"})])
    assert probe(client, 9090) == "open"
    assert not answers(9090), "the rule allows the client's address, not the peer's"


def test_a_group_without_egress_rules_cuts_its_guest_off(agent: AgentProcess, client: Path) -> None:
    apply(agent, [{"uuid": CLIENT_GROUP, "rules": []}])
    assert probe(client, 8080) == "closed"
    apply(agent, [{"uuid": CLIENT_GROUP, "rules": [EGRESS]}])
    assert probe(client, 8080) == "open"


def test_a_group_in_use_is_not_deleted(agent: AgentProcess, server: Path) -> None:
    reply = agent.call("/network/security-groups/delete", {"groupUuids": [GROUP]})
    assert not reply["success"] and reply["error"]["code"] == "CONFLICT", reply
    assert answers(8080)


def test_destroy_removes_the_nic_filter_and_then_the_group_can_go(agent: AgentProcess, server: Path) -> None:
    assert agent.call("/vm/destroy", {"vmUuid": VM})["success"]
    names = virsh("nwfilter-list")
    assert NIC_FILTER not in names
    assert f"kvmcloud-sg-{GROUP}" in names
    assert agent.call("/network/security-groups/delete", {"groupUuids": [GROUP]})["success"]
    assert f"kvmcloud-sg-{GROUP}" not in virsh("nwfilter-list")
