"""What the kvmagent's plugins share: config, libvirt, identity, events."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvmagent.config import KvmAgentConfig
from kvmagent.connection import LibvirtConnection
from kvmagent.events import EventReporter
from kvmagent.facts import choose_domain_type, cpu_info
from kvmagent.hypervisor import Hypervisor
from kvmagent.identity import IdentityStore
from kvmagent.models import VmStateEvent
from kvmagent.nwfilter import define_filters
from kvmagent.paths import set_storage_roots

log = logging.getLogger(__name__)


class KvmHost:
    """The host-wide objects every kvmagent plugin works with."""

    def __init__(self, config: KvmAgentConfig, *, events: bool = True) -> None:
        self.config = config
        set_storage_roots(config.storage_roots)
        self.identity = IdentityStore(config.state_dir / "host.json")
        self.conn = LibvirtConnection(config.libvirt_uri, events=events)
        self.hv = Hypervisor(self.conn)
        _model, flags, _n, _s = cpu_info()
        self.domain_type = choose_domain_type(config.domain_type, flags)
        self._sink: Callable[[VmStateEvent], None] | None = None
        self.events = EventReporter(self.hv, self.identity.host_uuid, self._send)
        self.with_events = events
        self._started = False

    def start(self, sink: Callable[[VmStateEvent], None]) -> None:
        """Connect to libvirt and start reporting events through ``sink`` (once)."""
        if self._started:
            return
        self._started = True
        self._sink = sink
        if self.config.anti_spoofing:
            self.conn.on_connect(define_filters)  # before any VM start or incoming migration
        if self.with_events:
            self.conn.on_connect(self.events.attach)
        self.conn.start()
        log.info("kvmagent on %s, domain type %s", self.config.libvirt_uri, self.domain_type)

    def stop(self) -> None:
        self.conn.close()

    def _send(self, event: VmStateEvent) -> None:
        if self._sink is not None:
            self._sink(event)
