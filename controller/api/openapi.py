"""The OpenAPI document of ``/v1``, generated from the request models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from controller.query import MAX_LIMIT


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


#: the query of every listing (controller.query)
LIST_PARAMS = [
    _query("q", {"type": "string"}, "<attribute><op><value>, repeatable; op is one of "
           "= != > < >= <= ?= !?= ~= !~="),
    _query("sort", {"type": "string"}, "attributes, comma-separated; '-' sorts descending"),
    _query("limit", {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT}, "at most this many items"),
    _query("offset", {"type": "integer", "minimum": 0}, "skip this many items"),
    _query("fields", {"type": "string"}, "only these attributes, comma-separated"),
    _query("count", {"type": "string"}, "1: add the total"),
]
#: the query of every call answered by a job
WAIT_PARAMS = [
    _query("wait", {"type": "string", "enum": ["1", "0"]},
           "1: answer when the job ends (200), not at once (202)"),
    _query("timeout", {"type": "number", "minimum": 0}, "seconds wait=1 waits at most (3600)"),
]


def build_openapi(creates: dict[str, type[BaseModel]],
                  actions: dict[tuple[str, str], type[BaseModel]],
                  collections: list[str]) -> dict[str, Any]:
    """Paths for CRUD on every collection and every action, schemas from the models."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": ref(model)}}}

    errors = {"400": {"description": "invalid input; error.details.field names the field"},
              "401": {"description": "no or wrong bearer token"},
              "403": {"description": "the token's role may not do this (readonly: GET only)"},
              "404": {"description": "no such resource"},
              "409": {"description": "conflict, with the reason"}}
    for coll in collections:
        item: dict[str, Any] = {
            "get": {"summary": f"List {coll} (q, sort, limit, offset, fields, count)",
                    "parameters": LIST_PARAMS,
                    "responses": {"200": {"description": "{items: [...], total?}"}, **errors}},
        }
        if coll in creates:
            model = creates[coll]
            item["post"] = {"summary": (model.__doc__ or f"Create {coll}").strip().splitlines()[0],
                            "requestBody": body(model), "parameters": WAIT_PARAMS,
                            "responses": {"201": {"description": "created"},
                                          "202": {"description": "{job, resource}"}, **errors}}
        paths[f"/v1/{coll}"] = item
        paths[f"/v1/{coll}/{{uuid}}"] = {
            "get": {"summary": f"Get one of {coll}", "responses": {"200": {"description": "ok"},
                                                                   **errors}},
            "patch": {"summary": "Change name or description", "responses": {"200": {"description": "ok"},
                                                                             **errors}},
            "delete": {"summary": "List what would be deleted; with confirm=1 delete it (a job)",
                       "parameters": [{"name": "confirm", "in": "query",
                                       "schema": {"type": "string"}}, *WAIT_PARAMS],
                       "responses": {"200": {"description": "{affected}"},
                                     "202": {"description": "{job}"}, **errors}},
        }
    for (coll, verb), model in actions.items():
        paths[f"/v1/{coll}/{{uuid}}/actions/{verb}"] = {"post": {
            "summary": (model.__doc__ or verb).strip().splitlines()[0],
            "requestBody": body(model), "parameters": WAIT_PARAMS,
            "responses": {"202": {"description": "{job}"}, "200": {"description": "with wait=1"},
                          **errors}}}
    paths["/v1/jobs"] = {"get": {"summary": "List jobs (q, sort, limit, offset, fields, count)",
                                 "parameters": LIST_PARAMS,
                                 "responses": {"200": {"description": "{items: [...], total?}"},
                                               **errors}}}
    paths["/v1/jobs/{uuid}"] = {"get": {"summary": "A job (wait=1 blocks until it ends)",
                                        "parameters": WAIT_PARAMS,
                                        "responses": {"200": {"description": "{job}"}, **errors}}}
    paths["/v1/jobs/{uuid}/cancel"] = {"post": {"summary": "Cancel a job",
                                                "responses": {"200": {"description": "{job}"}}}}
    paths["/v1/cluster"] = {"get": {
        "summary": "The controller nodes, their state and their share of the ring",
        "responses": {"200": {"description": "{nodeId, ringSkew, nodes: [...]}"}, **errors}}}
    paths["/v1/security-groups/{uuid}/members"] = {"get": {
        "summary": "The NICs in a security group, with their VMs and addresses",
        "responses": {"200": {"description": "{securityGroupUuid, total, members: [...]}"}, **errors}}}
    paths.update(_account_paths(body, errors))
    return {"openapi": "3.1.0", "info": {"title": "kvmcloud controller", "version": "1"},
            "paths": paths, "components": {"schemas": schemas,
                                           "securitySchemes": {"bearer": {"type": "http",
                                                                          "scheme": "bearer"}}},
            "security": [{"bearer": []}]}


def _account_paths(body: Any, errors: dict[str, Any]) -> dict[str, Any]:
    """Accounts and the audit log (admins only)."""
    from controller.api.schemas import AccountCreate  # noqa: PLC0415 - keep the builder generic

    listing = {"summary": "", "parameters": LIST_PARAMS,
               "responses": {"200": {"description": "{items: [...], total?}"}, **errors}}
    return {
        "/v1/accounts": {
            "get": {**listing, "summary": "List accounts (admin)"},
            "post": {"summary": "Create an account (admin); the answer holds its token, once",
                     "requestBody": body(AccountCreate),
                     "responses": {"201": {"description": "the account and its token"}, **errors}}},
        "/v1/accounts/{uuid}": {
            "get": {"summary": "Get an account (admin)", "responses": {"200": {"description": "ok"},
                                                                        **errors}},
            "delete": {"summary": "Delete an account and its token (admin)",
                       "responses": {"204": {"description": "deleted"}, **errors}}},
        "/v1/audit-events": {"get": {**listing, "summary": "The audit log of mutating calls (admin)"}},
        "/v1/audit-events/{uuid}": {"get": {"summary": "One audit event (admin)",
                                            "responses": {"200": {"description": "ok"}, **errors}}},
    }
