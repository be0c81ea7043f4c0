"""The OpenAPI document of an agent, generated from its command models."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from agentcore import __version__
from agentcore.models import ErrorInfo, Reply, TaskAccepted, TaskStatus, WireModel
from agentcore.plugin import CommandSpec

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
    headers = [
        {"name": "taskuuid", "in": "header", "required": False, "schema": {"type": "string"},
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
