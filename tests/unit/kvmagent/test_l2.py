"""L2 networks at the level of the netlink requests they make.

This machine's kernel has no 802.1Q VLAN devices, so VLAN networks are tested
here, by the requests the code would send; bridges and VXLAN are also tested
against the real kernel in tests/integration/kvmagent/test_network.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agentcore.errors import Conflict, NotFound
from kvmagent.l2 import MARK, ZERO_MAC, L2Networks, Link, Netlink
from kvmagent.models import L2NetworkCmd


class RecordingNetlink(Netlink):
    """An in-memory kernel that records every request."""

    def __init__(self, links: dict[str, Link] | None = None) -> None:
        super().__init__()
        self.links: dict[str, Link] = dict(links or {})
        self.fdbs: dict[int, set[str]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._next = 100

    def find(self, name: str) -> Link | None:
        return self.links.get(name)

    def _by_index(self, index: int) -> Link:
        return next(link for link in self.links.values() if link.index == index)

    def link(self, command: str, **request: Any) -> None:
        self.requests.append(("link", command, request))
        if command == "add":
            self._next += 1
            self.links[request["ifname"]] = Link(self._next, request["ifname"], request["kind"], None, None,
                                                 vlan_id=request.get("vlan_id"), vni=request.get("vxlan_id"),
                                                 vxlan_local=request.get("vxlan_local"),
                                                 vxlan_port=request.get("vxlan_port"))
        elif command == "set":
            old = self._by_index(request["index"])
            self.links[old.name] = replace(old, alias=request.get("ifalias", old.alias),
                                           master=request.get("master", old.master))
        elif command == "del":
            del self.links[self._by_index(request["index"]).name]

    def fdb(self, command: str, **request: Any) -> None:
        self.requests.append(("fdb", command, request))
        peers = self.fdbs.setdefault(request["ifindex"], set())
        (peers.add if command == "append" else peers.discard)(request["dst"])

    def fdb_destinations(self, index: int) -> set[str]:
        return set(self.fdbs.get(index, set()))

    def adds(self) -> list[dict[str, Any]]:
        return [r for kind, cmd, r in self.requests if kind == "link" and cmd == "add"]


ETH0 = Link(2, "eth0", None, None, None)


def test_a_vlan_network_is_a_vlan_subinterface_enslaved_to_a_bridge() -> None:
    nl = RecordingNetlink({"eth0": ETH0})
    cmd = L2NetworkCmd(type="vlan", bridge_name="br_eth0_100", physical_interface="eth0", vlan_id=100)
    bridge = L2Networks(nl).create(cmd)
    assert nl.adds() == [
        {"ifname": "br_eth0_100", "kind": "bridge"},
        {"ifname": "eth0.100", "kind": "vlan", "link": 2, "vlan_id": 100},
    ]
    vlan = nl.links["eth0.100"]
    assert vlan.master == bridge.index and vlan.alias == MARK + "br_eth0_100"
    assert ("link", "set", {"index": vlan.index, "state": "up"}) in nl.requests
    assert L2Networks(nl).check(cmd)


def test_create_is_idempotent() -> None:
    nl = RecordingNetlink({"eth0": ETH0})
    cmd = L2NetworkCmd(type="vlan", bridge_name="br_eth0_100", physical_interface="eth0", vlan_id=100)
    L2Networks(nl).create(cmd)
    n = len(nl.adds())
    L2Networks(nl).create(cmd)
    assert len(nl.adds()) == n


def test_a_vlan_device_with_another_id_is_a_conflict() -> None:
    nl = RecordingNetlink({"eth0": ETH0, "eth0.100": Link(7, "eth0.100", "vlan", None, None, vlan_id=200)})
    with pytest.raises(Conflict):
        L2Networks(nl).create(L2NetworkCmd(type="vlan", bridge_name="b", physical_interface="eth0", vlan_id=100))


def test_a_missing_uplink_is_not_found() -> None:
    with pytest.raises(NotFound):
        L2Networks(RecordingNetlink()).create(
            L2NetworkCmd(type="vlan", bridge_name="b", physical_interface="eth9", vlan_id=5))


def test_vxlan_gets_vni_vtep_and_one_fdb_entry_per_peer() -> None:
    nl = RecordingNetlink()
    cmd = L2NetworkCmd(type="vxlan", bridge_name="br_vx42", vni=42, vtep_ip="10.0.0.1",
                       peers=["10.0.0.2", "10.0.0.3"])
    L2Networks(nl).create(cmd)
    assert nl.adds()[1] == {"ifname": "vxlan42", "kind": "vxlan", "vxlan_id": 42, "vxlan_local": "10.0.0.1",
                            "vxlan_port": 4789, "vxlan_learning": 0}
    vx = nl.links["vxlan42"]
    assert nl.fdbs[vx.index] == {"10.0.0.2", "10.0.0.3"}
    # the peer set follows the command: one peer removed, one added
    L2Networks(nl).create(cmd.model_copy(update={"peers": ["10.0.0.3", "10.0.0.4"]}))
    assert nl.fdbs[vx.index] == {"10.0.0.3", "10.0.0.4"}
    assert ("fdb", "del", {"ifindex": vx.index, "lladdr": ZERO_MAC, "dst": "10.0.0.2"}) in nl.requests


def test_a_new_vtep_address_remakes_our_vxlan_device_with_its_peers() -> None:
    nl = RecordingNetlink()
    cmd = L2NetworkCmd(type="vxlan", bridge_name="br_vx42", vni=42, vtep_ip="10.0.0.1", peers=["10.0.0.2"])
    bridge = L2Networks(nl).create(cmd)
    old = nl.links["vxlan42"]
    L2Networks(nl).create(cmd)  # the same address: left as it is
    assert nl.links["vxlan42"] == old
    L2Networks(nl).create(cmd.model_copy(update={"vtep_ip": "10.0.1.1"}))
    assert ("link", "del", {"index": old.index}) in nl.requests
    new = nl.links["vxlan42"]
    assert (new.vxlan_local, new.master, new.alias) == ("10.0.1.1", bridge.index, MARK + "br_vx42")
    assert nl.fdbs[new.index] == {"10.0.0.2"}


def test_a_foreign_vxlan_device_with_another_address_is_a_conflict() -> None:
    nl = RecordingNetlink({"vxlan42": Link(7, "vxlan42", "vxlan", None, None, vni=42,
                                           vxlan_local="10.9.9.9", vxlan_port=4789)})
    with pytest.raises(Conflict):
        L2Networks(nl).create(L2NetworkCmd(type="vxlan", bridge_name="br_vx42", vni=42, vtep_ip="10.0.0.1"))
    assert "vxlan42" in nl.links


def test_delete_removes_only_what_kvmcloud_created() -> None:
    operator_bridge = Link(3, "br_mine", "bridge", "operator's", None)
    nl = RecordingNetlink({"eth0": ETH0, "br_mine": operator_bridge})
    cmd = L2NetworkCmd(type="vlan", bridge_name="br_mine", physical_interface="eth0", vlan_id=9)
    L2Networks(nl).create(cmd)  # reuses the operator's bridge, adds eth0.9
    L2Networks(nl).delete(cmd)
    assert "br_mine" in nl.links and "eth0" in nl.links
    assert "eth0.9" not in nl.links
    L2Networks(nl).delete(cmd)  # absent is fine


def test_a_non_bridge_with_the_bridge_name_is_a_conflict() -> None:
    nl = RecordingNetlink({"br0": Link(5, "br0", "veth", None, None)})
    with pytest.raises(Conflict):
        L2Networks(nl).create(L2NetworkCmd(type="novlan", bridge_name="br0"))


@pytest.mark.parametrize("body", [
    {"type": "vlan", "bridgeName": "b"},
    {"type": "vxlan", "bridgeName": "b", "vni": 5},
    {"type": "novlan", "bridgeName": "b", "vlanId": 3},
    {"type": "novlan", "bridgeName": "a-name-longer-than-15"},
    {"type": "vlan", "bridgeName": "b", "physicalInterface": "eth0", "vlanId": 4095},
])
def test_inconsistent_l2_commands_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        L2NetworkCmd.model_validate(body)
