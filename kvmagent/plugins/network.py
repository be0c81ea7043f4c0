"""L2 bridges (novlan, VLAN, VXLAN) and flat-network DHCP on this host."""

from __future__ import annotations

from collections.abc import Sequence

from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from kvmagent.dhcp import DhcpServers
from kvmagent.l2 import L2Networks, Netlink, uplink_name
from kvmagent.models import (
    CheckL2Cmd,
    CreateL2Cmd,
    DeleteDhcpCmd,
    DeleteL2Cmd,
    DhcpAddCmd,
    DhcpApplyCmd,
    DhcpNetworkCmd,
    DhcpReleaseCmd,
    DhcpReply,
    L2NetworkCmd,
    L2NetworkReply,
)
from kvmagent.services import KvmHost

DNSMASQ_TIMEOUT = 15.0


def _l2_lock(cmd: L2NetworkCmd) -> str:
    return f"bridge:{cmd.bridge_name}"


def _l3_lock(cmd: DhcpNetworkCmd) -> str:
    return f"l3:{cmd.l3_network_uuid.replace('-', '').lower()}"


class NetworkPlugin(Plugin):
    """Networks realised on the host; every command is idempotent."""

    def __init__(self, host: KvmHost, netlink: Netlink | None = None) -> None:
        self.host = host
        self.l2 = L2Networks(netlink or Netlink())

    def _dhcp(self, ctx: TaskContext) -> DhcpServers:
        def run(argv: Sequence[str]) -> object:
            return ctx.run(argv, timeout=DNSMASQ_TIMEOUT)

        cfg = self.host.config
        return DhcpServers(cfg.state_dir, cfg.dnsmasq, run, cfg.dhcp_tag, user=cfg.dnsmasq_user,
                           hosts_dir=cfg.dhcp_hosts_dir)

    def _l2_reply(self, cmd: L2NetworkCmd, exists: bool) -> L2NetworkReply:
        return L2NetworkReply(bridge_name=cmd.bridge_name, uplink=uplink_name(cmd), exists=exists)

    @command(lock=_l2_lock)
    def create_l2(self, ctx: TaskContext, cmd: CreateL2Cmd) -> L2NetworkReply:
        """Create the bridge and its VLAN or VXLAN uplink (and VXLAN peers); existing is success."""
        self.l2.create(cmd)
        return self._l2_reply(cmd, True)

    @command(lock=_l2_lock)
    def check_l2(self, ctx: TaskContext, cmd: CheckL2Cmd) -> L2NetworkReply:
        """Whether the network is realised as described."""
        return self._l2_reply(cmd, self.l2.check(cmd))

    @command(lock=_l2_lock)
    def delete_l2(self, ctx: TaskContext, cmd: DeleteL2Cmd) -> L2NetworkReply:
        """Remove the devices kvmcloud created for the network; absent is success."""
        self.l2.delete(cmd)
        return self._l2_reply(cmd, False)

    @command(lock=_l3_lock)
    def apply_dhcp(self, ctx: TaskContext, cmd: DhcpApplyCmd) -> DhcpReply:
        """Serve exactly this lease set for the L3 network (dnsmasq in a namespace on the bridge)."""
        names, pid = self._dhcp(ctx).apply(cmd)
        return DhcpReply(namespace=names.namespace, leases=len(cmd.leases), pid=pid)

    @command(lock=_l3_lock)
    def add_dhcp(self, ctx: TaskContext, cmd: DhcpAddCmd) -> DhcpReply:
        """Add leases to the running DHCP server (NOT_FOUND when there is none)."""
        servers = self._dhcp(ctx)
        return _dhcp_reply(servers, cmd.l3_network_uuid, servers.add(cmd.l3_network_uuid, cmd.leases))

    @command(lock=_l3_lock)
    def release_dhcp(self, ctx: TaskContext, cmd: DhcpReleaseCmd) -> DhcpReply:
        """Remove the leases of these MACs (VMs gone), keeping the others."""
        servers = self._dhcp(ctx)
        return _dhcp_reply(servers, cmd.l3_network_uuid, servers.release(cmd.l3_network_uuid, cmd.macs))

    @command(lock=_l3_lock)
    def delete_dhcp(self, ctx: TaskContext, cmd: DeleteDhcpCmd) -> DhcpReply:
        """Stop the L3 network's DHCP server and remove its namespace; absent is success."""
        servers = self._dhcp(ctx)
        servers.delete(cmd.l3_network_uuid)
        return DhcpReply(namespace=servers.names(cmd.l3_network_uuid).namespace, leases=0)


def _dhcp_reply(servers: DhcpServers, l3_uuid: str, leases: int) -> DhcpReply:
    """The reply of a change to an L3's lease set: its namespace, lease count and dnsmasq pid."""
    return DhcpReply(namespace=servers.names(l3_uuid).namespace, leases=leases,
                     pid=servers.pid(l3_uuid))
