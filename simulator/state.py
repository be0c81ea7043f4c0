"""What a simulated agent remembers: domains, volumes, images, networks, tasks.

Everything here is plain data touched only from the simulator's event loop,
so it needs no locks. The controller reads it back through the agents' own
query commands (``/vm/sync``, ``/storage/volume/info``...) and tests read it
through the simulator's control API (``GET /_sim/agents/<id>``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from simulator.catalog import AgentKind

GiB = 1024**3
TiB = 1024**4


@dataclass
class Domain:
    """A simulated libvirt domain."""

    uuid: str
    state: str = "Running"
    cpu: int = 1
    memory: int = 0
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    nics: dict[str, dict[str, Any]] = field(default_factory=dict)
    isos: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Volume:
    """A simulated file or RBD image on primary storage."""

    path: str
    size: int
    actual_size: int = 0
    backing: str | None = None
    fmt: str = "qcow2"


@dataclass
class Task:
    """One entry of a simulated agent's task journal."""

    uuid: str
    path: str
    state: str = "queued"
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    reply: dict[str, Any] | None = None
    callback_url: str | None = None
    progress: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """The wire form of ``GET /tasks/<taskuuid>``."""
        return {
            "taskUuid": self.uuid, "path": self.path, "state": self.state,
            "progress": self.progress,
            "created": self.created, "updated": self.updated, "reply": self.reply,
        }


@dataclass
class Capacity:
    """What a simulated host or storage offers."""

    cpu: int = 1024
    memory: int = 4 * TiB
    storage: int = 1024 * TiB


@dataclass
class SimAgent:
    """One simulated agent (a KVM host, a primary or a backup storage)."""

    id: str
    kind: AgentKind
    capacity: Capacity = field(default_factory=Capacity)
    #: the bearer token the controller must present (and the agent sends back)
    token: str = ""
    #: the UUID the controller gave at connect (ping answers it back)
    host_uuid: str | None = None
    #: changes on every simulated restart, as a real agent's boot does
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    urls: list[str] = field(default_factory=list)
    events_url: str | None = None
    down: bool = False
    #: when it last answered a command (time.time()): while up it writes its heartbeats
    last_up: float = field(default_factory=time.time)
    #: the management IP the controller knows the host by (migration targets it)
    ip: str = ""
    domains: dict[str, Domain] = field(default_factory=dict)
    #: a backup storage's images: image uuid -> what ``/backup/image/info`` answers
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    l2: dict[str, dict[str, Any]] = field(default_factory=dict)
    dhcp: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: security groups defined on the host: group uuid -> its rules; and each NIC's groups by MAC
    security_groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    nic_groups: dict[str, list[str]] = field(default_factory=dict)
    #: storages mounted on this host (by storage uuid)
    mounts: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    commands: int = 0
    _used: tuple[int, int] | None = field(default=None, repr=False)

    def used_cpu(self) -> int:
        return sum(d.cpu for d in self.domains.values() if d.state != "Stopped")

    def used_memory(self) -> int:
        return sum(d.memory for d in self.domains.values() if d.state != "Stopped")

    def used_by_images(self) -> int:
        return sum(int(i.get("size", 0)) for i in self.images.values())

    def fits(self, cpu: int, memory: int) -> bool:
        """Whether ``cpu`` more vCPUs and ``memory`` more bytes fit on this host."""
        if self._used is None:
            self._used = (self.used_cpu(), self.used_memory())
        return (self._used[0] + cpu <= self.capacity.cpu
                and self._used[1] + memory <= self.capacity.memory)

    def set_state(self, dom: Domain, state: str) -> None:
        """Change a domain's state (keeping the capacity accounting right)."""
        if dom.uuid in self.domains:
            self._account(dom, -1)
            dom.state = state
            self._account(dom, +1)
        else:
            dom.state = state

    def put_domain(self, dom: Domain) -> None:
        self.pop_domain(dom.uuid)
        self.domains[dom.uuid] = dom
        self._account(dom, +1)

    def pop_domain(self, vm_uuid: str) -> Domain | None:
        dom = self.domains.pop(vm_uuid, None)
        if dom is not None:
            self._account(dom, -1)
        return dom

    def _account(self, dom: Domain, sign: int) -> None:
        if self._used is not None and dom.state != "Stopped":
            self._used = (self._used[0] + sign * dom.cpu, self._used[1] + sign * dom.memory)


    def summary(self) -> dict[str, Any]:
        """The agent as the control API shows it."""
        return {
            "id": self.id, "kind": self.kind, "hostUuid": self.host_uuid, "bootId": self.boot_id,
            "down": self.down, "urls": list(self.urls), "eventsUrl": self.events_url,
            "ip": self.ip, "commands": self.commands, "domains": len(self.domains),
            "capacity": asdict(self.capacity),
            "used": {"cpu": self.used_cpu(), "memory": self.used_memory(),
                     "storage": self.used_by_images()},
        }

    def dump(self) -> dict[str, Any]:
        """Everything the agent holds (for tests that check nothing was left behind)."""
        return {
            **self.summary(),
            "domainsByUuid": {k: asdict(v) for k, v in self.domains.items()},
            "images": dict(self.images), "l2": dict(self.l2), "dhcp": dict(self.dhcp),
            "mounts": dict(self.mounts),
        }


@dataclass
class StorageState:
    """One simulated primary storage (an NFS export, a local root, a Ceph cluster).

    Shared by every host that mounts it, as the real storage is: a volume
    created through host A is seen through host B.
    """

    uuid: str
    capacity: int = 1024 * TiB
    volumes: dict[str, Volume] = field(default_factory=dict)
    #: snapshot path (or ``pool/name@snap``) -> the volume it belongs to
    snapshots: dict[str, str] = field(default_factory=dict)
    #: image id -> size, in the image cache
    cache: dict[str, int] = field(default_factory=dict)
    initialised: bool = False
    #: NFS heartbeats: host uuid -> the id of the agent writing it (mounted with its host uuid)
    heartbeats: dict[str, str] = field(default_factory=dict)
    #: the sizes of ``volumes`` summed, kept by the methods below (a create checks the
    #: capacity, and summing every volume of a storage each time grew with the fleet)
    _volume_bytes: int = field(default=0, repr=False)

    def used(self) -> int:
        return self._volume_bytes + sum(self.cache.values())

    def add_volume(self, vol: Volume) -> None:
        self.pop_volume(vol.path)
        self.volumes[vol.path] = vol
        self._volume_bytes += vol.size

    def pop_volume(self, path: str) -> Volume | None:
        vol = self.volumes.pop(path, None)
        if vol is not None:
            self._volume_bytes -= vol.size
        return vol

    def resize_volume(self, vol: Volume, size: int) -> None:
        if self.volumes.get(vol.path) is vol:
            self._volume_bytes += size - vol.size
        vol.size = size

    def dump(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid, "capacity": self.capacity, "used": self.used(),
            "volumes": {k: asdict(v) for k, v in self.volumes.items()},
            "snapshots": dict(self.snapshots), "cache": dict(self.cache),
        }
