"""The audit log: one row per mutating API call, readable by admins.

A row says who (account or bootstrap token, and role), the method, the path
(never the query string or the body, so no secret lands in it), the resource
the call named or created, the HTTP status and the time. Calls refused for
lack of a valid token are not recorded (anyone could fill the table); they
are logged.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Request, Response
from sqlalchemy import insert

from controller.api.auth import SAFE_METHODS, Identity
from controller.db.accounts import AuditEvent
from controller.db.base import Database, new_uuid, utcnow

log = logging.getLogger(__name__)

MAX_PATH = 512
_INSERT = insert(AuditEvent)  # built once: building it costs more than running it


def resource_uuid(request: Request, response: Response) -> str | None:
    """The resource a call named in its path, or the one its answer created."""
    args = request.view_args or {}
    named = args.get("uuid") or args.get("job_uuid")
    if named:
        return str(named)[:32]
    if response.status_code >= 300 or not response.is_json:
        return None
    body: Any = getattr(response, "api_body", None)
    if body is None:  # an answer not made by json_response
        body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return None
    job, resource = body.get("job"), body.get("resource")
    job = job if isinstance(job, dict) else {}
    resource = resource if isinstance(resource, dict) else {}
    found = body.get("uuid") or resource.get("uuid") or job.get("resourceUuid")
    return str(found)[:32] if isinstance(found, str) and found else None


def record(db: Database, who: Identity, request: Request, response: Response) -> None:
    """Write the audit row of a mutating call (a failed write is logged, the answer stands)."""
    if request.method in SAFE_METHODS:
        return
    values = {"uuid": new_uuid(), "create_date": utcnow(), "account_uuid": who.account_uuid,
              "account_name": who.name, "role": who.role, "method": request.method,
              "path": request.path[:MAX_PATH], "resource_uuid": resource_uuid(request, response),
              "status": response.status_code}
    try:
        db.transaction_core(lambda c: c.execute(_INSERT, values))
    except Exception:
        log.exception("could not write the audit row of %s %s by %s", request.method,
                      values["path"], who.name)
