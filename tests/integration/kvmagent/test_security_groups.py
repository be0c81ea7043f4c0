"""Security groups on a real guest (libvirt nwfilter, kvmagent.secgroups).

The guest serves HTTP on ports 8080 and 9090 (busybox httpd). Its NIC is in
a group that allows TCP 8080 from anywhere. A peer on the bridge (a
namespace standing in for another tenant) finds 8080 open, 9090 and ping
closed although something listens there; the group then gains rules for 9090
from the peer's address and for ICMP, and both answer at once, without a
reboot; the NIC leaves all groups and everything answers; it joins again and
the rules hold again; the rule is removed and 9090 closes. Destroying the VM
removes its NIC filter, and deleting the group its filter.
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
L3 = str(uuid.uuid4())
GROUP = str(uuid.uuid4())
TAG = uuid.uuid4().hex[:6]
BRIDGE = "kvs" + TAG
PEER_NS = "kvmcloud-test-sg-" + TAG
MAC, IP = "52:54:00:5f:01:10", "10.251.21.10"
PEER_IP = "10.251.21.3"
READY = "KVMCLOUD-TEST-SERVING"
NIC_FILTER = "kvmcloud-nic-5254005f0110"

SERVE = f"""
mkdir -p /www && echo open > /www/index.html
httpd -p 8080 -h /www
httpd -p 9090 -h /www
echo "{READY} $1"
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
    a.call("/network/security-groups/delete", {"groupUuids": [GROUP]})
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
        "leases": [{"mac": MAC, "ip": IP}]})
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
