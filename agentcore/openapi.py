"""The OpenAPI document of an agent, generated from its command models."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from agentcore import __version__
from agentcore.models import ErrorInfo, Reply, TaskAccepted, TaskStatus, WireModel
from agentcore.plugin import CommandSpec

#: what the HTTP layer accepts as ``taskuuid`` (kept in step with agentcore.server.TASK_UUID)
TASK_UUID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
REF = "#/components/schemas/{model}"


def _ref(model: type[WireModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[WireModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def build_openapi(name: str, commands: dict[str, CommandSpec]) -> dict[str, Any]:
    """OpenAPI 3.1 for every command plus the task endpoints."""
    models: set[type[WireModel]] = {Reply, ErrorInfo, TaskAccepted, TaskStatus}
    for spec in commands.values():
        models.add(spec.request)
        models.add(spec.reply)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schema = models_json_schema(
        [(m, "validation" if m in {s.request for s in commands.values()} else "serialization")
         for m in ordered],
        by_alias=True,
        ref_template=REF,
    )
    _require_discriminators(schema.get("$defs", {}))
    headers = [
        {"name": "taskuuid", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": TASK_UUID_PATTERN},
         "description": "Idempotency key of the task; generated when absent."},
        {"name": "callbackurl", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Answer 202 at once and POST the reply here (a controller URL)."},
    ]
    error = {"description": "Protocol error", "content": {"application/json": {"schema": _ref(Reply)}}}
    paths: dict[str, Any] = {}
    for path, spec in sorted(commands.items()):
        summary, _, description = spec.doc.partition("\n")
        paths[path] = {
            "post": {
                "operationId": path.strip("/").replace("/", "_").replace("-", "_"),
                "summary": summary,
                "description": description.strip(),
                "tags": [spec.plugin],
                "parameters": headers,
                "requestBody": {"required": False, "content": _json(spec.request)},
                "responses": {
                    "200": {"description": "The reply (sync)", "content": _json(spec.reply)},
                    "202": {"description": "Accepted (async)", "content": _json(TaskAccepted)},
                    "400": error, "401": error, "409": error, "503": error,
                },
                "security": [{"bearer": []}],
            }
        }
    status = {"content": {"application/json": {"schema": _ref(TaskStatus)}}}
    task_param = [{"name": "taskUuid", "in": "path", "required": True, "schema": {"type": "string"}}]
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    paths["/tasks/{taskUuid}"] = {"get": {
        "summary": "State, progress and reply of a task", "security": bearer, "parameters": task_param,
        "responses": {"200": {"description": "task", **status}, "404": error}}}
    paths["/tasks/{taskUuid}/cancel"] = {"post": {
        "summary": "Cancel a task, killing the processes it started", "security": bearer,
        "parameters": task_param, "responses": {"200": {"description": "task", **status}, "404": error}}}
    paths["/healthz"] = {"get": {"summary": "Liveness, without auth", "responses": {"200": {"description": "ok"}}}}
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "security": bearer,
                                 "responses": {"200": {"description": "text"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"kvmcloud {name} agent", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _require_discriminators(defs: dict[str, Any]) -> None:
    """Mark a tagged union's tag as required in each of its members.

    pydantic documents a ``Literal`` tag with a default as optional, yet a
    tagged union cannot pick a member without it: the document says so.
    """
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            disc = node.get("discriminator")
            if isinstance(disc, dict) and "propertyName" in disc:
                for ref in disc.get("mapping", {}).values():
                    member = defs.get(ref.rsplit("/", 1)[-1])
                    if member is not None and disc["propertyName"] in member.get("properties", {}):
                        required = member.setdefault("required", [])
                        if disc["propertyName"] not in required:
                            required.append(disc["propertyName"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(defs)
