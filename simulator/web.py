"""What the simulator's HTTP handlers share: the app key, JSON answers, errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agentcore.errors import AgentError
from agentcore.runtime import error_reply
from simulator.engine import Simulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SIM: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)


def json_answer(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status,
                        content_type="application/json")


def error_answer(err: AgentError) -> web.Response:
    return json_answer(error_reply(err), err.http_status)


def sim_of(request: web.Request) -> Simulator:
    return request.app[SIM]


def drop(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=503)
