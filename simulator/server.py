"""The simulator's HTTP server (aiohttp, one event loop, keep-alive).

Agent ``<id>`` lives at ``http://HOST:PORT/agents/<id>``: the controller adds
that URL as the host's (or storage's) agent URL and talks to it exactly as to
a real agent. The control API under ``/_sim/`` creates agents, injects faults,
simulates restarts and crashes, and shows the simulated state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agentcore import __version__
from agentcore.errors import AgentError, NotFound, Unauthorized
from agentcore.openapi import build_openapi
from simulator.behaviours import Body
from simulator.catalog import AGENT_PACKAGES
from simulator.control import add_control_routes, control_auth, health
from simulator.engine import Simulator, SimulatorConfig
from simulator.web import SIM, Handler, drop, error_answer, json_answer, sim_of

log = logging.getLogger(__name__)

@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AgentError as e:
        return error_answer(e)
    except web.HTTPNotFound:
        return error_answer(NotFound(f"no such path: {request.path}"))


def _local_ip(request: web.Request) -> str | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]) if sockname else None


def _agent(request: web.Request, path: str | None = None, auth: bool = True) -> Any:
    sim = sim_of(request)
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
    sim = sim_of(request)
    agent = _agent(request, path, auth=False)
    if agent.down:
        return drop(request)
    agent.last_up = time.time()
    if not sim.authorised(agent, request.headers.get("Authorization", "")):
        raise Unauthorized()
    headers = {"taskuuid": request.headers.get("taskuuid", ""),
               "callbackurl": request.headers.get("callbackurl", "")}
    answer = await sim.command(agent, path, headers, await request.read())
    if answer.disconnect:
        return drop(request)
    return json_answer(answer.body, answer.status)


async def agent_health(request: web.Request) -> web.StreamResponse:
    if "agent" not in request.match_info and sim_of(request).agent_at(_local_ip(request) or "") is None:
        return await health(request)  # the simulator's own address
    agent = _agent(request, auth=False)
    if agent.down:
        return drop(request)
    return json_answer({"status": "ok", "agent": AGENT_PACKAGES[agent.kind], "version": __version__,
                  "simulated": True})


async def agent_openapi(request: web.Request) -> web.StreamResponse:
    agent = _agent(request, auth=False)
    specs = {p: c.as_spec() for p, c in sim_of(request).catalog.items()}
    return json_answer(build_openapi(f"simulated {AGENT_PACKAGES[agent.kind]}", specs))


async def agent_task(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    if agent.down:
        return drop(request)
    return json_answer(sim_of(request).status(agent, request.match_info["task"]))


async def agent_cancel(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    if agent.down:
        return drop(request)
    return json_answer(sim_of(request).cancel(agent, request.match_info["task"]))


async def agent_cancel_jobs(request: web.Request) -> web.StreamResponse:
    agent = _agent(request)
    if agent.down:
        return drop(request)
    body = Body(await request.json())
    return json_answer(sim_of(request).cancel_jobs(agent, [str(j) for j in body.list("jobUuids")]))


def make_app(sim: Simulator) -> web.Application:
    """The aiohttp application serving ``sim``."""
    app = web.Application(middlewares=[_errors, control_auth], client_max_size=16 * 1024 * 1024)
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
    r.add_post("/agents/{agent}/tasks/cancel-jobs", agent_cancel_jobs)
    r.add_post("/agents/{agent}/{path:.+}", agent_command)
    add_control_routes(r)
    # by address (agent_ports): the same agent API at the root of the agent's IP
    r.add_get("/healthz", agent_health)
    r.add_get("/openapi.json", agent_openapi)
    r.add_get("/tasks/{task}", agent_task)
    r.add_post("/tasks/{task}/cancel", agent_cancel)
    r.add_post("/tasks/cancel-jobs", agent_cancel_jobs)
    r.add_post("/{path:(?!_sim/|agents/).+}", agent_command)
    return app


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
