"""The dispatcher: agent commands with callbacks, deadlines, polling and cancel.

``call()`` registers a future under a fresh ``taskuuid`` *before* sending, so
a fast callback can never be missed, then POSTs the command with
``callbackurl``. The reply arrives at ``POST /v1/agent-callbacks`` and
resolves the future (:meth:`Dispatcher.on_callback`). A watchdog thread polls
``GET /tasks/<id>`` for calls whose callback is late, and at the deadline
polls once more and then cancels the task on the agent and fails the call
with ``TIMEOUT``. Nothing blocks a thread except the caller waiting on its own
future.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from controller.dispatch.transport import AgentRequest, Transport, TransportError

log = logging.getLogger(__name__)

ProgressSink = Callable[[dict[str, Any]], None]


class AgentCallError(Exception):
    """An agent command failed: the agent's own error, or unreachable/timeout."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None,
                 path: str = "", agent_url: str = "") -> None:
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.path = path
        self.agent_url = agent_url
        super().__init__(f"{path} on {agent_url}: {code}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "details": {**self.details, "path": self.path, "agentUrl": self.agent_url}}


def _body(body: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(body)


def _reply_or_raise(reply: dict[str, Any], path: str, agent_url: str) -> dict[str, Any]:
    if reply.get("success", True) is False:
        err = reply.get("error") or {}
        raise AgentCallError(str(err.get("code", "COMMAND_FAILED")),
                             str(err.get("message", "the command failed")),
                             err.get("details") or {}, path, agent_url)
    return reply


@dataclass(eq=False)
class PendingCall:
    """A command sent to an agent whose reply has not been consumed yet."""

    task_uuid: str
    agent_url: str
    path: str
    deadline: float
    on_progress: ProgressSink | None = None
    future: Future[dict[str, Any]] = field(default_factory=Future)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The successful reply; raises :class:`AgentCallError` otherwise."""
        try:
            return self.future.result(timeout)
        except FutureTimeout:
            raise AgentCallError("TIMEOUT", "no reply in time", path=self.path,
                                 agent_url=self.agent_url) from None

    def done(self) -> bool:
        return self.future.done()


class Dispatcher:
    """Sends commands to agents and matches their callbacks to the callers."""

    def __init__(self, transport: Transport, callback_url: str,
                 token: str | Callable[[str], str] = "", poll_after: float = 30.0,
                 send_timeout: float = 30.0) -> None:
        self.transport = transport
        self.callback_url = callback_url
        self._token = token
        self.poll_after = poll_after
        self.send_timeout = send_timeout
        self._pending: dict[str, PendingCall] = {}
        self._mu = threading.Lock()
        self._heap: list[tuple[float, int, PendingCall]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="dispatch-watchdog", daemon=True)
        self._watchdog.start()

    # -- sending ----------------------------------------------------------

    def _headers(self, agent_url: str) -> dict[str, str]:
        token = self._token(agent_url) if callable(self._token) else self._token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, agent_url: str, path: str, body: BaseModel | Mapping[str, Any] | None = None,
             timeout: float = 300.0, on_progress: ProgressSink | None = None,
             job_uuid: str | None = None) -> PendingCall:
        """Send an asynchronous command; the returned call resolves on its callback.
        A job's call gets the ``taskuuid`` ``<job>.<n>``: a later process can stop the
        job's tasks on the agent by the job alone (:meth:`cancel_jobs`)."""
        data = _body(body)
        data.setdefault("timeout", timeout)
        task_uuid = f"{job_uuid}.{uuid.uuid4().hex}" if job_uuid else uuid.uuid4().hex
        pc = PendingCall(task_uuid, agent_url, path, time.monotonic() + timeout, on_progress)
        if self._closed:
            pc.future.set_exception(AgentCallError("SHUTDOWN", "the controller is stopping",
                                                   path=path, agent_url=agent_url))
            return pc
        with self._mu:
            self._pending[task_uuid] = pc
        headers = {**self._headers(agent_url), "taskuuid": task_uuid,
                   "callbackurl": self.callback_url}
        try:
            resp = self.transport.handle(AgentRequest("POST", agent_url, path, data, headers,
                                                      self.send_timeout))
        except TransportError as e:
            self._fail(pc, AgentCallError("AGENT_UNREACHABLE", str(e), path=path, agent_url=agent_url))
            return pc
        if resp.status == 200:
            self._resolve(pc, resp.body)
        elif resp.status != 202:
            err = resp.body.get("error") or {}
            self._fail(pc, AgentCallError(str(err.get("code", f"HTTP_{resp.status}")),
                                          str(err.get("message", "agent refused the command")),
                                          err.get("details") or {}, path, agent_url))
        else:
            first = min(pc.deadline, time.monotonic() + self.poll_after)
            self._schedule(first, pc)
        return pc

    def call_sync(self, agent_url: str, path: str, body: BaseModel | Mapping[str, Any] | None = None,
                  timeout: float = 30.0) -> dict[str, Any]:
        """Run a short command synchronously (no callback); returns the successful reply."""
        data = _body(body)
        data.setdefault("timeout", timeout)
        try:
            resp = self.transport.handle(AgentRequest("POST", agent_url, path, data,
                                                      self._headers(agent_url), timeout + 5))
        except TransportError as e:
            raise AgentCallError("AGENT_UNREACHABLE", str(e), path=path, agent_url=agent_url) from e
        if resp.status != 200:
            err = resp.body.get("error") or {}
            raise AgentCallError(str(err.get("code", f"HTTP_{resp.status}")),
                                 str(err.get("message", "agent refused the command")),
                                 err.get("details") or {}, path, agent_url)
        return _reply_or_raise(resp.body, path, agent_url)

    def cancel_jobs(self, agent_url: str, job_uuids: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
        """Ask an agent to cancel every task of these jobs (``POST /tasks/cancel-jobs``);
        the tasks not finished yet (an agent that predates the endpoint: none)."""
        try:
            resp = self.transport.handle(AgentRequest("POST", agent_url, "/tasks/cancel-jobs",
                                                      {"jobUuids": job_uuids}, self._headers(agent_url),
                                                      timeout))
        except TransportError as e:
            raise AgentCallError("AGENT_UNREACHABLE", str(e), path="/tasks/cancel-jobs",
                                 agent_url=agent_url) from e
        if resp.status == 404:
            return []
        if resp.status != 200:
            err = resp.body.get("error") or {}
            raise AgentCallError(str(err.get("code", f"HTTP_{resp.status}")),
                                 str(err.get("message", "agent refused the cancel")),
                                 err.get("details") or {}, "/tasks/cancel-jobs", agent_url)
        return list(resp.body.get("tasks") or [])

    def cancel(self, pc: PendingCall) -> None:
        """Ask the agent to stop the task and fail the call as cancelled."""
        self._cancel_on_agent(pc)
        self._fail(pc, AgentCallError("CANCELLED", "cancelled by the controller",
                                      path=pc.path, agent_url=pc.agent_url))

    # -- receiving --------------------------------------------------------

    def on_callback(self, task_uuid: str, kind: str, body: dict[str, Any]) -> bool:
        """A reply or progress report from an agent; False if nobody waits for it."""
        with self._mu:
            pc = self._pending.get(task_uuid)
        if pc is None:
            return False
        if kind == "progress":
            if pc.on_progress is not None:
                try:
                    pc.on_progress(dict(body.get("progress") or {}))
                except Exception:
                    log.exception("progress sink of %s failed", task_uuid)
            return True
        self._resolve(pc, body)
        return True

    def agent_of(self, task_uuid: str) -> str | None:
        """The URL of the agent a pending task was sent to (None: no such task pending)."""
        with self._mu:
            pc = self._pending.get(task_uuid)
        return pc.agent_url if pc is not None else None

    def pending(self) -> int:
        with self._mu:
            return len(self._pending)

    # -- internals --------------------------------------------------------

    def _resolve(self, pc: PendingCall, reply: dict[str, Any]) -> None:
        with self._mu:
            if self._pending.pop(pc.task_uuid, None) is None:
                return
        try:
            pc.future.set_result(_reply_or_raise(reply, pc.path, pc.agent_url))
        except AgentCallError as e:
            pc.future.set_exception(e)

    def _fail(self, pc: PendingCall, err: AgentCallError) -> None:
        with self._mu:
            if self._pending.pop(pc.task_uuid, None) is None:
                return
        pc.future.set_exception(err)

    def _schedule(self, when: float, pc: PendingCall) -> None:
        with self._cv:
            heapq.heappush(self._heap, (when, next(self._seq), pc))
            if self._heap[0][2] is pc:  # a new earliest check: the watchdog waits less now
                self._cv.notify()

    def _watch(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(wait)
                if self._closed:
                    return
                _, _, pc = heapq.heappop(self._heap)
            if pc.future.done():
                continue
            try:
                self._check(pc)
            except Exception:
                log.exception("checking task %s failed", pc.task_uuid)

    def _check(self, pc: PendingCall) -> None:
        """The callback is late: poll the agent; at the deadline, cancel."""
        status = self._poll(pc)
        if status is not None and status.get("reply") is not None and status.get("state") not in (
                "queued", "running"):
            log.info("task %s: callback late, reply taken from GET /tasks", pc.task_uuid)
            self._resolve(pc, status["reply"])
            return
        now = time.monotonic()
        if now >= pc.deadline:
            log.warning("task %s (%s on %s) timed out; cancelling", pc.task_uuid, pc.path,
                        pc.agent_url)
            self._cancel_on_agent(pc)
            self._fail(pc, AgentCallError("TIMEOUT", "the agent did not answer before the deadline",
                                          path=pc.path, agent_url=pc.agent_url))
            return
        self._schedule(min(pc.deadline, now + self.poll_after), pc)

    def _poll(self, pc: PendingCall) -> dict[str, Any] | None:
        try:
            resp = self.transport.handle(AgentRequest(
                "GET", pc.agent_url, f"/tasks/{pc.task_uuid}", None,
                self._headers(pc.agent_url), self.send_timeout))
        except TransportError:
            return None
        return resp.body if resp.status == 200 else None

    def _cancel_on_agent(self, pc: PendingCall) -> None:
        try:
            self.transport.handle(AgentRequest(
                "POST", pc.agent_url, f"/tasks/{pc.task_uuid}/cancel", {},
                self._headers(pc.agent_url), self.send_timeout))
        except TransportError as e:
            log.warning("could not cancel %s on %s: %s", pc.task_uuid, pc.agent_url, e)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        with self._mu:
            pending = list(self._pending.values())
        for pc in pending:
            self._fail(pc, AgentCallError("SHUTDOWN", "the controller is stopping",
                                          path=pc.path, agent_url=pc.agent_url))
