"""Host commands: connect, ping, facts, capacity, Ceph secrets."""

from __future__ import annotations

import base64
import os
import platform

import libvirt
from lxml import etree

from agentcore import __version__
from agentcore.errors import InvalidRequest
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from kvmagent import facts
from kvmagent.domain_spec import canonical_uuid
from kvmagent.identity import Identity
from kvmagent.models import (
    CapacityCmd,
    CapacityReply,
    ConnectCmd,
    FactsCmd,
    FactsReply,
    HostIdentityReply,
    PingCmd,
    SetCephSecretCmd,
    SetCephSecretReply,
    VmStateEvent,
)
from kvmagent.services import KvmHost


class HostPlugin(Plugin):
    """The host itself: who it is, what it has, what it runs."""

    def __init__(self, host: KvmHost) -> None:
        self.host = host

    def start(self) -> None:
        self.host.start(self._report)

    def stop(self) -> None:
        self.host.stop()

    def _report(self, event: VmStateEvent) -> None:
        identity = self.host.identity.current
        if identity is None:
            return
        self.runtime.report(identity.events_url, event.wire())

    def _identity_reply(self) -> HostIdentityReply:
        cur = self.host.identity.current
        return HostIdentityReply(
            host_uuid=cur.host_uuid if cur else None,
            events_url=cur.events_url if cur else None,
            version=__version__,
        )

    @command(lock=lambda c: "host")
    def connect(self, ctx: TaskContext, cmd: ConnectCmd) -> HostIdentityReply:
        """Take the host UUID and the controller's events URL; kept across restarts."""
        self.runtime.urls.add(cmd.events_url)
        self.host.identity.save(Identity(host_uuid=cmd.host_uuid, events_url=cmd.events_url))
        ctx.log.info("connected as host %s, events to %s", cmd.host_uuid, cmd.events_url)
        return self._identity_reply()

    @command()
    def ping(self, ctx: TaskContext, cmd: PingCmd) -> HostIdentityReply:
        """Answer with the host UUID (null before connect) and the agent version."""
        return self._identity_reply()

    @command()
    def facts(self, ctx: TaskContext, cmd: FactsCmd) -> FactsReply:
        """OS, kernel, CPU model and flags, virtualisation, libvirt/QEMU versions, memory, IPs."""
        model, flags, count, sockets = facts.cpu_info()
        os_name, os_version = facts.os_release()
        return FactsReply(
            hostname=facts.hostname(),
            os_name=os_name,
            os_version=os_version,
            kernel=platform.release(),
            arch=platform.machine(),
            cpu_model=model,
            cpu_count=count,
            cpu_sockets=sockets,
            cpu_flags=flags,
            hardware_virtualization=facts.hardware_virtualization(flags),
            domain_type="kvm" if self.host.domain_type == "kvm" else "qemu",
            libvirt_version=facts.version_string(self.host.hv.call(lambda c: c.getLibVersion())),
            qemu_version=facts.version_string(self.host.hv.call(lambda c: c.getVersion())),
            memory_total=facts.meminfo().get("MemTotal", 0),
            ip_addresses=facts.ip_addresses(),
        )

    @command()
    def capacity(self, ctx: TaskContext, cmd: CapacityCmd) -> CapacityReply:
        """Total CPUs and memory, and what running domains use of them."""
        running = [d for d in self.host.hv.domains() if d.state in ("Running", "Paused")]
        mem = facts.meminfo()
        return CapacityReply(
            cpu_total=os.cpu_count() or 0,
            cpu_used=sum(d.vcpus for d in running),
            memory_total=mem.get("MemTotal", 0),
            memory_used=sum(d.memory for d in running),
            memory_free=mem.get("MemAvailable", 0),
            domains=len(running),
        )

    @command(lock=lambda c: f"secret:{c.secret_uuid}")
    def set_ceph_secret(self, ctx: TaskContext, cmd: SetCephSecretCmd) -> SetCephSecretReply:
        """Create or update the libvirt secret holding a cephx key (private, not persisted to disk)."""
        try:
            key = base64.b64decode(cmd.user_key, validate=True)
        except ValueError:
            raise InvalidRequest("userKey: not base64", field="userKey") from None
        uuid = canonical_uuid(cmd.secret_uuid)
        secret = etree.Element("secret", ephemeral="no", private="yes")
        etree.SubElement(secret, "uuid").text = uuid
        usage = etree.SubElement(secret, "usage", type="ceph")
        etree.SubElement(usage, "name").text = f"client.{cmd.user_name} secret {uuid}"
        xml = etree.tostring(secret, encoding="unicode")

        def apply(conn: libvirt.virConnect) -> None:
            conn.secretDefineXML(xml, 0).setValue(key, 0)

        self.host.hv.call(apply, secret_uuid=uuid)
        return SetCephSecretReply(secret_uuid=cmd.secret_uuid)
