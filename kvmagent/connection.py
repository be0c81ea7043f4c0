"""The agent's libvirt connection: event loop, keepalive and reconnect.

One connection is shared by every command (libvirt connections are
thread-safe). A daemon thread runs libvirt's default event loop, so keepalive
and the close callback notice a dead libvirtd at once. A watcher thread then
reopens the connection (libvirtd restarted) and calls the ``on_connect``
listeners again, so event registrations survive. Commands call :meth:`get`,
which reconnects on demand and raises :class:`HypervisorUnavailable` (a clean
command error, never an agent exit) while libvirtd is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from agentcore.errors import AgentError

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_started = False


class HypervisorUnavailable(AgentError):
    code = "HYPERVISOR_UNAVAILABLE"
    default_message = "libvirtd is not reachable"


def start_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a thread (once)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:
                    log.exception("libvirt event loop iteration failed")

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _quiet_libvirt_errors(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; errors are handled as exceptions."""


class LibvirtConnection:
    """A self-healing connection to one libvirtd."""

    def __init__(self, uri: str, *, events: bool = True, retry_interval: float = 1.0) -> None:
        self.uri = uri
        self.events = events
        self.retry_interval = retry_interval
        self._conn: libvirt.virConnect | None = None
        self._mu = threading.RLock()
        self._listeners: list[Callable[[libvirt.virConnect], None]] = []
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None
        self.generation = 0
        libvirt.registerErrorHandler(_quiet_libvirt_errors, None)

    def on_connect(self, listener: Callable[[libvirt.virConnect], None]) -> None:
        """Call ``listener(conn)`` now (if connected) and after every reconnect."""
        with self._mu:
            self._listeners.append(listener)
            conn = self._conn
        if conn is not None:
            listener(conn)

    def start(self) -> None:
        """Connect (if libvirtd is up) and watch the connection from now on."""
        if self.events:
            start_event_loop()
        try:
            self.get()
        except HypervisorUnavailable:
            log.warning("libvirtd at %s is not reachable yet; will retry", self.uri)
        self._watcher = threading.Thread(target=self._watch, name="libvirt-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._mu:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass

    @property
    def connected(self) -> bool:
        with self._mu:
            return self._conn is not None

    def get(self) -> libvirt.virConnect:
        """The live connection; reconnects if needed."""
        with self._mu:
            if self._conn is not None:
                return self._conn
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                raise HypervisorUnavailable(uri=self.uri, reason=str(e)) from None
            if self.events:
                try:
                    conn.setKeepAlive(2, 3)
                    conn.registerCloseCallback(self._closed_cb, None)
                except libvirt.libvirtError:
                    log.warning("keepalive/close callback unavailable on %s", self.uri)
            self._conn = conn
            self.generation += 1
            listeners = list(self._listeners)
        log.info("connected to libvirt at %s", self.uri)
        for listener in listeners:
            try:
                listener(conn)
            except Exception:
                log.exception("libvirt on-connect listener failed")
        return conn

    def lost(self, conn: libvirt.virConnect | None = None) -> None:
        """Forget a connection that failed (a command saw VIR_ERR_SYSTEM_ERROR, say)."""
        with self._mu:
            if conn is not None and conn is not self._conn:
                return
            self._conn = None
        self._wake.set()

    def _closed_cb(self, conn: libvirt.virConnect, reason: int, _opaque: Any) -> None:
        log.warning("libvirt connection to %s closed (reason %d); reconnecting", self.uri, reason)
        self.lost(conn)

    def _watch(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.retry_interval)
            self._wake.clear()
            if self._closed.is_set():
                return
            with self._mu:
                conn = self._conn
            if conn is not None:
                try:
                    if conn.isAlive():
                        continue
                except libvirt.libvirtError:
                    pass
                self.lost(conn)
            try:
                self.get()
            except HypervisorUnavailable:
                continue
