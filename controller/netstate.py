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
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class DhcpCoalescer:
    """Group commit of DHCP lease sets for one (host, L3 network).

    A caller needs an apply that *started after* its lease rows were
    committed. One caller at a time sends the full set; callers that arrive
    meanwhile wait, and the next apply covers all of them at once, so a burst
    of VMs on one host costs a few applies, not one each.
    """

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.requested = 0
        self.done = 0
        self.running = False

    def run(self, apply: Callable[[], None]) -> None:
        with self.cv:
            self.requested += 1
            mine = self.requested
            while True:
                if self.done >= mine:
                    return
                if not self.running:
                    self.running, target = True, self.requested
                    break
                self.cv.wait()
        ok = False
        try:
            apply()
            ok = True
        finally:
            with self.cv:
                self.running = False
                if ok:
                    self.done = max(self.done, target)
                self.cv.notify_all()  # on failure a waiter takes over and tries itself


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
        """The coalescer of one (host, L3 network)'s lease-set applies."""
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
