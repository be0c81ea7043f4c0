"""L2 networks as Linux bridges, through netlink (pyroute2).

An L2 network on a host is a bridge, plus for ``vlan`` an 802.1Q sub-interface
of the uplink and for ``vxlan`` a VXLAN device (VNI, local VTEP, static
all-zero FDB entries to the peer VTEPs) enslaved to it. Every device this
module creates carries the ifalias ``kvmcloud:<bridge>``; ``delete`` removes
only devices with that mark, so an operator's own bridge or uplink is never
touched. Everything is idempotent.

:class:`Netlink` is the seam: every change goes through :meth:`Netlink.link`
or :meth:`Netlink.fdb` with the exact pyroute2 request, so tests can record
the requests for device kinds the running kernel lacks (802.1Q VLAN here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agentcore.errors import AgentError, Conflict, NotFound
from kvmagent.models import L2NetworkCmd

log = logging.getLogger(__name__)

MARK = "kvmcloud:"
ZERO_MAC = "00:00:00:00:00:00"


class NetworkFailed(AgentError):
    code = "NETWORK_FAILED"
    default_message = "the kernel refused a network change"


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None
    alias: str | None
    master: int | None
    vlan_id: int | None = None
    vni: int | None = None
    vxlan_local: str | None = None
    vxlan_port: int | None = None


class Netlink:
    """The netlink requests the L2 code makes, in one network namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _ipr(self) -> IPRoute:
        return IPRoute(netns=self.netns) if self.netns else IPRoute()

    def find(self, name: str) -> Link | None:
        with self._ipr() as ipr:
            idx = ipr.link_lookup(ifname=name)
            if not idx:
                return None
            msg = ipr.get_links(idx[0])[0]
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        vx = data if data is not None and kind == "vxlan" else None
        return Link(
            index=msg["index"], name=name, kind=kind, alias=msg.get_attr("IFLA_IFALIAS"),
            master=msg.get_attr("IFLA_MASTER"),
            vlan_id=data.get_attr("IFLA_VLAN_ID") if data is not None and kind == "vlan" else None,
            vni=vx.get_attr("IFLA_VXLAN_ID") if vx is not None else None,
            vxlan_local=vx.get_attr("IFLA_VXLAN_LOCAL") if vx is not None else None,
            vxlan_port=vx.get_attr("IFLA_VXLAN_PORT") if vx is not None else None,
        )

    def link(self, command: str, **request: Any) -> None:
        """One RTM_*LINK request (``ip link add/set/del``)."""
        with self._ipr() as ipr:
            ipr.link(command, **request)

    def fdb(self, command: str, **request: Any) -> None:
        """One RTM_*NEIGH request on the bridge FDB (``bridge fdb append/del``)."""
        with self._ipr() as ipr:
            ipr.fdb(command, **request)

    def fdb_destinations(self, index: int) -> set[str]:
        with self._ipr() as ipr:
            return {
                str(m.get_attr("NDA_DST")) for m in ipr.fdb("dump", ifindex=index)
                if m.get_attr("NDA_LLADDR") == ZERO_MAC and m.get_attr("NDA_DST")
            }


def uplink_name(cmd: L2NetworkCmd) -> str | None:
    """The VLAN or VXLAN device of an L2 network (None for novlan)."""
    if cmd.type == "vlan":
        assert cmd.physical_interface is not None and cmd.vlan_id is not None
        return f"{cmd.physical_interface[:10]}.{cmd.vlan_id}"
    if cmd.type == "vxlan":
        return f"vxlan{cmd.vni}"
    return None


class L2Networks:
    """Create, check and delete L2 networks on this host."""

    def __init__(self, nl: Netlink) -> None:
        self.nl = nl

    def _do(self, fn: Any, *args: Any, **kw: Any) -> None:
        try:
            fn(*args, **kw)
        except NetlinkError as e:
            raise NetworkFailed(f"{args[0] if args else ''} {kw.get('ifname', '')}: {e}".strip(),
                                errno=e.code, request={k: str(v) for k, v in kw.items()}) from None

    def create(self, cmd: L2NetworkCmd) -> Link:
        """Make the bridge (and uplink device) exist, up, with the right wiring."""
        mark = MARK + cmd.bridge_name
        bridge = self.nl.find(cmd.bridge_name)
        if bridge is None:
            self._do(self.nl.link, "add", ifname=cmd.bridge_name, kind="bridge")
            bridge = self._require(cmd.bridge_name)
            self._do(self.nl.link, "set", index=bridge.index, ifalias=mark)
        elif bridge.kind != "bridge":
            raise Conflict("an interface with the bridge's name exists and is not a bridge",
                           ifname=cmd.bridge_name, kind=bridge.kind)
        uplink = self._ensure_uplink(cmd, mark)
        if cmd.type == "novlan" and cmd.physical_interface:
            uplink = self._require(cmd.physical_interface, field="physicalInterface")
        if uplink is not None and uplink.master != bridge.index:
            self._do(self.nl.link, "set", index=uplink.index, master=bridge.index)
        if uplink is not None:
            self._do(self.nl.link, "set", index=uplink.index, state="up")
        up: dict[str, Any] = {"index": bridge.index, "state": "up"}
        if cmd.mtu:
            up["mtu"] = cmd.mtu
        self._do(self.nl.link, "set", **up)
        if cmd.type == "vxlan" and uplink is not None:
            self._sync_fdb(uplink, cmd.peers)
        return bridge

    def _ensure_uplink(self, cmd: L2NetworkCmd, mark: str) -> Link | None:
        name = uplink_name(cmd)
        if name is None:
            return None
        existing = self.nl.find(name)
        if existing is not None:
            if cmd.type == "vlan" and existing.vlan_id not in (None, cmd.vlan_id):
                raise Conflict("the VLAN device exists with another VLAN id", ifname=name)
            if cmd.type == "vxlan" and existing.vni not in (None, cmd.vni):
                raise Conflict("the VXLAN device exists with another VNI", ifname=name)
            if cmd.type != "vxlan" or not self._vtep_moved(existing, cmd, mark):
                return existing
            # the host's VTEP address (or port) changed: a VXLAN device cannot be
            # changed in place, so ours is made again (its FDB entries are re-added below)
            self._do(self.nl.link, "del", index=existing.index)
        if cmd.type == "vlan":
            assert cmd.physical_interface is not None
            parent = self._require(cmd.physical_interface, field="physicalInterface")
            self._do(self.nl.link, "add", ifname=name, kind="vlan", link=parent.index, vlan_id=cmd.vlan_id)
        else:
            request: dict[str, Any] = {
                "ifname": name, "kind": "vxlan", "vxlan_id": cmd.vni, "vxlan_local": cmd.vtep_ip,
                "vxlan_port": cmd.dst_port, "vxlan_learning": 0,
            }
            if cmd.physical_interface:
                request["vxlan_link"] = self._require(cmd.physical_interface, field="physicalInterface").index
            self._do(self.nl.link, "add", **request)
        link = self._require(name)
        self._do(self.nl.link, "set", index=link.index, ifalias=mark)
        return link

    @staticmethod
    def _vtep_moved(link: Link, cmd: L2NetworkCmd, mark: str) -> bool:
        moved = (link.vxlan_local not in (None, cmd.vtep_ip)
                 or link.vxlan_port not in (None, cmd.dst_port))
        if moved and link.alias != mark:
            raise Conflict("the VXLAN device exists with another local address or port",
                           ifname=link.name, local=link.vxlan_local, port=link.vxlan_port)
        return moved

    def _sync_fdb(self, vxlan: Link, peers: list[str]) -> None:
        have = self.nl.fdb_destinations(vxlan.index)
        for peer in sorted(set(peers) - have):
            self._do(self.nl.fdb, "append", ifindex=vxlan.index, lladdr=ZERO_MAC, dst=peer)
        for peer in sorted(have - set(peers)):
            self._do(self.nl.fdb, "del", ifindex=vxlan.index, lladdr=ZERO_MAC, dst=peer)

    def _require(self, name: str, field: str | None = None) -> Link:
        link = self.nl.find(name)
        if link is None:
            raise NotFound("no such interface", ifname=name, **({"field": field} if field else {}))
        return link

    def check(self, cmd: L2NetworkCmd) -> bool:
        """Is the network realised as asked (bridge up, uplink enslaved)?"""
        bridge = self.nl.find(cmd.bridge_name)
        if bridge is None or bridge.kind != "bridge":
            return False
        name = uplink_name(cmd) or (cmd.physical_interface if cmd.type == "novlan" else None)
        if name is None:
            return True
        uplink = self.nl.find(name)
        return uplink is not None and uplink.master == bridge.index

    def delete(self, cmd: L2NetworkCmd) -> None:
        """Remove the devices kvmcloud created for this network; leave all others."""
        mark = MARK + cmd.bridge_name
        for name in (uplink_name(cmd), cmd.bridge_name):
            if name is None:
                continue
            link = self.nl.find(name)
            if link is None:
                continue
            if link.alias != mark:
                log.info("not deleting %s: kvmcloud did not create it", name)
                continue
            self._do(self.nl.link, "del", index=link.index)
