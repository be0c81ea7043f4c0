"""The simulator's HTTP server (aiohttp, one event loop, keep-alive).

Agent ``<id>`` lives at ``http://HOST:PORT/agents/<id>``: the controller adds
that URL as the host's (or storage's) agent URL and talks to it exactly as to
a real agent. The control API under ``/_sim/`` creates agents, injects faults,
simulates restarts and crashes, and shows the simulated state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from pydantic import ValidationError

from agentcore import __version__
from agentcore.errors import AgentError, InvalidRequest, NotFound, Unauthorized
from agentcore.openapi import build_openapi
from agentcore.runtime import error_reply
from agentcore.server import validation_error
from controller.simulator.catalog import AGENT_PACKAGES, AgentKind
from controller.simulator.engine import Simulator, SimulatorConfig
from controller.simulator.faults import FaultRule
from controller.simulator.state import Capacity

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SIM: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status,
                        content_type="application/json")


def _error(err: AgentError) -> web.Response:
    return _json(error_reply(err), err.http_status)


def _sim(request: web.Request) -> Simulator:
    return request.app[SIM]


def _drop(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=503)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AgentError as e:
        return _error(e)
    except web.HTTPNotFound:
        return _error(NotFound(f"no such path: {request.path}"))


def _local_ip(request: web.Request) -> str | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]) if sockname else None


def _agent(request: web.Request, path: str | None = None, auth: bool = True) -> Any:
    sim = _sim(request)
    if "agent" in request.match_info:
        agent = sim.agent_for(request.match_info["agent"], path)
        what = request.match_info["agent"]
    else:  # by address: http://<agent IP>:<agent port>/...
        what = _local_ip(request) or "?"
        agent = sim.agent_at(what)
    if agent is None:
        raise NotFound(f"no simulated agent {what}")
    if auth and not sim.authorised(agent, request.headers.get("Authorization", "")):
        raise Unauthorized()
    return agent


# -- the agents ----------------------------------------------------------------


async def agent_command(request: web.Request) -> web.StreamResponse:
    path = "/" + request.match_info["path"]
    sim = _sim(request)
    agent = _agent(request, path, auth=False)
    if agent.down:
        return _drop(request)
    if not sim.authorised(agent, request.headers.get("Authorization", "")):
        raise Unauthorized()
    headers = {"taskuuid": request.headers.get("taskuuid", ""),
               "callbackurl": request.headers.get("callbackurl", "")}
    answer = await sim.command(agent, path, headers, await request.read())
    if answer.disconnect:
        return _drop(request)
    return _json(answer.body, answer.status)


async def agent_health(request: web.Request) -> web.StreamResponse:
    if "agent" not in request.match_info and _sim(request).agent_at(_local_ip(request) or "") is None:
        return await health(request)  # the simulator's own address
    agent = _agent(request, auth=False)
    if agent.down:
        return _drop(request)
    return _json({"status": "ok", "agent": AGENT_PACKAGES[agent.kind], "version": __version__,
                  "simulated": True})


async def agent_openapi(request: web.Request) -> web.StreamResponse:
    agent = _agent(request, auth=False)
    specs = {p: c.as_spec() for p, c in _sim(request).catalog.items()}
    return _json(build_openapi(f"simulated {AGENT_PACKAGES[agent.kind]}", specs))


async def agent_task(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    if agent.down:
        return _drop(request)
    return _json(_sim(request).status(agent, request.match_info["task"]))


async def agent_cancel(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    if agent.down:
        return _drop(request)
    return _json(_sim(request).cancel(agent, request.match_info["task"]))


# -- the control API -------------------------------------------------------------


@web.middleware
async def _control_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_sim/"):
        sim = _sim(request)
        header = request.headers.get("Authorization", "")
        if header.partition(" ")[2].strip() != sim.config.token:
            raise Unauthorized()
    return await handler(request)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as e:
        raise InvalidRequest(f"body: not JSON: {e}", field="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    return data


def _known(request: web.Request) -> Any:
    agent = _sim(request).agents.get(request.match_info["agent"])
    if agent is None:
        raise NotFound(f"no simulated agent {request.match_info['agent']}")
    return agent


async def list_agents(request: web.Request) -> web.StreamResponse:
    kind = request.query.get("kind")
    return _json([a.summary() for a in _sim(request).agents.values() if kind in (None, a.kind)])


async def create_agent(request: web.Request) -> web.StreamResponse:
    data = await _body(request)
    sim = _sim(request)
    kind = data.get("kind", "kvm")
    if kind not in AGENT_PACKAGES:
        raise InvalidRequest(f"kind: one of {sorted(AGENT_PACKAGES)}", field="kind")
    agent_id = str(data.get("id") or "")
    if not agent_id or "/" in agent_id:
        raise InvalidRequest("id: a non-empty name without '/'", field="id")
    base = sim.config.capacity
    try:
        cap = Capacity(cpu=int(data.get("cpu", base.cpu)), memory=int(data.get("memory", base.memory)),
                       storage=int(data.get("storage", base.storage)))
    except (TypeError, ValueError):
        raise InvalidRequest("cpu, memory, storage: integers", field="capacity") from None
    agent = sim.add_agent(agent_id, cast(AgentKind, kind), cap, data.get("token"), data.get("ip"))
    url = f"{request.scheme}://{request.host}/agents/{agent.id}"
    return _json({**agent.summary(), "url": url}, 201)


async def get_agent(request: web.Request) -> web.StreamResponse:
    return _json(_known(request).dump())


async def delete_agent(request: web.Request) -> web.StreamResponse:
    agent = _known(request)
    del _sim(request).agents[agent.id]
    return _json({"deleted": agent.id})


async def restart_agent(request: web.Request) -> web.StreamResponse:
    agent = _known(request)
    forget = bool((await _body(request)).get("forgetIdentity", False))
    _sim(request).restart(agent, forget_identity=forget)
    return _json(agent.summary())


async def set_down(request: web.Request) -> web.StreamResponse:
    agent = _known(request)
    agent.down = bool((await _body(request)).get("down", True))
    return _json(agent.summary())


async def set_vm_state(request: web.Request) -> web.StreamResponse:
    """Change a domain out of band (a crash, a shutdown from inside) and push the event."""
    agent = _known(request)
    data = await _body(request)
    vm = request.match_info["vm"]
    state = str(data.get("state") or "")
    if not state:
        raise InvalidRequest("state: field required", field="state")
    dom = agent.domains.get(vm)
    if state == "Destroyed":
        agent.pop_domain(vm)
    elif dom is None:
        raise NotFound(f"no domain {vm} on {agent.id}")
    else:
        agent.set_state(dom, state)
    _sim(request).emit_event(agent, vm, state, str(data.get("reason", "simulated")))
    return _json(agent.dump()["domainsByUuid"].get(vm, {"uuid": vm, "state": state}))


async def list_faults(request: web.Request) -> web.StreamResponse:
    return _json([r.wire() for r in _sim(request).faults.list()])


async def add_fault(request: web.Request) -> web.StreamResponse:
    try:
        rule = FaultRule.model_validate(await _body(request))
    except ValidationError as e:
        raise validation_error(e) from None
    return _json(_sim(request).faults.add(rule).wire(), 201)


async def clear_faults(request: web.Request) -> web.StreamResponse:
    _sim(request).faults.clear()
    return _json({"cleared": True})


async def delete_fault(request: web.Request) -> web.StreamResponse:
    try:
        rule_id = int(request.match_info["fault"])
    except ValueError:
        raise InvalidRequest("fault id: an integer", field="id") from None
    if not _sim(request).faults.remove(rule_id):
        raise NotFound(f"no fault {rule_id}")
    return _json({"deleted": rule_id})


async def get_storage(request: web.Request) -> web.StreamResponse:
    store = _sim(request).storages.get(request.match_info["storage"])
    if store is None:
        raise NotFound(f"no simulated storage {request.match_info['storage']}")
    return _json(store.dump())


async def list_storages(request: web.Request) -> web.StreamResponse:
    return _json({k: {"used": s.used(), "volumes": len(s.volumes), "cache": len(s.cache)}
                  for k, s in _sim(request).storages.items()})


async def stats(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    s = sim.sender
    return _json({"agents": len(sim.agents), "counts": dict(sim.counts),
                  "callbacks": {"sent": s.sent, "failed": s.failed, "retried": s.retried,
                                "pending": s.pending},
                  "domains": sum(len(a.domains) for a in sim.agents.values())})


async def recorded(request: web.Request) -> web.StreamResponse:
    q = request.query
    out = [r for r in _sim(request).recorded
           if q.get("agent") in (None, r["agent"]) and q.get("path") in (None, r["path"])]
    limit = int(q.get("limit", "100")) if q.get("limit", "100").isdigit() else 100
    return _json(out[-limit:])


def make_app(sim: Simulator) -> web.Application:
    """The aiohttp application serving ``sim``."""
    app = web.Application(middlewares=[_errors, _control_auth], client_max_size=16 * 1024 * 1024)
    app[SIM] = sim

    async def lifecycle(app: web.Application) -> Any:
        await sim.sender.start()
        yield
        await sim.sender.close()

    app.cleanup_ctx.append(lifecycle)
    r = app.router
    r.add_get("/agents/{agent}/healthz", agent_health)
    r.add_get("/agents/{agent}/openapi.json", agent_openapi)
    r.add_get("/agents/{agent}/tasks/{task}", agent_task)
    r.add_post("/agents/{agent}/tasks/{task}/cancel", agent_cancel)
    r.add_post("/agents/{agent}/{path:.+}", agent_command)
    r.add_get("/_sim/agents", list_agents)
    r.add_post("/_sim/agents", create_agent)
    r.add_get("/_sim/agents/{agent}", get_agent)
    r.add_delete("/_sim/agents/{agent}", delete_agent)
    r.add_post("/_sim/agents/{agent}/restart", restart_agent)
    r.add_post("/_sim/agents/{agent}/down", set_down)
    r.add_post("/_sim/agents/{agent}/vms/{vm}", set_vm_state)
    r.add_get("/_sim/storages", list_storages)
    r.add_get("/_sim/storages/{storage}", get_storage)
    r.add_get("/_sim/faults", list_faults)
    r.add_post("/_sim/faults", add_fault)
    r.add_delete("/_sim/faults", clear_faults)
    r.add_delete("/_sim/faults/{fault}", delete_fault)
    r.add_get("/_sim/stats", stats)
    r.add_get("/_sim/commands", recorded)
    # by address (agent_ports): the same agent API at the root of the agent's IP
    r.add_get("/healthz", agent_health)
    r.add_get("/openapi.json", agent_openapi)
    r.add_get("/tasks/{task}", agent_task)
    r.add_post("/tasks/{task}/cancel", agent_cancel)
    r.add_post("/{path:(?!_sim/|agents/).+}", agent_command)
    return app


async def health(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    return _json({"status": "ok", "agent": "simulator", "version": __version__,
                  "agents": len(sim.agents)})


async def bind_agents(runner: web.AppRunner, sim: Simulator) -> list[web.TCPSite]:
    """Listen on each agent's loopback IP at the configured agent ports."""
    sites = []
    for agent in list(sim.agents.values()):
        if not agent.ip.startswith("127."):
            continue
        for port in sim.config.agent_ports:
            site = web.TCPSite(runner, agent.ip, port, backlog=512, reuse_address=True)
            await site.start()
            sites.append(site)
    return sites


async def _serve(sim: Simulator, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(sim), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048).start()
    await bind_agents(runner, sim)
    log.info("simulator: %d agents at http://%s:%d/agents/<id>", len(sim.agents), host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 7070) -> None:
    """Run the simulator in the foreground until interrupted (SIGINT or SIGTERM)."""
    sim = Simulator(config)
    loop = asyncio.new_event_loop()
    main = loop.create_task(_serve(sim, host, port))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(main)
    loop.close()


class SimulatorThread:
    """The simulator on its own event loop in a background thread (for tests).

    ``with SimulatorThread(SimulatorConfig(hosts=3)) as sim: sim.agent_url("host-00001")``.
    The state is owned by the loop thread; read it through :meth:`call`.
    """

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.sim = Simulator(config)
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._runner: web.AppRunner | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def agent_url(self, agent_id: str) -> str:
        return f"{self.url}/agents/{agent_id}"

    def start(self) -> SimulatorThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(make_app(self.sim), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port, backlog=2048)
            self._loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            self._loop.run_until_complete(bind_agents(self._runner, self.sim))
        except BaseException as e:  # reported to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def call(self, fn: Callable[[Simulator], Any]) -> Any:
        """Run ``fn(simulator)`` on the loop thread and return its result."""
        async def inner() -> Any:
            return fn(self.sim)
        return asyncio.run_coroutine_threadsafe(inner(), self._loop).result(30)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
