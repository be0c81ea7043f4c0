"""VM lifecycle events from libvirt, pushed to the controller.

libvirt tells us when a domain starts, stops, crashes, pauses or is shut down
from inside the guest. The agent reports those to the controller's events URL
(``{hostUuid, vmUuid, state, reason}``), except the ones its own commands
caused: a command wraps its work in :meth:`EventReporter.own` naming the
states it leads to, and events of that VM into those states are dropped while
it runs and for a short settle time after (a crash is never the agent's doing). After a
reconnect (libvirtd restarted) the reporter compares the states it last saw
with what libvirt now says and reports the differences, so nothing that
happened while libvirtd was down is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import libvirt

from kvmagent.hypervisor import Hypervisor
from kvmagent.models import VmState, VmStateEvent

log = logging.getLogger(__name__)

SETTLE = 2.0  # seconds after an own command during which its VM's events are dropped

ALL_STATES: frozenset[VmState] = frozenset({"Running", "Paused", "Stopped", "Unknown"})  # not Crashed
RUNNING: frozenset[VmState] = frozenset({"Running", "Paused"})
STOPPED: frozenset[VmState] = frozenset({"Stopped"})

Sink = Callable[[VmStateEvent], None]

_EVENT_STATES: dict[int, tuple[VmState, dict[int, str]]] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: ("Running", {
        libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED: "started",
        libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED: "migrated in",
        libvirt.VIR_DOMAIN_EVENT_STARTED_RESTORED: "restored",
    }),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("Paused", {
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED: "paused",
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR: "paused on an I/O error",
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: "paused for migration",
    }),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: ("Running", {}),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: ("Stopped", {
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down from inside the guest",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed outside kvmcloud",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "QEMU failed",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated away",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    }),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: ("Crashed", {}),
}


def classify(event: int, detail: int) -> tuple[VmState, str] | None:
    """The (state, reason) a libvirt lifecycle event means, or None to ignore it."""
    entry = _EVENT_STATES.get(event)
    if entry is None:
        return None
    state, reasons = entry
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail in (
        libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
    ):
        state = "Crashed"  # the guest crashed or its QEMU died: not a clean stop
    return state, reasons.get(detail, state.lower())


class EventReporter:
    """Turns libvirt lifecycle callbacks into controller reports."""

    def __init__(self, hypervisor: Hypervisor, host_uuid: Callable[[], str | None], sink: Sink) -> None:
        self.hv = hypervisor
        self.host_uuid = host_uuid
        self.sink = sink
        self._mu = threading.Lock()
        self._own: dict[str, dict[object, frozenset[VmState]]] = {}
        self._quiet_until: dict[str, dict[VmState, float]] = {}
        self._names: dict[str, str] = {}  # domain name -> VM UUID as the controller spells it
        self._last: dict[str, VmState] = {}
        self._callback_ids: dict[int, int] = {}
        self._seeded = False

    # -- suppression ------------------------------------------------------

    @contextmanager
    def own(self, vm_uuid: str, domain_name: str | None = None,
            expect: frozenset[VmState] = ALL_STATES) -> Iterator[None]:
        """Drop this VM's events of the ``expect`` states while the block runs (the agent is the cause).

        A state the command does not lead to (a crash while starting, say) is still reported.
        """
        key = self._key(vm_uuid)
        token = object()
        with self._mu:
            self._own.setdefault(key, {})[token] = expect
            if domain_name is not None:
                self._names[domain_name] = vm_uuid
        try:
            yield
        finally:
            with self._mu:
                del self._own[key][token]
                if not self._own[key]:
                    del self._own[key]
                until = time.monotonic() + SETTLE
                quiet = self._quiet_until.setdefault(key, {})
                for state in expect:
                    quiet[state] = until

    def remember(self, vm_uuid: str, state: VmState) -> None:
        """Record the state an own command left the VM in (the baseline for resync)."""
        with self._mu:
            self._last[self._key(vm_uuid)] = state

    def _key(self, vm_uuid: str) -> str:
        return vm_uuid.replace("-", "").lower()

    def _suppressed(self, key: str, state: VmState) -> bool:
        with self._mu:
            if any(state in expect for expect in self._own.get(key, {}).values()):
                return True
            return time.monotonic() < self._quiet_until.get(key, {}).get(state, 0.0)

    # -- libvirt side -----------------------------------------------------

    def attach(self, conn: libvirt.virConnect) -> None:
        """Register the lifecycle callback on a (new) connection, then resync."""
        cid = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        self._callback_ids[id(conn)] = cid
        threading.Thread(target=self.resync, name="kvm-resync", daemon=True).start()

    def _on_lifecycle(self, _conn: Any, dom: libvirt.virDomain, event: int, detail: int, _opaque: Any) -> None:
        try:
            meaning = classify(event, detail)
            if meaning is None:
                return
            name = dom.name()
            with self._mu:
                vm_uuid = self._names.get(name)
            if vm_uuid is None:
                try:
                    md = self.hv.metadata(dom)
                except Exception:
                    md = None
                if md is None:
                    return  # not a kvmcloud domain (or gone before we could tell)
                vm_uuid = md.vm_uuid
                with self._mu:
                    self._names[name] = vm_uuid
            state, reason = meaning
            self._emit(vm_uuid, state, reason)
        except Exception:
            log.exception("lifecycle event handling failed")

    def _emit(self, vm_uuid: str, state: VmState, reason: str) -> None:
        key = self._key(vm_uuid)
        with self._mu:
            self._last[key] = state
        if self._suppressed(key, state):
            log.debug("event of %s (%s, %s) caused by the agent: not reported", vm_uuid, state, reason)
            return
        host_uuid = self.host_uuid()
        if host_uuid is None:
            log.info("VM %s is %s (%s); not connected to a controller yet", vm_uuid, state, reason)
            return
        log.info("VM %s is %s (%s): reporting", vm_uuid, state, reason)
        self.sink(VmStateEvent(host_uuid=host_uuid, vm_uuid=vm_uuid, state=state, reason=reason))

    def resync(self) -> None:
        """Report VMs whose state changed while the agent could not see libvirt."""
        try:
            current = {self._key(d.vm_uuid): d for d in self.hv.domains()}
        except Exception:
            log.warning("resync after reconnect failed", exc_info=True)
            return
        with self._mu:
            last = dict(self._last)
            for d in current.values():
                self._names.setdefault(d.name, d.vm_uuid)
            if not self._seeded:  # first connection: learn the baseline, report nothing
                self._seeded = True
                self._last.update({k: d.state for k, d in current.items()})
                return
        for key, d in current.items():
            if last.get(key) != d.state:
                self._emit(d.vm_uuid, d.state, "state found after reconnecting to libvirtd")
        for key, state in last.items():
            if key not in current and state != "Stopped":
                with self._mu:
                    vm_uuid = next((u for u in self._names.values() if self._key(u) == key), key)
                self._emit(vm_uuid, "Stopped", "gone after reconnecting to libvirtd")
