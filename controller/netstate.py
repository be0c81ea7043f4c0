"""What this controller process did on its hosts' networks, so it is not done again.

One :class:`HostNetworkState` belongs to the :class:`~controller.core.Controller`
(``ctl.host_network``): it is a cache of work done through agents in this
process, never the truth (that is the database), and it starts empty after a
restart, which costs one round of repeated, idempotent agent commands. A host
that reconnects or goes is forgotten, since a restarted agent may have lost
its bridges and secrets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

#: a DHCP lease: (MAC, IP address, hostname)
Lease = tuple[str, str, str | None]


class DhcpCoalescer:
    """Group commit of DHCP work for one (host, L3 network): full lease sets and adds.

    One caller at a time talks to the agent; callers that arrive meanwhile
    wait, and the next call covers all of them at once, so a burst of VMs on
    one host costs a few commands, not one each. A caller that adds leases
    (its rows committed first) is covered by an add carrying them or by a full
    set read after it asked; a caller that needs the full set (a VM left the
    host) by a full set that started after it asked. Until one full set was
    sent (since this process started, or since the host reconnected), adds
    are sent as a full set, so an agent that lost its server gets it whole.
    """

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.requested = 0
        self.done = 0
        self.running = False
        self.synced = False  # a full set was sent since start or reconnect
        self._adds: dict[int, list[Lease]] = {}  # leases of callers not covered yet
        self._full = 0  # the last caller that wants a full set

    def run(self, full: Callable[[], None]) -> None:
        """Send the full lease set (read after this call) through ``full``."""
        self._submit(None, full, None)

    def add(self, leases: list[Lease], add: Callable[[list[Lease]], bool],
            full: Callable[[], None]) -> None:
        """Send ``leases`` (rows committed), with other callers' that wait, through ``add``;
        it returns False when the agent has no server for them, and the full set is sent."""
        self._submit(leases, full, add)

    def unsync(self) -> None:
        """The host reconnected: the next call sends the full set."""
        with self.cv:
            self.synced = False

    def _submit(self, leases: list[Lease] | None, full: Callable[[], None],
                add: Callable[[list[Lease]], bool] | None) -> None:
        with self.cv:
            self.requested += 1
            mine = self.requested
            if leases is None:
                self._full = mine
            else:
                self._adds[mine] = leases
            while True:
                if self.done >= mine:
                    return
                if not self.running:
                    self.running, target = True, self.requested
                    send_full = add is None or self._full > self.done or not self.synced
                    batch = _merge(ls for t, ls in sorted(self._adds.items()) if t <= target)
                    break
                self.cv.wait()
        ok = False
        try:
            if send_full or add is None or not add(batch):
                full()
            ok = True
        finally:
            with self.cv:
                self.running = False
                if ok:
                    self.done, self.synced = max(self.done, target), True
                    for t in [t for t in self._adds if t <= target]:
                        del self._adds[t]
                else:  # this caller fails (its leases with it); a waiter takes over and tries
                    self._adds.pop(mine, None)
                self.cv.notify_all()


def _merge(lease_lists: Iterable[list[Lease]]) -> list[Lease]:
    """The leases in order, a later one replacing an earlier of the same MAC or address."""
    by_mac: dict[str, Lease] = {}
    for leases in lease_lists:
        for lease in leases:
            by_mac.pop(lease[0], None)
            by_mac[lease[0]] = lease
    by_ip = {lease[1]: lease for lease in by_mac.values()}
    return list(by_ip.values())


class HostNetworkState:
    """L2 bridges realised, one-off host work done, VXLAN peer lists sent, DHCP coalescers,
    and the VMs migrating to each host."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        #: (host, L2 network) whose bridge was created
        self.l2_realised: set[tuple[str, str]] = set()
        #: (host, key) of work done once per host (a Ceph secret set)
        self.done_on_host: set[tuple[str, str]] = set()
        #: (host, L2 network) → (VTEP, *peers) last sent
        self.vxlan_sent: dict[tuple[str, str], tuple[str, ...]] = {}
        self._vxlan_locks: dict[str, threading.Lock] = {}
        self._dhcp: dict[tuple[str, str], DhcpCoalescer] = {}
        self._arriving: dict[str, set[str]] = {}  # host → VMs migrating to it

    def forget_host(self, host_uuid: str) -> None:
        """The host reconnects or goes: everything done on it may have to be done again."""
        self.forget_vxlan(host_uuid=host_uuid)
        for key in [k for k in self.l2_realised.copy() if k[0] == host_uuid]:
            self.l2_realised.discard(key)
        for key in [k for k in self.done_on_host.copy() if k[0] == host_uuid]:
            self.done_on_host.discard(key)
        with self._mu:
            coalescers = [c for k, c in self._dhcp.items() if k[0] == host_uuid]
        for c in coalescers:
            c.unsync()

    def once(self, host_uuid: str, key: str, do: Callable[[], object]) -> None:
        """Run ``do`` for ``key`` on a host once (remembered until the host reconnects)."""
        if (host_uuid, key) in self.done_on_host:
            return
        do()
        self.done_on_host.add((host_uuid, key))

    def forget_vxlan(self, host_uuid: str | None = None, l2_uuid: str | None = None) -> None:
        """Drop what was sent to a host (it reconnects, or goes) or for a network (deleted)."""
        for key in [k for k in self.vxlan_sent.copy() if k[0] == host_uuid or k[1] == l2_uuid]:
            self.vxlan_sent.pop(key, None)

    def vxlan_lock(self, l2_uuid: str) -> threading.Lock:
        """The lock that serialises the peer-list syncs of one VXLAN network."""
        with self._mu:
            return self._vxlan_locks.setdefault(l2_uuid, threading.Lock())

    def dhcp(self, host_uuid: str, l3_uuid: str) -> DhcpCoalescer:
        """The coalescer of one (host, L3 network)'s lease sets and adds."""
        with self._mu:
            return self._dhcp.setdefault((host_uuid, l3_uuid), DhcpCoalescer())

    @contextmanager
    def arriving(self, host_uuid: str, vm_uuid: str) -> Iterator[None]:
        """While inside, the host's lease sets also hold the VM's leases (a migration's
        destination, before the VM's row names that host)."""
        with self._mu:
            self._arriving.setdefault(host_uuid, set()).add(vm_uuid)
        try:
            yield
        finally:
            with self._mu:
                self._arriving[host_uuid].discard(vm_uuid)

    def incoming(self, host_uuid: str) -> list[str]:
        """The VMs migrating to the host now."""
        with self._mu:
            return list(self._arriving.get(host_uuid, ()))
