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

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx


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
    """Real HTTP with pooled keep-alive connections (httpx)."""

    def __init__(self, max_connections: int = 200, verify: bool | str = True) -> None:
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        self._client = httpx.Client(limits=limits, verify=verify)

    def handle(self, request: AgentRequest) -> AgentResponse:
        url = request.agent_url.rstrip("/") + request.path
        try:
            resp = self._client.request(
                request.method, url, json=request.body, headers=dict(request.headers),
                timeout=request.timeout,
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{request.method} {url}: {type(e).__name__}: {e}") from e
        try:
            body = resp.json() if resp.content else {}
        except ValueError:
            body = {"success": False, "error": {"code": "BAD_REPLY", "message": resp.text[:500],
                                                 "details": {}}}
        return AgentResponse(resp.status_code, body if isinstance(body, dict) else {"value": body})

    def close(self) -> None:
        self._client.close()


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
