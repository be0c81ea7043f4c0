"""The query parser and SQL it builds (no database needed)."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from controller.db.models import Vm
from controller.errors import BadRequest
from controller.query import parse, parse_condition, where_clause


@pytest.mark.parametrize("text,path,op,value", [
    ("state=Running", ["state"], "=", "Running"),
    ("memorySize>=1024", ["memorySize"], ">=", "1024"),
    ("name~=web%", ["name"], "~=", "web%"),
    ("state!?=Running,Stopped", ["state"], "!?=", "Running,Stopped"),
    ("host.cluster.name=c=1", ["host", "cluster", "name"], "=", "c=1"),
    ("description!=null", ["description"], "!=", "null"),
])
def test_parse_condition(text: str, path: list[str], op: str, value: str) -> None:
    c = parse_condition(text)
    assert (c.path, c.op, c.value) == (path, op, value)


def test_sql_uses_subqueries_for_relations() -> None:
    q = parse(MultiDict([("q", "host.name=h1"), ("q", "tag=web"), ("q", "cpuNum>1")]))
    sql = " AND ".join(str(w) for w in where_clause(Vm, q.conditions))
    assert "vms.host_uuid IN (SELECT hosts.uuid" in sql
    assert "vms.uuid IN (SELECT tags.resource_uuid" in sql
    assert "vms.cpu_num >" in sql


def test_paging_defaults_and_limits() -> None:
    q = parse(MultiDict([("sort", "-createDate,name")]))
    assert (q.limit, q.offset, q.sort) == (1000, 0, [("createDate", True), ("name", False)])
    with pytest.raises(BadRequest):
        parse(MultiDict([("limit", "1000001")]))
