"""The one seam between the controller and its agents.

A :class:`Transport` does a single thing: deliver one HTTP-shaped exchange
(method, agent URL, path, JSON body, headers) and give back the status and the
JSON answer. Everything the agent protocol needs is built on it by
:class:`AgentClient`: asynchronous commands (``taskuuid`` + ``callbackurl``,
answered ``202``), synchronous ones (no ``callbackurl``), ``GET /tasks/<id>``
and ``POST /tasks/<id>/cancel``. So the real network (:class:`HttpTransport`),
an in-process agent (:class:`InProcessTransport`, e.g. a Flask test client or
the simulator) and a test's fault-injecting fake are interchangeable, as in
httpx's ``MockTransport``.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class AgentRequest:
    """One exchange with an agent."""

    method: str
    agent_url: str
    path: str
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0


@dataclass(frozen=True)
class AgentResponse:
    """What came back: HTTP status and the decoded JSON body."""

    status: int
    body: dict[str, Any]


class TransportError(Exception):
    """The agent could not be reached (refused, reset, timed out)."""


class Transport(ABC):
    """Delivers one request to an agent. Implementations must be thread-safe."""

    @abstractmethod
    def handle(self, request: AgentRequest) -> AgentResponse:
        """Send ``request``; raise :class:`TransportError` if the agent is unreachable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class HttpTransport(Transport):
    """Real HTTP/1.1 with keep-alive connections pooled per agent address.

    Built on the standard library's ``http.client`` rather than httpx: the
    controller sends a few small commands per VM, and httpx's layers (request
    and header models, auth and redirect handling, streams) cost more CPU per
    command than the controller's own work for it. A pooled connection the
    agent has closed is noticed before reuse (it polls readable) and, should
    it close at the same moment, the request is sent once more on a fresh
    connection: agent commands are idempotent by their ``taskuuid``.
    """

    def __init__(self, max_connections: int = 200, verify: bool | str = True) -> None:
        self._max_idle = max_connections
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._mu = threading.Lock()

    def handle(self, request: AgentRequest) -> AgentResponse:
        url = request.agent_url.rstrip("/") + request.path
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"{request.method} {url}: not an http(s) URL")
        key = (parts.scheme, parts.hostname,
               parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Accept": "application/json", **request.headers}
        body = None
        if request.body is not None:
            body = json.dumps(request.body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn, reused = self._checkout(key, request.timeout)
            try:
                conn.request(request.method, target, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                if reused and attempt == 1:
                    continue  # the agent closed this idle connection as we sent: once more
                raise TransportError(f"{request.method} {url}: {type(e).__name__}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError(f"{request.method} {url}: {type(e).__name__}: {e}") from e
            if resp.will_close:
                conn.close()
            else:
                self._checkin(key, conn)
            return AgentResponse(resp.status, _decode(data))
        raise AssertionError("unreachable")

    def _checkout(self, key: tuple[str, str, int],
                  timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection still open (True), or a new one (False)."""
        while True:
            with self._mu:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                break
            if conn.sock is not None and _open(conn.sock):
                conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=self._ssl_context()), False
        return http.client.HTTPConnection(host, port, timeout=timeout), False

    def _checkin(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._mu:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        conn.close()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if self._verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(
                    cafile=self._verify if isinstance(self._verify, str) else None)
            self._ssl = ctx
        return self._ssl

    def close(self) -> None:
        with self._mu:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _open(sock: socket.socket) -> bool:
    """True while an idle keep-alive connection has nothing to read (EOF means closed)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {"success": False, "error": {"code": "BAD_REPLY",
                                            "message": data[:500].decode(errors="replace"),
                                            "details": {}}}
    return body if isinstance(body, dict) else {"value": body}


Handler = Callable[[AgentRequest], AgentResponse]


class InProcessTransport(Transport):
    """Routes each agent URL to a function in this process (a test agent, the simulator)."""

    def __init__(self, agents: Mapping[str, Handler] | None = None) -> None:
        self._agents: dict[str, Handler] = {k.rstrip("/"): v for k, v in (agents or {}).items()}
        self._mu = threading.Lock()

    def register(self, agent_url: str, handler: Handler) -> None:
        with self._mu:
            self._agents[agent_url.rstrip("/")] = handler

    def unregister(self, agent_url: str) -> None:
        with self._mu:
            self._agents.pop(agent_url.rstrip("/"), None)

    def handle(self, request: AgentRequest) -> AgentResponse:
        with self._mu:
            handler = self._agents.get(request.agent_url.rstrip("/"))
        if handler is None:
            raise TransportError(f"no agent at {request.agent_url}")
        return handler(request)


def flask_handler(app: Any) -> Handler:
    """A handler that serves requests with a WSGI app's test client (an in-process agent)."""
    client = app.test_client()

    def handle(request: AgentRequest) -> AgentResponse:
        resp = client.open(request.path, method=request.method, json=request.body,
                           headers=dict(request.headers))
        data = resp.get_json(silent=True)
        return AgentResponse(resp.status_code, data if isinstance(data, dict) else {})

    return handle
