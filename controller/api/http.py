"""Request parsing and JSON answers shared by the API's routes."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from flask import Response, request
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from controller.errors import ApiError, BadRequest

B = TypeVar("B", bound=BaseModel)


def json_response(body: Any, status: int = 200) -> Response:
    resp = Response(json.dumps(body, default=str), status=status, mimetype="application/json")
    resp.api_body = body  # type: ignore[attr-defined]  # what was sent, so the audit need not parse it
    return resp


def error_response(err: ApiError) -> Response:
    return json_response({"error": err.to_dict()}, err.http_status)


def validation_error(err: ValidationError) -> BadRequest:
    """A 400 naming every offending field by its wire (camelCase) name."""
    fields = []
    for e in err.errors(include_url=False):
        loc = ".".join(to_camel(p) if isinstance(p, str) else str(p) for p in e["loc"]) or "body"
        fields.append({"field": loc, "message": e["msg"], "type": e["type"]})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return BadRequest(f"invalid request: {summary}", field=fields[0]["field"] if fields else "body",
                      fields=fields)


def parse_body(model: type[B]) -> B:
    """The request body validated against ``model`` (400 naming the field otherwise)."""
    raw = request.get_data() or b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise validation_error(e) from None


def flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes")


def wait_timeout(default: float = 3600.0) -> float:
    """``?timeout=`` of a ``wait=1`` call: seconds, 0 to ``default`` (400 naming it otherwise)."""
    raw = request.args.get("timeout")
    if raw is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        raise BadRequest(f"timeout: {raw[:40]!r} is not a number of seconds", field="timeout") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest("timeout: must be a finite number of seconds, 0 or more", field="timeout")
    return min(seconds, default)
