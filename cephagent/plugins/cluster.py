"""Cluster commands: connect, ping, facts, pools and capacity."""

from __future__ import annotations

import socket
import time

from agentcore.plugin import command
from agentcore.task import TaskContext
from cephagent.errors import PoolNotFound
from cephagent.models import (
    CapacityCmd,
    CapacityReply,
    CheckPoolsCmd,
    CheckPoolsReply,
    ConnectCmd,
    ConnectReply,
    FactsCmd,
    FactsReply,
    InitPoolsCmd,
    InitPoolsReply,
    PingCmd,
    PingReply,
)
from cephagent.plugins.base import CephPlugin, fill_capacity


class ClusterPlugin(CephPlugin):
    """The cluster as a whole: connection, health probe, facts and pools."""

    def stop(self) -> None:
        self.ceph.pool.close()

    @command()
    def connect(self, ctx: TaskContext, cmd: ConnectCmd) -> ConnectReply:
        """Open a fresh connection to the cluster as the given cephx user (dropping a
        cached one) and answer with its fsid. Fails with CEPH_UNREACHABLE,
        CREDENTIAL_REFUSED or FSID_MISMATCH."""
        conn = self.ceph.pool.get(ctx, cmd.cluster, fresh=True)
        return ConnectReply(fsid=conn.fsid, user=f"client.{cmd.cluster.user_id}",
                            monitors=list(cmd.cluster.monitors))

    @command()
    def ping(self, ctx: TaskContext, cmd: PingCmd) -> PingReply:
        """Write, read back and remove a heartbeat object in ``pool``, bounded by the
        op timeout: CEPH_TIMEOUT when the cluster is stuck, CEPH_UNREACHABLE when no
        monitor answers, CEPH_PERMISSION_DENIED when the user cannot write."""
        store = self.pools(ctx, cmd)
        start = time.monotonic()
        store.ping(cmd.pool, cmd.object_name or f"kvmcloud-heartbeat-{socket.gethostname()}")
        return PingReply(fsid=store.conn.fsid, latency_ms=round((time.monotonic() - start) * 1000, 3))

    @command()
    def facts(self, ctx: TaskContext, cmd: FactsCmd) -> FactsReply:
        """The cluster's fsid, monitor addresses and Ceph version."""
        return FactsReply(**self.pools(ctx, cmd).facts())

    @command(lock=lambda c: [f"pool:{p.name}" for p in c.pools])
    def init_pools(self, ctx: TaskContext, cmd: InitPoolsCmd) -> InitPoolsReply:
        """Create each pool unless it exists or is marked predefined (a predefined pool
        that is missing is POOL_NOT_FOUND), and enable the rbd application on it."""
        store = self.pools(ctx, cmd)
        states = []
        for spec in cmd.pools:
            ctx.check()
            states.append(store.init_pool(spec.name, spec.pg_num, spec.predefined))
        reply = InitPoolsReply(fsid=store.conn.fsid, pools=states)
        fill_capacity(store, reply)
        return reply

    @command()
    def check_pools(self, ctx: TaskContext, cmd: CheckPoolsCmd) -> CheckPoolsReply:
        """Check that the pools exist; POOL_NOT_FOUND names the missing ones."""
        store = self.pools(ctx, cmd)
        states = [store.pool_state(p) for p in cmd.pools]
        missing = [s.name for s in states if not s.exists]
        if missing:
            raise PoolNotFound(f"missing pools: {', '.join(missing)}", pools=missing)
        return CheckPoolsReply(pools=states)

    @command()
    def capacity(self, ctx: TaskContext, cmd: CapacityCmd) -> CapacityReply:
        """Total and available bytes of the cluster, and used/available bytes per pool."""
        total, avail, pools = self.pools(ctx, cmd).capacity(list(cmd.pools))
        return CapacityReply(total_capacity=total, available_capacity=avail, pools=pools)
