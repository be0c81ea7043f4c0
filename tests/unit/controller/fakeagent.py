"""An in-process stand-in for a host's kvmagent + storageagent (unit tests only).

It validates every body with the agents' own wire models (so the controller
must send what the real agents accept), speaks the async protocol (202, then a
callback delivered to the controller's /v1/agent-callbacks route), answers
GET /tasks/<id> and cancel, keeps the state a real host would (domains,
bridges, DHCP leases, volume files on shared storage) so tests can check that
nothing is left behind, and injects faults per command path.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from agentcore.models import Command, commands_in
from controller.dispatch.transport import AgentRequest, AgentResponse
from kvmagent import models as km
from storageagent import models as sm

#: path -> command model, from the agents' own declarations (commands without a
#: ``do_*`` handler below answer success with the reply model's defaults)
MODELS: dict[str, type[Command]] = commands_in(km, sm)

Deliver = Callable[[str, str, dict[str, Any]], None]


def ok(**fields: Any) -> dict[str, Any]:
    return {"success": True, "error": None, **fields}


def _cached(image_id: str, path: str, digest: str = "sha256:" + "ab" * 32) -> dict[str, Any]:
    """A ``CachedImage`` of the storageagent's reply models."""
    return {"imageId": image_id, "installPath": path, "format": "qcow2", "virtualSize": 1 << 30,
            "size": 1 << 20, "digest": digest}


def fail(code: str, message: str = "injected failure") -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message, "details": {}}}


@dataclass
class SharedStorage:
    """Files on primary storages (shared by all hosts, as NFS is)."""

    files: dict[tuple[str, str], int] = field(default_factory=dict)
    cache: dict[tuple[str, str], str] = field(default_factory=dict)
    mounted: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeHost:
    """One host: its kvmagent at ``kvm_url`` and storageagent at ``storage_url``."""

    registry: ClassVar[dict[str, FakeHost]] = {}
    models: ClassVar[dict[str, type[Command]]] = MODELS

    def __init__(self, ip: str, storage: SharedStorage, deliver: Deliver, token: str,
                 cpu: int = 32, memory: int = 128 << 30) -> None:
        self.ip = ip
        self.kvm_url = f"http://{ip}:7070"
        self.storage_url = f"http://{ip}:7071"
        self.storage = storage
        self.deliver = deliver
        self.token = token
        self.cpu, self.memory = cpu, memory
        self.host_uuid: str | None = None
        self.domains: dict[str, str] = {}
        self.bridges: set[str] = set()
        self.leases: dict[str, dict[str, str]] = {}
        #: (vm, volume) -> the file QEMU writes, once a live snapshot or merge moved it
        self.active: dict[tuple[str, str], str] = {}
        self.faults: dict[str, str] = {}
        self.hang: set[str] = set()
        self.drop_callback: set[str] = set()
        self.down = False
        #: when it last answered; its NFS heartbeats are that old while it is down...
        self.last_up = time.time()
        #: ...unless it still writes the share (only its management network is cut)
        self.still_writes = False
        #: storages it mounted with its host uuid: it writes heartbeats there
        self.beating: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self._mu = threading.Lock()
        self._pool = ThreadPoolExecutor(8)
        FakeHost.registry[ip] = self

    # -- transport side ---------------------------------------------------

    def handle(self, req: AgentRequest) -> AgentResponse:
        from controller.dispatch.transport import TransportError

        if self.down:
            raise TransportError(f"connection refused: {req.agent_url}")
        self.last_up = time.time()
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return AgentResponse(401, fail("UNAUTHORIZED"))
        if req.method == "GET" and req.path.startswith("/tasks/"):
            task = self.tasks.get(req.path.split("/")[2])
            return AgentResponse(200, task) if task else AgentResponse(404, fail("NOT_FOUND"))
        if req.path == "/tasks/cancel-jobs":  # a restarted controller stops a dead job's tasks
            prefixes = tuple(f"{j}." for j in (req.body or {}).get("jobUuids", []))
            for uuid, task in self.tasks.items():
                if uuid.startswith(prefixes) and task["state"] == "running":
                    task.update(state="cancelled", reply=fail("CANCELLED"))
            return AgentResponse(200, {"tasks": []})
        if req.path.startswith("/tasks/") and req.path.endswith("/cancel"):
            task = self.tasks.get(req.path.split("/")[2])
            if task and task["state"] == "running":
                task.update(state="cancelled", reply=fail("CANCELLED"))
            return AgentResponse(200, task or {})
        model = self.models.get(req.path)
        if model is None:
            return AgentResponse(404, fail("NOT_FOUND", f"no such path: {req.path}"))
        try:
            cmd = model.model_validate(dict(req.body or {}))
        except ValidationError as e:
            return AgentResponse(400, fail("INVALID_REQUEST", str(e)))
        with self._mu:
            self.calls.append((req.path, dict(req.body or {})))
        callback = req.headers.get("callbackurl")
        if not callback:
            return AgentResponse(200, self._execute(req.path, cmd))
        task_uuid = req.headers.get("taskuuid") or uuidlib.uuid4().hex
        self.tasks[task_uuid] = {"taskUuid": task_uuid, "path": req.path, "state": "running",
                                 "reply": None}
        if req.path not in self.hang:
            self._pool.submit(self._run_async, task_uuid, req.path, cmd)
        return AgentResponse(202, {"taskUuid": task_uuid})

    def _run_async(self, task_uuid: str, path: str, cmd: BaseModel) -> None:
        reply = self._execute(path, cmd)
        self.tasks[task_uuid].update(state="succeeded" if reply["success"] else "failed",
                                     reply=reply)
        if path not in self.drop_callback:
            self.deliver(task_uuid, "reply", reply)

    def _execute(self, path: str, cmd: Any) -> dict[str, Any]:
        if path in self.faults:
            return fail(self.faults[path])
        try:
            handler = getattr(self, "do_" + path.strip("/").replace("/", "_").replace("-", "_"))
        except AttributeError:
            return ok()
        with self._mu:
            result: dict[str, Any] = handler(cmd)
            return result

    # -- kvmagent ---------------------------------------------------------

    def do_host_connect(self, c: km.ConnectCmd) -> dict[str, Any]:
        self.host_uuid = c.host_uuid
        self.bridges.clear()
        return ok(hostUuid=c.host_uuid, eventsUrl=c.events_url, version="fake")

    def do_host_ping(self, c: km.PingCmd) -> dict[str, Any]:
        return ok(hostUuid=self.host_uuid, version="fake")

    def do_host_facts(self, c: km.FactsCmd) -> dict[str, Any]:
        return ok(cpuCount=self.cpu, memoryTotal=self.memory, arch="x86_64")

    def do_host_capacity(self, c: km.CapacityCmd) -> dict[str, Any]:
        return ok(cpuTotal=self.cpu, memoryTotal=self.memory)

    def do_vm_start(self, c: km.StartVmCmd) -> dict[str, Any]:
        for v in [c.root_volume, *c.data_volumes]:
            if not any(v.install_path.endswith("/" + p) for (_, p) in self.storage.files):
                return fail("NOT_FOUND", f"no volume file {v.install_path}")
        for n in c.nics:
            if n.bridge_name not in self.bridges:
                return fail("NOT_FOUND", f"no bridge {n.bridge_name}")
        self.domains[c.vm_uuid] = "Running"
        return ok(vmUuid=c.vm_uuid, state="Running")

    def do_vm_stop(self, c: km.StopVmCmd) -> dict[str, Any]:
        self.domains.pop(c.vm_uuid, None)
        return ok(vmUuid=c.vm_uuid, state="Stopped")

    def do_vm_destroy(self, c: km.DestroyVmCmd) -> dict[str, Any]:
        self.domains.pop(c.vm_uuid, None)
        return ok(vmUuid=c.vm_uuid, state="Stopped")

    def do_vm_reboot(self, c: km.RebootVmCmd) -> dict[str, Any]:
        return ok(vmUuid=c.vm_uuid, state="Running") if c.vm_uuid in self.domains else fail("NOT_FOUND")

    def do_vm_pause(self, c: km.PauseVmCmd) -> dict[str, Any]:
        self.domains[c.vm_uuid] = "Paused"
        return ok(vmUuid=c.vm_uuid, state="Paused")

    def do_vm_resume(self, c: km.ResumeVmCmd) -> dict[str, Any]:
        self.domains[c.vm_uuid] = "Running"
        return ok(vmUuid=c.vm_uuid, state="Running")

    def do_vm_sync(self, c: km.SyncVmCmd) -> dict[str, Any]:
        return ok(states=dict(self.domains))

    def do_vm_check_state(self, c: km.CheckVmStateCmd) -> dict[str, Any]:
        return ok(states={u: self.domains.get(u, "Stopped") for u in c.vm_uuids})

    def do_vm_migrate(self, c: km.MigrateVmCmd) -> dict[str, Any]:
        dest = FakeHost.registry.get(c.dest_host_ip)
        if dest is None or c.vm_uuid not in self.domains:
            return fail("MIGRATION_FAILED")
        dest.domains[c.vm_uuid] = self.domains.pop(c.vm_uuid)
        return ok(vmUuid=c.vm_uuid, destHostIp=c.dest_host_ip)

    def do_vm_volume_snapshot(self, c: km.SnapshotVolumeCmd) -> dict[str, Any]:
        old = c.volume.install_path
        new_rel = "volumes/" + c.new_install_path.rsplit("/volumes/", 1)[1]
        with self.storage.lock:
            for (sid, p) in list(self.storage.files):
                if old.endswith("/" + p):
                    self.storage.files[(sid, new_rel)] = 1
        self.active[(c.vm_uuid, c.volume.volume_uuid)] = c.new_install_path
        return ok(snapshotInstallPath=old, newInstallPath=c.new_install_path)

    def do_vm_volume_merge(self, c: km.MergeSnapshotCmd) -> dict[str, Any]:
        key = (c.vm_uuid, c.volume.volume_uuid)
        if c.mode == "commit" and self.active.get(key) == c.base_install_path:
            return ok(installPath=c.base_install_path)  # already pivoted (as the real agent)
        if self.active.get(key, c.volume.install_path) != c.volume.install_path:
            return fail("INVALID_REQUEST", f"{c.volume.install_path} is not the active layer")
        self.active[key] = c.base_install_path or c.volume.install_path
        return ok(installPath=self.active[key])

    def do_network_l2_create(self, c: km.CreateL2Cmd) -> dict[str, Any]:
        self.bridges.add(c.bridge_name)
        return ok(bridgeName=c.bridge_name)

    def do_network_l2_delete(self, c: km.DeleteL2Cmd) -> dict[str, Any]:
        self.bridges.discard(c.bridge_name)
        return ok(bridgeName=c.bridge_name)

    def do_network_dhcp_delete(self, c: km.DeleteDhcpCmd) -> dict[str, Any]:
        self.leases.pop(c.l3_network_uuid, None)
        return ok()

    def do_network_dhcp_apply(self, c: km.DhcpApplyCmd) -> dict[str, Any]:
        if c.bridge_name not in self.bridges:
            return fail("NOT_FOUND", f"no bridge {c.bridge_name}")
        self.leases[c.l3_network_uuid] = {lease.mac: lease.ip for lease in c.leases}
        return ok(leases=len(c.leases))

    def do_network_dhcp_add(self, c: km.DhcpAddCmd) -> dict[str, Any]:
        if c.l3_network_uuid not in self.leases:
            return fail("NOT_FOUND", f"no DHCP server for {c.l3_network_uuid}")
        have = self.leases[c.l3_network_uuid]
        ips = {lease.ip for lease in c.leases}
        for mac in [m for m, ip in have.items() if ip in ips]:
            del have[mac]
        have.update({lease.mac: lease.ip for lease in c.leases})
        return ok(leases=len(have))

    def do_network_dhcp_release(self, c: km.DhcpReleaseCmd) -> dict[str, Any]:
        for mac in c.macs:
            self.leases.get(c.l3_network_uuid, {}).pop(mac, None)
        return ok()

    # -- storageagent ------------------------------------------------------

    def do_storage_mount(self, c: sm.MountCmd) -> dict[str, Any]:
        self.storage.mounted.add((self.ip, c.storage_uuid))
        if c.host_uuid is not None:
            self.beating.add(c.storage_uuid)
        return ok(mountPath=f"/mnt/{c.storage_uuid}")

    def do_storage_heartbeat_age(self, c: sm.HeartbeatAgeCmd) -> dict[str, Any]:
        beater = next((h for h in FakeHost.registry.values() if h.host_uuid == c.host_uuid
                       and c.storage_uuid in h.beating), None)
        if beater is None:
            return ok(age=None)
        return ok(age=time.time() - beater.last_up if beater.down and not beater.still_writes else 0.0)

    def do_storage_init(self, c: sm.InitCmd) -> dict[str, Any]:
        self.storage.mounted.add((self.ip, c.storage_uuid))
        return ok(mountPath=c.mount_path)

    def do_storage_cache_image(self, c: sm.CacheImageCmd) -> dict[str, Any]:
        src = c.source
        # a fake sftpbackup agent there: it must hold the image
        image_at = getattr(FakeHost.registry.get(src.host), "image_at", None) \
            if isinstance(src, sm.SftpSource) else None
        if isinstance(src, sm.SftpSource) and image_at is not None and \
                image_at(src.store_root, src.image_id) is None:
            return fail("NOT_FOUND", f"no image {src.image_id} in the store")
        path = f"cache/{c.image_id}.qcow2"
        self.storage.cache[(c.storage_uuid, c.image_id)] = path
        return ok(image=_cached(c.image_id, path, c.digest), downloaded=True)

    def do_storage_cache_evict(self, c: sm.EvictCacheCmd) -> dict[str, Any]:
        return ok(evicted=self.storage.cache.pop((c.storage_uuid, c.image_id), None) is not None)

    def do_storage_unmount(self, c: sm.UnmountCmd) -> dict[str, Any]:
        mounted = (self.ip, c.storage_uuid) in self.storage.mounted
        self.storage.mounted.discard((self.ip, c.storage_uuid))
        return ok(mountPath=f"/mnt/{c.storage_uuid}", wasMounted=mounted)

    def do_storage_cache_list(self, c: sm.ListCacheCmd) -> dict[str, Any]:
        return ok(images=[_cached(image, path) for (su, image), path in list(self.storage.cache.items())
                          if su == c.storage_uuid])

    def do_storage_volume_create_template(self, c: sm.CreateTemplateCmd) -> dict[str, Any]:
        size = self.storage.files.get((c.storage_uuid, c.install_path))
        if size is None:
            return fail("NOT_FOUND", "no such volume")
        return self._create(c.storage_uuid, c.template_path, size)

    def do_storage_volume_upload_template(self, c: sm.UploadTemplateCmd) -> dict[str, Any]:
        if (c.storage_uuid, c.install_path) not in self.storage.files:
            return fail("NOT_FOUND", "no such volume")
        store = FakeHost.registry.get(c.target.host)
        if store is not None and hasattr(store, "receive"):  # a fake sftpbackup agent there
            store.receive(c.target.store_root, c.name)
        return ok(imageId=c.name, digest="sha256:" + "cd" * 32, size=5 << 20,
                  virtualSize=1 << 30, format="qcow2")

    def _create(self, storage_uuid: str, path: str, size: int) -> dict[str, Any]:
        with self.storage.lock:
            if (storage_uuid, path) in self.storage.files:
                return fail("CONFLICT", f"{path} exists")
            self.storage.files[(storage_uuid, path)] = size
        return ok(volume={"installPath": path, "format": "qcow2", "virtualSize": size,
                          "actualSize": 196608})

    def do_storage_volume_create_root(self, c: sm.CreateRootVolumeCmd) -> dict[str, Any]:
        if (c.storage_uuid, c.image_id) not in self.storage.cache:
            return fail("NOT_FOUND", "image not cached")
        return self._create(c.storage_uuid, c.install_path, c.size or (1 << 30))

    def do_storage_volume_create_from_template(self, c: sm.CreateVolumeFromTemplateCmd) -> dict[str, Any]:
        if (c.storage_uuid, c.image_id) not in self.storage.cache:
            return fail("NOT_FOUND", "image not cached")
        return self._create(c.storage_uuid, c.install_path, c.size or (1 << 30))

    def do_storage_volume_create_from_store(self, c: sm.CreateVolumeFromStoreCmd) -> dict[str, Any]:
        src = c.source
        image_at = getattr(FakeHost.registry.get(src.host), "image_at", None)
        if image_at is not None and image_at(src.store_root, src.image_id) is None:
            return fail("NOT_FOUND", f"no image {src.image_id} in the store")
        return self._create(c.storage_uuid, c.install_path, 1 << 30)

    def do_storage_volume_create_empty(self, c: sm.CreateEmptyVolumeCmd) -> dict[str, Any]:
        return self._create(c.storage_uuid, c.install_path, c.size)

    def do_storage_volume_delete(self, c: sm.DeleteVolumeCmd) -> dict[str, Any]:
        with self.storage.lock:
            gone = self.storage.files.pop((c.storage_uuid, c.install_path), None)
        return ok(deleted=gone is not None)

    def do_storage_snapshot_create(self, c: sm.CreateSnapshotCmd) -> dict[str, Any]:
        with self.storage.lock:
            self.storage.files[(c.storage_uuid, c.snapshot_path)] = 1
        return ok(volume={"installPath": c.install_path, "format": "qcow2", "virtualSize": 1,
                          "actualSize": 1})

    def do_storage_snapshot_revert(self, c: sm.RevertSnapshotCmd) -> dict[str, Any]:
        if (c.storage_uuid, c.snapshot_path) not in self.storage.files:
            return fail("NOT_FOUND", "no such snapshot")
        return ok(volume={"installPath": c.install_path, "format": "qcow2", "virtualSize": 1,
                          "actualSize": 1})
