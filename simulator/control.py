"""The simulator's control API under ``/_sim/``: agents, faults, state, counters.

It takes the simulator's own token (``--token``). See docs/simulator.md.
"""

from __future__ import annotations

import json
from typing import Any, cast

from aiohttp import web
from pydantic import ValidationError

from agentcore import __version__
from agentcore.errors import InvalidRequest, NotFound, Unauthorized
from agentcore.server import validation_error
from simulator.catalog import AGENT_PACKAGES, AgentKind
from simulator.faults import FaultRule
from simulator.state import Capacity
from simulator.web import Handler, json_answer, sim_of


@web.middleware
async def control_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_sim/"):
        sim = sim_of(request)
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
    agent = sim_of(request).agents.get(request.match_info["agent"])
    if agent is None:
        raise NotFound(f"no simulated agent {request.match_info['agent']}")
    return agent


async def list_agents(request: web.Request) -> web.StreamResponse:
    kind = request.query.get("kind")
    return json_answer([a.summary() for a in sim_of(request).agents.values() if kind in (None, a.kind)])


async def create_agent(request: web.Request) -> web.StreamResponse:
    data = await _body(request)
    sim = sim_of(request)
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
    return json_answer({**agent.summary(), "url": url}, 201)


async def get_agent(request: web.Request) -> web.StreamResponse:
    return json_answer(_known(request).dump())


async def delete_agent(request: web.Request) -> web.StreamResponse:
    agent = _known(request)
    del sim_of(request).agents[agent.id]
    return json_answer({"deleted": agent.id})


async def restart_agent(request: web.Request) -> web.StreamResponse:
    agent = _known(request)
    forget = bool((await _body(request)).get("forgetIdentity", False))
    sim_of(request).restart(agent, forget_identity=forget)
    return json_answer(agent.summary())


async def set_down(request: web.Request) -> web.StreamResponse:
    agent = _known(request)
    agent.down = bool((await _body(request)).get("down", True))
    return json_answer(agent.summary())


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
    sim_of(request).emit_event(agent, vm, state, str(data.get("reason", "simulated")))
    return json_answer(agent.dump()["domainsByUuid"].get(vm, {"uuid": vm, "state": state}))


async def list_faults(request: web.Request) -> web.StreamResponse:
    return json_answer([r.wire() for r in sim_of(request).faults.list()])


async def add_fault(request: web.Request) -> web.StreamResponse:
    try:
        rule = FaultRule.model_validate(await _body(request))
    except ValidationError as e:
        raise validation_error(e) from None
    return json_answer(sim_of(request).faults.add(rule).wire(), 201)


async def clear_faults(request: web.Request) -> web.StreamResponse:
    sim_of(request).faults.clear()
    return json_answer({"cleared": True})


async def delete_fault(request: web.Request) -> web.StreamResponse:
    try:
        rule_id = int(request.match_info["fault"])
    except ValueError:
        raise InvalidRequest("fault id: an integer", field="id") from None
    if not sim_of(request).faults.remove(rule_id):
        raise NotFound(f"no fault {rule_id}")
    return json_answer({"deleted": rule_id})


async def get_storage(request: web.Request) -> web.StreamResponse:
    store = sim_of(request).storages.get(request.match_info["storage"])
    if store is None:
        raise NotFound(f"no simulated storage {request.match_info['storage']}")
    return json_answer(store.dump())


async def list_storages(request: web.Request) -> web.StreamResponse:
    return json_answer({k: {"used": s.used(), "volumes": len(s.volumes), "cache": len(s.cache)}
                  for k, s in sim_of(request).storages.items()})


async def stats(request: web.Request) -> web.StreamResponse:
    sim = sim_of(request)
    s = sim.sender
    return json_answer({"agents": len(sim.agents), "counts": dict(sim.counts),
                  "callbacks": {"sent": s.sent, "failed": s.failed, "retried": s.retried,
                                "pending": s.pending},
                  "domains": sum(len(a.domains) for a in sim.agents.values())})


async def recorded(request: web.Request) -> web.StreamResponse:
    q = request.query
    out = [r for r in sim_of(request).recorded
           if q.get("agent") in (None, r["agent"]) and q.get("path") in (None, r["path"])]
    limit = int(q.get("limit", "100")) if q.get("limit", "100").isdigit() else 100
    return json_answer(out[-limit:])


async def health(request: web.Request) -> web.StreamResponse:
    sim = sim_of(request)
    return json_answer({"status": "ok", "agent": "simulator", "version": __version__,
                        "agents": len(sim.agents)})


def add_control_routes(r: web.UrlDispatcher) -> None:
    """Register every ``/_sim/`` route."""
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
