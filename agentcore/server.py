"""The HTTP layer: one Flask route per command, auth, and JSON errors.

Protocol errors (bad body, no token, unknown path, wrong method, full queue)
are HTTP errors with a JSON reply body; a command's own failure is a reply
with ``success: false`` (HTTP 200 when synchronous).
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from agentcore import __version__
from agentcore.errors import (
    AgentError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    for_http_status,
)
from agentcore.journal import TaskRecord
from agentcore.models import CancelJobsReply, CancelJobsRequest
from agentcore.openapi import TASK_UUID_PATTERN, build_openapi
from agentcore.plugin import CommandSpec
from agentcore.runtime import AgentRuntime, error_reply

PUBLIC_PATHS = {"/healthz", "/openapi.json"}
TASK_UUID = re.compile(TASK_UUID_PATTERN)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _error(err: AgentError) -> Response:
    return _json(error_reply(err), err.http_status)


def validation_error(err: ValidationError) -> InvalidRequest:
    """A 400 whose message names every offending field by its wire name."""
    fields = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "body"
        fields.append({"field": loc, "message": e["msg"], "type": e["type"]})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return InvalidRequest(f"invalid request: {summary}", fields=fields)


def create_app(runtime: AgentRuntime) -> Flask:
    """The WSGI app of an agent."""
    app = Flask(runtime.name)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    token = runtime.config.token.get_secret_value().encode()
    openapi = build_openapi(runtime.name, runtime.commands)

    @app.before_request
    def authenticate() -> Response | None:
        if request.path in PUBLIC_PATHS:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token):
            return _error(Unauthorized())
        return None

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        if e.code == 404:
            return _error(NotFound(f"no such path: {request.path}"))
        if e.code == 405:
            return _error(MethodNotAllowed(f"{request.method} is not allowed on {request.path}"))
        return _error(for_http_status(e.code or 500, e.description or e.name))

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok", "agent": runtime.name, "version": __version__})

    @app.get("/openapi.json")
    def openapi_doc() -> Response:
        return _json(openapi)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(runtime.metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/tasks/<task_uuid>")
    def task_status(task_uuid: str) -> Response:
        status = runtime.status(task_uuid)
        if status is None:
            return _error(NotFound(f"no task {task_uuid}", taskUuid=task_uuid))
        return _json(status.wire())

    @app.post("/tasks/<task_uuid>/cancel")
    def task_cancel(task_uuid: str) -> Response:
        try:
            return _json(runtime.cancel(task_uuid).wire())
        except AgentError as e:
            return _error(e)

    @app.post("/tasks/cancel-jobs")
    def tasks_cancel_jobs() -> Response:
        """A restarted controller stops what its dead process left running here."""
        try:
            body = CancelJobsRequest.model_validate_json(request.get_data() or b"{}")
        except ValidationError as e:
            return _error(validation_error(e))
        return _json(CancelJobsReply(tasks=runtime.cancel_jobs(body.job_uuids)).wire())

    for path, spec in runtime.commands.items():
        app.add_url_rule(
            path, endpoint=path, view_func=_command_view(runtime, spec), methods=["POST"]
        )
    return app


def _command_view(runtime: AgentRuntime, spec: CommandSpec):  # type: ignore[no-untyped-def]
    def view() -> Response:
        try:
            return _dispatch(runtime, spec)
        except AgentError as e:
            return _error(e)

    view.__name__ = f"cmd_{spec.path}"
    return view


def _dispatch(runtime: AgentRuntime, spec: CommandSpec) -> Response:
    task_uuid = request.headers.get("taskuuid") or str(uuid.uuid4())
    if not TASK_UUID.fullmatch(task_uuid):
        raise InvalidRequest("taskuuid: must be 1-128 letters, digits, '.', '_' or '-'", field="taskuuid")
    callback_url = request.headers.get("callbackurl") or None
    raw = request.get_data() or b"{}"
    try:
        cmd = spec.request.model_validate_json(raw)
    except ValidationError as e:
        raise validation_error(e) from None
    result = runtime.submit(spec, cmd, task_uuid, callback_url)
    if callback_url is not None:
        return _json({"taskUuid": task_uuid}, 202)
    if isinstance(result, TaskRecord):
        return _json(result.reply or {}, 200)
    result.done.wait()
    return _json(result.reply or {}, 200)
