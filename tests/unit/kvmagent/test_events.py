"""Lifecycle events: what they mean, and the suppression of the agent's own."""

from __future__ import annotations

import libvirt
import pytest

from kvmagent import events as ev
from kvmagent.events import EventReporter, classify
from kvmagent.hypervisor import DomainInfo
from kvmagent.models import VmStateEvent

VM = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
NAME = VM.replace("-", "")


class FakeDomain:
    def name(self) -> str:
        return NAME


class FakeHypervisor:
    def __init__(self) -> None:
        self.infos: list[DomainInfo] = []

    def domains(self) -> list[DomainInfo]:
        return list(self.infos)

    def metadata(self, dom: object) -> None:
        return None


@pytest.fixture
def reporter() -> tuple[EventReporter, list[VmStateEvent], FakeHypervisor]:
    sent: list[VmStateEvent] = []
    hv = FakeHypervisor()
    r = EventReporter(hv, lambda: "host-1", sent.append)  # type: ignore[arg-type]
    return r, sent, hv


def fire(r: EventReporter, event: int, detail: int) -> None:
    r._on_lifecycle(None, FakeDomain(), event, detail, None)


def test_classification_of_lifecycle_events() -> None:
    assert classify(libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED) == ("Running", "started")
    assert classify(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN) == (
        "Stopped", "shut down from inside the guest")
    assert classify(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED)[0] == "Crashed"
    assert classify(libvirt.VIR_DOMAIN_EVENT_CRASHED, 0)[0] == "Crashed"  # type: ignore[index]
    assert classify(libvirt.VIR_DOMAIN_EVENT_DEFINED, 0) is None


Reporter = tuple[EventReporter, list[VmStateEvent], FakeHypervisor]


def test_events_of_unknown_domains_are_ignored(reporter: Reporter) -> None:
    r, sent, _ = reporter
    fire(r, libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED)
    assert sent == []


def test_outside_events_are_reported_own_ones_are_not(
    reporter: tuple[EventReporter, list[VmStateEvent], FakeHypervisor], monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, sent, _ = reporter
    with r.own(VM, NAME):
        fire(r, libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
    fire(r, libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED)  # within the settle time
    assert sent == []
    monkeypatch.setattr(ev, "SETTLE", 0.0)
    with r.own(VM, NAME):
        pass
    fire(r, libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)
    assert sent == [VmStateEvent(host_uuid="host-1", vm_uuid=VM, state="Stopped",
                                 reason="shut down from inside the guest")]


def test_resync_reports_only_changes_after_the_first_connection(
    reporter: tuple[EventReporter, list[VmStateEvent], FakeHypervisor],
) -> None:
    r, sent, hv = reporter
    hv.infos = [DomainInfo(VM, NAME, "Running", 1, 1 << 27)]
    r.resync()  # the baseline: nothing reported
    assert sent == []
    r.resync()  # nothing changed
    assert sent == []
    hv.infos = []  # the VM went away while libvirtd was down
    r.resync()
    assert [(e.vm_uuid, e.state) for e in sent] == [(VM, "Stopped")]


def test_a_crash_during_an_own_command_is_still_reported(reporter: Reporter) -> None:
    r, sent, _ = reporter
    with r.own(VM, NAME, ev.RUNNING):
        fire(r, libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED)
        fire(r, libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED)
    assert [(e.state, e.reason) for e in sent] == [("Crashed", "QEMU failed")]
