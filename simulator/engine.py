"""The simulator's engine: the agent protocol without the HTTP server.

:class:`Simulator` owns the fleet of simulated agents, their command tables
(from the real agents' models), the fault book and the callback sender, and
implements the protocol of ``docs/protocol.md`` exactly as
:mod:`agentcore.server` and :mod:`agentcore.runtime` do: bearer auth, a 400
naming the field before anything runs, ``taskuuid`` idempotency, ``202``
then a POSTed reply (``kind: reply``) with a ``callbackurl``, the reply in
the answer without one, ``GET /tasks/<id>``, cancel and deadlines. Every
method runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agentcore.errors import (
    AgentError,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    InternalError,
    Interrupted,
    InvalidRequest,
    NotFound,
)
from agentcore.models import EchoCmd
from agentcore.runtime import error_reply
from agentcore.server import validation_error
from agentcore.urlpolicy import UrlPolicy
from simulator.behaviours import BEHAVIOURS, Body
from simulator.callbacks import CallbackSender
from simulator.catalog import KINDS, AgentKind, SimCommand, discover, skeleton
from simulator.faults import FaultBook, FaultRule
from simulator.state import Capacity, SimAgent, StorageState, Task

log = logging.getLogger(__name__)

PROGRESS_PERIOD = 1.0
TASK_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PREFIX_KIND: dict[str, AgentKind] = {
    "/host/": "kvm", "/vm/": "kvm", "/network/": "kvm", "/storage/": "storage",
    "/backup/": "sftp", "/ceph/": "ceph",
}
ID_KIND: dict[str, AgentKind] = {"ps": "storage", "bs": "sftp", "ceph": "ceph"}
ID_PREFIX: dict[AgentKind, str] = {"kvm": "host", "storage": "ps", "sftp": "bs", "ceph": "ceph"}


@dataclass
class SimulatorConfig:
    """How the simulator is set up."""

    token: str = "simulator-token"  # noqa: S105 - a simulator's well-known default
    hosts: int = 0
    primary_storages: int = 0
    backup_storages: int = 0
    ceph_storages: int = 0
    capacity: Capacity = field(default_factory=Capacity)
    #: an unknown agent id is created on first use (kind from the command path)
    auto_create: bool = True
    #: callback URL prefixes every agent admits; empty: any URL (loopback tests)
    controller_urls: list[str] = field(default_factory=list)
    #: push VM lifecycle events to the events URL handed over at connect
    events: bool = True
    callback_concurrency: int = 32
    callback_retries: int = 6
    #: how many received commands the control API keeps for inspection
    record: int = 1000
    #: finished tasks each agent keeps for ``GET /tasks/<id>`` and idempotency
    task_retention: int = 5000
    #: also serve each agent at http://<its IP>:<port>/ for these ports (its
    #: IP is a 127.x.y.z loopback address), as real agents listen on 7070/7071
    agent_ports: list[int] = field(default_factory=list)


class Answer:
    """What the HTTP layer sends back: a status and a JSON body, or nothing."""

    __slots__ = ("body", "disconnect", "status")

    def __init__(self, status: int, body: dict[str, Any] | None, disconnect: bool = False) -> None:
        self.status = status
        self.body = body
        self.disconnect = disconnect


def _failure(err: AgentError) -> Answer:
    return Answer(err.http_status, error_reply(err))


@dataclass(eq=False)
class _Live:
    task: Task
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reason: AgentError | None = None


class Simulator:
    """Hundreds of simulated agents behind one event loop."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        # every simulated agent serves every kind's paths (they do not overlap), so a
        # controller may point a host's kvmagent and storageagent URLs at one agent
        self.catalog: dict[str, SimCommand] = {EchoCmd.path or "": SimCommand.of(EchoCmd)}
        for kind in KINDS:
            self.catalog.update(discover(kind))
        self.agents: dict[str, SimAgent] = {}
        self.storages: dict[str, StorageState] = {}
        self.faults = FaultBook()
        self.sender = CallbackSender(concurrency=self.config.callback_concurrency,
                                     retries=self.config.callback_retries)
        self.policy = UrlPolicy(self.config.controller_urls)
        self.recorded: deque[dict[str, Any]] = deque(maxlen=max(1, self.config.record))
        self.counts: Counter[str] = Counter()
        self._live: dict[tuple[str, str], _Live] = {}
        counts: list[tuple[AgentKind, int]] = [
            ("kvm", self.config.hosts), ("storage", self.config.primary_storages),
            ("sftp", self.config.backup_storages), ("ceph", self.config.ceph_storages)]
        for kind, n in counts:
            for i in range(1, n + 1):
                self.add_agent(f"{ID_PREFIX[kind]}-{i:05d}", kind)

    # -- the fleet --------------------------------------------------------

    def add_agent(self, agent_id: str, kind: AgentKind, capacity: Capacity | None = None,
                  token: str | None = None, ip: str | None = None) -> SimAgent:
        """Create (or return) a simulated agent."""
        agent = self.agents.get(agent_id)
        if agent is None:
            cap = capacity or Capacity(**vars(self.config.capacity))
            n = len(self.agents)
            agent = SimAgent(agent_id, kind, capacity=cap, token=token or self.config.token,
                             ip=ip or f"127.1.{n // 250}.{n % 250 + 1}")
            self.agents[agent_id] = agent
        return agent

    def agent_at(self, ip: str) -> SimAgent | None:
        """The agent whose management IP is ``ip`` (by-address mode)."""
        return next((a for a in self.agents.values() if a.ip == ip), None)

    def storage(self, uuid: str) -> StorageState:
        """The shared state of one primary storage (created on first use)."""
        store = self.storages.get(uuid)
        if store is None:
            store = self.storages[uuid] = StorageState(uuid, capacity=self.config.capacity.storage)
        return store

    def agent_for(self, agent_id: str, path: str | None = None) -> SimAgent | None:
        agent = self.agents.get(agent_id)
        if agent is not None or not self.config.auto_create:
            return agent
        by_path = [k for p, k in PREFIX_KIND.items() if path and path.startswith(p)]
        by_id = [k for p, k in ID_KIND.items() if agent_id.startswith(p)]
        kind: AgentKind = (by_path or by_id or ["kvm"])[0]
        return self.add_agent(agent_id, kind)

    def find_agent(self, ref: str) -> SimAgent | None:
        """An agent by id, management IP, host UUID, or a URL naming its id or IP."""
        if ref in self.agents:
            return self.agents[ref]
        tail = ref.rstrip("/").rsplit("/", 1)[-1]
        if tail in self.agents:
            return self.agents[tail]
        for agent in self.agents.values():
            if ref in (agent.ip, agent.host_uuid) or (agent.ip and f"//{agent.ip}" in ref):
                return agent
        return None

    def emit_event(self, agent: SimAgent, vm_uuid: str, state: str, reason: str) -> None:
        """Push a VM lifecycle event, as the kvmagent does, to the connect-time URL."""
        if not self.config.events or not agent.events_url:
            return
        self.counts["events"] += 1
        self.sender.send(
            agent.events_url,
            {"hostUuid": agent.host_uuid or agent.id, "vmUuid": vm_uuid, "state": state,
             "reason": reason},
            {"kind": "event", "Authorization": f"Bearer {agent.token}"},
        )

    def restart(self, agent: SimAgent, forget_identity: bool = False) -> None:
        """Simulate an agent restart: running tasks are interrupted, the boot id changes.

        The identity handed over by ``connect`` survives (the real agent keeps it in
        its state directory) unless ``forget_identity`` (a reinstalled agent).
        """
        agent.boot_id = uuid.uuid4().hex
        if forget_identity:
            agent.host_uuid = None
            agent.events_url = None
        for key, live in list(self._live.items()):
            if key[0] == agent.id:
                live.reason = Interrupted()
                live.stop.set()

    # -- the protocol -----------------------------------------------------

    def authorised(self, agent: SimAgent, header: str) -> bool:
        scheme, _, presented = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), agent.token.encode())

    def _allows(self, agent: SimAgent, url: str) -> bool:
        """Any http(s) URL unless controller URLs are configured; then, as a real
        agent: those prefixes and the URLs handed over by ``connect``."""
        if not self.config.controller_urls:
            return url.startswith(("http://", "https://"))
        return self.policy.allows(url) or UrlPolicy(agent.urls).allows(url)

    async def command(self, agent: SimAgent, path: str, headers: dict[str, str],
                      raw: bytes) -> Answer:
        """Serve ``POST <agent base>/<path>``."""
        try:
            return await self._command(agent, path, headers, raw)
        except AgentError as e:
            return _failure(e)

    async def _command(self, agent: SimAgent, path: str, headers: dict[str, str],
                       raw: bytes) -> Answer:
        spec = self.catalog.get(path)
        if spec is None:
            raise NotFound(f"no such path: {path}")
        task_uuid = headers.get("taskuuid") or str(uuid.uuid4())
        if not TASK_UUID.match(task_uuid):
            raise InvalidRequest("taskuuid: must be 1-128 letters, digits, '.', '_' or '-'",
                                 field="taskuuid")
        callback = headers.get("callbackurl") or None
        try:
            cmd = spec.request.model_validate_json(raw or b"{}")
        except ValidationError as e:
            raise validation_error(e) from None
        if callback is not None and not self._allows(agent, callback):
            raise InvalidRequest("callbackurl is not one of this agent's controller URLs",
                                 field="callbackurl", url=callback)
        agent.commands += 1
        self.counts["commands"] += 1
        existing = agent.tasks.get(task_uuid)
        if existing is not None:
            return await self._again(agent, existing, path, callback)
        body = cmd.model_dump(mode="json", by_alias=True, exclude_none=True)
        if self.recorded.maxlen and self.config.record:
            self.recorded.append({"agent": agent.id, "path": path, "taskUuid": task_uuid,
                                  "body": body, "at": time.time()})
        fault = self.faults.take(agent.id, path, body)
        if fault is not None:
            self.counts[f"fault:{fault.action}"] += 1
            if fault.action == "http-error":
                return Answer(fault.status, error_reply(_fault_error(fault)))
            if fault.action == "disconnect":
                return Answer(0, None, disconnect=True)
        task = Task(task_uuid, path, callback_url=callback)
        self._remember(agent, task)
        if fault is not None and fault.action in ("delay", "hang"):
            return await self._later(agent, spec, body, cmd.timeout, task, fault)
        self._finish(agent, task, self._execute(agent, spec, body, fault),
                     send=fault is None or fault.action != "drop-callback")
        if callback is not None:
            return Answer(202, {"taskUuid": task_uuid})
        return Answer(200, task.reply)

    async def _again(self, agent: SimAgent, task: Task, path: str, callback: str | None) -> Answer:
        if task.path != path:
            raise Conflict("taskuuid was used by another command", path=task.path)
        if task.reply is not None and callback is not None:
            self._send_reply(agent, task.uuid, callback, task.reply)
        if callback is not None:
            return Answer(202, {"taskUuid": task.uuid})
        live = self._live.get((agent.id, task.uuid))
        if live is not None:
            await live.done.wait()
        return Answer(200, task.reply)

    async def _later(self, agent: SimAgent, spec: SimCommand, body: dict[str, Any],
                     timeout: float | None, task: Task, fault: FaultRule) -> Answer:
        live = _Live(task)
        self._live[(agent.id, task.uuid)] = live
        task.state = "running"
        run = asyncio.get_running_loop().create_task(
            self._wait_then_run(agent, spec, body, timeout, live, fault))
        run.add_done_callback(lambda _: self._live.pop((agent.id, task.uuid), None))
        if task.callback_url is not None:
            return Answer(202, {"taskUuid": task.uuid})
        await live.done.wait()
        return Answer(200, task.reply)

    async def _wait_then_run(self, agent: SimAgent, spec: SimCommand, body: dict[str, Any],
                             timeout: float | None, live: _Live, fault: FaultRule) -> None:
        wait = None if fault.action == "hang" else fault.seconds
        if timeout is not None:
            wait = timeout if wait is None else min(wait, timeout)
        loop = asyncio.get_running_loop()
        end = None if wait is None else loop.time() + wait
        while not live.stop.is_set():
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                break
            if fault.action == "delay" and fault.seconds > 0:
                self._progress(agent, live.task, 100.0 * (1 - (left or 0) / fault.seconds))
            step = PROGRESS_PERIOD if left is None else min(PROGRESS_PERIOD, left)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.stop.wait(), step)
        if live.reason is None and timeout is not None and (
                fault.action == "hang" or fault.seconds > timeout):
            live.reason = DeadlineExceeded()
        if live.reason is not None:
            reply = error_reply(live.reason)
        else:
            reply = self._execute(agent, spec, body, None)
        self._finish(agent, live.task, reply)
        live.done.set()

    def _progress(self, agent: SimAgent, task: Task, percent: float) -> None:
        """Record and push (transient, as the real runtime does) the progress of a slow task."""
        task.progress = {"stage": "simulated", "percent": round(percent, 1), "done": None,
                         "total": None, "unit": ""}
        if task.callback_url is not None:
            self.sender.send(task.callback_url, {"taskUuid": task.uuid, "progress": task.progress},
                             {"taskuuid": task.uuid, "kind": "progress",
                              "Authorization": f"Bearer {agent.token}"})

    def cancel(self, agent: SimAgent, task_uuid: str) -> dict[str, Any]:
        """Serve ``POST /tasks/<id>/cancel``."""
        live = self._live.get((agent.id, task_uuid))
        if live is not None:
            live.reason = Cancelled()
            live.stop.set()
            live.task.state = "cancelled"
            return live.task.status()
        task = agent.tasks.get(task_uuid)
        if task is None:
            raise NotFound(f"no task {task_uuid}", taskUuid=task_uuid)
        return task.status()

    def cancel_jobs(self, agent: SimAgent, job_uuids: list[str]) -> dict[str, Any]:
        """Serve ``POST /tasks/cancel-jobs``: the tasks ``<job>.<n>`` of these jobs cancelled
        (at once here: none is left unfinished)."""
        prefixes = tuple(f"{j}." for j in job_uuids)
        for agent_id, task_uuid in list(self._live):
            if agent_id == agent.id and task_uuid.startswith(prefixes):
                self.cancel(agent, task_uuid)
        return {"tasks": []}

    def status(self, agent: SimAgent, task_uuid: str) -> dict[str, Any]:
        """Serve ``GET /tasks/<id>``."""
        task = agent.tasks.get(task_uuid)
        if task is None:
            raise NotFound(f"no task {task_uuid}", taskUuid=task_uuid)
        return task.status()

    # -- running a command ----------------------------------------------------

    def _execute(self, agent: SimAgent, spec: SimCommand, body: dict[str, Any],
                 fault: FaultRule | None) -> dict[str, Any]:
        if fault is not None and fault.action == "fail":
            return error_reply(_fault_error(fault))
        behaviour = BEHAVIOURS.get(spec.path)
        try:
            fields = behaviour(agent, Body(body), self) if behaviour else {}
        except AgentError as e:
            return error_reply(e)
        except Exception as e:  # a behaviour bug is an INTERNAL_ERROR reply, as in a real agent
            log.exception("simulated %s raised", spec.path)
            return error_reply(InternalError(f"{type(e).__name__}: {e}"))
        return build_reply(spec, fields)

    def _remember(self, agent: SimAgent, task: Task) -> None:
        agent.tasks[task.uuid] = task
        if len(agent.tasks) > self.config.task_retention:
            for old in list(agent.tasks)[: len(agent.tasks) // 10]:
                if agent.tasks[old].reply is not None:
                    del agent.tasks[old]

    def _finish(self, agent: SimAgent, task: Task, reply: dict[str, Any], send: bool = True) -> None:
        task.reply = reply
        task.updated = time.time()
        if task.state != "cancelled":
            failed = not reply.get("success", False)
            code = (reply.get("error") or {}).get("code") if failed else None
            task.state = {"CANCELLED": "cancelled", "INTERRUPTED": "interrupted"}.get(
                code or "", "failed" if failed else "succeeded")
        if send and task.callback_url is not None:
            self._send_reply(agent, task.uuid, task.callback_url, reply)

    def _send_reply(self, agent: SimAgent, task_uuid: str, url: str, reply: dict[str, Any]) -> None:
        self.counts["callbacks"] += 1
        self.sender.send(url, reply, {"taskuuid": task_uuid, "kind": "reply",
                                      "Authorization": f"Bearer {agent.token}"})


class InjectedFailure(AgentError):
    """The failure a ``fail`` or ``http-error`` fault rule answers with."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.injected_code = code

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "code": self.injected_code}


def _fault_error(fault: FaultRule) -> AgentError:
    return InjectedFailure(fault.code, fault.message, injected=True, faultId=fault.id)


def build_reply(spec: SimCommand, fields: dict[str, Any]) -> dict[str, Any]:
    """A successful reply in wire form that ``spec.reply`` accepts.

    With the agent's own reply model, the behaviour's candidate fields that
    the model declares are validated through it (nested models included) and
    dumped with wire names; a candidate that does not fit is left at its
    placeholder.
    """
    declared = spec.reply.model_fields
    data = {**skeleton(spec.reply, by_alias=False),
            **{k: v for k, v in fields.items() if k in declared and v is not None}}
    for _ in range(2):
        try:
            return spec.reply.model_validate(data).wire()
        except ValidationError as e:
            base = skeleton(spec.reply, by_alias=False)
            for err in e.errors():
                key = str(err["loc"][0]) if err["loc"] else ""
                data.pop(key, None)
                if key in base:
                    data[key] = base[key]
    log.warning("no valid %s could be built for %s", spec.reply.__name__, spec.path)
    return spec.reply.model_construct().wire()
