"""L2 networks on the real kernel, inside network namespaces this test creates.

Bridges and VXLAN are real here (a VXLAN overlay between two namespaces
carries pings through the bridges). This kernel has no 802.1Q VLAN devices
(CONFIG_VLAN_8021Q is unset), so a VLAN network is checked to fail cleanly
with the kernel's refusal; the VLAN netlink requests themselves are tested in
tests/unit/kvmagent/test_l2.py.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute, netns

from kvmagent.l2 import MARK, L2Networks, Netlink, NetworkFailed
from kvmagent.models import L2NetworkCmd

pytestmark = pytest.mark.netns


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth underlay: 10.77.0.1 <-> 10.77.0.2 on 'under'."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"kvt-a-{tag}", f"kvt-b-{tag}"
    netns.create(a)
    netns.create(b)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=f"kvu{tag}a", kind="veth", peer=f"kvu{tag}b")
            ipr.link("set", index=ipr.link_lookup(ifname=f"kvu{tag}a")[0], net_ns_fd=a)
            ipr.link("set", index=ipr.link_lookup(ifname=f"kvu{tag}b")[0], net_ns_fd=b)
        for ns, end, addr in ((a, "a", "10.77.0.1"), (b, "b", "10.77.0.2")):
            with IPRoute(netns=ns) as ipr:
                idx = ipr.link_lookup(ifname=f"kvu{tag}{end}")[0]
                ipr.link("set", index=idx, ifname="under")
                ipr.addr("add", index=idx, address=addr, prefixlen=24)
                ipr.link("set", index=idx, state="up")
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield a, b
    finally:
        netns.remove(a)
        netns.remove(b)


def links(ns: str) -> dict[str, str | None]:
    with IPRoute(netns=ns) as ipr:
        return {m.get_attr("IFLA_IFNAME"): m.get_attr("IFLA_IFALIAS") for m in ipr.get_links()}


def in_ns(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30)


def test_a_novlan_bridge_enslaves_the_uplink_and_delete_leaves_the_uplink(two_hosts: tuple[str, str]) -> None:
    a, _ = two_hosts
    l2 = L2Networks(Netlink(a))
    cmd = L2NetworkCmd(type="novlan", bridge_name="br_under", physical_interface="under")
    l2.create(cmd)
    l2.create(cmd)  # idempotent
    assert l2.check(cmd)
    assert links(a)["br_under"] == MARK + "br_under"
    assert "master br_under" in in_ns(a, "ip", "link", "show", "under").stdout
    l2.delete(cmd)
    assert "br_under" not in links(a)
    assert "under" in links(a)  # the operator's uplink is never removed
    assert not l2.check(cmd)


def test_a_vxlan_overlay_with_static_peers_carries_traffic(two_hosts: tuple[str, str]) -> None:
    a, b = two_hosts
    for ns, me, peer, addr in ((a, "10.77.0.1", "10.77.0.2", "10.78.0.1"), (b, "10.77.0.2", "10.77.0.1", "10.78.0.2")):
        cmd = L2NetworkCmd(type="vxlan", bridge_name="br_vx42", vni=42, vtep_ip=me, peers=[peer],
                           physical_interface="under")
        L2Networks(Netlink(ns)).create(cmd)
        L2Networks(Netlink(ns)).create(cmd)
        assert L2Networks(Netlink(ns)).check(cmd)
        assert "vxlan id 42" in in_ns(ns, "ip", "-d", "link", "show", "vxlan42").stdout
        assert f"dst {peer}" in in_ns(ns, "bridge", "fdb", "show", "dev", "vxlan42").stdout
        with IPRoute(netns=ns) as ipr:  # an address on the bridge stands in for a VM port
            ipr.addr("add", index=ipr.link_lookup(ifname="br_vx42")[0], address=addr, prefixlen=24)
    ping = in_ns(a, "ping", "-c", "2", "-W", "2", "10.78.0.2")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    cmd = L2NetworkCmd(type="vxlan", bridge_name="br_vx42", vni=42, vtep_ip="10.77.0.1", peers=[])
    L2Networks(Netlink(a)).delete(cmd)
    assert "vxlan42" not in links(a) and "br_vx42" not in links(a)


def test_a_vtep_address_moved_is_followed_by_both_ends(two_hosts: tuple[str, str]) -> None:
    """What the controller sends after an operator changes a host's vtepIp and reconnects it."""
    a, b = two_hosts
    ends = ((a, "10.77.0.1", "10.77.0.2", "10.78.0.1"), (b, "10.77.0.2", "10.77.0.1", "10.78.0.2"))
    for ns, me, peer, addr in ends:
        L2Networks(Netlink(ns)).create(L2NetworkCmd(type="vxlan", bridge_name="br_vx43", vni=43, vtep_ip=me,
                                                    peers=[peer], physical_interface="under"))
        with IPRoute(netns=ns) as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="br_vx43")[0], address=addr, prefixlen=24)
    with IPRoute(netns=a) as ipr:
        ipr.addr("add", index=ipr.link_lookup(ifname="under")[0], address="10.77.0.11", prefixlen=24)
    L2Networks(Netlink(a)).create(L2NetworkCmd(type="vxlan", bridge_name="br_vx43", vni=43, vtep_ip="10.77.0.11",
                                               peers=["10.77.0.2"], physical_interface="under"))
    L2Networks(Netlink(b)).create(L2NetworkCmd(type="vxlan", bridge_name="br_vx43", vni=43, vtep_ip="10.77.0.2",
                                               peers=["10.77.0.11"], physical_interface="under"))
    assert "local 10.77.0.11" in in_ns(a, "ip", "-d", "link", "show", "vxlan43").stdout
    assert "master br_vx43" in in_ns(a, "ip", "link", "show", "vxlan43").stdout
    fdb_b = in_ns(b, "bridge", "fdb", "show", "dev", "vxlan43").stdout
    assert "dst 10.77.0.11" in fdb_b and "dst 10.77.0.1 " not in fdb_b
    ping = in_ns(a, "ping", "-c", "2", "-W", "2", "10.78.0.2")
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_vlan_fails_cleanly_on_a_kernel_without_8021q(two_hosts: tuple[str, str]) -> None:
    a, _ = two_hosts
    cmd = L2NetworkCmd(type="vlan", bridge_name="br_under_100", physical_interface="under", vlan_id=100)
    with pytest.raises(NetworkFailed) as err:
        L2Networks(Netlink(a)).create(cmd)
    assert err.value.details["request"]["kind"] == "vlan"
    assert err.value.details["request"]["vlan_id"] == "100"
    L2Networks(Netlink(a)).delete(cmd)
    assert "br_under_100" not in links(a)
