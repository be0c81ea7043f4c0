"""Helpers every service uses: references, serialisation."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, TypeVar

from pydantic.alias_generators import to_camel
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from controller.db.base import Base, by_uuid, core
from controller.errors import BadRequest, NotFound

M = TypeVar("M", bound=Base)


def require(s: Session, model: type[M], uuid: str | None, field: str) -> M:
    """The row a body field refers to, or a 400 naming the field."""
    row = s.get(model, uuid) if uuid else None
    if row is None:
        raise BadRequest(f"{field}: no {model.__name__} {uuid}", field=field, uuid=uuid)
    return row


def require_row(s: Session | Connection, model: type[Base], uuid: str | None, field: str) -> Any:
    """:func:`require` as a plain row (every column, by attribute), without the ORM's cost."""
    row = core(s).execute(by_uuid(model.__table__), {"uuid": uuid}).first() if uuid else None
    if row is None:
        raise BadRequest(f"{field}: no {model.__name__} {uuid}", field=field, uuid=uuid)
    return row


def get_or_404(s: Session, model: type[M], uuid: str) -> M:
    row = s.get(model, uuid)
    if row is None:
        raise NotFound(f"no {model.__name__} {uuid}", uuid=uuid)
    return row


def to_dict(row: Any) -> dict[str, Any]:
    """A row as the API shows it: camelCase keys, ISO dates."""
    return row_dict(row.__table__, row)


def row_dict(table: Any, row: Any) -> dict[str, Any]:
    """``to_dict`` of a row read as ``select(*table.c)`` (no ORM object needed)."""
    out: dict[str, Any] = {}
    for key, camel in _columns(table):
        v = getattr(row, key)
        out[camel] = v.isoformat() if isinstance(v, datetime) else v
    return out


@functools.cache
def _columns(table: Any) -> tuple[tuple[str, str], ...]:
    """(attribute, camelCase name) of a table's columns, worked out once per table."""
    return tuple((col.key, to_camel(col.key)) for col in table.columns)


def jsonable(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v
