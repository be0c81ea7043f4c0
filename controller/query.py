"""The query language of ``GET /v1/<resources>``.

``?q=<path><op><value>`` (repeatable, ANDed) where ``<path>`` is an attribute
in camelCase (``memorySize``), possibly through relations (``host.name``,
``host.cluster.name``, ``vmNics.ip``), or ``tag``. Operators:

=========  ==========================  ============================
``=``      equal (``=null``: is null)  ``state=Running``
``!=``     not equal (``!=null``)      ``hostUuid!=null``
``>`` ``<`` ``>=`` ``<=``  compare     ``memorySize>1073741824``
``?=``     in (comma-separated)        ``state?=Running,Stopped``
``!?=``    not in                      ``state!?=Destroyed``
``~=``     SQL like (``%`` and ``_``)  ``name~=web%``
``!~=``    not like
=========  ==========================  ============================

``sort=-createDate,name``; ``limit`` (default 1000, at most 100000) and
``offset``; ``fields=uuid,name``; ``count=1`` adds the total. Relations are
resolved as ``IN (SELECT ...)`` subqueries, which stay on indexes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic.alias_generators import to_camel, to_snake
from sqlalchemy import JSON, Boolean, ColumnElement, DateTime, Float, Integer, Select, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.sqltypes import BigInteger

from controller.db.base import Base
from controller.db.models import RESOURCES, Tag
from controller.errors import BadRequest

OPERATORS = ("!?=", "!~=", "?=", "~=", ">=", "<=", "!=", "=", ">", "<")
_OP_RE = re.compile("|".join(re.escape(o) for o in OPERATORS))
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100000
#: the range of a 64-bit SQL integer: a number outside it can match no row, and the driver refuses it
INT64 = range(-(2**63), 2**63)


def _targets() -> dict[str, type[Base]]:
    """``<prefix>_uuid`` column name → the model it points to."""
    out: dict[str, type[Base]] = {}
    for coll, model in RESOURCES.items():
        prefix = coll.rstrip("s").replace("-", "_")
        if coll.endswith("storages"):
            prefix = coll[: -len("s")].replace("-", "_")
        out[f"{prefix}_uuid"] = model  # type: ignore[assignment]
    out["root_volume_uuid"] = out["volume_uuid"]
    out["last_host_uuid"] = out["host_uuid"]
    return out


TARGETS = _targets()
MODEL_COLLECTION = {model: coll for coll, model in RESOURCES.items()}


def columns(model: type[Base]) -> dict[str, Any]:
    return {c.key: c for c in model.__table__.columns}


def snake(model: type[Base], name: str) -> str:
    """The column key of a wire (camelCase) or Python name; unchanged if unknown."""
    for key in columns(model):
        if name in (key, to_camel(key)):
            return key
    return to_snake(name)


@dataclass(frozen=True)
class Condition:
    """One parsed ``q`` term."""

    path: list[str]
    op: str
    value: str


def parse_condition(text: str) -> Condition:
    m = _OP_RE.search(text)
    if m is None or m.start() == 0:
        raise BadRequest(f"q: cannot parse {text!r} (want <field><op><value>)", field="q")
    path = text[: m.start()].strip().split(".")
    return Condition(path, m.group(0), text[m.end():])


def _convert(col: Any, raw: str, field: str) -> Any:
    try:
        t = col.type
        if isinstance(t, Boolean):
            return raw.lower() in ("1", "true", "yes")
        if isinstance(t, Integer | BigInteger):
            number = int(raw)
            if number not in INT64:
                raise ValueError(raw)
            return number
        if isinstance(t, Float):
            return float(raw)
        if isinstance(t, DateTime):
            return datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"q: {field}: {raw!r} is not a valid value", field=field) from None
    return raw


def _column_condition(col: Any, op: str, raw: str, field: str) -> ColumnElement[bool]:
    if raw == "null" and op in ("=", "!="):
        return col.is_(None) if op == "=" else col.is_not(None)
    if isinstance(col.type, JSON):  # PostgreSQL has no equality, order or LIKE on json
        raise BadRequest(f"q: {field}: a JSON attribute can only be compared with null", field=field)
    if op in ("?=", "!?="):
        values = [_convert(col, v, field) for v in raw.split(",")]
        return col.in_(values) if op == "?=" else col.not_in(values)
    if op in ("~=", "!~="):
        return col.like(raw) if op == "~=" else col.not_like(raw)
    v = _convert(col, raw, field)
    ops = {"=": col.__eq__, "!=": col.__ne__, ">": col.__gt__, "<": col.__lt__,
           ">=": col.__ge__, "<=": col.__le__}
    return ops[op](v)


def _reverse(model: type[Base], name: str) -> tuple[type[Base], Any] | None:
    """``vmNics`` on Vm → (VmNic, VmNic.vm_uuid)."""
    for c, child in RESOURCES.items():
        if to_camel(c.replace("-", "_")) != name:
            continue
        for key, col in columns(child).items():  # type: ignore[arg-type]
            if TARGETS.get(key) is model and key not in ("root_volume_uuid", "last_host_uuid"):
                return child, col  # type: ignore[return-value]
    return None


def condition(model: type[Base], path: Sequence[str], op: str, raw: str,
              field: str) -> ColumnElement[bool]:
    """The SQL condition of one term on ``model``, following relations."""
    cols = columns(model)
    head = snake(model, path[0])
    if len(path) == 1:
        if head == "tag":
            sub = select(Tag.resource_uuid).where(_column_condition(Tag.tag, op, raw, field))
            return cols["uuid"].in_(sub)
        if head not in cols:
            raise BadRequest(f"q: {field}: no such attribute", field=field)
        return _column_condition(cols[head], op, raw, field)
    fk = snake(model, path[0] + "Uuid")
    if fk in cols and fk in TARGETS:
        target = TARGETS[fk]
        sub = select(columns(target)["uuid"]).where(condition(target, path[1:], op, raw, field))
        return cols[fk].in_(sub)
    rev = _reverse(model, path[0])
    if rev is not None:
        child, child_fk = rev
        sub = select(child_fk).where(condition(child, path[1:], op, raw, field))
        return cols["uuid"].in_(sub)
    raise BadRequest(f"q: {field}: no relation {path[0]!r}", field=field)


@dataclass
class Query:
    """A parsed list request."""

    conditions: list[Condition]
    sort: list[tuple[str, bool]]
    limit: int
    offset: int
    fields: list[str] | None
    count: bool


def parse(args: Any) -> Query:
    """Parse request args (a werkzeug MultiDict or a dict of lists)."""
    conds = [parse_condition(q) for q in args.getlist("q")]
    sort = []
    for raw in ",".join(args.getlist("sort")).split(","):
        part = raw.strip()
        if part:
            sort.append((part.lstrip("-+"), part.startswith("-")))
    try:
        limit = int(args.get("limit", DEFAULT_LIMIT))
        offset = int(args.get("offset", 0))
    except ValueError:
        raise BadRequest("limit and offset must be integers", field="limit") from None
    if not 0 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be 0..{MAX_LIMIT}", field="limit")
    if offset not in INT64 or offset < 0:
        raise BadRequest("offset must be 0 or more, and fit in 64 bits", field="offset")
    fields = [f.strip() for f in args.get("fields", "").split(",") if f.strip()] or None
    count = args.get("count", "").lower() in ("1", "true", "yes")
    return Query(conds, sort, limit, offset, fields, count)


def where_clause(model: type[Base], conds: Iterable[Condition]) -> list[ColumnElement[bool]]:
    return [condition(model, c.path, c.op, c.value, ".".join(c.path)) for c in conds]


def run(session: Session, model: type[Base], q: Query,
        extra: Sequence[ColumnElement[bool]] = ()) -> tuple[list[Any], int | None]:
    """Rows matching ``q`` (as projected), and the total if asked."""
    cols = columns(model)
    where = [*where_clause(model, q.conditions), *extra]
    if q.fields:
        wanted = [snake(model, f) for f in q.fields]
        bad = [f for f, w in zip(q.fields, wanted, strict=True) if w not in cols]
        if bad:
            raise BadRequest(f"fields: no such attribute {bad[0]!r}", field="fields")
        stmt: Select[Any] = select(*(cols[w] for w in wanted))
    else:
        stmt = select(model)
    stmt = stmt.where(*where)
    for name, desc in q.sort:
        key = snake(model, name)
        if key not in cols:
            raise BadRequest(f"sort: no such attribute {name!r}", field="sort")
        if isinstance(cols[key].type, JSON):
            raise BadRequest(f"sort: {name!r} is a JSON attribute and has no order", field="sort")
        stmt = stmt.order_by(cols[key].desc() if desc else cols[key].asc())
    if not q.sort:
        stmt = stmt.order_by(cols["uuid"]) if "create_date" not in cols else stmt.order_by(
            cols["create_date"], cols["uuid"])
    stmt = stmt.limit(q.limit).offset(q.offset)
    total = None
    if q.count:
        total = int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)
    if q.fields:
        rows = [dict(zip(q.fields, r, strict=True)) for r in session.execute(stmt)]
    else:
        rows = list(session.scalars(stmt))
    return rows, total
