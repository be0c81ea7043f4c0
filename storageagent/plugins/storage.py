"""Storage commands: mount/unmount NFS, init local and shared mount points,
ping and capacity."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path

from agentcore.errors import AgentError, Conflict, InUse, ProcessFailed
from agentcore.fsmode import SHARED, make_dirs, unsearchable_ancestor
from agentcore.plugin import Plugin, command
from agentcore.task import TaskContext
from storageagent.heartbeat import Heartbeats, age_of
from storageagent.layout import META_DIR, StorageRoot
from storageagent.models import (
    Capacity,
    CapacityCmd,
    CapacityReply,
    HeartbeatAgeCmd,
    HeartbeatAgeReply,
    InitCmd,
    InitReply,
    MountCmd,
    MountReply,
    PingCmd,
    PingReply,
    UnmountCmd,
    UnmountReply,
)
from storageagent.service import StorageService

PROBE_FILE = f"{META_DIR}/ping"

log = logging.getLogger(__name__)


class StorageUnreachable(AgentError):
    """The storage did not answer a write-and-read test in time."""

    code = "STORAGE_UNREACHABLE"
    default_message = "the storage did not answer in time"


def capacity(sr: StorageRoot) -> Capacity:
    """statvfs of the root, and the allocated bytes of every file under it."""
    st = os.statvfs(sr.root)
    used = 0
    for dirpath, _dirs, files in os.walk(sr.root):
        for name in files:
            try:
                used += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return Capacity(
        total_bytes=st.f_blocks * st.f_frsize,
        available_bytes=st.f_bavail * st.f_frsize,
        used_by_kvmcloud_bytes=used,
    )


def _warn_if_unsearchable(sr: StorageRoot) -> None:
    # QEMU runs as another user: a 0700 directory above the root makes every VM
    # start fail later with a permission error, so say so now, naming it
    blocked = unsearchable_ancestor(sr.root)
    if blocked is not None:
        log.warning("QEMU cannot reach storage %s: %s is not searchable by others (chmod o+x it)",
                    sr.root, blocked)


def _write_read(path: Path, token: bytes) -> None:
    make_dirs(path.parent, SHARED)
    with open(path, "wb") as f:
        f.write(token)
        f.flush()
        os.fsync(f.fileno())
    if path.read_bytes() != token:
        raise OSError("read back other bytes than were written")


class StoragePlugin(Plugin):
    """Mounting, claiming and probing file-based primary storage."""

    def __init__(self, service: StorageService) -> None:
        self.svc = service
        self._probes: dict[str, threading.Thread] = {}
        self._probe_mu = threading.Lock()
        self.heartbeats = Heartbeats(service.config.heartbeat_interval)

    def start(self) -> None:
        self.svc.sweep()

    def stop(self) -> None:
        self.heartbeats.stop_all()

    @command(lock=lambda c: f"storage:{c.storage_uuid}")
    def mount(self, ctx: TaskContext, cmd: MountCmd) -> MountReply:
        """Mount the NFS export ``url`` at ``<mount_base>/<storageUuid>`` and claim it.

        Idempotent: an export already mounted there is accepted; a different
        export there, or a non-empty directory, is refused with ``CONFLICT``.
        """
        target = self.svc.mount_path_of(cmd.storage_uuid)
        sr = self.svc.root(cmd.storage_uuid, str(target))
        make_dirs(target, SHARED)
        already = False
        if self.svc.mounter.is_mounted(target):
            if not self.svc.mounter.serves(target, cmd.url):
                raise Conflict("another filesystem is mounted at the mount path",
                               field="url", mountPath=str(target))
            already = True
        else:
            if any(target.iterdir()):
                raise Conflict("refusing to mount over a non-empty directory",
                               field="storageUuid", mountPath=str(target))
            self.svc.mounter.mount(ctx, cmd.url, cmd.nfs_version, cmd.options, target)
        try:
            sr.claim("nfs")
        except AgentError:
            if not already:
                self.svc.mounter.unmount(ctx, target)
            raise
        self.svc.remember(sr)
        _warn_if_unsearchable(sr)
        if cmd.host_uuid is not None:
            self.heartbeats.start(cmd.storage_uuid, sr.root, cmd.host_uuid)
        return MountReply(mount_path=str(sr.root), already_mounted=already, capacity=capacity(sr))

    @command(lock=lambda c: f"storage:{c.storage_uuid}")
    def unmount(self, ctx: TaskContext, cmd: UnmountCmd) -> UnmountReply:
        """Unmount the storage's export; a no-op when nothing is mounted there."""
        target = self.svc.mount_path_of(cmd.storage_uuid)
        self.heartbeats.stop(cmd.storage_uuid)
        if not self.svc.mounter.is_mounted(target):
            self.svc.forget(cmd.storage_uuid)
            return UnmountReply(mount_path=str(target), was_mounted=False)
        try:
            self.svc.mounter.unmount(ctx, target)
        except ProcessFailed as e:
            if "busy" in str(e.details.get("stderr", "")).lower():
                raise InUse("the storage is busy (volumes are open)", mountPath=str(target)) from e
            raise
        self.svc.forget(cmd.storage_uuid)
        return UnmountReply(mount_path=str(target), was_mounted=True)

    @command(lock=lambda c: f"storage:{c.storage_uuid}")
    def init(self, ctx: TaskContext, cmd: InitCmd) -> InitReply:
        """Claim a local directory or an operator-mounted shared filesystem as this storage.

        The directory is created for ``local``; a ``sharedmountpoint`` must
        already be a mount point. Idempotent for the same storage UUID.
        """
        sr = self.svc.root(cmd.storage_uuid, cmd.mount_path)
        if cmd.type == "local":
            make_dirs(sr.root, SHARED)
        elif not self.svc.mounter.is_mounted(sr.root):
            raise Conflict("a shared mount point must be mounted first",
                           field="mountPath", mountPath=str(sr.root))
        sr.claim(cmd.type)
        self.svc.remember(sr)
        _warn_if_unsearchable(sr)
        return InitReply(mount_path=str(sr.root), capacity=capacity(sr))

    @command()
    def ping(self, ctx: TaskContext, cmd: PingCmd) -> PingReply:
        """Write and read back a small file within ``probeTimeout`` seconds; for NFS
        also ask the server (through libnfs) within the same time.

        The file probe runs in its own thread so a hung mount is reported as
        ``STORAGE_UNREACHABLE`` instead of blocking the agent.
        """
        t0 = time.monotonic()
        budget = ctx.remaining(cmd.probe_timeout)
        self._probe_file(cmd.storage_uuid, cmd.mount_path, budget)
        if cmd.url is not None:
            left = max(0.1, budget - (time.monotonic() - t0))
            try:
                ctx.run(["nfs-ls", _libnfs_url(cmd.url)], timeout=left)
            except AgentError as e:
                raise StorageUnreachable("the NFS server did not answer", url=cmd.url,
                                         cause=e.code, timeout=cmd.probe_timeout) from e
        return PingReply(storage_uuid=cmd.storage_uuid,
                         latency_ms=round((time.monotonic() - t0) * 1000, 3))

    def _probe_file(self, storage_uuid: str, mount_path: str, timeout: float) -> None:
        """Find the storage and write-and-read its probe file in a thread of its own:
        on a hung mount even resolving the root's path blocks."""
        with self._probe_mu:
            stuck = self._probes.get(storage_uuid)
            if stuck is not None and stuck.is_alive():
                raise StorageUnreachable("an earlier probe of the storage is still hanging",
                                         storageUuid=storage_uuid)
            errors: list[BaseException] = []

            def probe() -> None:
                try:
                    sr = self.svc.open(storage_uuid, mount_path)
                    _write_read(sr.root / PROBE_FILE, uuid.uuid4().bytes)
                except BaseException as e:  # reported below
                    errors.append(e)

            t = threading.Thread(target=probe, daemon=True, name=f"probe-{storage_uuid}")
            self._probes[storage_uuid] = t
            t.start()
        t.join(timeout)
        if t.is_alive():
            raise StorageUnreachable(storageUuid=storage_uuid, timeout=timeout)
        if errors:
            if isinstance(errors[0], AgentError):
                raise errors[0]
            raise StorageUnreachable(f"write-and-read test failed: {errors[0]}",
                                     storageUuid=storage_uuid)

    @command()
    def heartbeat_age(self, ctx: TaskContext, cmd: HeartbeatAgeCmd) -> HeartbeatAgeReply:
        """How long ago ``hostUuid`` last wrote its heartbeat on the mounted NFS storage
        (by this host's clock: hosts' clocks are assumed kept in step by NTP)."""
        sr = self.svc.open(cmd.storage_uuid, str(self.svc.mount_path_of(cmd.storage_uuid)),
                           field="storageUuid")
        return HeartbeatAgeReply(age=age_of(sr.root, cmd.host_uuid))

    @command()
    def capacity(self, ctx: TaskContext, cmd: CapacityCmd) -> CapacityReply:
        """Total and available bytes of the storage, and what kvmcloud's files use."""
        sr = self.svc.open(cmd.storage_uuid, cmd.mount_path)
        return CapacityReply(capacity=capacity(sr))


def _libnfs_url(url: str) -> str:
    """``server:/path`` as a libnfs URL (NFSv3, which needs no pseudo-root mapping)."""
    server, _, path = url.partition(":")
    return f"nfs://{server}{path}"
