"""The host tracker: periodic ping with jitter, reconnect, VM state sync.

Every connected host is pinged every ``ping_interval`` (± jitter) with a
synchronous ``/host/ping``. A host whose agent does not answer twice in a row
becomes Disconnected (its VMs' states become Unknown); a host whose agent
answers with another host UUID, or none (it restarted without its identity),
is reconnected. Disconnected hosts are retried at each tick. A host unreachable
for ``host_dead_after`` seconds (from its first missed ping) is declared Dead,
and handed to ``host_dead`` (HA: :mod:`controller.ha`); a Dead host is still
retried, and stays Dead until a reconnect succeeds. Each tracker hands a Dead
host over once: the first failed retry of a host found Dead (after a restart,
or taken over from another node) hands it over again. VM states come
from events the agents push (``POST /v1/agent-events/<hostUuid>``) and from a
full ``/vm/sync`` at connect and every ``sync_interval``. A VM with an
operation in its queue is left alone: the operation decides its state. A VM
stopped in the database that the agent reports running on its last host (a
start whose outcome was lost with a killed agent) is adopted by that host. A
domain on a host whose VM another host owns now (restarted there while this
host was Dead) is a stale copy: the sync destroys it once that host says it
runs the VM.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller.background import Background
from controller.db.jobs import Job
from controller.db.models import Host, Vm
from controller.dispatch.dispatcher import AgentCallError
from controller.ha.policy import is_dead, stale_copies
from controller.services.allocate import mark_stopped
from kvmagent import models as km

if TYPE_CHECKING:
    from controller.core import Controller

log = logging.getLogger(__name__)

MISSES_TO_DISCONNECT = 2
PING_TIMEOUT = 10.0
#: connects a host's agents again (``services.hosts.connect``, handed in by whoever builds the controller)
ConnectHost = Callable[["Controller", str], object]
#: what follows a host declared Dead (``ha.restart.host_dead``, handed in likewise)
HostDead = Callable[["Controller", str], object]
AGENT_STATES = {"Running": "Running", "Paused": "Paused", "Stopped": "Stopped",
                "Crashed": "Crashed", "Unknown": "Unknown"}


class HostTracker(Background):
    """Keeps hosts' status and their VMs' states true to what agents say."""

    thread_name = "host-tracker"
    join_timeout = 5.0

    def __init__(self, ctl: Controller, connect: ConnectHost, host_dead: HostDead | None = None) -> None:
        super().__init__()
        self.ctl = ctl
        self._connect = connect
        self._host_dead = host_dead
        #: when each unreachable host first missed a ping (monotonic), for the dead grace
        self._down_since: dict[str, float] = {}
        #: the Dead hosts this tracker handed to ``host_dead``
        self._handed_over: set[str] = set()
        self._next_ping: dict[str, float] = {}
        self._next_sync: dict[str, float] = {}
        self._misses: dict[str, int] = {}
        self._inflight: set[str] = set()
        self._mu = threading.Lock()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="tracker")

    def stop(self) -> None:
        super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _jittered(self, period: float) -> float:
        j = self.ctl.settings.ping_jitter
        return period * (1 + random.uniform(-j, j))  # noqa: S311 - jitter, not crypto

    def connected(self, host_uuid: str) -> None:
        """A host has just connected: ping it on schedule from now on."""
        now = time.monotonic()
        with self._mu:
            self._misses[host_uuid] = 0
            self._down_since.pop(host_uuid, None)
            self._handed_over.discard(host_uuid)
            self._next_ping[host_uuid] = now + self._jittered(self.ctl.settings.ping_interval)
            self._next_sync[host_uuid] = now + self._jittered(self.ctl.settings.sync_interval)

    # -- the loop -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, self.ctl.settings.ping_interval / 4)):
            try:
                self.tick()
            except Exception:
                log.exception("host tracker tick failed")

    def tick(self) -> None:
        """Ping the hosts that are due (each on the tracker's own small pool)."""
        now = time.monotonic()
        with self.ctl.db.read() as s:
            hosts = list(s.execute(select(Host.uuid, Host.status)))
        for uuid, status in hosts:
            if not self.ctl.owns(uuid):  # another controller node tracks it
                continue
            with self._mu:
                due = self._next_ping.get(uuid, 0.0) <= now and uuid not in self._inflight
                if due:
                    self._inflight.add(uuid)
                    self._next_ping[uuid] = now + self._jittered(self.ctl.settings.ping_interval)
            if due:
                self._pool.submit(self._check, uuid, status)

    def _check(self, host_uuid: str, status: str) -> None:
        try:
            if status == "Connected":
                self.ping(host_uuid)
                with self._mu:
                    sync_due = self._next_sync.get(host_uuid, 0.0) <= time.monotonic()
                if sync_due:
                    self.connected(host_uuid)
                    self.sync_vms(host_uuid)
            elif status in ("Disconnected", "Dead"):
                self.reconnect(host_uuid, status)
        except Exception:
            log.exception("checking host %s failed", host_uuid)
        finally:
            with self._mu:
                self._inflight.discard(host_uuid)

    def ping(self, host_uuid: str) -> None:
        with self.ctl.db.read() as s:
            host = s.get(Host, host_uuid)
        if host is None:
            return
        try:
            reply = self.ctl.agents.call_sync(host.agent_url, km.PingCmd(), PING_TIMEOUT)
        except AgentCallError as e:
            with self._mu:
                self._misses[host_uuid] = self._misses.get(host_uuid, 0) + 1
                misses = self._misses[host_uuid]
                self._down_since.setdefault(host_uuid, time.monotonic())
            log.warning("host %s ping failed (%d): %s", host_uuid, misses, e)
            if misses >= MISSES_TO_DISCONNECT:
                self.disconnected(host_uuid, str(e))
            return
        with self._mu:
            self._misses[host_uuid] = 0
            self._down_since.pop(host_uuid, None)
        if reply.host_uuid != host_uuid:
            log.warning("host %s answers as %r: the agent restarted or was replaced; reconnecting",
                        host_uuid, reply.host_uuid)
            self.reconnect(host_uuid)

    def disconnected(self, host_uuid: str, reason: str) -> None:
        with self.ctl.db.write() as s:
            s.execute(update(Host).where(Host.uuid == host_uuid, Host.status != "Disconnected")
                      .values(status="Disconnected"))
            busy = self._busy_vms()
            s.execute(update(Vm).where(Vm.host_uuid == host_uuid, Vm.uuid.not_in(busy))
                      .values(state="Unknown"))
        log.warning("host %s is disconnected: %s", host_uuid, reason)

    def reconnect(self, host_uuid: str, status: str = "Disconnected") -> None:
        """Connect the host again; a failure leaves it Disconnected (Dead if it was), and
        one past the grace declares it Dead."""
        try:
            self._connect(self.ctl, host_uuid)
            log.info("host %s reconnected", host_uuid)
            return
        except Exception as e:
            log.warning("reconnecting host %s failed: %s", host_uuid, e)
            if status == "Dead":
                with self.ctl.db.write() as s:  # the connect made it Connecting
                    s.execute(update(Host).where(Host.uuid == host_uuid, Host.status != "Connected")
                              .values(status="Dead"))
                self._hand_over(host_uuid)
                return
            self.disconnected(host_uuid, str(e))
        with self._mu:
            since = self._down_since.setdefault(host_uuid, time.monotonic())
        if is_dead(since, time.monotonic(), self.ctl.settings.host_dead_after):
            self.declare_dead(host_uuid)

    def declare_dead(self, host_uuid: str) -> None:
        """A Disconnected host is Dead: once (one winner among nodes), then HA takes over."""
        with self.ctl.db.write() as s:
            won = s.connection().execute(update(Host).where(
                Host.uuid == host_uuid, Host.status == "Disconnected").values(status="Dead")).rowcount
        if not won:
            return
        log.warning("host %s is dead: unreachable for more than %.0f s", host_uuid,
                    self.ctl.settings.host_dead_after)
        self._hand_over(host_uuid)

    def _hand_over(self, host_uuid: str) -> None:
        """Give a Dead host to ``host_dead``, once per tracker (its VMs' jobs check again)."""
        with self._mu:
            if host_uuid in self._handed_over:
                return
            self._handed_over.add(host_uuid)
        if self._host_dead is not None:
            self._host_dead(self.ctl, host_uuid)

    # -- VM states ------------------------------------------------------------

    def _busy_vms(self) -> list[str]:
        """VMs with work under way: in this process's queues and, on several nodes, with a
        peer's unfinished job (a VM a peer is creating on one of this node's hosts has
        no domain yet: a sync would make it Stopped under the peer's create)."""
        busy = [k.split(":", 1)[1] for k in self.ctl.queues.busy() if k.startswith("vms:")]
        if self.ctl.membership is not None:
            with self.ctl.db.read() as s:
                busy += [u for u in s.scalars(select(Job.resource_uuid).where(
                    Job.resource_type == "vms", Job.state.in_(("queued", "running")))) if u]
        return busy

    def sync_vms(self, host_uuid: str) -> None:
        """Ask the agent for every domain's state and correct the database."""
        with self.ctl.db.read() as s:
            host = s.get(Host, host_uuid)
        if host is None:
            return
        reply = self.ctl.agents.call_sync(host.agent_url, km.SyncVmCmd(), 60.0)
        states: dict[str, str] = {k.replace("-", ""): v for k, v in reply.states.items()}
        busy = set(self._busy_vms())
        live = [u for u, st in states.items() if st in ("Running", "Paused")]
        with self.ctl.db.read() as s:
            owners: dict[str, str | None] = {u: h for u, h in s.execute(
                select(Vm.uuid, Vm.host_uuid).where(Vm.uuid.in_(list(states))))}
        for uuid in self._running_elsewhere(stale_copies(host_uuid, states, owners, busy), owners):
            log.warning("vm %s runs on host %s: destroying its stale copy on host %s",
                        uuid, owners[uuid], host_uuid)
            self.ctl.agents.call_sync(host.agent_url, km.DestroyVmCmd(vm_uuid=uuid), 60.0)
            states.pop(uuid)
        with self.ctl.db.write() as s:
            # a VM the database thinks stopped may run here after all: its start's
            # outcome was lost with a killed agent; it is this host's again
            lost = [u for u in s.scalars(select(Vm.uuid).where(
                Vm.host_uuid.is_(None), Vm.last_host_uuid == host_uuid, Vm.uuid.in_(live)))
                if u not in busy]
            for uuid in lost:
                self._adopt(s, uuid, host_uuid)
            rows = list(s.execute(select(Vm.uuid, Vm.state).where(Vm.host_uuid == host_uuid)))
            for uuid, state in rows:
                if uuid in busy:
                    continue
                new = AGENT_STATES.get(states.get(uuid, "Stopped"), "Unknown")
                if new != state:
                    log.info("vm %s: %s -> %s (sync of host %s)", uuid, state, new, host_uuid)
                    self._set_state(s, uuid, new)

    def _running_elsewhere(self, vm_uuids: list[str], owners: dict[str, str | None]) -> list[str]:
        """Those of ``vm_uuids`` whose owner host says it runs them: a copy is destroyed
        only when another one is known to run (a migration whose outcome was lost may
        have left the only copy on a host the database does not name)."""
        if not vm_uuids:
            return []
        by_owner: dict[str, list[str]] = {}
        for uuid in vm_uuids:
            by_owner.setdefault(str(owners[uuid]), []).append(uuid)
        with self.ctl.db.read() as s:
            urls: dict[str, str] = {u: url for u, url in s.execute(select(Host.uuid, Host.agent_url).where(
                Host.uuid.in_(list(by_owner)), Host.status == "Connected"))}
        running: list[str] = []
        for owner, uuids in sorted(by_owner.items()):
            if owner not in urls:
                log.info("vms %s: their host %s is not connected; the copies stay", uuids, owner)
                continue
            try:
                reply = self.ctl.agents.call_sync(urls[owner], km.CheckVmStateCmd(vm_uuids=uuids), 60.0)
            except AgentCallError as e:
                log.warning("host %s cannot tell whether it runs %s (%s); the copies stay",
                            owner, uuids, e)
                continue
            there = {k.replace("-", ""): v for k, v in reply.states.items()}
            running += [u for u in uuids if there.get(u) in ("Running", "Paused")]
        return running

    def host_agents(self, host_uuid: str) -> list[str]:
        """The URLs of a host's agents: only their tokens may push that host's events."""
        with self.ctl.db.read() as s:
            row = s.execute(select(Host.agent_url, Host.storage_agent_url)
                            .where(Host.uuid == host_uuid)).first()
        return [u for u in row if u] if row is not None else []

    def on_event(self, host_uuid: str, body: dict[str, Any]) -> None:
        """A VM lifecycle event an agent pushed (its token was checked against the host's)."""
        vm_uuid = str(body.get("vmUuid", "")).replace("-", "")
        state = AGENT_STATES.get(str(body.get("state", "")))
        if not vm_uuid or state is None:
            log.info("ignoring event from %s: %s", host_uuid, body)
            return
        if vm_uuid in set(self._busy_vms()):
            return
        with self.ctl.db.write() as s:
            vm = s.get(Vm, vm_uuid)
            if vm is None or vm.host_uuid != host_uuid or vm.state == state:
                return
            log.info("vm %s: %s -> %s (event from %s: %s)", vm_uuid, vm.state, state, host_uuid,
                     body.get("reason"))
            self._set_state(s, vm_uuid, state)

    @staticmethod
    def _adopt(s: Session, vm_uuid: str, host_uuid: str) -> None:
        vm = s.get(Vm, vm_uuid, with_for_update=True)
        if vm is None or vm.host_uuid is not None:
            return
        log.warning("vm %s runs on host %s though stopped in the database; adopting it", vm_uuid,
                    host_uuid)
        s.execute(update(Host).where(Host.uuid == host_uuid).values(
            available_cpu=Host.available_cpu - vm.cpu_num,
            available_memory=Host.available_memory - vm.memory_size))
        vm.host_uuid, vm.state = host_uuid, "Unknown"  # the sync below sets the agent's state

    @staticmethod
    def _set_state(s: Session, vm_uuid: str, state: str) -> None:
        if state == "Stopped":
            mark_stopped(s, vm_uuid)  # gives the host's capacity back
        else:
            s.execute(update(Vm).where(Vm.uuid == vm_uuid).values(state=state))
