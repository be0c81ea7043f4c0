"""``/v1/accounts`` and ``/v1/audit-events``: API accounts and the audit log (admins only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from controller.api import schemas as sc
from controller.api.auth import ApiAuth
from controller.api.http import json_response, parse_body
from controller.core import Controller
from controller.db.accounts import Account, AuditEvent
from controller.db.base import Base
from controller.query import parse, run
from controller.services.common import get_or_404, to_dict


def listing(ctl: Controller, model: type[Base]) -> Response:
    """``GET /v1/<collection>``: the query language over ``model``'s rows (items, total)."""
    q = parse(request.args)
    with ctl.db.read() as s:
        rows, total = run(s, model, q)
        items = rows if q.fields else [to_dict(r) for r in rows]
    body: dict[str, Any] = {"items": items}
    if total is not None:
        body["total"] = total
    return json_response(body)


def account_routes(bp: Blueprint, ctl: Controller, auth: ApiAuth) -> None:
    """Accounts: create (the answer holds the token, once), list, get, delete."""

    @bp.post("/accounts")
    def create_account() -> Response:
        body = parse_body(sc.AccountCreate)
        account, token = auth.create(body.name, body.role)
        return json_response({**account, "token": token}, 201)

    @bp.get("/accounts")
    def list_accounts() -> Response:
        return listing(ctl, Account)

    @bp.get("/accounts/<uuid>")
    def get_account(uuid: str) -> Response:
        with ctl.db.read() as s:
            return json_response(to_dict(get_or_404(s, Account, uuid)))

    @bp.delete("/accounts/<uuid>")
    def delete_account(uuid: str) -> Response:
        auth.delete(uuid)
        return json_response({}, 204)

    @bp.get("/audit-events")
    def list_audit_events() -> Response:
        return listing(ctl, AuditEvent)

    @bp.get("/audit-events/<uuid>")
    def get_audit_event(uuid: str) -> Response:
        with ctl.db.read() as s:
            return json_response(to_dict(get_or_404(s, AuditEvent, uuid)))
