"""Heartbeat files on shared storage, for the controller's HA fencing.

While an NFS storage is mounted for a host, the agent rewrites
``<root>/.kvmcloud/heartbeats/<hostUuid>`` every ``interval`` seconds, each
storage in a thread of its own (a hung mount hangs only its own beat). Any
other host of the storage can then tell how long ago the host last wrote
there (:func:`age_of`): a host that stopped answering the controller but
still writes the share is alive, and its VMs must not start elsewhere.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from storageagent.layout import META_DIR

HEARTBEAT_DIR = f"{META_DIR}/heartbeats"
#: seconds a stop waits for a beat under way (an unmount right after must not find the file open)
STOP_WAIT = 2.0

log = logging.getLogger(__name__)


def heartbeat_file(root: Path, host_uuid: str) -> Path:
    return root / HEARTBEAT_DIR / host_uuid


def beat(root: Path, host_uuid: str) -> None:
    """Write the host's heartbeat file (a new file renamed over the old: never torn).

    Only into a claimed storage (its metadata directory there): after an unmount the
    empty mount point must stay empty, or the next mount would refuse it."""
    path = heartbeat_file(root, host_uuid)
    if not (root / META_DIR).is_dir():
        raise FileNotFoundError(f"{root} is not a claimed storage (unmounted?)")
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{host_uuid}.tmp")
    with open(tmp, "w") as f:
        f.write(f"{time.time():.3f}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def age_of(root: Path, host_uuid: str, now: float | None = None) -> float | None:
    """Seconds since the host last wrote its heartbeat here (None: it never did).

    Opened, not stat()ed: an NFS client revalidates a file's attributes on open
    (close-to-open consistency), where a stat may answer from its attribute cache,
    up to a minute old: a live host's heartbeat would look stale."""
    try:
        with open(heartbeat_file(root, host_uuid), "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now is None else now) - mtime)


class Heartbeats:
    """The beating storages of this agent: one thread each, stopped on unmount or shutdown."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._beats: dict[str, tuple[threading.Event, threading.Thread]] = {}
        self._mu = threading.Lock()

    def start(self, storage_uuid: str, root: Path, host_uuid: str) -> None:
        """Beat for ``host_uuid`` on the storage (again: the old beat stops)."""
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop, root, host_uuid), daemon=True,
                                  name=f"heartbeat-{storage_uuid}")
        self.stop(storage_uuid)
        with self._mu:
            self._beats[storage_uuid] = (stop, thread)
        thread.start()

    def stop(self, storage_uuid: str) -> None:
        """Stop the storage's beat, waiting a little for a write under way (not for a hung one)."""
        with self._mu:
            beat_ = self._beats.pop(storage_uuid, None)
        if beat_ is not None:
            beat_[0].set()
            beat_[1].join(STOP_WAIT)

    def stop_all(self) -> None:
        with self._mu:
            uuids = list(self._beats)
        for storage_uuid in uuids:
            self.stop(storage_uuid)

    def beating(self) -> list[str]:
        with self._mu:
            return sorted(self._beats)

    def _run(self, stop: threading.Event, root: Path, host_uuid: str) -> None:
        while not stop.is_set():
            try:
                beat(root, host_uuid)
            except OSError as e:
                log.warning("heartbeat on %s failed: %s", root, e)
            stop.wait(self.interval)
